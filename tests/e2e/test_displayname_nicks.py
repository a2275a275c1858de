"""puppet_nick_template = {displayname}: a Matrix user's display name is their IRC nick."""

from __future__ import annotations

from pathlib import Path

from bridge.devstack.ports import wait_until
from tests.stacks import running_stack


def test_a_new_display_name_becomes_a_new_nick(tmp_path: Path) -> None:
    with running_stack(tmp_path, channels="#names",
                       puppet_nick_template="{displayname}|m") as stack:
        bob = stack.irc_user("Bob")
        bob.join("#names")
        alice = stack.matrix_user("alice")
        alice.request("PUT", "/_matrix/client/v3/profile/@alice:localhost/displayname",
                      json={"displayname": "Alice Liddell"})
        room = alice.join(stack.alias("#names"))
        wait_until(lambda: "Alice_Liddell|m" in bob.names("#names"), 20,
                   what="the puppet named after the display name")
        alice.request("PUT", "/_matrix/client/v3/profile/@alice:localhost/displayname",
                      json={"displayname": "Wonder"})
        msg = bob.wait_for(lambda m: m.command == "NICK", timeout=20)
        assert (msg.nick, msg.target) == ("Alice_Liddell|m", "Wonder|m")
        alice.send_text(room, "new name")
        assert bob.wait_for_privmsg("new name", timeout=20).nick == "Wonder|m"
