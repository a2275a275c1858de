"""What the IRC side tells the core: one frozen dataclass per kind of event.

Built on the IRC thread by `bridge.irc.network` (and `bridge.irc.connection`) and handed to
the core's `IrcListener` methods, still on the IRC thread. Immutable values only, so the
listener may queue them for any thread. The kinds are IRC's own (PRIVMSG, NOTICE, CTCP
ACTION): what they become on Matrix is the core's business (`bridge.core.irc_to_matrix`).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

from ..rules.ids import UserId
from .modes import ChannelState

_NO_TAGS: Mapping[str, str] = MappingProxyType({})
_NO_MENTIONS: Mapping[str, UserId] = MappingProxyType({})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)

# How far a server's `time` tag may be from our clock before we distrust it and use the
# receive time: a server clock ahead of ours, or a line older than this said "live", is
# more likely a broken clock than the truth. History (CHATHISTORY backfill) is old by
# nature and is only held to the future bound.
MAX_FUTURE_SKEW_MS = 5 * 60 * 1000
MAX_PAST_SKEW_MS = 24 * 60 * 60 * 1000


def tag_map(tags: Iterable[Mapping[str, str | None]] | None) -> Mapping[str, str]:
    """jaraco's `event.tags` (a list of {"key", "value"}, or None) as key -> value ("" for a
    tag without one), immutable."""
    if not tags:
        return _NO_TAGS
    return MappingProxyType({str(t["key"]): t.get("value") or "" for t in tags if t.get("key")})


def parse_server_time(value: str | None) -> int | None:
    """The `time` tag (`2026-12-03T09:47:25.123Z`, server-time.md) in ms since the epoch,
    exactly (no float rounding); None when absent or not a timestamp."""
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # the spec says UTC; some servers drop the Z
    return (when - _EPOCH) // _MS


def line_ts(server_ms: int | None, received_ms: int, *, history: bool = False) -> int:
    """The Matrix `ts` of a line: the server's time when it is within the skew bounds of
    the receive time (`history`: any age), else the receive time."""
    if server_ms is None or server_ms - received_ms > MAX_FUTURE_SKEW_MS:
        return received_ms
    if not history and received_ms - server_ms > MAX_PAST_SKEW_MS:
        return received_ms
    return server_ms


class IrcKind(enum.StrEnum):
    """How a line was said on IRC."""

    PRIVMSG = "privmsg"
    NOTICE = "notice"
    ACTION = "action"  # CTCP ACTION (/me)


@dataclass(frozen=True)
class IrcMessage:
    """A line said in a channel we relay; `mentions` maps the nicks of our puppets named
    in it to their Matrix users. `tags` are the line's IRCv3 message tags (empty when the
    server sent none), `server_time` its `time` tag in seconds, as the server said it (`ts`
    is that time unless it is beyond the skew bounds, see `line_ts`)."""

    network: str
    channel: str  # folded with the network's casemapping
    nick: str
    text: str
    kind: IrcKind
    ts: int  # ms: the server's time tag, else when it arrived
    mentions: Mapping[str, UserId] = field(default_factory=lambda: _NO_MENTIONS)
    tags: Mapping[str, str] = field(default_factory=lambda: _NO_TAGS)
    server_time: float | None = None


@dataclass(frozen=True)
class IrcPrivate:
    """A line said to one of our puppets (`owner` is its Matrix user)."""

    network: str
    owner: UserId
    nick: str
    text: str
    kind: IrcKind
    ts: int
    tags: Mapping[str, str] = field(default_factory=lambda: _NO_TAGS)
    server_time: float | None = None


@dataclass(frozen=True)
class IrcReaction:
    """Someone reacted on IRC (TAGMSG `+draft/react=<key>;+draft/reply=<msgid>`) in a
    channel we relay."""

    network: str
    channel: str  # folded
    nick: str
    key: str
    msgid: str  # the line reacted to


@dataclass(frozen=True)
class IrcTopic:
    """A channel's topic: `nick` set it just now, None when the server told it (on join)
    or when it is our own puppet's echo."""

    network: str
    channel: str
    topic: str
    nick: str | None


class MembershipChange(enum.StrEnum):
    JOIN = "join"
    PART = "part"
    QUIT = "quit"
    KICK = "kick"
    NICK = "nick"


@dataclass(frozen=True)
class IrcMembership:
    """Someone else (never one of ours) joined, left or was renamed in a channel."""

    network: str
    channel: str
    nick: str
    change: MembershipChange
    ts: int | None = None  # JOIN: ms, as for messages
    reason: str = ""  # PART, QUIT, KICK
    by: str = ""  # KICK: who kicked
    new_nick: str = ""  # NICK
    netsplit: bool = False  # QUIT: a netsplit ghost that did not come back in time


@dataclass(frozen=True)
class IrcPower:
    """A member's channel level changed; `user_id` is set when the member is our puppet."""

    network: str
    channel: str
    nick: str
    level: int
    user_id: UserId | None


@dataclass(frozen=True)
class IrcChannelState:
    """A channel's modes (as far as they matter to the bridge) changed."""

    network: str
    channel: str
    state: ChannelState


@dataclass(frozen=True)
class IrcCasemapping:
    """The network announced its CASEMAPPING (already in its published snapshot)."""

    network: str
    casemapping: str


@dataclass(frozen=True)
class IrcFailure:
    """IRC refused a line a Matrix user sent to `target` (a channel or a nick)."""

    network: str
    owner: UserId
    target: str
    reason: str


class ConnectionChange(enum.StrEnum):
    CONNECTED = "connected"
    LOST = "lost"
    BANNED = "banned"
    SASL_FAILED = "sasl_failed"
    PASSWORD_REFUSED = "password_refused"
    NICK_REFUSED = "nick_refused"
    NICK_COLLISION = "nick_collision"
    NICK_CHANGED = "nick_changed"
    JOINED = "joined"
    KICKED = "kicked"
    REJOINED = "rejoined"
    CHANNEL_MODES = "channel_modes"
    CHANNEL_REFUSED = "channel_refused"
    CHANNEL_READY = "channel_ready"


@dataclass(frozen=True, eq=False)  # compared by identity: one event may be handed on twice
class IrcConnectionEvent:
    """Something happened to one of our connections (`owner` "" is the bot) or to the
    bot's presence in a channel. Which fields are set depends on `change`:

    CONNECTED nick; LOST and BANNED reason, retry_in; SASL_FAILED and PASSWORD_REFUSED
    reason; NICK_REFUSED nick; NICK_COLLISION wanted, using; NICK_CHANGED old, new;
    JOINED, REJOINED, CHANNEL_MODES channel; KICKED channel, by, reason, nick, rejoin_in;
    CHANNEL_REFUSED channel, reason; CHANNEL_READY channel, nicks.
    """

    network: str
    owner: UserId  # "" for the bot
    change: ConnectionChange
    nick: str | None = None
    reason: str | None = None
    retry_in: float | None = None
    channel: str | None = None
    by: str | None = None
    rejoin_in: float | None = None
    old: str | None = None
    new: str | None = None
    wanted: str | None = None
    using: str | None = None
    nicks: tuple[str, ...] | None = None


IrcEvent = (IrcMessage | IrcPrivate | IrcTopic | IrcMembership | IrcPower | IrcChannelState
            | IrcCasemapping | IrcFailure | IrcConnectionEvent | IrcReaction)
