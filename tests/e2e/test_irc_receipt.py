"""The IRC side's Receipt, on a real IRC daemon: `started` once, right before a message's
first line is written; `finished` once, after its last line left or when it could not."""

from __future__ import annotations

import threading
from typing import Any

from bridge.config.ini import NetworkConfig
from bridge.devstack.ircd import IrcDaemon
from bridge.devstack.ports import wait_until
from bridge.irc import IrcSide
from bridge.irc.receipt import Receipt
from tests import irc_side
from tests.irc_listener import RecordingListener

ALICE = "@alice:localhost"


Listener = RecordingListener


def network(port: int, **overrides: Any) -> NetworkConfig:
    return irc_side.network(port, **{"channels": ("#unit",), **overrides})


class Heard:
    """What a receipt was told, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.lock = threading.Lock()
        self.receipt = Receipt(self.finished, self.started)

    def started(self) -> None:
        with self.lock:
            self.events.append(("started",))

    def finished(self, ok: bool, error: str | None) -> None:
        with self.lock:
            self.events.append(("finished", ok, error))

    def done(self) -> bool:
        with self.lock:
            return any(e[0] == "finished" for e in self.events)


def test_started_before_the_first_line_and_finished_after_the_last(ircd: IrcDaemon) -> None:
    bob = ircd.client("Bob")
    bob.join("#unit")
    side = IrcSide((network(ircd.port),), Listener(), lambda n: n.bot_nick)
    side.start()
    try:
        net = side.network("t")
        assert net is not None
        heard = Heard()
        side.call(net.say, ALICE, None, "#unit", ["one", "two", "three"], "m.text",
                  heard.receipt)
        for text in ("one", "two", "three"):
            bob.wait_for_privmsg(text, target="#unit", sender="alice[m]", timeout=20)
        wait_until(heard.done, 10, interval=0.01, what="the receipt")
        assert heard.events == [("started",), ("finished", True, None)]
    finally:
        side.stop()
        bob.close()


def test_lines_cut_by_a_close_finish_once_as_failed(ircd: IrcDaemon) -> None:
    bob = ircd.client("Bob")
    bob.join("#unit")
    side = IrcSide((network(ircd.port, flood_rate=0.2, flood_burst=1),), Listener(),
                   lambda n: n.bot_nick)
    side.start()
    try:
        net = side.network("t")
        assert net is not None
        heard = Heard()
        side.call(net.say, ALICE, None, "#unit", ["first", "second", "third"], "m.text",
                  heard.receipt)
        bob.wait_for_privmsg("first", target="#unit", sender="alice[m]", timeout=20)
    finally:
        side.stop()  # the other two wait for flood control: closed with the connection
    bob.close()
    wait_until(heard.done, 10, interval=0.01, what="the receipt")
    assert heard.events == [("started",), ("finished", False, "connection closed")]


def test_an_empty_message_finishes_at_once_without_starting(ircd: IrcDaemon) -> None:
    side = IrcSide((network(ircd.port),), Listener(), lambda n: n.bot_nick)
    side.start()
    try:
        net = side.network("t")
        assert net is not None
        heard = Heard()
        side.call(net.say_private, ALICE, "Bob", [], "m.text", heard.receipt)
        wait_until(heard.done, 10, interval=0.01, what="the receipt")
        assert heard.events == [("finished", True, None)]
    finally:
        side.stop()
