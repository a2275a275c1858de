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

Outcomes reach the database in batches: one transaction for every outcome of the last
`FLUSH_EVERY` seconds (or `FLUSH_ROWS` outcomes), not a commit per event. Nothing is lost by
the wait: the homeserver was answered when the rows were committed (`record_transaction`),
and an outcome is in the journal before it waits for its batch, so a crash in between marks
it at the next start exactly as if it had been written. New rows are read when the
transaction handler says there are some (`notify`), not at every outcome.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..rules.ids import JsonDict
from ..store.models import DONE, FAILED, Store
from .meter import NO_METER, Meter

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


Handler = Callable[[JsonDict, Completion], None]


class InboxWorker:
    """One thread; owns the in-flight set and the batch of outcomes not yet written."""

    FLUSH_EVERY = 0.05  # seconds an outcome may wait for its batch's transaction
    FLUSH_ROWS = 1000  # a batch this large is written at once
    POLL_EVERY = 0.5  # seconds between reads of the inbox when nobody said there are rows

    def __init__(self, store: Store, handle: Handler, *, batch: int = 200,
                 journal: Path | None = None, meter: Meter = NO_METER):
        self.store = store
        self.meter = meter
        self.journal = SentJournal(journal) if journal is not None else None
        # Told about events whose sending was cut by a crash (see SentJournal).
        self.on_uncertain: Callable[[JsonDict], None] | None = None
        self.handle = handle
        self.batch = batch
        self._wake = threading.Event()
        self._stop = threading.Event()
        # Outcomes (row id, ok) not yet in the database, and when the oldest of them came.
        self._outcomes: list[tuple[int, bool]] = []
        self._outcomes_since = 0.0
        self._outcomes_lock = threading.Lock()
        self._new_rows = True  # rows may be waiting (at start: whatever the last run left)
        self._last_read = 0.0
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
        self._new_rows = True
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
        """Any thread: a row's work is over (see Completion). Journaled at once; written to
        the database with the next batch."""
        if not ok and self._stop.is_set():
            log.info("event row %d was not sent because the bridge is stopping; it is "
                     "handled again at the next start", row_id)
            return
        if self.journal is not None:
            self.journal.record(row_id)
        self._add_outcome(row_id, ok)

    def _add_outcome(self, row_id: int, ok: bool) -> None:
        with self._outcomes_lock:
            first = not self._outcomes
            if first:
                self._outcomes_since = time.monotonic()
            self._outcomes.append((row_id, ok))
        if first:  # the worker learns that a batch is open; later ones join it quietly
            self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()  # before looking: a wake from now on ends the wait below
            try:
                if self._flush_due():
                    self._flush_completed()
                worked = self._dispatch_pending() if self._read_due() else False
            except Exception:  # noqa: BLE001 - e.g. the database restarting; try again soon
                log.exception("the inbox worker hit an error; retrying")
                worked = False
                self._new_rows = True
                self._stop.wait(1.0)
            if not worked:
                if self._in_flight or self._outcomes:
                    self.idle.clear()
                else:
                    self.idle.set()
                self._wake.wait(self._wait_time())
        try:
            self.store.db.close()
        except Exception:  # noqa: BLE001
            pass

    def _flush_due(self) -> bool:
        with self._outcomes_lock:
            if not self._outcomes:
                return False
            return (len(self._outcomes) >= self.FLUSH_ROWS
                    or time.monotonic() - self._outcomes_since >= self.FLUSH_EVERY)

    def _read_due(self) -> bool:
        return self._new_rows or time.monotonic() - self._last_read >= self.POLL_EVERY

    def _wait_time(self) -> float:
        now = time.monotonic()
        wait = self._last_read + self.POLL_EVERY - now
        with self._outcomes_lock:
            if self._outcomes:
                wait = min(wait, self._outcomes_since + self.FLUSH_EVERY - now)
        return max(0.0, wait)

    def _dispatch_pending(self) -> bool:
        self._new_rows = False  # before the read: a notify during it is kept
        self._last_read = time.monotonic()
        rows = self.store.pending_inbox(self._last_id, self.batch)
        if not rows:
            return False
        if len(rows) >= self.batch:
            self._new_rows = True  # there may be more right behind
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
                self._add_outcome(row_id, False)
        return True

    def _flush_completed(self) -> None:
        """Write the outcomes gathered so far, in one transaction."""
        with self._outcomes_lock:
            outcomes, self._outcomes = self._outcomes, []
        if not outcomes:
            return
        done_ids = [row_id for row_id, ok in outcomes if ok]
        failed_ids = [row_id for row_id, ok in outcomes if not ok]
        try:
            self.store.finish_inbox(done_ids, failed_ids)
        except Exception:
            with self._outcomes_lock:  # kept for the next try (they are journaled too)
                self._outcomes[:0] = outcomes
                self._outcomes_since = time.monotonic()
            raise
        self._in_flight.difference_update(row_id for row_id, _ok in outcomes)
        if done_ids or failed_ids:
            self.meter.inbox_handled(len(done_ids), len(failed_ids))
        # Nothing in flight: every journaled id is in the database now (a row leaves the
        # in-flight set only once its outcome is written), and no `done` can run before
        # this thread hands out more work.
        if self.journal is not None and not self._in_flight \
                and self.journal.size() > SentJournal.ROTATE_BYTES:
            self.journal.clear()
