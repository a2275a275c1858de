"""The IRC side against the real daemon and Synapse: membership, topics, modes, nick changes,
private messages, replies, edits, mentions, delivery failures and reconnects."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from bridge.devstack.clients import RawIrcClient
from bridge.devstack.ports import wait_until
from tests.stacks import World as StackWorld
from tests.stacks import invited_room, irc_world

CHANNEL = "#bridged"

World = StackWorld[RawIrcClient]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with irc_world(tmp_path_factory.mktemp("irc"), CHANNEL, log_level="DEBUG") as w:
        yield w


def state(world: World, event_type: str, key: str = "") -> dict:
    """Room state, or {} while there is none yet."""
    from bridge.devstack.clients import MatrixError

    try:
        return world.alice.state(world.room, event_type, key)
    except MatrixError as e:
        if e.status == 404:
            return {}
        raise


def members(world: World) -> set[str]:
    return set(world.alice.joined_members(world.room))


def message(world: World, body: str, timeout: float = 20) -> dict:
    return world.alice.wait_for_message(
        world.room, lambda e: e.get("content", {}).get("body") == body, timeout=timeout)


def test_irc_joins_parts_and_nick_changes_move_virtual_users(world: World) -> None:
    carl = world.stack.irc_user("Carl")
    try:
        carl.join(CHANNEL)
        ghost = world.stack.ghost("Carl")
        wait_until(lambda: ghost in members(world), 20, what="Carl's ghost to join")
        carl.send("NICK Carlos")
        carl.wait_for(lambda m: m.command == "NICK")
        new = world.stack.ghost("Carlos")
        wait_until(lambda: new in members(world) and ghost not in members(world), 20,
                   what="the nick change")
        carl.part(CHANNEL, "bye")
        wait_until(lambda: new not in members(world), 20, what="Carlos to leave")
    finally:
        carl.close()


def test_an_irc_kick_removes_the_virtual_user(world: World) -> None:
    dan = world.stack.irc_user("Dan")
    try:
        dan.join(CHANNEL)
        ghost = world.stack.ghost("Dan")
        wait_until(lambda: ghost in members(world), 20, what="Dan's ghost")
        world.bob.send(f"KICK {CHANNEL} Dan :behave")
        wait_until(lambda: ghost not in members(world), 20, what="Dan's ghost to be kicked")
        state = world.alice.state(world.room, "m.room.member", ghost)
        assert state["membership"] == "leave"
        assert "behave" in state.get("reason", "")
    finally:
        dan.close()


def test_topics_cross_both_ways(world: World) -> None:
    world.bob.send(f"TOPIC {CHANNEL} :from IRC")
    wait_until(lambda: state(world, "m.room.topic").get("topic") == "from IRC",
               20, what="the topic in Matrix")
    # An IRC operator leads the room too: op for alice[m] gives Alice power in Matrix.
    world.bob.send(f"MODE {CHANNEL} +o alice[m]")
    wait_until(lambda: state(world, "m.room.power_levels").get("users", {})
               .get("@alice:localhost") == 50, 20, what="Alice's power level")
    world.bob.mark()
    world.alice.send_state(world.room, "m.room.topic", {"topic": "from Matrix"})
    msg = world.bob.wait_for(lambda m: m.command == "TOPIC" and m.nick == "alice[m]", timeout=20)
    assert msg.text == "from Matrix"
    world.bob.send(f"MODE {CHANNEL} -o alice[m]")
    wait_until(lambda: "@alice:localhost" not in state(world, "m.room.power_levels")
               .get("users", {}), 20, what="Alice's power level to drop")


def test_a_line_the_channel_refuses_is_reported_in_the_room(world: World) -> None:
    world.bob.send(f"MODE {CHANNEL} +m")
    try:
        world.alice.send_text(world.room, "can anyone hear me?")
        notice = world.alice.wait_for_message(
            world.room, lambda e: e.get("content", {}).get("msgtype") == "m.notice"
            and "not delivered" in e["content"]["body"], timeout=20)
        assert notice["sender"] == "@ircbot:localhost"
        assert "alice[m]" in notice["content"]["body"]
    finally:
        world.bob.send(f"MODE {CHANNEL} -m")


def test_operator_status_becomes_power_level(world: World) -> None:
    eve = world.stack.irc_user("Eve")
    try:
        eve.join(CHANNEL)
        ghost = world.stack.ghost("Eve")
        wait_until(lambda: ghost in members(world), 20, what="Eve's ghost")
        world.bob.send(f"MODE {CHANNEL} +o Eve")
        wait_until(lambda: state(world, "m.room.power_levels")
                   .get("users", {}).get(ghost) == 50, 20, what="Eve's power level")
        world.bob.send(f"MODE {CHANNEL} -o Eve")
        wait_until(lambda: ghost not in state(world, "m.room.power_levels")
                   .get("users", {}), 20, what="Eve's power level to drop")
    finally:
        eve.close()


def test_mentions_of_a_puppet_become_pills(world: World) -> None:
    world.bob.privmsg(CHANNEL, "alice[m]: are you there?")
    event = message(world, "alice[m]: are you there?")
    assert 'href="https://matrix.to/#/@alice:localhost"' in event["content"]["formatted_body"]


def test_replies_and_edits_read_naturally_on_irc(world: World) -> None:
    world.bob.privmsg(CHANNEL, "the sky is green")
    original = message(world, "the sky is green")
    world.bob.mark()
    world.alice.send_event(world.room, "m.room.message", {
        "msgtype": "m.text", "body": "> <@irc_local__bob:localhost> the sky is green\n\nno, blue",
        "m.relates_to": {"m.in_reply_to": {"event_id": original["event_id"]}},
    })
    msg = world.bob.wait_for_privmsg(lambda t: "no, blue" in t, timeout=20)
    assert msg.text == "Bob: no, blue"
    first = world.alice.send_text(world.room, "I like cats")
    world.bob.wait_for_privmsg("I like cats", timeout=20)
    world.alice.send_event(world.room, "m.room.message", {
        "msgtype": "m.text", "body": "* I like dogs",
        "m.new_content": {"msgtype": "m.text", "body": "I like dogs"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": first},
    })
    msg = world.bob.wait_for(lambda m: m.command == "PRIVMSG" and "dogs" in m.text, timeout=20)
    assert msg.text in ("s/cats/dogs/", "* I like dogs")


def test_replies_and_edits_never_reveal_another_rooms_message(world: World) -> None:
    """A crafted m.in_reply_to naming an event of a private conversation must not put any
    of it (nor whose it was) into a channel (the class of CVE-2024-32000)."""
    carol = world.stack.irc_user("Carol")
    mallory = world.stack.matrix_user("mallory")
    try:
        ghost = world.stack.ghost("Carol")
        pm = world.alice.create_room(preset="trusted_private_chat", invite=[ghost],
                                     is_direct=True)
        wait_until(lambda: ghost in world.alice.joined_members(pm), 20, what="Carol's ghost")
        secret = world.alice.send_text(pm, "the vault code is 4711")
        carol.wait_for_privmsg("the vault code is 4711", timeout=20)  # stored by now
        mallory.join(world.stack.alias(CHANNEL))
        wait_until(lambda: "mallory[m]" in world.bob.names(CHANNEL), 20, what="mallory's puppet")
        world.bob.mark()
        mallory.send_event(world.room, "m.room.message", {
            "msgtype": "m.text", "body": "guess what",
            "m.relates_to": {"m.in_reply_to": {"event_id": secret}},
        })
        msg = world.bob.wait_for_privmsg(lambda t: "guess what" in t, timeout=20)
        assert msg.text == "guess what"
        # Synapse refuses an m.replace across rooms ("Relations must be in the same room");
        # edits naming another room's event are covered in tests/unit/test_store.py.
    finally:
        carol.close()


def test_private_messages_both_ways(world: World) -> None:
    world.bob.privmsg("alice[m]", "psst, alice")
    room = wait_until(lambda: invited_room(world.alice), 20, what="a DM invite")
    world.alice.join(room)
    event = world.alice.wait_for_message(
        room, lambda e: e.get("content", {}).get("body") == "psst, alice", timeout=20)
    assert event["sender"] == world.stack.ghost("Bob")
    world.bob.mark()
    world.alice.send_text(room, "hello Bob, privately")
    msg = world.bob.wait_for_privmsg("hello Bob, privately", timeout=20)
    assert msg.target == "Bob" and msg.nick == "alice[m]"


def test_a_matrix_dm_with_a_virtual_user_reaches_the_nick(world: World) -> None:
    frank = world.stack.irc_user("Frank")
    try:
        ghost = world.stack.ghost("Frank")
        room = world.alice.create_room(preset="trusted_private_chat", invite=[ghost],
                                       is_direct=True)
        wait_until(lambda: ghost in world.alice.joined_members(room), 20, what="Frank's ghost")
        world.alice.send_text(room, "hi Frank")
        msg = frank.wait_for_privmsg("hi Frank", timeout=20)
        assert msg.nick == "alice[m]"
        frank.privmsg("alice[m]", "hi Alice")
        event = world.alice.wait_for_message(
            room, lambda e: e.get("content", {}).get("body") == "hi Alice", timeout=20)
        assert event["sender"] == ghost
    finally:
        frank.close()


def test_a_message_to_a_missing_nick_is_reported_not_dropped(world: World) -> None:
    ghost = world.stack.ghost("Nobody")
    room = world.alice.create_room(preset="trusted_private_chat", invite=[ghost],
                                   is_direct=True)
    wait_until(lambda: ghost in world.alice.joined_members(room), 20, what="the ghost")
    world.alice.send_text(room, "are you there?")
    notice = world.alice.wait_for_message(
        room, lambda e: e.get("content", {}).get("msgtype") == "m.notice", timeout=20)
    assert "not delivered" in notice["content"]["body"]


def test_a_matrix_leave_parts_the_puppet(world: World) -> None:
    grace = world.stack.matrix_user("grace")
    grace.join(world.room)
    wait_until(lambda: "grace[m]" in world.bob.names(CHANNEL), 20, what="grace's puppet")
    grace.leave(world.room)
    wait_until(lambda: "grace[m]" not in world.bob.names(CHANNEL), 20, what="grace to part")


def test_after_the_irc_daemon_restarts_everyone_is_back(world: World) -> None:
    world.bob.close()
    world.stack.ircd.restart()
    world.bob = world.stack.irc_user("Bob")
    world.bob.join(CHANNEL)
    wait_until(lambda: {"ircbot", "alice[m]"} <= world.bob.names(CHANNEL), 60, interval=0.5,
               what="the bot and alice's puppet to rejoin")
    world.bob.privmsg(CHANNEL, "welcome back")
    message(world, "welcome back", timeout=30)
    world.alice.send_text(world.room, "glad to be back")
    world.bob.wait_for_privmsg("glad to be back", timeout=30)


def test_flood_control_spaces_lines_with_a_token_bucket(monkeypatch: pytest.MonkeyPatch) -> None:
    from bridge.irc import connection

    now = [100.0]
    monkeypatch.setattr(connection.time, "monotonic", lambda: now[0])
    bucket = connection.TokenBucket(rate=2.0, burst=3)
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.5)
    now[0] += 0.5
    assert bucket.take() == 0.0
    assert connection.TokenBucket(rate=0, burst=1).take() == 0.0
    time.monotonic()  # the real clock is untouched outside the patch


def test_an_image_reaches_irc_as_a_link_that_serves_its_bytes(world: World) -> None:
    import requests

    data = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
    upload = requests.post(
        f"{world.stack.synapse.url}/_matrix/media/v3/upload", params={"filename": "cat.png"},
        headers={"Authorization": f"Bearer {world.alice.access_token}",
                 "Content-Type": "image/png"}, data=data, timeout=10).json()
    world.bob.mark()
    world.alice.send_event(world.room, "m.room.message", {
        "msgtype": "m.image", "body": "a cat", "filename": "cat.png",
        "url": upload["content_uri"], "info": {"mimetype": "image/png", "size": len(data)}})
    msg = world.bob.wait_for(lambda m: m.command == "PRIVMSG" and "a cat" in m.text, timeout=20)
    url = msg.text.split()[-1]
    assert url.startswith(world.stack.bridge.url + "/_ircbridge/media/")
    fetched = requests.get(url, timeout=10)
    assert fetched.status_code == 200
    assert fetched.content == data
    assert fetched.headers["Content-Type"] == "image/png"


def test_after_a_bridge_restart_matrix_users_are_back_on_irc(world: World) -> None:
    world.bob.mark()
    world.stack.bridge.stop()
    world.bob.wait_for(lambda m: m.command == "QUIT" and m.nick == "alice[m]", timeout=20)
    world.stack.bridge.start()
    wait_until(lambda: "alice[m]" in world.bob.names(CHANNEL), 30, interval=0.3,
               what="alice's puppet to come back without her doing anything")
    world.alice.send_text(world.room, "still here")
    world.bob.wait_for_privmsg("still here", timeout=20)
