"""Which Matrix room is bridged to which IRC channel, and what the bridge knows per channel.

`LinkRegistry` holds the links (by room and by channel), the per-channel locks that make two
alias queries for one channel create one room, the events an alias query waits on until the
bot is in the channel, and each channel's last known topic. It is the only owner of that
state, and every read and write of it takes the registry's one lock, held only for the dict
operation itself: no I/O, no callback and no other lock is taken under it.

Threads: every thread. Request threads (alias queries, provisioning) add and read links and
take alias locks; the IRC thread sets topics and wakes waiters; the inbox thread and the
senders look links up; a re-keying thread of its own moves links to another folding.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from ..rules.ids import RoomId
from ..store.models import Link

ChannelKey = tuple[str, str]  # (network, folded channel)


class LinkRegistry:
    """Links, alias locks, channel waiters and topics, behind one lock of its own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # A room may be linked to one channel per network (a room bridged to two networks).
        self._by_room: dict[str, list[Link]] = {}
        self._by_channel: dict[ChannelKey, Link] = {}
        self._alias_locks: dict[ChannelKey, threading.Lock] = {}
        self._waiters: dict[ChannelKey, list[threading.Event]] = {}
        self._topics: dict[ChannelKey, str] = {}

    # ------------------------------------------------------------ links: questions
    def link_for_room(self, room_id: RoomId) -> Link | None:
        """The room's link (its first, when it is linked on several networks)."""
        with self._lock:
            links = self._by_room.get(room_id)
            return links[0] if links else None

    def links_for_room(self, room_id: RoomId) -> list[Link]:
        """Every channel the room is linked to, one per network, oldest first."""
        with self._lock:
            return list(self._by_room.get(room_id, ()))

    def link_for_channel(self, network: str, channel: str) -> Link | None:
        """The link of a channel, by its folded name."""
        with self._lock:
            return self._by_channel.get((network, channel))

    def claims(self, network: str, channel: str,
               room_id: str) -> tuple[Link | None, Link | None]:
        """At one moment: the channel's link, and the room's link on that network."""
        with self._lock:
            by_room = next((lk for lk in self._by_room.get(room_id, [])
                            if lk.network == network), None)
            return self._by_channel.get((network, channel)), by_room

    def has_channel(self, network: str, channel: str) -> bool:
        with self._lock:
            return (network, channel) in self._by_channel

    def links(self) -> list[Link]:
        """Every link, room by room."""
        with self._lock:
            return [lk for room in self._by_room.values() for lk in room]

    def links_on(self, network: str) -> list[Link]:
        """Every link of one network."""
        with self._lock:
            return [lk for lk in self._by_channel.values() if lk.network == network]

    def room_count(self) -> int:
        with self._lock:
            return len(self._by_room)

    # ------------------------------------------------------------ links: changes
    def add(self, link: Link) -> None:
        """Remember a link; it replaces the room's link on the same network, if any."""
        with self._lock:
            self._add_locked(link)

    def add_all(self, links: Iterable[Link]) -> None:
        with self._lock:
            for link in links:
                self._add_locked(link)

    def remove(self, room_id: RoomId, gone: Iterable[Link]) -> None:
        """Forget some links of one room (the rest of the room's links stay)."""
        gone = list(gone)
        with self._lock:
            left = [lk for lk in self._by_room.get(room_id, []) if lk not in gone]
            if left:
                self._by_room[room_id] = left
            else:
                self._by_room.pop(room_id, None)
            for link in gone:
                self._by_channel.pop((link.network, link.channel), None)

    def rekey(self, old: Link, new: Link) -> None:
        """`old`'s channel key is now `new`'s (the network's CASEMAPPING folds otherwise)."""
        with self._lock:
            self._by_channel.pop((old.network, old.channel), None)
            self._add_locked(new)

    def _add_locked(self, link: Link) -> None:
        links = [lk for lk in self._by_room.get(link.room_id, []) if lk.network != link.network]
        self._by_room[link.room_id] = [*links, link]
        self._by_channel[(link.network, link.channel)] = link

    # ------------------------------------------------------------ alias queries
    def alias_lock(self, network: str, channel: str) -> threading.Lock:
        """The lock that serialises the alias queries of one channel (by its folded name)."""
        with self._lock:
            return self._alias_locks.setdefault((network, channel), threading.Lock())

    def add_waiter(self, network: str, channel: str) -> threading.Event:
        """An event set when the bot's join of the channel is answered (see `wake`)."""
        ready = threading.Event()
        with self._lock:
            self._waiters.setdefault((network, channel), []).append(ready)
        return ready

    def remove_waiter(self, network: str, channel: str, ready: threading.Event) -> None:
        with self._lock:
            waiters = self._waiters.get((network, channel), [])
            if ready in waiters:
                waiters.remove(ready)

    def wake(self, network: str, channel: str) -> None:
        """IRC thread: the channel's modes (or a refusal) arrived; its waiters go on."""
        with self._lock:
            waiters = list(self._waiters.get((network, channel), []))
        for ready in waiters:
            ready.set()

    # ------------------------------------------------------------ topics
    def topic(self, network: str, channel: str) -> str:
        """The channel's last known topic ("" when none was seen)."""
        with self._lock:
            return self._topics.get((network, channel), "")

    def set_topic(self, network: str, channel: str, topic: str) -> None:
        """IRC thread: a channel's topic, as the server last said it."""
        with self._lock:
            self._topics[(network, channel)] = topic
