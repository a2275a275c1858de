"""Provisioning: link an existing Matrix room to an IRC channel, on behalf of a room admin.

Why apart from the web layer: the same checks serve the HTTP API
(`bridge.web.provisioning`) and the command line (`ircbridge link`), and they must stay
testable without Flask. Every refusal is a `ProvisioningError` carrying the HTTP status and a
Matrix-style errcode, so callers turn it into `{errcode, error}` or a one-line message.

Who acts: where the request carries a Matrix OpenID token (`openid_token`, as a widget gets
one), the user the homeserver vouches for (`bridge.matrix.openid`); a `user_id` in the body
must then name the same user. Otherwise the body's `user_id`, which only a holder of
`[provisioning] secret` can send at all.

Who may link: the acting user must be joined to the room with at least the power level needed
to change `m.room.power_levels` there (50 when unset). Room creators of room versions where
creators outrank power levels (v12 and later) always may. No user id skips that check, the
bot's included: only a request made as the bridge's admin (`admin=True`: the command line,
which proves it with `admin_token`, derived from the as_token of config.ini) does.

Thread: request threads (the provisioning blueprint); the CLI's main thread only uses
`admin_token`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from typing import Protocol

from ..config.ini import Config
from ..matrix import Forbidden, HomeserverClient, Intent, IntentCache, MatrixError, NotFound
from ..matrix.client import q
from ..matrix.openid import OpenIdRefused, user_of
from ..matrix.wire import JsonObject
from ..rules.ids import RoomId
from ..rules.names import valid_channel
from ..store.models import Link

log = logging.getLogger(__name__)

USER_ID_RE = re.compile(r"^@[^\s:]+:\S+$")
ROOM_ID_RE = re.compile(r"^![^\s/]+$")
DEFAULT_NEEDED = 50
INFINITE = 1 << 62


class ProvisioningError(Exception):
    def __init__(self, status: int, errcode: str, error: str):
        self.status = status
        self.errcode = errcode
        self.error = error
        super().__init__(error)


def admin_token(as_token: str) -> str:
    """The provisioning credential of the bridge's admin (the command line): only someone who
    can read config.ini's as_token can make it, and it does not reveal the as_token."""
    return hmac.new(as_token.encode("utf-8"), b"ircbridge provisioning admin",
                    hashlib.sha256).hexdigest()


class ProvisioningBridge(Protocol):
    """What the provisioning operations use of the bridge (the core's `Bridge` is one)."""

    @property
    def config(self) -> Config: ...
    @property
    def client(self) -> HomeserverClient: ...
    @property
    def bot(self) -> Intent: ...
    @property
    def cache(self) -> IntentCache: ...

    def links(self, room_id: RoomId | None = None) -> list[Link]: ...
    def links_for_room(self, room_id: RoomId) -> list[Link]: ...
    def link_for_room(self, room_id: RoomId) -> Link | None: ...
    def link_room(self, network: str, channel: str, room_id: RoomId, *, kind: str = "plumbed",
                  mirror_modes: bool = False, relay: bool | None = None) -> Link: ...
    def unlink_room(self, room_id: RoomId, network: str | None = None) -> Link | None: ...
    def fold_channel(self, network: str, channel: str) -> str: ...


def link_json(link: Link) -> JsonObject:
    return {"room_id": link.room_id, "network": link.network, "channel": link.channel_name,
            "kind": link.kind, "alias": link.alias}


def _field(body: object, name: str, pattern: re.Pattern[str] | None = None,
           what: str = "") -> str:
    if not isinstance(body, dict):
        raise ProvisioningError(400, "M_BAD_JSON", "The body must be a JSON object")
    value = body.get(name)
    if value is None or value == "":
        raise ProvisioningError(400, "M_MISSING_PARAM", f"Missing field {name!r}")
    if not isinstance(value, str):
        raise ProvisioningError(400, "M_INVALID_PARAM", f"{name!r} must be a string")
    if pattern is not None and not pattern.match(value):
        raise ProvisioningError(400, "M_INVALID_PARAM", f"{name!r} is not {what}: {value[:100]!r}")
    return value


def _flag(body: object, name: str) -> bool:
    """An optional true/false field (absent: false)."""
    value = body.get(name, False) if isinstance(body, dict) else False
    if not isinstance(value, bool):
        raise ProvisioningError(400, "M_INVALID_PARAM", f"{name!r} must be true or false")
    return value


def _relay(body: object) -> bool | None:
    """The optional `relay` field: true/false overrides the network's relay_mode for the
    room (bridge.core.relay); absent or null: the network's."""
    value = body.get("relay") if isinstance(body, dict) else None
    if value is not None and not isinstance(value, bool):
        raise ProvisioningError(400, "M_INVALID_PARAM", "'relay' must be true, false or null")
    return value


