"""Relay mode end to end: with `relay_mode = optional` a Matrix user who said `!relay on` in
their admin room gets no IRC connection (another user still gets one); the bot says their
lines: as RELAYMSG from `alice/m` where the server offers draft/relaymsg
(Ergo; the bot is a channel operator there, which Ergo asks of a relayer), else as
`<alice> text` from the bot (ngircd, hybrid, InspIRCd). The relayed line never comes back to
Matrix as a line of a virtual user.

A real Synapse, the bridge under gunicorn and the IRC server IRCBRIDGE_TEST_IRCD names; Bob
is a raw IRC client in the channel.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from bridge.devstack.clients import IrcMessage, MatrixClient, RawIrcClient
from bridge.devstack.ports import wait_until
from bridge.devstack.stack import Stack
from tests.conftest import TEST_DB_ENV, clean_database
from tests.e2e.test_admin import admin_room, ask
from tests.e2e.test_ircv3_caps import cap_ls

CHANNEL = "#relaymode"


class Run:
    stack: Stack
    bob: RawIrcClient
    alice: MatrixClient
    room_id: str
    relaymsg: bool


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    url = os.environ.get(TEST_DB_ENV)
    if url:
        clean_database(url)
    r = Run()
    r.stack = Stack(tmp_path_factory.mktemp("relay"), database_url=url, channels=CHANNEL,
                    network_extra="relay_mode = optional")
    try:
        r.stack.prepare()
        with r.stack.irc_user("prober") as prober:
            r.relaymsg = "draft/relaymsg" in cap_ls(prober)

        def bob_arrives(stack: Stack) -> None:
            r.bob = stack.irc_user("Bob")
            r.bob.join(CHANNEL)

        r.stack.start(before_bridge=bob_arrives)
        r.alice = r.stack.matrix_user("alice")
        admin = admin_room(r.alice)
        assert "your own IRC connection" in ask(r.alice, admin, "!relay")
        assert "bot says your messages" in ask(r.alice, admin, "!relay on")
        assert "Say on or off" in ask(r.alice, admin, "!relay maybe")
        r.room_id = r.alice.join(r.stack.alias(CHANNEL))
        wait_until(lambda: "ircbot" in r.bob.names(CHANNEL), 30, what="the bot in the channel")
        if r.relaymsg:  # Ergo lets channel operators relay
            start = r.bob.mark()
            r.bob.send(f"MODE {CHANNEL} +o ircbot")
            r.bob.wait_for(lambda m: m.command == "MODE" and "ircbot" in m.params, timeout=10,
                           start=start)
        yield r
    finally:
        if getattr(r, "bob", None):
            r.bob.close()
        r.stack.stop()


def test_a_relayed_users_message_is_said_by_the_bot(run: Run) -> None:
    start = run.bob.mark()
    run.alice.send_text(run.room_id, "hello from relay mode")

    def said(m: IrcMessage) -> bool:
        return m.command == "PRIVMSG" and m.target.lower() == CHANNEL \
            and "hello from relay mode" in m.text
    line = run.bob.wait_for(said, timeout=30, start=start)
    if run.relaymsg:
        assert (line.nick, line.text) == ("alice/m", "hello from relay mode")
    else:
        assert (line.nick, line.text) == ("ircbot", "<alice> hello from relay mode")
    names = run.bob.names(CHANNEL)
    assert not [n for n in names if "alice" in n.lower()]  # no connection of Alice's


def test_a_user_who_did_not_choose_relay_has_their_own_connection(run: Run) -> None:
    carol = run.stack.matrix_user("carol")
    room_id = carol.join(run.stack.alias(CHANNEL))
    carol.send_text(room_id, "carol speaks for herself")
    line = run.bob.wait_for_privmsg(lambda text: text.endswith("carol speaks for herself"),
                                    target=CHANNEL, timeout=30)
    assert (line.nick, line.text) == ("carol[m]", "carol speaks for herself")


def test_a_relayed_line_does_not_come_back_to_matrix(run: Run) -> None:
    run.alice.send_text(run.room_id, "said once only")
    run.bob.wait_for_privmsg(lambda text: text.endswith("said once only"), target=CHANNEL,
                             timeout=30)
    run.bob.privmsg(CHANNEL, "bob after the relayed line")
    run.alice.wait_for_message(
        run.room_id, lambda e: e.get("content", {}).get("body") == "bob after the relayed line",
        timeout=30)
    bodies = [(e.get("sender"), e["content"].get("body"))
              for e in run.alice.messages(run.room_id) if e.get("type") == "m.room.message"]
    copies = [b for b in bodies if b[1] and "said once only" in b[1]]
    assert copies == [(run.alice.whoami(), "said once only")], bodies


def test_a_refused_relaymsg_is_said_as_nick_text_by_the_bot(run: Run) -> None:
    if not run.relaymsg:
        pytest.skip(f"{run.stack.ircd.kind} offers no draft/relaymsg: <nick> text already")
    start = run.bob.mark()
    run.bob.send(f"MODE {CHANNEL} -o ircbot")  # Ergo lets only channel operators relay
    run.bob.wait_for(lambda m: m.command == "MODE" and "ircbot" in m.params, timeout=10,
                     start=start)
    run.alice.send_text(run.room_id, "after the deop")
    line = run.bob.wait_for_privmsg(lambda text: text.endswith("after the deop"),
                                    target=CHANNEL, timeout=30)
    assert (line.nick, line.text) == ("ircbot", "<alice> after the deop")
