"""The IRC thread's way in (`IrcThread.call`): every call runs, in order per caller, and a
wake byte is sent only when the loop may be asleep (issue 13 item 7: one per call was a
tenth of the Matrix -> IRC cost)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from bridge.irc.reactor import IrcThread


@pytest.fixture
def thread() -> Iterator[IrcThread]:
    # A poll that never times out by itself within the test: a lost wake shows as a hang.
    irc = IrcThread(name="test-irc", poll_interval=60.0)
    irc.start()
    yield irc
    irc.stop()


def test_a_call_after_a_quiet_moment_is_never_left_waiting(thread: IrcThread) -> None:
    for n in range(300):
        ran = threading.Event()
        thread.call(ran.set)
        assert ran.wait(5), f"call {n} waited for the poll's timeout: its wake was lost"


def test_calls_from_many_threads_all_run_in_order_with_fewer_wakes(
    thread: IrcThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    wakes = [0]
    real_wake = thread.reactor.wake

    def counting_wake() -> None:
        wakes[0] += 1
        real_wake()

    monkeypatch.setattr(thread.reactor, "wake", counting_wake)
    seen: dict[int, list[int]] = {k: [] for k in range(4)}

    def caller(k: int) -> None:
        for n in range(5000):
            thread.call(seen[k].append, n)

    callers = [threading.Thread(target=caller, args=(k,)) for k in range(4)]
    for t in callers:
        t.start()
    for t in callers:
        t.join(30)
    assert thread.call_sync(lambda: sum(len(v) for v in seen.values()), timeout=10) == 20000
    assert all(v == list(range(5000)) for v in seen.values())
    assert wakes[0] < 20000 // 2, wakes[0]
