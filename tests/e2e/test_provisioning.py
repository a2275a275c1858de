"""The provisioning API (/_ircbridge/provisioning/v1/) and `ircbridge link/unlink/links`,
against the real Synapse and IRC daemon of one devstack. Its off switch is in
tests/http/test_provisioning_off.py, the power check in tests/unit/test_power_check.py."""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from bridge.devstack.clients import MatrixClient, RawIrcClient
from bridge.devstack.ports import wait_until
from bridge.devstack.stack import Stack
from tests.conftest import write_config
from tests.stacks import add_to_config, running_stack, user

BOT = "@ircbot:localhost"
PREFIX = "/_ircbridge/provisioning/v1"
SECRET = "prov-" + secrets.token_hex(16)
TIMEOUT = 30


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    def prepare(s: Stack) -> None:
        add_to_config(s, f"\n[provisioning]\nsecret = {SECRET}\n")

    with running_stack(tmp_path_factory.mktemp("provisioning"), before_bridge=prepare,
                       channels="#matrix") as stack:
        yield stack


def api(stack: Stack, method: str, path: str, body: Any = None, *, secret: str | None = SECRET,
        params: dict[str, str] | None = None, raw: bytes | None = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {secret}"} if secret is not None else {}
    return requests.request(method, stack.bridge.url + PREFIX + path, json=body, data=raw,
                            params=params, headers=headers, timeout=60)


def error(response: requests.Response) -> tuple[int, str]:
    return response.status_code, response.json()["errcode"]


def cli(stack: Stack, *args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", "-c", str(config or stack.config_path), *args],
        capture_output=True, text=True, timeout=120,
    )


def irc_in(stack: Stack, nick: str, channel: str) -> RawIrcClient:
    client = stack.irc_user(nick)
    client.join(channel)
    return client


# ------------------------------------------------------------------ auth
def test_the_api_needs_its_secret(stack: Stack) -> None:
    assert error(api(stack, "GET", "/networks", secret=None)) == (401, "M_MISSING_TOKEN")
    assert error(api(stack, "GET", "/networks", secret="wrong")) == (403, "M_FORBIDDEN")
    answer = api(stack, "GET", "/networks")
    assert answer.status_code == 200
    assert [n["name"] for n in answer.json()["networks"]] == ["local"]
    assert "password" not in answer.text


# ------------------------------------------------------------------ link
def test_link_a_room_and_talk_through_it(stack: Stack) -> None:
    owner = user(stack, "owner")
    room = owner.create_room(preset="public_chat", name="plumbed")
    answer = api(stack, "POST", "/link", {"room_id": room, "network": "local",
                                          "channel": "#Plumbed", "user_id": owner.user_id})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"room_id": room, "network": "local", "channel": "#Plumbed",
                             "kind": "plumbed", "alias": None}
    owner.wait_for_message(room, lambda e: e["sender"] == BOT
                           and "now bridged to #Plumbed" in e["content"].get("body", ""))
    listed = api(stack, "GET", "/links", params={"room_id": room}).json()["links"]
    assert [(lk["channel"], lk["kind"]) for lk in listed] == [("#Plumbed", "plumbed")]
    assert any(lk["room_id"] == room for lk in api(stack, "GET", "/links").json()["links"])
    speaker = irc_in(stack, "plumbspeaker", "#plumbed")
    try:
        wait_until(lambda: "ircbot" in speaker.names("#plumbed"), TIMEOUT, what="bot in channel")
        speaker.privmsg("#plumbed", "hello plumbed room")
        owner.wait_for_text(room, "hello plumbed room", timeout=TIMEOUT)
        owner.send_text(room, "hello channel")
        speaker.wait_for_privmsg("hello channel", target="#plumbed", timeout=TIMEOUT)
    finally:
        speaker.quit()
    # Linking the same pair again is fine; linking either side elsewhere is not.
    again = api(stack, "POST", "/link", {"room_id": room, "network": "local",
                                         "channel": "#plumbed", "user_id": owner.user_id})
    assert again.status_code == 200
    other = owner.create_room(preset="public_chat")
    taken = api(stack, "POST", "/link", {"room_id": other, "network": "local",
                                         "channel": "#plumbed", "user_id": owner.user_id})
    assert error(taken) == (409, "M_ROOM_IN_USE") and room in taken.json()["error"]
    busy = api(stack, "POST", "/link", {"room_id": room, "network": "local",
                                        "channel": "#elsewhere", "user_id": owner.user_id})
    assert error(busy) == (409, "M_ROOM_IN_USE") and "#Plumbed" in busy.json()["error"]


