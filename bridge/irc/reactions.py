"""IRC reactions in: a TAGMSG with `+draft/react` and `+draft/reply` in a channel we relay
becomes an `IrcReaction` for the core (which makes it an m.reaction of the virtual user).

Thread: the IRC thread only (called from `Network._on_tagmsg`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

import irc.client

from ..rules.names import is_channel
from . import tags as message_tags
from .connection import IrcConnection
from .events import IrcReaction, tag_map
from .threadcheck import irc_thread_only


class ReactionListener(Protocol):
    def irc_reaction(self, event: IrcReaction) -> None: ...


class Network(Protocol):
    """What this handler uses of bridge.irc.network.Network (IRC thread)."""

    name: str
    fold: Callable[[str], str]

    @property
    def listener(self) -> ReactionListener: ...

    @property
    def thread(self) -> object: ...

    def forwarder(self, channel: str) -> IrcConnection | None: ...

    def _ours(self, nick: str) -> bool: ...

MAX_KEY_CHARS = 64


def reaction_from_tags(tags: Mapping[str, str]) -> tuple[str, str] | None:
    """(key, msgid) of a react TAGMSG's tags, or None."""
    key = str(tags.get(message_tags.REACT) or "").strip()[:MAX_KEY_CHARS]
    msgid = str(tags.get(message_tags.REPLY) or "").strip()
    if not key or not msgid or any(c in key for c in "\r\n\0"):
        return None
    return key, msgid


@irc_thread_only
def on_reaction(network: Network, conn: IrcConnection, event: irc.client.Event) -> None:
    nick = event.source.nick if event.source else ""
    channel = event.target or ""
    found = reaction_from_tags(tag_map(event.tags))
    if found is None or not nick or not is_channel(channel) or network._ours(nick):
        return
    if network.forwarder(channel) is not conn:
        return
    network.listener.irc_reaction(IrcReaction(network.name, network.fold(channel), nick,
                                              *found))
