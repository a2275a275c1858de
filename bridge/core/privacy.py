"""Private stays private: what a channel's modes mean for its Matrix room.

A part of `core.Bridge`, given its collaborators. A channel that is keyed, invite-only,
secret or private (+k/+i/+s/+p), or that our bot cannot join, never gets a room others can
join: no portal through its alias (the query answers 404), only an invite-only, unlisted
room with history visible from joining on, made for a Matrix user whose puppet is in the
channel; its members are invited as their puppets join; its scrollback is never kept nor
replayed. A portal whose channel turns private is made so, with a notice. This is what
matrix-appservice-irc does for private channels (invite-only rooms, members synced by invites).

Linked rooms (provisioning, `ircbridge link`, static `rooms =`) belong to their Matrix
admins: IRC modes change them only when the link says `mirror_modes`, and even then never
to `public`, never lowering a level the bridge did not set, never above 50.

Threads: `irc_channel_state` and `irc_power` run on the IRC thread and only queue lines; the
`_state_*` handlers run on the homeserver senders; `query_room`'s checks on request threads.
The per-room options live in the store's `room_option` table (bridge/store/room_options.py).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from ..config.ini import Config
from ..irc import IrcSide
from ..irc.events import IrcChannelState, IrcPower
from ..irc.modes import MAX_LEVEL, ChannelState
from ..matrix import HomeserverClient, Intent, MatrixError
from ..matrix.state import PowerLevels
from ..rules.ids import JsonDict, RoomId, UserId
from ..store.kinds import Invite, JoinRule, LineKind, MadePrivate, Power
from ..store.models import Link, QueuedLine
from ..store.room_options import RoomOptions
from .directory import Directory
from .lines import LineQueue
from .ports import AdminPort

log = logging.getLogger(__name__)

# Which users' levels the bridge set itself, kept inside m.room.power_levels so it survives
# restarts and stays with the room: the bridge only ever changes those.
SET_BY_BRIDGE = "org.ircbridge.levels"
PRIVATE_NOTICE = ("This channel became private on IRC ({why}): this room is now invite-only "
                  "and unlisted, and new members see only what is said after they join.")


REFUSED_NOTICE = ("The bridge cannot join {channel} on IRC ({why}): nothing said there is "
                  "relayed into this room until it can.")


class ChannelPrivacy:
    """Channel modes -> the room's join rule, listing, history and members (see module)."""

    def __init__(self, config: Config, client: HomeserverClient, bot: Intent, irc: IrcSide,
                 room_options: RoomOptions, directory: Directory, lines: LineQueue,
                 power_levels: PowerLevels):
        self.config = config
        self.client = client
        self.bot = bot
        self.irc = irc
        self.room_options = room_options
        self.directory = directory
        self.lines = lines
        self.power_levels = power_levels  # the rooms' levels, fed by the homeserver's pushes
        self.admin: AdminPort | None = None  # set by Bridge.attach
        # (network, folded channel) -> its modes, as the IRC thread last published them.
        # Written by the IRC thread only, and replaced whole (never changed in place), so
        # other threads read an immutable snapshot.
        self._channel_states: Mapping[tuple[str, str], ChannelState] = {}

    # ------------------------------------------------------------ questions (any thread)
    def channel_state(self, network: str, channel: str) -> ChannelState:
        return self._channel_states.get((network, channel), ChannelState())

    def channel_is_private(self, network: str, channel: str) -> bool:
        """Private by its modes now, or its room was made private (and not since public)."""
        if self.channel_state(network, channel).private:
            return True
        link = self.directory.link_for_channel(network, channel)
        return link is not None and self.room_options.private(link.room_id)

    def room_is_private(self, room_id: RoomId) -> bool:
        return self.room_options.private(room_id)

    def may_relay(self, network: str, channel: str) -> bool:
        """May what our connections read in a channel go to Matrix? Not a private channel's
        lines without a room (they would be replayed later); not, into a linked room that
        does not follow the channel's modes, what only a puppet can read because the bot is
        kept out: that room may be one anybody can join."""
        link = self.directory.link_for_channel(network, channel)
        if link is None:
            return not self.channel_is_private(network, channel)
        if link.kind == "portal" or self.room_options.mirror_modes(link.room_id):
            return True  # made invite-only when the channel turned private
        return self.channel_state(network, channel).bot_refused is None

    def mirrors_modes(self, link: Link) -> bool:
        """Portals follow the channel's modes; linked rooms only when the link says so."""
        return link.kind == "portal" or self.room_options.mirror_modes(link.room_id)

    # ------------------------------------------------------------ IRC listener (IRC thread)
    def irc_channel_state(self, event: IrcChannelState) -> None:
        network, channel, state = event.network, event.channel, event.state
        before = self._channel_states.get((network, channel), ChannelState())
        self._channel_states = {**self._channel_states, (network, channel): state}
        link = self.directory.link_for_channel(network, channel)
        if link is None or not state.known and state.bot_refused is None:
            return
        if state.bot_refused and not before.bot_refused and not self.mirrors_modes(link):
            self.lines.record(network, channel, "", self.config.bot_user_id, "m.notice",
                              REFUSED_NOTICE.format(channel=link.channel_name,
                                                    why=state.bot_refused), None)
        was_private = before.private or self.room_options.private(link.room_id)
        if state.private == was_private:
            return  # the join rule follows the whole mode set, not each change
        if link.kind == "portal" and state.private:
            self.lines.state(network, channel, "", self.config.bot_user_id, LineKind.PRIVATE,
                             MadePrivate(state.describe()))
        elif link.kind == "portal" or state.private and self.mirrors_modes(link):
            self.lines.state(network, channel, "", self.config.bot_user_id, LineKind.JOIN_RULE,
                             JoinRule(state.private))

    def irc_power(self, event: IrcPower) -> None:
        network, channel, nick, user_id = event.network, event.channel, event.nick, event.user_id
        level = event.level
        link = self.directory.link_for_channel(network, channel)
        if link is None or not self.mirrors_modes(link):
            return
        sender = user_id or self.directory.sender_for_nick(network, nick)
        self.lines.state(network, channel, nick, sender, LineKind.POWER,
                         Power(level, bool(user_id)))

    def puppet_joined(self, network: str, user_id: UserId, channel: str) -> None:
        """A puppet is in a private channel: its user is invited to the room (IRC thread)."""
        link = self.directory.link_for_channel(network, channel)
        if link is not None and self.channel_is_private(network, channel):
            self.lines.state(network, channel, "", user_id, LineKind.INVITE, Invite())

    # ------------------------------------------------------------ portal rooms (request thread)
    def portal_room_body(self, private: bool) -> JsonDict:
        """The createRoom fields that differ between a public portal and a private one."""
        if private:
            return {
                "preset": "private_chat",
                "initial_state": [
                    {"type": "m.room.history_visibility", "state_key": "",
                     "content": {"history_visibility": "joined"}},
                    {"type": "m.room.guest_access", "state_key": "",
                     "content": {"guest_access": "forbidden"}},
                ],
            }
        return {
            "preset": "public_chat",
            "initial_state": [
                {"type": "m.room.history_visibility", "state_key": "",
                 "content": {"history_visibility": "shared"}},
            ],
        }

    def puppet_in(self, network: str, user_id: str, channel: str) -> bool:
        """Is the user's own IRC connection in the channel? (asks the IRC thread)"""
        net = self.irc.network(network)
        if net is None or not self.irc.started:
            return False
        try:
            return bool(self.irc.call_sync(net.puppet_in, user_id, channel, timeout=5.0))
        except TimeoutError:
            return False

    # ------------------------------------------------------------ delivery (senders)
    def state_private(self, line: QueuedLine, room_id: RoomId, made: MadePrivate) -> str:
        """The channel turned private: invite-only, history from joining, unlisted, told."""
        self.room_options.set(room_id, private=True)
        event_id = self.bot.set_state(room_id, "m.room.join_rules", "", {"join_rule": "invite"})
        self.bot.set_state(room_id, "m.room.history_visibility", "",
                           {"history_visibility": "joined"})
        try:
            self.client.publish_appservice_room(line.network, room_id,
                                                self.config.appservice.id, visible=False)
        except MatrixError as e:
            log.warning("cannot unlist %s: %s", room_id, e)
        if self.admin is not None:
            self.admin.room_unlisted(room_id)
        link = self.directory.link_for_room(room_id)
        if link is not None and link.alias:
            try:  # the predictable alias now answers 404, as for any private channel
                self.client.request("DELETE", "/_matrix/client/v3/directory/room/"
                                    + _quote(link.alias))
            except MatrixError as e:
                log.info("cannot remove alias %s: %s", link.alias, e)
        self.bot.send_message(room_id, {
            "msgtype": "m.notice",
            "body": PRIVATE_NOTICE.format(why=made.why or "private modes"),
        })
        return event_id

    def state_join_rule(self, line: QueuedLine, room_id: RoomId, rule: JoinRule) -> str:
        link = self.directory.link_for_room(room_id)
        if not rule.invite:
            if link is None or link.kind != "portal":
                return ""  # a linked room is never opened to the public by IRC
            self.room_options.set(room_id, private=False)  # its history stays "joined"
        join_rule = "invite" if rule.invite else "public"
        return self.bot.set_state(room_id, "m.room.join_rules", "", {"join_rule": join_rule})

    def state_power(self, line: QueuedLine, room_id: RoomId, power_of: Power) -> str:
        """A member's highest IRC prefix as their power: only levels the bridge set itself
        are ever lowered, and it never grants more than 50."""
        if not power_of.matrix_user:
            self.directory.prepare_ghost(line.network, line.nick, line.sender)
        power = self.power_levels.get(room_id)
        users = _levels(power.get("users"))
        ours = _levels(power.get(SET_BY_BRIDGE))
        default = _level(power.get("users_default"))
        level = min(MAX_LEVEL, power_of.level)
        current = int(users.get(line.sender, default))
        if line.sender == self.config.bot_user_id or current == level:
            return ""
        link = self.directory.link_for_room(room_id)
        legacy = link is not None and link.kind == "portal" and not ours \
            and current <= MAX_LEVEL  # a portal from before the bridge kept its marks
        if level < current and ours.get(line.sender) != current and not legacy:
            return ""  # set on the Matrix side: not the bridge's to lower
        if level != default:
            users[line.sender] = level
            ours[line.sender] = level
        else:
            users.pop(line.sender, None)
            ours.pop(line.sender, None)
        content = {**power, "users": users, SET_BY_BRIDGE: ours}
        event_id = self.bot.set_state(room_id, "m.room.power_levels", "", content)
        self.power_levels.set(room_id, content)
        return event_id

    def state_invite(self, line: QueuedLine, room_id: RoomId) -> str:
        """Invite a Matrix user whose puppet joined the private channel of this room."""
        try:
            member = self.bot.get_state(room_id, "m.room.member", line.sender) or {}
        except MatrixError:
            member = {}
        if member.get("membership") in ("join", "invite", "ban"):
            return ""
        self.bot.invite(room_id, line.sender)
        return ""


def _level(value: object) -> int:
    """A power level as the homeserver stores it (an int, or a numeric string in old rooms)."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return 0


def _levels(value: object) -> dict[str, int]:
    """A `users` map of power levels, user id -> level."""
    if not isinstance(value, dict):
        return {}
    return {str(k): _level(v) for k, v in value.items()}


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")