def test_a_room_linked_with_relay_has_its_people_said_by_the_bot(stack: Stack) -> None:
    owner = user(stack, "relayowner")
    room = owner.create_room(preset="public_chat", name="relayed")
    body = {"room_id": room, "network": "local", "channel": "#relayplumbed",
            "user_id": owner.user_id}
    assert error(api(stack, "POST", "/link", {**body, "relay": "yes"})) == (400,
                                                                            "M_INVALID_PARAM")
    answer = api(stack, "POST", "/link", {**body, "relay": True})
    assert answer.status_code == 200, answer.text
    speaker = irc_in(stack, "relaylistener", "#relayplumbed")
    try:
        wait_until(lambda: "ircbot" in speaker.names("#relayplumbed"), TIMEOUT,
                   what="bot in channel")
        owner.send_text(room, "said by the bot")
        line = speaker.wait_for_privmsg(lambda text: text.endswith("said by the bot"),
                                        target="#relayplumbed", timeout=TIMEOUT)
        # The room overrides the network's relay_mode (off): no connection of the owner's.
        assert (line.nick, line.text) in (("ircbot", "<relayowner> said by the bot"),
                                          ("relayowner/m", "said by the bot"))
        assert not [n for n in speaker.names("#relayplumbed") if "relayowner" in n]
    finally:
        speaker.quit()


@pytest.mark.parametrize(("body", "status", "errcode", "says"), [
    ({"network": "local", "channel": "#x", "user_id": "@owner:localhost"}, 400,
     "M_MISSING_PARAM", "'room_id'"),
    ({"room_id": "!r", "channel": "#x", "user_id": "@owner:localhost"}, 400,
     "M_MISSING_PARAM", "'network'"),
    ({"room_id": "!r", "network": "local", "user_id": "@owner:localhost"}, 400,
     "M_MISSING_PARAM", "'channel'"),
    ({"room_id": "!r", "network": "local", "channel": "#x"}, 400, "M_MISSING_PARAM",
     "'user_id'"),
    ({"room_id": "room", "network": "local", "channel": "#x", "user_id": "@o:localhost"}, 400,
     "M_INVALID_PARAM", "room id"),
    ({"room_id": "!r", "network": "local", "channel": "#x", "user_id": "owner"}, 400,
     "M_INVALID_PARAM", "user id"),
    ({"room_id": "!r", "network": "local", "channel": 5, "user_id": "@o:localhost"}, 400,
     "M_INVALID_PARAM", "string"),
    ({"room_id": "!r", "network": "efnet", "channel": "#x", "user_id": "@o:localhost"}, 404,
     "M_NOT_FOUND", "not configured (networks: local)"),
    ({"room_id": "!r", "network": "local", "channel": "nochan", "user_id": "@o:localhost"},
     400, "M_INVALID_PARAM", "not a valid IRC channel"),
    (["not", "an", "object"], 400, "M_BAD_JSON", "JSON object"),
])
def test_link_refuses_bad_requests(stack: Stack, body: Any, status: int, errcode: str,
                                   says: str) -> None:
    answer = api(stack, "POST", "/link", body)
    assert error(answer) == (status, errcode)
    assert says in answer.json()["error"]


def test_link_refuses_a_body_that_is_not_json(stack: Stack) -> None:
    assert error(api(stack, "POST", "/link", raw=b"{nope")) == (400, "M_NOT_JSON")
    assert error(api(stack, "POST", "/link", raw=b"")) == (400, "M_NOT_JSON")


