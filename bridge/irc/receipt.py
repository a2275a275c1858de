"""What the sender of a message hears back from the IRC side, as one small typed object.

Made by the caller (the Matrix -> IRC path, on the inbox thread) and handed with a message's
lines to the IRC thread, which calls it: `started()` right before the first line is written
to the socket, then `finished(ok, error)` exactly once, after the last line left or as soon
as any line failed. Both run on the IRC thread, so they must only queue or append.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class Receipt:
    """The two moments a message's sender cares about (see the module docstring)."""

    finished: Callable[[bool, str | None], None]
    started: Callable[[], None] = _nothing
