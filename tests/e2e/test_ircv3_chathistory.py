"""CHATHISTORY backfill end to end: a new portal shows the channel's earlier lines from the
server's history (merged with what the bot heard, once each, in order, with the server's
times), and lines said while the bridge was stopped reach the room when it starts again.

A real Synapse, the bridge under gunicorn and the IRC server IRCBRIDGE_TEST_IRCD names
(bridge/devstack). Bob is a raw IRC client with server-time, message-tags and echo-message,
so the server tells him the time tag of each of his lines. He says 10 lines before the
bridge starts (only the server's history has them) and 10 once the bot is in the channel
(the bot keeps them as scrollback too). Skipped on servers without draft/chathistory (only
Ergo offers it among the test servers).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bridge.devstack.clients import MatrixClient, RawIrcClient
from bridge.devstack.ports import wait_until
from bridge.devstack.stack import Stack
from bridge.irc.events import parse_server_time
from tests.figures import record
from tests.stacks import running_stack

CHANNEL = "#history"
CAPS = "server-time message-tags echo-message"
NEEDS = ("draft/chathistory", "batch", "server-time")


class Run:
    stack: Stack
    bob: RawIrcClient
    alice: MatrixClient
    room_id: str = ""
    said: list[tuple[str, int]]  # (text, the server's time tag in ms), in order


def say(bob: RawIrcClient, text: str) -> tuple[str, int]:
    bob.privmsg(CHANNEL, text)
    echo = bob.wait_for_privmsg(text, target=CHANNEL, timeout=20)
    tag_ms = parse_server_time(echo.tags.get("time"))
    assert tag_ms is not None, echo.raw
    return text, tag_ms


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    from tests.e2e.test_ircv3_caps import cap_ls, request_caps

    r = Run()
    r.said = []
    clients: list[RawIrcClient] = []

    def offers_history(stack: Stack) -> None:
        stack.prepare()
        with stack.irc_user("prober") as prober:
            offered = cap_ls(prober)
        if any(cap not in offered for cap in NEEDS):
            pytest.skip(f"{stack.ircd.kind} offers no {' with '.join(NEEDS)}")

    def bob_talks_first(stack: Stack) -> None:
        bob = stack.irc_user("Bob")
        clients.append(bob)
        request_caps(bob, CAPS)
        bob.join(CHANNEL)
        r.said += [say(bob, f"before the bridge {i}") for i in range(10)]

    try:
        with running_stack(tmp_path_factory.mktemp("chathistory"),
                           before_start=offers_history, before_bridge=bob_talks_first,
                           channels=CHANNEL) as r.stack:
            r.bob = clients[0]
            yield r
    finally:
        for client in clients:
            client.close()


def bodies(events: list[dict[str, Any]]) -> list[str]:
    return [e["content"].get("body") for e in events if e.get("type") == "m.room.message"]


def messages(r: Run) -> list[dict[str, Any]]:
    return [e for e in r.alice.messages(r.room_id, limit=500)
            if e.get("type") == "m.room.message"]


def test_a_new_portal_shows_the_earlier_lines_once_each_in_order_with_their_times(
    run: Run,
) -> None:
    wait_until(lambda: "ircbot" in run.bob.names(CHANNEL), 30, what="the bot in the channel")
    run.said += [say(run.bob, f"heard by the bot {i}") for i in range(10)]
    run.alice = run.stack.matrix_user("alice")
    run.room_id = run.alice.join(run.stack.alias(CHANNEL))
    last = run.said[-1][0]
    run.alice.wait_for_message(run.room_id, lambda e: e["content"].get("body") == last,
                               timeout=30)
    shown = messages(run)
    assert bodies(shown) == [text for text, _ in run.said]  # each once, in order
    assert [e["origin_server_ts"] for e in shown] == [ts for _, ts in run.said]
    assert {e["sender"] for e in shown} == {run.stack.ghost("Bob")}


def test_lines_said_while_the_bridge_is_stopped_reach_the_room_after_it_starts(
    run: Run,
) -> None:
    assert run.room_id, "runs after the portal test"
    live = say(run.bob, "live before the stop")
    run.said.append(live)
    run.alice.wait_for_message(run.room_id, lambda e: e["content"].get("body") == live[0],
                               timeout=30)
    run.stack.bridge.stop()
    missed = [say(run.bob, f"while the bridge was down {i}") for i in range(5)]
    run.said += missed
    run.stack.bridge.start()
    run.alice.wait_for_message(run.room_id,
                               lambda e: e["content"].get("body") == missed[-1][0], timeout=60)
    shown = messages(run)
    assert bodies(shown) == [text for text, _ in run.said]  # none twice, none lost
    assert [e["origin_server_ts"] for e in shown[-5:]] == [ts for _, ts in missed]
    record(f"CHATHISTORY catch-up across a bridge restart on {run.stack.ircd.kind}",
           f"{len(missed)}/{len(missed)} lines said while stopped reached the room, none twice")
