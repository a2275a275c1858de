"""A Matrix message that cannot reach IRC in time is reported to its sender, not dropped."""

from __future__ import annotations

from pathlib import Path

from bridge.devstack.ports import wait_until
from tests.stacks import running_stack


def test_a_message_waiting_for_a_dead_irc_server_is_reported(tmp_path: Path) -> None:
    with running_stack(tmp_path, channels="#down",
                       network_extra="give_up_after = 2") as stack:
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
