"""Pruning on a timer: handled queue rows and transactions older than `[database] keep_days`.

The inbox keeps every pushed event (full payloads, private messages included) and the
outbox every delivered line, for dedupe and for replies and edits; without pruning they
grow forever. Pending rows are never pruned (Store.prune).

Thread: its own ("pruner"), with its own database connection; it runs once soon after the
start and then every `every` seconds, and stops with the bridge.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

log = logging.getLogger(__name__)

DAY_MS = 86400 * 1000


class Prunable(Protocol):
    def prune(self, max_age_ms: int = ...) -> int: ...
    def close_connection(self) -> None: ...


class Pruner:
    def __init__(self, store: Prunable, keep_days: int, *, every: float = 3600.0,
                 first_after: float = 60.0):
        self.store = store
        self.keep_ms = keep_days * DAY_MS
        self.every = every
        self.first_after = first_after
        self.runs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pruner", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        wait = self.first_after
        while not self._stop.wait(wait):
            wait = self.every
            try:
                self.store.prune(self.keep_ms)
                self.runs += 1
            except Exception as e:  # noqa: BLE001 - the database may be restarting
                log.warning("pruning old rows failed: %s; trying again later", e)
        try:
            self.store.close_connection()
        except Exception:  # noqa: BLE001
            pass
