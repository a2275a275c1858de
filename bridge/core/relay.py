"""Relay mode: Matrix users without an IRC connection of their own are said by the bot.

Who is relayed (`relayed`): a room's override (RoomOptions.relay: on or off) first; else the
network's `relay_mode`: `always` (nobody has an own connection there: a network's connection
limit, a plumbed room), `optional` (own connections, but a user may choose `!relay on` in
their admin room: puppet setting `relay`), `off` (everyone has their own connection).

What they say (`channel_event`): a message goes through the same translation as an own
connection's (formatting, splitting, edits, replies' text, media links, paste links past
max_lines), then the bot sends it (bridge.irc.relaymsg): `RELAYMSG` from `alice/m` where the
server offers draft/relaymsg, else `<alice> text` (the budget of each line less the
`<alice> ` prefix). Their joins, leaves and topic changes make no connection: they are not
said on IRC.

Thread: the inbox thread (MatrixToIrc calls it); IRC work is handed to the IRC thread.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from ..config.ini import Config, NetworkConfig
from ..irc import IrcSide
from ..irc.connection import REFUSED
from ..irc.receipt import Receipt
from ..pipeline.fanout import Outcome
from ..rules import translate
from ..rules.ids import JsonDict, RoomId, UserId
from ..rules.names import puppet_nick
from ..store.models import Link
from ..store.room_options import RoomOptions

if TYPE_CHECKING:
    from ..irc import Network


log = logging.getLogger(__name__)

MODES = ("off", "optional", "always")


def relay_nick(user_id: str, nick_max: int) -> str:
    """The name a relayed user goes by: their localpart as a nick, room left for `/m`."""
    return puppet_nick("{localpart}", user_id, None, max(1, nick_max - 2))


def decide(mode: str, room: bool | None, choice: object) -> bool:
    """Is the user relayed by the bot? (see module): the room's override, else the mode."""
    if room is not None:
        return room
    if mode == "always":
        return True
    return mode == "optional" and choice == "on"


class Settings(Protocol):
    def puppet_settings(self, network: str, user_id: str) -> Mapping[str, object]: ...


class Meter(Protocol):
    def relayed(self, direction: str, msgtype: object) -> None: ...


class Failures(Protocol):
    def tell_failure(self, network: str, user_id: UserId, target: str, error: str) -> None: ...


class RelayHost(Protocol):
    """What relay mode uses of MatrixToIrc (core/matrix_to_irc.py)."""

    config: Config
    irc: IrcSide

    @property
    def admin(self) -> Settings | None: ...

    @property
    def meter(self) -> Meter: ...

    @property
    def lines(self) -> Failures: ...

    def _translate_context(self, network: NetworkConfig, target: str, room_id: RoomId,
                           sender: str = "") -> translate.Context: ...


class Relay:
    """Relay mode for MatrixToIrc (inbox thread)."""

    def __init__(self, owner: RelayHost, room_options: RoomOptions | None):
        self.owner = owner
        self.room_options = room_options

    def relayed(self, link: Link, user_id: str) -> bool:
        config = self.owner.config.network(link.network)
        mode = config.relay_mode if config is not None else "off"
        room = self.room_options.relay(link.room_id) if self.room_options is not None else None
        if room is None and mode == "off":
            return False  # the common case asks nothing else
        admin = self.owner.admin
        choice = admin.puppet_settings(link.network, user_id).get("relay") \
            if admin is not None and mode == "optional" else None
        return decide(mode, room, choice)

    def channel_event(self, event: JsonDict, content: JsonDict, link: Link, net: Network,
                      completion: Outcome) -> None:
        done = completion.finished
        if event.get("type") != "m.room.message":
            done(True)  # no connection of theirs: memberships and topics stay on Matrix
            return
        sender = UserId(str(event["sender"]))
        snapshot = self.owner.irc.snapshot(link.network)
        nick = relay_nick(sender, snapshot.nick_max if snapshot is not None else 30)
        ctx = self.owner._translate_context(net.config, link.channel_name, link.room_id,
                                            sender)
        # `<alice> ` takes room from every line; RELAYMSG lines are not batched.
        ctx = dataclasses.replace(ctx, budget=ctx.budget - len(f"<{nick}> ".encode()),
                                  multiline=None)
        lines, kind = translate.to_irc(content, ctx)
        if not lines:
            done(True)
            return

        def sent(ok: bool, error: str | None) -> None:
            if ok:
                self.owner.meter.relayed("matrix_to_irc", content.get("msgtype"))
            elif not completion.stopping:
                log.warning("message %s not relayed to IRC: %s", event.get("event_id"), error)
                if error and not error.startswith(REFUSED):
                    self.owner.lines.tell_failure(link.network, sender, link.channel_name,
                                                  error)
            done(ok)

        self.owner.irc.call(net.relay_say, link.channel_name, nick, lines, kind,
                            Receipt(sent, completion.started))
