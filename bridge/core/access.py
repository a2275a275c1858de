"""Who may make the bridge act: the `[permissions]` gate and the portal-room rate limits.

Why apart: every action a Matrix user can start (an invite of a virtual user or of the bot,
a message, a `!command`, an alias query) must pass the same role check before anything is
joined, registered or connected, and each refused user is told why once, not on every event.
Portal rooms cost a room, a bot JOIN and scrollback each, so their creation is limited per
user and per network (`[network:NAME] portals_per_user_per_hour`, `portals_per_hour`).

An alias query (`GET /_matrix/app/v1/rooms/{alias}`) names no user: the homeserver asks on
behalf of anyone, local or federated. So it is answered as for `*` in `[permissions]`, and it
counts against the network's limit only; a listed user who may not rely on `*` makes portals
with `!join` in an admin room, which names the user.

Threads: the inbox thread (events), request threads (alias queries) and the admin lanes
(`!join`) call in; the state here is a few dicts under one lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from ..config.ini import Config
from ..matrix import HomeserverClient, Intent, IntentCache, MatrixError
from ..rules.ids import JsonDict, RoomId, UserId
from ..rules.permissions import role_of
from .directory import Directory

log = logging.getLogger(__name__)

HOUR = 3600.0
REFUSED = ("Sorry, {user} is not allowed to use this bridge (see [permissions] in the "
           "bridge's config.ini); ask the bridge's admin.")


class PortalLimited(Exception):
    """A portal room may not be made now; the text says which limit and when again."""


class Access:
    """`bridge.access`: the role check and the portal limits of one bridge."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._told: set[str] = set()
        self._made: dict[tuple[str, str | None], deque[float]] = {}

    # ------------------------------------------------------------------ roles
    def role(self, user_id: str) -> str | None:
        return role_of(self.config, user_id)

    def allowed(self, user_id: str) -> bool:
        return self.role(user_id) is not None

    def anonymous_allowed(self) -> bool:
        """Whether `*` has a role: what an alias query, which names nobody, may do."""
        return dict(self.config.permissions).get("*") is not None

    def may_query(self, requester: str | None) -> bool:
        """Whether an alias query (requester None: the homeserver's, naming nobody) or a
        `!join` of `requester` may make or point to a portal room."""
        return self.allowed(requester) if requester is not None else self.anonymous_allowed()

    def tell_once(self, user_id: str) -> bool:
        """True the first time a refused user is to be told why (per process)."""
        with self._lock:
            if user_id in self._told:
                return False
            self._told.add(user_id)
            return True

    # ------------------------------------------------------------------ portal limits
    def take_portal(self, network: str, user_id: str | None) -> None:
        """Count one portal room about to be made; raise PortalLimited past a limit.

        `user_id` None is an alias query (nobody named): only the network's limit applies.
        """
        net = self.config.network(network)
        if net is None:
            return
        now = self._clock()
        with self._lock:
            total = self._window((network, None), now)
            mine = self._window((network, user_id), now) if user_id is not None else None
            if len(total) >= net.portals_per_hour:
                again = (total[0] if total else now) + HOUR - now
                raise PortalLimited(f"{network} got {net.portals_per_hour} new rooms in the last "
                                    f"hour, its limit; try again in {_minutes(again)}")
            if mine is not None and len(mine) >= net.portals_per_user_per_hour:
                again = (mine[0] if mine else now) + HOUR - now
                raise PortalLimited(f"you made {net.portals_per_user_per_hour} new rooms on "
                                    f"{network} in the last hour, the limit per user; try "
                                    f"again in {_minutes(again)}")
            total.append(now)
            if mine is not None:
                mine.append(now)

    def _window(self, key: tuple[str, str | None], now: float) -> deque[float]:
        stamps = self._made.setdefault(key, deque())
        while stamps and stamps[0] <= now - HOUR:
            stamps.popleft()
        return stamps


class AdminOwners(Protocol):
    """What `refused` asks of the admin rooms: whose admin room a room is."""

    def owner_of(self, room_id: RoomId) -> str | None: ...


class Gatekeeping(Protocol):
    """What `refused` needs of the bridge (the core's `Bridge` is one); a Protocol, so this
    module does not import the Bridge that imports it."""

    @property
    def config(self) -> Config: ...
    @property
    def access(self) -> Access: ...
    @property
    def bot(self) -> Intent: ...
    @property
    def client(self) -> HomeserverClient: ...
    @property
    def cache(self) -> IntentCache: ...
    @property
    def admin(self) -> AdminOwners | None: ...

    @property
    def directory(self) -> Directory: ...


def refused(bridge: Gatekeeping, event: JsonDict) -> bool:
    """True when the event's sender may not make the bridge act (the event is dropped).

    Runs first on the inbox thread for every event of a real user, before anything is joined,
    registered or connected. The first refused event of a user that can carry an answer (an
    invite of the bot or of a virtual user: declined with the reason; a message in a bridged
    or admin room: a notice) tells them why; everything after gets nothing. A leave or ban of
    a Matrix user passes: it only ends that user's own connection to the channel.
    """
    sender = str(event.get("sender"))
    if bridge.access.allowed(sender):
        return False
    content = content_ if isinstance(content_ := event.get("content"), dict) else {}
    target = event.get("state_key")
    etype = event.get("type")
    if etype == "m.room.member" and content.get("membership") in ("leave", "ban") \
            and isinstance(target, str) \
            and (target == sender or not bridge.directory.is_ours(UserId(target))):
        return False
    room_id = RoomId(str(event.get("room_id")))
    log.info("ignoring %s of %s in %s: not allowed by [permissions]", etype, sender, room_id)
    if etype == "m.room.member" and content.get("membership") == "invite" \
            and isinstance(target, str) and bridge.directory.is_ours(UserId(target)):
        if bridge.access.tell_once(sender):
            _decline(bridge, room_id, target, REFUSED.format(user=sender))
    elif etype == "m.room.message" and (bridge.directory.link_for_room(room_id) is not None or (
            bridge.admin is not None and bridge.admin.owner_of(room_id) is not None)):
        if bridge.access.tell_once(sender):
            try:
                bridge.bot.send_message(room_id, {"msgtype": "m.notice",
                                                  "body": REFUSED.format(user=sender)})
            except MatrixError as e:
                log.info("cannot tell %s in %s why: %s", sender, room_id, e)
    return True


def _decline(bridge: Gatekeeping, room_id: str, invitee: str, reason: str) -> None:
    """The invited bot or virtual user declines, saying why (it never joins)."""
    intent = bridge.bot if invitee == bridge.config.bot_user_id else \
        Intent(bridge.client, UserId(invitee), cache=bridge.cache)
    try:
        intent.ensure_registered()
        intent.leave(RoomId(room_id), reason=reason)
    except MatrixError as e:
        log.info("%s cannot decline the invite to %s: %s", invitee, room_id, e)


def _minutes(seconds: float) -> str:
    minutes = max(1, int(seconds // 60) + (1 if seconds % 60 else 0))
    return f"{minutes} minute{'s' if minutes != 1 else ''}"
