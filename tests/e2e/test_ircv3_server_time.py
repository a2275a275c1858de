"""server-time end to end: a line said on IRC reaches Matrix with the server's time as its
origin_server_ts, to the millisecond, both when it was kept as scrollback and when it is
relayed live.

A real Synapse, the bridge under gunicorn and the IRC server IRCBRIDGE_TEST_IRCD names
(bridge/devstack). Bob is a raw IRC client that asks for server-time and echo-message, so
the server tells him the `time` tag it put on his own line (the same time every receiver
of that line gets). Skipped on servers without server-time (ngircd, hybrid), saying so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bridge.devstack.clients import MatrixClient, RawIrcClient
from bridge.devstack.ports import wait_until
from bridge.devstack.stack import Stack
from bridge.irc.events import parse_server_time
from tests.figures import record
from tests.stacks import ircv3_stack

CHANNEL = "#servertime"


class Run:
    stack: Stack
    bob: RawIrcClient
    alice: MatrixClient
    room_id: str = ""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    r = Run()
    with ircv3_stack(tmp_path_factory.mktemp("servertime"), CHANNEL,
                     "server-time echo-message", needs="server-time") as (r.stack, r.bob):
        yield r


def body_is(text: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("type") == "m.room.message" and e["content"].get("body") == text


def say(r: Run, text: str) -> int:
    """Bob says `text` in the channel; the ms of the `time` tag the server gave it."""
    r.bob.privmsg(CHANNEL, text)
    echo = r.bob.wait_for_privmsg(text, target=CHANNEL, timeout=20)
    tag_ms = parse_server_time(echo.tags.get("time"))
    assert tag_ms is not None, echo.raw
    return tag_ms


def test_scrollback_keeps_the_servers_time(run: Run) -> None:
    wait_until(lambda: "ircbot" in run.bob.names(CHANNEL), 30, what="the bot in the channel")
    tagged = [say(run, f"before anyone came {i}") for i in range(2)]
    run.alice = run.stack.matrix_user("alice")
    run.room_id = run.alice.join(run.stack.alias(CHANNEL))
    for i, tag_ms in enumerate(tagged):
        event = run.alice.wait_for_message(run.room_id, body_is(f"before anyone came {i}"),
                                           timeout=30)
        assert event["origin_server_ts"] == tag_ms, (event["origin_server_ts"], tag_ms)


def test_a_live_line_has_the_servers_time_as_origin_server_ts(run: Run) -> None:
    assert run.room_id, "runs after the scrollback test"
    for i in range(3):
        text = f"live with a time tag {i}"
        tag_ms = say(run, text)
        event = run.alice.wait_for_message(run.room_id, body_is(text), timeout=30)
        assert event["sender"] == run.stack.ghost("Bob")
        assert event["origin_server_ts"] == tag_ms, (event["origin_server_ts"], tag_ms)
    record(f"IRC time tag == Matrix origin_server_ts on {run.stack.ircd.kind}",
           "yes (2 scrollback + 3 live lines, to the ms)")
