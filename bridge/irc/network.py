"""One configured IRC network: the bot connection, one puppet per Matrix user, and the rule
that decides which of our connections forwards a channel's lines.

Runs on the IRC thread only. Events go up to the core through an `IrcListener`, whose
methods must only queue work (they run on the IRC thread).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Protocol

import irc.client
import irc.modes

from ..rules.ids import UserId
from ..rules.names import casefolder, irc_lower, is_channel, puppet_nick
from . import multiline, relaymsg
from .backoff import is_ban
from .botlogin import apply_bot_login
from .connection import REFUSED, ConnectSlots, IrcConnection, Sasl, State
from .echo import MessageSend
from .echoes import FormerNicks
from .events import (
    ConnectionChange,
    IrcCasemapping,
    IrcChannelState,
    IrcConnectionEvent,
    IrcFailure,
    IrcKind,
    IrcMembership,
    IrcMessage,
    IrcPower,
    IrcPrivate,
    IrcReaction,
    IrcTopic,
    MembershipChange,
    line_ts,
    parse_server_time,
    tag_map,
)
from .history import History
from .kicks import Rejoins
from .modes import ChannelModes, ChannelState, ModeSyntax, parse_modes
from .presence import (
    Identity,
    IrcPresence,
    ask_who_is_away,
    on_away,
    on_identity,
    on_tagmsg,
    on_whoreply,
    registered,
)
from .reactions import on_reaction
from .receipt import Receipt
from .snapshot import NetworkSnapshot
from .splits import Splits, is_netsplit
from .threadcheck import irc_thread_only

if TYPE_CHECKING:
    from ..config.ini import NetworkConfig
    from .reactor import IrcThread

log = logging.getLogger(__name__)

BOT = UserId("")  # the `owner` of the bot's own connection events


class IrcListener(Protocol):
    """What the IRC side tells the core, one typed event (bridge.irc.events) per call.
    Called on the IRC thread: queue, never block."""

    def irc_message(self, event: IrcMessage) -> None:
        """A channel line; `event.mentions` maps our puppets' nicks named in it to their
        user ids."""

    def irc_private(self, event: IrcPrivate) -> None: ...

    def irc_topic(self, event: IrcTopic) -> None: ...

    def irc_connection(self, event: IrcConnectionEvent) -> None: ...

    def irc_membership(self, event: IrcMembership) -> None: ...

    def irc_power(self, event: IrcPower) -> None: ...

    def irc_channel_state(self, event: IrcChannelState) -> None: ...

    def irc_casemapping(self, event: IrcCasemapping) -> None: ...

    def irc_failure(self, event: IrcFailure) -> None: ...

    def irc_reaction(self, event: IrcReaction) -> None: ...

    def irc_ephemeral(self, event: IrcPresence) -> None:
        """Away/back and typing of someone on IRC (bridge.irc.presence); may be dropped."""


LIVENESS_EVERY = 30.0
TOPIC_RETRIES = 3  # a topic change the server asks to retry later is sent again this often
TOPIC_RETRY_AFTER = 1.5  # seconds: InspIRCd refuses a second change within one second
# Lines a broken server may send without the parts their handlers need.
_NEEDS_CHANNEL = frozenset({"join", "part", "kick", "topic", "mode", "pubmsg", "pubnotice"})
_NEEDS_ARGUMENT = frozenset({"kick", "pubmsg", "pubnotice", "privmsg", "privnotice",
                             "currenttopic", "namreply"})
# Numerics that refuse a JOIN (the channel is then no longer one we want to be in).
_JOIN_REFUSALS = frozenset({"nosuchchannel", "toomanychannels", "470", "channelisfull",
                            "inviteonlychan", "bannedfromchan", "badchannelkey", "nochanmodes",
                            "489"})
_WORD = re.compile(r"[A-Za-z\[\]\\`_^{|}][A-Za-z0-9\[\]\\`_^{|}-]*")


def _text(settings: Mapping[str, object], key: str) -> str | None:
    value = settings.get(key)
    return value if isinstance(value, str) else None


def apply_settings(conn: IrcConnection, settings: Mapping[str, object]) -> None:
    """Give a connection that has not registered yet the user's login settings."""
    password = _text(settings, "password")
    kind = _text(settings, "password_kind") or "server"
    certificate = settings.get("certificate")
    if conn.network.tls and isinstance(certificate, dict) and certificate.get("certificate") \
            and certificate.get("key"):  # a client certificate needs TLS
        conn.client_cert = (str(certificate["certificate"]), str(certificate["key"]))
        conn.sasl = Sasl("EXTERNAL")
    if password and kind == "sasl" and conn.sasl is None:
        account = _text(settings, "sasl_username") or _text(settings, "username") \
            or conn.username
        conn.sasl = Sasl("PLAIN", account, password)
    elif password and kind == "server":
        conn.password = password
    autocmds = settings.get("autocmds")
    conn.autocmds = [str(line) for line in autocmds] if isinstance(autocmds, list) else []


def event_time_ms(event: irc.client.Event) -> int:
    """The IRCv3 `time` tag when the server sent one within the skew bounds, else now."""
    return line_ts(parse_server_time(tag_map(event.tags).get("time")), int(time.time() * 1000))


def _line_times(event: irc.client.Event, *, history: bool = False,
                ) -> tuple[int, Mapping[str, str], float | None]:
    """(ts in ms, tags, the `time` tag in seconds or None) of a relayed line."""
    tags = tag_map(event.tags)
    server_ms = parse_server_time(tags.get("time"))
    ts = line_ts(server_ms, int(time.time() * 1000), history=history)
    return ts, tags, None if server_ms is None else server_ms / 1000


