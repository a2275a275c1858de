"""ircbridge: a Matrix application service that bridges IRC networks into Matrix.

`create_app()` is the WSGI entry point (gunicorn 'bridge:create_app()'); it wires config,
store, homeserver client, IRC side and core together, keeps the one `Bridge` in
`app.extensions["bridge"]` and its `MediaLinks` in `app.extensions["ircbridge_media"]`
(read them with `bridge.web.context`). Every part it wires may be given instead (tests give a
config, a store or a fake homeserver client); only the missing ones are built.

Thread: `create_app` runs once, on the thread that builds the app (the gunicorn worker's main
thread, or a test's); the parts it starts run on their own threads.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .version import __version__

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from flask import Flask

    from .admin.rooms import AdminRooms
    from .config.ini import Config
    from .core.media import MediaLinks
    from .matrix import HomeserverClient
    from .store.models import Store

__all__ = ["__version__", "create_app"]

log = logging.getLogger(__name__)

def create_app(config_path: str | None = None, *, config: Config | None = None,
               store: Store | None = None, client: HomeserverClient | None = None,
               media: MediaLinks | None = None, admin: AdminRooms | None = None,
               start_background: bool = True, setup_logging: bool = True) -> Flask:
    """Build the Flask app from the parts given, building the missing ones.

    config: the loaded config.ini (else read from `config_path`, `$IRCBRIDGE_CONFIG` or
    ./config.ini). store: the database (else opened from `[database] url`; a given one is
    checked with `Store.open` too). client: the homeserver client (else one with the
    as_token). media: the signed media links (else made with the database's secret, on
    `client`). admin: the admin rooms (else made for this bridge). With start_background the
    bridge's threads start too; the caller of a test app closes it (tests/conftest.py).
    """
    from flask import Flask

    from . import web
    from .admin.rooms import AdminRooms
    from .config import ini as config_module
    from .core.bridge import Bridge
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

    if store is None:
        store = Store(config.database.url, config.appservice.id,
                      sqlite_synchronous=config.database.sqlite_synchronous)
    store.open(config.path.name, [n.name for n in config.networks])
    bridge = Bridge(config, store=store, client=client)
    if admin is None:
        admin = AdminRooms(bridge)  # admin rooms, static mappings, room directory
    if media is None:
        media = media_links(config, store, bridge.client)
    bridge.attach(admin=admin, media=media)

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.appservice.max_body_bytes
    app.config["IRCBRIDGE_HS_TOKEN"] = config.appservice.hs_token
    # Flask's documented switch; its stubs type app.json as the base JSONProvider, which
    # lacks the attribute the default provider has.
    app.json.sort_keys = False  # type: ignore[attr-defined]
    web.install(app, bridge, media)
    # Wrapping wsgi_app is Flask's documented way to add middleware; the stubs see a method.
    app.wsgi_app = _NoDelay(app.wsgi_app)  # type: ignore[method-assign]
    if start_background:
        admin.start()  # first: its IRC hooks are queued before any connection
        bridge.start()
        atexit.register(bridge.stop)
    return app


def media_links(config: Config, store: Store, client: HomeserverClient) -> MediaLinks:
    """The bridge's signed media links, as config.ini's [media] says, with the database's
    signing secret and its revocations (the default `media` of `create_app`)."""
    from .core.media import MediaLinks, load_secret
    from .core.media_revocations import MediaRevocations

    ttl = config.media.link_ttl_days * 86400
    revocations = MediaRevocations(store.db, ttl)
    revocations.create_tables()
    return MediaLinks(
        client, config.media.public_url or config.appservice.url, load_secret(store),
        ttl_seconds=ttl, max_bytes=config.media.max_bytes,
        max_concurrent=max(1, config.appservice.threads // 2),
        read_timeout=config.media.read_timeout, revocations=revocations,
    )


class _NoDelay:
    """Set TCP_NODELAY on gunicorn's client socket.

    gunicorn writes a response's headers and body in two sends; on a kept-alive connection
    Nagle's algorithm then holds the body until the homeserver's delayed ACK, about 40 ms per
    request (and Synapse sends one transaction at a time).
    """

    def __init__(self, wsgi_app: WSGIApplication):
        self.wsgi_app = wsgi_app

    def __call__(self, environ: WSGIEnvironment,
                 start_response: StartResponse) -> Iterable[bytes]:
        sock = environ.get("gunicorn.socket")
        if isinstance(sock, socket.socket):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        return self.wsgi_app(environ, start_response)
