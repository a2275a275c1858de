"""Who may knock on which door: the one place the web layer checks a secret.

* The homeserver's pushes and queries carry the hs_token, in `Authorization: Bearer` or in
  the legacy `access_token` query parameter that Synapse still sends (spec.md, 5.H); both
  are checked when both are given.
* The provisioning API takes its own secret, or the CLI's admin token derived from the
  as_token (bridge.core.provisioning.admin_token), in `Authorization: Bearer` only.
* The status page and the full `/health` take `[status] secret` as a Bearer token or as the
  password of HTTP Basic; never from a query string (it would end up in logs and history).

Headers are read by bridge/rules/tokens.py and compared in constant time there.
Threads: request threads (Flask's).
"""

from __future__ import annotations

from flask import Response, request

from ..rules import tokens
from .errors import matrix_error


def hs_token_problem(expected: str) -> Response | None:
    """None when the request carries the right hs_token; else the 401/403 answer."""
    header = request.headers.get("Authorization")
    query = request.args.get("access_token")
    header_token = tokens.bearer(header)
    if header is not None and header_token is None:
        return matrix_error(401, "M_MISSING_TOKEN", "Authorization must be 'Bearer <token>'")
    if header_token is None and query is None:
        return matrix_error(401, "M_MISSING_TOKEN", "No hs_token was supplied")
    for token in (header_token, query):
        if token is not None and not tokens.same_secret(token, expected):
            return matrix_error(403, "M_FORBIDDEN", "The hs_token is not recognised")
    return None


def provisioning_problem(secret: str, admin_token: str) -> tuple[Response | None, bool]:
    """(the 401/403 answer or None, whether the caller is the bridge's admin: the CLI)."""
    if not secret:
        off = matrix_error(403, "M_FORBIDDEN", "The provisioning API is off: set a long random "
                           "[provisioning] secret in the bridge's config.ini and restart it")
        return off, False
    given = tokens.bearer(request.headers.get("Authorization"))
    if given is None:
        return matrix_error(401, "M_MISSING_TOKEN",
                            "Send Authorization: Bearer <[provisioning] secret> (a secret in "
                            "the query string is not accepted)"), False
    if tokens.same_secret(given, admin_token):
        return None, True
    if not tokens.same_secret(given, secret):
        return matrix_error(403, "M_FORBIDDEN", "The provisioning secret is not recognised"), False
    return None, False


def status_secret_given(secret: str) -> bool:
    """True when the request carries `[status] secret` (Bearer, or Basic's password)."""
    header = request.headers.get("Authorization")
    given = tokens.bearer(header)
    if given is None:
        given = tokens.basic_password(header)
    return tokens.same_secret(given, secret)
