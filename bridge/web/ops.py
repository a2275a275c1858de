"""Operational endpoints: /health for load balancers, /metrics for Prometheus, / for admins.

/health answers 200 only when every part the bridge needs works (homeserver reached with the
as_token, the homeserver's AS ping reached us, the database answers, every network's bot is
connected) and 503 naming the parts that do not. Anyone may ask, so without `[status] secret`
it says only ok / not ok and the names of the failing parts; the details (users with an IRC
connection, channels, error texts) need the secret. /metrics is unprotected by design (bind it
to loopback or a private port with `[metrics] bind`, or filter it in the reverse proxy). The
status page at / shows the live numbers and needs `[status] secret`. Secrets are taken from
the Authorization header only: a query string ends up in proxy logs and browser history.
Request threads run all of this.
"""

from __future__ import annotations

import time

from flask import Blueprint, Response, jsonify, render_template, request
from prometheus_client.exposition import choose_encoder

from ..core.bridge import Bridge
from ..matrix.wire import JsonObject
from ..ops import queries as ops_queries
from ..version import __version__
from . import auth
from .context import current_bridge, current_metrics, started_at
from .errors import matrix_error

bp = Blueprint("ops", __name__)

PING_ACCEPTED = ("ok", "M_UNRECOGNIZED")  # an older homeserver without the ping endpoint


def _object(value: object) -> JsonObject:
    """`value` when it is a JSON object, else an empty one (status dicts are loose JSON)."""
    return value if isinstance(value, dict) else {}


def health_report(bridge: Bridge) -> tuple[bool, JsonObject]:
    """(ready, report): the report keeps bridge.status()'s keys and adds the checks."""
    failing: dict[str, str] = {}
    found, irc_error = ops_queries.safe(bridge.status)
    status: JsonObject = _object(found)
    if irc_error is not None:
        status = {"homeserver": bridge.health.get("homeserver"),
                  "ping": bridge.health.get("ping"), "networks": {}}
        failing["irc"] = f"no status from the IRC thread ({irc_error})"
    homeserver, ping = status.get("homeserver"), status.get("ping")
    if homeserver != "ok":
        failing["homeserver"] = str(homeserver)
    if ping not in PING_ACCEPTED:
        failing["ping"] = str(ping)
    _, db_error = ops_queries.safe(ops_queries.ping, bridge.store.db)
    if db_error is not None:
        failing["database"] = db_error
    if bridge.health.get("lock") == "lost":
        failing["lock"] = "another bridge serves these networks now; this one stopped its IRC"
    networks = _object(status.get("networks"))
    for net in bridge.config.networks:
        state = _object(networks.get(net.name)).get("bot", "not started")
        if state != "connected":
            failing[f"irc:{net.name}"] = str(state)
    report: JsonObject = {"ok": not failing, **status, "database": db_error or "ok",
                          "failing": failing}
    return not failing, report


def public_health(ok: bool, report: JsonObject) -> JsonObject:
    """What /health tells anyone: ready or not, and the names of the failing parts."""
    return {"ok": ok, "failing": sorted(_object(report.get("failing")))}


@bp.route("/health", methods=["GET"])
def health() -> Response:
    bridge = current_bridge()
    ok, report = health_report(bridge)
    if not auth.status_secret_given(bridge.config.status.secret):
        report = public_health(ok, report)
    response = jsonify(report)
    response.status_code = 200 if ok else 503
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/metrics", methods=["GET"])
def metrics() -> Response:
    bridge = current_bridge()
    if bridge.config.metrics.bind:
        return matrix_error(404, "M_NOT_FOUND",
                            f"metrics are served on {bridge.config.metrics.bind} "
                            "([metrics] bind)")
    own = current_metrics()
    if own is None:
        return matrix_error(404, "M_NOT_FOUND", "this app has no metrics")
    registry = own.registry
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    response = Response(encoder(registry), content_type=content_type)
    response.headers["Cache-Control"] = "no-store"
    return response


# ---------------------------------------------------------------- status page
def _page(status: int, title: str, text: str, **headers: str) -> Response:
    html = render_template("status.html", denied={"title": title, "text": text},
                           version=__version__)
    response = Response(html, status=status, content_type="text/html; charset=utf-8")
    for key, value in headers.items():
        response.headers[key.replace("_", "-")] = value
    return response


def _status_auth(secret: str) -> Response | None:
    if not secret:
        return _page(403, "The status page is off",
                     "Set a long random secret under [status] secret = ... in config.ini "
                     "(not the [provisioning] one) and restart the bridge; then open this "
                     "page with it (any user name, the secret as password).")
    if not auth.status_secret_given(secret):
        return _page(401, "Authentication needed",
                     "Give [status] secret as the password (any user name) or as "
                     "'Authorization: Bearer <secret>'. A secret in the query string "
                     "(?secret=) is not accepted: it would end up in logs and history.",
                     WWW_Authenticate='Basic realm="ircbridge status", charset="UTF-8"')
    return None


def status_snapshot(bridge: Bridge, started_at: float) -> JsonObject:
    """Everything the status page shows, read now."""
    ok, report = health_report(bridge)
    db = bridge.store.db
    mine = bridge.store.bridge_id
    queues, _ = ops_queries.safe(ops_queries.queue_stats, db, mine, default={})
    rooms, _ = ops_queries.safe(ops_queries.rooms, db, 500, mine, default=[])
    found, _ = ops_queries.safe(ops_queries.rooms_by_network, db, mine, default={})
    per_network: dict[str, int] = found
    live_networks = _object(report.get("networks"))
    networks: list[JsonObject] = []
    for net in bridge.config.networks:
        live = _object(live_networks.get(net.name))
        puppets = _object(live.get("puppets"))
        states: dict[str, int] = {}
        for state in puppets.values():
            states[str(state)] = states.get(str(state), 0) + 1
        networks.append({
            "name": net.name, "display_name": net.display_name,
            "address": f"{net.host}:{net.port}" + (" (TLS)" if net.tls else ""),
            "bot": live.get("bot", "not started"), "bot_nick": live.get("bot_nick") or "",
            "channels": live.get("channels") or [], "puppets": len(puppets),
            "puppet_states": dict(sorted(states.items())),
            "rooms": per_network.get(net.name, 0),
            "kicked": live.get("kicked") or {},  # channels the bot was kicked from
        })
    return {
        "ok": ok, "failing": report["failing"], "version": __version__,
        "server_name": bridge.config.homeserver.domain,
        "homeserver": report.get("homeserver"), "ping": report.get("ping"),
        "database": report.get("database"), "networks": networks, "rooms": rooms,
        "room_count": sum(per_network.values()), "queues": queues,
        "inbox_in_flight": bridge.inbox.in_flight if bridge.inbox is not None else 0,
        "senders_pending": bridge.senders.depth if bridge.senders is not None else 0,
        "uptime": _duration(time.time() - started_at),
        "now": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {seconds}s"


@bp.route("/", methods=["GET"])
def status_page() -> Response:
    bridge = current_bridge()
    denied = _status_auth(bridge.config.status.secret)
    if denied is not None:
        return denied
    since = started_at()
    html = render_template("status.html", denied=None, **status_snapshot(
        bridge, time.time() if since is None else since))
    return Response(html, content_type="text/html; charset=utf-8")


@bp.after_request
def _headers(response: Response) -> Response:
    if request.path == "/":
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
        )
    return response
