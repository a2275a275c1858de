"""Operational endpoints: /health for load balancers and admins."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify

bp = Blueprint("ops", __name__)


@bp.route("/health", methods=["GET"])
def health() -> Response:
    bridge: Any = current_app.extensions["bridge"]
    status = bridge.status()
    ok = status.get("homeserver") == "ok"
    response = jsonify({"ok": ok, **status})
    response.status_code = 200 if ok else 503
    return response
