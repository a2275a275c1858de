"""IRC -> Matrix: what the bridge does with what IRC says, and how it reaches the room.

A mixin of `core.Bridge`. The `irc_*` listener methods run on the IRC thread and only queue
lines in the recorder; `deliver` runs on the homeserver senders and makes the calls, as the
virtual users, with the IRC time.
"""

from __future__ import annotations

import dataclasses
import logging
from urllib.parse import quote

from ..config.ini import Config
from ..irc.events import (
    IrcConnectionEvent,
    IrcFailure,
    IrcKind,
    IrcMembership,
    IrcMessage,
    IrcPrivate,
    IrcReaction,
    IrcTopic,
    MembershipChange,
)
from ..irc.tags import REPLY
from ..matrix import (
    ONCE,
    Forbidden,
    HomeserverClient,
    HomeserverUnavailable,
    Intent,
    IntentCache,
    MatrixError,
)
from ..matrix.state import MemberStore
from ..pipeline.meter import NO_METER, Meter
from ..pipeline.outbox import GiveUp, Retry
from ..rules import formatting
from ..rules.ids import EventId, JsonDict, RoomId, UserId
from ..rules.names import NetworkNames
from ..store import kinds
from ..store.kinds import (
    Invite,
    Join,
    JoinRule,
    Leave,
    LineKind,
    MadePrivate,
    Power,
    Reaction,
    Sync,
    Topic,
)
from ..store.models import QueuedLine, Store
from . import reactions
from .directory import Directory
from .lines import LineQueue
from .links import LinkRegistry
from .msgids import in_reply_to
from .ports import AdminPort
from .privacy import ChannelPrivacy

log = logging.getLogger(__name__)


# What each IRC kind of line becomes in the room.
MSGTYPES: dict[IrcKind, str] = {
    IrcKind.PRIVMSG: "m.text",
    IrcKind.NOTICE: "m.notice",
    IrcKind.ACTION: "m.emote",
}


def _membership_payload(event: IrcMembership) -> tuple[LineKind, Join | Leave]:
    """The outbox row of a membership change (what `_state_join`/`_state_leave` read)."""
    if event.change is MembershipChange.JOIN:
        return LineKind.JOIN, Join(event.ts)
    if event.change is MembershipChange.KICK:
        return LineKind.KICK, Leave(event.reason or "", by=event.by)
    return LineKind.LEAVE, Leave(event.reason or "", netsplit=bool(event.netsplit))


# Each bridged message carries the txnId it was sent with, so a retry can find it.
TXN_KEY = "org.ircbridge.txn"


