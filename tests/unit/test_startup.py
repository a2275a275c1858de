"""The bridge's startup checks are `ircbridge check`'s (bridge.ops.checks), retried.

A loopback fake homeserver gives the answers a real one gives a misconfigured bridge: the
as_token refused until the registration is loaded, then accepted; the health the status
page shows follows each step.
"""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any, cast

from bridge.config.ini import Config
from bridge.core.startup import Startup
from bridge.matrix import HomeserverClient, Intent, IntentCache
from bridge.matrix.retry import RetryPolicy
from tests.unit.test_matrix_client import FakeHomeserver, err


def _startup(config: Config, hs: FakeHomeserver) -> tuple[Startup, HomeserverClient]:
    client = HomeserverClient(hs.url, "as-token", server_name="localhost",
                              policy=RetryPolicy(attempts=1, backoff_cap=0.0, timeout=5.0))
    bot = Intent(client, config.bot_user_id, is_bot=True, cache=IntentCache())
    none = cast(Any, None)
    offline = cast(Any, SimpleNamespace(started=False))  # no IRC: no puppets to bring back
    health = {"homeserver": "unknown", "ping": "unknown"}
    return Startup(config, client, bot, offline, none, list, none, threading.Event(),
                   health), client


def test_a_refused_as_token_is_told_then_the_bridge_goes_on_once_accepted(
        config: Config) -> None:
    hs = FakeHomeserver()
    seen: list[str] = []
    try:
        def answer(rec: Any) -> Any:
            seen.append(rec.path)
            if rec.path.endswith("/account/whoami"):
                if seen.count(rec.path) == 1:
                    return err(401, "M_UNKNOWN_TOKEN", "unknown token")
                return 200, {"user_id": config.bot_user_id}
            if rec.path.endswith("/ping"):
                return 200, {"duration_ms": 3}
            return 200, {"user_id": config.bot_user_id}

        hs.handler = answer
        startup, client = _startup(config, hs)
        done = threading.Thread(target=startup.run)
        done.start()
        assert startup.hs_ready.wait(15), startup.health
        done.join(15)
        assert startup.health == {"homeserver": "ok", "ping": "ok"}
        assert seen.count("/_matrix/client/v3/account/whoami") == 2
        client.close()
    finally:
        hs.stop()


def test_a_ping_the_configuration_must_fix_is_not_repeated(config: Config) -> None:
    hs = FakeHomeserver()
    pings: list[str] = []
    try:
        def answer(rec: Any) -> Any:
            if rec.path.endswith("/ping"):
                pings.append(rec.path)
                return err(400, "M_URL_NOT_SET", "no url")
            return 200, {"user_id": config.bot_user_id}

        hs.handler = answer
        startup, client = _startup(config, hs)
        startup.run()
        assert startup.health == {"homeserver": "ok", "ping": "M_URL_NOT_SET"}
        assert len(pings) == 1
        client.close()
    finally:
        hs.stop()
