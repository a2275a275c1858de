"""A portal's alias is made only once the room has its first member (the bot).

With createRoom's `room_alias_name`, Synapse makes the alias before the room's first
membership: a second person joining by the alias at that moment resolved it without asking
the bridge, and got 404 "Can't join remote room because no servers that are in the room have
been provided" (seen in CI with two people joining one new channel at once). The portal's
calls to the homeserver are recorded by a stand-in client; the test's thread plays a request
thread."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from bridge.core.portals import Portals
from bridge.matrix import IntentCache, MatrixError
from bridge.rules.ids import RoomId, UserId

ALIAS = "#irc_local_#new:localhost"
BOT = UserId("@ircbot:localhost")


class RecordingClient:
    """What Portals calls of the homeserver client, in order."""

    def __init__(self, alias_taken_by: RoomId | None = None) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.alias_taken_by = alias_taken_by

    def create_room(self, body: dict[str, Any], **_: Any) -> RoomId:
        self.calls.append(("create_room", body))
        return RoomId("!new")

    def put_alias(self, alias: str, room_id: RoomId, **_: Any) -> None:
        self.calls.append(("put_alias", (alias, room_id)))
        if self.alias_taken_by is not None:
            raise MatrixError(409, "M_UNKNOWN", "Room alias already exists")

    def resolve_alias(self, alias: str, **_: Any) -> RoomId | None:
        self.calls.append(("resolve_alias", alias))
        return self.alias_taken_by

    def send_state(self, room_id: RoomId, event_type: str, state_key: str,
                   content: dict[str, Any], **_: Any) -> str:
        self.calls.append(("send_state", (room_id, event_type, content)))
        return "$state"

    def leave(self, room_id: RoomId, **_: Any) -> None:
        self.calls.append(("leave", room_id))


def portals(client: RecordingClient) -> Portals:
    made = Portals.__new__(Portals)
    cache = IntentCache()
    cache.mark_registered(BOT)
    made.client = client  # type: ignore[assignment]
    made.cache = cache
    made.config = SimpleNamespace(bot_user_id=BOT)  # type: ignore[assignment]
    made.registry = SimpleNamespace(topic=lambda network, channel: "")  # type: ignore[assignment]
    made.directory = SimpleNamespace(  # type: ignore[assignment]
        fold_channel=lambda network, channel: channel.lower())
    made.privacy = SimpleNamespace(  # type: ignore[assignment]
        portal_room_body=lambda private: {"preset": "public_chat"})
    return made


def test_the_alias_points_at_the_room_only_after_the_room_is_made() -> None:
    client = RecordingClient()
    room = portals(client)._create_portal("local", "#new", ALIAS)
    assert room == "!new"
    names = [name for name, _ in client.calls]
    assert names == ["create_room", "put_alias", "send_state"], client.calls
    body = client.calls[0][1]
    assert "room_alias_name" not in body, "createRoom would make the alias before the room"
    assert client.calls[1][1] == (ALIAS, "!new")
    assert client.calls[2][1] == ("!new", "m.room.canonical_alias", {"alias": ALIAS})


def test_an_alias_made_meanwhile_wins_and_the_new_room_is_left() -> None:
    client = RecordingClient(alias_taken_by=RoomId("!older"))
    room = portals(client)._create_portal("local", "#new", ALIAS)
    assert room == "!older"
    assert ("leave", "!new") in client.calls
    assert not any(name == "send_state" for name, _ in client.calls)


def test_a_refused_alias_is_an_error_not_a_room_nobody_finds() -> None:
    class Refusing(RecordingClient):
        def put_alias(self, alias: str, room_id: RoomId, **_: Any) -> None:
            raise MatrixError(403, "M_EXCLUSIVE", "alias outside the namespace")

    client = Refusing()
    with pytest.raises(MatrixError):
        portals(client)._create_portal("local", "#new", ALIAS)
    assert ("leave", "!new") in client.calls
