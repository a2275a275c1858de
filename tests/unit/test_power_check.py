"""The provisioning API's power check (a pure function of the room's power levels and
create event); the API itself runs against a real stack in tests/e2e/test_provisioning.py."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.core.provisioning import DEFAULT_NEEDED, INFINITE, power_check


@pytest.mark.parametrize(("levels", "create", "user_id", "expected"), [
    # v12+: creators outrank power levels, even when listed lower
    ({"users": {"@c:x": 0}}, {"sender": "@c:x", "content": {"room_version": "12"}}, "@c:x",
     (INFINITE, DEFAULT_NEEDED)),
    (None, {"sender": "@c:x", "content": {"room_version": "12",
                                          "additional_creators": ["@d:x"]}}, "@d:x",
     (INFINITE, DEFAULT_NEEDED)),
    # older rooms: the power levels decide, creators included
    ({"users": {"@c:x": 100}, "events": {"m.room.power_levels": 100}},
     {"sender": "@c:x", "content": {"room_version": "10"}}, "@c:x", (100, 100)),
    ({"users": {"@c:x": 100}, "users_default": 10, "state_default": 60},
     {"sender": "@c:x", "content": {"room_version": "10"}}, "@u:x", (10, 60)),
    ({"users": {"@u:x": "75"}, "events": {"m.room.power_levels": "70"}},
     {"sender": "@c:x", "content": {}}, "@u:x", (75, 70)),
    # no power levels at all: the creator has 100, the others 0
    (None, {"sender": "@c:x", "content": {"room_version": "6"}}, "@c:x", (100, 50)),
    (None, {"sender": "@c:x", "content": {"room_version": "6"}}, "@u:x", (0, 50)),
])
def test_power_check(levels: dict[str, Any] | None, create: dict[str, Any], user_id: str,
                     expected: tuple[int, int]) -> None:
    assert power_check(levels, create, user_id) == expected
