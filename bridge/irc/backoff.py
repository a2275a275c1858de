"""How long a lost IRC connection waits before it tries again (pure functions).

Why: a server that closes right after registration (a K-line, an excess flood) must not be
asked again every 1-2 s, the way networks ban bridges. The wait doubles with every failure
(with jitter, capped), the count only starts over after a link that stayed up
(connection.STABLE_AFTER), and a ban waits far longer. Called on the IRC thread.
"""

from __future__ import annotations

import random

MAX_BACKOFF = 300.0
# Words of an ERROR / 465 text that say the server bans us (not a passing fault).
_BAN_WORDS = ("k-line", "k-lined", "kline", "g-line", "g-lined", "gline", "z-line", "z-lined",
              "d-line", "akill", "banned", "you are not welcome")


def delay(failures: int, *, jitter: float | None = None) -> float:
    """Seconds to wait after the `failures`-th failure in a row (1 -> 1-2 s, 2 -> 2-4 s...)."""
    factor = random.uniform(0.5, 1.0) if jitter is None else jitter
    return min(MAX_BACKOFF, 2.0 ** min(max(failures, 1), 10)) * factor


def is_ban(text: str) -> bool:
    """Does this ERROR/465 text say the server bans us?"""
    lowered = text.lower()
    return any(word in lowered for word in _BAN_WORDS)
