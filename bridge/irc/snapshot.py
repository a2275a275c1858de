"""What other threads may know of a network's IRC state: an immutable, published snapshot.

The IRC thread owns every Network and connection. It rebuilds a `NetworkSnapshot` whenever a
value in it changes (a puppet added or dropped, a nick change, 001/005, the bot's enabled
caps) and publishes it by one reference assignment (bridge.irc.IrcSide.snapshot), so the
inbox, request and sender threads read a consistent view without a lock and without
touching IRC-thread objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True)
class NetworkSnapshot:
    """One network as the IRC thread last saw it (any thread may read it)."""

    network: str
    # Matrix user id -> the nick of that user's own connection (puppets only, not the bot).
    nicks: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # The server's NICKLEN (30 until the bot's 001/005 says otherwise).
    nick_max: int = 30
    # The server's CASEMAPPING, lowercased (rfc1459 until 005 says otherwise).
    casemapping: str = "rfc1459"
    # The IRCv3 capabilities the bot's connection has enabled -> their values ("" for
    # none), e.g. draft/multiline -> "max-bytes=4096,max-lines=100"; empty while it is
    # not registered. Puppets negotiate the same list against the same server.
    caps: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def of(cls, network: str, nicks: Mapping[str, str], nick_max: int,
           casemapping: str, caps: Mapping[str, str] | None = None) -> NetworkSnapshot:
        return cls(network, MappingProxyType(dict(nicks)), nick_max, casemapping,
                   MappingProxyType(dict(caps or {})))
