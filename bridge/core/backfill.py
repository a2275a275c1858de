"""Backfill from the server's history: a new portal's recent lines, and what a restart missed.

When a portal is made for a channel, the bot asks the server for its latest lines
(`CHATHISTORY LATEST`, up to the network's `scrollback_lines`); the room is handed to the
recorder with them, merged with the scrollback the bot heard, each line once and in time
order (bridge.pipeline.backfill). When the bot joins a bridged channel again (the bridge
started, or the bot's link came back), it asks for what was said after the last msgid the
room got (`CHATHISTORY AFTER`), and those lines are stored like live ones, again without
a line the bridge has already; a history the server replays by itself on JOIN (InspIRCd's
chanhistory, +H) is taken the same way. Servers without draft/chathistory: the room gets its
scrollback as before, and nothing is caught up.

Threads: `start` on the starting thread, before the IRC thread runs; `portal_made` on a
request thread (the alias query); the rest on the IRC thread (the history's callbacks).
"""

from __future__ import annotations

import logging

from ..config.ini import Config
from ..irc import IrcSide
from ..irc.events import IrcMessage
from ..irc.history import HistoryResult
from ..rules import formatting
from ..rules.ids import RoomId
from ..store.models import IrcLine, Store
from .directory import Directory
from .irc_to_matrix import MSGTYPES
from .lines import LineQueue
from .links import LinkRegistry
from .privacy import ChannelPrivacy

log = logging.getLogger(__name__)


class Backfill:
    """History from the server into rooms (see module)."""

    def __init__(self, config: Config, store: Store, irc: IrcSide, registry: LinkRegistry,
                 directory: Directory, lines: LineQueue, privacy: ChannelPrivacy) -> None:
        self.config = config
        self.store = store
        self.irc = irc
        self.registry = registry
        self.directory = directory
        self.lines = lines
        self.privacy = privacy
        self.limits = {n.name: n.scrollback_lines for n in config.networks}

    def start(self) -> None:
        """Where each bridged channel's catch-up starts (the newest msgid its room got),
        and the bot's joins hooked; before the IRC thread runs."""
        for name, net in self.irc.networks.items():
            anchors: dict[str, str] = {}
            for link in self.registry.links_on(name):
                last = self.store.last_msgid(name, link.room_id)
                if last is not None:
                    anchors[link.channel] = last[0]
            net.history.remember(anchors)
            net.history.on_bot_join = lambda channel, network=name: self._bot_joined(
                network, channel)
            net.history.on_replay = self._replayed

    # ------------------------------------------------------------ a new portal
    def portal_made(self, network: str, channel: str, folded: str, room_id: RoomId,
                    replay: bool) -> None:
        """The room of a channel exists: it goes to the recorder with the server's recent
        lines (once they are here), or at once where there is no history to ask for."""
        net = self.irc.network(network)
        limit = self.limits.get(network, 0)
        if not replay or limit <= 0 or net is None or not self.irc.started:
            self.lines.room_created(network, folded, room_id, replay)
            return

        def ask() -> None:
            net.history.latest(net.bot, channel, limit,
                               lambda result: self._latest(result, room_id))

        self.irc.call(ask)

    def _latest(self, result: HistoryResult, room_id: RoomId) -> None:
        history = tuple(self._lines(result))
        if history:
            log.info("%d lines of %s on %s from the server's history for %s", len(history),
                     result.channel, result.network, room_id)
        self.lines.room_created(result.network, result.channel, room_id, True, history)

    # ------------------------------------------------------------ catch-up
    def _bot_joined(self, network: str, channel: str) -> None:
        """IRC thread: the bot is in a channel again; a bridged one catches up."""
        if not self.directory.has_room(network, channel):
            return
        net = self.irc.network(network)
        if net is not None:
            net.history.catch_up(net.bot, channel, self._caught_up)

    def _caught_up(self, result: HistoryResult) -> None:
        if not self.directory.has_room(result.network, result.channel):
            return
        self.lines.caught_up(result.network, result.channel, tuple(self._lines(result)))

    def _replayed(self, result: HistoryResult) -> None:
        """A server's replay on JOIN: a catch-up for a bridged channel; scrollback (each
        line once) for one without a room yet, which its portal shows."""
        self.lines.caught_up(result.network, result.channel, tuple(self._lines(result)))

    # ------------------------------------------------------------ lines
    def _lines(self, result: HistoryResult) -> list[IrcLine]:
        return [line for line in (self._line(m) for m in result.messages) if line is not None]

    def _line(self, event: IrcMessage) -> IrcLine | None:
        """The durable line of a history (or waiting live) message, as `irc_message` makes
        it; None for what is not relayed (an empty text, a private channel)."""
        network, channel, nick = event.network, event.channel, event.nick
        body, html = formatting.irc_to_matrix(event.text, event.mentions)
        if not body.strip() or not self.privacy.may_relay(network, channel):
            return None
        return IrcLine(network=network, channel=channel, channel_name=channel, nick=nick,
                       sender=self.directory.sender_for_nick(network, nick),
                       msgtype=MSGTYPES[event.kind], body=body, html=html, ts=event.ts,
                       msgid=event.tags.get("msgid") or None)
