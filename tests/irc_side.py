"""Test helper: the NetworkConfig of the tests that run an `IrcSide` without the core.

`network(port)` is one network named "t" on 127.0.0.1:`port` (bot `tbot`, no TLS, no
channels, no flood control, up to 2 connects at once); keyword arguments replace any field.

Runs on the test's own thread.
"""

from __future__ import annotations

from typing import Any

from bridge.config.ini import NetworkConfig


def network(port: int, **overrides: Any) -> NetworkConfig:
    values: dict[str, Any] = dict(
        name="t", host="127.0.0.1", port=port, tls=False, tls_verify=True, display_name="t",
        user_template="t_{nick}", alias_template="t_{channel}",
        puppet_nick_template="{localpart}[m]", bot_nick="tbot", channels=(),
        scrollback_lines=5, flood_rate=0.0, flood_burst=5, max_lines=3, connect_timeout=5.0,
        max_concurrent_connects=2, password="",
    )
    values.update(overrides)
    return NetworkConfig(**values)
