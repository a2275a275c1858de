"""Two bridges on one PostgreSQL: nothing lost, nothing crossed, nothing puppeted twice.

The process model past one process (design.md): one bridge per network, each with its own
registration (id, tokens, namespaces) and config.ini, sharing one PostgreSQL and one
homeserver. Here: bridge "ircbridge" serves network `local` (its own ngircd), bridge
"ircbeta" serves network `beta` (another ngircd); one Matrix room is the portal of #multi on
`local` and is linked to #multi on `beta` too, so every event in it is pushed to both
application services. Bridge beta is stopped while its users talk on both sides; after it is
back, every message arrived exactly once, on the right side, and neither bridge opened an
IRC connection for the other's bot or virtual users.

Needs PostgreSQL (IRCBRIDGE_TEST_DATABASE_URL): SQLite is one file per bridge.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from bridge.devstack.clients import MatrixClient
from bridge.devstack.stack import Stack
from tests.conftest import TEST_DB_ENV
from tests.traffic import IrcObserver, Tally, eventually, matrix_texts, seqs_in

URL = os.environ.get(TEST_DB_ENV, "")
pytestmark = pytest.mark.skipif(
    not URL.startswith("postgres"),
    reason="several bridges share one PostgreSQL; set IRCBRIDGE_TEST_DATABASE_URL to run this")

CHANNEL = "#multi"
WHILE_DOWN = 20


class World:
    alpha: Stack
    beta: Stack
    anna: IrcObserver  # on network local (bridge alpha)
    bert: IrcObserver  # on network beta (bridge beta)
    alice: MatrixClient
    room: str


def _clean() -> None:
    from tests.admin_db import clean

    clean(URL)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from bridge.cli.main import main as cli_main

    _clean()
    w = World()
    base = tmp_path_factory.mktemp("multibridge")
    w.alpha = Stack(base / "alpha", database_url=URL, channels=CHANNEL)
    w.beta = Stack(base / "beta", database_url=URL, channels=CHANNEL,
                   user_template="irc_beta_{nick}", alias_template="irc_beta_{channel}",
                   appservice_id="ircbeta", bot_localpart="ircbetabot", network_name="beta",
                   synapse=w.alpha.synapse)
    try:
        w.beta.prepare()  # its registration must be loaded by the homeserver at start
        w.alpha.synapse.registration_files.append(w.beta.registration.resolve())

        def anna_first(stack: Stack) -> None:
            w.anna = IrcObserver(stack, "anna", CHANNEL).connect()

        w.alpha.start(before_bridge=anna_first)
        w.bert = IrcObserver(w.beta, "bert", CHANNEL).connect()
        w.alice = w.alpha.matrix_user("alice")
        w.room = w.alice.join(w.alpha.alias(CHANNEL))
        # The same room, linked to #multi on beta too (offline: bridge beta is not running).
        assert cli_main(["-c", str(w.beta.config_path), "link", "--network", "beta",
                         "--channel", CHANNEL, "--room", w.room]) == 0
        w.beta.bridge.start()
        w.alice.send_text(w.room, "warm-up")
        eventually(lambda: "warm-up" in w.anna.channel_texts("alice[m]"), 60,
                   "alice's puppet to speak on local")
        eventually(lambda: "warm-up" in w.bert.channel_texts("alice[m]"), 60,
                   "alice's puppet to speak on beta")
        yield w
    finally:
        for observer in ("anna", "bert"):
            if getattr(w, observer, None):
                getattr(w, observer).close()
        if os.environ.get("IRCBRIDGE_SHOW_LOG"):
            print(w.alpha.bridge.log(300), w.beta.bridge.log(300))
        w.beta.stop()
        w.alpha.stop()
        _clean()


def _irc_tally(what: str, observer: IrcObserver, tag: str, sent: list[int]) -> Tally:
    return Tally(what, sent, seqs_in(observer.channel_texts("alice[m]"), tag))


def _room_tally(w: World, what: str, tag: str, sent: list[int]) -> Tally:
    return Tally(what, sent, seqs_in(matrix_texts(w.alice, w.room), tag))


def test_each_message_arrives_once_on_the_right_side_while_one_bridge_is_down(
        world: World) -> None:
    w = world
    both = list(range(1, 6))
    for n in both:  # both bridges up: each relays alice's lines to its own network
        w.alice.send_text(w.room, f"both {n}")
        w.anna.c.privmsg(CHANNEL, f"anna-up {n}")
    eventually(lambda: _irc_tally("", w.bert, "both", both).got == both, 60,
               "alice's lines on beta")

    assert w.beta.bridge.stop() is not None  # a clean stop (SIGTERM)
    down = list(range(1, WHILE_DOWN + 1))
    for n in down:  # alice goes on talking; so does anna on IRC (network local)
        w.alice.send_text(w.room, f"down {n}")
        if n <= 10:
            w.anna.c.privmsg(CHANNEL, f"anna-down {n}")
    eventually(lambda: _irc_tally("", w.anna, "down", down).got == down, 60,
               "alice's lines on local while beta is down")

    w.beta.bridge.start()  # the homeserver now pushes what it kept for beta
    eventually(lambda: set(_irc_tally("", w.bert, "down", down).got) >= set(down), 120,
               "the lines beta missed to reach beta after its restart")
    back = list(range(1, 6))
    for n in back:
        w.bert.c.privmsg(CHANNEL, f"bert-back {n}")
    eventually(lambda: set(_room_tally(w, "", "bert-back", back).got) >= set(back), 60,
               "bert's lines in the room")
    w.alice.send_text(w.room, "final")
    eventually(lambda: "final" in w.anna.channel_texts("alice[m]")
               and "final" in w.bert.channel_texts("alice[m]"), 60, "the last line on both")

    tallies = [
        _irc_tally("alice -> local, both up", w.anna, "both", both),
        _irc_tally("alice -> beta, both up", w.bert, "both", both),
        _irc_tally("alice -> local, beta down", w.anna, "down", down),
        _irc_tally("alice -> beta, beta down (after its restart)", w.bert, "down", down),
        _room_tally(w, "anna -> room, both up", "anna-up", both),
        _room_tally(w, "anna -> room, beta down", "anna-down", list(range(1, 11))),
        _room_tally(w, "bert -> room, after the restart", "bert-back", back),
    ]
    report = "\n".join(str(t) for t in tallies)
    assert all(t.clean and t.in_order for t in tallies), report

    # On the right side only: nothing of one network is said on the other by a puppet.
    assert not [t for t in w.bert.channel_texts() if t.startswith("anna-")]
    assert not [t for t in w.anna.channel_texts() if t.startswith("bert-back")]
    room_senders = {e["sender"] for e in w.alice.messages(w.room, limit=500)
                    if e.get("type") == "m.room.message"
                    and str(e.get("content", {}).get("body", "")).startswith(("anna-", "bert-"))}
    assert room_senders == {"@irc_local_anna:localhost", "@irc_beta_bert:localhost"}


def test_no_bridge_puppets_the_other_bridges_bot_or_virtual_users(world: World) -> None:
    w = world
    # Each network's channel holds its own people: the IRC user, the bridge's bot and the
    # Matrix user's puppet; never `ircbetabot[m]`, `irc_beta_bert[m]`, `ircbot[m]` or
    # `irc_local_anna[m]` (the other bridge's bot and virtual users).
    assert w.anna.c.names(CHANNEL) == {"anna", "ircbot", "alice[m]"}
    assert w.bert.c.names(CHANNEL) == {"bert", "ircbetabot", "alice[m]"}
    members = set(w.alice.joined_members(w.room))
    assert {"@ircbot:localhost", "@ircbetabot:localhost", "@irc_local_anna:localhost",
            "@irc_beta_bert:localhost", "@alice:localhost"} <= members
