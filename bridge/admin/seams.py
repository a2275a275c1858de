"""What the admin rooms need of the rest of the bridge, and the settings they keep per user.

`BridgeForAdmin` names exactly what `rooms.AdminRooms` and `runner.CommandRunner` use of the
bridge (the core's `Bridge` is one): a Protocol, so the admin rooms do not import the core
that wires them, and a test may hand them a small stand-in. `PuppetSettings` is what a user
stored for their own IRC connection on one network (their `!nick`, `!username`,
`!storepass`, `!certfp`, `!autocmd`), as the IRC side reads it when it makes the connection.

Thread: none of its own (declarations only).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Protocol, TypedDict

from ..config.ini import Config
from ..irc import IrcSide
from ..matrix import HomeserverClient, Intent
from ..rules.ids import RoomId
from ..rules.names import NetworkNames
from ..store.models import Link, Store


class ClientCertificate(TypedDict):
    """A user's client certificate for CertFP / SASL EXTERNAL (both PEM)."""

    certificate: str
    key: str


class PuppetSettings(TypedDict, total=False):
    """One user's stored settings for their connection to one network (all optional)."""

    nick: str
    username: str
    long_messages: str  # "lines" or "link"
    reactions: str  # "off": no text line for a reaction (bridge.core.reactions)
    relay: str  # "on": the bot relays them (relay mode, where the network allows the choice)
    password: str
    password_kind: str  # "server" or "sasl"
    sasl_username: str
    autocmds: list[str]
    certificate: ClientCertificate | None


# What `AdminRooms.set_secret` seals: a password record, a certificate, autocmd lines.
SecretValue = Mapping[str, object] | list[str] | None


class BridgeForAdmin(Protocol):
    """What the admin rooms and their commands use of the bridge."""

    @property
    def config(self) -> Config: ...
    @property
    def store(self) -> Store: ...
    @property
    def client(self) -> HomeserverClient: ...
    @property
    def bot(self) -> Intent: ...
    @property
    def irc(self) -> IrcSide: ...
    @property
    def names(self) -> Mapping[str, NetworkNames]: ...
    @property
    def hs_ready(self) -> threading.Event: ...

    def links(self, room_id: RoomId | None = None) -> list[Link]: ...
    def link_for_room(self, room_id: RoomId) -> Link | None: ...
    def link_room(self, network: str, channel: str, room_id: RoomId, *, kind: str = "plumbed",
                  mirror_modes: bool = False) -> Link: ...
    def unlink_room(self, room_id: RoomId, network: str | None = None) -> Link | None: ...
    def room_is_private(self, room_id: RoomId) -> bool: ...
    def query_room(self, alias: str, for_user: str | None = None) -> bool: ...
    def casemapping(self, network: str) -> str: ...
    def fold_channel(self, network: str, channel: str) -> str: ...
    def fold_nick(self, network: str, nick: str) -> str: ...
