"""New connections per second per network: a token bucket over every TCP connect (first
connects and reconnects, the bot and puppets), on the IRC thread's own scheduler.

The bucket is tested with a fake clock and a fake scheduler; the spacing of real connects
is measured from the server side, by a loopback TCP relay in front of a real ngircd that
notes when it accepted each connection.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from bridge.devstack.ircd import IrcDaemon
from bridge.devstack.ports import wait_until
from bridge.irc import IrcSide
from bridge.irc.connection import ConnectSlots, State
from tests.irc_listener import RecordingListener
from tests.irc_side import network


# ------------------------------------------------------------------ the bucket, fake clock
class FakeTimer:
    def __init__(self, when: float, fn: Callable[[], Any]):
        self.when = when
        self.fn = fn
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A clock that only moves when told, and the timers scheduled on it."""

    def __init__(self) -> None:
        self.now = 100.0
        self.timers: list[FakeTimer] = []

    def __call__(self) -> float:
        return self.now

    def call_later(self, delay: float, fn: Callable[[], Any]) -> FakeTimer:
        timer = FakeTimer(self.now + max(0.0, delay), fn)
        self.timers.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        """Move time on, running every timer that falls due, in order."""
        end = self.now + seconds
        while True:
            due = sorted((t for t in self.timers if not t.cancelled and t.when <= end),
                         key=lambda t: t.when)
            if not due:
                break
            timer = due[0]
            self.timers.remove(timer)
            self.now = max(self.now, timer.when)
            timer.fn()
        self.now = end


def test_the_connect_bucket_spaces_attempts_on_the_schedulers_clock() -> None:
    clock = FakeClock()
    slots = ConnectSlots(10, rate=2.0, burst=1, call_later=clock.call_later, clock=clock)
    began: list[float] = []
    for _ in range(5):
        slots.request(lambda: began.append(clock.now))
    # The burst of one goes at once; the rest wait, on one timer, for their token.
    assert began == [100.0]
    assert len(slots.waiting) == 4
    assert len([t for t in clock.timers if not t.cancelled]) == 1
    clock.advance(0.49)
    assert began == [100.0]
    clock.advance(2.51)
    assert began == pytest.approx([100.0, 100.5, 101.0, 101.5, 102.0])
    # The bucket filled up again while idle, but only to its burst.
    clock.advance(10.0)
    for _ in range(2):
        slots.request(lambda: began.append(clock.now))
    assert began[5:] == pytest.approx([113.0])
    clock.advance(1.0)
    assert began[5:] == pytest.approx([113.0, 113.5])


def test_the_bucket_and_the_concurrency_cap_both_hold() -> None:
    clock = FakeClock()
    slots = ConnectSlots(1, rate=2.0, burst=3, call_later=clock.call_later, clock=clock)
    began: list[float] = []
    for _ in range(3):
        slots.request(lambda: began.append(clock.now))
    assert began == [100.0]  # one in flight at a time
    clock.advance(5.0)
    assert began == [100.0]  # tokens alone do not free the slot
    slots.release()
    assert began == [100.0, 105.0]  # a token was saved up: no wait
    slots.release()
    assert began == [100.0, 105.0, 105.0]
    assert slots.active == 1 and not slots.waiting


def test_a_rate_of_zero_turns_the_bucket_off() -> None:
    clock = FakeClock()
    slots = ConnectSlots(100, rate=0.0, burst=1, call_later=clock.call_later, clock=clock)
    began: list[float] = []
    for _ in range(50):
        slots.request(lambda: began.append(clock.now))
    assert len(began) == 50 and not clock.timers


# ------------------------------------------------------------------ real connects, ngircd
class AcceptingRelay:
    """A loopback TCP relay in front of the IRC server, noting when it accepted each
    connection (the time the server side saw the connect)."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted: list[float] = []
        self._sockets: list[socket.socket] = [self.listener]
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self.accepted.append(time.monotonic())
            upstream = socket.create_connection(self.target, timeout=10)
            upstream.settimeout(None)
            self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def times(self) -> list[float]:
        with self._lock:
            return list(self.accepted)

    def close(self) -> None:
        for s in self._sockets:
            try:
                s.close()
            except OSError:
                pass


Listener = RecordingListener




def most_in_a_window(times: list[float], window: float) -> int:
    """The most events that fall in any closed interval of `window` seconds."""
    ordered = sorted(times)
    return max(sum(1 for u in ordered[i:] if u - t <= window) for i, t in enumerate(ordered))


def test_new_connections_per_second_are_capped_on_a_real_server(ngircd: IrcDaemon) -> None:
    relay = AcceptingRelay((ngircd.host, ngircd.port))
    # The concurrency cap lets all six in at once: only the rate spaces them.
    config = network(relay.port, max_concurrent_connects=6, connects_per_second=2.0,
                     connect_burst=1)
    side = IrcSide((config,), Listener(), lambda n: n.bot_nick)
    side.start([])
    try:
        net = side.network("t")
        assert net is not None
        side.call_sync(lambda: [net.puppet(f"@u{i}:localhost") for i in range(6)])

        def registered() -> int:
            return side.call_sync(lambda: sum(c.state is State.CONNECTED
                                              for c in net.puppets.values()))

        wait_until(lambda: registered() == 6, 30, what="all six puppets to register")
        times = relay.times()
        assert len(times) == 6, times  # no attempt was wasted (no reconnects)
        # A burst of 1 and 2 per second: at most 1 + 2 = 3 connects in any 1 s (ideally
        # 0.5 s apart, so a 1 s window holds 3 only at its very edges); before, all six
        # came within a few milliseconds.
        gaps = [round(b - a, 3) for a, b in zip(times, times[1:], strict=False)]
        assert most_in_a_window(times, 1.0) <= 3, gaps
        # And spaced for real: six at 2/s after a burst of one span about 2.5 s.
        assert times[-1] - times[0] >= 2.0, gaps
    finally:
        side.stop()
        relay.close()
