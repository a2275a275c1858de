"""The parts `create_app` wired, read back typed from the current Flask app.

`install` (bridge/web/__init__.py) keeps the one `Bridge` in `app.extensions["bridge"]` and
its `MediaLinks` in `app.extensions["ircbridge_media"]`; the views ask `current_bridge()` and
`current_media()` instead of reading the untyped `extensions` dict themselves.

Thread: request threads (the views), and the thread that builds or ends the app.
"""

from __future__ import annotations

from flask import Flask, current_app

from ..core.bridge import Bridge
from ..core.media import MediaLinks
from ..ops.metrics import Metrics

BRIDGE = "bridge"  # the key gunicorn.conf.py and the CLI read too
MEDIA = "ircbridge_media"
METRICS = "ircbridge_metrics"
STARTED_AT = "ircbridge_started_at"


def bridge_of(app: Flask) -> Bridge:
    found = app.extensions.get(BRIDGE)
    if not isinstance(found, Bridge):
        raise RuntimeError("this Flask app was not made by bridge.create_app")
    return found


def media_of(app: Flask) -> MediaLinks:
    found = app.extensions.get(MEDIA)
    if not isinstance(found, MediaLinks):
        raise RuntimeError("this Flask app was not made by bridge.create_app")
    return found


def metrics_of(app: Flask) -> Metrics | None:
    found = app.extensions.get(METRICS)
    return found if isinstance(found, Metrics) else None


def current_bridge() -> Bridge:
    """The bridge of the app serving this request."""
    return bridge_of(current_app)


def current_media() -> MediaLinks:
    """The signed media links of the app serving this request."""
    return media_of(current_app)


def current_metrics() -> Metrics | None:
    """This app's own metrics (a per-app Prometheus registry)."""
    return metrics_of(current_app)


def started_at() -> float | None:
    found = current_app.extensions.get(STARTED_AT)
    return found if isinstance(found, float) else None
