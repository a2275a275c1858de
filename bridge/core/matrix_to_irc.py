"""Matrix -> IRC: what the bridge does with each event the homeserver pushed.

A part of `core.Bridge`, run on the inbox thread: messages become IRC lines said by the
sender's own IRC connection, membership and topics become IRC commands, an invite to a
virtual user opens a private conversation. IRC work is handed to the IRC thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..config.ini import Config, NetworkConfig
from ..irc import IrcSide
from ..irc.connection import REFUSED
from ..irc.receipt import Receipt
from ..matrix import HomeserverClient, Intent, IntentCache, MatrixError
from ..pipeline.fanout import Outcome, Shares
from ..pipeline.inbox import Completion
from ..pipeline.meter import NO_METER, Meter
from ..rules import formatting, multiline, translate
from ..rules.ids import EventId, JsonDict, RoomId, UserId
from ..rules.names import NetworkNames, puppet_nick
from ..store.models import Link, PrivateRoom, Store
from . import access, reactions
from .directory import Directory
from .lines import LineQueue
from .media import MediaLinks
from .msgids import MsgidWriter, reply_tags
from .ports import AdminPort
from .relay import Relay

log = logging.getLogger(__name__)


class MatrixToIrc:
    """Matrix events -> IRC (inbox thread)."""

    def __init__(self, config: Config, store: Store, client: HomeserverClient,
                 cache: IntentCache, bot: Intent, irc: IrcSide, names: dict[str, NetworkNames],
                 gate: access.Access, directory: Directory, lines: LineQueue):
        self.config = config
        self.store = store
        self.client = client
        self.cache = cache
        self.bot = bot
        self.irc = irc
        self.names = names
        self.access = gate
        self.directory = directory
        self.lines = lines
        self.admin: AdminPort | None = None  # set by Bridge.attach
        self.meter: Meter = NO_METER  # set by Bridge.attach
        self.media: MediaLinks | None = None  # set by Bridge.attach; None: plain mxc links
        self.relay: Relay | None = None  # relay mode (core/relay.py), set by the Bridge
        self.msgids = MsgidWriter(store)  # echoed msgids beside their events (echo-message)

    # ------------------------------------------------------------ Matrix -> IRC (inbox thread)
    def on_matrix_event(self, event: JsonDict, completion: Completion) -> None:
        done = completion.finished
        sender = event.get("sender")
        room_id = event.get("room_id")
        content = event.get("content")
        if not isinstance(sender, str) or not isinstance(room_id, str) \
                or self.directory.is_ours(UserId(sender)) or not isinstance(content, dict) \
                or self.directory.is_foreign(UserId(sender)):
            done(True)
            return
        if self.media is not None and self.media.revocations is not None:
            self.media.revocations.observe(event)  # before any refusal: a redaction counts
        if access.refused(self, event):
            done(True)
            return
        if self.admin is not None and self.admin.handle_event(event):
            done(True)
            return
        if event.get("type") == "m.room.member" and self._invite_to_ghost(event, content):
            done(True)
            return
        links = self.directory.links_for_room(RoomId(room_id))
        if len(links) == 1:
            self._linked_event(event, content, links[0], completion)
            return
        if links:  # linked on several networks: said on each, done when all are
            shares = Shares(completion, len(links))
            for link in links:
                self._linked_event(event, content, link, shares.part())
            return
        pm = self.store.pm_for_room(RoomId(room_id))
        if pm is not None and pm.owner == sender:
            self._private_event(event, content, pm, completion)
            return
        done(True)

    def _linked_event(self, event: JsonDict, content: JsonDict, link: Link,
                      completion: Outcome) -> None:
        """An event in a linked room: relayed by the bot for a user in relay mode
        (core/relay.py), else said by the user's own connection."""
        net = self.irc.network(link.network)
        if net is not None and self.relay is not None \
                and self.relay.relayed(link, str(event["sender"])):
            self.relay.channel_event(event, content, link, net, completion)
            return
        self._channel_event(event, content, link, completion)

    def _channel_event(self, event: JsonDict, content: JsonDict, link: Link,
                       completion: Outcome) -> None:
        done = completion.finished
        net = self.irc.network(link.network)
        etype = event.get("type")
        sender = UserId(str(event["sender"]))
        if net is None:
            done(True)
            return
        if etype == "m.room.member":
            self._membership_to_irc(event, content, link)
            done(True)
            return
        if etype == "m.room.topic" and event.get("state_key") == "":
            topic = formatting.sanitize_line(str(content.get("topic") or "")).strip()
            self.irc.call(net.command, sender, f"TOPIC {link.channel_name} :{topic}",
                          link.channel_name)
            done(True)
            return
        if etype != "m.room.message":
            self._reaction(event, content, link, completion)  # or nothing to do
            return
        lines, kind = translate.to_irc(content, self._translate_context(
            net.config, link.channel_name, link.room_id, sender))
        if not lines:
            done(True)
            return

        def sent(ok: bool, error: str | None) -> None:
            if ok:
                self.meter.relayed("matrix_to_irc", content.get("msgtype"))
            elif completion.stopping:
                pass  # closed by the stop: sent after the restart, nothing to tell
            else:
                log.warning("message %s not sent to IRC: %s", event.get("event_id"), error)
                if error and not error.startswith(REFUSED):  # refusals are told by the server
                    self.lines.tell_failure(link.network, sender, link.channel_name, error)
            done(ok)

        self.irc.call(net.say, sender, None, link.channel_name, lines, kind,
                      Receipt(sent, completion.started, self._echoed(link.network, event)),
                      reply_tags(self.store, link.network, content))

    def _reaction(self, event: JsonDict, content: JsonDict, link: Link,
                  completion: Outcome) -> None:
        """m.reaction -> a TAGMSG, or a short line (bridge.core.reactions)."""
        net = self.irc.network(link.network)
        found = reactions.reaction_of(content) if event.get("type") == "m.reaction" else None
        if net is None or found is None:
            completion.finished(True)
            return
        sender = str(event["sender"])
        msgid = self.store.msgid_of_event(link.network, found.event_id)
        original = self.store.find_message(found.event_id, link.room_id)
        opted_out = self.admin is not None and self.admin.puppet_settings(
            link.network, sender).get("reactions") == "off"
        fallback = None if original is None or opted_out else \
            reactions.fallback_line(found.key, original[2])

        def sent(ok: bool, error: str | None) -> None:
            completion.finished(ok or completion.stopping)

        self.irc.call(reactions.send_reaction, net, sender, link.channel_name, found.key, msgid,
                      fallback, Receipt(sent, completion.started))

    def _private_event(self, event: JsonDict, content: JsonDict, pm: PrivateRoom,
                       completion: Completion) -> None:
        done = completion.finished
        if event.get("type") == "m.room.member" and event.get("state_key") == pm.owner \
                and content.get("membership") in ("leave", "ban"):
            self._end_private_room(pm)
            done(True)
            return
        net = self.irc.network(pm.network)
        if net is None or event.get("type") != "m.room.message":
            done(True)
            return
        nick = self.names[pm.network].nick_for_user_id(pm.ghost) or pm.nick
        lines, kind = translate.to_irc(content, self._translate_context(
            net.config, nick, pm.room_id, str(event["sender"])))

        def sent(ok: bool, error: str | None) -> None:
            if ok:
                self.meter.relayed("matrix_to_irc", content.get("msgtype"))
            elif error and not error.startswith(REFUSED) and not completion.stopping:
                self.lines.tell_failure(pm.network, UserId(str(event["sender"])), nick, error)
            done(ok)

        self.irc.call(net.say_private, str(event["sender"]), nick, lines, kind,
                      Receipt(sent, completion.started, self._echoed(pm.network, event)),
                      reply_tags(self.store, pm.network, content))

    def _echoed(self, network: str, event: JsonDict) -> Callable[[str, int], None]:
        """A Receipt's `echoed`: the server's msgid of a line is stored beside the event."""
        room_id = RoomId(str(event.get("room_id")))
        event_id = EventId(str(event.get("event_id") or ""))
        server_ts = event.get("origin_server_ts")

        def echoed(msgid: str, ts: int) -> None:
            if event_id:
                self.msgids.link(network, msgid, room_id, event_id,
                                 ts or (server_ts if isinstance(server_ts, int) else 0))
        return echoed

    def _end_private_room(self, pm: PrivateRoom) -> None:
        """The Matrix user left their private room: it ends; the virtual user leaves too."""
        self.store.end_pm_room(pm.room_id)
        log.info("%s left the private room %s with %s; the next message opens a new one",
                 pm.owner, pm.room_id, pm.nick)
        try:
            Intent(self.client, pm.ghost, cache=self.cache).leave(pm.room_id)
        except MatrixError as e:
            log.info("%s could not leave %s: %s", pm.ghost, pm.room_id, e)

    def _translate_context(self, network: NetworkConfig, target: str, room_id: RoomId,
                           sender: str = "") -> translate.Context:
        def find(event_id: str) -> translate.Origin | None:
            # Only this room's events: never another room's text (PMs, admin rooms).
            found = self.store.find_message(EventId(event_id), room_id)
            return translate.Origin(*found) if found else None

        snapshot = self.irc.snapshot(network.name)  # the bot's caps: draft/multiline limits
        return translate.Context(
            budget=formatting.payload_budget("PRIVMSG", target),
            max_lines=network.max_lines,
            find_message=find,
            nick_for_user=lambda user_id: self.directory.nick_of(network.name, user_id),
            media=self.media,
            paste=self._wants_paste(network.name, sender),
            multiline=multiline.limits(snapshot.caps) if snapshot is not None else None,
        )

    def _wants_paste(self, network: str, user_id: str) -> bool:
        """A user may choose (!longmessages lines) to send long messages as every line."""
        if self.admin is None or not user_id:
            return True
        return self.admin.puppet_settings(network, user_id).get("long_messages") != "lines"

    def _membership_to_irc(self, event: JsonDict, content: JsonDict,
                           link: Link) -> None:
        sender = UserId(str(event["sender"]))
        target = event.get("state_key")
        membership = content.get("membership")
        if not isinstance(target, str):
            return
        net = self.irc.network(link.network)
        if net is None:
            return
        channel = link.channel_name
        if target == sender:
            unsigned = event.get("unsigned")
            previous = unsigned.get("prev_content") if isinstance(unsigned, dict) else None
            was_joined = isinstance(previous, dict) and previous.get("membership") == "join"
            name = content.get("displayname")
            if membership == "join" and was_joined:
                self._displayname_changed(link, sender, name)
            elif membership == "join":
                self.irc.call(self.puppet_join, link, sender,
                              name if isinstance(name, str) else None)
            elif membership == "leave":
                self.irc.call(self._puppet_part, link, sender)
            return
        nick = self.names[link.network].nick_for_user_id(target)
        reason = formatting.sanitize_line(str(content.get("reason") or ""))[:200]
        if nick is not None and membership in ("leave", "ban"):
            # A Matrix user removed an IRC user: their puppet does it on IRC (if it may).
            if membership == "ban":
                self.irc.call(net.command, sender, f"MODE {channel} +b {nick}!*@*", channel)
            self.irc.call(net.command, sender, f"KICK {channel} {nick} :{reason or 'kicked'}",
                          channel)
        elif nick is None and membership in ("leave", "ban") \
                and not self.directory.is_ours(UserId(target)):
            self.irc.call(self._puppet_part, link, target)

    def _displayname_changed(self, link: Link, user_id: str, name: object) -> None:
        """With `{displayname}` in puppet_nick_template, a new display name is a new nick."""
        config = self.config.network(link.network)
        net = self.irc.network(link.network)
        snapshot = self.irc.snapshot(link.network)
        if config is None or net is None or snapshot is None \
                or "{displayname}" not in config.puppet_nick_template:
            return
        nick = puppet_nick(config.puppet_nick_template, user_id,
                           name if isinstance(name, str) else None, snapshot.nick_max)
        self.irc.call(net.command, user_id, f"NICK {nick}")

    def _invite_to_ghost(self, event: JsonDict, content: JsonDict) -> bool:
        """A Matrix user invites a virtual user: a private conversation with that nick."""
        target = event.get("state_key")
        if content.get("membership") != "invite" or not isinstance(target, str):
            return False
        for network, names in self.names.items():
            nick = names.nick_for_user_id(target)
            if nick is None:
                continue
            room_id = RoomId(str(event["room_id"]))
            if self.directory.link_for_room(room_id) is not None:
                return True  # invited into a bridged room: IRC decides who is there
            intent = self.directory.prepare_ghost(network, nick, UserId(target))
            try:
                intent.join(room_id)
            except MatrixError as e:
                log.warning("%s could not join %s: %s", target, room_id, e)
                return True
            self.store.set_pm_room(network, UserId(str(event["sender"])),
                                   self.directory.fold_nick(network, nick), UserId(target),
                                   room_id)
            net = self.irc.network(network)
            if net is not None:
                self.irc.call(net.puppet, str(event["sender"]))
            return True
        return False

    def puppet_join(self, link: Link, user_id: str, displayname: str | None) -> None:
        net = self.irc.network(link.network)
        if net is not None:
            net.puppet(user_id, displayname).join(link.channel_name)

    def _puppet_part(self, link: Link, user_id: str) -> None:
        net = self.irc.network(link.network)
        if net is not None:
            net.puppet_part(user_id, link.channel_name)

