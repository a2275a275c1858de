"""Who is who and what is where: the names, links and virtual users every part asks about.

`Directory` answers the questions the Matrix->IRC and IRC->Matrix parts, the portals and
the privacy rules share: is a user id one of ours, which link a room or channel has, how a
network folds nicks and channels, which IRC nick stands for a Matrix user, and it makes a
virtual user ready to speak. It owns no mutable state: links come from the `LinkRegistry`
(its own lock), nicks and casemapping from the snapshot the IRC thread publishes.

Thread: any thread (request threads, the inbox thread, the IRC thread, the senders).
"""

from __future__ import annotations

from ..config.ini import Config
from ..irc import IrcSide
from ..matrix import HomeserverClient, Intent, IntentCache, RetryPolicy
from ..rules.ids import RoomId, UserId
from ..rules.names import NetworkNames, casefolder, displayname_for_nick, fold_channel, puppet_nick
from ..store.models import Link, Store
from .foreign import ForeignUsers
from .links import LinkRegistry


class Directory:
    """Names, links and virtual users (see module)."""

    def __init__(self, config: Config, names: dict[str, NetworkNames], irc: IrcSide,
                 registry: LinkRegistry, foreign: ForeignUsers, client: HomeserverClient,
                 cache: IntentCache, store: Store):
        self.config = config
        self.names = names
        self.irc = irc
        self.registry = registry
        self.foreign = foreign
        self.client = client
        self.cache = cache
        self.store = store

    # ------------------------------------------------------------ users
    def is_ours(self, user_id: UserId) -> bool:
        """The bot or any virtual user: their events are echoes and are never relayed."""
        if user_id == self.config.bot_user_id:
            return True
        return any(n.nick_for_user_id(user_id) is not None for n in self.names.values())

    def is_foreign(self, user_id: UserId) -> bool:
        """Another application service's user (bot or virtual user): never puppeted."""
        return self.foreign.is_foreign(user_id)

    def sender_for_nick(self, network: str, nick: str) -> UserId:
        """The virtual user of an IRC nick."""
        return self.names[network].user_id_for_nick(nick)

    def nick_of(self, network: str, user_id: str) -> str:
        """The IRC nick that stands for a Matrix user id: a ghost's nick, or a puppet's."""
        names = self.names.get(network)
        if names is not None:
            nick = names.nick_for_user_id(user_id)
            if nick is not None:
                return nick
        snapshot = self.irc.snapshot(network)  # the IRC thread's published view
        nick = snapshot.nicks.get(user_id) if snapshot is not None else None
        if nick is not None:
            return nick
        config = self.config.network(network)
        template = config.puppet_nick_template if config else "{localpart}[m]"
        return puppet_nick(template, user_id, None, snapshot.nick_max if snapshot else 30)

    def prepare_ghost(self, network: str, nick: str, user_id: UserId,
                      policy: RetryPolicy | None = None) -> Intent:
        """The virtual user of `nick`, registered, with the nick as its display name."""
        intent = Intent(self.client, user_id, cache=self.cache, policy=policy)
        intent.ensure_registered()
        name = displayname_for_nick(nick)
        if self.cache.displayname(user_id) != name:
            intent.set_displayname(name)
            self.store.remember_virtual_user(user_id, network, nick, name)
        return intent

    # ------------------------------------------------------------ links
    def link_for_room(self, room_id: RoomId) -> Link | None:
        """The room's link (its first, when it is linked on several networks)."""
        return self.registry.link_for_room(room_id)

    def links_for_room(self, room_id: RoomId) -> list[Link]:
        """Every channel the room is linked to, one per network, oldest first."""
        return self.registry.links_for_room(room_id)

    def link_for_channel(self, network: str, channel: str) -> Link | None:
        """The link of a channel (folded name)."""
        return self.registry.link_for_channel(network, channel)

    def has_room(self, network: str, channel: str) -> bool:
        return self.registry.has_channel(network, channel)

    def parse_alias(self, alias: str) -> tuple[str, str] | None:
        """(network, channel) of one of our aliases, or None."""
        for network, names in self.names.items():
            channel = names.channel_for_alias(alias)
            if channel is not None:
                return network, channel
        return None

    # ------------------------------------------------------------ folding
    def casemapping(self, network: str) -> str:
        """The CASEMAPPING `network` announced (rfc1459 before its 005), any thread."""
        return self.irc.casemapping(network)

    def fold_nick(self, network: str, nick: str) -> str:
        """Nicks compare as the network's ISUPPORT CASEMAPPING says (the IRC thread's
        published snapshot, bridge.irc.IrcSide.casemapping)."""
        return casefolder(self.irc.casemapping(network))(nick)

    def fold_channel(self, network: str, channel: str) -> str:
        """A channel's key and comparison form on `network` (see names.fold_channel)."""
        return fold_channel(self.irc.casemapping(network), channel)
