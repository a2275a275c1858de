"""Ask the homeserver whom a Matrix OpenID token belongs to (federation `openid/userinfo`).

Why: a widget or an integration manager acting for a user carries a short-lived OpenID token
that the user's homeserver issued (`POST /_matrix/client/v3/user/{userId}/openid/request_token`).
Asking that homeserver is the only way to know the acting user without trusting the request's
own claim. Only the bridge's own homeserver is asked, at `[homeserver] url`: a token naming
another server is refused (the bridge does no federation server discovery), and the user the
answer names must belong to that server. Request threads call this (blocking, short timeout).
The token is never logged; error texts never carry the URL it travels in.
"""

from __future__ import annotations

import logging
import re

import requests

log = logging.getLogger(__name__)

PATH = "/_matrix/federation/v1/openid/userinfo"
USER_ID_RE = re.compile(r"^@[^\s:]+:(\S+)$")
TIMEOUT = 10.0


class OpenIdRefused(Exception):
    """The token names nobody we can vouch for; `status` is 403, or 502 when the homeserver
    could not be asked."""

    def __init__(self, status: int, error: str):
        self.status = status
        self.error = error
        super().__init__(error)


def token_fields(token: object) -> tuple[str, str]:
    """(access_token, matrix_server_name) of a token object as request_token returns it."""
    if not isinstance(token, dict):
        raise OpenIdRefused(403, "openid_token must be the object the homeserver's "
                                 "openid/request_token returned")
    access, server = token.get("access_token"), token.get("matrix_server_name")
    if not isinstance(access, str) or not access or not isinstance(server, str) or not server:
        raise OpenIdRefused(403, "openid_token needs access_token and matrix_server_name")
    return access, server


def user_of(token: object, homeserver_url: str, server_name: str, *,
            timeout: float = TIMEOUT) -> str:
    """The Matrix user id the homeserver vouches for; raises OpenIdRefused."""
    access, server = token_fields(token)
    if server != server_name:
        raise OpenIdRefused(403, f"OpenID tokens are checked with {server_name} only; this "
                                 f"one is from {server[:100]!r}")
    session = requests.Session()
    session.trust_env = False
    try:
        response = session.get(homeserver_url.rstrip("/") + PATH,
                               params={"access_token": access}, timeout=timeout)
    except requests.RequestException as e:
        log.warning("cannot ask %s about an OpenID token: %s", server_name, type(e).__name__)
        raise OpenIdRefused(502, f"cannot reach {server_name} to check the OpenID token") from None
    finally:
        session.close()
    if response.status_code != 200:
        log.info("%s refused an OpenID token (HTTP %s)", server_name, response.status_code)
        raise OpenIdRefused(403, f"{server_name} did not accept the OpenID token (expired, "
                                 "or not one it issued)")
    try:
        sub = response.json().get("sub")
    except (ValueError, AttributeError):
        sub = None
    m = USER_ID_RE.match(sub) if isinstance(sub, str) else None
    if m is None or m.group(1) != server_name:
        raise OpenIdRefused(403, f"{server_name} answered the OpenID check with no user of "
                                 "its own")
    return str(sub)
