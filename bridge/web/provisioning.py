"""The provisioning HTTP API: `/_ircbridge/provisioning/v1/` (link, unlink, links, networks).

Authenticated by its own secret (`Authorization: Bearer <[provisioning] secret>`, compared in
constant time), separate from the homeserver's hs_token and from `[status] secret`: it is
meant for an integration manager or a script, not for the homeserver. Such a request acts for
a Matrix user who must pass the power check. The command line instead sends the admin token
(`bridge.core.provisioning.admin_token`, derived from the as_token): it acts as the bridge's
admin. No secret is taken from a query string. An empty secret turns the API off (403 with a
hint). Errors are JSON `{errcode, error}` with a 4xx status; the checks live in
`bridge.core.provisioning`. Request threads run this.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from flask import Blueprint, Response, g, jsonify, request

from ..core.provisioning import Provisioner, ProvisioningError, admin_token
from ..matrix import MatrixError
from ..matrix.wire import JsonObject
from . import auth
from .context import current_bridge
from .errors import matrix_error

log = logging.getLogger(__name__)

PREFIX = "/_ircbridge/provisioning/v1"
bp = Blueprint("provisioning", __name__, url_prefix=PREFIX)


@bp.before_request
def _authenticate() -> Response | None:
    config = current_bridge().config
    secret = config.provisioning.secret
    as_token = config.appservice.as_token
    problem, g.ircbridge_admin = auth.provisioning_problem(
        secret, admin_token(as_token) if as_token else "")
    return problem


def _admin() -> bool:
    return bool(g.get("ircbridge_admin"))


def _body() -> object:
    raw = request.get_data(cache=True)
    if not raw:
        raise ProvisioningError(400, "M_NOT_JSON", "The request body is empty")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ProvisioningError(400, "M_NOT_JSON", "The request body is not valid JSON") from None


def _answer(fn: Callable[[], JsonObject]) -> Response:
    try:
        return jsonify(fn())
    except ProvisioningError as e:
        return matrix_error(e.status, e.errcode, e.error)
    except MatrixError as e:
        log.warning("provisioning: homeserver error %s", e)
        status = 502 if e.status == 0 or e.status >= 500 else 400
        return matrix_error(status, e.errcode or "M_UNKNOWN",
                            f"The homeserver refused: {e.error or e.errcode}")


@bp.route("/networks", methods=["GET"])
def networks() -> Response:
    return _answer(lambda: {"networks": Provisioner(current_bridge()).networks()})


@bp.route("/links", methods=["GET"])
def links() -> Response:
    room_id = request.args.get("room_id") or None
    return _answer(lambda: {"links": Provisioner(current_bridge()).links(room_id)})


@bp.route("/link", methods=["POST"])
def link() -> Response:
    return _answer(lambda: Provisioner(current_bridge()).link(_body(), admin=_admin()))


@bp.route("/unlink", methods=["POST"])
def unlink() -> Response:
    return _answer(lambda: Provisioner(current_bridge()).unlink(_body(), admin=_admin()))
