"""Where IRC->Matrix lines enter the durable pipeline, and the notices the bridge adds.

`LineQueue` hands lines to the recorder (bridge.pipeline.outbox) once the bridge started it:
what IRC said, the membership and mode changes the parts derive from it, and the bridge's own
notices (a line IRC did not take, a kick). It never waits on the database.

Thread: any thread (mostly the IRC thread); the recorder is attached once, at start, before
the IRC thread runs.
"""

from __future__ import annotations

import threading
import time

from ..config.ini import Config
from ..pipeline.backfill import HistoryLines
from ..pipeline.outbox import Recorder, RoomCreated
from ..rules.ids import RoomId, UserId
from ..rules.names import is_channel
from ..store import kinds
from ..store.kinds import LineKind, Payload
from ..store.models import IrcLine
from .directory import Directory


def _now_or(ts: int | None) -> int:
    return ts if ts is not None else int(time.time() * 1000)


class LineQueue:
    """The entry of IRC->Matrix lines (see module)."""

    def __init__(self, config: Config, directory: Directory):
        self.config = config
        self.directory = directory
        self.recorder: Recorder | None = None  # set by attach(), at start

    def attach(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def record(self, network: str, channel: str, nick: str, sender: UserId, msgtype: str,
               body: str, html: str | None, ts: int | None = None, *,
               private_to: UserId | None = None, msgid: str | None = None,
               reply_to: str | None = None) -> None:
        """Queue one message for `channel` (folded), or, with `private_to`, for the private
        conversation of that Matrix user with `nick`; `reply_to` is the msgid it answers."""
        self._put(IrcLine(
            network=network, channel=channel, channel_name=channel, nick=nick, sender=sender,
            msgtype=msgtype, body=body, html=html, ts=_now_or(ts), private_to=private_to,
            msgid=msgid, reply_to=reply_to,
        ))

    def state(self, network: str, channel: str, nick: str, sender: UserId, kind: LineKind,
              payload: Payload, ts: int | None = None) -> None:
        """Queue one change of a bridged channel's room (a join, a topic, a power level)."""
        self._put(IrcLine(
            network=network, channel=channel, channel_name=channel, nick=nick, sender=sender,
            msgtype="", body=kinds.encode(payload), html=None, ts=_now_or(ts), kind=kind,
        ))

    def _put(self, line: IrcLine) -> None:
        if self.recorder is not None:
            self.recorder.put(line)

    def room_created(self, network: str, channel: str, room_id: RoomId,
                     replay: bool = True, history: tuple[IrcLine, ...] = ()) -> None:
        """A channel (folded) has its room now: its queued lines and scrollback go there,
        merged with the server's `history` (bridge.pipeline.backfill)."""
        if self.recorder is not None:
            self.recorder.put(RoomCreated(network, channel, room_id, threading.Event(), replay,
                                          history))

    def caught_up(self, network: str, channel: str, lines: tuple[IrcLine, ...]) -> None:
        """History lines of a bridged channel (folded) the bridge may have missed."""
        if self.recorder is not None and lines:
            self.recorder.put(HistoryLines(network, channel, lines))

    def forget(self, network: str, channel: str) -> None:
        """A channel lost its room: its lines are kept as scrollback again."""
        if self.recorder is not None:
            self.recorder.forget(network, channel)

    def notice(self, network: str, channel: str, text: str) -> None:
        """The bot tells a bridged channel's room something."""
        self.record(network, channel, "", self.config.bot_user_id, "m.notice", text, None)

    def tell_failure(self, network: str, owner: UserId, target: str, reason: str) -> None:
        """A line of `owner`'s was not delivered to `target` on IRC: the room hears why."""
        directory = self.directory
        who = directory.nick_of(network, owner)
        text = f"{who}: not delivered to {target} on IRC: {reason}"
        if is_channel(target):
            folded = directory.fold_channel(network, target)
            if directory.has_room(network, folded):
                self.notice(network, folded, text)
            return
        # In a private room the bot is not a member: the other side's virtual user says it.
        self.record(network, directory.fold_nick(network, target), target,
                    directory.sender_for_nick(network, target), "m.notice", text, None,
                    private_to=owner)
