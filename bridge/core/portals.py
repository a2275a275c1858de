"""Portals and links: the rooms that stand for IRC channels, made on demand or linked.

`Portals` answers the homeserver's alias queries (blocking while it makes the room, as the
founding document describes), links existing rooms to channels (provisioning, static
mappings, `ircbridge link`), unlinks them, and re-keys links when a network announces its
CASEMAPPING. The links live in the `LinkRegistry` (its own lock) and the store; per-channel
alias locks make two queries for one alias make one room.

Thread: request threads (`query_room`, `link_room`, `unlink_room`); `rekey_links` on a
thread of its own (it writes the store), started from the IRC thread.
"""

from __future__ import annotations

import dataclasses
import logging

from ..config.ini import Config
from ..irc import IrcSide
from ..matrix import QUERY, HomeserverClient, Intent, IntentCache, MatrixError
from ..rules.ids import JsonDict, RoomId
from ..rules.names import NetworkNames, fold_channel, valid_channel
from ..store.models import Link, Store
from ..store.room_options import RoomOptions
from .access import Access, PortalLimited
from .backfill import Backfill
from .directory import Directory
from .lines import LineQueue
from .links import LinkRegistry
from .ports import AdminPort
from .privacy import ChannelPrivacy

log = logging.getLogger(__name__)


