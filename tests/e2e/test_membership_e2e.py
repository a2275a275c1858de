"""Membership against the real ngircd and Synapse: who is in a room after a restart, kicks
of the bot and of puppets, private rooms that were left, and the bridge's own echoes."""

from __future__ import annotations

import configparser
from collections.abc import Iterator

import pytest
import requests

from bridge.devstack.clients import MatrixError, RawIrcClient
from bridge.devstack.ports import wait_until
from tests.stacks import World as StackWorld
from tests.stacks import invited_room, irc_world

CHANNEL = "#members"
ALICE = "@alice:localhost"

World = StackWorld[RawIrcClient]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with irc_world(tmp_path_factory.mktemp("members"), CHANNEL, log_level="DEBUG",
                   ircd_kind="ngircd",
                   network_extra="kick_rejoin_after = 1\nnetsplit_leave_after = 1") as w:
        yield w


def members(world: World, room: str | None = None) -> set[str]:
    return set(world.alice.joined_members(room or world.room))


def marker(world: World, text: str) -> None:
    """Bob says `text` and it reaches the room: every earlier IRC line was handled."""
    world.bob.privmsg(CHANNEL, text)
    world.alice.wait_for_text(world.room, text)


def registered(world: World, user_id: str) -> bool:
    try:
        world.alice.profile(user_id)
        return True
    except MatrixError as e:
        if e.status == 404:
            return False
        raise


def notices(world: World, room: str | None = None) -> list[str]:
    return [e["content"].get("body", "") for e in world.alice.messages(room or world.room, 50)
            if e.get("type") == "m.room.message"
            and e.get("content", {}).get("msgtype") == "m.notice"]


def test_the_bridges_own_topic_and_kick_echoes_make_no_virtual_user(world: World) -> None:
    phantom = world.stack.ghost("alice[m]")
    world.bob.send(f"MODE {CHANNEL} +o alice[m]")
    wait_until(lambda: world.alice.state(world.room, "m.room.power_levels")
               .get("users", {}).get(ALICE) == 50, 20, what="Alice's power level")
    world.bob.mark()
    world.alice.send_state(world.room, "m.room.topic", {"topic": "set in Matrix"})
    world.bob.wait_for(lambda m: m.command == "TOPIC" and m.nick == "alice[m]", timeout=20)
    # Alice kicks an IRC user's ghost: her puppet kicks him on IRC, the echo comes back.
    ivan = world.stack.irc_user("Ivan")
    try:
        ivan.join(CHANNEL)
        ghost = world.stack.ghost("Ivan")
        wait_until(lambda: ghost in members(world), 20, what="Ivan's ghost")
        world.bob.mark()
        world.alice.request("POST", f"/_matrix/client/v3/rooms/{world.room}/kick",
                            json={"user_id": ghost, "reason": "spam"})
        world.bob.wait_for(lambda m: m.command == "KICK" and m.nick == "alice[m]", timeout=20)
    finally:
        ivan.close()
    marker(world, "after the echoes")
    assert phantom not in members(world)
    assert not registered(world, phantom), "a virtual user was made for our own puppet"
    topics = [e for e in world.alice.messages(world.room, 100)
              if e.get("type") == "m.room.topic" and e["content"].get("topic") == "set in Matrix"]
    assert len(topics) == 1, topics
    world.bob.send(f"MODE {CHANNEL} -o alice[m]")


def test_a_kicked_puppet_is_told_and_rejoins_once(world: World) -> None:
    world.bob.send(f"KICK {CHANNEL} alice[m] :calm down")
    wait_until(lambda: any("kicked" in n and "calm down" in n for n in notices(world)), 20,
               what="a notice of the kick")
    wait_until(lambda: "alice[m]" in world.bob.names(CHANNEL), 20, interval=0.3,
               what="the puppet to rejoin")
    assert ALICE in members(world), "the Matrix user must stay in the room"
    # Kicked again right after the rejoin: no loop, it stays out until she speaks again.
    world.bob.send(f"KICK {CHANNEL} alice[m] :out")
    wait_until(lambda: any("not rejoin" in n for n in notices(world)), 20,
               what="a notice that it does not rejoin again")
    marker(world, "after the second kick")
    assert "alice[m]" not in world.bob.names(CHANNEL)
    assert ALICE in members(world)
    world.alice.send_text(world.room, "I am back")
    world.bob.wait_for_privmsg("I am back", timeout=20)


