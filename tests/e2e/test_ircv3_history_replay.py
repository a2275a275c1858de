"""A server's own history replay on JOIN (InspIRCd's chanhistory in a +H channel, sent as a
`chathistory` batch): before the channel has a room it is scrollback (the new portal shows
the lines said before the bot came); after a bridge restart it is a catch-up: the lines
said while the bridge was stopped reach the room, and the replay's older lines are not
shown again.

A real Synapse, the bridge under gunicorn, InspIRCd 3 (bridge/devstack loads chanhistory;
a channel replays only with +H). Bob, a raw IRC client, is first in the channel (so an
operator) and sets +H. Skipped on the other servers: ngircd and hybrid keep no history,
and Ergo replays nothing on JOIN (it answers CHATHISTORY: test_ircv3_chathistory.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bridge.devstack.clients import MatrixClient, RawIrcClient
from bridge.devstack.ports import wait_until
from bridge.devstack.stack import Stack
from tests.stacks import running_stack

CHANNEL = "#replay"


class Run:
    stack: Stack
    bob: RawIrcClient


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    from tests.e2e.test_ircv3_caps import request_caps

    r = Run()
    clients: list[RawIrcClient] = []

    def inspircd_only(stack: Stack) -> None:
        if stack.ircd.kind != "inspircd":
            pytest.skip(f"{stack.ircd.kind} replays no channel history on JOIN")

    def bob_keeps_history(stack: Stack) -> None:
        bob = stack.irc_user("Bob")
        clients.append(bob)
        request_caps(bob, "server-time message-tags echo-message")
        bob.join(CHANNEL)
        bob.send(f"MODE {CHANNEL} +H 100:1d")
        bob.wait_for(lambda m: m.command == "MODE" and "+H" in m.params, timeout=10)
        for i in range(3):
            bob.privmsg(CHANNEL, f"before the bridge {i}")
        bob.wait_for_privmsg("before the bridge 2", target=CHANNEL, timeout=10)

    try:
        with running_stack(tmp_path_factory.mktemp("replay"), before_start=inspircd_only,
                           before_bridge=bob_keeps_history, channels=CHANNEL) as r.stack:
            r.bob = clients[0]
            yield r
    finally:
        for client in clients:
            client.close()


def bodies(alice: MatrixClient, room_id: str) -> list[str]:
    events: list[dict[str, Any]] = alice.messages(room_id, limit=200)
    return [e["content"].get("body") for e in events if e.get("type") == "m.room.message"]


def test_lines_said_while_the_bridge_is_stopped_come_from_the_replay_once(run: Run) -> None:
    wait_until(lambda: "ircbot" in run.bob.names(CHANNEL), 30, what="the bot in the channel")
    alice = run.stack.matrix_user("alice")
    room_id = alice.join(run.stack.alias(CHANNEL))
    run.bob.privmsg(CHANNEL, "live before the stop")
    alice.wait_for_text(room_id, "live before the stop", timeout=30)
    run.stack.bridge.stop()
    missed = [f"while the bridge was down {i}" for i in range(3)]
    for text in missed:
        run.bob.privmsg(CHANNEL, text)
    run.bob.wait_for_privmsg(missed[-1], target=CHANNEL, timeout=10)
    run.stack.bridge.start()
    alice.wait_for_text(room_id, missed[-1], timeout=60)
    # The first replay (the bot's JOIN at the first start, no room yet) became scrollback
    # the portal showed; the second brought the missed lines, and nothing twice.
    before = [f"before the bridge {i}" for i in range(3)]
    assert bodies(alice, room_id) == [*before, "live before the stop", *missed]
