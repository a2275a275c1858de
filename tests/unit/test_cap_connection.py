"""Every connection negotiates capabilities while it registers, against a scripted server.

The scripted server (tests/scripted_irc.py) holds registration while a CAP negotiation is
open, as real servers do, and ACKs every REQ. These tests pin what real servers cannot be
made to do: never answer (the deadline must end the negotiation), and announce caps later
(cap-notify NEW / DEL on a registered connection).
"""

from __future__ import annotations

import pytest

from bridge.devstack.ports import wait_until
from bridge.irc import cap as cap_module
from tests.scripted_irc import ScriptedIrcServer
from tests.unit.test_irc_wire import bridge_side, connected, network, registered


def test_the_bot_and_a_puppet_negotiate_before_nick_and_user() -> None:
    lines = ["CAP * LS * :multi-prefix server-time=x",
             "CAP * LS :batch vendor.example/thing"]
    with ScriptedIrcServer(cap_ls=lines) as server, \
            bridge_side(network(server.port)) as (side, _listener):
        net = side.network("t")
        assert net is not None
        bot_client = registered(server, "tbot")
        bot = side.call_sync(lambda: net.bot)
        connected(side, bot)
        puppet = side.call_sync(net.puppet, "@p:localhost")
        puppet_client = registered(server, "p[m]")
        connected(side, puppet)
        for client, conn in ((bot_client, bot), (puppet_client, puppet)):
            sent = client.lines()
            assert sent[0] == "CAP LS 302"
            assert "CAP REQ :server-time batch multi-prefix" in sent
            assert sent.index("CAP END") > sent.index("CAP REQ :server-time batch multi-prefix")
            enabled = side.call_sync(lambda c=conn: dict(c.caps.enabled))
            assert enabled == {"server-time": "x", "batch": "", "multi-prefix": ""}


def test_a_server_that_never_answers_cap_ls_still_registers_us_by_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cap_module, "CAP_DEADLINE", 0.5)
    # cap_ls=[]: the server holds registration for CAP but never replies to the LS.
    with ScriptedIrcServer(cap_ls=[]) as server, \
            bridge_side(network(server.port)) as (side, listener):
        net = side.network("t")
        assert net is not None
        client = registered(server, "tbot", timeout=5)
        bot = side.call_sync(lambda: net.bot)
        connected(side, bot)
        assert client.lines().count("CAP END") == 1
        assert listener.connection_events("sasl_failed") == []


def test_sasl_without_an_answer_is_reported_and_registration_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cap_module, "CAP_DEADLINE", 0.5)
    server = ScriptedIrcServer(cap_ls=["CAP * LS :sasl=PLAIN"])
    # Services that never answer: the server takes AUTHENTICATE and says nothing.
    server._authenticate = lambda client, argument: None  # type: ignore[method-assign]
    settings = {"password": "pw", "password_kind": "sasl", "sasl_username": "acct"}
    with server, bridge_side(network(server.port), bot=False, settings=settings) as (
            side, listener):
        net = side.network("t")
        assert net is not None
        conn = side.call_sync(net.puppet, "@slow:localhost")
        client = registered(server, "slow[m]", timeout=5)
        connected(side, conn)
        assert "AUTHENTICATE PLAIN" in client.lines()
        failed = listener.connection_events("sasl_failed")
        assert len(failed) == 1 and "SASL" in (failed[0].reason or ""), listener.events


def test_caps_announced_and_withdrawn_while_connected_follow_cap_notify() -> None:
    with ScriptedIrcServer(cap_ls=["CAP * LS :cap-notify server-time"]) as server, \
            bridge_side(network(server.port)) as (side, _listener):
        net = side.network("t")
        assert net is not None
        client = registered(server, "tbot")
        bot = side.call_sync(lambda: net.bot)
        connected(side, bot)

        def enabled() -> set[str]:
            return side.call_sync(lambda: set(bot.caps.enabled))

        assert enabled() == {"cap-notify", "server-time"}
        client.send(":scripted CAP tbot NEW :away-notify unknown-cap draft/multiline=max-lines=5")
        wait_until(lambda: "draft/multiline" in enabled(), 10, what="the NEW caps")
        assert "CAP REQ :away-notify draft/multiline" in client.lines()
        assert side.call_sync(lambda: bot.caps.enabled["draft/multiline"]) == "max-lines=5"
        client.send(":scripted CAP tbot DEL :server-time")
        wait_until(lambda: "server-time" not in enabled(), 10, what="the DEL")
        assert enabled() == {"cap-notify", "away-notify", "draft/multiline"}
        assert client.lines().count("CAP END") == 1


def test_a_server_without_cap_registers_us_and_the_deadline_is_dropped() -> None:
    with ScriptedIrcServer(cap_ls=None) as server, \
            bridge_side(network(server.port)) as (side, _listener):
        net = side.network("t")
        assert net is not None
        client = registered(server, "tbot")
        bot = side.call_sync(lambda: net.bot)
        connected(side, bot)
        # 001 ended the negotiation: no CAP END, and no timer left to send one later.
        assert side.call_sync(lambda: bot.caps.ended and bot._cap_timer is None)
        assert client.lines()[0] == "CAP LS 302" and "CAP END" not in client.lines()


def test_the_bots_caps_are_published_in_the_network_snapshot() -> None:
    """Other threads learn the bot's enabled caps (and values) only from the snapshot, and
    it follows cap-notify."""
    with ScriptedIrcServer(cap_ls=["CAP * LS :cap-notify draft/multiline=max-lines=5"]) \
            as server, bridge_side(network(server.port)) as (side, _listener):
        net = side.network("t")
        assert net is not None
        client = registered(server, "tbot")

        def published() -> dict[str, str]:
            snapshot = side.snapshot("t")
            assert snapshot is not None
            return dict(snapshot.caps)

        wait_until(lambda: published() == {"cap-notify": "", "draft/multiline": "max-lines=5"},
                   10, what="the caps in the snapshot")
        client.send(":scripted CAP tbot NEW :server-time")
        wait_until(lambda: "server-time" in published(), 10, what="NEW in the snapshot")
        client.send(":scripted CAP tbot DEL :draft/multiline")
        wait_until(lambda: "draft/multiline" not in published(), 10, what="DEL in the snapshot")
        assert published() == {"cap-notify": "", "server-time": ""}
