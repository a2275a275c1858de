"""draft/multiline end to end: a multi-line Matrix message reaches IRC as one multiline
BATCH (no paste link, no line limit), and a multiline batch from IRC is one Matrix message.

A real Synapse, the bridge under gunicorn and the IRC server IRCBRIDGE_TEST_IRCD names. Bob
is a raw IRC client with batch and draft/multiline. Skipped on servers that do not offer
draft/multiline (ngircd, hybrid, InspIRCd 3; Ergo does).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bridge.devstack.clients import IrcMessage, MatrixClient, RawIrcClient
from bridge.devstack.ports import wait_until
from bridge.devstack.stack import Stack
from bridge.rules.ids import EventId
from bridge.store.models import Store
from tests.stacks import ircv3_stack

CHANNEL = "#multiline"


class Run:
    stack: Stack
    bob: RawIrcClient
    alice: MatrixClient
    room_id: str


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    r = Run()
    with ircv3_stack(tmp_path_factory.mktemp("multiline"), CHANNEL,
                     "batch draft/multiline message-tags echo-message",
                     needs="draft/multiline batch") as (r.stack, r.bob):
        r.alice = r.stack.matrix_user("alice")
        r.room_id = r.alice.join(r.stack.alias(CHANNEL))
        wait_until(lambda: "ircbot" in r.bob.names(CHANNEL), 30, what="the bot in the channel")
        yield r


def test_a_ten_line_matrix_message_is_one_multiline_batch(run: Run) -> None:
    lines = [f"multiline {i} of ten" for i in range(10)]
    start = run.bob.mark()
    event_id = run.alice.send_text(run.room_id, "\n".join(lines))

    def opened(m: IrcMessage) -> bool:
        return m.command == "BATCH" and len(m.params) >= 3 and m.params[0].startswith("+") \
            and m.params[1] == "draft/multiline" and m.params[2].lower() == CHANNEL
    batch = run.bob.wait_for(opened, timeout=30, start=start)
    ref = batch.params[0][1:]
    run.bob.wait_for(lambda m: m.command == "BATCH" and m.params[:1] == [f"-{ref}"],
                     timeout=30, start=start)
    inside = [m for m in run.bob.messages("PRIVMSG") if m.tags.get("batch") == ref]
    assert [m.text for m in inside] == lines
    assert {m.nick for m in inside} == {batch.nick}  # one sender: Alice's puppet
    assert not [m for m in run.bob.messages("PRIVMSG")
                if "full message:" in m.text]  # no paste link
    msgid = batch.tags.get("msgid")
    if msgid:  # the echo of the whole batch (one message) names it: stored beside the event
        store = Store(run.stack.database_url, run.stack.appservice_id)
        try:
            network = run.stack.network_name
            found = wait_until(lambda: store.msgid_of_event(network, EventId(event_id)), 20,
                               what="the batch's msgid stored beside Alice's event")
            assert found == msgid
        finally:
            store.close()


def test_a_multiline_batch_from_irc_is_one_matrix_message(run: Run) -> None:
    start = run.bob.mark()
    run.bob.send(f"BATCH +b1 draft/multiline {CHANNEL}")
    run.bob.send(f"@batch=b1 PRIVMSG {CHANNEL} :first line")
    run.bob.send(f"@batch=b1;draft/multiline-concat PRIVMSG {CHANNEL} : continued")
    run.bob.send(f"@batch=b1 PRIVMSG {CHANNEL} :second line")
    run.bob.send("BATCH -b1")
    run.bob.privmsg(CHANNEL, "after the batch")
    after = run.alice.wait_for_message(
        run.room_id, lambda e: e.get("content", {}).get("body") == "after the batch",
        timeout=30)
    assert after
    bodies = [e["content"].get("body") for e in run.alice.messages(run.room_id)
              if e.get("type") == "m.room.message"]
    assert "first line continued\nsecond line" in bodies
    assert "first line" not in bodies and "second line" not in bodies
    # The echo of Bob's batch names its msgid on the BATCH line: stored beside the event.
    echo = run.bob.wait_for(lambda m: m.command == "BATCH" and m.params[:1] != []
                            and m.params[0].startswith("+") and m.nick == "Bob", timeout=10,
                            start=start)
    msgid = echo.tags.get("msgid")
    if not msgid:
        return  # a server that puts no msgid on the batch
    event = next(e for e in run.alice.messages(run.room_id)
                 if e.get("content", {}).get("body") == "first line continued\nsecond line")
    store = Store(run.stack.database_url, run.stack.appservice_id)
    try:
        found = wait_until(lambda: store.event_of_msgid(run.stack.network_name, msgid), 10,
                           what="the batch's msgid stored beside the event")
        assert found == (run.room_id, event["event_id"])
    finally:
        store.close()
