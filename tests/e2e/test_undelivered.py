"""A Matrix message that cannot reach IRC in time is reported to its sender, not dropped."""

from __future__ import annotations

import os
from pathlib import Path

from bridge.devstack.ports import wait_until
from bridge.devstack.stack import Stack
from tests.conftest import TEST_DB_ENV, clean_database


def test_a_message_waiting_for_a_dead_irc_server_is_reported(tmp_path: Path) -> None:
    url = os.environ.get(TEST_DB_ENV)
    if url:
        clean_database(url)
    stack = Stack(tmp_path, database_url=url, channels="#down", network_extra="give_up_after = 2")
    stack.start()
    try:
        alice = stack.matrix_user("alice")
        room = alice.join(stack.alias("#down"))
        bob = stack.irc_user("Bob")
        bob.join("#down")
        wait_until(lambda: "alice[m]" in bob.names("#down"), 20, what="alice's puppet")
        bob.close()
        stack.ircd.stop()
        alice.send_text(room, "into the void")
        notice = alice.wait_for_message(
            room, lambda e: e.get("content", {}).get("msgtype") == "m.notice", timeout=30)
        assert notice["sender"] == "@ircbot:localhost"
        assert "alice[m]: not delivered to #down" in notice["content"]["body"]
        assert "no IRC connection for 2 s" in notice["content"]["body"]
    finally:
        stack.stop()
