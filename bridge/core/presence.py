"""Presence and typing between Matrix and IRC (issue 14 items 4 and 9): never durable.

IRC -> Matrix: an `IrcAway` sets the virtual user's presence (unavailable with the away
text; online when back), an `IrcTyping` its typing in the linked room (active: typing for
6 s, the IRCv3 expiry; paused and done: not typing). They are queued (bounded; dropped
when full) for one worker thread that makes the homeserver calls, once each, no retries.

Matrix -> IRC: the ephemeral events of a transaction (MSC2409). `m.typing` lists who types
in a room: who started sends `+typing=active`, who stopped `+typing=done`, from their puppet
in each linked channel (bridge.irc.presence.send_typing: only a connected puppet with
message-tags, never one made for this), at most one TAGMSG per 3 s per user and channel
(`TypingLimiter`). IRC clients expire an `active` after 6 s, and the homeserver only says
when the list changes: while someone stays in it, the worker renews their `active` every
3-4 s, for at most a minute (`renew`). `m.presence` sets AWAY on the user's puppet where
the network has `away_from_presence` on (off by default). Our own users' echoes are
ignored.

Threads: `matrix_ephemeral` runs on request threads (it only hands work to the IRC thread);
`irc_ephemeral` on the IRC thread (it only queues); the homeserver calls on the
"ephemeral" worker thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from ..config.ini import Config
from ..irc import IrcSide
from ..irc.presence import IrcAway, IrcPresence, IrcTyping, send_typing, set_away
from ..matrix import ONCE, HomeserverClient, Intent, IntentCache
from ..matrix.state import MemberStore
from ..rules.ids import RoomId, UserId
from .directory import Directory

log = logging.getLogger(__name__)

TYPING_EVERY = 3.0  # seconds between two +typing TAGMSGs of one user to one target
IRC_ACTIVE_MS = 6000  # IRCv3 +typing: an `active` not renewed within 6 s has expired
KEEP_TYPING_FOR = 60.0  # seconds a Matrix typist's +typing=active is renewed at most
RENEW_EVERY = 1.0  # seconds between the worker's looks at who still types
QUEUE_MAX = 1000  # IRC -> Matrix presence/typing waiting for the homeserver; more: dropped
AWAY_MAX = 300  # characters of an AWAY text
AWAY_KEPT = 10000  # (network, user) whose last AWAY line is kept, to send only changes
_STOP = object()


# ------------------------------------------------------------ pure mappings
def presence_for_away(message: str | None) -> tuple[str, str]:
    """IRC AWAY -> Matrix (presence, status_msg): away is `unavailable` with its text."""
    if message:
        return "unavailable", message
    return "online", ""


def away_line(presence: object, status_msg: object) -> str | None:
    """Matrix presence -> the puppet's AWAY line (`AWAY` is back), None for nonsense."""
    if presence == "online":
        return "AWAY"
    if presence not in ("unavailable", "offline"):
        return None
    text = status_msg if isinstance(status_msg, str) else ""
    text = " ".join(text.replace("\x00", " ").split())[:AWAY_MAX]
    return f"AWAY :{text or ('Away' if presence == 'unavailable' else 'Offline')}"


def typing_changes(before: Iterable[str], after: Iterable[str]) -> tuple[list[str], list[str]]:
    """(who started typing, who stopped), each sorted."""
    old, new = set(before), set(after)
    return sorted(new - old), sorted(old - new)


def typing_users(event: Mapping[str, object]) -> list[str] | None:
    """The user ids an `m.typing` event lists, None when it is malformed."""
    content = event.get("content")
    users = content.get("user_ids") if isinstance(content, dict) else None
    if not isinstance(users, list):
        return None
    return [u for u in users if isinstance(u, str)]


