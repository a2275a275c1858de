"""Nicks our connections had lately, so their echoes are still recognised as ours.

Why: the server echoes a puppet's TOPIC, MODE or KICK to every connection in the channel,
and the forwarding connection may read it after the puppet changed nick or was dropped. A
nick checked only against the connections' current nicks would then look like an IRC user,
and the bridge would make a virtual user for its own puppet.

Thread: the IRC thread only (owned by its `Network`).
"""

from __future__ import annotations

import time

# Long enough for any echo still in flight; short enough that an IRC user who takes the
# nick later is bridged normally.
REMEMBER_FOR = 120.0


class FormerNicks:
    """Folded nicks -> until when they still count as ours."""

    def __init__(self, remember_for: float = REMEMBER_FOR) -> None:
        self.remember_for = remember_for
        self._until: dict[str, float] = {}

    def add(self, folded: str) -> None:
        if folded:
            self._until[folded] = time.monotonic() + self.remember_for

    def holds(self, folded: str) -> bool:
        until = self._until.get(folded)
        if until is None:
            return False
        if until < time.monotonic():
            del self._until[folded]
            return False
        return True
