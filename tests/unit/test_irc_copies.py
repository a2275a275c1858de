"""Copies of channel lines: every connection of ours in a channel gets one, only the
forwarder's is parsed and relayed (issue 13 item 7: the others' copies were the largest cost
of Matrix -> IRC). Against the scripted loopback IRC server of tests/scripted_irc.py."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest

from bridge.devstack.ports import wait_until
from bridge.irc.events import IrcKind, IrcMessage, IrcPrivate
from bridge.irc.reactor import BridgeServerConnection
from tests.scripted_irc import ScriptedIrcServer
from tests.unit.test_irc_wire import bridge_side, connected, network, registered


def test_the_first_words_decide_which_lines_are_someone_elses() -> None:
    conn = BridgeServerConnection.__new__(BridgeServerConnection)
    conn.real_nickname = "Me[m]"
    conn.relays = lambda channel: channel == "#mine"
    elses = conn._someone_elses
    assert elses(":a!u@h PRIVMSG #other :hi")
    assert elses(":a!u@h NOTICE #other :hi")
    assert elses(":a!u@h privmsg &other :lower case command")
    assert elses("@time=2026-12-03T10:00:00.000Z;msgid=x :a!u@h PRIVMSG #other :tagged")
    assert elses(":a!u@h PRIVMSG #other :\x01ACTION waves\x01")
    assert not elses(":a!u@h PRIVMSG #mine :ours to relay")
    assert not elses(":a!u@h PRIVMSG me[m] :a private message")
    assert not elses(":a!u@h PRIVMSG @#other :a status message (not a channel target)")
    assert not elses(":a!u@h JOIN #other")
    assert not elses(":a!u@h KICK #other me[m] :bye")
    assert not elses("PING :server")
    assert not elses(":server 001 me[m] :Welcome")
    assert not elses("@badtags")
    # echo-message: our own line comes back to us; its echo says it was delivered
    assert not elses("@msgid=abc :Me[m]!u@h PRIVMSG #other :our own line")
    conn.relays = None  # not set by a network (e.g. a bare reactor): everything is parsed
    assert not elses(":a!u@h PRIVMSG #other :hi")


def test_only_the_forwarder_parses_and_relays_a_channel_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parsed: Counter[str] = Counter()
    lock = threading.Lock()
    original = BridgeServerConnection._process_line

    def counting(self: BridgeServerConnection, line: str) -> None:
        if "PRIVMSG #chan" in line or "NOTICE #chan" in line:
            with lock:
                parsed[self.get_nickname()] += 1
        original(self, line)

    monkeypatch.setattr(BridgeServerConnection, "_process_line", counting)
    with ScriptedIrcServer() as server, \
            bridge_side(network(server.port)) as (side, listener):
        net = side.network("t")
        assert net is not None
        bot_client = registered(server, "tbot")
        bot = side.call_sync(lambda: net.bot)
        connected(side, bot)
        side.call_sync(net.join_bot, "#chan")
        puppets = [side.call_sync(net.puppet, f"@p{i}:localhost") for i in range(2)]
        clients = [registered(server, f"p{i}[m]") for i in range(2)]
        for conn in puppets:
            connected(side, conn)
            side.call_sync(conn.join, "#chan")
        wait_until(lambda: side.call_sync(lambda: all(
            "#chan" in c.channels for c in [bot, *puppets])), 10, what="everyone in #chan")

        said = [":carol!c@h PRIVMSG #chan :one", ":carol!c@h NOTICE #chan :two",
                "@time=2026-12-03T10:00:00.000Z :carol!c@h PRIVMSG #chan :three",
                ":carol!c@h PRIVMSG #chan :\x01ACTION four\x01"]
        for line in said:  # what the server does: a copy to every member
            for client in [bot_client, *clients]:
                client.send(line)
        clients[0].send(":carol!c@h PRIVMSG p0[m] :private")  # a puppet's own line

        def heard() -> tuple[list[Any], list[Any]]:
            return listener.of("irc_message"), listener.of("irc_private")

        wait_until(lambda: len(heard()[0]) == 4 and len(heard()[1]) == 1, 10,
                   what="four channel lines and the private one")
        messages, private = heard()
        assert all(isinstance(m, IrcMessage) for m in messages)
        assert [(m.text, m.kind) for m in messages if isinstance(m, IrcMessage)] == [
            ("one", IrcKind.PRIVMSG), ("two", IrcKind.NOTICE), ("three", IrcKind.PRIVMSG),
            ("four", IrcKind.ACTION)]
        assert isinstance(private[0], IrcPrivate) and private[0].text == "private"
        assert parsed == Counter({"tbot": 4})  # the puppets' copies were never parsed

        # The bot leaves: the puppet with the lowest user id relays from now on.
        side.call_sync(lambda: bot.left("#chan"))
        for client in [bot_client, *clients]:
            client.send(":carol!c@h PRIVMSG #chan :five")
        wait_until(lambda: len(listener.of("irc_message")) == 5, 10, what="the fifth line")
        assert parsed["p0[m]"] == 1 and parsed["p1[m]"] == 0

        # echo-message: p1's own line comes back to p1, which is not the forwarder; the
        # echo is parsed (it tells that the line was delivered), not dropped as a copy.
        clients[1].send(":p1[m]!u@scripted PRIVMSG #chan :p1's own line")
        wait_until(lambda: parsed["p1[m]"] == 1, 10, what="p1's echo parsed")
