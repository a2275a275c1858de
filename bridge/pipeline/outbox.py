"""IRC -> Matrix: the recorder that makes IRC lines durable, and the homeserver senders.

The IRC thread never waits on a database or HTTP: it drops lines into the recorder's queue.
The recorder writes them in batches (to the outbox when their channel has a room, to
scrollback when it has none) and passes new rows to the senders. The senders are a small pool
of threads; each room always goes to the same sender, so a room's lines arrive in order while
different rooms go in parallel. A row is marked done once the homeserver accepted it; its id
is part of the Matrix txnId, so a retry after a crash cannot post it twice.

A clean stop loses nothing: the recorder stores what it holds, or keeps it in a spill file
when the database does not take it in time; the senders end between two rows, and what
they had not sent is still pending in the outbox for the next start.

Delivered rows are marked done in batches (`outbox-marker`, one transaction every
`Senders.MARK_EVERY` seconds), not by the sender between two lines of a room: the room's
next line no longer waits for a commit. A crash before the mark sends the row again with
the same txnId, which the homeserver answers with the event it already has.

Threads: the IRC thread calls `put`; the recorder (`irc-recorder`) writes; the homeserver
senders (`hs-sender-N`) deliver; `outbox-marker` writes their outcomes.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVarTuple

import peewee as pw

from ..matrix.retry import ONCE, at_most
from ..rules.ids import EventId, RoomId, UserId
from ..store.models import IrcLine, QueuedLine, Store
from .backfill import HistoryLines, fresh_lines, replay_with_history
from .lanes import KeyedPool
from .meter import NO_METER, Meter

log = logging.getLogger(__name__)

Ts = TypeVarTuple("Ts")


@dataclass(frozen=True)
class RoomCreated:
    """A marker in the recorder's stream: from here on the channel's lines go to `room_id`,
    and its scrollback is replayed first."""

    network: str
    channel: str
    room_id: RoomId
    done: threading.Event
    replay: bool = True  # False for a private channel: its scrollback is dropped, not shown
    # The server's recent lines (CHATHISTORY), merged with the scrollback (pipeline.backfill).
    history: tuple[IrcLine, ...] = ()


class Retry(Exception):
    """A passing failure (homeserver down, 5xx, 429): the row is tried again after a pause,
    at least `after` seconds when the homeserver said how long (Retry-After)."""

    def __init__(self, message: str, after: float | None = None) -> None:
        super().__init__(message)
        self.after = after


class GiveUp(Exception):
    """A permanent failure for this row: it is marked failed and the room moves on."""


class _TakenByStop(Exception):
    """The stop kept these lines in the spill file first: roll their transaction back."""


class Recorder:
    """One thread; the single writer of IRC lines, which gives the per-channel order.

    A clean stop stores what is queued. When the database does not take it in time (it is
    down or locked), the lines not yet committed go to a local spill file instead, stored
    first at the next start. `_commit_lock` makes the two exclusive: a batch is committed
    or spilled, never both (the lock is held across the commit, and never while waiting on
    the database for anything else).
    """

    def __init__(self, store: Store, rooms: dict[tuple[str, str], RoomId],
                 scrollback_limits: dict[str, int],
                 sender_for_nick: Callable[[str, str], UserId],
                 dispatch: Callable[[list[QueuedLine]], None], spill: Path | None = None):
        self.store = store
        self.rooms = dict(rooms)
        self.scrollback_limits = scrollback_limits
        self.sender_for_nick = sender_for_nick
        self.dispatch = dispatch
        self.spill = spill
        self._items: collections.deque[IrcLine | RoomCreated | HistoryLines] = \
            collections.deque()
        self._cond = threading.Condition()  # guards _items and _closing; held only briefly
        self._closing = False
        self._commit_lock = threading.Lock()  # guards _taken and _abandoned
        self._taken: list[IrcLine] = []  # taken from _items, not committed yet
        self._abandoned = False
        self._gone = threading.Event()  # set when the stop gave up waiting: pauses end
        self._thread = threading.Thread(target=self._run, name="irc-recorder", daemon=True)

    def start(self) -> None:
        """Store what the last stop spilled (before any new line), then start the thread."""
        self._load_spill()
        self._thread.start()

    def put(self, item: IrcLine | RoomCreated | HistoryLines) -> None:
        """Any thread (the IRC thread): queue a line; never waits on the database."""
        with self._cond:
            self._items.append(item)
            self._cond.notify()

    def forget(self, network: str, channel: str) -> None:
        """An unlinked channel: its later lines become scrollback again."""
        self.put(RoomCreated(network, channel, RoomId(""), threading.Event()))

    def stop(self, timeout: float = 3.0) -> None:
        """Store what is queued within `timeout`; spill the rest to the file. Never raises."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        if not self._thread.is_alive():
            return  # everything is stored
        self._gone.set()
        got = self._commit_lock.acquire(timeout=2.0)  # only a commit under way holds it
        try:
            self._abandoned = True
            with self._cond:
                left = self._taken + [i for i in self._items if isinstance(i, IrcLine)]
                self._items.clear()
            self._taken = []
        finally:
            if got:
                self._commit_lock.release()
        if left:
            self._write_spill(left)

    # ------------------------------------------------------------ recorder thread
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._closing:
                    self._cond.wait()
            with self._commit_lock:
                if self._abandoned:
                    return
                with self._cond:
                    if not self._items:
                        return  # closing, and everything is stored
                    batch = [self._items.popleft() for _ in range(min(500, len(self._items)))]
                self._taken = [i for i in batch if isinstance(i, IrcLine)]
            self._write(batch)

    def _write(self, items: list[IrcLine | RoomCreated | HistoryLines]) -> None:
        run: list[IrcLine] = []
        for item in items:
            if isinstance(item, RoomCreated):
                self._flush(run)
                run = []
                self._room_created(item)
            elif isinstance(item, HistoryLines):
                self._flush(run)
                run = []
                self._history(item)
            else:
                run.append(item)
        self._flush(run)

    def _commit(self, lines: list[IrcLine]) -> list[QueuedLine] | None:
        """Store `lines` in one transaction; None when the stop spilled them first."""
        held = False
        try:
            with self.store.writing():
                queued = self.store.queue_lines(lines, self.rooms, self.scrollback_limits)
                self._commit_lock.acquire()
                held = True
                if self._abandoned:
                    raise _TakenByStop
            self._settled(lines)  # committed, with the lock held across the commit
            return queued
        except _TakenByStop:
            return None
        finally:
            if held:
                self._commit_lock.release()

    def _settled(self, lines: list[IrcLine]) -> None:
        """Under _commit_lock: these lines are stored (or dropped for good)."""
        ids = {id(line) for line in lines}
        self._taken = [line for line in self._taken if id(line) not in ids]

    def _drop(self, lines: list[IrcLine]) -> None:
        with self._commit_lock:
            self._settled(lines)

    def _pause(self) -> bool:
        """Wait before trying the database again; False once the stop gave up on us."""
        return not self._gone.wait(1.0) and not self._abandoned

    def _flush(self, lines: list[IrcLine]) -> None:
        if not lines:
            return
        while True:
            try:
                queued = self._commit(lines)
                break
            except (pw.OperationalError, pw.InterfaceError):  # database away: keep, retry
                log.exception("could not store %d IRC lines; retrying in 1 s", len(lines))
                if not self._pause():
                    return
            except Exception:  # noqa: BLE001 - a line the database refuses: not the others
                if len(lines) == 1:
                    log.exception("dropped an IRC line the database refuses: %.100r",
                                  lines[0].body)
                    self._drop(lines)
                    return
                log.exception("could not store %d IRC lines; storing them one by one",
                              len(lines))
                queued = []
                for line in lines:
                    one = self._store_one(line)
                    if one is None:
                        return
                    queued.extend(one)
                break
        if queued:
            self.dispatch(queued)

    def _store_one(self, line: IrcLine) -> list[QueuedLine] | None:
        while True:
            try:
                return self._commit([line])
            except (pw.OperationalError, pw.InterfaceError):
                log.exception("could not store an IRC line; retrying in 1 s")
                if not self._pause():
                    return None
            except Exception:  # noqa: BLE001
                log.exception("dropped an IRC line the database refuses: %.100r", line.body)
                self._drop([line])
                return []

    def _room_created(self, item: RoomCreated) -> None:
        if not item.room_id:
            self.rooms.pop((item.network, item.channel), None)
            item.done.set()
            return
        self.rooms[(item.network, item.channel)] = item.room_id
        while not self._abandoned:
            try:
                if not item.replay:
                    self.store.drop_scrollback(item.network, item.channel)
                    queued = []
                    break
                if item.history:
                    queued = replay_with_history(
                        self.store, item.network, item.channel, item.room_id, item.history,
                        lambda nick: self.sender_for_nick(item.network, nick))
                    break
                queued = self.store.replay_scrollback(
                    item.network, item.channel, item.room_id,
                    lambda nick: self.sender_for_nick(item.network, nick),
                )
                break
            except Exception:  # noqa: BLE001
                log.exception("could not replay scrollback; retrying in 1 s")
                if not self._pause():
                    break
        else:
            queued = []
        if queued:
            log.info("replaying %d scrollback lines into %s", len(queued), item.room_id)
            self.dispatch(queued)
        item.done.set()

    def _history(self, item: HistoryLines) -> None:
        """A catch-up: the lines of it this bridge does not have yet are stored."""
        while not self._abandoned:
            try:
                fresh = fresh_lines(self.store, item,
                                    self.rooms.get((item.network, item.channel)))
                break
            except Exception:  # noqa: BLE001
                log.exception("could not read which history lines are new; retrying in 1 s")
                if not self._pause():
                    return
        else:
            return
        if fresh:
            log.info("%d lines of %s on %s caught up from the server's history", len(fresh),
                     item.channel, item.network)
        self._flush(fresh)

    # ------------------------------------------------------------ spill file
    def _write_spill(self, lines: list[IrcLine]) -> None:
        if self.spill is None:
            log.error("the database did not take %d IRC lines before the stop; they are "
                      "lost", len(lines))
            return
        try:
            tmp = self.spill.with_name(self.spill.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                for line in lines:
                    f.write(json.dumps(dataclasses.asdict(line)) + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.spill)
            log.warning("the database did not take %d IRC lines before the stop; kept in "
                        "%s for the next start", len(lines), self.spill)
        except OSError:
            log.exception("could not keep %d IRC lines in %s; they are lost", len(lines),
                          self.spill)

    def _load_spill(self) -> None:
        if self.spill is None or not self.spill.exists():
            return
        lines = [IrcLine.from_json(text) for text in
                 self.spill.read_text(encoding="utf-8").splitlines() if text.strip()]
        if lines:
            queued = self.store.queue_lines(lines, self.rooms, self.scrollback_limits)
            log.info("stored %d IRC lines kept from the last stop", len(lines))
            if queued:
                self.dispatch(queued)
        self.spill.unlink()


class Senders:
    """Threads delivering outbox rows, in order per room (a KeyedPool keyed by `line.lane`:
    no two threads ever serve one room, and busy rooms never wait behind each other).

    This loop is the retry: every homeserver call of one try is bounded to one request
    (`at_most(ONCE)`), so a homeserver that answers 5xx costs one request per try, and the
    next try (which first looks for what a cut try may have stored) comes after our pause.
    """

    MARK_EVERY = 0.05  # seconds a delivered row may wait for its batch's `done` mark

    def __init__(self, store: Store, deliver: Callable[[QueuedLine, bool], str], count: int = 4,
                 retry_cap: float = 30.0, max_attempts: int = 20, batch: int = 20,
                 meter: Meter = NO_METER):
        self.store = store
        self.meter = meter
        self.deliver = deliver
        self.retry_cap = retry_cap
        self.max_attempts = max_attempts
        # Lines of one room before the thread lets other rooms go first.
        self._pool: KeyedPool[QueuedLine] = KeyedPool("hs-sender", count, self._send_one,
                                                      batch=batch)
        self._stop = threading.Event()
        # Delivered (row id, event id) not yet marked done, written by `outbox-marker`.
        self._delivered: list[tuple[int, EventId]] = []
        self._delivered_cond = threading.Condition()
        self._marker = threading.Thread(target=self._mark_delivered, name="outbox-marker",
                                        daemon=True)
        self._marker_stop = False

    @property
    def depth(self) -> int:
        """Rows handed to the senders and not yet delivered or given up on."""
        return self._pool.depth

    def start(self) -> None:
        self._marker.start()
        self._pool.start()

    def dispatch(self, lines: list[QueuedLine]) -> None:
        self._pool.put_many((line.lane, line) for line in lines)

    def stop(self, timeout: float = 5.0) -> None:
        """End between two rows: what was not sent stays pending in the outbox."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        self._pool.stop(timeout)
        # What was delivered is marked before the stop returns (the marker's last batch).
        with self._delivered_cond:
            self._marker_stop = True
            self._delivered_cond.notify()
        if self._marker.is_alive():
            self._marker.join(max(1.0, deadline - time.monotonic()))

    def _send_one(self, line: QueuedLine) -> None:
        pause = 0.5
        attempts = line.attempts
        retrying = False
        while not self._stop.is_set():
            attempts += 1
            try:
                with at_most(ONCE):
                    event_id = self.deliver(line, retrying)
            except Retry as e:
                # The homeserver's Retry-After wins; a little jitter spreads the rooms on it.
                wait = max(pause, (e.after or 0.0) * (1.0 + random.uniform(0.0, 0.1)))
                log.warning("could not deliver line %d to %s (%s); retrying in %.1f s",
                            line.id, line.room_id, e, wait)
                self.meter.outbox_retry()
                retrying = True
                self._wait(wait)
                pause = min(self.retry_cap, pause * 2)
                continue
            except GiveUp as e:
                log.error("giving up on line %d for %s: %s", line.id, line.room_id, e)
                self.meter.outbox_failed()
                reason = str(e)
                self._mark(self.store.outbox_failed, line.id, reason)
                return
            except Exception as unexpected:  # noqa: BLE001 - count it, retry a few times
                log.exception("error delivering line %d", line.id)
                if attempts >= self.max_attempts:
                    self.meter.outbox_failed()
                    reason = repr(unexpected)
                    self._mark(self.store.outbox_failed, line.id, reason)
                    return
                self._stop.wait(pause)
                pause = min(self.retry_cap, pause * 2)
                continue
            self.meter.relayed("irc_to_matrix", line.msgtype)
            with self._delivered_cond:
                first = not self._delivered
                self._delivered.append((line.id, EventId(event_id)))
                if first:
                    self._delivered_cond.notify()
            return

    def _mark_delivered(self) -> None:
        """The marker thread: every MARK_EVERY seconds, the delivered rows in one transaction."""
        while True:
            with self._delivered_cond:
                while not self._delivered and not self._marker_stop:
                    self._delivered_cond.wait()
                if not self._marker_stop:  # let the batch fill (a stop ends the wait)
                    self._delivered_cond.wait(self.MARK_EVERY)
                stopping = self._marker_stop
                batch, self._delivered = self._delivered, []
            if batch:
                self._mark_batch(batch, stopping)
            if stopping:
                with self._delivered_cond:
                    if not self._delivered:
                        return

    def _mark_batch(self, batch: list[tuple[int, EventId]], stopping: bool) -> None:
        pause = 0.5
        while True:
            try:
                self.store.outbox_done(batch)
                return
            except Exception:  # noqa: BLE001 - the database may be restarting
                log.exception("could not record %d deliveries; retrying", len(batch))
                if stopping:
                    return  # pending rows are sent again (same txnIds) at the next start
                time.sleep(pause)
                pause = min(self.retry_cap, pause * 2)

    def _wait(self, seconds: float) -> None:
        """The pause between two tries of a row; a stop ends it."""
        self._stop.wait(seconds)

    def _mark(self, write: Callable[[*Ts], None], *args: *Ts) -> None:
        """Record a row's outcome; the database may be restarting, so keep trying."""
        pause = 0.5
        while not self._stop.is_set():
            try:
                write(*args)
                return
            except Exception:  # noqa: BLE001
                log.exception("could not record a delivery; retrying")
                self._stop.wait(pause)
                pause = min(self.retry_cap, pause * 2)
