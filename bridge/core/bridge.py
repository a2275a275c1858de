"""The bridge's policy: what happens when the homeserver asks or pushes, and when IRC speaks.

`Bridge` decides and delegates the I/O: homeserver calls through `matrix`, IRC work through
`IrcSide.call` (the IRC thread), persistence through `store`, and the two durable queues
through `inbox` and `outbox`. It imports no Flask: the web layer calls into it.

Threads: request threads call `handle_transaction`, `query_user`, `query_room`; the inbox
thread calls `on_matrix_event`; the IRC thread calls the `irc_*` listener methods (which only
queue); the senders call `deliver`.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config.ini import Config, NetworkConfig
from ..config.registration import announce
from ..irc import IrcSide
from ..irc.events import IrcCasemapping
from ..irc.modes import ChannelState
from ..matrix import (
    ONCE,
    QUERY,
    HomeserverClient,
    HomeserverUnavailable,
    Intent,
    IntentCache,
    MatrixError,
    RetryPolicy,
    RoomInUse,
    UnknownToken,
)
from ..matrix.state import MemberStore
from ..pipeline.inbox import InboxWorker
from ..pipeline.outbox import Recorder, RoomCreated, Senders
from ..rules.names import (
    NetworkNames,
    casefolder,
    displayname_for_nick,
    fold_channel,
    sanitize_nick,
)
from ..rules.permissions import role_of
from ..store.models import Link, LockHeld, Store
from ..store.retention import Pruner
from ..store.room_options import RoomOptions
from .access import Access, PortalLimited
from .foreign import ForeignUsers
from .irc_to_matrix import IrcToMatrix
from .links import LinkRegistry
from .matrix_to_irc import MatrixToIrc
from .privacy import ChannelPrivacy
from .thirdparty import ThirdPartyLookups

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


class Bridge(ChannelPrivacy, MatrixToIrc, IrcToMatrix, ThirdPartyLookups):
    """One per process (in `app.extensions["bridge"]`); wires every part together."""

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
        # (network, folded channel) -> its modes, as the IRC thread last published them.
        self._channel_states: dict[tuple[str, str], ChannelState] = {}
        self.room_options = RoomOptions(self.store.db, self.store.bridge_id)
        self.txn_prefix = ""
        self.recorder: Recorder | None = None
        self.senders: Senders | None = None
        self.inbox: InboxWorker | None = None
        self.hs_ready = threading.Event()
        # Admin rooms and their commands (bridge.admin); None until that part is wired in.
        self.admin: Any = None
        # Signed media links and pastes of long messages (bridge.media); None = plain mxc.
        self.media: Any = None
        self.health: dict[str, Any] = {"homeserver": "unknown", "ping": "unknown"}
        self._stopping = threading.Event()
        self._started = False
        self._start_lock = threading.Lock()

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
        self.txn_prefix = self.store.txn_prefix()
        announce(self.store, self.config)
        self.foreign.reload()
        self.room_options.load()
        self._load_links()
        self.senders = Senders(self.store, self.deliver, count=self.config.appservice.senders)
        self.recorder = Recorder(
            self.store,
            {(lk.network, lk.channel): lk.room_id for lk in self.links()},
            {n.name: n.scrollback_lines for n in self.config.networks},
            self._sender_for_nick,
            self.senders.dispatch,
            spill=self._local_path("unstored"),
        )
        self.inbox = InboxWorker(self.store, self.on_matrix_event,
                                 journal=self._local_path("sent"))
        self.inbox.on_uncertain = self._maybe_not_delivered
        self.senders.start()
        self.recorder.start()
        self.senders.dispatch(self.store.pending_outbox())
        self.inbox.start()
        self.pruner.start()
        if check_homeserver:
            threading.Thread(target=self._startup_checks, name="startup-checks",
                             daemon=True).start()
        else:
            self.hs_ready.set()
        if connect_irc:
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

    def _maybe_not_delivered(self, event: dict[str, Any]) -> None:
        """A message whose sending was cut by a crash: its sender hears it, where they wrote."""
        room_id = str(event.get("room_id"))
        sender = event.get("sender")
        if not isinstance(sender, str):
            return
        reason = "the bridge stopped while sending it; it may not have arrived"
        link = self.link_for_room(room_id)
        if link is not None:
            self.tell_failure(link.network, sender, link.channel_name, reason)
            return
        pm = self.store.pm_for_room(room_id)
        if pm is not None and pm.owner == sender:
            nick = self.names[pm.network].nick_for_user_id(pm.ghost) or pm.nick
            self.tell_failure(pm.network, sender, nick, reason)

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

    def _load_links(self) -> None:
        self.registry.add_all(self.store.all_links())

    def _startup_checks(self) -> None:
        """Check the homeserver once it answers; one clear log line per failure mode."""
        pause = 1.0
        while not self._stopping.is_set():
            try:
                self.client.versions(policy=ONCE)
                whoami = self.client.whoami()
                if whoami.get("user_id") != self.config.bot_user_id:
                    log.error("the homeserver says the as_token belongs to %s, expected %s",
                              whoami.get("user_id"), self.config.bot_user_id)
                self.bot.ensure_registered()
                self.health["homeserver"] = "ok"
                self.hs_ready.set()
                break
            except UnknownToken:
                self.health["homeserver"] = "as_token refused"
                log.error(
                    "the homeserver refused the as_token: is %s listed in its "
                    "app_service_config_files, and was it restarted after that?",
                    self.config.appservice.registration,
                )
            except HomeserverUnavailable as e:
                self.health["homeserver"] = "unreachable"
                log.error("homeserver %s unreachable (%s); retrying in %.0f s",
                          self.config.homeserver.url, e, pause)
            except MatrixError as e:
                self.health["homeserver"] = f"error {e.errcode}"
                log.error("homeserver check failed: %s", e)
            except Exception as e:  # noqa: BLE001 - e.g. connection refused with retry off
                self.health["homeserver"] = "unreachable"
                log.error("homeserver %s unreachable (%s); retrying in %.0f s",
                          self.config.homeserver.url, type(e).__name__, pause)
            self._stopping.wait(pause)
            pause = min(30.0, pause * 2)
        self._check_ping()
        self._restore_puppets()

    def _restore_puppets(self) -> None:
        """After a restart, the Matrix users of every bridged room are back on IRC.

        Their connections are opened through the per-network connect limit, so a restart
        with many users is paced, never a reconnect storm.
        """
        if not self.irc.started:
            return
        wanted: list[tuple[Link, str, str | None]] = []
        for link in self.links():
            try:
                members = self.client.joined_members(link.room_id)
            except MatrixError as e:
                log.warning("cannot list the members of %s: %s", link.room_id, e)
                continue
            for user_id, info in members.items():
                if self.is_ours(user_id) or self.is_foreign(user_id) \
                        or role_of(self.config, user_id) is None:
                    continue
                name = info.get("display_name") if isinstance(info, dict) else None
                wanted.append((link, user_id, name))
        if not wanted:
            return
        log.info("restoring %d IRC connections of Matrix users in %d rooms",
                 len({u for _, u, _ in wanted}), len(self.links()))
        for link, user_id, name in wanted:
            self.irc.call(self._puppet_join, link, user_id, name)

    def _check_ping(self) -> None:
        """Ask the homeserver to ping us back (spec checklist item 43)."""
        attempts = 0
        while not self._stopping.is_set() and attempts < 10:
            attempts += 1
            try:
                result = self.client.ping(self.config.appservice.id, f"startup-{time.time():.0f}")
                self.health["ping"] = "ok"
                log.info("homeserver reached the bridge at %s (AS ping %s ms)",
                         self.config.appservice.url, result.get("duration_ms"))
                return
            except MatrixError as e:
                self.health["ping"] = e.errcode or str(e.status)
                if e.errcode == "M_BAD_STATUS":
                    log.error("the homeserver reached the bridge but got HTTP %s (%s): "
                              "check hs_token in config.ini and the registration file",
                              e.body.get("status"), str(e.body.get("body"))[:200])
                elif e.errcode in ("M_CONNECTION_FAILED", "M_CONNECTION_TIMEOUT"):
                    log.error("the homeserver cannot reach the bridge at %s (%s): check "
                              "[appservice] url and bind", self.config.appservice.url, e.errcode)
                elif e.errcode == "M_FORBIDDEN":
                    log.error("the homeserver refused the ping: wrong as_token or "
                              "[appservice] id %r", self.config.appservice.id)
                    return
                elif e.errcode == "M_URL_NOT_SET":
                    log.error("the registration file has no url: the homeserver will not "
                              "push events; set [appservice] url and regenerate it")
                    return
                else:
                    log.error("AS ping failed: %s", e)
            except Exception as e:  # noqa: BLE001
                log.error("AS ping failed: %s", type(e).__name__)
            self._stopping.wait(min(30.0, 2.0 * attempts))

    # ------------------------------------------------------------ naming helpers
    def _sender_for_nick(self, network: str, nick: str) -> str:
        return self.names[network].user_id_for_nick(nick)

    def is_ours(self, user_id: str) -> bool:
        """The bot or any virtual user: their events are echoes and are never relayed."""
        if user_id == self.config.bot_user_id:
            return True
        return any(n.nick_for_user_id(user_id) is not None for n in self.names.values())

    def is_foreign(self, user_id: str) -> bool:
        """Another application service's user (bot or virtual user): never puppeted."""
        return self.foreign.is_foreign(user_id)

    def link_for_room(self, room_id: str) -> Link | None:
        """The room's link (its first, when it is linked on several networks)."""
        return self.registry.link_for_room(room_id)

    def links_for_room(self, room_id: str) -> list[Link]:
        """Every channel the room is linked to, one per network, oldest first."""
        return self.registry.links_for_room(room_id)

    def fold_nick(self, network: str, nick: str) -> str:
        """Nicks compare as the network's ISUPPORT CASEMAPPING says (the IRC thread's
        published snapshot, bridge.irc.IrcSide.casemapping)."""
        return casefolder(self.irc.casemapping(network))(nick)

    def casemapping(self, network: str) -> str:
        """The CASEMAPPING `network` announced (rfc1459 before its 005), any thread."""
        return self.irc.casemapping(network)

    def fold_channel(self, network: str, channel: str) -> str:
        """A channel's key and comparison form on `network` (see names.fold_channel)."""
        return fold_channel(self.irc.casemapping(network), channel)

    def irc_casemapping(self, event: IrcCasemapping) -> None:
        """IRC thread: the network announced a CASEMAPPING other than rfc1459. Links stored
        under another folding (rows of an older version, or made before the 005) are re-keyed
        from the channel name as written, on a thread of their own: it writes the store."""
        threading.Thread(target=self._rekey_links, args=(event.network, event.casemapping),
                         name="casemap-rekey", daemon=True).start()

    def _rekey_links(self, network: str, casemapping: str) -> None:
        stale = [lk for lk in self.registry.links_on(network)
                 if fold_channel(casemapping, lk.channel_name) != lk.channel]
        for old in stale:
            new = dataclasses.replace(old, channel=fold_channel(casemapping, old.channel_name))
            if self.registry.has_channel(network, new.channel):
                log.warning("%s on %s: another link holds key %s; left as %s",
                            old.channel_name, network, new.channel, old.channel)
                continue
            try:
                self.store.rekey_link(network, old.channel, new.channel)
            except Exception:  # noqa: BLE001 - the old key keeps working for the rest
                log.exception("could not re-key %s on %s", old.channel_name, network)
                continue
            self.registry.rekey(old, new)
            log.info("%s on %s re-keyed %s -> %s (CASEMAPPING=%s)", old.channel_name, network,
                     old.channel, new.channel, casemapping)
            if self.recorder is not None:
                self.recorder.forget(network, old.channel)
                self.recorder.put(RoomCreated(network, new.channel, new.room_id,
                                              threading.Event()))

    def _link_for_channel(self, network: str, channel: str) -> Link | None:
        return self.registry.link_for_channel(network, channel)

    # ------------------------------------------------------------ AS API (request threads)
    def handle_transaction(self, txn_id: str, events: list[dict[str, Any]]) -> tuple[bool, int]:
        """Store the events durably (before the 200) and wake the inbox worker."""
        seen, new = self.store.record_transaction(txn_id, events)
        for room_id, user_id in self.members.apply(events):
            self.cache.forget_joined(room_id, user_id)
        if new and self.inbox is not None:
            self.inbox.notify()
        return seen, new

    def query_user(self, user_id: str) -> bool:
        """Register a virtual user the homeserver asked about; False means 404."""
        for network, names in self.names.items():
            nick = names.nick_for_user_id(user_id)
            if nick is None:
                continue
            # The homeserver waits at most 60 s for the answer: a short budget (QUERY), so a
            # homeserver that cannot be reached back gives a clear error in time.
            self._prepare_ghost(network, nick, user_id, policy=QUERY)
            return True
        return False

    def _prepare_ghost(self, network: str, nick: str, user_id: str,
                       policy: RetryPolicy | None = None) -> Intent:
        intent = Intent(self.client, user_id, cache=self.cache, policy=policy)
        intent.ensure_registered()
        name = displayname_for_nick(nick)
        if self.cache.displayname(user_id) != name:
            intent.set_displayname(name)
            self.store.remember_virtual_user(user_id, network, nick, name)
        return intent

    def parse_alias(self, alias: str) -> tuple[str, str] | None:
        for network, names in self.names.items():
            channel = names.channel_for_alias(alias)
            if channel is not None:
                return network, channel
        return None

    def query_room(self, alias: str, for_user: str | None = None) -> bool:
        """Create the portal room for a channel alias, blocking; False means 404.

        Two queries for the same alias at once make one room: the second waits on a
        per-channel lock and then finds the link. Scrollback is replayed after the answer.
        A private channel (see bridge.core.privacy) answers 404, unless `for_user` (a `!join`)
        is in it through their puppet: then its room is invite-only and has no alias.
        `for_user` None is the homeserver's query, which names nobody: `bridge.access`
        decides and limits (raises PortalLimited for a named user past a limit).
        """
        parsed = self.parse_alias(alias)
        if parsed is None or not self.access.may_query(for_user):
            return False
        network, channel = parsed
        folded = self.fold_channel(network, channel)
        with self.registry.alias_lock(network, folded):
            link = self.registry.link_for_channel(network, folded)
            if link is not None:
                if self.channel_is_private(network, folded):
                    return False  # its room is found by invitation only
                # The room exists but the homeserver did not know this alias (another case,
                # or it was deleted): point it at the room.
                try:
                    self.client.put_alias(alias, link.room_id, policy=QUERY)
                except MatrixError as e:
                    log.info("alias %s for existing room: %s", alias, e)
                return True
            try:
                self.access.take_portal(network, for_user)
            except PortalLimited as e:
                if for_user is not None:
                    raise
                log.warning("no room for %s: %s", alias, e)
                return False
            self._bot_into_channel(network, channel, folded)
            private = self.channel_is_private(network, folded)
            if private and (for_user is None or not self.puppet_in(network, for_user, folded)):
                log.info("no portal for %s on %s: the channel is private (%s)", channel,
                         network, self.channel_state(network, folded).describe() or "room")
                return False
            room_id = self._create_portal(network, channel, alias, private=private)
            if private:
                self.room_options.set(room_id, private=True)
            link = self.store.add_link(network, folded, channel, room_id,
                                       None if private else alias)
            self.registry.add(link)
        self._after_room_created(network, channel, folded, room_id, replay=not private)
        if self.admin is not None and not private:
            self.admin.room_created(network, room_id)  # lists it in the directory; only queues
        return True

    def _bot_into_channel(self, network: str, channel: str, folded: str,
                          timeout: float = 5.0) -> None:
        """Have the bot join before the room is made, so its name and topic are known.

        Bounded: Synapse gives the whole alias query 60 s, and a channel that cannot be
        joined still gets a room (the bot keeps trying to join in the background).
        """
        net = self.irc.network(network)
        if net is None or not self.irc.started:
            return
        ready = self.registry.add_waiter(network, folded)
        try:
            if self.irc.call_sync(net.bot_in, channel, timeout=timeout):
                return
            self.irc.call(net.join_bot, channel)  # answered by its modes (324) or a refusal
            if not ready.wait(timeout):
                log.warning("the bot could not join %s on %s within %.0f s; creating the "
                            "room anyway", channel, network, timeout)
        except TimeoutError:
            log.warning("the IRC thread did not answer; creating the room for %s anyway", channel)
        finally:
            self.registry.remove_waiter(network, folded, ready)

    def _create_portal(self, network: str, channel: str, alias: str, *,
                       private: bool = False) -> str:
        localpart = alias[1:].rsplit(":", 1)[0]
        topic = self.registry.topic(network, self.fold_channel(network, channel))
        body: dict[str, Any] = {
            "name": channel,
            "visibility": "private",
            "creation_content": {"m.federate": True},
            **self.portal_room_body(private),
        }
        if private:
            body["invite"] = self._puppets_in(network, self.fold_channel(network, channel))
        else:
            body["room_alias_name"] = localpart
        if topic:
            body["topic"] = topic
        Intent(self.client, self.config.bot_user_id, is_bot=True, cache=self.cache,
               policy=QUERY).ensure_registered()
        try:
            room_id = self.client.create_room(body, policy=QUERY)
            log.info("created %sroom %s for %s on %s", "an invite-only " if private else "",
                     room_id, channel, network)
        except RoomInUse:
            found = self.client.resolve_alias(alias, policy=QUERY)
            if not found:
                raise
            room_id = found
        self.cache.mark_joined(room_id, self.config.bot_user_id)
        return room_id

    def _puppets_in(self, network: str, channel: str) -> list[str]:
        """The Matrix users whose puppets are in a channel (asks the IRC thread)."""
        net = self.irc.network(network)
        if net is None or not self.irc.started:
            return []
        try:
            return list(self.irc.call_sync(net.puppets_in, channel, timeout=5.0))
        except TimeoutError:
            return []

    def _after_room_created(self, network: str, channel: str, folded: str, room_id: str,
                            replay: bool = True) -> None:
        assert self.recorder is not None
        self.recorder.put(RoomCreated(network, folded, room_id, threading.Event(), replay))
        net = self.irc.network(network)
        if net is not None:
            self.irc.call(net.join_bot, channel)

    def link_room(self, network: str, channel: str, room_id: str, *, kind: str = "plumbed",
                  mirror_modes: bool = False) -> Link:
        """Bridge an existing Matrix room to a channel (provisioning, static mappings).

        The bot joins the room (it must be public or the bot invited) and the channel.
        IRC modes change the room only with `mirror_modes` (see bridge.core.privacy).
        Raises ValueError for an unknown network, an invalid channel, or a channel or room
        that is already linked elsewhere.
        """
        from ..rules.names import valid_channel

        if network not in self.names:
            raise ValueError(f"unknown network {network!r}")
        if not valid_channel(channel):
            raise ValueError(f"not a valid IRC channel: {channel!r}")
        folded = self.fold_channel(network, channel)
        existing, by_room = self.registry.claims(network, folded, room_id)
        if existing is not None and existing.room_id != room_id:
            raise ValueError(f"{channel} on {network} is already linked to {existing.room_id}")
        if by_room is not None and (by_room.network, by_room.channel) != (network, folded):
            raise ValueError(f"{room_id} is already linked to {by_room.channel_name} on "
                             f"{by_room.network}")
        if existing is not None:
            return existing
        self.bot.ensure_registered()
        self.bot.join(room_id)
        self.room_options.set(room_id, mirror_modes=mirror_modes)
        link = self.store.add_link(network, folded, channel, room_id, None, kind=kind)
        self.registry.add(link)
        self._after_room_created(network, channel, folded, room_id)
        return link

    def unlink_room(self, room_id: str, network: str | None = None) -> Link | None:
        """Stop bridging a room (to every network, or to `network` only); the bot leaves
        the channel. Returns the first link removed."""
        gone = [lk for lk in self.links_for_room(room_id) if network in (None, lk.network)]
        if not gone:
            return None
        self.store.remove_link(room_id, network)
        self.registry.remove(room_id, gone)
        for link in gone:
            if self.recorder is not None:
                self.recorder.forget(link.network, link.channel)
            net = self.irc.network(link.network)
            if net is not None and self.irc.started:
                self.irc.call(net.part_bot, link.channel_name)
        return gone[0]

    def links(self, room_id: str | None = None) -> list[Link]:
        links = self.registry.links()
        return [lk for lk in links if room_id is None or lk.room_id == room_id]

    # ------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        return {
            "homeserver": self.health.get("homeserver"),
            "ping": self.health.get("ping"),
            "networks": self.irc.status() if self.irc.started else {},
            "rooms": self.registry.room_count(),
            "inbox_in_flight": self.inbox.in_flight if self.inbox else 0,
            "outbox_depth": self.senders.depth if self.senders else 0,
        }
