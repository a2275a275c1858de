"""The bridge: one object that owns the parts and wires them together.

`Bridge` builds the parts with their collaborators and starts and stops their threads; the
policy lives in the parts: `MatrixToIrc` (what a pushed event does on IRC), `IrcToMatrix`
(what IRC says, as durable lines, then homeserver calls), `ChannelPrivacy` (what channel
modes mean for a room), `Portals` (alias queries and links), `Startup` (the homeserver
checks, the puppets' return), `ThirdPartyLookups`, and the shared `Directory` (names,
links, virtual users) and `LineQueue` (the entry of IRC->Matrix lines). Its public methods
are thin delegations, the seam the web layer, the admin rooms and the CLI call. It imports
no Flask.

Threads: request threads call `handle_transaction`, `handle_ephemeral`, `query_user`,
`query_room`; the inbox thread calls `on_matrix_event`; the IRC thread calls the `irc_*`
listener methods (which only queue); the senders call `deliver`; the "ephemeral" thread
makes presence and typing calls (core/presence.py).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypedDict

from ..config.ini import Config, NetworkConfig
from ..config.registration import announce
from ..irc import IrcSide, NetworkStatus
from ..irc.events import (
    IrcCasemapping,
    IrcChannelState,
    IrcConnectionEvent,
    IrcFailure,
    IrcMembership,
    IrcMessage,
    IrcPower,
    IrcPrivate,
    IrcReaction,
    IrcTopic,
)
from ..irc.presence import IrcPresence
from ..matrix import QUERY, HomeserverClient, Intent, IntentCache
from ..matrix.state import MemberStore, PowerLevels
from ..matrix.wire import JsonObject
from ..ops.metrics import Metrics
from ..pipeline.inbox import Completion, InboxWorker
from ..pipeline.meter import NO_METER, Meter
from ..pipeline.outbox import Recorder, Senders
from ..rules.ids import JsonDict, RoomId, UserId
from ..rules.names import NetworkNames, sanitize_nick
from ..store.models import Link, LockHeld, QueuedLine, Store
from ..store.retention import Pruner
from ..store.room_options import RoomOptions
from .access import Access
from .backfill import Backfill
from .directory import Directory
from .foreign import ForeignUsers
from .irc_to_matrix import IrcToMatrix
from .lines import LineQueue
from .links import LinkRegistry
from .matrix_to_irc import MatrixToIrc
from .media import MediaLinks
from .portals import Portals
from .ports import AdminPort
from .presence import Ephemeral
from .privacy import ChannelPrivacy
from .relay import Relay
from .startup import Startup
from .thirdparty import ThirdPartyLocation, ThirdPartyLookups, ThirdPartyUser

log = logging.getLogger(__name__)

# Seconds between checks of the PostgreSQL lock sessions: short, so that after a database
# restart this bridge has its locks back before a second bridge could boot and take them.
LOCK_CHECK_EVERY = 0.5


def _raise_open_files_limit() -> None:
    """One socket per puppet: allow as many open files as the system lets this process."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            log.debug("cannot raise the open files limit from %s", soft)


class BridgeStatus(TypedDict):
    """What `Bridge.status` reports (/health and the ops pages add to it)."""

    homeserver: str | None
    ping: str | None
    networks: dict[str, NetworkStatus]
    rooms: int
    inbox_in_flight: int
    outbox_depth: int


