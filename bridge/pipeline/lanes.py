"""Lanes: a few worker threads where all work for one key runs on one thread, in order.

Why: the admin rooms' commands may wait on IRC replies and the homeserver, so they cannot
run on the inbox or IRC thread; one thread per room would not scale, one thread for all would
let one slow command hold up everyone. Work is routed by a hash of its key (a room id), so a
room's commands and notices keep their order.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import zlib
from collections.abc import Callable
from typing import TypeVarTuple

log = logging.getLogger(__name__)

Ts = TypeVarTuple("Ts")
# One piece of work: a function and its arguments (None: the lane stops).
_Work = tuple[Callable[..., object], tuple[object, ...]] | None


class Lanes:
    """Worker threads; work for one key (a room) always runs on the same thread, in order."""

    def __init__(self, count: int, name: str):
        self._queues: list[queue.SimpleQueue[_Work]]
        self._queues = [queue.SimpleQueue() for _ in range(count)]
        self._threads = [
            threading.Thread(target=self._run, args=(q_,), name=f"{name}-{i}", daemon=True)
            for i, q_ in enumerate(self._queues)
        ]

    def start(self) -> None:
        for thread in self._threads:
            if not thread.is_alive():
                thread.start()

    def submit(self, key: str, fn: Callable[[*Ts], object], *args: *Ts) -> None:
        lane = zlib.crc32(key.encode("utf-8", "surrogatepass")) % len(self._queues)
        self._queues[lane].put((fn, args))

    def stop(self, timeout: float = 5.0) -> None:
        """Let each lane finish the work it has, within `timeout` seconds for all lanes."""
        for q_ in self._queues:
            q_.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

    @staticmethod
    def _run(work: queue.SimpleQueue[_Work]) -> None:
        while True:
            item = work.get()
            if item is None:
                return
            fn, args = item
            try:
                fn(*args)
            except Exception:  # noqa: BLE001 - one failure must not stop the lane
                log.exception("admin work failed")
