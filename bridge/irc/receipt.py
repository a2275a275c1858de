"""What the sender of a message hears back from the IRC side, as one small typed object.

Made by the caller (the Matrix -> IRC path, on the inbox thread) and handed with a message's
lines to the IRC thread, which calls it: `started()` right before the first line is written
to the socket, then `finished(ok, error)` exactly once: after the last line left, or, on a
connection with echo-message, once the server echoed every line back (bridge.irc.echo),
or as soon as any line failed or was refused. `echoed(msgid, ts)` for each echo that
carried a msgid, before `finished`. All run on the IRC thread, so they must only queue.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


def _nothing() -> None:
    return None


def _no_msgid(msgid: str, ts: int) -> None:
    return None


@dataclass(frozen=True)
class Receipt:
    """The moments a message's sender cares about (see the module docstring)."""

    finished: Callable[[bool, str | None], None]
    started: Callable[[], None] = _nothing
    echoed: Callable[[str, int], None] = _no_msgid
