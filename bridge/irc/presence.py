"""IRCv3 away-notify, chghost, account-notify, setname and `+typing` on one network.

In: AWAY (away-notify) and TAGMSG `+typing` from other people become `IrcAway` /
`IrcTyping` events for the core (`IrcListener.irc_ephemeral`), heard once per network (from
the connection that relays a channel the nick is in). away-notify tells only changes, so
the relaying connection asks `WHO #channel` once it is in a channel (`ask_who_is_away`):
a `G` (gone) in a reply is someone who went away before we came. CHGHOST, ACCOUNT and
SETNAME change nothing of the membership: the person is still there (without these caps
the server sends a QUIT and a JOIN instead, which is membership churn; with them on, these
commands are only noted in the network's `identities`).

Out: `send_typing` (a `+typing` TAGMSG from a puppet, only where message-tags is on) and
`set_away` (AWAY for a puppet, from Matrix presence).

Thread: the IRC thread only (the functions take the network whose IRC thread runs them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import irc.client

from ..rules.names import is_channel
from .connection import IrcConnection, State
from .events import tag_map
from .threadcheck import irc_thread_only

log = logging.getLogger(__name__)

TYPING_STATES = frozenset({"active", "paused", "done"})
AWAY_BEFORE_US = "away"  # the status of someone WHO says is away: WHO gives no away text
MAX_IDENTITIES = 10000  # nicks (host, account, realname) and away lines kept, oldest out first


@dataclass(frozen=True)
class IrcAway:
    """`nick` went away (`message` is their away text) or came back (`message` None)."""

    network: str
    nick: str
    message: str | None


@dataclass(frozen=True)
class IrcTyping:
    """`nick` is typing (`state` active), stopped (paused) or gave up (done) in `channel`
    (folded)."""

    network: str
    channel: str
    nick: str
    state: str


IrcPresence = IrcAway | IrcTyping


class PresenceListener(Protocol):
    def irc_ephemeral(self, event: IrcPresence) -> None: ...


@dataclass(frozen=True)
class Identity:
    """What CHGHOST / ACCOUNT / SETNAME told of a nick (None: not told)."""

    user: str | None = None
    host: str | None = None
    account: str | None = None
    realname: str | None = None


class Network(Protocol):
    """What these handlers use of bridge.irc.network.Network (IRC thread)."""

    name: str
    members: dict[str, set[str]]
    identities: dict[str, Identity]
    away_lines: dict[str, str]
    puppets: dict[str, IrcConnection]
    fold: Callable[[str], str]

    @property
    def listener(self) -> PresenceListener: ...

    @property
    def thread(self) -> object: ...

    def forwarder(self, channel: str) -> IrcConnection | None: ...

    def _ours(self, nick: str) -> bool: ...


def typing_state(tags: Mapping[str, str] | None) -> str | None:
    """The `+typing` client tag's state (active, paused, done), None when absent or bad."""
    value = (tags or {}).get("+typing")
    return value if value in TYPING_STATES else None


def is_away_notify(event: irc.client.Event) -> bool:
    """AWAY from a user (away-notify), not the 301 RPL_AWAY numeric (the library names both
    `away`, even with the same code; the numeric comes from the server, whose name has no
    `!user@host`)."""
    return event.source is not None and "!" in str(event.source)


def _sharing(network: Network, conn: IrcConnection, nick: str) -> bool:
    """Is `conn` the relaying connection of a channel that `nick` is in? (Every connection
    of ours in such a channel hears the same AWAY: one of them speaks for the network.)"""
    folded = network.fold(nick)
    return any(folded in members and network.forwarder(channel) is conn
               for channel, members in network.members.items())


@irc_thread_only
def on_away(network: Network, conn: IrcConnection, event: irc.client.Event) -> None:
    """`:nick!u@h AWAY :message` (away) or `:nick!u@h AWAY` (back)."""
    if not is_away_notify(event):
        return
    nick = event.source.nick if event.source else ""
    if not nick or network._ours(nick) or not _sharing(network, conn, nick):
        return
    # The library puts the first parameter into `target`.
    message = event.target if isinstance(event.target, str) and event.target else None
    if message is None and event.arguments:
        message = event.arguments[0] or None
    network.listener.irc_ephemeral(IrcAway(network.name, nick, message))


