"""The membership state store's own rules (a pure object: the fetch is a plain function)."""

from __future__ import annotations

import pytest

from bridge.matrix import Forbidden, HomeserverUnavailable
from bridge.matrix.state import MemberStore


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
