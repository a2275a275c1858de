"""Netsplit QUITs: the virtual user stays a while, and leaves only if its user is not back.

Why: in a netsplit every user behind the lost server QUITs with the two servers' names as
the reason and most JOIN again minutes later when it heals. Leaving and rejoining the room
for each churns it; dropping the QUIT for good left ghosts of users who never came back.
So a split QUIT starts a timer (`netsplit_leave_after`); a JOIN of that nick in the channel
cancels it there, and when it fires the ghost leaves the channels the user is not back in.

Thread: the IRC thread only (owned by its `Network`, timers on the IRC thread's scheduler).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .reactor import IrcThread, Timer

log = logging.getLogger(__name__)

# "irc.example.net other.example.net": the QUIT reason servers give in a netsplit.
NETSPLIT = re.compile(r"^[\w.-]+\.[a-z]{2,} [\w.-]+\.[a-z]{2,}$", re.I)


def is_netsplit(reason: str) -> bool:
    return bool(NETSPLIT.match(reason or ""))


@dataclass
class Split:
    nick: str  # as IRC wrote it
    reason: str
    channels: set[str] = field(default_factory=set)  # folded, still waiting
    timer: Timer | None = None


class Splits:
    """Folded nick -> the channels its delayed leave still waits on."""

    def __init__(self, thread: IrcThread, leave_after: float,
                 leave: Callable[[str, str, str], None],
                 present: Callable[[str, str], bool]) -> None:
        self.thread = thread
        self.leave_after = leave_after
        self._leave = leave  # (folded channel, nick, reason): the ghost leaves now
        self._present = present  # (folded channel, folded nick): are they back there?
        self.pending: dict[str, Split] = {}

    def quit(self, folded: str, nick: str, reason: str, channels: set[str]) -> None:
        if not channels:
            return
        split = self.pending.get(folded)
        if split is None:
            split = self.pending[folded] = Split(nick, reason)
            split.timer = self.thread.call_later(self.leave_after, lambda: self._expire(folded))
            log.info("%s lost in a netsplit (%s); leaving in %.0f s unless back", nick, reason,
                     self.leave_after)
        split.channels |= channels

    def back(self, folded: str, channel: str) -> None:
        """The nick joined `channel` again: its ghost stays there."""
        split = self.pending.get(folded)
        if split is None:
            return
        split.channels.discard(channel)
        if not split.channels:
            self._drop(folded)

    def _drop(self, folded: str) -> None:
        split = self.pending.pop(folded, None)
        if split is not None and split.timer is not None:
            split.timer.cancel()

    def _expire(self, folded: str) -> None:
        split = self.pending.pop(folded, None)
        if split is None:
            return
        for channel in sorted(split.channels):
            if not self._present(channel, folded):
                self._leave(channel, split.nick, split.reason)

    def cancel(self) -> None:
        for folded in list(self.pending):
            self._drop(folded)
