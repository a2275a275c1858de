"""Flask blueprints and the JSON error handlers; the only package that imports Flask."""

from __future__ import annotations

import logging

from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from .appservice import bp as appservice_bp
from .errors import matrix_error
from .ops import bp as ops_bp

log = logging.getLogger(__name__)


def register(app: Flask) -> None:
    app.register_blueprint(appservice_bp)
    app.register_blueprint(ops_bp)

    @app.errorhandler(404)
    def not_found(_e: Exception) -> Response:
        return matrix_error(404, "M_UNRECOGNIZED", "Unrecognized request")

    @app.errorhandler(405)
    def bad_method(_e: Exception) -> Response:
        return matrix_error(405, "M_UNRECOGNIZED", "Unrecognized request method")

    @app.errorhandler(413)
    def too_large(_e: Exception) -> Response:
        return matrix_error(413, "M_TOO_LARGE", "The request body is too large")

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException) -> Response:
        return matrix_error(e.code or 500, "M_UNKNOWN", e.description or e.name)

    @app.errorhandler(Exception)
    def internal(e: Exception) -> Response:
        log.exception("unhandled error")
        return matrix_error(500, "M_UNKNOWN", "Internal error; see the bridge's log")
