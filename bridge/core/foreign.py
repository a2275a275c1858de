"""Matrix users of other application services: the bridge never makes IRC puppets for them.

A room bridged by two bridges (or shared with another bridge's portal) holds the other
bridge's bot and virtual users; their messages are pushed to this bridge too, since it is
interested in the room. Relaying them would open IRC connections for users that are
themselves IRC users of another network (e.g. `ircbetabot[m]`), and echo lines around.

Who is foreign:
- users matching a regex of `[appservice] exclude_users` (any other application service:
  the homeserver does not tell one application service about another's namespaces);
- the bot and the user namespaces of every other ircbridge bridge on the same database:
  each bridge writes its own into the `bridge_registration` table (at start, and before
  `ircbridge link` or `migrate` touch the database), and the others read them here. A
  sender seen for the first time makes the list be read again (one small query), so a
  bridge that registered a moment ago is known before its bot's first event is handled;
  the answer for a user is then kept for `refresh` seconds.
Ours (the bot and our virtual users) are handled by `Bridge.is_ours`, not here.

Threads: any (the inbox thread, the startup checks); the cache is guarded by a lock, and a
database error keeps the last known list.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterable
from typing import Protocol

log = logging.getLogger(__name__)


class BridgeDirectory(Protocol):
    def other_bridges(self) -> list[tuple[str, str, list[str]]]: ...


class ForeignUsers:
    def __init__(self, directory: BridgeDirectory, exclude: Iterable[str] = (),
                 refresh: float = 30.0):
        self._directory = directory
        self._exclude = [re.compile(p) for p in exclude]
        self._refresh = refresh
        self._lock = threading.Lock()
        self._others: list[re.Pattern[str]] = []
        self._bots: set[str] = set()
        self._answers: dict[str, tuple[bool, float]] = {}  # user -> (foreign, when)

    def is_foreign(self, user_id: str) -> bool:
        if any(p.match(user_id) for p in self._exclude):
            return True
        now = time.monotonic()
        with self._lock:
            known = self._answers.get(user_id)
        if known is not None and now - known[1] <= self._refresh:
            return known[0]
        self.reload()
        with self._lock:
            answer = user_id in self._bots or any(p.match(user_id) for p in self._others)
            if len(self._answers) > 10000:
                self._answers.clear()
            self._answers[user_id] = (answer, now)
        return answer

    def reload(self) -> None:
        """Read the other bridges' namespaces now."""
        try:
            rows = self._directory.other_bridges()
        except Exception as e:  # noqa: BLE001 - keep the last list; try again later
            log.warning("cannot read the other bridges' namespaces: %s", e)
            return
        patterns: list[re.Pattern[str]] = []
        bots: set[str] = set()
        for bridge_id, bot, regexes in rows:
            bots.add(bot)
            for regex in regexes:
                try:
                    patterns.append(re.compile(regex))
                except re.error:
                    log.warning("bridge %s has an invalid user regex %r", bridge_id, regex)
        with self._lock:
            self._others, self._bots = patterns, bots
