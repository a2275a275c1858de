"""The application service API the homeserver calls (Matrix spec, AS API v1).

Checks the hs_token (header or legacy `access_token`), answers every error as Matrix JSON,
stores pushed transactions durably before answering 200, and hands queries to the core.
The founding document's unprefixed paths answer the same as the /_matrix/app/v1 ones.

Thread: request threads (gunicorn's gthread workers); they may wait on the homeserver, never on
IRC.
"""

from __future__ import annotations

import json
import logging

from flask import Blueprint, Response, current_app, jsonify, request

from ..matrix.errors import HomeserverUnavailable
from ..matrix.wire import JsonObject
from ..rules.ids import UserId
from . import auth
from .context import current_bridge
from .errors import matrix_error

log = logging.getLogger(__name__)

bp = Blueprint("appservice", __name__)
MAX_ID_BYTES = 255  # Matrix ids are at most 255 bytes; the tables hold no more


def _json_body() -> tuple[object, Response | None]:
    raw = request.get_data(cache=True)
    if not raw:
        return None, matrix_error(400, "M_NOT_JSON", "The request body is empty")
    try:
        return json.loads(raw.decode("utf-8")), None
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None, matrix_error(400, "M_NOT_JSON", "The request body is not valid JSON")


@bp.before_request
def _authenticate() -> Response | None:
    return auth.hs_token_problem(current_app.config["IRCBRIDGE_HS_TOKEN"])


@bp.route("/_matrix/app/v1/transactions/<path:txn_id>", methods=["PUT"])
@bp.route("/transactions/<path:txn_id>", methods=["PUT"])
def put_transaction(txn_id: str) -> Response:
    body, problem = _json_body()
    if problem is not None:
        return problem
    if not isinstance(body, dict):
        return matrix_error(400, "M_BAD_JSON", "The body must be a JSON object")
    events = body.get("events")
    if not isinstance(events, list):
        return matrix_error(400, "M_BAD_JSON", "'events' must be a list")
    if len(txn_id.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        return matrix_error(400, "M_INVALID_PARAM", "The transaction id is too long")
    good: list[JsonObject] = []
    for event in events:
        if not isinstance(event, dict) or not isinstance(event.get("event_id"), str):
            log.warning("transaction %s: skipping an event without an event_id", txn_id)
            continue
        if any(isinstance(value := event.get(k), str)
               and len(value.encode("utf-8", "replace")) > MAX_ID_BYTES
               for k in ("event_id", "room_id")):
            log.warning("transaction %s: skipping an event with an id over %d bytes", txn_id,
                        MAX_ID_BYTES)
            continue
        good.append(event)
    bridge = current_bridge()
    seen, new = bridge.handle_transaction(txn_id, good)
    bridge.meter.transaction(seen, new)
    if seen and not new:
        log.debug("transaction %s already handled", txn_id)
    _ephemeral(txn_id, body)
    return jsonify({})


def _ephemeral(txn_id: str, body: JsonObject) -> None:
    """Typing and presence (MSC2409): not stored, and never a reason to fail the 200."""
    found = body.get("ephemeral")
    if not isinstance(found, list):
        found = body.get("de.sorunome.msc2409.ephemeral")  # the unstable name, same list
    if not isinstance(found, list) or not found:
        return
    try:
        current_bridge().handle_ephemeral([e for e in found if isinstance(e, dict)])
    except Exception:  # noqa: BLE001 - ephemeral data may be dropped, the events may not
        log.warning("transaction %s: its ephemeral events were dropped", txn_id,
                    exc_info=True)


@bp.route("/_matrix/app/v1/users/<path:user_id>", methods=["GET"])
@bp.route("/users/<path:user_id>", methods=["GET"])
def query_user(user_id: str) -> Response:
    try:
        found = current_bridge().query_user(UserId(user_id))
    except HomeserverUnavailable:
        return _homeserver_down()
    if found:
        return jsonify({})
    return matrix_error(404, "M_NOT_FOUND", "No such user on the bridged IRC networks")


def _homeserver_down() -> Response:
    """The homeserver asked, but the bridge cannot reach it back (e.g. a wrong [homeserver]
    url): a clear 502 instead of an internal error."""
    log.error("a query could not be answered: the homeserver at %s cannot be reached",
              current_bridge().config.homeserver.url)
    return matrix_error(502, "M_UNKNOWN", "The bridge cannot reach the homeserver")


@bp.route("/_matrix/app/v1/rooms/<path:alias>", methods=["GET"])
@bp.route("/rooms/<path:alias>", methods=["GET"])
def query_room(alias: str) -> Response:
    try:
        found = current_bridge().query_room(alias)
    except HomeserverUnavailable:
        return _homeserver_down()
    if found:
        return jsonify({})
    return matrix_error(404, "M_NOT_FOUND", "No such channel on the bridged IRC networks")


@bp.route("/_matrix/app/v1/ping", methods=["POST"])
def ping() -> Response:
    body, problem = _json_body()
    if problem is not None and request.get_data():
        return problem
    if body is not None and not isinstance(body, dict):
        return matrix_error(400, "M_BAD_JSON", "The body must be a JSON object")
    return jsonify({})


@bp.route("/_matrix/app/v1/thirdparty/protocol/<protocol>", methods=["GET"])
@bp.route("/_matrix/app/unstable/thirdparty/protocol/<protocol>", methods=["GET"])
def thirdparty_protocol(protocol: str) -> Response:
    if protocol != "irc":
        return matrix_error(404, "M_NOT_FOUND", "Unknown protocol")
    return jsonify(current_bridge().thirdparty_protocol())


@bp.route("/_matrix/app/v1/thirdparty/location/<protocol>", methods=["GET"])
@bp.route("/_matrix/app/unstable/thirdparty/location/<protocol>", methods=["GET"])
def thirdparty_location(protocol: str) -> Response:
    if protocol != "irc":
        return matrix_error(404, "M_NOT_FOUND", "Unknown protocol")
    found = current_bridge().thirdparty_location(request.args.get("network"),
                                                 request.args.get("channel"))
    if not found:
        return matrix_error(404, "M_NOT_FOUND", "No such channel")
    return jsonify(found)


@bp.route("/_matrix/app/v1/thirdparty/user/<protocol>", methods=["GET"])
@bp.route("/_matrix/app/unstable/thirdparty/user/<protocol>", methods=["GET"])
def thirdparty_user(protocol: str) -> Response:
    if protocol != "irc":
        return matrix_error(404, "M_NOT_FOUND", "Unknown protocol")
    found = current_bridge().thirdparty_user(request.args.get("network"),
                                             request.args.get("nickname"))
    if not found:
        return matrix_error(404, "M_NOT_FOUND", "No such user")
    return jsonify(found)


@bp.route("/_matrix/app/v1/thirdparty/location", methods=["GET"])
@bp.route("/_matrix/app/unstable/thirdparty/location", methods=["GET"])
def thirdparty_location_reverse() -> Response:
    found = current_bridge().thirdparty_location_by_alias(request.args.get("alias"))
    if not found:
        return matrix_error(404, "M_NOT_FOUND", "Not a bridged alias")
    return jsonify(found)


@bp.route("/_matrix/app/v1/thirdparty/user", methods=["GET"])
@bp.route("/_matrix/app/unstable/thirdparty/user", methods=["GET"])
def thirdparty_user_reverse() -> Response:
    found = current_bridge().thirdparty_user_by_id(request.args.get("userid"))
    if not found:
        return matrix_error(404, "M_NOT_FOUND", "Not a bridged user")
    return jsonify(found)
