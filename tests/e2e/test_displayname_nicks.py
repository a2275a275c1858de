"""puppet_nick_template = {displayname}: a Matrix user's display name is their IRC nick."""

from __future__ import annotations

import os
from pathlib import Path

from bridge.devstack.ports import wait_until
from bridge.devstack.stack import Stack
from tests.conftest import TEST_DB_ENV, clean_database


def test_a_new_display_name_becomes_a_new_nick(tmp_path: Path) -> None:
    url = os.environ.get(TEST_DB_ENV)
    if url:
        clean_database(url)
    stack = Stack(tmp_path, database_url=url, channels="#names",
                  puppet_nick_template="{displayname}|m")
    stack.start()
    try:
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
    finally:
        stack.stop()