@irc_thread_only
def ask_who_is_away(network: Network, conn: IrcConnection, channel: str) -> None:
    """`conn` relays `channel` and has its names: ask WHO, for who is away already. Only
    with away-notify, which then tells when they come back."""
    if "away-notify" in conn.caps.enabled and network.forwarder(channel) is conn:
        conn.send(f"WHO {channel}")


@irc_thread_only
def on_whoreply(network: Network, conn: IrcConnection, event: irc.client.Event) -> None:
    """352 `<channel> <user> <host> <server> <nick> <flags> :<hops> <realname>`: flags `G...`
    is away (`H...` here: nothing to say, everyone is online until told)."""
    args = event.arguments
    if len(args) < 6 or not args[5].startswith("G"):
        return
    channel, nick = args[0], args[4]
    if not nick or network._ours(nick) or network.forwarder(channel) is not conn:
        return
    network.listener.irc_ephemeral(IrcAway(network.name, nick, AWAY_BEFORE_US))


@irc_thread_only
def on_tagmsg(network: Network, conn: IrcConnection, event: irc.client.Event) -> None:
    """`@+typing=active :nick!u@h TAGMSG #channel`: the person's typing in the channel."""
    state = typing_state(tag_map(event.tags))
    nick = event.source.nick if event.source else ""
    channel = event.target or ""
    if state is None or not nick or not is_channel(channel) or network._ours(nick):
        return
    if network.forwarder(channel) is not conn:
        return
    network.listener.irc_ephemeral(IrcTyping(network.name, network.fold(channel), nick, state))


@irc_thread_only
def on_identity(network: Network, conn: IrcConnection, event: irc.client.Event) -> None:
    """CHGHOST user host / ACCOUNT name|* / SETNAME :realname: kept, never a leave/join."""
    nick = event.source.nick if event.source else ""
    if not nick or network._ours(nick) or not _sharing(network, conn, nick):
        return
    folded = network.fold(nick)
    known = network.identities.get(folded, Identity())
    first = event.target if isinstance(event.target, str) else None
    if event.type == "chghost":
        host = event.arguments[0] if event.arguments else None
        known = Identity(first, host, known.account, known.realname)
    elif event.type == "account":
        known = Identity(known.user, known.host, None if first in (None, "*") else first,
                         known.realname)
    elif event.type == "setname":
        known = Identity(known.user, known.host, known.account, first)
    network.identities.pop(folded, None)
    network.identities[folded] = known
    while len(network.identities) > MAX_IDENTITIES:
        del network.identities[next(iter(network.identities))]
    log.debug("%s: %s is now %s", network.name, nick, known)


def _puppet(network: Network, user_id: str) -> IrcConnection | None:
    conn = network.puppets.get(user_id)
    if conn is None or conn.state is not State.CONNECTED:
        return None
    return conn


@irc_thread_only
def send_typing(network: Network, user_id: str, channel: str, state: str) -> bool:
    """The user's puppet tells the channel it is typing; only a connected puppet that is in
    the channel and has message-tags (a client tag needs it). False when nothing was sent."""
    if state not in TYPING_STATES:
        return False
    conn = _puppet(network, user_id)
    if conn is None or "message-tags" not in conn.caps.enabled:
        return False
    if network.fold(channel) not in conn.channels:
        return False
    return conn.send_now(f"@+typing={state} TAGMSG {channel}")


@irc_thread_only
def set_away(network: Network, user_id: str, line: str) -> bool:
    """Send `AWAY :text` or `AWAY` (back) from the user's puppet, if it is connected (a
    puppet is never made for this). An away line is kept for the puppet's next
    registration (a reconnect, or a puppet made later): see `registered`."""
    if line == "AWAY":
        network.away_lines.pop(user_id, None)
    else:
        network.away_lines.pop(user_id, None)
        network.away_lines[user_id] = line
        while len(network.away_lines) > MAX_IDENTITIES:
            del network.away_lines[next(iter(network.away_lines))]
    conn = _puppet(network, user_id)
    return conn is not None and conn.send_now(line)


def registered(network: Network, conn: IrcConnection) -> None:
    """A puppet (re)connected: it is away again if its user was away on Matrix."""
    line = network.away_lines.get(conn.owner)
    if line is not None:
        conn.send_now(line)