class Network:
    """The bridge's presence on one IRC network (IRC thread only)."""

    def __init__(
        self,
        config: NetworkConfig,
        thread: IrcThread,
        connector: ThreadPoolExecutor,
        listener: IrcListener,
        *,
        bot_nick: str,
        register: Callable[[irc.client.ServerConnection, IrcConnection], None],
        unregister: Callable[[irc.client.ServerConnection], None],
    ):
        self.config = config
        self.name = config.name
        self.thread = thread
        self.connector = connector
        self.listener = listener
        self.bot_nick = bot_nick
        self._register = register
        self._unregister = unregister
        self.slots = ConnectSlots(config.max_concurrent_connects, config.connects_per_second,
                                  config.connect_burst, call_later=thread.call_later)
        self.bot: IrcConnection | None = None
        self.puppets: dict[str, IrcConnection] = {}
        self.topics: dict[str, str] = {}
        # TOPIC lines of our puppets not yet seen done: (owner, folded channel) -> (line,
        # tries). A server may refuse a topic change for a moment (InspIRCd: 437 "Retry
        # topic change later" for a second change within one second); it is sent again.
        self.topic_retries: dict[tuple[str, str], tuple[str, int]] = {}
        self.nick_max = 30
        self.casemapping = "rfc1459"
        # Nick and channel comparisons follow the server's CASEMAPPING (names.fold_channel);
        # other threads read it from the published snapshot; `publish_casemapping` tells
        # the listener (which re-keys its channels) after the snapshot has it.
        self.fold: Callable[[str], str] = irc_lower
        self.publish_casemapping: Callable[[str, str], None] = lambda network, name: None
        # The immutable view other threads read (bridge.irc.snapshot), rebuilt and handed to
        # `publish_snapshot` whenever a nick, NICKLEN or the casemapping changes.
        self._casemapping_name = "rfc1459"
        self.snapshot = NetworkSnapshot(self.name)
        self.publish_snapshot: Callable[[NetworkSnapshot], None] = lambda snapshot: None
        self.syntax = ModeSyntax()
        # Folded channel -> its modes and members' prefixes, as our forwarder sees them.
        self.channel_modes: dict[str, ChannelModes] = {}
        # The forwarding connection's view of who is in each channel (folded -> folded nicks).
        self.members: dict[str, set[str]] = {}
        # Folded nick of each puppet -> its Matrix user id, for mentions and PMs.
        self.puppet_nicks: dict[str, str] = {}
        # (network, user id) -> the user's stored settings: nick, username, password,
        # password_kind (server or sasl), certificate/key (PEM), autocmds. Memory only: it
        # is called on the IRC thread when a connection is made.
        self.settings_for: Callable[[str, str], Mapping[str, object]] | None = None
        self._our_nicks: set[str] | None = None
        # Folded nick -> what CHGHOST/ACCOUNT/SETNAME said of it (bridge.irc.presence).
        self.identities: dict[str, Identity] = {}
        # Matrix user -> the AWAY line their puppet sends on every registration.
        self.away_lines: dict[str, str] = {}
        self.former_nicks = FormerNicks()
        self.rejoins = Rejoins(thread, config.kick_rejoin_after, lambda: self.bot)
        self.splits = Splits(thread, config.netsplit_leave_after, self._split_leave,
                             lambda channel, nick: nick in self.members.get(channel, set()))
        self.relays = relaymsg.Relays()  # relay mode's RELAYMSG lines (irc/relaymsg.py)
        self.history = History(self, thread)  # CHATHISTORY and batches (bridge.irc.history)

    # ------------------------------------------------------------ connections
    def _new_connection(self, owner: str, nick: str, username: str, realname: str,
                        password: str | None) -> IrcConnection:
        conn = IrcConnection(
            self.thread, self.config, self.connector, owner=owner, nick=nick,
            username=username, realname=realname, password=password, slots=self.slots,
            on_change=self._connection_changed, nick_max=self.nick_max, fold=self.fold,
        )
        self._register(conn.conn, conn)
        # Channel lines another connection relays are dropped before they are parsed.
        conn.conn.relays = lambda channel: self.forwarder(channel) is conn
        return conn

    def _liveness_tick(self) -> None:
        now = time.monotonic()
        for conn in self.all_connections():
            conn.check_alive(now)
        self._liveness_timer = self.thread.call_later(self._tick_every, self._liveness_tick)

    @property
    def _tick_every(self) -> float:
        return min(LIVENESS_EVERY, max(0.2, self.config.give_up_after / 4))

    @irc_thread_only
    def start(self) -> None:
        """Connect the bot and join the configured channels."""
        self._liveness_timer = self.thread.call_later(self._tick_every, self._liveness_tick)
        self.bot = self._new_connection(
            "", self.bot_nick, "ircbridge", "Matrix bridge bot", self.config.password or None
        )
        apply_bot_login(self.bot, self.config)
        self.bot.on_caps = self._republish  # CAP NEW/DEL while connected
        self.nicks_changed()
        for channel in self.config.channels:
            self.bot.join(channel)
        self.bot.start()

    def stop(self, message: str = "Bridge shutting down") -> None:
        if getattr(self, "_liveness_timer", None) is not None:
            self._liveness_timer.cancel()
        self.rejoins.cancel()
        self.splits.cancel()
        self.slots.cancel()
        for conn in [self.bot, *self.puppets.values()]:
            if conn is not None:
                conn.close(message)
                self._unregister(conn.conn)
        self.puppets.clear()

    @irc_thread_only
    def join_bot(self, channel: str) -> None:
        if self.bot is not None:
            self.bot.join(channel)

    @irc_thread_only
    def part_bot(self, channel: str) -> None:
        if self.bot is not None and self.fold(channel) not in {
            self.fold(c) for c in self.config.channels
        }:
            self.rejoins.bot_unwanted(self.fold(channel))
            self.bot.part(channel)

    @irc_thread_only
    def puppet(self, user_id: str, displayname: str | None = None,
               nick: str | None = None) -> IrcConnection:
        """The Matrix user's own connection, made (and started) on first use."""
        conn = self.puppets.get(user_id)
        if conn is None or conn.state is State.CLOSED:
            wanted = puppet_nick(
                self.config.puppet_nick_template, user_id, displayname, self.nick_max
            )
            localpart = user_id[1:].split(":", 1)[0]
            username = "".join(c for c in localpart if c.isalnum())[:10] or "matrix"
            settings = self.settings_for(self.name, user_id) if self.settings_for else {}
            wanted = nick or _text(settings, "nick") or wanted
            conn = self._new_connection(user_id, wanted, _text(settings, "username") or username,
                                        user_id, None)
            apply_settings(conn, settings)
            self.puppets[user_id] = conn
            self.nicks_changed()
            conn.start()
        return conn

    def _remember_puppet_nick(self, conn: IrcConnection) -> None:
        self.nicks_changed()
        for folded, owner in list(self.puppet_nicks.items()):
            if owner == conn.owner:
                del self.puppet_nicks[folded]
        self.puppet_nicks[self.fold(conn.nick)] = conn.owner

    @irc_thread_only
    def puppet_part(self, user_id: str, channel: str) -> None:
        """The user's own connection, if there is one, leaves the channel."""
        conn = self.puppets.get(user_id)
        if conn is not None:
            conn.part(channel)

    @irc_thread_only
    def puppet_in(self, user_id: str, folded_channel: str) -> bool:
        """Is the user's own connection in the (folded) channel?"""
        conn = self.puppets.get(user_id)
        return conn is not None and folded_channel in conn.channels

    @irc_thread_only
    def puppets_in(self, folded_channel: str) -> list[str]:
        """The Matrix users whose own connections are in the (folded) channel, sorted."""
        return sorted(u for u, c in self.puppets.items() if folded_channel in c.channels)

    @irc_thread_only
    def drop_puppet(self, user_id: str, message: str = "") -> None:
        conn = self.puppets.pop(user_id, None)
        if conn is not None:
            self.former_nicks.add(self.fold(conn.nick))
        self.nicks_changed()
        for folded, owner in list(self.puppet_nicks.items()):
            if owner == user_id:
                del self.puppet_nicks[folded]
        if conn is not None:
            conn.close(message)
            self._unregister(conn.conn)

    def all_connections(self) -> list[IrcConnection]:
        return [c for c in [self.bot, *self.puppets.values()] if c is not None]

    @irc_thread_only
    def our_nicks(self) -> set[str]:
        """Folded nicks of all our connections; cached, since every channel line asks."""
        if self._our_nicks is None:
            self._our_nicks = {self.fold(c.nick) for c in self.all_connections()}
        return self._our_nicks

    @irc_thread_only
    def nicks_changed(self) -> None:
        self._our_nicks = None
        self._republish()

    def _republish(self) -> None:
        """Publish a new snapshot if a nick, NICKLEN, the casemapping or a cap changed."""
        nicks = {owner: conn.nick for owner, conn in self.puppets.items()}
        bot = self.bot
        caps = dict(bot.caps.enabled) if bot is not None and bot.state is State.CONNECTED \
            else {}
        old = self.snapshot
        if (old.nick_max == self.nick_max and old.casemapping == self._casemapping_name
                and dict(old.nicks) == nicks and dict(old.caps) == caps):
            return
        self.snapshot = NetworkSnapshot.of(self.name, nicks, self.nick_max,
                                           self._casemapping_name, caps)
        self.publish_snapshot(self.snapshot)

    @irc_thread_only
    def forwarder(self, channel: str) -> IrcConnection | None:
        """The one connection of ours that relays what others say in `channel`.

        The bot when it is in the channel; otherwise the puppet with the lowest user id that
        is. Every other connection ignores the line, so nothing is relayed twice.
        """
        folded = self.fold(channel)
        if self.bot is not None and folded in self.bot.channels:
            return self.bot
        for user_id in sorted(self.puppets):
            if folded in self.puppets[user_id].channels:
                return self.puppets[user_id]
        return None

    def _connection_changed(self, conn: IrcConnection, event: IrcConnectionEvent) -> None:
        self.nicks_changed()
        connected = event.change is ConnectionChange.CONNECTED
        if connected and not conn.is_bot:
            self._remember_puppet_nick(conn)
            registered(self, conn)  # Matrix presence -> AWAY (bridge.irc.presence)
        if connected and conn.is_bot:
            isupport = conn.conn.features
            self.nick_max = int(getattr(isupport, "nicklen", None) or self.nick_max)
            self._republish()
        elif conn.is_bot and event.change is ConnectionChange.LOST:
            self._republish()  # no caps while the bot is down
        self.listener.irc_connection(event)

    # ------------------------------------------------------------ events (dispatched per conn)
    @irc_thread_only
    def on_event(self, conn: IrcConnection, event: irc.client.Event) -> None:
        # A draft/multiline batch that ends is one line (bridge.irc.multiline), handled
        # once history has seen its BATCH.
        merged = conn.batches.batch(event) if event.type == "batch" else None
        if self.history.intercept(conn, event):
            if merged is not None:
                self.on_event(conn, merged)
            return
        handler = getattr(self, "_on_" + event.type, None)
        if handler is None:
            return
        if event.type in _NEEDS_CHANNEL and not (event.target and is_channel(event.target)):
            log.debug("ignoring a %s without a channel from %s", event.type, conn)
            return
        if event.type in _NEEDS_ARGUMENT and not (event.arguments and event.arguments[0]):
            log.debug("ignoring a %s without its argument from %s", event.type, conn)
            return
        handler(conn, event)

    def _on_welcome(self, conn: IrcConnection, event: irc.client.Event) -> None:
        conn.registered()

    def _on_cap(self, conn: IrcConnection, event: irc.client.Event) -> None:
        conn.cap(list(event.arguments or []))

    def _on_authenticate(self, conn: IrcConnection, event: irc.client.Event) -> None:
        conn.authenticate(str(event.target or ""))

    def _on_saslsuccess(self, conn: IrcConnection, event: irc.client.Event) -> None:
        conn.sasl_result(True, "")

    def _on_saslfail(self, conn: IrcConnection, event: irc.client.Event) -> None:
        conn.sasl_result(False, event.arguments[-1] if event.arguments else "SASL failed")

    _on_saslaborted = _on_sasltoolong = _on_saslfail

    def _on_yourebannedcreep(self, conn: IrcConnection, event: irc.client.Event) -> None:
        """465: the server bans us; the ERROR that follows closes the link."""
        conn.banned_reason = event.arguments[-1] if event.arguments else "banned (465)"

    def _on_passwdmismatch(self, conn: IrcConnection, event: irc.client.Event) -> None:
        self.listener.irc_connection(IrcConnectionEvent(
            self.name, UserId(conn.owner), ConnectionChange.PASSWORD_REFUSED,
            reason=event.arguments[-1] if event.arguments else ""))

    def _on_featurelist(self, conn: IrcConnection, event: irc.client.Event) -> None:
        if conn.is_bot:
            nicklen = getattr(conn.conn.features, "nicklen", None)
            if nicklen:
                self.nick_max = int(nicklen)
            self.casemapping = str(getattr(conn.conn.features, "casemapping", self.casemapping))
        self._learn_isupport(conn)
        self._republish()

    def _on_nicknameinuse(self, conn: IrcConnection, event: irc.client.Event) -> None:
        conn.nick_in_use()

    def _on_erroneusnickname(self, conn: IrcConnection, event: irc.client.Event) -> None:
        log.warning("%s: the server refused nick %r", conn, conn.wanted_nick)
        conn.nick_in_use()

    def _on_disconnect(self, conn: IrcConnection, event: irc.client.Event) -> None:
        conn.disconnected(" ".join(event.arguments or []) or "disconnected")

    def _on_error(self, conn: IrcConnection, event: irc.client.Event) -> None:
        """ERROR: the server is closing the link; its words are the reason we report."""
        text = str(event.target or "")
        log.warning("%s: server error: %s", conn, text)
        conn.server_error = text
        if is_ban(text):
            conn.banned_reason = text
        if any(word in text.lower() for word in ("password", "access denied")):
            self.listener.irc_connection(IrcConnectionEvent(
                self.name, UserId(conn.owner), ConnectionChange.PASSWORD_REFUSED, reason=text))

    def _mine(self, conn: IrcConnection, nick: str | None) -> bool:
        return bool(nick) and self.fold(nick or "") == self.fold(conn.conn.get_nickname())

    def _ours(self, nick: str) -> bool:
        """One of our connections' nicks, now or lately (an echo may arrive after a rename
        or after the puppet was dropped): never a virtual user."""
        folded = self.fold(nick)
        return folded in self.our_nicks() or self.former_nicks.holds(folded)

    def _on_join(self, conn: IrcConnection, event: irc.client.Event) -> None:
        nick = event.source.nick if event.source else ""
        channel = self.fold(event.target)
        if self._mine(conn, nick):
            if self.forwarder(channel) is None or conn.is_bot:
                self.members[channel] = set()
                kept_out = None if conn.is_bot else self._modes(channel).bot_refused
                self.channel_modes[channel] = ChannelModes(bot_refused=kept_out)
            conn.joined(event.target)
            conn.send_now(f"MODE {event.target}")  # 324 tells the modes (+k, +i, +s, +p)
            if conn.is_bot:
                self.history.bot_joined(conn, event.target)
            if conn.is_bot and self.rejoins.bot_joined(channel) is not None:
                self.listener.irc_connection(IrcConnectionEvent(
                    self.name, BOT, ConnectionChange.REJOINED, channel=channel))
            if not conn.is_bot:
                self.listener.irc_connection(IrcConnectionEvent(
                    self.name, UserId(conn.owner), ConnectionChange.JOINED, channel=channel))
            return
        if self._ours(nick) or self.forwarder(channel) is not conn:
            return
        self.members.setdefault(channel, set()).add(self.fold(nick))
        self.splits.back(self.fold(nick), channel)
        self.listener.irc_membership(IrcMembership(self.name, channel, nick,
                                                   MembershipChange.JOIN, ts=event_time_ms(event)))

    def _on_part(self, conn: IrcConnection, event: irc.client.Event) -> None:
        nick = event.source.nick if event.source else ""
        channel = self.fold(event.target)
        if self._mine(conn, nick):
            conn.left(event.target)
            return
        if self._ours(nick) or self.forwarder(channel) is not conn:
            return
        self.members.get(channel, set()).discard(self.fold(nick))
        self._modes(channel).forget(self.fold(nick))
        reason = event.arguments[0] if event.arguments else ""
        self.listener.irc_membership(IrcMembership(self.name, channel, nick,
                                                   MembershipChange.PART, reason=reason))

    def _on_kick(self, conn: IrcConnection, event: irc.client.Event) -> None:
        kicked = event.arguments[0] if event.arguments else ""
        reason = event.arguments[1] if len(event.arguments) > 1 else ""
        by = event.source.nick if event.source else ""
        channel = self.fold(event.target)
        if self._mine(conn, kicked):
            conn.left(event.target)
            written = conn.wanted_channels.get(channel, event.target)
            if conn.is_bot:
                conn.wanted_channels.pop(channel, None)
                rejoin_in: float | None = self.rejoins.bot_kicked(channel, written, by, reason)
            else:
                rejoin_in = self.rejoins.puppet_kicked(conn, channel, written)
            self.listener.irc_connection(IrcConnectionEvent(
                self.name, UserId(conn.owner), ConnectionChange.KICKED, channel=channel, by=by,
                reason=reason, nick=kicked, rejoin_in=rejoin_in))
            return
        if self._ours(kicked) or self.forwarder(channel) is not conn:
            return
        self.members.get(channel, set()).discard(self.fold(kicked))
        self._modes(channel).forget(self.fold(kicked))
        self.listener.irc_membership(IrcMembership(self.name, channel, kicked,
                                                   MembershipChange.KICK, reason=reason, by=by))

    def _on_quit(self, conn: IrcConnection, event: irc.client.Event,
                 netsplit: bool = False) -> None:
        nick = event.source.nick if event.source else ""
        if not nick or self._ours(nick):
            return
        folded = self.fold(nick)
        reason = event.arguments[0] if event.arguments else ""
        split = netsplit or is_netsplit(reason)
        waiting: set[str] = set()
        for channel, members in self.members.items():
            if folded in members and self.forwarder(channel) is conn:
                members.discard(folded)
                self._modes(channel).forget(folded)
                if split:
                    waiting.add(channel)  # they are likely back when it heals
                else:
                    self.listener.irc_membership(IrcMembership(
                        self.name, channel, nick, MembershipChange.QUIT, reason=reason))
        self.splits.quit(folded, nick, reason, waiting)

    def split_quit(self, conn: IrcConnection, event: irc.client.Event) -> None:
        """A QUIT of a netsplit BATCH: a split QUIT whatever its reason says."""
        self._on_quit(conn, event, netsplit=True)

    def _split_leave(self, channel: str, nick: str, reason: str) -> None:
        """A user lost in a netsplit did not come back in time: their ghost leaves."""
        self.listener.irc_membership(IrcMembership(
            self.name, channel, nick, MembershipChange.QUIT, reason=reason, netsplit=True))

    def _on_nick(self, conn: IrcConnection, event: irc.client.Event) -> None:
        old = event.source.nick if event.source else ""
        new = event.target or ""
        if not new:
            return
        if self._mine(conn, old) or self.fold(new) == self.fold(conn.conn.get_nickname()):
            self.nicks_changed()
            self.former_nicks.add(self.fold(old))
        if conn.owner and self.fold(new) == self.fold(conn.conn.get_nickname()):
            conn.wanted_nick = new  # a reconnect keeps the new nick
            self._remember_puppet_nick(conn)
            self.listener.irc_connection(IrcConnectionEvent(
                self.name, UserId(conn.owner), ConnectionChange.NICK_CHANGED, old=old, new=new))
            return
        if not old or self._ours(old) or self._ours(new):
            return
        for channel, members in self.members.items():
            if self.fold(old) in members and self.forwarder(channel) is conn:
                members.discard(self.fold(old))
                members.add(self.fold(new))
                self._modes(channel).rename(self.fold(old), self.fold(new))
                self.listener.irc_membership(IrcMembership(
                    self.name, channel, old, MembershipChange.NICK, new_nick=new))

    # IRCv3 away-notify, +typing, chghost, account-notify, setname: bridge.irc.presence.
    # None of them is a leave or a join.
    def _on_away(self, conn: IrcConnection, event: irc.client.Event) -> None:
        on_away(self, conn, event)

    def _on_whoreply(self, conn: IrcConnection, event: irc.client.Event) -> None:
        on_whoreply(self, conn, event)

    def _on_tagmsg(self, conn: IrcConnection, event: irc.client.Event) -> None:
        on_tagmsg(self, conn, event)
        on_reaction(self, conn, event)  # +draft/react (bridge.irc.reactions)

    def _on_chghost(self, conn: IrcConnection, event: irc.client.Event) -> None:
        on_identity(self, conn, event)

    _on_account = _on_setname = _on_chghost

    def _on_namreply(self, conn: IrcConnection, event: irc.client.Event) -> None:
        if len(event.arguments) < 3:
            return
        channel = self.fold(event.arguments[1])
        if self.forwarder(channel) is not conn and not conn.is_bot:
            return
        # userhost-in-names: `@nick!user@host`; the nick (with its prefixes) is what counts.
        entries = [entry.split("!", 1)[0] for entry in event.arguments[2].split()]
        symbols = self.syntax.prefix_symbols
        self.members.setdefault(channel, set()).update(
            self.fold(n.lstrip(symbols)) for n in entries if n.lstrip(symbols))
        self._modes(channel).names(self.syntax, entries, self.fold)

    def _learn_isupport(self, conn: IrcConnection) -> None:
        """ISUPPORT (005) of any of our connections: the server's grammar and folding."""
        features = conn.conn.features
        self.syntax = ModeSyntax.from_isupport(getattr(features, "prefix", None),
                                               getattr(features, "chanmodes", None))
        casemapping = str(getattr(features, "casemapping", None) or "rfc1459").lower()
        fold = casefolder(casemapping)
        if fold is not self.fold:
            self.fold = fold
            for other in self.all_connections():
                other.refold(fold)
            self._casemapping_name = casemapping
            self.nicks_changed()
            self.publish_casemapping(self.name, casemapping)
            self.puppet_nicks = {self.fold(c.nick): c.owner for c in self.puppets.values()
                                 if c.state is State.CONNECTED}

    def _modes(self, channel: str) -> ChannelModes:
        return self.channel_modes.setdefault(self.fold(channel), ChannelModes())

    def _publish_modes(self, channel: str, before: ChannelState | None) -> None:
        state = self._modes(channel).snapshot()
        if state != before:
            self.listener.irc_channel_state(IrcChannelState(self.name, self.fold(channel), state))

    def channel_state(self, channel: str) -> ChannelState:
        """The channel's modes as far as we know them (IRC thread)."""
        found = self.channel_modes.get(self.fold(channel))
        return found.snapshot() if found is not None else ChannelState()

    def _on_channelmodeis(self, conn: IrcConnection, event: irc.client.Event) -> None:
        """324 RPL_CHANNELMODEIS, the answer to the MODE query we send on every JOIN."""
        if len(event.arguments) < 2:
            return
        channel = event.arguments[0]
        if self.forwarder(channel) is not conn and not conn.is_bot:
            return
        state = self._modes(channel)
        before = state.snapshot()
        state.reset(self.syntax, parse_modes(self.syntax, event.arguments[1:]))
        self._publish_modes(channel, before)
        if conn.is_bot:  # what an alias query waits for before it makes a room
            self.listener.irc_connection(IrcConnectionEvent(
                self.name, BOT, ConnectionChange.CHANNEL_MODES, channel=self.fold(channel)))

    def _on_mode(self, conn: IrcConnection, event: irc.client.Event) -> None:
        channel = self.fold(event.target)
        if self.forwarder(channel) is not conn:
            return
        changes = parse_modes(self.syntax, event.arguments or [])
        state = self._modes(channel)
        before = state.snapshot()
        for nick in dict.fromkeys(state.apply(self.syntax, changes, self.fold)):
            argument = next((c.argument for c in changes
                             if c.argument and self.fold(c.argument) == nick), nick)
            if state.needs_names(nick, changes, self.fold):
                if not state.recheck:
                    conn.send_now(f"NAMES {event.target}")
                state.recheck[nick] = argument
                continue  # its level is known once the server lists what is left
            self._power(channel, nick, argument, state)
        self._publish_modes(channel, before)

    def _power(self, channel: str, nick: str, written: str, state: ChannelModes) -> None:
        user_id = None
        if self._ours(nick):
            # IRC operators also lead the room: a puppet's op becomes its user's power.
            user_id = self.puppet_nicks.get(nick)
            if user_id is None:
                return  # the bot
        self.listener.irc_power(IrcPower(self.name, channel, written, state.level(nick),
                                         None if user_id is None else UserId(user_id)))

    def _failure(self, conn: IrcConnection, event: irc.client.Event) -> None:
        target = event.arguments[0] if event.arguments else ""
        reason = event.arguments[-1] if event.arguments else event.type
        if not conn.is_bot:
            self.listener.irc_failure(IrcFailure(self.name, UserId(conn.owner), target, reason))
        if target and event.type not in _JOIN_REFUSALS:  # a line written, waiting for its echo
            conn.echoes.refused(self.fold(target), tag_map(event.tags).get("label"),
                                f"{REFUSED}{reason}")
        # That target's waiting lines fail; every other target's go on.
        join = event.type in _JOIN_REFUSALS
        conn.refused(target, reason, join=join)
        if join and conn.is_bot and is_channel(target):
            self._bot_refused(target, reason)

    def _bot_refused(self, channel: str, reason: str) -> None:
        """The bot is kept out: whatever puppets read there is private (see ChannelState)."""
        state = self._modes(channel)
        before = state.snapshot()
        state.bot_refused = reason or "refused"
        self._publish_modes(channel, before)
        self.listener.irc_connection(IrcConnectionEvent(
            self.name, BOT, ConnectionChange.CHANNEL_REFUSED, channel=self.fold(channel),
            reason=reason))

    _on_cannotsendtochan = _on_nosuchnick = _on_nosuchchannel = _failure
    _on_channelisfull = _on_inviteonlychan = _on_bannedfromchan = _failure
    _on_badchannelkey = _on_nochanmodes = _on_chanoprivsneeded = _failure
    _on_toomanychannels = _failure
    # 470 forwarded to another channel, 489 TLS-only channel: no names in the irc library.
    _on_470 = _on_489 = _failure

    def _on_fail(self, conn: IrcConnection, event: irc.client.Event) -> None:
        """A standard reply `FAIL PRIVMSG <code> ... :text`: the line it names is refused."""
        if str(event.target or "").upper() == "RELAYMSG" and conn.is_bot:
            self.relays.failed(conn, " ".join(event.arguments or []))  # bridge.irc.relaymsg
            return
        if str(event.target or "").upper() not in ("PRIVMSG", "NOTICE", "TAGMSG"):
            return
        reason = event.arguments[-1] if event.arguments else "FAIL"
        target = conn.echoes.refused(None, tag_map(event.tags).get("label"),
                                     f"{REFUSED}{reason}")
        if target is not None and not conn.is_bot:
            self.listener.irc_failure(IrcFailure(self.name, UserId(conn.owner), target, reason))

    def _echoed(self, conn: IrcConnection, event: irc.client.Event, text: str) -> None:
        """Our own line, echoed back (echo-message) to the connection that said it."""
        if not len(conn.echoes) or not self._mine(conn, event.source.nick if event.source else ""):
            return
        tags = tag_map(event.tags)
        conn.echoes.echo(self.fold(event.target or ""), text, tags.get("label"),
                         tags.get("msgid") or None, _line_times(event)[0])

    def _on_endofnames(self, conn: IrcConnection, event: irc.client.Event) -> None:
        if event.arguments and self.forwarder(event.arguments[0]) is conn:
            state = self._modes(event.arguments[0])
            for nick, written in sorted(state.recheck.items()):
                self._power(self.fold(event.arguments[0]), nick, written, state)
            state.recheck.clear()
            ask_who_is_away(self, conn, event.arguments[0])
        if conn.is_bot and event.arguments:
            channel = self.fold(event.arguments[0])
            self.listener.irc_connection(IrcConnectionEvent(
                self.name, BOT, ConnectionChange.CHANNEL_READY, channel=channel,
                nicks=tuple(sorted(self.members.get(channel, ())))))

    def bot_in(self, channel: str) -> bool:
        return self.bot is not None and self.fold(channel) in self.bot.channels

    def _on_currenttopic(self, conn: IrcConnection, event: irc.client.Event) -> None:
        channel, topic = event.arguments[0], event.arguments[1] if len(event.arguments) > 1 else ""
        self._topic(conn, channel, topic, None)

    def _on_topic(self, conn: IrcConnection, event: irc.client.Event) -> None:
        topic = event.arguments[0] if event.arguments else ""
        nick = event.source.nick if event.source else None
        if nick and self._ours(nick):
            owner = self.puppet_nicks.get(self.fold(nick))
            if owner is not None:
                self.topic_retries.pop((owner, self.fold(event.target)), None)  # done
            nick = None  # our own puppet's echo: the room has the topic already
        self._topic(conn, event.target, topic, nick)

    def _topic(self, conn: IrcConnection, channel: str, topic: str, nick: str | None) -> None:
        folded = self.fold(channel)
        if self.forwarder(channel) is not conn and conn is not self.bot:
            return
        if self.topics.get(folded) == topic and nick is None:
            return
        self.topics[folded] = topic
        self.listener.irc_topic(IrcTopic(self.name, folded, topic, nick))

    def _relay_channel(self, conn: IrcConnection, event: irc.client.Event, text: str,
                       kind: IrcKind) -> None:
        if conn.batches.take(event, text):
            return  # a line of a multiline batch: relayed whole at its end
        if relaymsg.relayed_by_us(tag_map(event.tags), self._ours):
            self.relays.shown(self.fold(event.target), text)
            return  # a line the bot relayed (RELAYMSG) for a Matrix user
        channel = event.target
        nick = event.source.nick if event.source else ""
        if not nick or self._ours(nick):
            self._echoed(conn, event, text)
            return  # our own puppets' lines, echoed back by the server
        if self.forwarder(channel) is not conn:
            return
        message = self.message_of(conn, event, kind, text=text)
        if message is not None:
            self.listener.irc_message(message)

    def message_of(self, conn: IrcConnection, event: irc.client.Event, kind: IrcKind, *,
                   history: bool = False, text: str | None = None) -> IrcMessage | None:
        """The IrcMessage of a channel line (None: one of ours, or not a channel line);
        `history`: a CHATHISTORY line, whose time tag is taken at any age."""
        nick = event.source.nick if event.source else ""
        channel = event.target or ""
        if not nick or self._ours(nick) or not is_channel(channel):
            return None
        if text is None:
            text = event.arguments[0] if event.arguments else ""
        ts, tags, server_time = _line_times(event, history=history)
        return IrcMessage(self.name, self.fold(channel), nick, text, kind, ts,
                          self.mentions(text), tags, server_time)

    def mentions(self, text: str) -> dict[str, UserId]:
        """Nicks of our puppets named in `text` -> their Matrix user ids (for pills)."""
        if not self.puppet_nicks:
            return {}
        found: dict[str, UserId] = {}
        for word in _WORD.findall(text):
            owner = self.puppet_nicks.get(self.fold(word))
            if owner is not None:
                found[word] = UserId(owner)
        return found

    def _on_pubmsg(self, conn: IrcConnection, event: irc.client.Event) -> None:
        self._relay_channel(conn, event, event.arguments[0], IrcKind.PRIVMSG)

    def _on_pubnotice(self, conn: IrcConnection, event: irc.client.Event) -> None:
        self._relay_channel(conn, event, event.arguments[0], IrcKind.NOTICE)

    def _on_action(self, conn: IrcConnection, event: irc.client.Event) -> None:
        text = event.arguments[0] if event.arguments else ""
        if is_channel(event.target):
            self._relay_channel(conn, event, text, IrcKind.ACTION)
        else:
            self._relay_private(conn, event, text, IrcKind.ACTION)

    def _on_privmsg(self, conn: IrcConnection, event: irc.client.Event) -> None:
        self._relay_private(conn, event, event.arguments[0], IrcKind.PRIVMSG)

    def _on_privnotice(self, conn: IrcConnection, event: irc.client.Event) -> None:
        if event.source and "!" not in str(event.source):
            return  # server notices
        self._relay_private(conn, event, event.arguments[0], IrcKind.NOTICE)

    def _relay_private(self, conn: IrcConnection, event: irc.client.Event, text: str,
                       kind: IrcKind) -> None:
        if conn.batches.take(event, text):
            return  # a line of a multiline batch: relayed whole at its end
        nick = event.source.nick if event.source else ""
        if not nick or self._ours(nick):
            self._echoed(conn, event, text)
            return
        if not conn.owner:
            return  # the bot's PMs are not bridged
        ts, tags, server_time = _line_times(event)
        self.listener.irc_private(IrcPrivate(self.name, UserId(conn.owner), nick, text, kind,
                                             ts, tags, server_time))

    # ------------------------------------------------------------ Matrix -> IRC
    def command(self, user_id: str, line: str, channel: str | None = None) -> None:
        """A control line (TOPIC, KICK, MODE, NICK) from the user's puppet, flood-controlled."""
        conn = self.puppet(user_id)
        if channel is not None:
            conn.join(channel)
            if line.upper().startswith("TOPIC "):
                self.topic_retries[(conn.owner, self.fold(channel))] = (line, 0)
        conn.send(line, channel=channel)

    def _on_unavailresource(self, conn: IrcConnection, event: irc.client.Event) -> None:
        """437 for a channel our puppet just set the topic of: "retry later", so it does,
        TOPIC_RETRIES times at most, TOPIC_RETRY_AFTER seconds apart; then the sender is
        told. (437 for a nick is the nick queries' business: bridge.irc.queries.)"""
        target = event.arguments[0] if event.arguments else ""
        key = (conn.owner, self.fold(target))
        if not is_channel(target) or key not in self.topic_retries:
            return
        line, tries = self.topic_retries[key]
        if tries >= TOPIC_RETRIES:
            del self.topic_retries[key]
            self._failure(conn, event)
            return
        self.topic_retries[key] = (line, tries + 1)

        def again() -> None:
            if self.topic_retries.get(key, (None, 0))[0] == line:
                conn.send(line, channel=target)

        self.thread.call_later(TOPIC_RETRY_AFTER, again)

    def say_private(self, user_id: str, nick: str, lines: list[str], kind: str,
                    receipt: Receipt, tags: Mapping[str, str] | None = None) -> None:
        """Say `lines` to `nick` from the user's puppet (see `say`)."""
        conn = self.puppet(user_id)
        _say(conn, nick, None, lines, kind, receipt, tags, self._caps_of(conn))

    def relay_say(self, channel: str, nick: str, lines: list[str], kind: str,
                  receipt: Receipt) -> None:
        """Relay mode: the bot says a Matrix user's lines (bridge.irc.relaymsg)."""
        if self.bot is None:
            receipt.finished(False, "no bot connection")
            return
        self.bot.join(channel)
        self.relays.send(self.bot, self.bot.caps.enabled, channel, self.fold(channel), nick,
                         lines, kind, receipt)

    def say(self, user_id: str, displayname: str | None, channel: str, lines: list[str],
            kind: str, receipt: Receipt, tags: Mapping[str, str] | None = None) -> None:
        """Say `lines` in `channel` from the user's puppet; `receipt` hears how it went;
        `tags` (client tags: a reply's +draft/reply) go on the first line where the link
        has message-tags."""
        conn = self.puppet(user_id, displayname)
        conn.join(channel)
        _say(conn, channel, channel, lines, kind, receipt, tags, self._caps_of(conn))

    def _caps_of(self, conn: IrcConnection) -> Mapping[str, str]:
        """The caps a line queued now will go under: a puppet still registering will have
        what the bot has (the same server, the same wanted caps)."""
        if conn.state is State.CONNECTED or self.bot is None:
            return conn.caps.enabled
        return self.bot.caps.enabled


def _say(conn: IrcConnection, target: str, channel: str | None, lines: list[str], kind: str,
         receipt: Receipt, tags: Mapping[str, str] | None = None,
         caps: Mapping[str, str] | None = None) -> None:
    """Queue one message's lines; `receipt.finished` once, after the last one left, or was
    echoed (echo-message, see bridge.irc.echo), or any failed; `receipt.started` right
    before the first is written. Several lines go as one draft/multiline batch where the
    link has it (`caps`) and they fit its limits."""
    if not lines:
        receipt.finished(True, None)
        return
    command = "NOTICE" if kind == "m.notice" else "PRIVMSG"
    if kind != "m.emote" and multiline.send_batch(conn, target, channel, command, lines,
                                                  receipt, tags, caps or conn.caps.enabled):
        return
    send = MessageSend(conn.caps.enabled, conn.echoes, len(lines), receipt)
    for i, line in enumerate(lines):
        text = f"\x01ACTION {line}\x01" if kind == "m.emote" else line
        out, done = send.line(command, target, conn.fold(target), text, line,
                              tags if i == 0 else None)
        conn.send(out, channel=channel, done=done, before=receipt.started if i == 0 else None)
