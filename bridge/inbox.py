"""The inbox worker: hands stored homeserver events to the core, in order, and marks them done.

Transactions are written to the inbox table before they are answered (see store), so the
homeserver is never kept waiting on IRC. This thread reads pending rows in id order and calls
`handle(event, done)`; the handler calls `done(ok)` from any thread once the event's work is
finished (for a message: when its lines were written to the IRC socket). Rows still pending
at a crash are handled again at the next start.

Between a line leaving on the IRC socket and its row being marked done in the database there
is a moment where a crash would send it twice. `SentJournal` closes it: `done` appends the
row id to a small local file at once (one write, no database), and the next start marks
every journaled row done before anything is handed out again.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import metrics
from .store import DONE, FAILED, Store

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any], Callable[[bool], None]], None]


class SentJournal:
    """Row ids whose work finished, appended as they finish; survives a killed process."""

    ROTATE_BYTES = 1 << 20

    def __init__(self, path: Path):
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)

    def record(self, row_id: int) -> None:
        """Any thread: one small append (atomic with O_APPEND), no database, no lock."""
        os.write(self._fd, b"%d\n" % row_id)

    def record_start(self, row_id: int) -> None:
        """About to write the first line: a crash from here on leaves the row uncertain."""
        os.write(self._fd, b"S%d\n" % row_id)

    def replay(self) -> tuple[list[int], list[int]]:
        """(finished rows, rows that had started but not finished)."""
        with open(self.path, "rb") as f:
            words = f.read().split()
        finished = {int(w) for w in words if w.isdigit()}
        started = {int(w[1:]) for w in words if w[:1] == b"S" and w[1:].isdigit()}
        return sorted(finished), sorted(started - finished)

    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def clear(self) -> None:
        os.ftruncate(self._fd, 0)

    def close(self) -> None:
        os.close(self._fd)


class InboxWorker:
    """One thread; owns the in-flight set and the completion queue."""

    def __init__(self, store: Store, handle: Handler, *, batch: int = 200,
                 journal: Path | None = None):
        self.store = store
        self.journal = SentJournal(journal) if journal is not None else None
        # Told about events whose sending was cut by a crash (see SentJournal).
        self.on_uncertain: Callable[[dict[str, Any]], None] | None = None
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
        if self.journal is not None:
            finished, uncertain = self.journal.replay()
            if finished:
                log.info("%d events were delivered just before the last stop; not again",
                         len(finished))
                self.store.mark_inbox(finished, DONE)
            if uncertain:
                # Cut while being written: IRC may have them. Sending again could say them
                # twice; their senders are told instead.
                log.warning("%d events were being sent when the bridge stopped; their "
                            "senders are told they may not have reached IRC", len(uncertain))
                self.store.mark_inbox(uncertain, FAILED)
                if self.on_uncertain is not None:
                    for event in self.store.inbox_events(uncertain):
                        self.on_uncertain(event)
            self.journal.clear()
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
        if self.journal is not None:
            self.journal.close()

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
            if self.journal is not None:
                self.journal.record(row_id)
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
        # Nothing in flight: every journaled id is in the database now, and no `done` can
        # run before this thread hands out more work.
        if self.journal is not None and not self._in_flight and self._completed.empty() \
                and self.journal.size() > SentJournal.ROTATE_BYTES:
            self.journal.clear()
