"""ircbridge: a Matrix application service that bridges IRC networks into Matrix.

`create_app()` is the WSGI entry point (gunicorn 'bridge:create_app()'); it wires config,
store, homeserver client, IRC side and core together and keeps the one `Bridge` in
`app.extensions["bridge"]`.

Thread: `create_app` runs once, on the thread that builds the app (the gunicorn worker's main
thread, or a test's); the parts it starts run on their own threads.
"""

from __future__ import annotations

import atexit
import logging
import os
from typing import Any

from .version import __version__

__all__ = ["__version__", "create_app"]

log = logging.getLogger(__name__)


def create_app(config_path: str | None = None, *, config: Any = None,
               start_background: bool = True, setup_logging: bool = True) -> Any:
    """Build the Flask app; with start_background the bridge's threads start too."""
    from flask import Flask

    from . import web
    from .admin.rooms import AdminRooms
    from .config import ini as config_module
    from .core.bridge import Bridge
    from .core.media import MediaLinks, load_secret
    from .core.media_revocations import MediaRevocations
    from .ops import logs
    from .store.models import Store

    if config is None:
        path = config_path or os.environ.get(config_module.ENV_CONFIG, "config.ini")
        config = config_module.load(path)
    problems = config_module.require_tokens(config)
    if problems:
        raise config_module.ConfigError(problems)
    if setup_logging:
        logs.setup(config.logging)
    for warning in config.warnings:
        log.warning("config: %s", warning)

    store = Store(config.database.url, config.appservice.id,
                  sqlite_synchronous=config.database.sqlite_synchronous)
    store.open(config.path.name, [n.name for n in config.networks])
    bridge = Bridge(config, store=store)
    bridge.admin = AdminRooms(bridge)  # admin rooms, static mappings, room directory
    revocations = MediaRevocations(store.db, config.media.link_ttl_days * 86400)
    revocations.create_tables()
    bridge.media = MediaLinks(
        bridge.client, config.media.public_url or config.appservice.url, load_secret(store),
        ttl_seconds=config.media.link_ttl_days * 86400, max_bytes=config.media.max_bytes,
        max_concurrent=max(1, config.appservice.threads // 2),
        read_timeout=config.media.read_timeout, revocations=revocations,
    )

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.appservice.max_body_bytes
    app.config["IRCBRIDGE_HS_TOKEN"] = config.appservice.hs_token
    # Flask's documented switch; its stubs type app.json as the base JSONProvider, which
    # lacks the attribute the default provider has.
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["bridge"] = bridge
    web.register(app)
    # Wrapping wsgi_app is Flask's documented way to add middleware; the stubs see a method.
    app.wsgi_app = _NoDelay(app.wsgi_app)  # type: ignore[method-assign]
    if start_background:
        bridge.admin.start()  # first: its IRC hooks are queued before any connection
        bridge.start()
        atexit.register(bridge.stop)
    return app


class _NoDelay:
    """Set TCP_NODELAY on gunicorn's client socket.

    gunicorn writes a response's headers and body in two sends; on a kept-alive connection
    Nagle's algorithm then holds the body until the homeserver's delayed ACK, about 40 ms per
    request (and Synapse sends one transaction at a time).
    """

    def __init__(self, wsgi_app: Any):
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        sock = environ.get("gunicorn.socket")
        if sock is not None:
            try:
                import socket

                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        return self.wsgi_app(environ, start_response)
