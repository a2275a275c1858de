"""Who may use the bridge: the `[permissions]` role of a Matrix user, without any I/O.

Pure, any thread. The table comes from config.ini's [permissions] (bridge.config.ini); the gate
that applies it before every action is bridge.core.access.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol


class HasPermissions(Protocol):
    """What role_of reads of the config: its [permissions] table as (who, role) pairs."""

    @property
    def permissions(self) -> Iterable[tuple[str, str]]: ...


def role_of(config: HasPermissions, user_id: str) -> str | None:
    """The most specific matching permission: exact id, then server, then `*`."""
    server = user_id.split(":", 1)[1] if ":" in user_id else ""
    table = dict(config.permissions)
    for key in (user_id, server, "*"):
        if key in table:
            return table[key]
    return None
