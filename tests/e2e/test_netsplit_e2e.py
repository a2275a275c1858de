"""A real netsplit: two linked ngircd servers, the bridge on the hub, the leaf killed.

Users behind the lost server QUIT with the two servers' names as the reason. Their virtual
users stay while they may come back, and leave after `netsplit_leave_after` if they do not.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from bridge.devstack.ircd import IrcDaemon, ServerPeer, ngircd_path
from bridge.devstack.ports import wait_until
from bridge.devstack.stack import Stack
from tests.stacks import running_stack

CHANNEL = "#split"

pytestmark = pytest.mark.skipif(ngircd_path() is None,
                                reason="linked servers need ngircd (apt-get install ngircd)")


def test_a_netsplit_quit_leaves_only_after_the_delay_and_not_if_they_return(
        tmp_path: Path) -> None:
    password = secrets.token_hex(8)
    leaf: IrcDaemon | None = None
    users = []

    def hub_of_a_leaf(stack: Stack) -> None:
        stack.ircd.peers = (ServerPeer("irc2.localhost", password),)

    with running_stack(tmp_path / "stack", before_start=hub_of_a_leaf, channels=CHANNEL,
                       ircd_kind="ngircd", network_extra="netsplit_leave_after = 5") as stack:
        try:
            leaf = IrcDaemon(tmp_path / "leaf", server_name="irc2.localhost", kind="ngircd",
                             peers=(ServerPeer(stack.ircd.server_name, password, stack.ircd.port),))
            leaf.start()
            alice = stack.matrix_user("alice")
            room = alice.join(stack.alias(CHANNEL))
            gina, hugo = leaf.client("Gina"), leaf.client("Hugo")
            users += [gina, hugo]
            ghosts = {stack.ghost("Gina"), stack.ghost("Hugo")}

            def joined() -> set[str]:
                return set(alice.joined_members(room))

            # The leaf links to the hub by itself: join until the bridge sees them there.
            def both_in() -> bool:
                for user in (gina, hugo):
                    user.send(f"JOIN {CHANNEL}")
                return ghosts <= joined()

            wait_until(both_in, 60, interval=1.0, what="the leaf's users in the room")
            leaf.kill()  # the netsplit: the hub QUITs everyone behind irc2.localhost
            gina_again = stack.irc_user("Gina")  # Gina comes back at once, through the hub
            users.append(gina_again)
            gina_again.join(CHANNEL)
            wait_until(lambda: stack.ghost("Hugo") not in joined(), 30,
                       what="Hugo's ghost to leave after the delay")
            assert stack.ghost("Gina") in joined()
            left = [e for e in alice.messages(room, 100) if e.get("type") == "m.room.member"
                    and e.get("state_key") == stack.ghost("Gina")
                    and e["content"].get("membership") == "leave"]
            assert not left, "Gina came back in time: her ghost must not have left"
        finally:
            for user in users:
                user.close()
            if leaf is not None:
                leaf.stop()
