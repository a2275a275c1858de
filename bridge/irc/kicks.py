"""What the bridge does when IRC kicks one of its own connections out of a channel.

Why: a kicked bot stopped relaying the channel silently, and a kicked puppet left its Matrix
user in the room as if nothing had happened. Now:
- the bot rejoins with backoff (`kick_rejoin_after`, doubled per failed try, at most
  `MAX_BOT_DELAY`), and while it is out the channel is listed in the status;
- a puppet rejoins once, after `kick_rejoin_after`; kicked again within `REKICK_WINDOW` of
  that rejoin it stays out (never a kick/rejoin loop) until its user speaks there again.
The Matrix user is never removed from the room; they are told through the listener.

Thread: the IRC thread only (owned by its `Network`, timers on the IRC thread's scheduler).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .connection import State

if TYPE_CHECKING:
    from .connection import IrcConnection
    from .reactor import IrcThread, Timer

log = logging.getLogger(__name__)

MAX_BOT_DELAY = 600.0
# A puppet kicked again this soon after its automatic rejoin is not rejoined again.
REKICK_WINDOW = 300.0


@dataclass
class BotKick:
    """The bot is out of a channel it should be in."""

    channel: str  # as written, for the JOIN
    by: str
    reason: str
    since: float = field(default_factory=time.time)
    attempts: int = 0
    timer: Timer | None = None

    def status(self) -> dict[str, object]:
        return {"by": self.by, "reason": self.reason, "since": int(self.since),
                "attempts": self.attempts}


class Rejoins:
    """Rejoin timers of one network's bot and puppets."""

    def __init__(self, thread: IrcThread, rejoin_after: float,
                 bot: Callable[[], IrcConnection | None]) -> None:
        self.thread = thread
        self.rejoin_after = rejoin_after
        self._bot = bot
        self.bot_kicks: dict[str, BotKick] = {}  # folded channel -> why the bot is out
        self._puppet_timers: dict[tuple[str, str], Timer] = {}
        self._puppet_rejoined: dict[tuple[str, str], float] = {}  # -> monotonic time

    # ------------------------------------------------------------ the bot
    def bot_kicked(self, folded: str, channel: str, by: str, reason: str) -> float:
        """Start rejoining; returns the delay before the first try."""
        kick = self.bot_kicks.get(folded)
        if kick is None:
            kick = self.bot_kicks[folded] = BotKick(channel, by, reason)
        else:
            kick.by, kick.reason = by, reason
        if kick.timer is not None:
            kick.timer.cancel()
        delay = self.rejoin_after
        kick.timer = self.thread.call_later(delay, lambda: self._bot_try(folded))
        return delay

    def _bot_try(self, folded: str) -> None:
        kick = self.bot_kicks.get(folded)
        bot = self._bot()
        if kick is None or bot is None:
            return
        kick.attempts += 1
        log.info("the bot tries to rejoin %s (try %d)", kick.channel, kick.attempts)
        bot.join(kick.channel)
        delay = min(MAX_BOT_DELAY, self.rejoin_after * 2 ** kick.attempts)
        kick.timer = self.thread.call_later(delay, lambda: self._bot_try(folded))

    def bot_joined(self, folded: str) -> BotKick | None:
        """The bot is in the channel again: stop trying; returns the kick that ended."""
        kick = self.bot_kicks.pop(folded, None)
        if kick is not None and kick.timer is not None:
            kick.timer.cancel()
        return kick

    def bot_unwanted(self, folded: str) -> None:
        """The channel is no longer bridged: stop trying to get back in."""
        self.bot_joined(folded)

    def status(self) -> dict[str, dict[str, object]]:
        return {folded: kick.status() for folded, kick in self.bot_kicks.items()}

    # ------------------------------------------------------------ puppets
    def puppet_kicked(self, conn: IrcConnection, folded: str, channel: str) -> float | None:
        """Schedule the one rejoin; None when it was just rejoined and kicked again."""
        key = (conn.owner, folded)
        last = self._puppet_rejoined.get(key)
        if last is not None and time.monotonic() - last < REKICK_WINDOW:
            conn.wanted_channels.pop(folded, None)  # a reconnect does not rejoin either
            return None
        pending = self._puppet_timers.pop(key, None)
        if pending is not None:
            pending.cancel()

        def rejoin() -> None:
            self._puppet_timers.pop(key, None)
            if conn.state is State.CLOSED or folded in conn.channels:
                return
            self._puppet_rejoined[key] = time.monotonic()
            conn.join(channel)

        self._puppet_timers[key] = self.thread.call_later(self.rejoin_after, rejoin)
        return self.rejoin_after

    def cancel(self) -> None:
        for kick in self.bot_kicks.values():
            if kick.timer is not None:
                kick.timer.cancel()
        for timer in self._puppet_timers.values():
            timer.cancel()
        self._puppet_timers.clear()