def test_link_needs_power_in_the_room(stack: Stack) -> None:
    owner, member = user(stack, "powerowner"), user(stack, "member")
    room = owner.create_room(preset="public_chat")
    member.join(room)
    body = {"room_id": room, "network": "local", "channel": "#powered",
            "user_id": member.user_id}
    low = api(stack, "POST", "/link", body)
    assert error(low) == (403, "M_FORBIDDEN")
    assert "has power level 0" in low.json()["error"] and "needs 100" in low.json()["error"]
    outsider = api(stack, "POST", "/link", {**body, "user_id": "@nobody:localhost"})
    assert error(outsider) == (403, "M_FORBIDDEN") and "is not in" in outsider.json()["error"]
    # Given the level to change power levels, the member may link.
    levels = owner.state(room, "m.room.power_levels")
    levels.setdefault("users", {})[member.user_id] = 100
    owner.send_state(room, "m.room.power_levels", levels)
    assert api(stack, "POST", "/link", body).status_code == 200
    # ... and unlink; the owner (the creator) always may.
    plain = user(stack, "plain")
    plain.join(room)
    refused = api(stack, "POST", "/unlink", {"room_id": room, "user_id": plain.user_id})
    assert error(refused) == (403, "M_FORBIDDEN")
    done = api(stack, "POST", "/unlink", {"room_id": room, "user_id": owner.user_id})
    assert done.status_code == 200 and done.json()["channel"] == "#powered"
    assert api(stack, "GET", "/links", params={"room_id": room}).json() == {"links": []}
    gone = api(stack, "POST", "/unlink", {"room_id": room, "user_id": owner.user_id})
    assert error(gone) == (404, "M_NOT_FOUND")


def test_unlink_names_the_network_of_a_room_linked_on_several(stack: Stack) -> None:
    owner = user(stack, "netowner")
    room = owner.create_room(preset="public_chat")
    body = {"room_id": room, "network": "local", "channel": "#bynetwork",
            "user_id": owner.user_id}
    assert api(stack, "POST", "/link", body).status_code == 200
    other = api(stack, "POST", "/link", {**body, "channel": "#another"})
    assert error(other) == (409, "M_ROOM_IN_USE")  # one channel per network
    wrong = api(stack, "POST", "/unlink", {"room_id": room, "user_id": owner.user_id,
                                           "network": "elsewhere"})
    assert error(wrong) == (404, "M_NOT_FOUND") and "on elsewhere" in wrong.json()["error"]
    done = api(stack, "POST", "/unlink", {"room_id": room, "user_id": owner.user_id,
                                          "network": "local"})
    assert done.status_code == 200 and done.json()["channel"] == "#bynetwork"
    assert api(stack, "GET", "/links", params={"room_id": room}).json() == {"links": []}


def test_link_a_room_the_bot_cannot_join(stack: Stack) -> None:
    owner = user(stack, "privateowner")
    room = owner.create_room(preset="private_chat")
    answer = api(stack, "POST", "/link", {"room_id": room, "network": "local",
                                          "channel": "#private", "user_id": owner.user_id})
    assert error(answer) == (403, "M_FORBIDDEN")
    assert f"invite {BOT}" in answer.json()["error"]


def test_portal_rooms_cannot_be_unlinked_by_users(stack: Stack) -> None:
    looker = user(stack, "portaluser")
    portal = looker.join("#irc_local_#portalroom:localhost")
    answer = api(stack, "POST", "/unlink", {"room_id": portal, "user_id": looker.user_id})
    assert error(answer) == (409, "M_ROOM_IN_USE")
    assert "the bridge's own room" in answer.json()["error"]
    assert error(api(stack, "GET", "/links", params={"room_id": "nope"})) == (
        400, "M_INVALID_PARAM")


# ------------------------------------------------------------------ who acts
def openid_token(client: MatrixClient) -> dict[str, Any]:
    """A real OpenID token of `client`'s user, from the homeserver (as a widget gets one)."""
    return client.request("POST", f"/_matrix/client/v3/user/{client.user_id}/openid/"
                                  "request_token", json={})


def test_the_bots_id_in_the_body_does_not_skip_the_power_check(stack: Stack) -> None:
    owner = user(stack, "botclaimowner")
    room = owner.create_room(preset="public_chat")
    claim = api(stack, "POST", "/link", {"room_id": room, "network": "local",
                                         "channel": "#botclaim", "user_id": BOT})
    assert error(claim) == (403, "M_FORBIDDEN"), claim.text
    assert api(stack, "GET", "/links", params={"room_id": room}).json() == {"links": []}


