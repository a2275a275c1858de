"""The inbox worker: hands stored homeserver events to the core, in order, and marks them done.

Transactions are written to the inbox table before they are answered (see store), so the
homeserver is never kept waiting on IRC. This thread reads pending rows in id order and calls
`handle(event, done)`; the handler calls `done(ok)` from any thread once the event's work is
finished (for a message: when its lines were written to the IRC socket). Rows still pending
at a crash are handled again at the next start.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from . import metrics
from .store import DONE, FAILED, Store

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any], Callable[[bool], None]], None]


class InboxWorker:
    """One thread; owns the in-flight set and the completion queue."""

    def __init__(self, store: Store, handle: Handler, *, batch: int = 200):
        self.store = store
        self.handle = handle
        self.batch = batch
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._completed: queue.SimpleQueue[tuple[int, bool]] = queue.SimpleQueue()
        self._in_flight: set[int] = set()
        self._last_id = 0
        self._thread = threading.Thread(target=self._run, name="inbox", daemon=True)
        self.idle = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def notify(self) -> None:
        """New rows were stored; called by the transaction handler after committing."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._flush_completed()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._flush_completed()
                worked = self._dispatch_pending()
            except Exception:  # noqa: BLE001 - e.g. the database restarting; try again soon
                log.exception("the inbox worker hit an error; retrying")
                worked = False
                self._stop.wait(1.0)
            if not worked:
                self.idle.set() if not self._in_flight else self.idle.clear()
                self._wake.wait(0.5)
                self._wake.clear()
        try:
            self.store.db.close()
        except Exception:  # noqa: BLE001
            pass

    def _dispatch_pending(self) -> bool:
        rows = self.store.pending_inbox(self._last_id, self.batch)
        if not rows:
            return False
        self.idle.clear()
        for row_id, event in rows:
            self._last_id = max(self._last_id, row_id)
            if row_id in self._in_flight:
                continue
            self._in_flight.add(row_id)
            try:
                self.handle(event, self._done_callback(row_id))
            except Exception:  # noqa: BLE001 - a bad event is logged and marked failed
                log.exception("could not handle event %s", event.get("event_id"))
                self._completed.put((row_id, False))
        return True

    def _done_callback(self, row_id: int) -> Callable[[bool], None]:
        called = threading.Event()

        def done(ok: bool = True) -> None:
            if called.is_set():
                return
            called.set()
            self._completed.put((row_id, ok))
            self._wake.set()

        return done

    def _flush_completed(self) -> None:
        done_ids: list[int] = []
        failed_ids: list[int] = []
        while True:
            try:
                row_id, ok = self._completed.get_nowait()
            except queue.Empty:
                break
            (done_ids if ok else failed_ids).append(row_id)
            self._in_flight.discard(row_id)
        metrics.inbox_handled(self, len(done_ids), len(failed_ids))
        if done_ids:
            self.store.mark_inbox(done_ids, DONE)
        if failed_ids:
            self.store.mark_inbox(failed_ids, FAILED)