def power_check(power_levels: JsonObject | None, create: JsonObject,
                user_id: str) -> tuple[int, int]:
    """(the user's level, the level needed) in a room; INFINITE for v12+ creators."""
    content = content_ if isinstance(content_ := create.get("content"), dict) else {}
    version = str(content.get("room_version", "1"))
    creators = {create.get("sender")} | set(content.get("additional_creators") or [])
    if version.isdigit() and int(version) >= 12 and user_id in creators:
        return INFINITE, DEFAULT_NEEDED
    if not power_levels:
        return (100 if user_id == create.get("sender") else 0), DEFAULT_NEEDED

    def number(value: object, default: int) -> int:
        if not isinstance(value, (int, float, str)):
            return default
        try:
            return int(value)
        except (ValueError, OverflowError):
            return default

    users = users_ if isinstance(users_ := power_levels.get("users"), dict) else {}
    events = events_ if isinstance(events_ := power_levels.get("events"), dict) else {}
    level = number(users.get(user_id), number(power_levels.get("users_default"), 0))
    needed = number(events.get("m.room.power_levels"),
                    number(power_levels.get("state_default"), DEFAULT_NEEDED))
    return level, needed


class Provisioner:
    """The provisioning operations on a running bridge (request threads)."""

    def __init__(self, bridge: ProvisioningBridge):
        self.bridge = bridge
        self.config = bridge.config

    # ------------------------------------------------------------------ reads
    def networks(self) -> list[JsonObject]:
        return [{"name": n.name, "display_name": n.display_name, "host": n.host,
                 "port": n.port, "tls": n.tls} for n in self.config.networks]

    def links(self, room_id: str | None = None) -> list[JsonObject]:
        if room_id is not None and not ROOM_ID_RE.match(room_id):
            raise ProvisioningError(400, "M_INVALID_PARAM", f"Not a room id: {room_id[:100]!r}")
        room = RoomId(room_id) if room_id is not None else None
        return [link_json(lk) for lk in self.bridge.links(room)]

    # ------------------------------------------------------------------ who acts
    def acting_user(self, body: object) -> str:
        """The homeserver's word where an OpenID token came, else the body's `user_id`."""
        if not isinstance(body, dict) or body.get("openid_token") is None:
            return _field(body, "user_id", USER_ID_RE, "a Matrix user id (@user:server)")
        try:
            vouched = user_of(body["openid_token"], self.config.homeserver.url,
                              self.config.homeserver.domain)
        except OpenIdRefused as e:
            raise ProvisioningError(e.status, "M_FORBIDDEN" if e.status == 403 else "M_UNKNOWN",
                                    e.error) from None
        claimed = body.get("user_id")
        if claimed not in (None, "", vouched):
            raise ProvisioningError(403, "M_FORBIDDEN", f"The OpenID token is {vouched}'s, "
                                    f"not {str(claimed)[:100]!r}'s")
        return vouched

    # ------------------------------------------------------------------ link / unlink
    def link(self, body: object, *, admin: bool = False) -> JsonObject:
        room_id = _field(body, "room_id", ROOM_ID_RE, "a room id (!...)")
        network = _field(body, "network")
        channel = _field(body, "channel")
        user_id = self.acting_user(body)
        _flag(body, "mirror_modes")  # refused early when it is not a boolean
        relay = _relay(body)
        if self.config.network(network) is None:
            names = ", ".join(n.name for n in self.config.networks)
            raise ProvisioningError(404, "M_NOT_FOUND",
                                    f"Network {network!r} is not configured (networks: {names})")
        if not valid_channel(channel):
            raise ProvisioningError(400, "M_INVALID_PARAM",
                                    f"{channel[:100]!r} is not a valid IRC channel")
        self._check_free(network, channel, room_id)
        if not admin:
            self.check_power(room_id, user_id)
        existing = [lk for lk in self.bridge.links_for_room(RoomId(room_id))
                    if lk.network == network]
        if existing:  # the same pair again (_check_free refused any other)
            return link_json(existing[0])
        try:
            link = self.bridge.link_room(network, channel, RoomId(room_id), kind="plumbed",
                                         mirror_modes=_flag(body, "mirror_modes"), relay=relay)
        except ValueError as e:
            raise ProvisioningError(409, "M_ROOM_IN_USE", str(e)) from e
        except Forbidden as e:
            raise self._cannot_join(room_id) from e
        log.info("%s linked %s to %s on %s", user_id, room_id, channel, network)
        self._announce(room_id, f"This room is now bridged to {channel} on {network}.")
        return link_json(link)

    def unlink(self, body: object, *, admin: bool = False) -> JsonObject:
        room_id = _field(body, "room_id", ROOM_ID_RE, "a room id (!...)")
        user_id = self.acting_user(body)
        # A room linked on several networks: `network` unlinks one; without it, all.
        network = body.get("network") if isinstance(body, dict) else None
        network = network if isinstance(network, str) and network else None
        links = [lk for lk in self.bridge.links_for_room(RoomId(room_id))
                 if network in (None, lk.network)]
        if not links:
            raise ProvisioningError(404, "M_NOT_FOUND", f"{room_id} is not linked to IRC"
                                    + (f" on {network}" if network else ""))
        for link in links:
            if link.kind == "static":
                raise ProvisioningError(
                    409, "M_ROOM_IN_USE", f"{room_id} is linked by [network:{link.network}] "
                    "rooms in config.ini; remove it there and restart the bridge")
            if link.kind == "portal" and not admin:
                raise ProvisioningError(
                    409, "M_ROOM_IN_USE", f"{room_id} is the bridge's own room for "
                    f"{link.channel_name}; only the bridge's admin can unlink it")
        if not admin:
            self.check_power(room_id, user_id)
        self.bridge.unlink_room(RoomId(room_id), network)
        for link in links:
            log.info("%s unlinked %s from %s on %s", user_id, room_id, link.channel_name,
                     link.network)
        link = links[0]
        if self.bridge.links_for_room(RoomId(room_id)):
            self._announce(room_id, f"This room is no longer bridged to {link.channel_name} "
                           f"on {link.network}.")
        elif link.kind == "plumbed":
            self._announce(room_id, f"This room is no longer bridged to {link.channel_name}.")
            try:
                self.bridge.bot.leave(RoomId(room_id))
            except MatrixError as e:
                log.info("leaving %s after unlink: %s", room_id, e)
        return link_json(link)

    def _check_free(self, network: str, channel: str, room_id: str) -> None:
        folded = self.bridge.fold_channel(network, channel)
        for link in self.bridge.links():
            if link.network == network and link.channel == folded and link.room_id != room_id:
                raise ProvisioningError(
                    409, "M_ROOM_IN_USE",
                    f"{channel} on {network} is already linked to {link.room_id}")
            if link.room_id == room_id and link.network == network and link.channel != folded:
                raise ProvisioningError(
                    409, "M_ROOM_IN_USE",
                    f"{room_id} is already linked to {link.channel_name} on {link.network}")

    # ------------------------------------------------------------------ power levels
    def _cannot_join(self, room_id: str) -> ProvisioningError:
        return ProvisioningError(
            403, "M_FORBIDDEN", f"The bridge bot cannot join {room_id}: make the room public "
            f"or invite {self.config.bot_user_id} first")

    def check_power(self, room_id: str, user_id: str) -> None:
        """Raise unless `user_id` may change the room's power levels (the bot reads them)."""
        bot = self.config.bot_user_id
        was_joined = self.bridge.cache.is_joined(RoomId(room_id), bot)
        try:
            self.bridge.bot.join(room_id)
        except (Forbidden, NotFound) as e:
            raise self._cannot_join(room_id) from e
        try:
            self._check_power(room_id, user_id)
        except ProvisioningError:
            if not was_joined and self.bridge.link_for_room(RoomId(room_id)) is None:
                try:
                    self.bridge.bot.leave(RoomId(room_id))
                except MatrixError as e:
                    log.info("leaving %s after a refused request: %s", room_id, e)
            raise

    def _check_power(self, room_id: str, user_id: str) -> None:
        client = self.bridge.client
        member = client.get_state(RoomId(room_id), "m.room.member", user_id)
        if not member or member.get("membership") != "join":
            raise ProvisioningError(403, "M_FORBIDDEN", f"{user_id} is not in {room_id}")
        power = client.get_state(RoomId(room_id), "m.room.power_levels")
        level, needed = power_check(power, self._create_event(room_id), user_id)
        if level < needed:
            raise ProvisioningError(
                403, "M_FORBIDDEN", f"{user_id} has power level {level} in {room_id}; "
                f"linking needs {needed} (the level to change the room's power levels)")

    def _create_event(self, room_id: str) -> JsonObject:
        """The room's m.room.create event with its sender (the creator)."""
        client = self.bridge.client
        path = f"/_matrix/client/v3/rooms/{q(room_id)}/state/m.room.create/"
        answer = client.request("GET", path, params={"format": "event"})
        if "sender" in answer and isinstance(answer.get("content"), dict):
            return answer
        # An older homeserver answers with the content only: the room's first event is it.
        first = client.request("GET", f"/_matrix/client/v3/rooms/{q(room_id)}/messages",
                               params={"dir": "f", "limit": "1"})
        chunk = first.get("chunk")
        for event in chunk if isinstance(chunk, list) else []:
            if isinstance(event, dict) and event.get("type") == "m.room.create":
                return event
        return {"content": answer}

    def _announce(self, room_id: str, text: str) -> None:
        try:
            self.bridge.bot.send_message(RoomId(room_id), {"msgtype": "m.notice", "body": text})
        except MatrixError as e:
            log.info("cannot announce in %s: %s", room_id, e)