def test_a_kicked_bot_reports_and_rejoins_with_backoff(world: World) -> None:
    health = world.stack.bridge.health
    world.bob.send(f"MODE {CHANNEL} +b ircbot!*@*")
    world.bob.send(f"KICK {CHANNEL} ircbot :no bots")
    wait_until(lambda: any("kicked" in n and "no bots" in n for n in notices(world)), 20,
               what="the bot's notice of its kick")
    wait_until(lambda: CHANNEL in (health()["networks"]["local"].get("kicked") or {}), 20,
               what="the kick in /health")
    kicked = health()["networks"]["local"]["kicked"][CHANNEL]
    assert kicked["by"] == "Bob"
    page = requests.get(world.stack.bridge.url + "/", timeout=10, headers={
        "Authorization": f"Bearer {world.stack.bridge.status_secret}"})
    assert f"kicked from {CHANNEL} by Bob" in page.text
    wait_until(lambda: health()["networks"]["local"]["kicked"][CHANNEL].get("attempts", 0) >= 2,
               20, interval=0.3, what="rejoin attempts while banned")
    world.bob.send(f"MODE {CHANNEL} -b ircbot!*@*")
    wait_until(lambda: "ircbot" in world.bob.names(CHANNEL), 30, interval=0.3,
               what="the bot to rejoin")
    wait_until(lambda: CHANNEL not in (health()["networks"]["local"].get("kicked") or {}), 20,
               what="the status to clear")
    marker(world, "bot is back")


def test_a_private_room_left_by_the_matrix_user_is_not_reused(world: World) -> None:
    world.bob.privmsg("alice[m]", "first PM")
    first = wait_until(lambda: invited_room(world.alice, set()), 20, what="a PM invite")
    world.alice.join(first)
    world.alice.wait_for_text(first, "first PM")
    world.alice.leave(first)
    ghost = world.stack.ghost("Bob")
    as_token = configparser.ConfigParser(interpolation=None)
    as_token.read(world.stack.config_path)

    def ghost_left() -> bool:  # asked as the ghost: 403 once it is no longer in the room
        return requests.get(
            f"{world.stack.synapse.url}/_matrix/client/v3/rooms/{first}/joined_members",
            params={"user_id": ghost}, timeout=5, headers={
                "Authorization": f"Bearer {as_token['appservice']['as_token']}"},
        ).status_code == 403

    wait_until(ghost_left, 20, what="the virtual user to leave the ended room")
    world.bob.privmsg("alice[m]", "second PM")
    second = wait_until(lambda: invited_room(world.alice, {first}), 20,
                        what="a new PM invite")
    assert second != first
    world.alice.join(second)
    world.alice.wait_for_text(second, "second PM")


def test_ghosts_leave_after_a_bridge_restart(world: World) -> None:
    users = {nick: world.stack.irc_user(nick) for nick in ("Carl", "Dora", "Emil", "Finn", "Gus")}
    try:
        for user in users.values():
            user.join(CHANNEL)
        ghosts = {nick: world.stack.ghost(nick) for nick in users}
        wait_until(lambda: set(ghosts.values()) <= members(world), 30, what="the ghosts")
        world.stack.bridge.stop()
        users["Gus"].quit("left while the bridge was away")  # nobody saw it go
        world.stack.bridge.start()
        wait_until(lambda: "ircbot" in world.bob.names(CHANNEL), 30, interval=0.3,
                   what="the bot back in the channel")
        marker(world, "restarted")
        users["Carl"].part(CHANNEL, "bye")
        users["Dora"].quit("gone")
        users["Emil"].send("NICK Emilio")
        world.bob.send(f"KICK {CHANNEL} Finn :out")
        renamed = world.stack.ghost("Emilio")
        wait_until(lambda: not (set(ghosts.values()) & members(world))
                   and renamed in members(world), 30, what="every ghost to leave after the restart")
    finally:
        for user in users.values():
            user.close()
