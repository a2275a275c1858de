"""IRC msgids beside Matrix event ids: a line relayed from IRC is stored with the msgid the
server gave it, so replies, reactions and a CHATHISTORY catch-up can find it later.

A real Synapse, the bridge under gunicorn and the IRC server IRCBRIDGE_TEST_IRCD names.
Bob is a raw IRC client with message-tags and echo-message: the echo of his own line tells
him the msgid every receiver got. Skipped on servers that give no msgids (ngircd, hybrid).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bridge.devstack.clients import MatrixClient, RawIrcClient
from bridge.devstack.ports import wait_until
from bridge.devstack.stack import Stack
from bridge.store.models import Store
from tests.stacks import ircv3_stack

CHANNEL = "#msgids"


class Run:
    stack: Stack
    bob: RawIrcClient
    alice: MatrixClient


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    r = Run()
    with ircv3_stack(tmp_path_factory.mktemp("msgid"), CHANNEL,
                     "message-tags echo-message") as (r.stack, r.bob):
        yield r


def test_a_relayed_line_is_stored_with_its_msgid(run: Run) -> None:
    run.alice = run.stack.matrix_user("alice")
    room_id = run.alice.join(run.stack.alias(CHANNEL))
    wait_until(lambda: "ircbot" in run.bob.names(CHANNEL), 30, what="the bot in the channel")
    text = "a line with an id"
    run.bob.privmsg(CHANNEL, text)
    msgid = run.bob.wait_for_privmsg(text, target=CHANNEL, timeout=20).tags.get("msgid")
    if not msgid:
        pytest.skip(f"{run.stack.ircd.kind} gives its lines no msgid tag")
    event = run.alice.wait_for_message(
        room_id, lambda e: e.get("content", {}).get("body") == text, timeout=30)
    store = Store(run.stack.database_url, run.stack.appservice_id)
    try:
        found = wait_until(lambda: store.event_of_msgid(run.stack.network_name, msgid), 10,
                           what="the msgid stored beside the event")
        assert found == (room_id, event["event_id"])
        assert store.msgid_of_event(run.stack.network_name, event["event_id"]) == msgid
    finally:
        store.close()
