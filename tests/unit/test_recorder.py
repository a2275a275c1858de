"""The recorder on a real temp-file database: order, scrollback, refused lines, and a stop
that stores what it holds or keeps it in the spill file for the next start."""

from __future__ import annotations

import threading
from pathlib import Path

from bridge.devstack.ports import wait_until
from bridge.pipeline.outbox import Recorder, RoomCreated
from bridge.store.models import OutboxMessage, QueuedLine, Scrollback, Store
from tests.unit.queues import NETWORK, ROOM, irc_line
from tests.write_lock import WriteLock

ROOMS = {(NETWORK, "#chan"): ROOM}


class Dispatched:
    def __init__(self) -> None:
        self.lines: list[QueuedLine] = []
        self.lock = threading.Lock()

    def __call__(self, lines: list[QueuedLine]) -> None:
        with self.lock:
            self.lines.extend(lines)

    def bodies(self) -> list[str]:
        with self.lock:
            return [line.body for line in self.lines]


def recorder(store: Store, dispatched: Dispatched, spill: Path | None = None,
             rooms: dict[tuple[str, str], str] | None = None) -> Recorder:
    return Recorder(store, ROOMS if rooms is None else rooms, {NETWORK: 5},
                    lambda network, nick: f"@irc_{nick}:localhost", dispatched, spill=spill)


def outbox_bodies(store: Store) -> list[str]:
    with store.db.connection_context():
        return [r.body for r in OutboxMessage.select().order_by(OutboxMessage.id)]


def scrollback_bodies(store: Store) -> list[str]:
    with store.db.connection_context():
        return [r.body for r in Scrollback.select().order_by(Scrollback.id)]


def test_lines_are_stored_and_dispatched_in_order(store: Store) -> None:
    dispatched = Dispatched()
    rec = recorder(store, dispatched)
    rec.start()
    bodies = [f"line {n}" for n in range(1200)]  # more than one batch
    for body in bodies:
        rec.put(irc_line(body))
    wait_until(lambda: len(dispatched.bodies()) == len(bodies), 20, interval=0.01,
               what="every line dispatched")
    rec.stop()
    assert dispatched.bodies() == bodies
    assert outbox_bodies(store) == bodies
    ids = [line.id for line in dispatched.lines]
    assert ids == sorted(ids)


def test_a_channel_without_room_keeps_scrollback_replayed_when_its_room_is_made(
    store: Store
) -> None:
    dispatched = Dispatched()
    rec = recorder(store, dispatched, rooms={})
    rec.start()
    for n in range(8):
        rec.put(irc_line(f"early {n}"))
    made = RoomCreated(NETWORK, "#chan", ROOM, threading.Event())
    rec.put(made)
    rec.put(irc_line("after the room"))
    assert made.done.wait(10)
    wait_until(lambda: "after the room" in dispatched.bodies(), 10, interval=0.01,
               what="the line after the room")
    rec.stop()
    # Scrollback keeps the last 5 (the network's limit), replayed first, then the new line.
    assert dispatched.bodies() == [f"early {n}" for n in range(3, 8)] + ["after the room"]
    assert scrollback_bodies(store) == []
    assert all(line.room_id == ROOM for line in dispatched.lines)


def test_a_line_the_database_refuses_is_dropped_alone(store: Store) -> None:
    dispatched = Dispatched()
    rec = recorder(store, dispatched)
    bad = irc_line("bad")
    object.__setattr__(bad, "body", None)  # NOT NULL: refused by any database
    for item in (irc_line("before"), bad, irc_line("after")):
        rec.put(item)
    rec.start()
    wait_until(lambda: len(dispatched.bodies()) == 2, 10, interval=0.01,
               what="the good lines dispatched")
    rec.stop()
    assert dispatched.bodies() == ["before", "after"]
    assert outbox_bodies(store) == ["before", "after"]


def test_stop_stores_everything_queued(store: Store, tmp_path: Path) -> None:
    dispatched = Dispatched()
    spill = tmp_path / "lines.unstored"
    rec = recorder(store, dispatched, spill=spill)
    rec.start()
    for n in range(300):
        rec.put(irc_line(f"q {n}"))
    rec.stop(timeout=10)
    assert outbox_bodies(store) == [f"q {n}" for n in range(300)]
    assert not spill.exists()


def test_a_stop_while_the_database_is_locked_spills_and_the_next_start_stores_first(
    store: Store, db_url: str, tmp_path: Path
) -> None:
    """The lines the database would not take before the stop's deadline are kept in the
    spill file, stored at the next start before any new line, once each: the batch the
    first recorder was blocked on is rolled back when the lock goes."""
    spill = tmp_path / "lines.unstored"
    first = Dispatched()
    rec = recorder(store, first, spill=spill)
    rec.start()
    with WriteLock(db_url):
        for n in range(50):
            rec.put(irc_line(f"held {n}"))
        rec.stop(timeout=0.5)
        assert spill.exists() and spill.stat().st_mode & 0o077 == 0
    # The first recorder's thread gets the lock now, and must not store its batch.
    rec._thread.join(30)
    assert not rec._thread.is_alive()
    assert outbox_bodies(store) == [] and first.bodies() == []

    second = Dispatched()
    again = recorder(store, second, spill=spill)
    again.put(irc_line("new after the restart"))
    again.start()
    wait_until(lambda: "new after the restart" in second.bodies(), 10, interval=0.01,
               what="the new line")
    again.stop()
    expected = [f"held {n}" for n in range(50)] + ["new after the restart"]
    assert second.bodies() == expected
    assert outbox_bodies(store) == expected
    assert not spill.exists()
