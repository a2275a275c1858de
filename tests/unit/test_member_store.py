"""The membership state store's own rules (a pure object: the fetch is a plain function)."""

from __future__ import annotations

import pytest

from bridge.matrix import Forbidden, HomeserverUnavailable
from bridge.matrix.state import MemberStore, PowerLevels


def member(room: str, user: str, membership: str) -> dict:
    return {"type": "m.room.member", "room_id": room, "state_key": user,
            "content": {"membership": membership}}


def test_a_room_is_listed_once_then_kept_current_from_pushed_events() -> None:
    asked: list[str] = []

    def fetch(room_id: str) -> dict:
        asked.append(room_id)
        return {"@a:x": {}, "@ghost:x": {}}

    store = MemberStore(fetch)
    assert store.is_joined("!r", "@ghost:x") is True
    gone = store.apply([member("!r", "@ghost:x", "leave"), member("!r", "@b:x", "join"),
                        {"type": "m.room.message", "room_id": "!r"}])
    assert gone == [("!r", "@ghost:x")]
    assert store.is_joined("!r", "@ghost:x") is False
    assert store.joined("!r") == {"@a:x", "@b:x"}
    assert asked == ["!r"]


def test_a_room_that_cannot_be_listed_is_unknown_and_asked_again() -> None:
    answers = [Forbidden(403, "M_FORBIDDEN", "not in room"),
               HomeserverUnavailable(0, "", "connection refused"), {"@a:x": {}}]

    def fetch(room_id: str) -> dict:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    store = MemberStore(fetch)
    store.set_membership("!r", "@a:x", "leave")  # not loaded: nothing to change
    assert store.is_joined("!r", "@a:x") is None  # the bot may not read it
    with pytest.raises(HomeserverUnavailable):  # the caller retries later
        store.is_joined("!r", "@a:x")
    assert store.is_joined("!r", "@a:x") is True
    store.forget_room("!r")
    assert answers == []


def power(room: str, users: dict[str, int], state_key: str = "") -> dict:
    return {"type": "m.room.power_levels", "room_id": room, "state_key": state_key,
            "content": {"users": users, "users_default": 0}}


def test_power_levels_are_read_once_then_follow_pushes_and_our_writes() -> None:
    """Mirroring IRC prefixes reads a room's levels from the store: one fetch, then every
    pushed m.room.power_levels (a Matrix admin's change) and each write of the bridge."""
    asked: list[str] = []

    def fetch(room_id: str) -> dict:
        asked.append(room_id)
        return {"users": {"@admin:x": 100}}

    levels = PowerLevels(fetch)
    assert levels.get("!r") == {"users": {"@admin:x": 100}}
    levels.apply([power("!r", {"@admin:x": 100, "@mod:x": 50}),
                  power("!r", {"@nobody:x": 99}, state_key="not-empty"),  # not the room's
                  {"type": "m.room.message", "room_id": "!r"}])
    assert levels.get("!r")["users"] == {"@admin:x": 100, "@mod:x": 50}
    levels.set("!r", {"users": {"@admin:x": 100, "@irc_op:x": 50}})
    copy = levels.get("!r")
    copy["users"] = {}  # a caller's copy: the store keeps its own
    assert levels.get("!r")["users"] == {"@admin:x": 100, "@irc_op:x": 50}
    assert asked == ["!r"]


def test_power_levels_of_a_room_the_bot_cannot_read_are_asked_again() -> None:
    answers: list[object] = [Forbidden(403, "M_FORBIDDEN", "not in room"), {"users": {}}]

    def fetch(room_id: str) -> dict:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]

    levels = PowerLevels(fetch)
    assert levels.get("!r") == {}
    assert levels.get("!r") == {"users": {}}
    with pytest.raises(HomeserverUnavailable):
        PowerLevels(lambda room: (_ for _ in ()).throw(
            HomeserverUnavailable(0, "", "down"))).get("!r")
