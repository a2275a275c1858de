"""One Matrix room bridged to a channel on each of two networks, by one bridge.

A bridge serving two networks (two ngircd here) links one plumbed room to #left on network
`local` and #right on network `two`: what Matrix users say there reaches both channels
once; what each IRC side says reaches the room once, and is not repeated on the other
network (IRC users of one network are virtual users of the bridge, never puppeted).
Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from bridge.devstack.clients import MatrixClient
from bridge.devstack.ircd import IrcDaemon
from bridge.devstack.stack import Stack
from tests.stacks import running_stack
from tests.traffic import IrcObserver, Tally, eventually, matrix_texts, seqs_in


class World:
    stack: Stack
    ircd2: IrcDaemon
    anna: IrcObserver  # in #left on network local
    bert: IrcObserver  # in #right on network two
    alice: MatrixClient
    room: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from bridge.cli.main import main as cli_main

    w = World()
    base = tmp_path_factory.mktemp("twonets")
    w.ircd2 = IrcDaemon(base / "ircd2", kind=os.environ.get("IRCBRIDGE_IRCD"))
    two = f"""
[network:two]
host = 127.0.0.1
port = {w.ircd2.port}
tls = false
user_template = irc_two_{{nick}}
alias_template = irc_two_{{channel}}
bot_nick = ircbot
channels = #right
flood_rate = 0
connect_timeout = 5
"""

    def room_linked_twice(stack: Stack) -> None:
        w.anna = IrcObserver(stack, "anna", "#left").connect()
        w.bert = IrcObserver(SimpleNamespace(irc_user=w.ircd2.client), "bert",  # type: ignore[arg-type]
                             "#right").connect()
        w.alice = stack.matrix_user("alice")
        w.room = w.alice.create_room(preset="public_chat", name="both networks")
        for network, channel in (("local", "#left"), ("two", "#right")):
            assert cli_main(["-c", str(stack.config_path), "link", "--network", network,
                             "--channel", channel, "--room", w.room]) == 0

    try:
        w.ircd2.start()
        with running_stack(base / "stack", before_bridge=room_linked_twice, channels="#left",
                           network_extra=two, log_lines=300) as w.stack:
            try:
                w.alice.send_text(w.room, "warm-up")
                eventually(lambda: "warm-up" in w.anna.channel_texts("alice[m]")
                           and "warm-up" in w.bert.channel_texts("alice[m]"), 60,
                           "alice's puppets to speak on both networks")
                yield w
            finally:
                for observer in ("anna", "bert"):
                    if getattr(w, observer, None):
                        getattr(w, observer).close()
    finally:
        w.ircd2.stop()


def test_a_room_linked_on_two_networks_says_everything_once_on_each(world: World) -> None:
    w = world
    sent = list(range(1, 6))
    for n in sent:
        w.alice.send_text(w.room, f"fan {n}")
        w.anna.c.privmsg("#left", f"anna {n}")
        w.bert.c.privmsg("#right", f"bert {n}")
    w.alice.send_text(w.room, "last")
    eventually(lambda: "last" in w.anna.channel_texts("alice[m]")
               and "last" in w.bert.channel_texts("alice[m]"), 60, "alice's lines on both")
    eventually(lambda: set(seqs_in(matrix_texts(w.alice, w.room), "anna")) >= set(sent)
               and set(seqs_in(matrix_texts(w.alice, w.room), "bert")) >= set(sent), 60,
               "both IRC users' lines in the room")
    texts = matrix_texts(w.alice, w.room)
    tallies = [
        Tally("alice -> #left on local", sent, seqs_in(w.anna.channel_texts("alice[m]"), "fan")),
        Tally("alice -> #right on two", sent, seqs_in(w.bert.channel_texts("alice[m]"), "fan")),
        Tally("anna -> room", sent, seqs_in(texts, "anna")),
        Tally("bert -> room", sent, seqs_in(texts, "bert")),
    ]
    assert all(t.clean and t.in_order for t in tallies), "\n".join(map(str, tallies))
    # Each network hears the room's Matrix users, never the other network's IRC users.
    assert not seqs_in(w.anna.channel_texts(), "bert")
    assert not seqs_in(w.bert.channel_texts(), "anna")
    assert w.anna.c.names("#left") == {"anna", "ircbot", "alice[m]"}
    assert w.bert.c.names("#right") == {"bert", "ircbot", "alice[m]"}


def test_unlinking_one_network_keeps_the_other(world: World) -> None:
    from bridge.cli.main import main as cli_main
    from bridge.store.models import Store

    w = world
    assert cli_main(["-c", str(w.stack.config_path), "unlink", "--room", w.room,
                     "--network", "two"]) == 0
    store = Store(w.stack.database_url)
    try:
        assert [(lk.network, lk.channel) for lk in store.links_for_room(w.room)] == [
            ("local", "#left")]
    finally:
        store.close()
    assert cli_main(["-c", str(w.stack.config_path), "unlink", "--room", w.room,
                     "--network", "two"]) == 1  # not linked there any more
