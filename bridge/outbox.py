"""IRC -> Matrix: the recorder that makes IRC lines durable, and the homeserver senders.

The IRC thread never waits on a database or HTTP: it drops lines into the recorder's queue.
The recorder writes them in batches (to the outbox when their channel has a room, to
scrollback when it has none) and passes new rows to the senders. The senders are a small pool
of threads; each room always goes to the same sender, so a room's lines arrive in order while
different rooms go in parallel. A row is marked done once the homeserver accepted it; its id
is part of the Matrix txnId, so a retry after a crash cannot post it twice.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import peewee as pw

from . import metrics
from .store import IrcLine, QueuedLine, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoomCreated:
    """A marker in the recorder's stream: from here on the channel's lines go to `room_id`,
    and its scrollback is replayed first."""

    network: str
    channel: str
    room_id: str
    done: threading.Event


class Deliver:
    """What a sender calls per row; raises Retry to try the same row again later."""

    def __call__(self, line: QueuedLine) -> str:  # pragma: no cover - protocol
        raise NotImplementedError


class Retry(Exception):
    """A passing failure (homeserver down, 5xx): the row is tried again after a pause."""


class GiveUp(Exception):
    """A permanent failure for this row: it is marked failed and the room moves on."""


class Recorder:
    """One thread; the single writer of IRC lines, which gives the per-channel order."""

    def __init__(self, store: Store, rooms: dict[tuple[str, str], str],
                 scrollback_limits: dict[str, int], sender_for_nick: Callable[[str, str], str],
                 dispatch: Callable[[list[QueuedLine]], None]):
        self.store = store
        self.rooms = dict(rooms)
        self.scrollback_limits = scrollback_limits
        self.sender_for_nick = sender_for_nick
        self.dispatch = dispatch
        self._queue: queue.SimpleQueue[IrcLine | RoomCreated | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="irc-recorder", daemon=True)
        self.pending = 0

    def start(self) -> None:
        self._thread.start()

    def put(self, item: IrcLine | RoomCreated) -> None:
        self.pending += 1
        self._queue.put(item)

    def forget(self, network: str, channel: str) -> None:
        """An unlinked channel: its later lines become scrollback again."""
        self.put(RoomCreated(network, channel, "", threading.Event()))

    def stop(self, timeout: float = 5.0) -> None:
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            batch: list[IrcLine | RoomCreated | None] = [item]
            while len(batch) < 500:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = None in batch
            self._write([b for b in batch if b is not None])
            if stop:
                return

    def _write(self, items: list[IrcLine | RoomCreated]) -> None:
        run: list[IrcLine] = []
        for item in items:
            if isinstance(item, RoomCreated):
                self._flush(run)
                run = []
                self._room_created(item)
            else:
                run.append(item)
        self._flush(run)

    def _flush(self, lines: list[IrcLine]) -> None:
        if not lines:
            return
        while True:
            try:
                queued = self.store.queue_lines(lines, self.rooms, self.scrollback_limits)
                break
            except (pw.OperationalError, pw.InterfaceError):  # database away: keep, retry
                log.exception("could not store %d IRC lines; retrying in 1 s", len(lines))
                time.sleep(1.0)
            except Exception:  # noqa: BLE001 - a line the database refuses: not the others
                if len(lines) == 1:
                    log.exception("dropped an IRC line the database refuses: %r",
                                  lines[0].body[:100])
                    queued = []
                    break
                log.exception("could not store %d IRC lines; storing them one by one",
                              len(lines))
                queued = []
                for line in lines:
                    self.pending += 1
                    queued.extend(self._store_one(line))
                break
        self.pending -= len(lines)
        if queued:
            self.dispatch(queued)

    def _store_one(self, line: IrcLine) -> list[QueuedLine]:
        self.pending -= 1
        while True:
            try:
                return self.store.queue_lines([line], self.rooms, self.scrollback_limits)
            except (pw.OperationalError, pw.InterfaceError):
                log.exception("could not store an IRC line; retrying in 1 s")
                time.sleep(1.0)
            except Exception:  # noqa: BLE001
                log.exception("dropped an IRC line the database refuses: %r", line.body[:100])
                return []

    def _room_created(self, item: RoomCreated) -> None:
        if not item.room_id:
            self.rooms.pop((item.network, item.channel), None)
            self.pending -= 1
            item.done.set()
            return
        self.rooms[(item.network, item.channel)] = item.room_id
        while True:
            try:
                queued = self.store.replay_scrollback(
                    item.network, item.channel, item.room_id,
                    lambda nick: self.sender_for_nick(item.network, nick),
                )
                break
            except Exception:  # noqa: BLE001
                log.exception("could not replay scrollback; retrying in 1 s")
                time.sleep(1.0)
        self.pending -= 1
        if queued:
            log.info("replaying %d scrollback lines into %s", len(queued), item.room_id)
            self.dispatch(queued)
        item.done.set()


class Senders:
    """A pool of threads delivering outbox rows, in order per room.

    Each room has its own FIFO. A room with work waits in the ready queue; a free thread
    takes it, sends its lines, and gives the room back. No two threads ever serve one room,
    so its order is kept, and busy rooms never wait behind each other on one thread.
    """

    def __init__(self, store: Store, deliver: Callable[[QueuedLine, bool], str], count: int = 4,
                 retry_cap: float = 30.0, max_attempts: int = 20, batch: int = 20):
        self.store = store
        self.deliver = deliver
        self.retry_cap = retry_cap
        self.max_attempts = max_attempts
        self.batch = batch  # lines of one room before the thread lets other rooms go first
        self._rooms: dict[str, collections.deque[QueuedLine]] = {}
        self._serving: set[str] = set()
        self._ready: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, name=f"hs-sender-{i}", daemon=True)
            for i in range(count)
        ]
        self._stop = threading.Event()
        self.depth = 0

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def dispatch(self, lines: list[QueuedLine]) -> None:
        with self._lock:
            self.depth += len(lines)
            for line in lines:
                fifo = self._rooms.setdefault(line.room_id, collections.deque())
                was_idle = not fifo and line.room_id not in self._serving
                fifo.append(line)
                if was_idle:
                    self._ready.put(line.room_id)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        for _ in self._threads:
            self._ready.put(None)
        deadline = time.monotonic() + timeout
        for t in self._threads:
            if t.is_alive():
                t.join(max(0.0, deadline - time.monotonic()))

    def _run(self) -> None:
        while True:
            room_id = self._ready.get()
            if room_id is None or self._stop.is_set():
                return
            with self._lock:
                self._serving.add(room_id)
            for _ in range(self.batch):
                with self._lock:
                    fifo = self._rooms.get(room_id)
                    line = fifo.popleft() if fifo else None
                if line is None or self._stop.is_set():
                    break
                self._send_one(line)
                with self._lock:
                    self.depth -= 1
            with self._lock:
                self._serving.discard(room_id)
                fifo = self._rooms.get(room_id)
                if fifo:
                    self._ready.put(room_id)  # more to send: back in line behind other rooms
                else:
                    self._rooms.pop(room_id, None)

    def _send_one(self, line: QueuedLine) -> None:
        pause = 0.5
        attempts = line.attempts
        retrying = False
        while not self._stop.is_set():
            attempts += 1
            try:
                event_id = self.deliver(line, retrying)
            except Retry as e:
                log.warning("could not deliver line %d to %s (%s); retrying in %.1f s",
                            line.id, line.room_id, e, pause)
                metrics.outbox_retry(self)
                retrying = True
                self._stop.wait(pause)
                pause = min(self.retry_cap, pause * 2)
                continue
            except GiveUp as e:
                log.error("giving up on line %d for %s: %s", line.id, line.room_id, e)
                metrics.outbox_failed(self)
                reason = str(e)
                self._mark(self.store.outbox_failed, line.id, reason)
                return
            except Exception as unexpected:  # noqa: BLE001 - count it, retry a few times
                log.exception("error delivering line %d", line.id)
                if attempts >= self.max_attempts:
                    metrics.outbox_failed(self)
                    reason = repr(unexpected)
                    self._mark(self.store.outbox_failed, line.id, reason)
                    return
                self._stop.wait(pause)
                pause = min(self.retry_cap, pause * 2)
                continue
            metrics.relayed(self, "irc_to_matrix", line.msgtype)
            self._mark(self.store.outbox_done, [(line.id, event_id)])
            return

    def _mark(self, write: Callable[..., None], *args: Any) -> None:
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