def test_an_openid_token_names_the_acting_user(stack: Stack) -> None:
    owner, member = user(stack, "openidowner"), user(stack, "openidmember")
    room = owner.create_room(preset="public_chat")
    member.join(room)
    body = {"room_id": room, "network": "local", "channel": "#openid"}
    # The member claims to be the room's owner: the homeserver vouches for the member.
    claimed = api(stack, "POST", "/link", {**body, "user_id": owner.user_id,
                                           "openid_token": openid_token(member)})
    assert error(claimed) == (403, "M_FORBIDDEN"), claimed.text
    assert member.user_id in claimed.json()["error"]
    as_member = api(stack, "POST", "/link", {**body, "openid_token": openid_token(member)})
    assert error(as_member) == (403, "M_FORBIDDEN")
    assert "has power level 0" in as_member.json()["error"]
    forged = api(stack, "POST", "/link", {**body, "openid_token": {
        "access_token": "not-a-token", "matrix_server_name": "localhost"}})
    assert error(forged) == (403, "M_FORBIDDEN")
    assert "OpenID" in forged.json()["error"]
    elsewhere = api(stack, "POST", "/link", {**body, "openid_token": {
        **openid_token(owner), "matrix_server_name": "elsewhere.example"}})
    assert error(elsewhere) == (403, "M_FORBIDDEN")
    assert api(stack, "GET", "/links", params={"room_id": room}).json() == {"links": []}
    # The owner's own token links, with no user_id in the body at all; and unlinks.
    done = api(stack, "POST", "/link", {**body, "openid_token": openid_token(owner)})
    assert done.status_code == 200, done.text
    refused = api(stack, "POST", "/unlink", {"room_id": room, "user_id": owner.user_id,
                                             "openid_token": openid_token(member)})
    assert error(refused) == (403, "M_FORBIDDEN")
    gone = api(stack, "POST", "/unlink", {"room_id": room, "openid_token": openid_token(owner)})
    assert gone.status_code == 200, gone.text


def test_naming_the_bot_does_not_unlink_a_portal(stack: Stack) -> None:
    looker = user(stack, "portalclaimer")
    portal = looker.join("#irc_local_#portalclaim:localhost")
    answer = api(stack, "POST", "/unlink", {"room_id": portal, "user_id": BOT})
    assert error(answer) == (409, "M_ROOM_IN_USE")
    assert any(lk["room_id"] == portal for lk in api(stack, "GET", "/links").json()["links"])


# ------------------------------------------------------------------ command line
def test_the_command_line_uses_the_running_bridge(stack: Stack) -> None:
    owner = user(stack, "cliowner")
    room = owner.create_room(preset="public_chat")
    linked = cli(stack, "link", "--network", "local", "--channel", "#cli", "--room", room)
    assert linked.returncode == 0, linked.stderr
    assert "(live)" in linked.stdout
    listing = cli(stack, "links")
    assert f"local\t#cli\t{room}\tplumbed" in listing.stdout
    refused = cli(stack, "link", "--network", "efnet", "--channel", "#cli", "--room", room)
    assert refused.returncode == 1 and "not configured" in refused.stderr
    unlinked = cli(stack, "unlink", "--room", room)
    assert unlinked.returncode == 0 and "(live)" in unlinked.stdout
    assert room not in cli(stack, "links").stdout
    again = cli(stack, "unlink", "--room", room)
    assert again.returncode == 1 and "not linked" in again.stderr


def test_the_command_line_without_the_api_works_on_the_database(stack: Stack) -> None:
    owner = user(stack, "offlineowner")
    room = owner.create_room(preset="public_chat")
    offline = stack.config_path.with_name("offline.ini")
    offline.write_text(stack.config_path.read_text(encoding="utf-8").replace(
        f"secret = {SECRET}", "secret ="), encoding="utf-8")
    linked = cli(stack, "link", "--network", "local", "--channel", "#offline", "--room", room,
                 config=offline)
    assert linked.returncode == 0, linked.stderr
    assert "next start" in linked.stdout
    assert BOT in owner.joined_members(room)
    assert f"local\t#offline\t{room}\tplumbed" in cli(stack, "links", config=offline).stdout
    taken = cli(stack, "link", "--network", "local", "--channel", "#offline", "--room",
                owner.create_room(preset="public_chat"), config=offline)
    assert taken.returncode == 1 and "already linked" in taken.stderr
    unlinked = cli(stack, "unlink", "--room", room, config=offline)
    assert unlinked.returncode == 0 and "next start" in unlinked.stdout
    wait_until(lambda: BOT not in owner.joined_members(room), TIMEOUT, what="the bot to leave")


def test_generate_key(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    made = subprocess.run([sys.executable, "-m", "bridge", "-c", str(config), "generate-key"],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    key = tmp_path / "ircbridge.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert "key_file" in made.stdout
    again = subprocess.run([sys.executable, "-m", "bridge", "-c", str(config), "generate-key"],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "already exists" in again.stderr
