"""The inbox worker: hands stored homeserver events to the core, in order, and marks them done.

Transactions are written to the inbox table before they are answered (see store), so the
homeserver is never kept waiting on IRC. This thread (`inbox`) reads pending rows in id order
and calls `handle(event, completion)`; the handler, or the IRC thread it hands the work to,
calls `completion.started()` right before the first IRC line is written and
`completion.finished(ok)` once the event's work is over. Rows still pending at a crash or a
stop are handled again at the next start.

Between a line leaving on the IRC socket and its row being marked done in the database there
is a moment where a crash would send it twice. `SentJournal` closes it: `started` and
`finished` append the row id to a small local file at once (one write, no database), and the
next start marks every finished row done before anything is handed out again. A row that
started and never finished (a multi-line message cut by a crash) is not sent again: it is
marked failed and its sender is told it may not have arrived (`on_uncertain`).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..ops import metrics
from ..store.models import DONE, FAILED, Store

log = logging.getLogger(__name__)


class SentJournal:
    """Row ids whose work started and finished, appended as it happens; survives a killed
    process. Any thread may append; closed by the thread that stops the worker."""

    ROTATE_BYTES = 1 << 20

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        self._lock = threading.Lock()

    def record(self, row_id: int) -> None:
        """The row's work finished: one small append (atomic with O_APPEND), no database."""
        self._append(b"%d\n" % row_id)

    def record_start(self, row_id: int) -> None:
        """About to write the first line: a crash from here on leaves the row uncertain."""
        self._append(b"S%d\n" % row_id)

    def _append(self, data: bytes) -> None:
        with self._lock:
            if self._fd is None:
                log.warning("the sent journal is closed; %r not journaled", data.strip())
                return
            os.write(self._fd, data)

    def replay(self) -> tuple[list[int], list[int]]:
        """(finished rows, rows that had started but not finished)."""
        with open(self.path, "rb") as f:
            words = f.read().split()
        finished = {int(w) for w in words if w.isdigit()}
        started = {int(w[1:]) for w in words if w[:1] == b"S" and w[1:].isdigit()}
        return sorted(finished), sorted(started - finished)

    def size(self) -> int:
        with self._lock:
            return os.fstat(self._fd).st_size if self._fd is not None else 0

    def clear(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.ftruncate(self._fd, 0)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class Completion:
    """One inbox row's outcome, handed to the handler with its event; any thread may call.

    `started()` right before the first IRC line of the event is written (journaled, so a
    crash after it is reported rather than repeated); `finished(ok)` once its work is over.
    While the worker stops, a failure is the stop's doing (connections closing): the row
    is left pending and handled again after the restart, and `stopping` says so, so that
    the sender is not told of a failure that is not one.
    """

    __slots__ = ("row_id", "_worker", "_lock", "_started", "_finished")

    def __init__(self, worker: InboxWorker, row_id: int):
        self.row_id = row_id
        self._worker = worker
        self._lock = threading.Lock()
        self._started = False
        self._finished = False

    @property
    def stopping(self) -> bool:
        return self._worker.stopping

    def started(self) -> None:
        with self._lock:
            if self._started or self._finished:
                return
            self._started = True
        if self._worker.journal is not None:
            self._worker.journal.record_start(self.row_id)

    def finished(self, ok: bool = True) -> None:
        with self._lock:
            if self._finished:
                return
            self._finished = True
        self._worker.completed(self.row_id, ok)


Handler = Callable[[dict[str, Any], Completion], None]


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
                        try:
                            self.on_uncertain(event)
                        except Exception:  # noqa: BLE001 - one report must not stop start
                            log.exception("could not report event %s", event.get("event_id"))
            self.journal.clear()
        self._thread.start()

    def notify(self) -> None:
        """New rows were stored; called by the transaction handler after committing."""
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self, timeout: float = 2.0) -> None:
        """Hand out nothing more and let the thread end; never raises.

        What is in flight stays as it is: a row that finishes from now on is journaled (or,
        without a journal, marked by `close`); one that fails stays pending for the next
        start. Call `close` once nothing can finish any more (the IRC side is stopped).
        """
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def close(self) -> None:
        """After `stop` and once IRC is stopped: keep what finished, close the journal.

        With a journal nothing touches the database here (it may be the reason for the
        stop): the next start marks the journaled rows. Without one, the outcomes are
        written now, as far as the database lets. Never raises.
        """
        if self.journal is not None:
            self.journal.close()
            return
        try:
            self._flush_completed()
        except Exception:  # noqa: BLE001 - the rows stay pending and are handled again
            log.exception("could not record the last handled events")

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def completed(self, row_id: int, ok: bool) -> None:
        """Any thread: a row's work is over (see Completion)."""
        if not ok and self._stop.is_set():
            log.info("event row %d was not sent because the bridge is stopping; it is "
                     "handled again at the next start", row_id)
            return
        if self.journal is not None:
            self.journal.record(row_id)
        self._completed.put((row_id, ok))
        self._wake.set()

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
            if self._stop.is_set():
                return True  # not handed out: stays pending for the next start
            self._last_id = max(self._last_id, row_id)
            if row_id in self._in_flight:
                continue
            self._in_flight.add(row_id)
            try:
                self.handle(event, Completion(self, row_id))
            except Exception:  # noqa: BLE001 - a bad event is logged and marked failed
                log.exception("could not handle event %s", event.get("event_id"))
                self._completed.put((row_id, False))
        return True

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
