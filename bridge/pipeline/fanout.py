"""One inbox event, several IRC channels: a room linked on several networks.

The inbox hands each event over with one completion (bridge.pipeline.inbox.Completion); an event of
a room linked to a channel on each of two networks is sent to both, and its row is done once
both are. `Shares.part()` makes one completion-like object per channel: the first `started`
is passed on (the journal notes that sending began), `finished` is passed on once every
part finished, ok only if every part was.

Threads: parts finish on whatever thread the IRC side reports on; a lock guards the count.
"""

from __future__ import annotations

import threading
from typing import Protocol


class Outcome(Protocol):
    """What a handler reports an event's outcome to (Completion, or one part of one)."""

    @property
    def stopping(self) -> bool: ...
    def started(self) -> None: ...
    def finished(self, ok: bool = True) -> None: ...


class Shares:
    def __init__(self, whole: Outcome, parts: int):
        self._whole = whole
        self._left = parts
        self._ok = True
        self._lock = threading.Lock()

    def part(self) -> Part:
        return Part(self)

    def _finished(self, ok: bool) -> None:
        with self._lock:
            self._ok = self._ok and ok
            self._left -= 1
            last = self._left == 0
        if last:
            self._whole.finished(self._ok)


class Part:
    __slots__ = ("_shares", "_done")

    def __init__(self, shares: Shares):
        self._shares = shares
        self._done = False

    @property
    def stopping(self) -> bool:
        return self._shares._whole.stopping

    def started(self) -> None:
        self._shares._whole.started()

    def finished(self, ok: bool = True) -> None:
        if self._done:
            return
        self._done = True
        self._shares._finished(ok)
