"""Act as one Matrix user of the bridge: a virtual (IRC) user, or the sender bot.

Why: every masqueraded call needs the user registered (Synapse answers 403 "Application
service has not registered this user" otherwise, 5.H.55) and most need the user joined.
`Intent` makes those preconditions explicit (`ensure_registered`, `ensure_joined`),
remembers them in a shared `IntentCache` so the homeserver is asked once, and recovers
once when the cache turns out to be stale (the user was never registered after all, or
was kicked): it re-registers or re-joins and repeats the call.

An intent may carry a `RetryPolicy` (bridge/matrix/retry.py) that every call it makes
uses, e.g. QUERY for the work done while the homeserver waits for a query's answer; None
is the client's own default.

The bot (`is_bot=True`) is the AS's `sender_localpart` user: its calls carry no `user_id`
parameter, but it is still registered once (synapse#4143: profile changes fail otherwise).

Thread: any; the cache is locked, the client is thread-safe.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable
from typing import TypeVar

from ..rules.ids import EventId, RoomId, UserId
from .client import MAX_DISPLAYNAME_LEN, HomeserverClient
from .errors import Forbidden, RoomInUse, UserInUse
from .retry import RetryPolicy
from .wire import JsonBody, JsonObject

log = logging.getLogger(__name__)

T = TypeVar("T")

_UNREGISTERED = "unregistered"
_NOT_IN_ROOM = "not_in_room"
# Synapse: "Application service has not registered this user (@x:y)".
_UNREGISTERED_RE = re.compile(r"has not registered this user", re.IGNORECASE)
# Synapse event auth: "User @x:y not in room !r (None)", invites: "@x:y not in room !r.".
_NOT_IN_ROOM_RE = re.compile(r"not in (?:the )?room|not joined|not a member", re.IGNORECASE)


def _forbidden_kind(error: Forbidden) -> str | None:
    if _UNREGISTERED_RE.search(error.error):
        return _UNREGISTERED
    if _NOT_IN_ROOM_RE.search(error.error):
        return _NOT_IN_ROOM
    return None


class IntentCache:
    """What the bridge already made true on the homeserver, shared by all its intents.

    In memory only: after a restart each fact is re-established once (registration and
    joins are idempotent on the homeserver side).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._registered: set[str] = set()
        self._joined: set[tuple[str, str]] = set()
        self._displaynames: dict[str, str] = {}

    def is_registered(self, user_id: UserId) -> bool:
        with self._lock:
            return user_id in self._registered

    def mark_registered(self, user_id: UserId) -> None:
        with self._lock:
            self._registered.add(user_id)

    def forget_registered(self, user_id: UserId) -> None:
        with self._lock:
            self._registered.discard(user_id)
            self._displaynames.pop(user_id, None)

    def is_joined(self, room_id: RoomId, user_id: UserId) -> bool:
        with self._lock:
            return (room_id, user_id) in self._joined

    def mark_joined(self, room_id: RoomId, user_id: UserId) -> None:
        with self._lock:
            self._joined.add((room_id, user_id))

    def forget_joined(self, room_id: RoomId, user_id: UserId) -> None:
        """Call when a leave/kick/ban of `user_id` in `room_id` is seen."""
        with self._lock:
            self._joined.discard((room_id, user_id))

    def forget_room(self, room_id: RoomId) -> None:
        """Drop every membership remembered for `room_id`."""
        with self._lock:
            self._joined = {pair for pair in self._joined if pair[0] != room_id}

    def displayname(self, user_id: UserId) -> str | None:
        with self._lock:
            return self._displaynames.get(user_id)

    def set_displayname(self, user_id: UserId, name: str) -> None:
        with self._lock:
            self._displaynames[user_id] = name