class IrcToMatrix:
    """IRC events -> durable lines (IRC thread) -> homeserver calls (senders)."""

    def __init__(self, config: Config, store: Store, client: HomeserverClient,
                 cache: IntentCache, members: MemberStore, bot: Intent,
                 names: dict[str, NetworkNames], registry: LinkRegistry, directory: Directory,
                 lines: LineQueue, privacy: ChannelPrivacy):
        self.config = config
        self.store = store
        self.client = client
        self.cache = cache
        self.members = members
        self.bot = bot
        self.names = names
        self.registry = registry
        self.directory = directory
        self.lines = lines
        self.privacy = privacy
        self.admin: AdminPort | None = None  # set by Bridge.attach
        self.meter: Meter = NO_METER  # set by Bridge.attach
        # This bridge's prefix of txnIds (the store's, read at start: see `begin`).
        self.txn_prefix = ""

    def begin(self, txn_prefix: str) -> None:
        """At start, before the senders run: the txnId prefix of this bridge's rows."""
        self.txn_prefix = txn_prefix

    # ------------------------------------------------------------ IRC listener (IRC thread)
    def irc_message(self, event: IrcMessage) -> None:
        network, channel, nick = event.network, event.channel, event.nick
        body, html = formatting.irc_to_matrix(event.text, event.mentions)  # pills per text run
        if not body.strip():
            return
        if not self.privacy.may_relay(network, channel):
            return  # private: see bridge.core.privacy
        self.lines.record(network, channel, nick, self.directory.sender_for_nick(network, nick),
                          MSGTYPES[event.kind], body, html, event.ts,
                          msgid=event.tags.get("msgid") or None,
                          reply_to=event.tags.get(REPLY) or None)

    def irc_private(self, event: IrcPrivate) -> None:
        network, nick = event.network, event.nick
        body, html = formatting.irc_to_matrix(event.text)
        if not body.strip():
            return
        self.lines.record(network, self.directory.fold_nick(network, nick), nick,
                          self.directory.sender_for_nick(network, nick), MSGTYPES[event.kind],
                          body, html, event.ts, private_to=event.owner,
                          msgid=event.tags.get("msgid") or None,
                          reply_to=event.tags.get(REPLY) or None)

    def irc_topic(self, event: IrcTopic) -> None:
        network, channel, topic, nick = event.network, event.channel, event.topic, event.nick
        self.registry.set_topic(network, channel, topic)
        if nick is not None and self.directory.has_room(network, channel) \
                and self.privacy.may_relay(network, channel):
            self.lines.state(network, channel, nick, self.directory.sender_for_nick(network, nick),
                             LineKind.TOPIC, Topic(topic))

    def irc_membership(self, event: IrcMembership) -> None:
        network, channel, nick, what = event.network, event.channel, event.nick, event.change
        if not self.directory.has_room(network, channel) \
                or not self.privacy.may_relay(network, channel):
            return
        sender = self.directory.sender_for_nick(network, nick)
        if what == "nick":
            new = event.new_nick
            self.lines.state(network, channel, nick, sender, LineKind.LEAVE,
                             Leave(f"changed nick to {new}"))
            self.lines.state(network, channel, new, self.directory.sender_for_nick(network, new),
                             LineKind.JOIN, Join())
            return
        kind, payload = _membership_payload(event)
        self.lines.state(network, channel, nick, sender, kind, payload, event.ts)

    def irc_reaction(self, event: IrcReaction) -> None:
        """IRC thread: a reaction in a bridged channel, queued like its lines."""
        network, channel, nick = event.network, event.channel, event.nick
        if not self.directory.has_room(network, channel) \
                or not self.privacy.may_relay(network, channel):
            return
        self.lines.state(network, channel, nick, self.directory.sender_for_nick(network, nick),
                         LineKind.REACTION, Reaction(event.key, event.msgid))

    def irc_failure(self, event: IrcFailure) -> None:
        """A line of a Matrix user was refused by IRC: tell them, never drop it silently."""
        self.lines.tell_failure(event.network, event.owner, event.target, event.reason)

    def irc_connection(self, event: IrcConnectionEvent) -> None:
        network, owner, what = event.network, event.owner, event.change
        who = owner or "bot"
        if what == "lost":
            self.meter.irc_reconnect(network)
        if what == "joined" and owner:
            self.privacy.puppet_joined(network, owner, str(event.channel))
            return
        if what in ("channel_ready", "channel_modes", "channel_refused"):
            self._bot_channel_event(event)
            return
        if what in ("kicked", "rejoined"):
            self._kick_notice(event)
        if self.admin is not None:
            try:
                self.admin.connection_event(event)
            except Exception:  # noqa: BLE001 - reporting must never break the IRC thread
                log.exception("admin room report failed")
        if what == "connected":
            log.info("%s connected to %s as %s", who, network, event.nick)
        elif what == "nick_collision":
            log.info("%s on %s: nick %s taken, using %s", who, network, event.wanted,
                     event.using)

    def _bot_channel_event(self, event: IrcConnectionEvent) -> None:
        network, channel = event.network, event.channel or ""
        if event.change != "channel_ready":  # the modes (or a refusal) decide what room it gets
            self.registry.wake(network, channel)
        if event.nicks is not None and self.directory.has_room(network, channel):
            # Who is on IRC now: ghosts of users who left while we were away leave.
            self.lines.state(network, channel, "", self.config.bot_user_id, LineKind.SYNC,
                             Sync(tuple(event.nicks)))

    def _kick_notice(self, event: IrcConnectionEvent) -> None:
        """Our bot or a puppet was kicked (or is back): the room hears it from the bot."""
        network, owner, what = event.network, event.owner, event.change
        channel = str(event.channel or "")
        if not self.directory.has_room(network, channel):
            return
        if what == "rejoined":
            text = f"The bridge bot is back in {channel}."
        else:
            by = event.by or "the server"
            reason = f": {event.reason}" if event.reason else ""
            rejoin_in = event.rejoin_in
            if not owner:
                text = (f"The bridge bot was kicked from {channel} by {by}{reason}. It tries to "
                        f"rejoin in {rejoin_in:.0f} s; until it is back, lines from IRC may not "
                        "reach this room.")
            elif rejoin_in is not None:
                text = (f"{owner}: your IRC connection {event.nick} was kicked from "
                        f"{channel} by {by}{reason}. It rejoins in {rejoin_in:.0f} s.")
            else:
                text = (f"{owner}: your IRC connection {event.nick} was kicked from "
                        f"{channel} by {by} again{reason}. It will not rejoin by itself; send a "
                        "message here to rejoin.")
        self.lines.record(network, channel, "", self.config.bot_user_id, "m.notice", text, None)

    # ------------------------------------------------------------ IRC -> Matrix (senders)
    def deliver(self, line: QueuedLine, retrying: bool = False) -> str:
        """Send one outbox row to the homeserver, as its virtual user, with the IRC time.

        A retry first looks for the row's event in the room: a homeserver that stopped after
        storing the event but before answering forgets the txnId when it restarts.
        """
        try:
            room_id, line = self._route(line)
            if room_id is None:
                raise GiveUp(f"no room for {line.room_id or line.private_to}")
            if line.kind != LineKind.MESSAGE:
                return self._deliver_state(line, room_id)
            intent = self._speaker(line, room_id)
            txn_id = f"{self.txn_prefix}.{line.id}"
            if retrying:
                found = self._already_sent(room_id, line.sender, txn_id)
                if found:
                    return self._sent(line, room_id, found)
            content = self._message_content(line, txn_id)
            in_reply_to(self.store, line, room_id, content)
            # One try per call: a retry must first look for the event (see above), which the
            # client's own retries would skip. (The senders bound every call of a try to ONCE.)
            sender = Intent(self.client, intent.user_id, is_bot=intent.is_bot,
                            cache=self.cache, policy=ONCE)
            event_id = sender.send_message(room_id, content, ts=line.ts, txn_id=txn_id)
            self._private_room_still_open(line, room_id)
            return self._sent(line, room_id, event_id)
        except HomeserverUnavailable as e:
            raise Retry(str(e), after=e.retry_after) from e
        except Forbidden as e:
            self._private_room_refused(line, e)
            raise GiveUp(str(e)) from e
        except MatrixError as e:
            if e.status == 429 or e.status >= 500 or e.status == 0:
                raise Retry(str(e), after=e.retry_after) from e
            raise GiveUp(str(e)) from e

    def _sent(self, line: QueuedLine, room_id: RoomId, event_id: str) -> str:
        """The line is in the room: its IRC msgid (if any) is stored beside the event."""
        if line.msgid:
            self.store.link_msgid(line.network, line.msgid, room_id, EventId(event_id), line.ts)
        return event_id

    def _speaker(self, line: QueuedLine, room_id: RoomId) -> Intent:
        """The bot, or the line's virtual user, registered and joined to the room."""
        if line.sender == self.config.bot_user_id:
            return self.bot
        intent = self.directory.prepare_ghost(line.network, line.nick, line.sender)
        self._join_ghost(intent, room_id)
        return intent

    @staticmethod
    def _message_content(line: QueuedLine, txn_id: str) -> JsonDict:
        """The m.room.message content of a line, carrying its txnId for retries to find."""
        content: JsonDict = {"msgtype": line.msgtype, "body": line.body, TXN_KEY: txn_id}
        if line.html:
            content["format"] = "org.matrix.custom.html"
            content["formatted_body"] = line.html
        return content

    def _private_room_still_open(self, line: QueuedLine, room_id: RoomId) -> None:
        """A private room its owner left while this line was sent: send it again, in the
        new room the next try opens."""
        if line.private_to is not None and self.store.pm_for_room(room_id) is None:
            raise Retry(f"the private room {room_id} ended while the line was sent")

    def _private_room_refused(self, line: QueuedLine, error: Forbidden) -> None:
        """The virtual user may no longer speak in the private room: it ends, and the line
        is tried again in a new one."""
        if line.private_to is None:
            return
        nick = self.directory.fold_nick(line.network, line.nick)
        pm = self.store.pm_room(line.network, line.private_to, nick)
        if pm is None:
            return
        log.info("private room %s refused a line (%s); the next try opens a new one",
                 pm.room_id, error)
        self.store.end_pm_room(pm.room_id)
        raise Retry(str(error)) from error

    def _already_sent(self, room_id: RoomId, sender: UserId, txn_id: str) -> str | None:
        """The event a previous try of this row made, if the homeserver kept it."""
        user = None if sender == self.config.bot_user_id else sender
        try:
            recent = self.client.request(
                "GET", f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/messages",
                params={"dir": "b", "limit": "50"}, user_id=user, policy=ONCE,
            )
        except HomeserverUnavailable:
            raise
        except MatrixError as e:  # e.g. not in the room yet: nothing was sent there
            log.debug("cannot look back in %s: %s", room_id, e)
            return None
        chunk = recent.get("chunk")
        for event in chunk if isinstance(chunk, list) else []:
            content = event.get("content") if isinstance(event, dict) else None
            if not isinstance(content, dict):
                continue
            if event.get("sender") == sender and content.get(TXN_KEY) == txn_id:
                log.info("line already in %s as %s; not sent again", room_id,
                         event.get("event_id"))
                return str(event.get("event_id"))
        return None

    def _route(self, line: QueuedLine) -> tuple[RoomId | None, QueuedLine]:
        """The room of a row; a private conversation's room is looked up, or made.

        In a private room the other side is one virtual user whatever the case of the nick
        IRC used this time, so the row is sent as that user.
        """
        owner = line.private_to
        if owner is None:
            return line.room_id, line
        nick = self.directory.fold_nick(line.network, line.nick)
        pm = self.store.pm_room(line.network, owner, nick)
        if pm is not None:
            if line.sender != pm.ghost:
                ghost_nick = self.names[line.network].nick_for_user_id(pm.ghost) or line.nick
                line = dataclasses.replace(line, sender=pm.ghost, nick=ghost_nick)
            return pm.room_id, line
        if line.sender == self.config.bot_user_id:
            return None, line
        ghost = self.directory.prepare_ghost(line.network, line.nick, line.sender)
        room_id = ghost.create_room(
            alias_localpart=None, name=None, topic=None, preset="trusted_private_chat",
            invite=[owner], extra_body={"is_direct": True},
        )
        self.store.set_pm_room(line.network, owner, nick, line.sender, room_id)
        log.info("opened a private room %s for %s and %s", room_id, owner, line.nick)
        return room_id, line

    def _deliver_state(self, line: QueuedLine, room_id: RoomId) -> str:
        """Membership, topic and power changes said on IRC, as their virtual users."""
        payload = kinds.decode(line.kind, line.body)
        privacy = self.privacy
        match payload:
            case Join():
                return self._state_join(line, room_id)
            case Leave():
                return self._state_leave(line, room_id, payload)
            case Topic():
                return self._state_topic(line, room_id, payload)
            case Sync():
                return self._state_sync(line, room_id, payload)
            case Power():
                return privacy.state_power(line, room_id, payload)
            case JoinRule():
                return privacy.state_join_rule(line, room_id, payload)
            case MadePrivate():
                return privacy.state_private(line, room_id, payload)
            case Invite():
                return privacy.state_invite(line, room_id)
            case Reaction():
                return self._state_reaction(line, room_id, payload)
        return ""

    def _state_reaction(self, line: QueuedLine, room_id: RoomId, reaction: Reaction) -> str:
        """An IRC +draft/react: the virtual user's m.reaction to the event of its msgid."""
        content = reactions.reaction_content(self.store, line.network, room_id, reaction)
        if content is None:
            return ""
        intent = self.directory.prepare_ghost(line.network, line.nick, line.sender)
        self._join_ghost(intent, room_id)
        return intent.send_message(room_id, content, ts=line.ts,
                                   txn_id=f"{self.txn_prefix}.{line.id}",
                                   event_type="m.reaction")

    def _state_join(self, line: QueuedLine, room_id: RoomId) -> str:
        ghost = self.directory.prepare_ghost(line.network, line.nick, line.sender)
        self._join_ghost(ghost, room_id)
        return ""

    def _join_ghost(self, intent: Intent, room_id: RoomId) -> None:
        """Join a virtual user; in an invite-only room (+i/+k on IRC) the bot invites it."""
        try:
            intent.ensure_joined(room_id)
        except Forbidden:
            if self.directory.link_for_room(room_id) is None:
                raise
            self.bot.invite(room_id, intent.user_id)
            intent.ensure_joined(room_id)
        self.members.set_membership(room_id, intent.user_id, "join")

    def _state_leave(self, line: QueuedLine, room_id: RoomId, leave: Leave) -> str:
        # The homeserver says who is in the room: ghosts joined before a restart leave too.
        joined = self.members.is_joined(room_id, line.sender)
        if joined is None:
            joined = self.cache.is_joined(room_id, line.sender)
        if not joined:
            return ""
        reason = leave.reason
        ghost = Intent(self.client, line.sender, cache=self.cache)
        if line.kind == LineKind.KICK and leave.by:
            reason = f"kicked by {leave.by}" + (f": {reason}" if reason else "")
            try:
                self.bot.kick(room_id, line.sender, reason)
            except Forbidden:
                ghost.leave(room_id)
        else:
            ghost.leave(room_id)
        self.cache.forget_joined(room_id, line.sender)
        self.members.set_membership(room_id, line.sender, "leave")
        return ""

    def _state_sync(self, line: QueuedLine, room_id: RoomId, sync: Sync) -> str:
        """The channel's names as the bot found them: stale ghosts of this network leave."""
        names = self.names[line.network]
        fold = self.directory.fold_nick
        present = {fold(line.network, n) for n in sync.nicks}
        for user_id in sorted(self.members.joined(room_id)):
            nick = names.nick_for_user_id(user_id)
            if nick is None or self.directory.fold_nick(line.network, nick) in present:
                continue
            log.info("%s is no longer on IRC: its virtual user leaves %s", nick, room_id)
            try:
                Intent(self.client, user_id, cache=self.cache).leave(room_id)
            except Forbidden as e:
                log.info("%s could not leave %s: %s", user_id, room_id, e)
            self.members.set_membership(room_id, user_id, "leave")
        return ""

    def _state_topic(self, line: QueuedLine, room_id: RoomId, topic: Topic) -> str:
        content = {"topic": topic.topic}
        intent = self.directory.prepare_ghost(line.network, line.nick, line.sender)
        self._join_ghost(intent, room_id)
        try:
            return intent.set_state(room_id, "m.room.topic", "", content, ts=line.ts)
        except Forbidden:
            return self.bot.set_state(room_id, "m.room.topic", "", content, ts=line.ts)
