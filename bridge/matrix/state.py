"""Who is in which room and who may do what, as the homeserver says: the bridge's state store.

Why: the bridge must know whether a virtual user is still in a room to make it leave when
its IRC user parts, quits, is kicked or changes nick. An in-memory record of what the bridge
itself did is empty after a restart, so ghosts that joined before it never left. This store
asks the homeserver instead: a room's joined members are fetched once, the first time the
room is needed (GET /rooms/{id}/joined_members, as the bot), and kept current from the
`m.room.member` events the homeserver pushes in its transactions and from the bridge's own
calls. A room the bot cannot read (403/404) is not cached: the next question asks again;
a homeserver that cannot answer raises, so the caller retries instead of guessing.

The room's power levels are kept the same way (`PowerLevels`): fetched once, then replaced
by every `m.room.power_levels` event the homeserver pushes and by the bridge's own changes,
so mirroring IRC prefixes needs no read before each write.

Thread: any. Transactions update them on request threads, the senders read them; one lock
each.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping

from ..rules.ids import RoomId, UserId
from .errors import Forbidden, NotFound

log = logging.getLogger(__name__)

# Fetches `{user_id: profile}` of a room's joined members; raises when it cannot.
FetchMembers = Callable[[RoomId], Mapping[str, object]]


class MemberStore:
    """room id -> the set of user ids the homeserver says are joined there."""

    def __init__(self, fetch: FetchMembers) -> None:
        self._fetch = fetch
        self._lock = threading.Lock()
        self._joined: dict[RoomId, set[UserId]] = {}

    def _room(self, room_id: RoomId) -> set[UserId] | None:
        with self._lock:
            known = self._joined.get(room_id)
            if known is not None:
                return known
        try:
            members = {UserId(user) for user in self._fetch(room_id)}
        except (Forbidden, NotFound) as e:  # the bot cannot read it: unknown, ask next time
            log.info("cannot list the members of %s: %s", room_id, e)
            return None
        # Anything else (homeserver away, 5xx) goes up: the caller retries, never guesses.
        with self._lock:
            # Events pushed while the list was fetched were applied to a fresh entry: keep them.
            return self._joined.setdefault(room_id, members)

    def is_joined(self, room_id: RoomId, user_id: UserId) -> bool | None:
        """True/False as the homeserver says; None when it could not be asked."""
        members = self._room(room_id)
        if members is None:
            return None
        with self._lock:
            return user_id in members

    def joined(self, room_id: RoomId) -> set[UserId]:
        """A copy of the room's joined members (empty when they cannot be listed)."""
        members = self._room(room_id)
        with self._lock:
            return set(members or ())

    def set_membership(self, room_id: RoomId, user_id: UserId, membership: str) -> None:
        """Record a membership seen or made; only rooms already loaded are changed."""
        with self._lock:
            members = self._joined.get(room_id)
            if members is None:
                return
            if membership == "join":
                members.add(user_id)
            else:
                members.discard(user_id)

    def apply(self, events: Iterable[Mapping[str, object]]) -> list[tuple[RoomId, UserId]]:
        """Take in the `m.room.member` events of a transaction; returns the (room, user)
        pairs that are no longer joined, for caches to forget."""
        gone: list[tuple[RoomId, UserId]] = []
        for event in events:
            if event.get("type") != "m.room.member":
                continue
            room, user = event.get("room_id"), event.get("state_key")
            content = event.get("content")
            if isinstance(room, str) and isinstance(user, str) and isinstance(content, dict):
                room_id, user_id = RoomId(room), UserId(user)
                membership = str(content.get("membership") or "")
                self.set_membership(room_id, user_id, membership)
                if membership != "join":
                    gone.append((room_id, user_id))
        return gone

    def forget_room(self, room_id: RoomId) -> None:
        with self._lock:
            self._joined.pop(room_id, None)


# Fetches a room's m.room.power_levels content (None: the room has none we can read).
FetchPowerLevels = Callable[[RoomId], "Mapping[str, object] | None"]


class PowerLevels:
    """room id -> its m.room.power_levels content, as last pushed or written."""

    def __init__(self, fetch: FetchPowerLevels) -> None:
        self._fetch = fetch
        self._lock = threading.Lock()
        self._levels: dict[RoomId, dict[str, object]] = {}

    def get(self, room_id: RoomId) -> dict[str, object]:
        """A copy of the room's power levels ({} when it has none we can read)."""
        with self._lock:
            known = self._levels.get(room_id)
            if known is not None:
                return dict(known)
        try:
            fetched = self._fetch(room_id)
        except (Forbidden, NotFound) as e:
            log.info("cannot read the power levels of %s: %s", room_id, e)
            return {}
        with self._lock:
            # A push that arrived while we fetched is newer: it wins.
            return dict(self._levels.setdefault(room_id, dict(fetched or {})))

    def set(self, room_id: RoomId, content: Mapping[str, object]) -> None:
        """The bridge wrote these levels (or the homeserver pushed them)."""
        with self._lock:
            self._levels[room_id] = dict(content)

    def apply(self, events: Iterable[Mapping[str, object]]) -> None:
        """Take in the `m.room.power_levels` events of a transaction."""
        for event in events:
            if event.get("type") != "m.room.power_levels" or event.get("state_key") != "":
                continue
            room_id, content = event.get("room_id"), event.get("content")
            if isinstance(room_id, str) and isinstance(content, dict):
                self.set(RoomId(room_id), content)