class Intent:
    """One user's view of the homeserver: the calls it makes, with their preconditions."""

    def __init__(
        self,
        client: HomeserverClient,
        user_id: UserId,
        *,
        is_bot: bool = False,
        cache: IntentCache,
        policy: RetryPolicy | None = None,
    ) -> None:
        if not user_id.startswith("@") or ":" not in user_id:
            raise ValueError(f"not a user id: {user_id!r}")
        self.client = client
        self.user_id = user_id
        self.is_bot = is_bot
        self.cache = cache
        self.policy = policy

    def __repr__(self) -> str:
        return f"<Intent {self.user_id}{' (bot)' if self.is_bot else ''}>"

    @property
    def localpart(self) -> str:
        return self.user_id[1:].split(":", 1)[0]

    @property
    def _as(self) -> UserId | None:
        """The `user_id` query parameter: none for the bot (the AS acts as it by default)."""
        return None if self.is_bot else self.user_id

    # ------------------------------------------------------------------ preconditions

    def ensure_registered(self) -> None:
        """Register this user once; an existing user (M_USER_IN_USE) is fine."""
        if self.cache.is_registered(self.user_id):
            return
        try:
            self.client.register(self.localpart, policy=self.policy)
            log.info("registered %s", self.user_id)
        except UserInUse:
            pass
        self.cache.mark_registered(self.user_id)

    def ensure_joined(self, room_id: RoomId) -> None:
        """Join `room_id` once. Raises Forbidden (e.g. invite-only room, banned)."""
        if self.cache.is_joined(room_id, self.user_id):
            return
        self.ensure_registered()
        joined = self._recovering(
            lambda: self.client.join(room_id, self._as, policy=self.policy))
        self.cache.mark_joined(room_id, self.user_id)
        if joined != room_id:  # joined by alias: remember the id too
            self.cache.mark_joined(joined, self.user_id)

    def _recovering(self, call: Callable[[], T], room_id: RoomId | None = None) -> T:
        """Run `call`; on a 403 that a stale cache explains, fix it and retry once per cause."""
        fixed: set[str] = set()
        while True:
            try:
                return call()
            except Forbidden as error:
                kind = _forbidden_kind(error)
                if kind is None or kind in fixed or (kind == _NOT_IN_ROOM and room_id is None):
                    raise
                fixed.add(kind)
                log.info("%s: %s; recovering and retrying", self.user_id, error)
                if kind == _UNREGISTERED:
                    self.cache.forget_registered(self.user_id)
                    self.ensure_registered()
                else:
                    assert room_id is not None
                    self.cache.forget_joined(room_id, self.user_id)
                    self.ensure_joined(room_id)

    # ------------------------------------------------------------------ messages, state

    def send_message(
        self,
        room_id: RoomId,
        content: JsonBody,
        *,
        ts: int | None = None,
        txn_id: str | None = None,
        event_type: str = "m.room.message",
    ) -> EventId:
        """Send an event as this user; returns its event id.

        Pass a durable `txn_id` to make retries across restarts idempotent; otherwise a
        fresh one is made and reused for every retry of this call.
        """
        if txn_id is None:
            txn_id = self.client.new_txn_id()
        self.ensure_registered()
        self.ensure_joined(room_id)
        return self._recovering(
            lambda: self.client.send(room_id, event_type, content, txn_id, user_id=self._as, ts=ts,
                                     policy=self.policy),
            room_id,
        )

    def set_state(
        self,
        room_id: RoomId,
        event_type: str,
        state_key: str,
        content: JsonBody,
        *,
        ts: int | None = None,
    ) -> EventId:
        """Send a state event as this user; returns its event id."""
        self.ensure_registered()
        return self._recovering(
            lambda: self.client.send_state(
                room_id, event_type, state_key, content, user_id=self._as, ts=ts,
                policy=self.policy,
            ),
            room_id,
        )

    def get_state(
        self, room_id: RoomId, event_type: str, state_key: str = ""
    ) -> JsonObject | None:
        """Content of a state event as this user sees it, or None."""
        return self.client.get_state(room_id, event_type, state_key, user_id=self._as,
                                     policy=self.policy)

    # ------------------------------------------------------------------ profile

    def set_displayname(self, name: str) -> None:
        """Set the display name unless it is already the one we set."""
        name = name[:MAX_DISPLAYNAME_LEN]
        if self.cache.displayname(self.user_id) == name:
            return
        self.ensure_registered()
        self._recovering(
            lambda: self.client.set_displayname(self.user_id, name, policy=self.policy))
        self.cache.set_displayname(self.user_id, name)

    def set_avatar_url(self, mxc_uri: str) -> None:
        """Set the avatar to an `mxc://` URI."""
        self.ensure_registered()
        self._recovering(
            lambda: self.client.set_avatar_url(self.user_id, mxc_uri, policy=self.policy))

    # ------------------------------------------------------------------ ephemeral

    def set_presence(self, presence: str, status_msg: str = "") -> None:
        """This user's presence (online, unavailable, offline) with an optional message."""
        self.ensure_registered()
        self._recovering(lambda: self.client.set_presence(self.user_id, presence, status_msg,
                                                          policy=self.policy))

    def set_typing(self, room_id: RoomId, typing: bool, timeout_ms: int = 30000) -> None:
        """Start (for `timeout_ms`) or stop this user's typing notice in a joined room."""
        self.ensure_registered()
        self._recovering(lambda: self.client.set_typing(room_id, self.user_id, typing,
                                                        timeout_ms, policy=self.policy), room_id)

    # ------------------------------------------------------------------ rooms

    def create_room(
        self,
        *,
        alias_localpart: str | None,
        name: str | None,
        topic: str | None,
        preset: str = "public_chat",
        invite: Iterable[str] = (),
        extra_state: Iterable[JsonBody] = (),
        extra_body: JsonBody | None = None,
    ) -> RoomId:
        """Create a room owned by this user; returns its id.

        `alias_localpart` is the alias localpart only (no `:server`). If the alias is
        already taken (M_ROOM_IN_USE) the existing room is resolved, joined and returned.
        No `visibility` is sent: publish with `HomeserverClient.publish_appservice_room`.
        `extra_body` is merged into the createRoom body last (room_version, power levels).
        """
        body: dict[str, object] = {"preset": preset}
        if alias_localpart is not None:
            if ":" in alias_localpart or any(c.isspace() for c in alias_localpart):
                raise ValueError(f"alias localpart may not hold ':' or spaces: {alias_localpart!r}")
            body["room_alias_name"] = alias_localpart
        if name:
            body["name"] = name
        if topic:
            body["topic"] = topic
        invitees = [user for user in invite if user != self.user_id]
        if invitees:
            body["invite"] = invitees
        initial_state = [
            {"type": s["type"], "state_key": s.get("state_key", ""), "content": s["content"]}
            for s in extra_state
        ]
        if initial_state:
            body["initial_state"] = initial_state
        body.update(extra_body or {})
        self.ensure_registered()
        try:
            room_id = self._recovering(
                lambda: self.client.create_room(body, self._as, policy=self.policy))
        except RoomInUse:
            alias = f"#{alias_localpart}:{self.client.server_name}"
            existing = self.client.resolve_alias(alias, policy=self.policy)
            if existing is None:  # deleted in between: let the caller decide
                raise
            log.info("%s already exists as %s", alias, existing)
            self.ensure_joined(existing)
            return existing
        self.cache.mark_joined(room_id, self.user_id)
        return room_id

    def join(self, room_id_or_alias: str) -> RoomId:
        """Join (by id or alias) and return the room id."""
        self.ensure_registered()
        room_id = self._recovering(
            lambda: self.client.join(room_id_or_alias, self._as, policy=self.policy))
        self.cache.mark_joined(room_id, self.user_id)
        return room_id

    def leave(self, room_id: RoomId, reason: str = "") -> None:
        """Leave `room_id` (or decline its invite, saying why)."""
        self.cache.forget_joined(room_id, self.user_id)
        self.client.leave(room_id, self._as, reason, policy=self.policy)

    def invite(self, room_id: RoomId, user_id: UserId) -> None:
        """Invite `user_id` (this user must be joined with invite power)."""
        self.ensure_registered()
        self._recovering(
            lambda: self.client.invite(room_id, user_id, self._as, policy=self.policy), room_id)

    def kick(self, room_id: RoomId, user_id: UserId, reason: str) -> None:
        """Kick `user_id` from `room_id`."""
        self.ensure_registered()
        self._recovering(
            lambda: self.client.kick(room_id, user_id, reason, self._as, policy=self.policy),
            room_id)
        self.cache.forget_joined(room_id, user_id)
