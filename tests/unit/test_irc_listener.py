"""The IRC side's declared `IrcListener` and the core that implements it agree.

`Network` calls the listener only through the Protocol's signatures, so a method the core
implements with other parameters (or one the Protocol lacks) is a broken seam that a
catch-all test listener would hide. Introspection, and one session against the scripted
loopback IRC server (tests/scripted_irc.py) whose every listener call is checked against
the Protocol by `tests.irc_listener.RecordingListener` (the IRC thread makes the calls, the
test thread reads them).
"""

from __future__ import annotations

import dataclasses
import inspect
import typing

from bridge.config.ini import NetworkConfig
from bridge.core.bridge import Bridge
from bridge.devstack.ports import wait_until
from bridge.irc import IrcSide
from bridge.irc.events import (
    IrcConnectionEvent,
    IrcKind,
    IrcMembership,
    IrcMessage,
    IrcPrivate,
    IrcReaction,
    MembershipChange,
)
from bridge.irc.network import IrcListener
from bridge.irc.presence import Identity, IrcAway, IrcTyping
from tests.irc_listener import RecordingListener, declared
from tests.scripted_irc import Client, ScriptedIrcServer


def _methods(cls: type) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(member) for name, member in vars(cls).items()
            if name.startswith("irc_") and callable(member)}


def test_core_implements_every_listener_method_with_the_same_parameters() -> None:
    declared = _methods(IrcListener)
    assert declared, "IrcListener declares no irc_* methods"
    for name, signature in declared.items():
        implemented = inspect.signature(getattr(Bridge, name))
        assert list(implemented.parameters) == list(signature.parameters), name


def test_network_passes_mentions_with_every_channel_message() -> None:
    fields = {f.name: f for f in dataclasses.fields(IrcMessage)}
    assert "mentions" in fields


def test_every_listener_method_takes_one_typed_event() -> None:
    types = {name: event_type for name, (_sig, event_type) in declared().items()}
    assert set(types) == {name for name in vars(RecordingListener) if name.startswith("irc_")}
    assert types["irc_message"] is IrcMessage
    assert types["irc_connection"] is IrcConnectionEvent
    for name, event_type in types.items():
        hints = typing.get_type_hints(getattr(Bridge, name))
        assert [h for k, h in hints.items() if k != "return"] == [event_type], name


def _say(client: Client, *lines: str) -> None:
    for line in lines:
        client.send(line)


def test_every_call_a_network_makes_matches_the_protocol() -> None:
    """One scripted session that makes the IRC side use every listener method; each call
    binds to the Protocol's signature with the event type it declares."""
    config = NetworkConfig(
        name="t", host="127.0.0.1", port=0, tls=False, tls_verify=True, display_name="t",
        user_template="t_{nick}", alias_template="t_{channel}",
        puppet_nick_template="{localpart}[m]", bot_nick="tbot", channels=("#chan",),
        scrollback_lines=5, flood_rate=0.0, flood_burst=5, max_lines=3, connect_timeout=5.0,
        max_concurrent_connects=4, password="",
    )
    listener = RecordingListener()
    with ScriptedIrcServer() as server:
        side = IrcSide((dataclasses.replace(config, port=server.port),), listener,
                       lambda n: n.bot_nick)
        side.start()
        try:
            net = side.network("t")
            assert net is not None
            bot = wait_until(lambda: server.client("tbot"), 10, what="the bot")
            wait_until(lambda: side.call_sync(lambda: net.bot_in("#chan")), 10,
                       what="the bot in #chan")
            side.call_sync(net.puppet, "@alice:localhost")
            alice = wait_until(lambda: server.client("alice[m]"), 10, what="the puppet")
            wait_until(lambda: listener.connection_events("connected")[1:], 10,
                       what="both connected")
            _say(bot, ":scripted 005 tbot CASEMAPPING=ascii PREFIX=(ov)@+ "
                      "CHANMODES=b,k,l,imnpst :are supported",
                 ":scripted 332 tbot #chan :the topic",
                 ":scripted 353 tbot = #chan :tbot bob",
                 ":scripted 366 tbot #chan :End of NAMES",
                 ":scripted 324 tbot #chan +i",
                 ":bob!b@h PRIVMSG #chan :hello alice[m]",
                 ":bob!b@h NOTICE #chan :a notice",
                 ":bob!b@h PRIVMSG #chan :\x01ACTION waves\x01",
                 ":bob!b@h TOPIC #chan :a new topic",
                 ":carol!c@h JOIN #chan",
                 ":bob!b@h MODE #chan +o carol",
                 ":scripted 353 tbot = #chan :tbot bob @carol",
                 ":scripted 366 tbot #chan :End of NAMES",
                 ":bob!b@h AWAY :lunch",
                 ":bob!b@h CHGHOST bb new.host",
                 ":bob!b@h ACCOUNT bobacct",
                 ":bob!b@h SETNAME :Bob B",
                 "@+typing=active :bob!b@h TAGMSG #chan",
                 "@+typing=bogus :bob!b@h TAGMSG #chan",
                 "@+draft/react=a\\sb;+draft/reply=m1 :bob!b@h TAGMSG #chan",
                 ":bob!b@h AWAY",
                 ":carol!c@h NICK carol2",
                 ":bob!b@h KICK #chan carol2 :bye",
                 ":dave!d@h JOIN #chan",
                 ":dave!d@h PART #chan :later",
                 ":erin!e@h JOIN #chan",
                 ":erin!e@h QUIT :Quit: gone")
            _say(alice, ":scripted 301 alice[m] bob :lunch",
                 ":bob!b@h PRIVMSG alice[m] :psst",
                 ":scripted 401 alice[m] nobody :No such nick")
            wanted = set(declared())
            wait_until(lambda: wanted <= {name for name, _ in list(listener.events)}
                       and len(listener.of("irc_membership")) >= 7, 10,
                       what="every kind of listener call")
        finally:
            side.stop()
    assert listener.mismatches == []
    messages = [e for e in listener.of("irc_message") if isinstance(e, IrcMessage)]
    assert [(m.kind, m.text) for m in messages] == [
        (IrcKind.PRIVMSG, "hello alice[m]"), (IrcKind.NOTICE, "a notice"),
        (IrcKind.ACTION, "waves")]
    assert messages[0].mentions == {"alice[m]": "@alice:localhost"}
    assert messages[0].tags == {} and messages[0].server_time is None
    changes = [e.change for e in listener.of("irc_membership")
               if isinstance(e, IrcMembership)]
    assert changes == [MembershipChange.JOIN, MembershipChange.NICK, MembershipChange.KICK,
                       MembershipChange.JOIN, MembershipChange.PART, MembershipChange.JOIN,
                       MembershipChange.QUIT]
    # away-notify and +typing reach the core; CHGHOST/ACCOUNT/SETNAME are no membership
    # change (the list above has no QUIT/JOIN for bob) and the 301 numeric is no AWAY.
    assert listener.of("irc_ephemeral") == [
        IrcAway("t", "bob", "lunch"), IrcTyping("t", "#chan", "bob", "active"),
        IrcAway("t", "bob", None)]
    assert listener.of("irc_reaction") == [IrcReaction("t", "#chan", "bob", "a b", "m1")]
    assert side.network("t").identities["bob"] == Identity("bb", "new.host", "bobacct", "Bob B")
    private = listener.of("irc_private")
    assert [(p.owner, p.nick, p.text, p.kind) for p in private
            if isinstance(p, IrcPrivate)] == [
        ("@alice:localhost", "bob", "psst", IrcKind.PRIVMSG)]
