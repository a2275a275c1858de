"""`create_app` wires the parts it is given and builds only the missing ones; the web layer
reads them back typed (bridge.web.context). No homeserver needed (no background threads)."""

from __future__ import annotations

import pytest
from flask import Flask

from bridge.admin.rooms import AdminRooms
from bridge.config.ini import Config
from bridge.core.media import MediaLinks
from bridge.matrix import HomeserverClient
from bridge.store.models import Store
from bridge.web.context import bridge_of, media_of
from tests.conftest import built_app


def test_the_parts_given_are_the_parts_wired(config: Config, store: Store) -> None:
    client = HomeserverClient(config.homeserver.url, config.appservice.as_token,
                              server_name=config.homeserver.domain)
    media = MediaLinks(client, "https://media.example.org", b"k" * 32, 60, 1024)
    with built_app(config, store=store, client=client, media=media) as app:
        bridge = bridge_of(app)
        assert bridge.config is config and bridge.store is store and bridge.client is client
        assert media_of(app) is media and bridge.media is media


def test_the_missing_parts_are_built(app: Flask) -> None:
    bridge = bridge_of(app)
    media = media_of(app)
    assert media.client is bridge.client and bridge.media is media
    assert isinstance(bridge.admin, AdminRooms) and bridge.admin.bridge is bridge
    assert media.revocations is not None


def test_an_app_not_made_by_create_app_says_so() -> None:
    bare = Flask(__name__)
    with pytest.raises(RuntimeError, match="create_app"):
        bridge_of(bare)
    with pytest.raises(RuntimeError, match="create_app"):
        media_of(bare)
