"""echo-message, msgids and replies/reactions over tags, on a real IRC server.

A real Synapse, the bridge under gunicorn and the IRC server IRCBRIDGE_TEST_IRCD names
(Ergo and InspIRCd offer message-tags and echo-message; elsewhere the module is skipped).
Bob is a raw IRC client with message-tags and echo-message, the channel's operator (he
made it before the bridge came).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bridge.devstack.clients import MatrixClient, RawIrcClient
from bridge.devstack.ports import wait_until
from bridge.devstack.stack import Stack
from bridge.store.models import FAILED, InboxEvent, Store
from tests.stacks import ircv3_stack

CHANNEL = "#echoes"
PUPPET = "alice[m]"


class Run:
    stack: Stack
    bob: RawIrcClient
    alice: MatrixClient
    room: str
    store: Store


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    r = Run()
    with ircv3_stack(tmp_path_factory.mktemp("echo"), CHANNEL,
                     "message-tags echo-message") as (r.stack, r.bob):
        r.alice = r.stack.matrix_user("alice")
        r.room = r.alice.join(r.stack.alias(CHANNEL))
        wait_until(lambda: "ircbot" in r.bob.names(CHANNEL), 30, what="the bot in the channel")
        r.store = Store(r.stack.database_url, r.stack.appservice_id)
        try:
            yield r
        finally:
            r.store.close()


def _bob_says(run: Run, text: str) -> tuple[str, dict[str, Any]]:
    """Bob's line: its msgid (from his echo) and its Matrix event."""
    run.bob.privmsg(CHANNEL, text)
    msgid = run.bob.wait_for_privmsg(text, target=CHANNEL, timeout=20).tags.get("msgid")
    if not msgid:
        pytest.skip(f"{run.stack.ircd.kind} gives its lines no msgid tag")
    event = run.alice.wait_for_message(
        run.room, lambda e: e.get("content", {}).get("body") == text, timeout=30)
    return msgid, event


def test_a_matrix_reply_carries_the_msgid_and_its_own_msgid_is_stored(run: Run) -> None:
    msgid, event = _bob_says(run, "first words of bob")
    wait_until(lambda: run.store.msgid_of_event(run.stack.network_name, event["event_id"]),
               10, what="Bob's msgid stored")
    reply_id = run.alice.send_event(run.room, "m.room.message", {
        "msgtype": "m.text", "body": "> <Bob> first words of bob\n\nalice answers",
        "m.relates_to": {"m.in_reply_to": {"event_id": event["event_id"]}}})
    seen = run.bob.wait_for(lambda m: m.command == "PRIVMSG" and "alice answers" in m.text
                            and m.nick == PUPPET, timeout=30)
    assert seen.tags.get("+draft/reply") == msgid
    assert seen.text.startswith("Bob")  # the readable form too
    # the echo's msgid (the one Bob got) is stored beside alice's event
    assert seen.tags.get("msgid")
    found = wait_until(lambda: run.store.event_of_msgid(run.stack.network_name,
                                                         seen.tags["msgid"]), 20,
                       what="alice's msgid stored from her puppet's echo")
    assert found == (run.room, reply_id)


def test_a_line_the_channel_refuses_is_not_delivered(run: Run) -> None:
    wait_until(lambda: PUPPET in run.bob.names(CHANNEL), 20, what="alice's puppet")
    run.bob.send(f"MODE {CHANNEL} +m")
    run.bob.wait_for(lambda m: m.command == "MODE" and "+m" in m.params, timeout=10)
    try:
        event_id = run.alice.send_text(run.room, "a muted line")
        notice = run.alice.wait_for_message(
            run.room, lambda e: e.get("content", {}).get("msgtype") == "m.notice"
            and "a muted line" not in e["content"]["body"]
            and "not delivered" in e["content"]["body"], timeout=30)
        assert f"{PUPPET}: not delivered to {CHANNEL}" in notice["content"]["body"]

        def state() -> int | None:
            row = InboxEvent.get_or_none((InboxEvent.bridge_id == run.store.bridge_id)
                                         & (InboxEvent.event_id == event_id))
            return int(row.state) if row is not None and row.state else None

        # the bytes left, but the server refused the line: its row is failed, not done
        assert wait_until(state, 20, what="the row's outcome") == FAILED
    finally:
        run.bob.send(f"MODE {CHANNEL} -m")


def test_an_irc_reply_becomes_a_matrix_reply_to_the_right_event(run: Run) -> None:
    event_id = run.alice.send_text(run.room, "alice asks something")
    seen = run.bob.wait_for(lambda m: m.command == "PRIVMSG" and m.text == "alice asks something",
                            timeout=30)
    msgid = seen.tags["msgid"]
    wait_until(lambda: run.store.event_of_msgid(run.stack.network_name, msgid), 20,
               what="alice's msgid stored")
    run.bob.send(f"@+draft/reply={msgid} PRIVMSG {CHANNEL} :alice[m]: bob answers")
    reply = run.alice.wait_for_message(
        run.room, lambda e: "bob answers" in e.get("content", {}).get("body", ""), timeout=30)
    assert reply["content"]["m.relates_to"] == {"m.in_reply_to": {"event_id": event_id}}


def test_a_matrix_reaction_reaches_irc_as_a_tagmsg(run: Run) -> None:
    msgid, event = _bob_says(run, "react to this")
    wait_until(lambda: run.store.msgid_of_event(run.stack.network_name, event["event_id"]),
               10, what="Bob's msgid stored")
    run.alice.send_event(run.room, "m.reaction", {"m.relates_to": {
        "rel_type": "m.annotation", "event_id": event["event_id"], "key": "👍"}})
    seen = run.bob.wait_for(lambda m: m.command == "TAGMSG" and m.nick == PUPPET, timeout=30)
    assert seen.tags.get("+draft/react") == "👍"
    assert seen.tags.get("+draft/reply") == msgid


def test_an_irc_reaction_becomes_an_m_reaction_of_the_virtual_user(run: Run) -> None:
    event_id = run.alice.send_text(run.room, "react to alice")
    seen = run.bob.wait_for(lambda m: m.command == "PRIVMSG" and m.text == "react to alice",
                            timeout=30)
    msgid = seen.tags["msgid"]
    wait_until(lambda: run.store.event_of_msgid(run.stack.network_name, msgid), 20,
               what="alice's msgid stored")
    run.bob.send(f"@+draft/react=🎉;+draft/reply={msgid} TAGMSG {CHANNEL}")

    def reaction() -> dict[str, Any] | None:
        for event in run.alice.messages(run.room, limit=20):
            if event.get("type") == "m.reaction" and event.get("content", {}).get(
                    "m.relates_to", {}).get("key") == "🎉":
                return event
        return None

    found = wait_until(reaction, 30, what="the m.reaction in the room")
    assert found["sender"] == run.stack.ghost("Bob")
    assert found["content"]["m.relates_to"] == {
        "rel_type": "m.annotation", "event_id": event_id, "key": "🎉"}
