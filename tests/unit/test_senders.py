"""The homeserver senders on a real temp-file database: order per room, rooms in parallel,
retries, give-ups, and a stop that leaves what was not sent pending for the next start.

The homeserver is the one thing mocked: `deliver` stands for the homeserver call, and its
answers 429/500 are the `Retry` the real `deliver` raises for them.
"""

from __future__ import annotations

import collections
import threading

import pytest

from bridge.devstack.ports import wait_until
from bridge.pipeline.outbox import GiveUp, Retry, Senders
from bridge.store.models import DONE, FAILED, PENDING, OutboxMessage, QueuedLine, Store
from tests.unit.queues import queue_rows


def rows(store: Store) -> dict[str, tuple[int, str | None, str | None]]:
    """Body -> (state, event id, error) of every outbox row."""
    with store.db.connection_context():
        return {r.body: (r.state, r.event_id, r.error) for r in OutboxMessage.select()}


class FakeHomeserver:
    """Accepts every line (its event id names the row) and notes who was served when."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.got: dict[str, list[str]] = collections.defaultdict(list)
        self.serving: set[str] = set()
        self.overlaps: list[str] = []
        self.calls: list[tuple[str, bool]] = []

    def __call__(self, line: QueuedLine, retrying: bool) -> str:
        with self.lock:
            self.calls.append((line.body, retrying))
            if line.room_id in self.serving:
                self.overlaps.append(line.room_id)
            self.serving.add(line.room_id)
        try:
            self.answer(line, retrying)
            with self.lock:
                self.got[line.room_id].append(line.body)
            return f"$ev{line.id}"
        finally:
            with self.lock:
                self.serving.discard(line.room_id)

    def answer(self, line: QueuedLine, retrying: bool) -> None:
        """Override: raise Retry/GiveUp/anything to answer otherwise than 200."""


def test_each_room_in_order_rooms_in_parallel_one_thread_per_room(store: Store) -> None:
    hs = FakeHomeserver()
    senders = Senders(store, hs, count=4, batch=3)
    senders.start()
    pairs = [(f"!r{n % 5}:localhost", f"r{n % 5} {n // 5}") for n in range(250)]
    senders.dispatch(queue_rows(store, pairs))
    wait_until(lambda: sum(len(v) for v in hs.got.values()) == 250, 20, interval=0.01,
               what="every line delivered")
    wait_until(lambda: all(s == DONE for s, _, _ in rows(store).values()), 10,
               interval=0.01, what="every row marked done")
    senders.stop()
    for room in range(5):
        assert hs.got[f"!r{room}:localhost"] == [f"r{room} {k}" for k in range(50)]
    assert hs.overlaps == []
    assert senders.depth == 0
    with store.db.connection_context():
        assert all(r.event_id == f"$ev{r.id}" for r in OutboxMessage.select())


def test_429_and_500_are_retried_in_order_while_other_rooms_go_on(store: Store) -> None:
    """Room A's first line meets a homeserver answering 429, then 500, until room B (behind
    it in time) is all delivered: A's lines still arrive in order, each once, and B never
    waited for A."""
    b_done = threading.Event()

    class Busy(FakeHomeserver):
        def answer(self, line: QueuedLine, retrying: bool) -> None:
            if line.body == "a 0" and not b_done.is_set():
                raise Retry("429 M_LIMIT_EXCEEDED" if not retrying else "500 Internal")
            if line.body.startswith("b ") and len(self.got["!b:localhost"]) == 4:
                b_done.set()

    hs = Busy()
    senders = Senders(store, hs, count=2)
    senders.start()
    pairs = [("!a:localhost", f"a {n}") for n in range(3)] + \
            [("!b:localhost", f"b {n}") for n in range(5)]
    senders.dispatch(queue_rows(store, pairs))
    wait_until(lambda: len(hs.got["!a:localhost"]) == 3, 30, interval=0.01,
               what="room A delivered after the retries")
    wait_until(lambda: all(s == DONE for s, _, _ in rows(store).values()), 10,
               interval=0.01, what="every row marked done")
    senders.stop()
    assert hs.got["!a:localhost"] == ["a 0", "a 1", "a 2"]
    assert hs.got["!b:localhost"] == [f"b {n}" for n in range(5)]
    tries = [retrying for body, retrying in hs.calls if body == "a 0"]
    assert tries[0] is False and all(tries[1:]) and len(tries) >= 2  # retries say so
    assert [body for body, _ in hs.calls].count("a 1") == 1


def test_a_refused_line_is_marked_failed_and_the_room_moves_on(store: Store) -> None:
    class Refuses(FakeHomeserver):
        def answer(self, line: QueuedLine, retrying: bool) -> None:
            if line.body == "x 1":
                raise GiveUp("403 M_FORBIDDEN")

    hs = Refuses()
    senders = Senders(store, hs, count=1)
    senders.start()
    senders.dispatch(queue_rows(store, [("!x:localhost", f"x {n}") for n in range(3)]))
    wait_until(lambda: rows(store)["x 2"][0] == DONE, 10, interval=0.01, what="x 2 done")
    senders.stop()
    stored = rows(store)
    assert stored["x 1"][0] == FAILED and "M_FORBIDDEN" in str(stored["x 1"][2])
    assert hs.got["!x:localhost"] == ["x 0", "x 2"]


def test_an_unexpected_error_is_tried_a_few_times_then_failed(store: Store) -> None:
    class Breaks(FakeHomeserver):
        def answer(self, line: QueuedLine, retrying: bool) -> None:
            if line.body == "y 0":
                raise ValueError("a bug")

    hs = Breaks()
    senders = Senders(store, hs, count=1, max_attempts=2)
    senders.start()
    senders.dispatch(queue_rows(store, [("!y:localhost", "y 0"), ("!y:localhost", "y 1")]))
    wait_until(lambda: rows(store)["y 1"][0] == DONE, 20, interval=0.01, what="y 1 done")
    senders.stop()
    assert rows(store)["y 0"][0] == FAILED
    assert [body for body, _ in hs.calls].count("y 0") == 2


def test_a_stop_leaves_what_was_not_sent_pending_and_the_next_start_sends_it(
    store: Store
) -> None:
    stopping = threading.Event()
    senders_box: list[Senders] = []

    class GoesAway(FakeHomeserver):
        def answer(self, line: QueuedLine, retrying: bool) -> None:
            if line.body == "z 3":
                stopping.set()  # the bridge is told to stop while this line is out
                wait_until(lambda: senders_box[0]._stop.is_set(), 10, interval=0.01,
                           what="the stop")
                raise Retry("connection refused")

    hs = GoesAway()
    senders = Senders(store, hs, count=2)
    senders_box.append(senders)
    senders.start()
    senders.dispatch(queue_rows(store, [("!z:localhost", f"z {n}") for n in range(8)]))
    assert stopping.wait(10)
    senders.stop()
    stored = rows(store)
    assert [b for b in sorted(stored) if stored[b][0] == DONE] == ["z 0", "z 1", "z 2"]
    assert all(stored[f"z {n}"][0] == PENDING for n in range(3, 8))

    after = FakeHomeserver()
    again = Senders(store, after, count=2)
    again.start()
    again.dispatch(store.pending_outbox())
    wait_until(lambda: all(s == DONE for s, _, _ in rows(store).values()), 10,
               interval=0.01, what="every row done after the restart")
    again.stop()
    assert after.got["!z:localhost"] == [f"z {n}" for n in range(3, 8)]


def test_delivered_rows_are_marked_in_batches_off_the_rooms_path(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 13 item 7: each delivered row was marked done in its own transaction by its
    sender, between two lines of the room. Now the marker thread writes them in batches
    and the stop writes the last one."""
    marks: list[int] = []
    done = store.outbox_done
    monkeypatch.setattr(store, "outbox_done", lambda batch: (marks.append(len(batch)),
                                                            done(batch))[1])
    monkeypatch.setattr(Senders, "MARK_EVERY", 0.2)
    hs = FakeHomeserver()
    senders = Senders(store, hs, count=4)
    senders.start()
    pairs = [(f"!m{n % 4}:localhost", f"m{n % 4} {n // 4}") for n in range(200)]
    senders.dispatch(queue_rows(store, pairs))
    wait_until(lambda: sum(len(v) for v in hs.got.values()) == 200, 20, interval=0.01,
               what="every line delivered")
    senders.stop()  # marks what the marker had not written yet
    assert all(state == DONE and event_id for state, event_id, _ in rows(store).values())
    assert sum(marks) == 200
    assert len(marks) <= 20, marks  # not 200 transactions