class Portals:
    """Portal rooms and links (see module)."""

    def __init__(self, config: Config, store: Store, client: HomeserverClient,
                 cache: IntentCache, bot: Intent, irc: IrcSide, names: dict[str, NetworkNames],
                 gate: Access, registry: LinkRegistry, room_options: RoomOptions,
                 directory: Directory, lines: LineQueue, privacy: ChannelPrivacy):
        self.config = config
        self.store = store
        self.client = client
        self.cache = cache
        self.bot = bot
        self.irc = irc
        self.names = names
        self.access = gate
        self.registry = registry
        self.room_options = room_options
        self.directory = directory
        self.lines = lines
        self.privacy = privacy
        self.admin: AdminPort | None = None  # set by Bridge.attach
        self.backfill: Backfill | None = None  # set by Bridge: a new room's server history

    def query_room(self, alias: str, for_user: str | None = None) -> bool:
        """Create the portal room for a channel alias, blocking; False means 404.

        Two queries for the same alias at once make one room: the second waits on a
        per-channel lock and then finds the link. Scrollback is replayed after the answer.
        A private channel (see bridge.core.privacy) answers 404, unless `for_user` (a `!join`)
        is in it through their puppet: then its room is invite-only and has no alias.
        `for_user` None is the homeserver's query, which names nobody: `bridge.access`
        decides and limits (raises PortalLimited for a named user past a limit).
        """
        parsed = self.directory.parse_alias(alias)
        if parsed is None or not self.access.may_query(for_user):
            return False
        network, channel = parsed
        folded = self.directory.fold_channel(network, channel)
        with self.registry.alias_lock(network, folded):
            link = self.registry.link_for_channel(network, folded)
            if link is not None:
                if self.privacy.channel_is_private(network, folded):
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
            private = self.privacy.channel_is_private(network, folded)
            if private and (for_user is None
                            or not self.privacy.puppet_in(network, for_user, folded)):
                log.info("no portal for %s on %s: the channel is private (%s)", channel,
                         network, self.privacy.channel_state(network, folded).describe() or "room")
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
                       private: bool = False) -> RoomId:
        topic = self.registry.topic(network, self.directory.fold_channel(network, channel))
        body: JsonDict = {
            "name": channel,
            "visibility": "private",
            "creation_content": {"m.federate": True},
            **self.privacy.portal_room_body(private),
        }
        if private:
            body["invite"] = self._puppets_in(network,
                                              self.directory.fold_channel(network, channel))
        if topic:
            body["topic"] = topic
        Intent(self.client, self.config.bot_user_id, is_bot=True, cache=self.cache,
               policy=QUERY).ensure_registered()
        room_id = self.client.create_room(body, policy=QUERY)
        log.info("created %sroom %s for %s on %s", "an invite-only " if private else "",
                 room_id, channel, network)
        self.cache.mark_joined(room_id, self.config.bot_user_id)
        if private:
            return room_id
        return self._publish_alias(alias, room_id)

    def _publish_alias(self, alias: str, room_id: RoomId) -> RoomId:
        """Point the alias at the new room once the bot is in it, and make it the room's
        canonical alias.

        Not with createRoom's `room_alias_name`: Synapse makes that alias before the room's
        first membership, and a second person joining by the alias at that moment resolves it
        without asking us (no second query to wait on the alias lock) and gets 404 "no servers
        that are in the room". An alias someone made meanwhile wins: its room is used, and
        the bot leaves the new one, which nobody can find.
        """
        try:
            self.client.put_alias(alias, room_id, policy=QUERY)
        except MatrixError as e:
            found = self.client.resolve_alias(alias, policy=QUERY) if e.status == 409 else None
            self._abandon(room_id)
            if found is None:
                raise
            log.info("%s already points at %s; left the room just made", alias, found)
            return found
        self.client.send_state(room_id, "m.room.canonical_alias", "", {"alias": alias},
                               policy=QUERY)
        return room_id

    def _abandon(self, room_id: RoomId) -> None:
        """The bot leaves a room made for an alias it could not get (best effort)."""
        try:
            self.client.leave(room_id, policy=QUERY)
        except MatrixError as e:
            log.warning("could not leave %s, made for an alias it did not get: %s", room_id, e)

    def _puppets_in(self, network: str, channel: str) -> list[str]:
        """The Matrix users whose puppets are in a channel (asks the IRC thread)."""
        net = self.irc.network(network)
        if net is None or not self.irc.started:
            return []
        try:
            return list(self.irc.call_sync(net.puppets_in, channel, timeout=5.0))
        except TimeoutError:
            return []

    def _after_room_created(self, network: str, channel: str, folded: str, room_id: RoomId,
                            replay: bool = True) -> None:
        if self.backfill is not None:
            self.backfill.portal_made(network, channel, folded, room_id, replay)
        else:
            self.lines.room_created(network, folded, room_id, replay)
        net = self.irc.network(network)
        if net is not None:
            self.irc.call(net.join_bot, channel)

    def link_room(self, network: str, channel: str, room_id: RoomId, *, kind: str = "plumbed",
                  mirror_modes: bool = False, relay: bool | None = None) -> Link:
        """Bridge an existing Matrix room to a channel (provisioning, static mappings).

        The bot joins the room (it must be public or the bot invited) and the channel.
        IRC modes change the room only with `mirror_modes` (see bridge.core.privacy).
        `relay` (not None): the room's relay mode override (bridge.core.relay).
        Raises ValueError for an unknown network, an invalid channel, or a channel or room
        that is already linked elsewhere.
        """
        if network not in self.names:
            raise ValueError(f"unknown network {network!r}")
        if not valid_channel(channel):
            raise ValueError(f"not a valid IRC channel: {channel!r}")
        folded = self.directory.fold_channel(network, channel)
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
        if relay is not None:
            self.room_options.set_relay(room_id, relay)
        link = self.store.add_link(network, folded, channel, room_id, None, kind=kind)
        self.registry.add(link)
        self._after_room_created(network, channel, folded, room_id)
        return link

    def unlink_room(self, room_id: RoomId, network: str | None = None) -> Link | None:
        """Stop bridging a room (to every network, or to `network` only); the bot leaves
        the channel. Returns the first link removed."""
        gone = [lk for lk in self.directory.links_for_room(room_id)
                if network in (None, lk.network)]
        if not gone:
            return None
        self.store.remove_link(room_id, network)
        self.registry.remove(room_id, gone)
        for link in gone:
            self.lines.forget(link.network, link.channel)
            net = self.irc.network(link.network)
            if net is not None and self.irc.started:
                self.irc.call(net.part_bot, link.channel_name)
        return gone[0]

    def links(self, room_id: RoomId | None = None) -> list[Link]:
        links = self.registry.links()
        return [lk for lk in links if room_id is None or lk.room_id == room_id]

    def rekey_links(self, network: str, casemapping: str) -> None:
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
            self.lines.forget(network, old.channel)
            self.lines.room_created(network, new.channel, new.room_id)
