"""How hard one homeserver call tries: a `RetryPolicy`, chosen per call, bounded per scope.

Why: the bridge has one `HomeserverClient`, but its callers need different budgets. A
background call (the startup checks, the inbox) may wait out a homeserver restart (DEFAULT);
the answer to a homeserver's query must come back before the homeserver stops waiting for it,
60 s (QUERY); a caller that has its own retry loop -- the senders, which look for the event a
previous try may have stored before trying again -- wants one request per try (ONCE).

A call names its policy (`policy=` on the client's methods, or on an `Intent`). A caller that
runs other code in a loop of its own bounds every call made inside it with `at_most(ONCE)`,
whatever those calls named: the effective policy is the smaller of the two, field by field.
The bound is a context variable, so it covers the thread (or context) that set it and no
other: a new thread starts unbounded.

429 with a `retry_after` and 5xx/connection errors are retried within `attempts`; other 4xx
never are (bridge/matrix/client.py).

Thread: any; policies are immutable and the bound is per thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` requests at most (1 = no retry), backoff up to `backoff_cap` seconds
    between them, and `timeout` seconds to read each answer."""

    attempts: int
    backoff_cap: float
    timeout: float

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("a policy makes at least one attempt")
        if self.backoff_cap < 0 or self.timeout <= 0:
            raise ValueError("backoff_cap must be >= 0 and timeout > 0")

    def within(self, limit: RetryPolicy) -> RetryPolicy:
        """This policy, never trying harder than `limit` (field by field)."""
        if self == limit:
            return self
        return RetryPolicy(
            attempts=min(self.attempts, limit.attempts),
            backoff_cap=min(self.backoff_cap, limit.backoff_cap),
            timeout=min(self.timeout, limit.timeout),
        )


# Rides out a homeserver restart: 7 waits of 0.5 s doubling up to 30 s (about 1.5 min).
DEFAULT = RetryPolicy(attempts=8, backoff_cap=30.0, timeout=30.0)
# The homeserver waits at most 60 s for the answer to a user or alias query, which may make
# a few calls: each gets 3 tries of at most 15 s with short waits, so a homeserver that
# cannot be reached back makes the query fail (502) in time rather than time out.
QUERY = RetryPolicy(attempts=3, backoff_cap=2.0, timeout=15.0)
# For callers that retry themselves: one request, its error raised at once.
ONCE = RetryPolicy(attempts=1, backoff_cap=0.0, timeout=30.0)

_bound: ContextVar[RetryPolicy | None] = ContextVar("matrix_retry_bound", default=None)


@contextmanager
def at_most(limit: RetryPolicy) -> Iterator[None]:
    """Bound every homeserver call made inside (in this thread) by `limit`; nests."""
    outer = _bound.get()
    token = _bound.set(limit if outer is None else limit.within(outer))
    try:
        yield
    finally:
        _bound.reset(token)


def effective(policy: RetryPolicy) -> RetryPolicy:
    """`policy` as bounded by the enclosing `at_most` scopes, if any."""
    bound = _bound.get()
    return policy if bound is None else policy.within(bound)
