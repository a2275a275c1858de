"""A Matrix reaction on a server without message-tags: one short ACTION line, unless the
user said `!reactions off` in the admin room.

A real Synapse, the bridge under gunicorn and the IRC server IRCBRIDGE_TEST_IRCD names.
Where the server offers message-tags (Ergo, InspIRCd) reactions are TAGMSGs instead
(tests/e2e/test_ircv3_echo.py) and this module is skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.devstack.clients import RawIrcClient
from tests.e2e.test_admin import admin_room, ask
from tests.e2e.test_ircv3_caps import cap_ls
from tests.stacks import World, irc_world

CHANNEL = "#reacts"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World[RawIrcClient]]:
    with irc_world(Path(tmp_path_factory.mktemp("reacts")), CHANNEL) as w:
        with w.stack.irc_user("prober") as prober:
            if "message-tags" in cap_ls(prober):
                pytest.skip(f"{w.stack.ircd.kind} has message-tags: reactions are TAGMSGs "
                            "there (test_ircv3_echo.py)")
        yield w


def _react(w: World[RawIrcClient], event_id: str, key: str) -> None:
    w.alice.send_event(w.room, "m.reaction", {"m.relates_to": {
        "rel_type": "m.annotation", "event_id": event_id, "key": key}})


def test_a_reaction_is_one_short_line_and_can_be_turned_off(
        world: World[RawIrcClient]) -> None:
    w = world
    text = "a line worth a reaction, and then some more words"
    w.bob.privmsg(CHANNEL, text)
    event = w.alice.wait_for_message(
        w.room, lambda e: e.get("content", {}).get("body") == text, timeout=30)
    _react(w, event["event_id"], "👍")
    seen = w.bob.wait_for(lambda m: m.nick == "alice[m]" and m.action is not None, timeout=30)
    assert seen.action == 'reacted 👍 to "a line worth a reaction, and..."'

    admin = admin_room(w.alice)
    assert "tags only" in ask(w.alice, admin, "!reactions off", contains="reactions")
    start = w.bob.mark()
    _react(w, event["event_id"], "🎉")
    w.alice.send_text(w.room, "after the reaction")
    w.bob.wait_for(lambda m: m.command == "PRIVMSG" and m.text == "after the reaction",
                   timeout=30, start=start)
    said = [m.action for m in list(w.bob.history)[start:] if m.nick == "alice[m]"]
    assert not any(a and "🎉" in a for a in said)
