"""The admin commands' IRC work: WHOIS, NICK, JOIN, reconnects, with their replies collected.

Why a module of its own: everything here runs on the IRC thread (the only thread that may
touch a connection), while the commands wait on worker threads. A worker hands a request in
with `bridge.irc.call` and waits on a `concurrent.futures.Future`; handlers registered on the
reactor (from the IRC thread, at a priority after the bridge's own) resolve it when the
server answers, and a timer on the IRC thread gives up when it does not. Nothing here does
HTTP or touches the database.

The IRC side asks `AdminRooms.puppet_settings` for a new connection's nick, username,
password, certificate and autocmds through `Network.settings_for`, which `install` sets.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypedDict, TypeVar, TypeVarTuple

import irc.client
from irc.client import ServerConnection

from ..rules.ids import UserId
from . import State
from .events import ConnectionChange, IrcConnectionEvent

if TYPE_CHECKING:
    from . import IrcConnection, IrcSide, Network

log = logging.getLogger(__name__)

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

PRIORITY = 10  # after the bridge's own handlers (0), so connection state is already updated
WHOIS_TIMEOUT = 10.0
NICK_TIMEOUT = 10.0
JOIN_TIMEOUT = 30.0
WHOIS_PARTS = ("whoisuser", "whoisserver", "whoisoperator", "whoisidle", "whoischannels",
               "whoisaccount", "away")
NICK_ERRORS = ("nicknameinuse", "erroneusnickname", "unavailresource", "438", "restricted")
JOIN_ERRORS = ("nosuchchannel", "toomanychannels", "channelisfull", "inviteonlychan",
               "bannedfromchan", "badchannelkey", "badchanmask", "nochanmodes", "479",
               "unavailresource", "489")
BANNED_WORDS = ("banned", "k-lined", "g-lined", "z-lined", "d-lined", "klined", "glined")


class HasIrcSide(Protocol):
    """What the queries use of the bridge: its IRC side."""

    @property
    def irc(self) -> IrcSide: ...


class QueriesAdmin(Protocol):
    """What the queries use of the admin rooms (`admin.rooms.AdminRooms` is one)."""

    def puppet_settings(self, network: str, user_id: str) -> Mapping[str, object]: ...
    def autocmds_for(self, network: str, user_id: str) -> list[str]: ...
    def queue_connection_event(self, event: IrcConnectionEvent) -> None: ...


# One network's user connection, as `IrcQueries.snapshot` reports it ("in" is a keyword).
ConnectionSnapshot = TypedDict("ConnectionSnapshot", {
    "bot": str,  # the bot's State value, or "idle"
    "state": str,  # the user's connection's State value, or "none"
    "nick": str | None,
    "channels": list[str],  # wanted channels, names only
    "in": list[str],  # folded channels it is in
})


class IrcUnavailable(Exception):
    """The IRC side cannot do it now (not started, not connected, no answer in time)."""


@dataclass(eq=False)
class WhoisResult:
    nick: str
    found: bool = False
    user: str = ""
    host: str = ""
    realname: str = ""
    server: str = ""
    channels: list[str] = field(default_factory=list)
    idle_seconds: int | None = None
    account: str | None = None
    away: str | None = None
    operator: bool = False

    def add(self, kind: str, args: list[str]) -> None:
        if kind == "whoisuser" and len(args) >= 5:
            self.found = True
            self.nick, self.user, self.host, self.realname = args[0], args[1], args[2], args[4]
        elif kind == "whoisserver" and len(args) >= 2:
            self.server = args[1]
        elif kind == "whoisoperator":
            self.operator = True
        elif kind == "whoisidle" and len(args) >= 2 and args[1].isdigit():
            self.idle_seconds = int(args[1])
        elif kind == "whoischannels" and len(args) >= 2:
            self.channels.extend(args[1].split())
        elif kind == "whoisaccount" and len(args) >= 2:
            self.account = args[1]
        elif kind == "away" and len(args) >= 2:
            self.away = args[1]

    def text(self) -> str:
        if not self.found:
            return f"No such nick: {self.nick}"
        parts = [f"{self.nick} is {self.user}@{self.host} ({self.realname})"]
        if self.server:
            parts.append(f"on {self.server}")
        if self.account:
            parts.append(f"logged in as {self.account}")
        if self.operator:
            parts.append("an IRC operator")
        if self.channels:
            parts.append("in " + " ".join(self.channels))
        if self.idle_seconds is not None:
            parts.append(f"idle {self.idle_seconds} s")
        if self.away:
            parts.append(f"away: {self.away}")
        return "; ".join(parts)


@dataclass
class _PendingNick:
    conn: IrcConnection
    old: str
    new: str
    future: Future[str | None]


def _resolve(future: Future[T], value: T) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: Future[T], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


class IrcQueries:
    """IRC-thread helpers for the admin commands; the blocking `ask_*` run on workers."""

    def __init__(self, bridge: HasIrcSide, admin: QueriesAdmin):
        self.bridge = bridge
        self.admin = admin
        self._whois: dict[tuple[ServerConnection, str], list[WhoisResult]] = {}
        self._whois_futures: dict[int, Future[WhoisResult]] = {}
        self._nicks: dict[ServerConnection, _PendingNick] = {}
        self._nick_owners: set[tuple[str, str]] = set()
        self._joins: dict[tuple[ServerConnection, str],
                          list[tuple[IrcConnection, Future[str | None]]]] = {}
        self._recent_events: deque[IrcConnectionEvent] = deque(maxlen=64)
        self.installed = False

    # ------------------------------------------------------------------ any thread
    def ask(self, fn: Callable[[Future[T], *Ts], None], *args: *Ts, timeout: float) -> T:
        """Run `fn(future, *args)` on the IRC thread and wait for the future (workers only)."""
        irc_side = self.bridge.irc
        if not irc_side.started or not irc_side.thread.alive:
            raise IrcUnavailable("the bridge's IRC side is not running")
        future: Future[T] = Future()
        irc_side.call(self._guarded, fn, future, *args)
        try:
            return future.result(timeout + 2.0)
        except FutureTimeout:
            raise IrcUnavailable("the IRC thread did not answer in time") from None

    def _guarded(self, fn: Callable[[Future[T], *Ts], None], future: Future[T],
                 *args: *Ts) -> None:
        try:
            fn(future, *args)
        except Exception as e:  # noqa: BLE001 - handed back to the waiting worker
            log.exception("admin IRC work failed")
            _fail(future, e)

    # ------------------------------------------------------------------ IRC thread: setup
    def install(self) -> None:
        """Register the reply handlers and attach the hooks (IRC thread)."""
        if self.installed:
            return
        self.installed = True
        handlers: list[tuple[str, Callable[[ServerConnection, irc.client.Event], None]]] = [
            *((kind, self._on_whois_part) for kind in WHOIS_PARTS),
            ("endofwhois", self._on_whois_end),
            ("nosuchnick", self._on_whois_end),
            ("nick", self._on_nick),
            *((kind, self._on_nick_error) for kind in NICK_ERRORS),
            ("join", self._on_join),
            *((kind, self._on_join_error) for kind in JOIN_ERRORS),
            ("yourebannedcreep", self._on_banned),
            ("error", self._on_error),
        ]
        reactor = self.bridge.irc.thread.reactor
        for kind, handler in handlers:
            reactor.add_global_handler(kind, _never_raises(handler), PRIORITY)
        for net in self.bridge.irc.networks.values():
            self._attach(net)

    def _attach(self, net: Network) -> None:
        if getattr(net, "settings_for", None) is None:
            net.settings_for = self.admin.puppet_settings

    def connection_event(self, event: IrcConnectionEvent) -> None:
        """A connection event from the core (IRC thread); handled once per event even when
        it is handed in twice."""
        if any(e is event for e in self._recent_events):
            return
        self._recent_events.append(event)
        if event.change == "nick_changed" and (event.network, event.owner) in self._nick_owners:
            return  # the !nick in flight answers for itself
        self.admin.queue_connection_event(event)

    # ------------------------------------------------------------------ IRC thread: lookups
    def _network(self, name: str) -> Network:
        net = self.bridge.irc.network(name)
        if net is None:
            raise IrcUnavailable(f"network {name!r} is not configured")
        return net

    def _find(self, server_conn: ServerConnection) -> tuple[Network, IrcConnection] | None:
        for net in self.bridge.irc.networks.values():
            for conn in net.all_connections():
                if conn.conn is server_conn:
                    return net, conn
        return None

    @staticmethod
    def _connected(conn: IrcConnection | None) -> bool:
        return conn is not None and conn.state is State.CONNECTED

    # ------------------------------------------------------------------ WHOIS
    def whois(self, future: Future[WhoisResult], network: str, nick: str, user_id: str) -> None:
        net = self._network(network)
        conn = net.bot if self._connected(net.bot) else net.puppets.get(user_id)
        if not self._connected(conn):
            raise IrcUnavailable(f"the bridge is not connected to {network} right now")
        assert conn is not None
        key = (conn.conn, net.fold(nick))
        result = WhoisResult(nick)
        entries = self._whois.setdefault(key, [])
        entries.append(result)
        self._whois_futures[id(result)] = future
        conn.send(f"WHOIS {nick}")

        def expire() -> None:
            if result in self._whois.get(key, []):
                self._whois[key].remove(result)
                if not self._whois[key]:
                    del self._whois[key]
            fut = self._whois_futures.pop(id(result), None)
            if fut is not None:
                _fail(fut, IrcUnavailable(f"{network} did not answer the WHOIS"))

        self.bridge.irc.thread.call_later(WHOIS_TIMEOUT, expire)

    def _on_whois_part(self, server_conn: ServerConnection, event: irc.client.Event) -> None:
        if not self._whois or not event.arguments:
            return
        fold = self.bridge.irc.fold_for(server_conn)
        for result in self._whois.get((server_conn, fold(event.arguments[0])), []):
            result.add(event.type, list(event.arguments))

    def _on_whois_end(self, server_conn: ServerConnection, event: irc.client.Event) -> None:
        if not self._whois or not event.arguments:
            return
        fold = self.bridge.irc.fold_for(server_conn)
        for result in self._whois.pop((server_conn, fold(event.arguments[0])), []):
            future = self._whois_futures.pop(id(result), None)
            if future is not None:
                _resolve(future, result)

    # ------------------------------------------------------------------ NICK
    def change_nick(self, future: Future[str | None], network: str, user_id: str,
                    new: str) -> None:
        """Resolves None when the server took the nick, "offline" without a connection,
        else the server's refusal."""
        net = self._network(network)
        conn = net.puppets.get(user_id)
        if conn is None or not self._connected(conn):
            if conn is not None:
                conn.wanted_nick = new
                net.nicks_changed()
            _resolve(future, "offline")
            return
        if conn.nick == new:
            _resolve(future, None)
            return
        pending = _PendingNick(conn, conn.nick, new, future)
        self._nicks[conn.conn] = pending
        self._nick_owners.add((network, user_id))
        future.add_done_callback(lambda _f: self._nick_owners.discard((network, user_id)))
        conn.send(f"NICK {new}")

        def expire() -> None:
            if self._nicks.get(conn.conn) is pending:
                del self._nicks[conn.conn]
            _fail(future, IrcUnavailable(f"{network} did not answer the NICK"))

        self.bridge.irc.thread.call_later(NICK_TIMEOUT, expire)

    def _on_nick(self, server_conn: ServerConnection, event: irc.client.Event) -> None:
        pending = self._nicks.get(server_conn)
        if pending is None or event.source is None:
            return
        fold = self.bridge.irc.fold_for(server_conn)
        if fold(event.source.nick) == fold(pending.old):
            del self._nicks[server_conn]
            pending.conn.wanted_nick = event.target or pending.new
            _resolve(pending.future, None)

    def _on_nick_error(self, server_conn: ServerConnection, event: irc.client.Event) -> None:
        pending = self._nicks.get(server_conn)
        if pending is None:
            return
        args = list(event.arguments)
        fold = self.bridge.irc.fold_for(server_conn)
        if event.type == "unavailresource" and args and fold(args[0]) != fold(pending.new):
            return  # about a channel
        del self._nicks[server_conn]
        _resolve(pending.future, args[-1] if args else event.type)

    # ------------------------------------------------------------------ JOIN / PART
    def join(self, future: Future[str | None], network: str, user_id: str, channel: str,
             key: str | None) -> None:
        """Resolves None once in the channel, else the server's refusal."""
        net = self._network(network)
        conn = net.puppet(user_id)
        folded = net.fold(channel)
        if folded in conn.channels:
            _resolve(future, None)
            return
        waiting = self._joins.setdefault((conn.conn, folded), [])
        waiting.append((conn, future))
        conn.join(channel, key)

        def expire() -> None:
            entry = (conn, future)
            if entry in self._joins.get((conn.conn, folded), []):
                self._joins[(conn.conn, folded)].remove(entry)
            _fail(future, IrcUnavailable(
                f"no answer from {network} yet (state: {conn.state.value}); "
                f"the bridge keeps trying to join {channel}"))

        self.bridge.irc.thread.call_later(JOIN_TIMEOUT, expire)

    def _on_join(self, server_conn: ServerConnection, event: irc.client.Event) -> None:
        if not self._joins or event.source is None or not event.target:
            return
        fold = self.bridge.irc.fold_for(server_conn)
        if fold(event.source.nick) != fold(server_conn.get_nickname()):
            return
        for _conn, future in self._joins.pop((server_conn, fold(event.target)), []):
            _resolve(future, None)

    def _on_join_error(self, server_conn: ServerConnection, event: irc.client.Event) -> None:
        if not self._joins or not event.arguments:
            return
        folded = self.bridge.irc.fold_for(server_conn)(event.arguments[0])
        waiting = self._joins.pop((server_conn, folded), [])
        for conn, future in waiting:
            conn.wanted_channels.pop(folded, None)  # do not retry it at every reconnect
            reason = event.arguments[-1] if len(event.arguments) > 1 else event.type
            _resolve(future, reason)

    def part(self, future: Future[bool], network: str, user_id: str, channel: str) -> None:
        """Resolves True when the connection was in (or joining) the channel."""
        net = self._network(network)
        conn = net.puppets.get(user_id)
        folded = net.fold(channel)
        if conn is None or (folded not in conn.channels and folded not in conn.wanted_channels):
            _resolve(future, False)
            return
        conn.part(channel, "Left with !part")
        _resolve(future, True)

    # ------------------------------------------------------------------ connection
    def reconnect(self, future: Future[bool], network: str, user_id: str) -> None:
        """Drop and remake the user's connection, keeping its channels and nick."""
        net = self._network(network)
        old = net.puppets.get(user_id)
        channels = dict(old.wanted_channels) if old is not None else {}
        nick = old.wanted_nick if old is not None else None
        net.drop_puppet(user_id, "Reconnecting")
        settings = self.admin.puppet_settings(network, user_id)
        stored_nick = settings.get("nick")
        conn = net.puppet(user_id, None, stored_nick if isinstance(stored_nick, str) and stored_nick
                          else nick)
        conn.wanted_channels.update(channels)
        _resolve(future, old is not None)

    def quit(self, future: Future[bool], network: str, user_id: str) -> None:
        net = self._network(network)
        existed = user_id in net.puppets
        net.drop_puppet(user_id, "Disconnected with !quit")
        _resolve(future, existed)

    def send_raw(self, future: Future[None], network: str, user_id: str, line: str) -> None:
        net = self._network(network)
        net.puppet(user_id).send(line)
        _resolve(future, None)

    def snapshot(self, future: Future[dict[str, ConnectionSnapshot]], user_id: str) -> None:
        """{network: {"state", "nick", "channels", "bot", "in"}} for the user's connections."""
        out: dict[str, ConnectionSnapshot] = {}
        for name, net in self.bridge.irc.networks.items():
            conn = net.puppets.get(user_id)
            out[name] = {
                "bot": net.bot.state.value if net.bot is not None else "idle",
                "state": conn.state.value if conn is not None else "none",
                "nick": conn.nick if conn is not None else None,
                # Names only: a wanted channel is written with its key ("#staff KEY").
                "channels": sorted(v.split(" ", 1)[0] for v in conn.wanted_channels.values())
                if conn is not None else [],
                "in": sorted(conn.channels) if conn is not None else [],
            }
        _resolve(future, out)

    def refresh(self, network: str, user_id: str) -> None:
        """Give a live connection the user's current autocmds for its next registration."""
        net = self.bridge.irc.network(network)
        conn = net.puppets.get(user_id) if net is not None else None
        if conn is not None:
            conn.autocmds = list(self.admin.autocmds_for(network, user_id))

    # ------------------------------------------------------------------ refusals
    def _report(self, server_conn: ServerConnection, change: ConnectionChange, reason: str) -> None:
        found = self._find(server_conn)
        if found is not None and found[1].owner:
            self.admin.queue_connection_event(IrcConnectionEvent(
                found[0].name, UserId(found[1].owner), change, reason=reason))

    def _on_banned(self, server_conn: ServerConnection, event: irc.client.Event) -> None:
        reason = event.arguments[-1] if event.arguments else "banned"
        self._report(server_conn, ConnectionChange.BANNED, reason)

    def _on_error(self, server_conn: ServerConnection, event: irc.client.Event) -> None:
        text = str(event.target or "")
        if any(word in text.lower() for word in BANNED_WORDS):
            self._report(server_conn, ConnectionChange.BANNED, text)
        elif "password" in text.lower():
            self._report(server_conn, ConnectionChange.PASSWORD_REFUSED, text)


def _never_raises(handler: Callable[[ServerConnection, irc.client.Event], None]
                  ) -> Callable[[ServerConnection, irc.client.Event], None]:
    """A reactor handler that logs its own failures: an exception out of a handler would
    cut short the processing of the rest of what the server sent."""

    def guarded(server_conn: ServerConnection, event: irc.client.Event) -> None:
        try:
            handler(server_conn, event)
        except Exception:  # noqa: BLE001 - odd input from a server must not cost lines
            log.exception("admin handler for IRC %s failed", event.type)

    return guarded