class Bridge:
    """One per process (in `app.extensions["bridge"]`); owns and wires the parts."""

    def __init__(self, config: Config, store: Store | None = None,
                 client: HomeserverClient | None = None):
        self.config = config
        self.store = store or Store(config.database.url, config.appservice.id,
                                    sqlite_synchronous=config.database.sqlite_synchronous)
        self.client = client or HomeserverClient(
            config.homeserver.url, config.appservice.as_token,
            server_name=config.homeserver.domain,
        )
        self.cache = IntentCache()
        # Who is in each room, as the homeserver says (listed once, then kept current).
        self.members = MemberStore(lambda room_id: self.client.joined_members(room_id))
        # Each room's power levels, the same way (bridge/matrix/state.py).
        self.power_levels = PowerLevels(
            lambda room_id: self.bot.get_state(room_id, "m.room.power_levels"))
        self.access = Access(config)  # [permissions] and the portal limits
        self.names = {
            n.name: NetworkNames(n.user_template, n.alias_template, config.homeserver.domain)
            for n in config.networks
        }
        self.bot = Intent(self.client, config.bot_user_id, is_bot=True, cache=self.cache)
        self.irc = IrcSide(config.networks, self, self._bot_nick)
        # Other application services' users (bridge/core/foreign.py): never puppeted.
        self.foreign = ForeignUsers(self.store, config.appservice.exclude_users)
        self.pruner = Pruner(self.store, config.database.keep_days)
        # Links, alias locks, channel waiters and topics: one owner, its own lock.
        self.registry = LinkRegistry()
        self.room_options = RoomOptions(self.store.db, self.store.bridge_id)
        self.health: dict[str, str] = {"homeserver": "unknown", "ping": "unknown"}
        self._stopping = threading.Event()
        self._started = False
        self._start_lock = threading.Lock()

        # The parts, each given what it works with.
        self.directory = Directory(config, self.names, self.irc, self.registry, self.foreign,
                                   self.client, self.cache, self.store)
        self.lines = LineQueue(config, self.directory)
        self.privacy = ChannelPrivacy(config, self.client, self.bot, self.irc,
                                      self.room_options, self.directory, self.lines,
                                      self.power_levels)
        self.irc_to_matrix = IrcToMatrix(config, self.store, self.client, self.cache,
                                         self.members, self.bot, self.names, self.registry,
                                         self.directory, self.lines, self.privacy)
        self.matrix_to_irc = MatrixToIrc(config, self.store, self.client, self.cache, self.bot,
                                         self.irc, self.names, self.access, self.directory,
                                         self.lines)
        self.matrix_to_irc.relay = Relay(self.matrix_to_irc, self.room_options)
        self.portals = Portals(config, self.store, self.client, self.cache, self.bot, self.irc,
                               self.names, self.access, self.registry, self.room_options,
                               self.directory, self.lines, self.privacy)
        self.backfill = Backfill(config, self.store, self.irc, self.registry, self.directory,
                                 self.lines, self.privacy)
        self.portals.backfill = self.backfill
        self.startup = Startup(config, self.client, self.bot, self.irc, self.directory,
                               self.links, self.matrix_to_irc.puppet_join, self._stopping,
                               self.health)
        self.thirdparty = ThirdPartyLookups(config, self.names, self.directory)
        self.ephemeral = Ephemeral(config, self.client, self.cache, self.irc, self.directory,
                                   self.members)
        self.hs_ready = self.startup.hs_ready

        # The durable pipeline, made at start (its files and threads belong to a running
        # bridge).
        self.recorder: Recorder | None = None
        self.senders: Senders | None = None
        self.inbox: InboxWorker | None = None
        # Wired in after construction by `attach` (they are made with the bridge).
        self._admin: AdminPort | None = None
        self.meter: Meter = NO_METER
        self._media: MediaLinks | None = None

    def attach(self, *, admin: AdminPort | None = None, media: MediaLinks | None = None,
               meter: Metrics | None = None) -> None:
        """Wire in the admin rooms, the media links and the app's metrics, to every part
        that uses them (before `start`)."""
        if meter is not None:
            self.meter = meter
            self.irc_to_matrix.meter = self.matrix_to_irc.meter = meter
            self.client.observer = meter.hs_request
        if admin is not None:
            self._admin = admin
            for part in (self.privacy, self.irc_to_matrix, self.matrix_to_irc, self.portals):
                part.admin = admin
        if media is not None:
            self._media = media
            self.matrix_to_irc.media = media

    @property
    def admin(self) -> AdminPort | None:
        """The admin rooms (bridge.admin), once attached."""
        return self._admin

    @admin.setter
    def admin(self, admin: AdminPort) -> None:
        self.attach(admin=admin)

    @property
    def media(self) -> MediaLinks | None:
        """Signed media links and pastes of long messages; None: plain mxc links."""
        return self._media

    @media.setter
    def media(self, media: MediaLinks) -> None:
        self.attach(media=media)

    @property
    def txn_prefix(self) -> str:
        return self.irc_to_matrix.txn_prefix

    # ------------------------------------------------------------ lifecycle
    def _bot_nick(self, network: NetworkConfig) -> str:
        return network.bot_nick or sanitize_nick(self.config.appservice.sender_localpart[:20])

    def start(self, *, connect_irc: bool = True, check_homeserver: bool = True) -> None:
        """Take the per-network locks, then start the threads. Raises LockHeld."""
        with self._start_lock:
            if self._started:
                return
            self._started = True
        _raise_open_files_limit()
        networks = [n.name for n in self.config.networks]
        try:
            for name in networks:
                self.store.acquire_network_lock(name)
        except Exception:
            self.store.release_locks()
            self._started = False
            raise
        self.irc_to_matrix.begin(self.store.txn_prefix())
        announce(self.store, self.config)
        self.foreign.reload()
        self.room_options.load()
        self.load_links()
        self.senders = Senders(self.store, self.deliver, count=self.config.appservice.senders,
                               meter=self.meter)
        self.recorder = Recorder(
            self.store,
            {(lk.network, lk.channel): lk.room_id for lk in self.links()},
            {n.name: n.scrollback_lines for n in self.config.networks},
            self.directory.sender_for_nick,
            self.senders.dispatch,
            spill=self._local_path("unstored"),
        )
        self.lines.attach(self.recorder)
        self.inbox = InboxWorker(self.store, self.on_matrix_event,
                                 journal=self._local_path("sent"), meter=self.meter)
        self.inbox.on_uncertain = self._maybe_not_delivered
        self.senders.start()
        self.recorder.start()
        self.senders.dispatch(self.store.pending_outbox())
        self.inbox.start()
        self.pruner.start()
        self.ephemeral.start()
        if check_homeserver:
            threading.Thread(target=self.startup.run, name="startup-checks",
                             daemon=True).start()
        else:
            self.hs_ready.set()
        if connect_irc:
            self.backfill.start()  # catch-up anchors, before the IRC thread runs
            self.irc.start()
            for link in self.links():  # the bot listens in every bridged channel again
                net = self.irc.network(link.network)
                if net is not None:
                    self.irc.call(net.join_bot, link.channel_name)
        if not self.store.is_sqlite:
            threading.Thread(target=self._keep_locks, name="lock-keeper", daemon=True).start()

    def _keep_locks(self) -> None:
        """Hold the per-network PostgreSQL locks across database restarts; if another bridge
        took one meanwhile, this one stops serving IRC rather than doubling connections."""
        while not self._stopping.wait(LOCK_CHECK_EVERY):
            try:
                self.store.check_locks()
            except LockHeld as e:
                log.critical("%s: closing every IRC connection of this bridge", e)
                self.health["lock"] = "lost"
                self.irc.stop("Bridge lost its lock")
                return
            except Exception as e:  # noqa: BLE001 - the database is still down: try later
                log.warning("cannot check the network locks yet: %s", e)

    def _maybe_not_delivered(self, event: JsonDict) -> None:
        """A message whose sending was cut by a crash: its sender hears it, where they wrote."""
        room_id = RoomId(str(event.get("room_id")))
        sender = event.get("sender")
        if not isinstance(sender, str):
            return
        sender = UserId(sender)
        reason = "the bridge stopped while sending it; it may not have arrived"
        link = self.directory.link_for_room(room_id)
        if link is not None:
            self.lines.tell_failure(link.network, sender, link.channel_name, reason)
            return
        pm = self.store.pm_for_room(room_id)
        if pm is not None and pm.owner == sender:
            nick = self.names[pm.network].nick_for_user_id(pm.ghost) or pm.nick
            self.lines.tell_failure(pm.network, sender, nick, reason)

    def _local_path(self, kind: str) -> Path:
        """A small file of this bridge's own (the sent journal, the lines a stop could not
        store): beside the SQLite file, or beside config.ini (one per bridge id) with
        PostgreSQL."""
        if self.store.is_sqlite:
            return Path(f"{self.store.db.database}.{self.config.appservice.id}.{kind}")
        return self.config.path.parent / f".{self.config.appservice.id}.{kind}"

    def stop(self) -> None:
        """Clean stop, part by part in this order; never raises.

        No more Matrix events are handed out; every IRC connection QUITs (lines still waiting
        for flood control stay pending in the inbox and are sent after the restart); the
        journal of sent events is closed; the recorder stores the IRC lines it holds (or
        spills them to a local file when the database does not take them in time); the
        senders end between two rows (what they had not sent is pending in the outbox); then
        admin work, the homeserver clients and the store. Bounded to fit gunicorn's
        graceful_timeout (10 s).
        """
        if self._stopping.is_set():
            return
        self._stopping.set()
        if not self._started:
            return
        inbox, recorder, senders = self.inbox, self.recorder, self.senders
        steps: list[tuple[str, Callable[[], None]]] = [
            ("the pruner", lambda: self.pruner.stop(timeout=1.0)),
            ("presence and typing", lambda: self.ephemeral.stop(timeout=1.0)),
            ("the inbox", lambda: inbox.stop(timeout=2.0) if inbox else None),
            ("IRC", lambda: self.irc.stop("Bridge shutting down", timeout=3.0)),
            ("the sent journal", lambda: inbox.close() if inbox else None),
            ("the recorder", lambda: recorder.stop(timeout=2.0) if recorder else None),
            ("the senders", lambda: senders.stop(timeout=1.0) if senders else None),
            ("the admin rooms", lambda: self.admin.stop() if self.admin is not None else None),
            ("the homeserver client", self.client.close),
            ("the store", self.store.close),
        ]
        for what, step in steps:
            try:
                step()
            except Exception:  # noqa: BLE001 - the rest must stop too
                log.exception("stopping %s failed; stopping the rest", what)

    def load_links(self) -> None:
        """The links of the store into the registry (at start)."""
        self.registry.add_all(self.store.all_links())

    # ------------------------------------------------------------ AS API (request threads)
    def handle_transaction(self, txn_id: str, events: list[JsonDict]) -> tuple[bool, int]:
        """Store the events durably (before the 200) and wake the inbox worker."""
        seen, new = self.store.record_transaction(txn_id, events)
        for room_id, user_id in self.members.apply(events):
            self.cache.forget_joined(room_id, user_id)
        self.power_levels.apply(events)
        if new and self.inbox is not None:
            self.inbox.notify()
        return seen, new

    def handle_ephemeral(self, events: list[JsonDict]) -> None:
        """Typing and presence pushed with a transaction (see Ephemeral); not stored."""
        self.ephemeral.matrix_ephemeral(events)

    def query_user(self, user_id: UserId) -> bool:
        """Register a virtual user the homeserver asked about; False means 404."""
        for network, names in self.names.items():
            nick = names.nick_for_user_id(user_id)
            if nick is None:
                continue
            # The homeserver waits at most 60 s for the answer: a short budget (QUERY), so a
            # homeserver that cannot be reached back gives a clear error in time.
            self.directory.prepare_ghost(network, nick, user_id, policy=QUERY)
            return True
        return False

    def query_room(self, alias: str, for_user: str | None = None) -> bool:
        """Create the portal room for a channel alias, blocking (see Portals.query_room)."""
        return self.portals.query_room(alias, for_user)

    def link_room(self, network: str, channel: str, room_id: RoomId, *, kind: str = "plumbed",
                  mirror_modes: bool = False, relay: bool | None = None) -> Link:
        """Bridge an existing room to a channel (see Portals.link_room)."""
        return self.portals.link_room(network, channel, room_id, kind=kind,
                                      mirror_modes=mirror_modes, relay=relay)

    def unlink_room(self, room_id: RoomId, network: str | None = None) -> Link | None:
        return self.portals.unlink_room(room_id, network)

    def links(self, room_id: RoomId | None = None) -> list[Link]:
        return self.portals.links(room_id)

    def thirdparty_protocol(self) -> JsonObject:
        return self.thirdparty.thirdparty_protocol()

    def thirdparty_location(self, network: str | None,
                            channel: str | None) -> list[ThirdPartyLocation]:
        return self.thirdparty.thirdparty_location(network, channel)

    def thirdparty_user(self, network: str | None, nick: str | None) -> list[ThirdPartyUser]:
        return self.thirdparty.thirdparty_user(network, nick)

    def thirdparty_location_by_alias(self, alias: str | None) -> list[ThirdPartyLocation]:
        return self.thirdparty.thirdparty_location_by_alias(alias)

    def thirdparty_user_by_id(self, user_id: str | None) -> list[ThirdPartyUser]:
        return self.thirdparty.thirdparty_user_by_id(user_id)

    # ------------------------------------------------------------ questions (any thread)
    def is_ours(self, user_id: UserId) -> bool:
        return self.directory.is_ours(user_id)

    def is_foreign(self, user_id: UserId) -> bool:
        return self.directory.is_foreign(user_id)

    def link_for_room(self, room_id: RoomId) -> Link | None:
        return self.directory.link_for_room(room_id)

    def links_for_room(self, room_id: RoomId) -> list[Link]:
        return self.directory.links_for_room(room_id)

    def fold_nick(self, network: str, nick: str) -> str:
        return self.directory.fold_nick(network, nick)

    def fold_channel(self, network: str, channel: str) -> str:
        return self.directory.fold_channel(network, channel)

    def casemapping(self, network: str) -> str:
        return self.directory.casemapping(network)

    def room_is_private(self, room_id: RoomId) -> bool:
        return self.privacy.room_is_private(room_id)

    # ------------------------------------------------------------ the inbox and the senders
    def on_matrix_event(self, event: JsonDict, completion: Completion) -> None:
        """Inbox thread: one pushed event (see MatrixToIrc)."""
        self.matrix_to_irc.on_matrix_event(event, completion)

    def deliver(self, line: QueuedLine, retrying: bool = False) -> str:
        """A homeserver sender: one outbox row (see IrcToMatrix.deliver)."""
        return self.irc_to_matrix.deliver(line, retrying)

    # ------------------------------------------------------------ IRC listener (IRC thread)
    def irc_message(self, event: IrcMessage) -> None:
        self.irc_to_matrix.irc_message(event)

    def irc_private(self, event: IrcPrivate) -> None:
        self.irc_to_matrix.irc_private(event)

    def irc_topic(self, event: IrcTopic) -> None:
        self.irc_to_matrix.irc_topic(event)

    def irc_membership(self, event: IrcMembership) -> None:
        self.irc_to_matrix.irc_membership(event)

    def irc_failure(self, event: IrcFailure) -> None:
        self.irc_to_matrix.irc_failure(event)

    def irc_reaction(self, event: IrcReaction) -> None:
        self.irc_to_matrix.irc_reaction(event)

    def irc_connection(self, event: IrcConnectionEvent) -> None:
        self.irc_to_matrix.irc_connection(event)

    def irc_ephemeral(self, event: IrcPresence) -> None:
        self.ephemeral.irc_ephemeral(event)

    def irc_channel_state(self, event: IrcChannelState) -> None:
        self.privacy.irc_channel_state(event)

    def irc_power(self, event: IrcPower) -> None:
        self.privacy.irc_power(event)

    def irc_casemapping(self, event: IrcCasemapping) -> None:
        """The network announced a CASEMAPPING other than rfc1459. Links stored under another
        folding are re-keyed on a thread of their own: it writes the store."""
        threading.Thread(target=self.portals.rekey_links,
                         args=(event.network, event.casemapping),
                         name="casemap-rekey", daemon=True).start()

    # ------------------------------------------------------------ status
    def status(self) -> BridgeStatus:
        return {
            "homeserver": self.health.get("homeserver"),
            "ping": self.health.get("ping"),
            "networks": self.irc.status() if self.irc.started else {},
            "rooms": self.registry.room_count(),
            "inbox_in_flight": self.inbox.in_flight if self.inbox else 0,
            "outbox_depth": self.senders.depth if self.senders else 0,
        }
