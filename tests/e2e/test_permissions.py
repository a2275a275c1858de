"""[permissions] before every action of a Matrix user, and the portal-room limits.

The stack's [permissions] lists its users one by one and has no `*` line, so `mallory`-like
users are outside it (a federated user is refused by the same rule: only the id's server
part differs); the network allows 2 new portal rooms per user per hour. Each refusal test
uses a user of its own, because a refused user is told why only once. Negative checks wait on
a later event of an allowed user instead of a clock: the bridge handles events in order.
The limits themselves are also checked on `bridge.core.access.Access` with a clock of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask

from bridge import create_app
from bridge.config.ini import load
from bridge.core.access import HOUR, Access, PortalLimited
from bridge.devstack.clients import MatrixClient, MatrixError
from bridge.devstack.ports import wait_until
from bridge.devstack.stack import Stack
from bridge.web.context import bridge_of
from tests.conftest import close_app, write_config
from tests.stacks import replace_in_config, running_stack, user

BOT = "@ircbot:localhost"
ALLOWED = ("alice", "carol", "dave", "erin")
TIMEOUT = 30
HS = "hs-token-for-tests-9876543210"


# ------------------------------------------------------------------ the limits (no stack)
def limited(folder: Path, per_hour: int, per_user: int) -> tuple[Access, list[float]]:
    now = [1000.0]
    config = load(write_config(folder, extra_network=f"portals_per_hour = {per_hour}\n"
                                                     f"portals_per_user_per_hour = {per_user}"))
    return Access(config, clock=lambda: now[0]), now


def test_portals_are_limited_per_user_and_per_network(tmp_path: Path) -> None:
    access, now = limited(tmp_path, per_hour=3, per_user=2)
    access.take_portal("local", "@a:x")
    access.take_portal("local", "@a:x")
    with pytest.raises(PortalLimited, match="per user"):
        access.take_portal("local", "@a:x")
    access.take_portal("local", "@b:x")
    with pytest.raises(PortalLimited, match="local got 3 new rooms"):
        access.take_portal("local", "@c:x")
    with pytest.raises(PortalLimited, match="local got 3"):
        access.take_portal("local", None)  # an alias query counts on the network only
    now[0] += HOUR  # an hour later the window is empty again
    access.take_portal("local", "@a:x")
    access.take_portal("local", None)
    access.take_portal("local", None)
    with pytest.raises(PortalLimited):
        access.take_portal("local", None)


def test_zero_means_no_new_portal_rooms(tmp_path: Path) -> None:
    access, _ = limited(tmp_path, per_hour=0, per_user=10)
    with pytest.raises(PortalLimited):
        access.take_portal("local", None)


@pytest.fixture
def closed_app(tmp_path: Path) -> Iterator[Flask]:
    """A bare app (no homeserver behind it) whose [permissions] have no `*` line."""
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace("[permissions]\n* = user",
                                             "[permissions]\n@alice:localhost = user"))
    app = create_app(config=load(path), start_background=False, setup_logging=False)
    yield app
    close_app(app)


def test_an_alias_query_names_nobody_so_without_a_star_line_it_is_404(closed_app: Flask) -> None:
    r = closed_app.test_client().get("/_matrix/app/v1/rooms/%23irc_local_%23staff:localhost",
                                     headers={"Authorization": f"Bearer {HS}"})
    assert r.status_code == 404, r.data
    assert r.json["errcode"] == "M_NOT_FOUND"
    assert bridge_of(closed_app).store.all_links() == []


# ------------------------------------------------------------------ the stack
@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    def prepare(s: Stack) -> None:
        people = "".join(f"@{u}:localhost = user\n" for u in ALLOWED)
        replace_in_config(s, "[permissions]\n* = user\n", f"[permissions]\n{people}")

    with running_stack(tmp_path_factory.mktemp("permissions"), before_bridge=prepare,
                       channels="#matrix",
                       network_extra="portals_per_user_per_hour = 2\nportals_per_hour = 100"
                       ) as stack:
        yield stack


def membership(client: MatrixClient, room: str, user_id: str) -> dict:
    try:
        return client.state(room, "m.room.member", user_id)
    except MatrixError:
        return {}


def bot_notices(client: MatrixClient, room: str) -> list[str]:
    return [e["content"].get("body", "") for e in client.messages(room, limit=200)
            if e["sender"] == BOT and e["type"] == "m.room.message"]


def wait_notice(client: MatrixClient, room: str, check: Callable[[str], bool]) -> str:
    def find() -> str | None:
        return next((b for b in bot_notices(client, room) if check(b)), None)

    return wait_until(find, TIMEOUT, 0.1, what="a notice from the bot")


def admin_room(client: MatrixClient) -> str:
    room = client.create_room(invite=[BOT], is_direct=True, preset="trusted_private_chat")
    wait_notice(client, room, lambda b: "admin room" in b)
    return room


def ask(client: MatrixClient, room: str, text: str, contains: str) -> str:
    client.send_text(room, text)
    return wait_notice(client, room, lambda b: contains in b)


def puppets(stack: Stack) -> dict[str, str]:
    return stack.bridge.health()["networks"]["local"]["puppets"]


def test_a_refused_user_inviting_a_virtual_user_gets_no_private_chat(stack: Stack) -> None:
    mallory, alice = user(stack, "mallory"), user(stack, "alice")
    ghost = "@irc_local_bob:localhost"
    room = mallory.create_room(invite=[ghost], is_direct=True, preset="trusted_private_chat")
    declined = wait_until(lambda: (m := membership(mallory, room, ghost)).get("membership")
                          in ("leave", "join") and m, TIMEOUT, 0.1, what="the virtual user")
    assert declined["membership"] == "leave", "the virtual user joined a refused user's room"
    assert "not allowed to use this bridge" in declined.get("reason", "")
    # Told once: a second invite gets nothing at all.
    again = mallory.create_room(invite=[ghost], is_direct=True, preset="trusted_private_chat")
    # An allowed user's invite comes after it, and is answered: the second one was handled.
    mine = alice.create_room(invite=[ghost], is_direct=True, preset="trusted_private_chat")
    wait_until(lambda: membership(alice, mine, ghost).get("membership") == "join", TIMEOUT,
               0.1, what="the virtual user to join alice's private chat")
    assert membership(mallory, again, ghost).get("membership") == "invite"
    connected = wait_until(lambda: "@alice:localhost" in (p := puppets(stack)) and p, TIMEOUT,
                           0.1, what="alice's IRC connection")
    assert "@mallory:localhost" not in connected


def test_a_refused_user_cannot_make_the_bot_join_an_admin_room(stack: Stack) -> None:
    trudy, carol = user(stack, "trudy"), user(stack, "carol")
    room = trudy.create_room(invite=[BOT], is_direct=True, preset="trusted_private_chat")
    answered = wait_until(lambda: (m := membership(trudy, room, BOT)).get("membership")
                          in ("leave", "join") and m, TIMEOUT, 0.1, what="the bot's answer")
    assert answered["membership"] == "leave", "the bot joined a refused user's room"
    assert "not allowed to use this bridge" in answered.get("reason", "")
    again = trudy.create_room(invite=[BOT], is_direct=True, preset="trusted_private_chat")
    admin_room(carol)  # handled after trudy's second invite
    assert membership(trudy, again, BOT).get("membership") == "invite"
    assert "@trudy:localhost" not in puppets(stack)


def test_a_refused_user_in_a_bridged_room_is_told_once_and_not_relayed(stack: Stack) -> None:
    dave, oscar = user(stack, "dave"), user(stack, "oscar")
    listener = stack.irc_user("listener")
    try:
        listener.join("#toldonce")
        room_of_dave = admin_room(dave)
        ask(dave, room_of_dave, "!join #toldonce", "invited you")
        portal = dave.resolve_alias(stack.alias("#toldonce"))
        dave.join(portal)
        oscar.join(portal)
        oscar.send_text(portal, "oscar one")
        oscar.send_text(portal, "oscar two")
        dave.send_text(portal, "dave after oscar")
        listener.wait_for_privmsg("dave after oscar", target="#toldonce", timeout=TIMEOUT)
        said = [m.text for m in listener.messages("PRIVMSG")]
        assert not any(t.startswith("oscar") for t in said), said
        told = [b for b in bot_notices(dave, portal) if "@oscar:localhost" in b]
        assert len(told) == 1, told
        assert "not allowed to use this bridge" in told[0]
        assert "@oscar:localhost" not in puppets(stack)
    finally:
        listener.close()


def test_alias_queries_make_no_room_without_a_star_line(stack: Stack) -> None:
    for name in ("mallet", "erin"):  # refused or allowed: the query names nobody
        with pytest.raises(MatrixError) as e:
            user(stack, name).join(stack.alias("#noalias"))
        assert e.value.status == 404
    with pytest.raises(MatrixError):
        user(stack, "erin").resolve_alias(stack.alias("#noalias"))


def test_portal_rooms_from_join_are_limited_per_user(stack: Stack) -> None:
    erin = user(stack, "erin")
    room = admin_room(erin)
    for channel in ("#lim1", "#lim2"):
        ask(erin, room, f"!join {channel}", f"Joined {channel}")
        assert erin.resolve_alias(stack.alias(channel))
    refused = ask(erin, room, "!join #lim3", "Joined #lim3")
    assert "no room for it now" in refused and "per user" in refused
    with pytest.raises(MatrixError):
        erin.resolve_alias(stack.alias("#lim3"))
