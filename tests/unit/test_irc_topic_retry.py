"""A topic change the server asks to retry later is sent again (InspIRCd answers a second
change within one second with 437 "Retry topic change later": a Matrix topic set right
after an IRC one was lost, and the room and the channel disagreed). After TOPIC_RETRIES
refusals the sender is told, as for any refused line. Against the scripted loopback IRC
server; the test's thread asks the IRC thread."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bridge.devstack.ports import wait_until
from bridge.irc import IrcSide
from bridge.irc.network import TOPIC_RETRIES
from tests.scripted_irc import Client, ScriptedIrcServer
from tests.unit.test_irc_wire import bridge_side, connected, network, registered

ALICE = "@alice:localhost"


def _refusing(times: int) -> Any:
    """An on_line hook: the first `times` TOPICs get 437; the next is shown to the channel."""
    seen = {"topics": 0}

    def on_line(client: Client, line: str) -> None:
        if not line.upper().startswith("TOPIC "):
            return
        seen["topics"] += 1
        channel = line.split(" ")[1]
        if seen["topics"] <= times:
            client.send(f":scripted 437 {client.nick} {channel} :Retry topic change later")
        else:
            client.send(f":{client.nick}!u@h TOPIC {channel} :{line.split(' :', 1)[1]}")
    return on_line


def _topics(client: Client) -> list[str]:
    return [line for line in client.lines() if line.upper().startswith("TOPIC ")]


@contextmanager
def _alice_sets_the_topic(refusals: int) -> Iterator[tuple[IrcSide, Any, Any, Client]]:
    """Alice's puppet, on a server that refuses her first `refusals` TOPICs with 437, is
    asked to set #chan's topic. Yields the IRC side, its listener, the network and her
    client as the server sees it."""
    with ScriptedIrcServer(on_line=_refusing(refusals)) as server, \
            bridge_side(network(server.port)) as (side, listener):
        net = side.network("t")
        assert net is not None
        puppet = side.call_sync(net.puppet, ALICE)
        client = registered(server, puppet.nick)
        connected(side, puppet)
        side.call(net.command, ALICE, "TOPIC #chan :from Matrix", "#chan")
        yield side, listener, net, client


def _failures(listener: Any) -> list[Any]:
    return [e for name, e in listener.events if name == "irc_failure"]


def test_a_topic_change_the_server_asks_to_retry_is_sent_again() -> None:
    with _alice_sets_the_topic(2) as (side, listener, net, client):
        wait_until(lambda: len(_topics(client)) == 3, 15, what="the TOPIC sent three times")
        assert _topics(client) == ["TOPIC #chan :from Matrix"] * 3
        wait_until(lambda: not side.call_sync(lambda: dict(net.topic_retries)), 10,
                   what="the shown topic to end the retries")
        assert not _failures(listener)


def test_a_topic_change_refused_every_time_is_told_to_its_sender() -> None:
    with _alice_sets_the_topic(100) as (_side, listener, _net, client):
        wait_until(lambda: _failures(listener), 20, what="the sender to be told")
        assert len(_topics(client)) == 1 + TOPIC_RETRIES
