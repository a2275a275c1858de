"""The lines waiting to leave one IRC connection, one FIFO per target.

Why per target: a line for a channel we are not in yet waits for our JOIN; in one shared
queue it held up every later line of that connection (PMs and other channels included)
until the JOIN succeeded or `give_up_after` passed. Here each target (folded channel or
nick; "" for control lines) keeps its own order, the oldest line of any target that may
go is sent next, and a refusal fails one target's lines only. IRC thread only.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Callable, Iterator
from typing import Generic, Protocol, TypeVar


class Waiting(Protocol):
    """What this module needs of a queued line."""

    target: str
    queued_at: float


T = TypeVar("T", bound=Waiting)


class TargetQueues(Generic[T]):
    """FIFO per target; `next_ready` picks the oldest head among the targets that may go."""

    def __init__(self) -> None:
        self._queues: dict[str, collections.deque[tuple[int, T]]] = {}
        self._seq = itertools.count()

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def __bool__(self) -> bool:
        return bool(self._queues)

    def __iter__(self) -> Iterator[T]:
        """Every waiting line, oldest first."""
        entries = sorted(e for q in self._queues.values() for e in q)
        return iter([item for _, item in entries])

    def append(self, item: T) -> None:
        self._queues.setdefault(item.target, collections.deque()).append((next(self._seq), item))

    def targets(self) -> list[str]:
        return list(self._queues)

    def next_ready(self, ready: Callable[[T], bool]) -> T | None:
        """Remove and return the oldest line at the head of its target's queue for which
        `ready(line)` holds, or None."""
        best: tuple[int, str] | None = None
        for target, queue in list(self._queues.items()):
            seq, head = queue[0]
            if (best is None or seq < best[0]) and ready(head):
                best = (seq, target)
        if best is None:
            return None
        return self._pop(best[1])

    def _pop(self, target: str) -> T:
        queue = self._queues[target]
        _, item = queue.popleft()
        if not queue:
            del self._queues[target]
        return item

    def take(self, target: str) -> list[T]:
        """Remove and return every line for `target`."""
        queue = self._queues.pop(target, None)
        return [item for _, item in queue] if queue else []

    def take_all(self) -> list[T]:
        items = list(self)
        self._queues.clear()
        return items

    def remove_if(self, doomed: Callable[[T], bool]) -> list[T]:
        """Remove and return every line for which `doomed(line)` holds."""
        removed: list[T] = []
        for target in list(self._queues):
            queue = self._queues[target]
            kept = collections.deque(e for e in queue if not doomed(e[1]))
            removed += [e[1] for e in queue if doomed(e[1])]
            if kept:
                self._queues[target] = kept
            else:
                del self._queues[target]
        return removed

    def expired(self, before: float) -> list[T]:
        """Remove and return every line queued before `before` (monotonic seconds)."""
        old: list[T] = []
        for target in list(self._queues):
            queue = self._queues[target]
            while queue and queue[0][1].queued_at < before:
                old.append(queue.popleft()[1])
            if not queue:
                del self._queues[target]
        return old
