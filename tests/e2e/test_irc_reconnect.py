"""Reconnects that do not get a bridge banned: backoff that survives 001, long waits after
a K-line, rejoins under flood control, the connect cap held through registration, and
several servers tried in turn.

Against the scripted loopback server (a server that closes right after 001, or holds 001
back) and a real ngircd (a real K-line by a real operator).
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from bridge.config import ini as config_module
from bridge.config.ini import NetworkConfig
from bridge.devstack.ircd import IrcDaemon
from bridge.devstack.ports import free_port, wait_until
from bridge.irc import IrcSide
from bridge.irc import connection as connection_module
from bridge.irc.connection import IrcConnection, State
from tests.conftest import write_config
from tests.irc_listener import RecordingListener
from tests.irc_side import network
from tests.scripted_irc import ScriptedIrcServer

Listener = RecordingListener




def started(config: NetworkConfig, *, bot: bool = True) -> tuple[IrcSide, Listener]:
    listener = Listener()
    side = IrcSide((config,), listener, lambda n: n.bot_nick)
    side.start(None if bot else [])
    return side, listener


def the_bot(side: IrcSide) -> IrcConnection:
    net = side.network("t")
    assert net is not None
    return wait_until(lambda: side.call_sync(lambda: net.bot), 10, what="the bot")


def test_backoff_keeps_growing_when_the_server_closes_right_after_001() -> None:
    with ScriptedIrcServer() as server:
        server.close_after_welcome.set()
        side, listener = started(network(server.port))
        try:
            lost = wait_until(lambda: len(listener.connection_events("lost")) >= 3
                              and listener.connection_events("lost"), 30,
                              what="three lost links")
            assert len(listener.connection_events("connected")) >= 3  # each got its 001
            # 2**n seconds with jitter in [0.5, 1]: the third wait is at least 4 s. Before,
            # 001 reset the count and every wait was 1-2 s, forever.
            assert lost[2].retry_in >= 4.0, lost
        finally:
            side.stop()


def test_backoff_starts_over_once_the_link_stayed_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection_module, "STABLE_AFTER", 0.3)
    with ScriptedIrcServer() as server:
        server.close_after_welcome.set()
        side, listener = started(network(server.port))
        try:
            wait_until(lambda: len(listener.connection_events("lost")) >= 2, 20,
                       what="two lost links")
            server.close_after_welcome.clear()
            bot = the_bot(side)
            wait_until(lambda: side.call_sync(lambda: bot.state is State.CONNECTED), 20,
                       what="a link that stays")
            stable = wait_until(lambda: side.call_sync(bot.stable), 10,
                                what="the link to count as stable")
            assert stable
            client = server.client("tbot")
            assert client is not None
            client.sock.shutdown(socket.SHUT_RDWR)
            lost = wait_until(lambda: len(listener.connection_events("lost")) >= 3
                              and listener.connection_events("lost"), 10, what="the drop")
            assert lost[2].retry_in <= 2.0, lost
        finally:
            side.stop()


def test_rejoins_go_through_flood_control() -> None:
    channels = tuple(f"#c{i}" for i in range(10))
    with ScriptedIrcServer() as server:
        side, _ = started(network(server.port, channels=channels, flood_rate=0.01,
                                  flood_burst=2))
        try:
            bot = the_bot(side)
            client = wait_until(lambda: server.client("tbot"), 10, what="the bot")
            wait_until(lambda: sum(line.startswith("JOIN") for line in client.lines()) >= 2, 10,
                       what="the first JOINs")
            waiting = side.call_sync(lambda: [i.line for i in bot.queue])
            # A burst of 2, then one line a 100 s: eight JOINs wait their turn.
            assert waiting == [f"JOIN #c{i}" for i in range(2, 10)]
        finally:
            side.stop()


def test_the_connect_cap_holds_through_registration() -> None:
    with ScriptedIrcServer() as server:
        server.welcome_allowed.clear()  # the server takes its time to register anyone
        side, _ = started(network(server.port, max_concurrent_connects=2), bot=False)
        try:
            net = side.network("t")
            assert net is not None
            side.call_sync(lambda: [net.puppet(f"@u{i}:localhost") for i in range(6)])
            wait_until(lambda: sum(any(line.startswith("USER") for line in c.lines())
                                   for c in server.clients) >= 2, 10,
                       what="two registrations under way")
            # Before, a slot was given back once TCP connected: all six registered at once.
            assert side.call_sync(lambda: (net.slots.active, len(net.slots.waiting))) == (2, 4)
            server.release_welcomes()

            def all_connected() -> bool:
                server.release_welcomes()
                return side.call_sync(lambda: all(c.state is State.CONNECTED
                                                  for c in net.puppets.values()))

            wait_until(all_connected, 20, what="all six to register, two at a time")
        finally:
            side.stop()


def test_several_servers_are_tried_in_turn(tmp_path: Path) -> None:
    closed = free_port()  # nothing listens here
    with ScriptedIrcServer() as server:
        path = write_config(tmp_path, irc_host=f"127.0.0.1:{closed}, 127.0.0.1:{server.port}")
        config = config_module.load(path).networks[0]
        assert config.servers == (("127.0.0.1", closed), ("127.0.0.1", server.port))
        side, listener = started(config)
        try:
            wait_until(lambda: server.client("ircbot"), 15, what="the second server")
            lost = listener.connection_events("lost")
            assert lost and f"127.0.0.1:{closed}" in lost[0].reason
        finally:
            side.stop()


def test_a_k_line_backs_off_for_long_and_is_reported(ngircd: IrcDaemon) -> None:
    side, listener = started(network(ngircd.port))
    try:
        bot = the_bot(side)
        wait_until(lambda: side.call_sync(lambda: bot.state is State.CONNECTED), 10,
                   what="the bot to connect")
        oper = ngircd.client("oper")
        oper.send(f"OPER {ngircd.oper_name} {ngircd.oper_password}")
        oper.wait_for(lambda m: m.command == "381")
        oper.send("KLINE tbot!*@* 3600 :no bridges here")
        banned = wait_until(lambda: listener.connection_events("banned"), 10,
                            what="the K-line to be reported")
        assert "no bridges here" in banned[0].reason
        lost = listener.connection_events("lost")
        # Not the 1-2 s of a first failure: a ban is not lifted by asking again soon.
        assert lost[-1].retry_in >= 600, lost
        oper.close()
    finally:
        side.stop()


def test_a_server_that_never_says_001_gives_the_connect_slot_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(connection_module, "REGISTER_WITHIN", 0.2)
    with ScriptedIrcServer() as server:
        server.welcome_allowed.clear()
        side, listener = started(network(server.port, max_concurrent_connects=1,
                                         give_up_after=2.0))
        try:
            lost = wait_until(lambda: listener.connection_events("lost"), 15,
                              what="the registration to time out")
            assert "Registration timed out" in lost[0].reason
            bot = the_bot(side)
            net = side.network("t")
            assert net is not None
            # Waiting to try again, it holds no slot (another connection may register).
            wait_until(lambda: side.call_sync(
                lambda: bot.state is State.BACKOFF and net.slots.active == 0), 10,
                what="the slot to be free during the backoff")
        finally:
            side.stop()
