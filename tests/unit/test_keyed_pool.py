"""The one keyed pool both sender kinds use: order per key, keys side by side, stops."""

from __future__ import annotations

import threading

from bridge.devstack.ports import wait_until
from bridge.pipeline.lanes import KeyedPool, Lanes


def test_one_keys_items_run_in_order_and_a_stuck_key_holds_up_no_other() -> None:
    release = threading.Event()
    done: list[tuple[str, int]] = []
    lock = threading.Lock()

    def handle(item: tuple[str, int]) -> None:
        key, n = item
        if key == "stuck" and n == 0:
            release.wait(10)
        with lock:
            done.append(item)

    # Two threads: with hashed lanes, "stuck" could share one with a busy key; here every
    # other key is served while it waits.
    pool: KeyedPool[tuple[str, int]] = KeyedPool("t", 2, handle, batch=3)
    pool.start()
    pool.put_many([("stuck", (("stuck", n))) for n in range(3)])
    for key in ("a", "b", "c"):
        pool.put_many([(key, (key, n)) for n in range(10)])
    wait_until(lambda: sum(1 for k, _ in done if k != "stuck") == 30, 10,
               what="every other key served while one waits")
    assert not [item for item in done if item[0] == "stuck"]
    release.set()
    wait_until(lambda: len(done) == 33, 10, what="the stuck key's items")
    for key in ("stuck", "a", "b", "c"):
        assert [n for k, n in done if k == key] == list(range(10 if key != "stuck" else 3))
    assert pool.depth == 0
    pool.stop()


def test_a_failing_item_is_logged_and_the_key_goes_on() -> None:
    done: list[int] = []

    def handle(n: int) -> None:
        if n == 1:
            raise RuntimeError("boom")
        done.append(n)

    pool: KeyedPool[int] = KeyedPool("t", 1, handle)
    pool.start()
    pool.put_many([("k", n) for n in range(4)])
    wait_until(lambda: done == [0, 2, 3], 10, what="the items after the failing one")
    pool.stop()


def test_lanes_finish_their_queued_work_when_stopped() -> None:
    """The admin lanes' stop lets the work they have run (notices already queued)."""
    gate = threading.Event()
    done: list[str] = []
    lanes = Lanes(2, "admin-test")
    lanes.start()
    lanes.submit("!room", gate.wait, 10)
    for text in ("one", "two", "three"):
        lanes.submit("!room", done.append, text)
    threading.Timer(0.2, gate.set).start()
    lanes.stop(timeout=10)
    assert done == ["one", "two", "three"]


def test_a_stop_without_finishing_ends_after_the_current_item() -> None:
    started = threading.Event()
    release = threading.Event()
    done: list[int] = []

    def handle(n: int) -> None:
        started.set()
        release.wait(10)
        done.append(n)

    pool: KeyedPool[int] = KeyedPool("t", 1, handle)
    pool.start()
    pool.put_many([("k", n) for n in range(5)])
    assert started.wait(10)
    stopper = threading.Thread(target=pool.stop, kwargs={"timeout": 10})
    stopper.start()
    wait_until(lambda: pool.stopping, 10, what="the stop to begin")
    release.set()
    stopper.join(10)
    assert done == [0]  # the rest stays queued (pending rows are sent after a restart)
    assert pool.depth == 4
