"""Private stays private, and modes mean what the server says they mean: keyed, invite-only
and secret channels against the real ngircd and Synapse, linked rooms whose modes are not
the bridge's to rewrite, and ISUPPORT (PREFIX, CHANMODES, CASEMAPPING) driving the parsing.

ngircd advertises `CASEMAPPING=ascii PREFIX=(qaohv)~&@%+ CHANMODES=beI,k,l,imMnOPQRstVz`, so
a bridge that assumes RFC 1459 folding and a fixed "bklov" gets it wrong here for real.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from bridge.devstack.clients import MatrixClient, MatrixError, RawIrcClient
from bridge.devstack.ports import wait_until
from bridge.devstack.stack import Stack
from tests.stacks import replace_in_config, running_stack, user

BOT = "@ircbot:localhost"
SECRET = "prov-" + secrets.token_hex(16)
TIMEOUT = 30
PREFIX = "/_ircbridge/provisioning/v1"

pytestmark = pytest.mark.skipif(
    os.environ.get("IRCBRIDGE_IRCD", "ngircd") != "ngircd", reason="needs ngircd's modes")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    def prepare(s: Stack) -> None:
        replace_in_config(s, "[permissions]\n* = user\n",
                          "[permissions]\n@admin:localhost = admin\n* = user\n\n"
                          f"[provisioning]\nsecret = {SECRET}\n")

    with running_stack(tmp_path_factory.mktemp("private"), before_bridge=prepare,
                       channels="#matrix", ircd_kind="ngircd") as stack:
        yield stack


def op_of(stack: Stack, nick: str, channel: str) -> RawIrcClient:
    """An IRC user who opened `channel`, so its operator."""
    client = stack.irc_user(nick)
    client.join(channel)
    return client


def mode(op: RawIrcClient, channel: str, change: str) -> None:
    op.mark()
    op.send(f"MODE {channel} {change}")
    op.wait_for(lambda m: m.command == "MODE" and m.params[:1] == [channel], TIMEOUT)


def state(client: MatrixClient, room: str, event_type: str, key: str = "") -> dict[str, Any]:
    try:
        return client.state(room, event_type, key)
    except MatrixError as e:
        if e.status == 404:
            return {}
        raise


def levels(client: MatrixClient, room: str) -> dict[str, int]:
    return dict(state(client, room, "m.room.power_levels").get("users") or {})


def listed(client: MatrixClient, room: str) -> bool:
    found = client.request("POST", "/_matrix/client/v3/publicRooms",
                           json={"third_party_instance_id": "ircbridge|local", "limit": 100})
    return any(r.get("room_id") == room for r in found.get("chunk", []))


def cannot_join(client: MatrixClient, room_or_alias: str) -> bool:
    try:
        client.join(room_or_alias)
    except MatrixError as e:
        return e.status in (403, 404)
    return False


def bot_says(client: MatrixClient, room: str, check: Callable[[str], bool],
             after: str | None = None) -> str:
    def find() -> str | None:
        events = client.messages(room, limit=200)
        ids = [e["event_id"] for e in events]
        if after is not None:
            events = events[ids.index(after) + 1:] if after in ids else []
        return next((e["content"].get("body", "") for e in events
                     if e["sender"] == BOT and e["type"] == "m.room.message"
                     and check(e["content"].get("body", ""))), None)

    return wait_until(find, TIMEOUT, 0.1, what="a notice from the bot")


def admin_room(client: MatrixClient) -> str:
    room = client.create_room(invite=[BOT], is_direct=True, preset="trusted_private_chat")
    bot_says(client, room, lambda body: True)
    return room


def ask(client: MatrixClient, room: str, text: str, contains: str) -> str:
    event_id = client.send_text(room, text)
    return bot_says(client, room, lambda body: contains in body, event_id)


def room_in(reply: str) -> str:
    """The room (id or alias) the bot named in a `!join` reply."""
    found = re.findall(r"[!#][^\s]+:localhost|![A-Za-z0-9._~-]+", reply)
    assert found, reply
    return found[-1].rstrip(".")


def bodies(client: MatrixClient, room: str) -> list[str]:
    return [e["content"].get("body", "") for e in client.messages(room, limit=200)
            if e["type"] == "m.room.message"]


def sync_point(op: RawIrcClient, client: MatrixClient, room: str, channel: str,
               topic: str) -> None:
    """Everything IRC said before this TOPIC has reached the room once the topic has."""
    op.send(f"TOPIC {channel} :{topic}")
    wait_until(lambda: state(client, room, "m.room.topic").get("topic") == topic, TIMEOUT,
               what=f"topic {topic!r} in the room")


# ------------------------------------------------------------------ issue 11 item 1
def test_a_keyed_channel_has_no_portal_for_outsiders(stack: Stack) -> None:
    op = op_of(stack, "Keeper", "#staff")
    try:
        mode(op, "#staff", "+k sesame")
        mallory = user(stack, "mallory")
        assert cannot_join(mallory, stack.alias("#staff")), \
            "an outsider got a room for a keyed channel through its alias"
    finally:
        op.quit()


def test_a_puppet_in_a_keyed_channel_gets_an_invite_only_unlisted_room(stack: Stack) -> None:
    op = op_of(stack, "Staffop", "#staffroom")
    try:
        mode(op, "#staffroom", "+k sesame")
        alice = user(stack, "alice")
        reply = ask(alice, admin_room(alice), "!join #staffroom sesame", "Joined #staffroom")
        op.wait_for(lambda m: m.command == "JOIN" and m.nick == "alice[m]", TIMEOUT)
        room = alice.join(room_in(reply))
        assert state(alice, room, "m.room.join_rules")["join_rule"] == "invite"
        assert state(alice, room, "m.room.history_visibility")["history_visibility"] == "joined"
        assert not listed(alice, room)
        # The bot cannot join without the key: alice's puppet reads the channel, and what it
        # reads goes only to a room that nobody outside the channel can join.
        op.privmsg("#staffroom", "staff only")
        alice.wait_for_text(room, "staff only", timeout=TIMEOUT)
        mallory = user(stack, "mallory")
        assert cannot_join(mallory, room)
        assert cannot_join(mallory, stack.alias("#staffroom"))
    finally:
        op.quit()


def test_scrollback_of_a_private_channel_is_never_replayed(stack: Stack) -> None:
    op = op_of(stack, "Vaulter", "#vault")
    try:
        mode(op, "#vault", "+k sesame")
        admin = user(stack, "admin")
        room_cmd = admin_room(admin)
        ask(admin, room_cmd, "!cmd JOIN #vault sesame", "Sent JOIN")
        op.wait_for(lambda m: m.command == "JOIN" and m.nick == "admin[m]", TIMEOUT)
        op.privmsg("#vault", "said before any room")  # only admin[m] hears it
        mallory = user(stack, "mallory")
        assert cannot_join(mallory, stack.alias("#vault")), \
            "an outsider got the room (and its scrollback) of a keyed channel"
        reply = ask(admin, room_cmd, "!join #vault sesame", "Joined #vault")
        room = admin.join(room_in(reply))
        op.privmsg("#vault", "said after the room")
        admin.wait_for_text(room, "said after the room", timeout=TIMEOUT)
        assert "said before any room" not in bodies(admin, room)
    finally:
        op.quit()


def test_a_channel_turning_secret_is_unlisted_and_made_invite_only(stack: Stack) -> None:
    op = op_of(stack, "Laterop", "#later")
    try:
        carol = user(stack, "carol")
        room = carol.join(stack.alias("#later"))
        wait_until(lambda: listed(carol, room), TIMEOUT, 0.2, what="the portal listed")
        mode(op, "#later", "+s")
        wait_until(lambda: state(carol, room, "m.room.join_rules").get("join_rule") == "invite",
                   TIMEOUT, what="the room made invite-only")
        bot_says(carol, room, lambda body: "secret" in body or "private" in body)
        assert state(carol, room, "m.room.history_visibility")["history_visibility"] == "joined"
        wait_until(lambda: not listed(carol, room), TIMEOUT, 0.2, what="the portal unlisted")
        assert cannot_join(user(stack, "mallory"), room)
        assert cannot_join(user(stack, "mallory"), stack.alias("#later")), "the alias still leads"
    finally:
        op.quit()


# ------------------------------------------------------------------ issue 12 items 15, 16
def test_prefix_modes_from_isupport_give_power_to_the_right_user(stack: Stack) -> None:
    op = op_of(stack, "Prefixop", "#prefix")
    dan, eve = stack.irc_user("Dan"), stack.irc_user("Eve")
    try:
        alice = user(stack, "alice")
        room = alice.join(stack.alias("#prefix"))
        dan.join("#prefix")
        eve.join("#prefix")
        ghost_dan, ghost_eve = stack.ghost("Dan"), stack.ghost("Eve")
        wait_until(lambda: {ghost_dan, ghost_eve} <= set(alice.joined_members(room)), TIMEOUT,
                   what="Dan's and Eve's ghosts")
        # CHANMODES=beI,...: +e takes an argument here, so Eve is the one made operator.
        mode(op, "#prefix", "+eo Dan!*@* Eve")
        wait_until(lambda: levels(alice, room).get(ghost_eve) == 50, TIMEOUT,
                   what="Eve's power level")
        assert levels(alice, room).get(ghost_dan, 0) != 50, "Dan got Eve's op"
        mode(op, "#prefix", "+v Eve")
        mode(op, "#prefix", "-o Eve")
        sync_point(op, alice, room, "#prefix", "after -o")
        assert levels(alice, room).get(ghost_eve) == 1, "-o dropped Eve's +v too"
    finally:
        for client in (op, dan, eve):
            client.quit()


def test_the_join_rule_follows_the_whole_mode_set(stack: Stack) -> None:
    op = op_of(stack, "Ruleop", "#rules")
    try:
        alice = user(stack, "alice")
        room = alice.join(stack.alias("#rules"))
        mode(op, "#rules", "+i")
        mode(op, "#rules", "+k sesame")
        wait_until(lambda: state(alice, room, "m.room.join_rules").get("join_rule") == "invite",
                   TIMEOUT, what="invite-only")
        mode(op, "#rules", "-k sesame")
        sync_point(op, alice, room, "#rules", "after -k")
        assert state(alice, room, "m.room.join_rules")["join_rule"] == "invite", \
            "-k made the room public while +i still holds"
    finally:
        op.quit()


def test_casemapping_from_isupport_tells_nicks_apart(stack: Stack) -> None:
    op = op_of(stack, "Caseop", "#cases")
    alice = user(stack, "alice")
    room = alice.join(stack.alias("#cases"))
    wait_until(lambda: "alice[m]" in op.names("#cases"), TIMEOUT, what="alice's puppet")
    # With CASEMAPPING=ascii, alice{m} is not alice[m]: another person entirely.
    curly = RawIrcClient().connect("127.0.0.1", stack.ircd.port, "alice{m}", username="curly")
    try:
        curly.join("#cases")
        curly.privmsg("#cases", "curly hello")
        event = alice.wait_for_text(room, "curly hello", timeout=TIMEOUT)
        assert event["sender"] == stack.ghost("alice{m}")
    finally:
        curly.quit()
        op.quit()


# ------------------------------------------------------------------ issue 11 item 2
def api_link(stack: Stack, body: dict[str, Any]) -> requests.Response:
    return requests.post(stack.bridge.url + PREFIX + "/link", json=body,
                         headers={"Authorization": f"Bearer {SECRET}"}, timeout=60)


def plumbed_room(stack: Stack, owner: MatrixClient, channel: str,
                 extra_users: dict[str, int] | None = None,
                 **options: Any) -> str:
    room = owner.create_room(preset="private_chat", name=f"plumbed {channel}", invite=[BOT])
    power = state(owner, room, "m.room.power_levels")
    # The room's admins let the bot manage it: whatever it leaves alone is its own choice.
    power["users"] = {**power.get("users", {}), BOT: 100, **(extra_users or {})}
    owner.send_state(room, "m.room.power_levels", power)
    response = api_link(stack, {"room_id": room, "network": "local", "channel": channel,
                                "user_id": owner.user_id, **options})
    assert response.status_code == 200, response.text
    return room


def test_a_linked_room_does_not_mirror_modes_by_default(stack: Stack) -> None:
    op = op_of(stack, "Plumbop", "#plumbed")
    fay = stack.irc_user("Fay")
    try:
        owner = user(stack, "plumber")
        room = plumbed_room(stack, owner, "#plumbed")
        wait_until(lambda: "ircbot" in op.names("#plumbed"), TIMEOUT, what="the bot in #plumbed")
        fay.join("#plumbed")
        wait_until(lambda: stack.ghost("Fay") in owner.joined_members(room), TIMEOUT,
                   what="Fay's ghost")
        mode(op, "#plumbed", "+o Fay")
        mode(op, "#plumbed", "+i")
        mode(op, "#plumbed", "-i")
        sync_point(op, owner, room, "#plumbed", "after the modes")
        assert state(owner, room, "m.room.join_rules")["join_rule"] == "invite", \
            "IRC made a linked room public"
        assert stack.ghost("Fay") not in levels(owner, room)
    finally:
        fay.quit()
        op.quit()


def test_a_linked_room_that_mirrors_modes_is_never_lowered_nor_made_public(
        stack: Stack) -> None:
    op = op_of(stack, "Mirrorop", "#mirrored")
    gus, hal = stack.irc_user("Gus"), stack.irc_user("Hal")
    try:
        owner = user(stack, "mirrorer")
        gus_ghost, hal_ghost = stack.ghost("Gus"), stack.ghost("Hal")
        room = plumbed_room(stack, owner, "#mirrored", {gus_ghost: 75}, mirror_modes=True)
        wait_until(lambda: "ircbot" in op.names("#mirrored"), TIMEOUT, what="the bot")
        gus.join("#mirrored")
        hal.join("#mirrored")
        wait_until(lambda: {gus_ghost, hal_ghost} <= set(owner.joined_members(room)), TIMEOUT,
                   what="the ghosts")
        mode(op, "#mirrored", "+oo Gus Hal")
        wait_until(lambda: levels(owner, room).get(hal_ghost) == 50, TIMEOUT,
                   what="Hal's op mirrored")
        mode(op, "#mirrored", "-oo Gus Hal")
        wait_until(lambda: hal_ghost not in levels(owner, room), TIMEOUT,
                   what="Hal's op (set by the bridge) removed")
        assert levels(owner, room).get(gus_ghost) == 75, "the bridge lowered a Matrix level"
        mode(op, "#mirrored", "+i")
        mode(op, "#mirrored", "-i")
        sync_point(op, owner, room, "#mirrored", "after +i -i")
        assert state(owner, room, "m.room.join_rules")["join_rule"] == "invite"
    finally:
        for client in (op, gus, hal):
            client.quit()


def test_a_member_whose_puppet_joins_later_is_invited(stack: Stack) -> None:
    op = op_of(stack, "Lateop", "#latejoin")
    try:
        alice, admin = user(stack, "alice"), user(stack, "admin")
        for who in (alice, admin):  # both have an IRC connection, to be invited on IRC
            who.join(stack.alias("#matrix"))
        wait_until(lambda: {"alice[m]", "admin[m]"} <= op.names("#matrix"), TIMEOUT,
                   what="the puppets")
        mode(op, "#latejoin", "+i")
        op.send("INVITE alice[m] #latejoin")
        reply = ask(alice, admin_room(alice), "!join #latejoin", "Joined #latejoin")
        room = alice.join(room_in(reply))
        assert state(alice, room, "m.room.join_rules")["join_rule"] == "invite"
        # The admin's puppet joins by a raw command: no !join, yet an invitation follows.
        op.send("INVITE admin[m] #latejoin")
        ask(admin, admin_room(admin), "!cmd JOIN #latejoin", "Sent JOIN")
        wait_until(lambda: state(alice, room, "m.room.member", admin.user_id)
                   .get("membership") == "invite", TIMEOUT, what="the admin's invitation")
    finally:
        op.quit()


_SYNCS = iter(range(1, 10_000))


def _invites(client: MatrixClient) -> set[str]:
    sync = client.request("GET", "/_matrix/client/v3/sync", params={
        "timeout": "0", "filter": json.dumps({"room": {"timeline": {"limit": next(_SYNCS)}}})})
    return set(sync.get("rooms", {}).get("invite", {}))


def test_private_messages_from_nicks_the_casemapping_tells_apart_stay_apart(
        stack: Stack) -> None:
    op = op_of(stack, "Pmop", "#pmcase")
    pammy = user(stack, "pammy")
    pammy.join(stack.alias("#pmcase"))
    wait_until(lambda: "pammy[m]" in op.names("#pmcase"), TIMEOUT, what="pammy's puppet")
    square = RawIrcClient().connect("127.0.0.1", stack.ircd.port, "pm[a]", username="square")
    curly = RawIrcClient().connect("127.0.0.1", stack.ircd.port, "pm{a}", username="curly")
    try:
        square.privmsg("pammy[m]", "from square")
        first = wait_until(lambda: _invites(pammy), TIMEOUT, what="the first DM invite")
        for room in first:
            pammy.join(room)
        pammy.wait_for_text(next(iter(first)), "from square", timeout=TIMEOUT)
        curly.privmsg("pammy[m]", "from curly")
        second = wait_until(lambda: _invites(pammy) - first, TIMEOUT,
                            what="a second DM invite: pm{a} is not pm[a] on this server")
        room = pammy.join(next(iter(second)))
        event = pammy.wait_for_text(room, "from curly", timeout=TIMEOUT)
        assert event["sender"] == stack.ghost("pm{a}")
    finally:
        square.quit()
        curly.quit()
        op.quit()


def test_a_puppet_never_relays_a_channel_the_bot_cannot_join_into_a_linked_room(
        stack: Stack) -> None:
    from bridge.store.models import OutboxMessage, Store

    op = op_of(stack, "Pkop", "#plumbkey")
    try:
        mode(op, "#plumbkey", "+k sesame")
        owner = user(stack, "keyplumber")
        room = owner.create_room(preset="public_chat", name="anyone may join")
        owner.invite(room, BOT)
        power = state(owner, room, "m.room.power_levels")
        power["users"] = {**power.get("users", {}), BOT: 100}
        owner.send_state(room, "m.room.power_levels", power)
        response = api_link(stack, {"room_id": room, "network": "local", "channel": "#plumbkey",
                                    "user_id": owner.user_id})
        assert response.status_code == 200, response.text
        bot_says(owner, room, lambda body: "cannot join #plumbkey" in body)
        ask(owner, admin_room(owner), "!join #plumbkey sesame", "Joined #plumbkey")
        op.wait_for(lambda m: m.command == "JOIN" and m.nick == "keyplumber[m]", TIMEOUT)
        op.privmsg("#plumbkey", "keyed line")
        # The recorder stores lines in the order IRC said them: once this later private
        # message is in its room, the channel line would have been stored before it.
        op.privmsg("keyplumber[m]", "after the keyed line")
        dm = wait_until(lambda: _invites(owner), TIMEOUT, what="the DM invite")
        dm_room = owner.join(next(iter(dm)))
        owner.wait_for_text(dm_room, "after the keyed line", timeout=TIMEOUT)
        store = Store(stack.database_url)
        try:
            assert OutboxMessage.select().where(OutboxMessage.body == "keyed line").count() == 0
        finally:
            store.close()
        assert "keyed line" not in bodies(owner, room)
    finally:
        op.quit()


def test_the_command_line_links_with_mirror_modes(stack: Stack) -> None:
    import subprocess
    import sys

    op = op_of(stack, "Cliop", "#climirror")
    ivy = stack.irc_user("Ivy")
    try:
        owner = user(stack, "cliowner")
        room = owner.create_room(preset="private_chat", name="cli", invite=[BOT])
        power = state(owner, room, "m.room.power_levels")
        power["users"] = {**power.get("users", {}), BOT: 100}
        owner.send_state(room, "m.room.power_levels", power)
        out = subprocess.run(
            [sys.executable, "-m", "bridge", "-c", str(stack.config_path), "link", "--network",
             "local", "--channel", "#climirror", "--room", room, "--mirror-modes"],
            capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and "(live)" in out.stdout, out.stderr
        wait_until(lambda: "ircbot" in op.names("#climirror"), TIMEOUT, what="the bot")
        ivy.join("#climirror")
        ghost = stack.ghost("Ivy")
        wait_until(lambda: ghost in owner.joined_members(room), TIMEOUT, what="Ivy's ghost")
        mode(op, "#climirror", "+o Ivy")
        wait_until(lambda: levels(owner, room).get(ghost) == 50, TIMEOUT, what="Ivy's op")
    finally:
        ivy.quit()
        op.quit()


def test_a_level_follows_the_prefixes_left_even_those_set_before_the_bridge_came(
        stack: Stack) -> None:
    op = op_of(stack, "Multiop", "#multi")
    jay = stack.irc_user("Jay")
    try:
        jay.join("#multi")
        mode(op, "#multi", "+ov Jay Jay")  # before the bridge is there: NAMES shows @Jay
        alice = user(stack, "alice")
        room = alice.join(stack.alias("#multi"))
        ghost = stack.ghost("Jay")  # the room was made after the bot had the channel's NAMES
        mode(op, "#multi", "-o Jay")
        wait_until(lambda: levels(alice, room).get(ghost) == 1, TIMEOUT,
                   what="Jay's +v (hidden under @ in NAMES) as his level")
    finally:
        jay.quit()
        op.quit()


def test_channels_the_casemapping_tells_apart_get_their_own_portals(stack: Stack) -> None:
    """CASEMAPPING=ascii: `#a[b` and `#a{b` are two channels, so two rooms whose lines
    never cross, either way."""
    square, curly = "#case[x", "#case{x"
    op = op_of(stack, "Squareop", square)
    op.join(curly)
    announced = [p for m in op.history if m.command == "005" for p in m.params]
    assert "CASEMAPPING=ascii" in announced, announced
    carol = user(stack, "carol")
    try:
        square_room = carol.join(stack.alias(square))
        curly_room = carol.join(stack.alias(curly))
        assert square_room != curly_room, "two channels share one portal"
        for channel in (square, curly):
            wait_until(lambda c=channel: "carol[m]" in op.names(c), TIMEOUT,
                       what=f"carol's puppet in {channel}")
        op.privmsg(square, "said in square")
        op.privmsg(curly, "said in curly")
        carol.wait_for_text(square_room, "said in square", timeout=TIMEOUT)
        carol.wait_for_text(curly_room, "said in curly", timeout=TIMEOUT)
        carol.send_text(square_room, "from the square room")
        carol.send_text(curly_room, "from the curly room")
        got = {op.wait_for_privmsg("from the square room", timeout=TIMEOUT).target,
               op.wait_for_privmsg("from the curly room", timeout=TIMEOUT).target}
        sync_point(op, carol, square_room, square, "square done")
        sync_point(op, carol, curly_room, curly, "curly done")

        def bodies(room: str) -> list[str]:
            return [e["content"].get("body") for e in carol.messages(room, limit=50)
                    if e.get("type") == "m.room.message"]

        assert "said in curly" not in bodies(square_room)
        assert "said in square" not in bodies(curly_room)
        assert got == {square, curly}
    finally:
        op.quit()


def test_a_link_stored_under_rfc1459_folding_is_found_on_an_ascii_network(
        stack: Stack) -> None:
    """A row an older version stored (key `#legacy{x` for `#Legacy[x`) is re-keyed from the
    channel name once the network says CASEMAPPING=ascii: `#Legacy[x` keeps its room, and
    `#legacy{x`, another channel here, gets a room of its own."""
    from bridge.store.models import RoomLink, open_database

    square, curly = "#Legacy[x", "#legacy{x"
    op = op_of(stack, "Legacyop", square)
    op.join(curly)
    dana = user(stack, "dana")
    try:
        room = dana.join(stack.alias(square))
        wait_until(lambda: "dana[m]" in op.names(square), TIMEOUT, what="dana's puppet")
        stack.bridge.stop()
        db = open_database(stack.database_url)
        with db.connection_context(), db.bind_ctx([RoomLink]):
            assert RoomLink.update(channel="#legacy{x").where(
                RoomLink.room_id == room).execute() == 1
        db.close()
        stack.bridge.proc = None
        stack.bridge.start()
        op.privmsg(square, "square after the restart")
        dana.wait_for_text(room, "square after the restart", timeout=TIMEOUT)
        other = dana.join(stack.alias(curly))
        assert other != room, "the old rfc1459 key still took the other channel"
        op.privmsg(curly, "curly after the restart")
        dana.wait_for_text(other, "curly after the restart", timeout=TIMEOUT)
        sync_point(op, dana, room, square, "legacy done")
        bodies = [e["content"].get("body") for e in dana.messages(room, limit=50)
                  if e.get("type") == "m.room.message"]
        assert "curly after the restart" not in bodies
    finally:
        op.quit()
