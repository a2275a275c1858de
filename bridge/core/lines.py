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
from ..pipeline.outbox import Recorder, RoomCreated
from ..rules.names import is_channel
from ..store.models import PM_PREFIX, IrcLine
from .directory import Directory


class LineQueue:
    """The entry of IRC->Matrix lines (see module)."""

    def __init__(self, config: Config, directory: Directory):
        self.config = config
        self.directory = directory
        self.recorder: Recorder | None = None  # set by attach(), at start

    def attach(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def record(self, network: str, channel: str, nick: str, sender: str, msgtype: str,
               body: str, html: str | None, ts: int | None = None) -> None:
        """Queue one line for `channel` (a folded channel, or a private conversation's key)."""
        if self.recorder is None:
            return
        self.recorder.put(IrcLine(
            network=network, channel=channel, channel_name=channel, nick=nick, sender=sender,
            msgtype=msgtype, body=body, html=html,
            ts=ts if ts is not None else int(time.time() * 1000),
        ))

    def private_key(self, network: str, owner: str, nick: str) -> str:
        """The routing key of the private conversation of `owner` with `nick`."""
        return f"{PM_PREFIX}{owner}:{self.directory.fold_nick(network, nick)}"

    def room_created(self, network: str, channel: str, room_id: str,
                     replay: bool = True) -> None:
        """A channel (folded) has its room now: its queued lines and scrollback go there."""
        if self.recorder is not None:
            self.recorder.put(RoomCreated(network, channel, room_id, threading.Event(), replay))

    def forget(self, network: str, channel: str) -> None:
        """A channel lost its room: its lines are kept as scrollback again."""
        if self.recorder is not None:
            self.recorder.forget(network, channel)

    def notice(self, network: str, channel: str, text: str) -> None:
        """The bot tells a bridged channel's room something."""
        self.record(network, channel, "", self.config.bot_user_id, "m.notice", text, None)

    def tell_failure(self, network: str, owner: str, target: str, reason: str) -> None:
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
        self.record(network, self.private_key(network, owner, target), target,
                    directory.sender_for_nick(network, target), "m.notice", text, None)
