"""CHATHISTORY requests and the batches servers answer with (netsplit/netjoin too).

A new portal asks the server for a channel's recent lines (`CHATHISTORY LATEST`); when the
bot joins a bridged channel again (a restart, a reconnect) it asks for what was said after
the last line it saw (`CHATHISTORY AFTER msgid=...`, page after page while pages are full).
The answer is a `chathistory` BATCH: its lines are collected, not relayed as live lines, and
the channel's live lines that arrive while a request is open wait with it, so the result is
one list in time order, without a line twice (by msgid): `HistoryResult`, handed to the
requester's callback. A server without the capability, a FAIL or no answer within
`ANSWER_WITHIN` ends the request with what it has (`complete` False).

A chathistory batch nobody asked for (a replay on JOIN, InspIRCd's chanhistory in a +H
channel) goes to `on_replay`, a catch-up like the others.

`netsplit`/`netjoin` batches are the other batches read here: the QUITs of a split are
handled together at its end, as split QUITs whatever their reason (`bridge.irc.splits`
delays the leaves), and the JOINs of a netjoin together.

Thread: the IRC thread only (owned by a `Network`; timers on the IRC thread's scheduler).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import irc.client

from .batches import CHATHISTORY, NETJOIN, NETSPLIT, Batch, BatchTracker
from .events import IrcKind, IrcMessage, tag_map

if TYPE_CHECKING:
    from .connection import IrcConnection
    from .reactor import IrcThread, Timer

log = logging.getLogger(__name__)

ANSWER_WITHIN = 5.0  # seconds a server has to answer a CHATHISTORY request
MAX_PAGES = 10  # AFTER pages of one catch-up (each as long as the server allows)
DEFAULT_MAX = 100  # lines per request when the server's ISUPPORT does not say
NEEDED_CAPS = ("draft/chathistory", "batch")
_MESSAGES = {"pubmsg": IrcKind.PRIVMSG, "pubnotice": IrcKind.NOTICE, "action": IrcKind.ACTION}


@dataclass(frozen=True)
class HistoryResult:
    """What a request brought: the channel's lines (history, then the live lines that waited,
    merged by time, each msgid once), and whether the server answered in full."""

    network: str
    channel: str  # folded
    messages: tuple[IrcMessage, ...]
    complete: bool
    reason: str = ""  # why not complete
    from_server: int = 0  # how many of `messages` the server's history gave


def merge(history: Iterable[IrcMessage], live: Iterable[IrcMessage]) -> list[IrcMessage]:
    """History and live lines as one list in time order (stable: a server's order is kept
    among lines of one ms), each msgid once (a live line the history holds is dropped)."""
    seen: set[str] = set()
    out: list[IrcMessage] = []
    for message in [*history, *live]:
        msgid = message.tags.get("msgid")
        if msgid:
            if msgid in seen:
                continue
            seen.add(msgid)
        out.append(message)
    out.sort(key=lambda m: m.ts)
    return out


def request_line(channel: str, limit: int, after: str | None = None) -> str:
    """The CHATHISTORY command: LATEST (`after` None) or AFTER a msgid (`msgid=...`) or a
    time (`timestamp=...`, as given)."""
    if after is None:
        return f"CHATHISTORY LATEST {channel} * {limit}"
    return f"CHATHISTORY AFTER {channel} {after} {limit}"


class HistoryHost(Protocol):
    """What the history needs of its network (bridge.irc.network.Network)."""

    name: str

    def fold(self, name: str) -> str: ...

    def forwarder(self, channel: str) -> IrcConnection | None: ...

    def message_of(self, conn: IrcConnection, event: irc.client.Event, kind: IrcKind, *,
                   history: bool = False) -> IrcMessage | None: ...

    def split_quit(self, conn: IrcConnection, event: irc.client.Event) -> None: ...

    def on_event(self, conn: IrcConnection, event: irc.client.Event) -> None: ...


@dataclass
class _Request:
    conn: IrcConnection
    channel: str  # as written
    folded: str
    limit: int
    after: str | None  # None: LATEST
    done: Callable[[HistoryResult], None]
    catch_up: bool
    keep: int = 0  # the newest lines of the history kept (0: all)
    lines: list[IrcMessage] = field(default_factory=list)
    held: list[tuple[irc.client.Event, IrcKind]] = field(default_factory=list)
    pages: int = 0
    timer: Timer | None = None


class History:
    """A network's CHATHISTORY requests and batch reading (see module)."""

    def __init__(self, host: HistoryHost, thread: IrcThread) -> None:
        self.host = host
        self.thread = thread
        self._batches: dict[int, BatchTracker[irc.client.Event]] = {}
        self.pending: dict[str, _Request] = {}  # folded channel -> its open request
        self._waiting: dict[str, collections.deque[_Request]] = {}
        # Folded channel -> the newest msgid seen there: where a catch-up starts. Given by
        # the core at start (the store's newest relayed msgid), kept current by live lines.
        self.anchors: dict[str, str] = {}
        # Set by the core: the bot joined a channel (folded); it may ask for a catch-up.
        self.on_bot_join: Callable[[str], None] | None = None
        # Set by the core: a history batch the server sent unasked (a replay on JOIN).
        self.on_replay: Callable[[HistoryResult], None] | None = None

    # ------------------------------------------------------------ requests
    def remember(self, anchors: dict[str, str]) -> None:
        """Where each channel's catch-up starts (the core's store, at start)."""
        for channel, msgid in anchors.items():
            self.anchors.setdefault(self.host.fold(channel), msgid)

    def usable(self, conn: IrcConnection | None, channel: str) -> str:
        """"" when `conn` can ask for `channel`'s history now, else why not."""
        if conn is None:
            return "no connection"
        missing = [c for c in NEEDED_CAPS if c not in conn.caps.enabled]
        if missing:
            return "the server does not offer " + " ".join(missing)
        if self.host.fold(channel) not in conn.channels:
            return f"not in {channel}"
        return ""

    def latest(self, conn: IrcConnection | None, channel: str, limit: int,
               done: Callable[[HistoryResult], None]) -> None:
        """Ask for the `limit` latest lines of `channel` (a new portal). Twice as many are
        asked for: a server's JOINs and PARTs (draft/event-playback) count in its limit."""
        self._start(conn, channel, 2 * limit, None, done, catch_up=False, keep=limit)

    def catch_up(self, conn: IrcConnection | None, channel: str,
                 done: Callable[[HistoryResult], None]) -> bool:
        """Ask for what was said in `channel` after its anchor; False when there is none."""
        anchor = self.anchors.get(self.host.fold(channel))
        if anchor is None:
            return False
        self._start(conn, channel, 0, f"msgid={anchor}", done, catch_up=True)
        return True

    def _start(self, conn: IrcConnection | None, channel: str, limit: int, after: str | None,
               done: Callable[[HistoryResult], None], *, catch_up: bool,
               keep: int = 0) -> None:
        folded = self.host.fold(channel)
        why = self.usable(conn, channel)
        if why or conn is None:
            done(HistoryResult(self.host.name, folded, (), False, why))
            return
        most = _server_max(conn)
        request = _Request(conn, channel, folded, min(limit, most) if limit > 0 else most,
                           after, done, catch_up, keep)
        if folded in self.pending:
            self._waiting.setdefault(folded, collections.deque()).append(request)
            return
        self._send(request)

    def _send(self, request: _Request) -> None:
        self.pending[request.folded] = request
        request.pages += 1
        if request.timer is not None:
            request.timer.cancel()
        request.timer = self.thread.call_later(ANSWER_WITHIN, lambda: self._timed_out(request))
        line = request_line(request.channel, request.limit, request.after)
        if not request.conn.send_now(line):
            self._finish(request, False, "not connected")

    def _timed_out(self, request: _Request) -> None:
        if self.pending.get(request.folded) is request:
            log.warning("%s: no CHATHISTORY answer for %s within %g s", self.host.name,
                        request.channel, ANSWER_WITHIN)
            self._finish(request, False, "no answer from the server")

    def _finish(self, request: _Request, complete: bool, reason: str = "") -> None:
        if self.pending.get(request.folded) is request:
            del self.pending[request.folded]
        if request.timer is not None:
            request.timer.cancel()
            request.timer = None
        if request.keep and len(request.lines) > request.keep:
            del request.lines[:-request.keep]
        live = [m for m in (self.host.message_of(request.conn, event, kind)
                            for event, kind in request.held) if m is not None]
        messages = merge(request.lines, live)
        newest = next((m.tags["msgid"] for m in reversed(messages) if m.tags.get("msgid")), None)
        if newest is not None:
            self.anchors[request.folded] = newest
        result = HistoryResult(self.host.name, request.folded, tuple(messages), complete,
                               reason, len(request.lines))
        log.info("%s: %s of %s: %d lines from the server%s", self.host.name,
                 "catch-up" if request.catch_up else "history", request.channel,
                 len(request.lines), "" if complete else f" ({reason})")
        try:
            request.done(result)
        finally:
            waiting = self._waiting.get(request.folded)
            if waiting:
                following = waiting.popleft()
                if not waiting:
                    del self._waiting[request.folded]
                self._restart(following)

    def _restart(self, request: _Request) -> None:
        why = self.usable(request.conn, request.channel)
        if why:
            request.done(HistoryResult(self.host.name, request.folded, (), False, why))
            return
        if request.catch_up:  # the anchor may have moved while it waited
            anchor = self.anchors.get(request.folded)
            request.after = f"msgid={anchor}" if anchor else request.after
        self._send(request)

    def bot_joined(self, conn: IrcConnection, channel: str) -> None:
        """The bot is in `channel` (again): the core may want what it missed."""
        if self.on_bot_join is not None:
            self.on_bot_join(self.host.fold(channel))

    # ------------------------------------------------------------ incoming lines
    def _tracker(self, conn: IrcConnection) -> BatchTracker[irc.client.Event]:
        key = id(conn)
        tracker = self._batches.get(key)
        if tracker is None:
            tracker = self._batches[key] = BatchTracker()
        return tracker

    def intercept(self, conn: IrcConnection, event: irc.client.Event) -> bool:
        """A line of `conn`: True when it is taken here (a BATCH, a line of a batch read
        here, a FAIL of ours, a live line that waits for a request), else False."""
        kind = event.type
        if kind == "batch":
            self._batch_line(conn, event)
            return True
        if kind == "fail":
            return self._fail(conn, event)
        if kind == "disconnect":
            self._lost(conn)
            return False
        if not event.tags:
            return self._live(conn, event)
        tags = tag_map(event.tags)
        tracker = self._batches.get(id(conn))
        batch = tracker.of(tags) if tracker is not None else None
        if batch is None:
            return self._live(conn, event, tags)
        outer = tracker.outermost(batch) if tracker is not None else batch
        if outer.type == CHATHISTORY:
            if kind in _MESSAGES and tracker is not None:
                tracker.add(outer, event)
            return True  # nothing of a history batch is live
        if outer.type in (NETSPLIT, NETJOIN) and kind in ("quit", "join"):
            if tracker is not None:
                tracker.add(outer, event)
            return True
        return False

    def _live(self, conn: IrcConnection, event: irc.client.Event,
              tags: Mapping[str, str] | None = None) -> bool:
        kind = _MESSAGES.get(event.type)
        if kind is None or not event.target:
            return False
        folded = self.host.fold(event.target)
        if self.host.forwarder(event.target) is not conn:
            return False
        msgid = (tags if tags is not None else tag_map(event.tags)).get("msgid")
        if msgid:
            self.anchors[folded] = msgid
        request = self.pending.get(folded)
        if request is None:
            return False
        request.held.append((event, kind))
        return True

    def _batch_line(self, conn: IrcConnection, event: irc.client.Event) -> None:
        tracker = self._tracker(conn)
        ended = tracker.command(str(event.target or ""), list(event.arguments or []),
                                tag_map(event.tags))
        if ended is None or ended.parent is not None:
            return
        if ended.type == CHATHISTORY:
            self._history_batch(conn, ended)
        elif ended.type == NETSPLIT:
            log.info("%s: netsplit %s: %d users", self.host.name, " ".join(ended.params),
                     len(ended.events))
            for quit in ended.events:
                self.host.split_quit(conn, quit)
        elif ended.type == NETJOIN:
            log.info("%s: netjoin %s: %d joins", self.host.name, " ".join(ended.params),
                     len(ended.events))
            for join in ended.events:
                self.host.on_event(conn, join)

    def _history_batch(self, conn: IrcConnection, batch: Batch[irc.client.Event]) -> None:
        target = batch.params[0] if batch.params else ""
        request = self.pending.get(self.host.fold(target)) if target else None
        page = [m for m in (self.host.message_of(conn, event, _MESSAGES[event.type],
                                                 history=True)
                            for event in batch.events) if m is not None]
        if request is None or request.conn is not conn:
            self._replayed(conn, target, page)
            return
        request.lines.extend(page)
        newest = next((tag_map(e.tags).get("msgid") for e in reversed(batch.events)
                       if tag_map(e.tags).get("msgid")), None)
        if request.catch_up and len(batch.events) >= request.limit and newest \
                and request.pages < MAX_PAGES:
            request.after = f"msgid={newest}"
            self._send(request)  # a full page: there may be more
            return
        self._finish(request, True)

    def _replayed(self, conn: IrcConnection, target: str, page: list[IrcMessage]) -> None:
        """A chathistory batch nobody asked for (InspIRCd's chanhistory replays one on JOIN
        in a +H channel): a catch-up like any other, if the core takes replays."""
        if not target or self.host.forwarder(target) is not conn or not page \
                or self.on_replay is None:
            return
        folded = self.host.fold(target)
        newest = next((m.tags["msgid"] for m in reversed(page) if m.tags.get("msgid")), None)
        if newest is not None:
            self.anchors[folded] = newest
        log.info("%s: %d lines of %s replayed by the server", self.host.name, len(page), target)
        self.on_replay(HistoryResult(self.host.name, folded, tuple(merge(page, ())), True,
                                     "", len(page)))

    def _fail(self, conn: IrcConnection, event: irc.client.Event) -> bool:
        """`FAIL CHATHISTORY <code> [context...] :text`: the request it names (or the only
        one of this connection) ends with what it has."""
        if str(event.target or "").upper() != "CHATHISTORY":
            return False
        arguments = [str(a) for a in event.arguments or []]
        mine = [r for r in self.pending.values() if r.conn is conn]
        named = [r for r in mine if any(self.host.fold(a) == r.folded for a in arguments)]
        chosen = named or mine[:1]
        for request in chosen:
            self._finish(request, False, " ".join(arguments) or "FAIL")
        return True

    def _lost(self, conn: IrcConnection) -> None:
        self._batches.pop(id(conn), None)
        for request in [r for r in self.pending.values() if r.conn is conn]:
            self._finish(request, False, "the connection was lost")


def _server_max(conn: IrcConnection) -> int:
    """Lines per request: the server's ISUPPORT CHATHISTORY (0 there means no limit)."""
    value = getattr(conn.conn.features, "chathistory", None)
    try:
        most = int(value) if value is not None else DEFAULT_MAX
    except (TypeError, ValueError):
        most = DEFAULT_MAX
    return most if most > 0 else 1000