class TypingLimiter:
    """At most one `+typing` TAGMSG per `every` seconds per (user, target). A `done` ends a
    notice that was sent at once (else IRC shows it typing for seconds more) and is
    never sent twice or without an `active`/`paused` before it. Any thread (locked)."""

    def __init__(self, every: float = TYPING_EVERY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self.clock = clock
        self._lock = threading.Lock()
        self._sent_at: dict[tuple[str, str], float] = {}
        self._typing: set[tuple[str, str]] = set()

    def allow(self, user: str, target: str, state: str) -> bool:
        key = (user, target)
        with self._lock:
            if state == "done":
                if key not in self._typing:
                    return False
                self._typing.discard(key)
                return True
            now = self.clock()
            last = self._sent_at.get(key)
            if last is not None and now - last < self.every:
                return False
            self._sent_at[key] = now
            self._typing.add(key)
            if len(self._sent_at) > 4096:  # forget the old ones (they may send again anyway)
                self._sent_at = {k: t for k, t in self._sent_at.items()
                                 if now - t < self.every or k in self._typing}
            return True


# ------------------------------------------------------------ the part
class Ephemeral:
    """Presence and typing both ways (see module)."""

    def __init__(self, config: Config, client: HomeserverClient, cache: IntentCache,
                 irc: IrcSide, directory: Directory, members: MemberStore,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.client = client
        self.cache = cache
        self.irc = irc
        self.directory = directory
        self.members = members
        self.clock = clock
        self.limiter = TypingLimiter(TYPING_EVERY, clock)
        # (user, network, folded channel) -> (channel as written, since when) of each Matrix
        # user whose +typing=active is renewed.
        self._typists: dict[tuple[str, str, str], tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._room_typing: dict[str, frozenset[str]] = {}
        self._away: dict[tuple[str, str], str] = {}
        self._queue: queue.Queue[object] = queue.Queue(maxsize=QUEUE_MAX)
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ephemeral", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        try:
            self._queue.put_nowait(_STOP)
        except queue.Full:
            pass  # a daemon thread: it dies with the process
        thread.join(timeout)

    # ------------------------------------------------------------ Matrix -> IRC
    def matrix_ephemeral(self, events: Sequence[Mapping[str, object]]) -> None:
        """Request thread: a transaction's ephemeral events (typing, presence, receipts)."""
        for event in events:
            kind = event.get("type")
            if kind == "m.typing":
                self._matrix_typing(event)
            elif kind == "m.presence":
                self._matrix_presence(event)

    def _relayable(self, user_id: str) -> bool:
        user = UserId(user_id)  # an id of a pushed ephemeral event
        return not self.directory.is_ours(user) and not self.directory.is_foreign(user)

    def _matrix_typing(self, event: Mapping[str, object]) -> None:
        room_id = event.get("room_id")
        users = typing_users(event)
        if not isinstance(room_id, str) or users is None:
            return
        links = self.directory.links_for_room(RoomId(room_id))
        with self._lock:
            if not links:
                self._room_typing.pop(room_id, None)
                return
            before = self._room_typing.get(room_id, frozenset())
            self._room_typing[room_id] = frozenset(users)
        started, stopped = typing_changes(before, users)
        now = self.clock()
        for state, who in (("active", started), ("done", stopped)):
            for user_id in who:
                if not self._relayable(user_id):
                    continue
                for link in links:
                    with self._lock:
                        if state == "active":
                            self._typists[(user_id, link.network, link.channel)] = (
                                link.channel_name, now)
                        else:
                            self._typists.pop((user_id, link.network, link.channel), None)
                    self._send_typing(user_id, link.network, link.channel, link.channel_name,
                                      state)

    def _send_typing(self, user_id: str, network_name: str, channel: str, written: str,
                     state: str) -> None:
        network = self.irc.network(network_name)
        if network is not None and self.limiter.allow(user_id, f"{network_name}\n{channel}",
                                                      state):
            self.irc.call(send_typing, network, user_id, written, state)

    def renew(self) -> None:
        """Worker thread: who still types gets their `active` again (the limiter says when);
        after KEEP_TYPING_FOR they are let go (an `m.typing` that never came)."""
        now = self.clock()
        with self._lock:
            if not self._typists:
                return
            for key, (_written, since) in list(self._typists.items()):
                if now - since > KEEP_TYPING_FOR:
                    del self._typists[key]
            typists = list(self._typists.items())
        for (user_id, network_name, channel), (written, _since) in typists:
            self._send_typing(user_id, network_name, channel, written, "active")

    def _matrix_presence(self, event: Mapping[str, object]) -> None:
        user_id = event.get("sender")
        content = event.get("content")
        if not isinstance(user_id, str) or not isinstance(content, dict):
            return
        if not self._relayable(user_id):
            return
        line = away_line(content.get("presence"), content.get("status_msg"))
        if line is None:
            return
        for net in self.config.networks:
            if not net.away_from_presence:
                continue
            network = self.irc.network(net.name)
            if network is None:
                continue
            with self._lock:
                if self._away.get((net.name, user_id)) == line:
                    continue
                self._away.pop((net.name, user_id), None)
                self._away[(net.name, user_id)] = line
                while len(self._away) > AWAY_KEPT:  # the oldest first
                    del self._away[next(iter(self._away))]
            self.irc.call(set_away, network, user_id, line)

    # ------------------------------------------------------------ IRC -> Matrix
    def irc_ephemeral(self, event: IrcPresence) -> None:
        """IRC thread: queue it for the worker; when the homeserver is far behind, drop it."""
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            log.debug("dropped %s: %d presence/typing updates wait already", event, QUEUE_MAX)

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=RENEW_EVERY)
            except queue.Empty:
                item = None
            if item is _STOP:
                return
            try:
                self.renew()
            except Exception as e:  # noqa: BLE001 - typing notices may be dropped
                log.info("could not renew typing notices: %s", e)
            try:
                if isinstance(item, IrcAway):
                    self._irc_away(item)
                elif isinstance(item, IrcTyping):
                    self._irc_typing(item)
            except Exception as e:  # noqa: BLE001 - ephemeral: one failure drops one update
                log.info("could not bridge %s: %s", item, e)

    def _intent(self, user_id: str) -> Intent:
        return Intent(self.client, UserId(user_id), cache=self.cache, policy=ONCE)

    def _irc_away(self, event: IrcAway) -> None:
        if event.network not in self.directory.names:
            return
        user_id = self.directory.sender_for_nick(event.network, event.nick)
        presence, status = presence_for_away(event.message)
        self._intent(user_id).set_presence(presence, status)

    def _irc_typing(self, event: IrcTyping) -> None:
        if event.network not in self.directory.names:
            return
        link = self.directory.link_for_channel(event.network, event.channel)
        if link is None:
            return
        user_id = self.directory.sender_for_nick(event.network, event.nick)
        if self.members.is_joined(link.room_id, user_id) is not True:
            return  # its join is still on its way: a typing notice needs a member
        active = event.state == "active"
        self._intent(user_id).set_typing(link.room_id, active, IRC_ACTIVE_MS)
