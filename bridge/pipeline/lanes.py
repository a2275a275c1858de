"""One keyed pool of worker threads: all work of one key runs in order, one key at a time.

Both kinds of sender use it: the homeserver senders (bridge.pipeline.outbox.Senders, keyed
by a row's room or private conversation) and the admin rooms' lanes (`Lanes`, keyed by the
admin room). Each key has its own FIFO; a key with work waits in the ready queue; a free
thread takes it, runs up to `batch` of its items, and gives the key back behind the others.
No two threads ever serve one key, so its order is kept, and a busy key (a flooded room,
a slow admin command waiting on IRC) never holds up the others, whatever their hash.

Thread: `put` from any thread (the recorder, the inbox thread, request threads); the items
run on the pool's own threads.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar, TypeVarTuple

log = logging.getLogger(__name__)

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class KeyedPool(Generic[T]):
    """Threads serving per-key FIFOs of items (see module)."""

    def __init__(self, name: str, count: int, handle: Callable[[T], None], *,
                 batch: int = 20):
        self.handle = handle
        self.batch = batch  # items of one key before the thread lets other keys go first
        self._fifos: dict[str, collections.deque[T]] = {}
        self._serving: set[str] = set()
        self._ready: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # guards _fifos, _serving, depth and _finishing
        self._stopping = threading.Event()
        self._finishing = False
        self.depth = 0  # items queued, not yet handled
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True)
            for i in range(max(1, count))
        ]

    def start(self) -> None:
        for thread in self._threads:
            if not thread.is_alive():
                thread.start()

    def put(self, key: str, item: T) -> None:
        self.put_many([(key, item)])

    def put_many(self, items: Iterable[tuple[str, T]]) -> None:
        with self._lock:
            for key, item in items:
                fifo = self._fifos.setdefault(key, collections.deque())
                was_idle = not fifo and key not in self._serving
                fifo.append(item)
                self.depth += 1
                if was_idle:
                    self._ready.put(key)

    @property
    def stopping(self) -> bool:
        """True once `stop(finish=False)` was called: long handlers should return early."""
        return self._stopping.is_set()

    def stop(self, timeout: float = 5.0, *, finish: bool = False) -> None:
        """End the threads within `timeout` seconds for all. With `finish`, the work already
        queued runs first; without, each thread ends after the item it is on."""
        with self._lock:
            self._finishing = finish
            if not finish:
                self._stopping.set()
            idle = not self._serving and not any(self._fifos.values())
        if not finish or idle:
            for _ in self._threads:
                self._ready.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

    def _run(self) -> None:
        while True:
            key = self._ready.get()
            if key is None or self._stopping.is_set():
                return
            with self._lock:
                self._serving.add(key)
            for _ in range(self.batch):
                with self._lock:
                    fifo = self._fifos.get(key)
                    item = fifo.popleft() if fifo else None
                if item is None or self._stopping.is_set():
                    break
                try:
                    self.handle(item)
                except Exception:  # noqa: BLE001 - one failure must not stop the pool
                    log.exception("work for %s failed", key)
                with self._lock:
                    self.depth -= 1
            with self._lock:
                self._serving.discard(key)
                fifo = self._fifos.get(key)
                if fifo:
                    self._ready.put(key)  # more to do: back in line behind the other keys
                else:
                    self._fifos.pop(key, None)
                    if self._finishing and not self._serving and not any(self._fifos.values()):
                        for _ in self._threads:  # the queued work is done: end
                            self._ready.put(None)


# One piece of admin work: a function and its arguments.
_Work = tuple[Callable[..., object], tuple[object, ...]]


class Lanes:
    """The admin rooms' worker lanes: work for one key (a room) runs in order."""

    def __init__(self, count: int, name: str):
        self._pool: KeyedPool[_Work] = KeyedPool(name, count, _run_work, batch=5)

    def start(self) -> None:
        self._pool.start()

    def submit(self, key: str, fn: Callable[[*Ts], object], *args: *Ts) -> None:
        self._pool.put(key, (fn, args))

    def stop(self, timeout: float = 5.0) -> None:
        """Let the lanes finish the work they have, within `timeout` seconds for all."""
        self._pool.stop(timeout, finish=True)


def _run_work(work: _Work) -> None:
    fn, args = work
    fn(*args)
