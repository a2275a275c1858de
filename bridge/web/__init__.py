"""Flask blueprints and the JSON error handlers; the only package that imports Flask.

`install` keeps the bridge and its media links where `bridge.web.context` reads them back
typed, gives the app its own metrics (a per-app Prometheus registry, see `bridge.ops.metrics`)
and tells the log filter which secrets of this config must never be written; `shutdown`
undoes what `install` started besides the bridge itself.

Thread: `install` and `shutdown` run on the thread that builds or ends the app; the handlers
run on request threads.
"""

from __future__ import annotations

import logging
import time
from urllib.parse import urlsplit

from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from ..config.ini import Config
from ..core.bridge import Bridge
from ..core.media import MediaLinks
from ..ops import collector as ops_metrics
from ..ops import logs
from . import context
from .appservice import bp as appservice_bp
from .errors import matrix_error
from .media import bp as media_bp
from .ops import bp as ops_bp
from .provisioning import bp as provisioning_bp

log = logging.getLogger(__name__)


def install(app: Flask, bridge: Bridge, media: MediaLinks) -> None:
    """Serve `bridge` (and `media`'s links) from `app`: its parts, blueprints, error pages."""
    app.extensions[context.BRIDGE] = bridge
    app.extensions[context.MEDIA] = media
    logs.protect(_secrets(bridge.config))
    app.extensions[context.STARTED_AT] = time.time()
    metrics = ops_metrics.setup(bridge)
    bridge.attach(meter=metrics)  # the parts count into this app's registry
    app.extensions[context.METRICS] = metrics
    app.register_blueprint(appservice_bp)
    app.register_blueprint(ops_bp)
    app.register_blueprint(media_bp)
    app.register_blueprint(provisioning_bp)

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


def shutdown(app: Flask) -> None:
    """Stop the bridge and this app's own metrics port (for gunicorn's worker_exit)."""
    bridge = app.extensions.get(context.BRIDGE)
    if isinstance(bridge, Bridge):
        bridge.stop()
    metrics = context.metrics_of(app)
    if metrics is not None:
        metrics.close()


def _secrets(config: Config) -> list[str]:
    found = [config.appservice.as_token, config.appservice.hs_token,
             config.provisioning.secret, config.status.secret]
    password = urlsplit(config.database.url).password
    if password:
        found.append(password)
    found.extend(n.password for n in config.networks if n.password)
    found.extend(n.sasl_password for n in config.networks if n.sasl_password)
    return found
