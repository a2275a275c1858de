"""One IRC connection of the bridge (the bot, or one Matrix user's puppet) on one network.

Runs on the IRC thread only. The TCP/TLS connect happens on a connector thread with a
timeout, then the ready socket is handed to jaraco's ServerConnection, so a slow server never
blocks the reactor. Output goes through a queue drained by a token bucket (flood control)
instead of `set_rate_limit`, whose throttler sleeps. Lost connections come back with
exponential backoff and jitter, and rejoin their channels.
"""

from __future__ import annotations

import collections
import enum
import logging
import socket
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import irc.client

from ..rules.ids import UserId
from ..rules.names import collision_nick, irc_lower
from . import backoff
from . import cap as cap_setup
from . import tls as tls_setup
from .cap import CapNegotiation, Step
from .echo import EchoWaits
from .events import ConnectionChange as Change
from .events import IrcConnectionEvent
from .multiline import IncomingBatches
from .targets import TargetQueues
from .threadcheck import irc_thread_only
from .wire import clean_field

if TYPE_CHECKING:
    from ..config.ini import NetworkConfig
    from .reactor import BridgeServerConnection, IrcThread, Timer

log = logging.getLogger(__name__)

STABLE_AFTER = 60.0  # seconds a link must stay up before the backoff starts over
REGISTER_WITHIN = 90.0  # seconds from TCP connect to 001 before the attempt counts as failed
STALLED_AFTER = 60.0  # seconds a non-empty write buffer may make no progress
REFUSED = "refused by the server: "  # prefix of errors the server already explained
PING_AFTER = 120.0  # seconds of silence before we ask the server if it is still there
DEAD_AFTER = 240.0  # seconds of silence after which the connection is dropped and redone


class State(enum.Enum):
    IDLE = "idle"
    WAITING = "waiting"  # for a connect slot
    CONNECTING = "connecting"
    REGISTERING = "registering"
    CONNECTED = "connected"
    BACKOFF = "backoff"
    CLOSED = "closed"


@dataclass
class Outgoing:
    """A line waiting for the token bucket; `done(ok, error)` is called once it left or failed."""

    line: str
    channel: str | None = None  # a PRIVMSG/NOTICE to a channel waits until we are in it
    done: Callable[[bool, str | None], None] | None = None
    queued_at: float = field(default_factory=time.monotonic)
    before: Callable[[], None] | None = None  # called right before the line is written
    target: str = ""  # the folded channel or nick whose queue it waits in ("" for control)
    per_link: bool = False  # a rejoin or autocmd: redone on the next link, dropped on loss
    # Lines that leave right after `line`, in the same step, for one flood token: a
    # multiline batch is one item, so a lost link never splits it (all of it goes again).
    more: tuple[str, ...] = ()


def line_target(line: str, channel: str | None,
                fold: Callable[[str], str] = irc_lower) -> str:
    """The queue a line waits in: its channel, else the folded target of PRIVMSG/NOTICE."""
    if channel:
        return fold(channel)
    if line.startswith("@"):  # client tags (a reply's +draft/reply, a label)
        line = line.partition(" ")[2]
    words = line.split(" ", 2)
    if len(words) > 2 and words[0].upper() in ("PRIVMSG", "NOTICE"):
        return fold(words[1])
    return ""


class TokenBucket:
    """`burst` at once, then `rate` per second (rate 0 = no limit): flood control of a
    connection's lines, and the network's new connections (ConnectSlots). `clock` is the
    IRC thread's (time.monotonic, the clock its timers run on)."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] | None = None):
        self.rate = rate
        self.burst = float(max(1, burst))
        self.tokens = self.burst
        self._clock = clock  # None: time.monotonic, looked up at each call
        self.updated = self.clock()

    def clock(self) -> float:
        return self._clock() if self._clock is not None else time.monotonic()

    def peek(self) -> float:
        """0.0 if a line could go now, else the seconds to wait (uses no token)."""
        if self.rate <= 0:
            return 0.0
        tokens = min(self.burst, self.tokens + (self.clock() - self.updated) * self.rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def take(self) -> float:
        """0.0 if a line may go now (and uses a token), else the seconds to wait."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


def open_socket(host: str, port: int, *, tls: bool, verify: bool, timeout: float,
                client_cert: tuple[str, str] | None = None) -> socket.socket:
    """Connect (and TLS handshake) off the IRC thread; returns a socket ready for IRC.

    `client_cert` is (certificate PEM, key PEM) for SASL EXTERNAL / CertFP.
    """
    sock = tls_setup.connect(host, port, tls=tls, verify=verify, timeout=timeout,
                             client_cert=client_cert)
    # Non-blocking from here on: reads happen when the poller says so, writes go through
    # the connection's write buffer (sendbuffer.py), so no peer can stall the IRC thread.
    sock.setblocking(False)
    return sock


@dataclass(frozen=True)
class Sasl:
    """SASL login for a connection: PLAIN (account + password) or EXTERNAL (certificate)."""

    mechanism: str  # "PLAIN" or "EXTERNAL"
    username: str = ""
    password: str = ""

    def response(self) -> bytes:
        """The raw client response to the server's first (empty) challenge."""
        if self.mechanism == "EXTERNAL":
            return b""
        return f"{self.username}\0{self.username}\0{self.password}".encode()


class IrcConnection:
    """One identity on one network: owns a ServerConnection, its queue and its reconnects."""

    def __init__(
        self,
        thread: IrcThread,
        network: NetworkConfig,
        connector: ThreadPoolExecutor,
        *,
        owner: str,
        nick: str,
        username: str,
        realname: str,
        password: str | None = None,
        slots: ConnectSlots,
        on_change: Callable[[IrcConnection, IrcConnectionEvent], None],
        nick_max: int = 30,
        fold: Callable[[str], str] = irc_lower,
    ):
        self.thread = thread
        self.fold = fold  # the network's CASEMAPPING; set again by refold
        self.network = network
        self.connector = connector
        self.owner = owner  # "" for the bot, else the Matrix user id
        self.wanted_nick = nick
        # Built from Matrix ids, which may hold any character: no control characters leave.
        self.username = clean_field(username, spaces=False) or "matrix"
        self.realname = clean_field(realname) or self.username
        self.password = password
        self.slots = slots
        self.on_change = on_change
        self.nick_max = nick_max
        self.state = State.IDLE
        self.conn: BridgeServerConnection = thread.reactor.server()
        self.conn.out.limit = network.send_buffer_limit
        self.channels: set[str] = set()  # case-folded channels we are in
        self.wanted_channels: dict[str, str] = {}  # folded -> as written (with key if any)
        self.queue: TargetQueues[Outgoing] = TargetQueues()
        self.bucket = TokenBucket(network.flood_rate, network.flood_burst)
        self.failures = 0
        self.nick_attempt = 0
        self._drain_timer: Timer | None = None
        self._retry_timer: Timer | None = None
        self.connected_at: float | None = None
        # Set before start() (e.g. from the user's stored settings).
        self.sasl: Sasl | None = None
        self.client_cert: tuple[str, str] | None = None
        self.autocmds: list[str] = []
        # This link's capabilities (IRC thread only; made anew for each TCP connect).
        self.caps = CapNegotiation()
        self._cap_timer: Timer | None = None
        # Called when the enabled caps change on a registered link (cap-notify).
        self.on_caps: Callable[[], None] | None = None
        self.echoes = EchoWaits(thread.call_later)  # lines waiting for their echo (echo.py)
        self.batches = IncomingBatches()  # draft/multiline batches being received
        self.server_error = ""
        self.banned_reason = ""  # set by an ERROR/465 that says we are banned
        self._server = 0  # index into the network's servers, tried in turn
        self._holds_slot = False
        self.registering_since = 0.0
        self._join_queued: set[str] = set()

    @property
    def nick(self) -> str:
        return self.conn.get_nickname() if self.state == State.CONNECTED else self.wanted_nick

    @property
    def is_bot(self) -> bool:
        return self.owner == ""

    def __repr__(self) -> str:
        who = self.owner or "bot"
        return f"<IrcConnection {self.network.name} {who} {self.state.value}>"

    # ------------------------------------------------------------ lifecycle
    @irc_thread_only
    def start(self) -> None:
        if self.state in (State.IDLE, State.BACKOFF):
            self.state = State.WAITING
            self.slots.request(self._begin_connect)

    @property
    def server(self) -> tuple[str, int]:
        """The (host, port) this connection uses now: the network's servers, in turn."""
        servers = self.network.servers or ((self.network.host, self.network.port),)
        return servers[self._server % len(servers)]

    def _begin_connect(self) -> None:
        # The slot is held until 001 (or the loss): a server is never asked to register
        # more of our connections at once than the network allows.
        self._holds_slot = True
        if self.state is not State.WAITING:
            self._release_slot()
            return
        self.state = State.CONNECTING
        net = self.network
        host, port = self.server
        future = self.connector.submit(
            open_socket, host, port, tls=net.tls, verify=net.tls_verify,
            timeout=net.connect_timeout, client_cert=self.client_cert,
        )
        future.add_done_callback(lambda f: self.thread.call(self._socket_ready, f))

    def _release_slot(self) -> None:
        if self._holds_slot:
            self._holds_slot = False
            self.slots.release()

    def _socket_ready(self, future: Future[socket.socket]) -> None:
        if self.state is not State.CONNECTING:
            self._release_slot()
            if future.exception() is None:
                future.result().close()
            return
        error = future.exception()
        host, port = self.server
        if error is not None:
            self._lost(f"cannot connect to {host}:{port}: {error}")
            return
        sock = future.result()
        self.state = State.REGISTERING
        self.registering_since = time.monotonic()
        self.nick_attempt = 0
        # CAP LS 302 goes out before NICK/USER so the server holds registration until
        # CAP END: every connection negotiates, with SASL when it has a login.
        self.caps = CapNegotiation(
            sasl_mechanism=self.sasl.mechanism if self.sasl else None,
            sasl_response=self.sasl.response() if self.sasl else b"")
        self.conn.first_lines = self.caps.begin().lines
        self.batches.clear()
        self._cancel_cap_timer()
        self._cap_timer = self.thread.call_later(cap_setup.CAP_DEADLINE, self._cap_deadline)
        try:
            self.conn.connect(
                host, port, self.wanted_nick,
                password=self.password or None, username=self.username, ircname=self.realname,
                connect_factory=lambda _addr: sock,
            )
        except irc.client.ServerConnectionError as e:
            self._lost(str(e))

    def expire(self, now: float) -> None:
        """Fail lines that waited longer than the network allows (their senders are told)."""
        limit = self.network.give_up_after
        for item in self.queue.expired(now - limit):
            if item.done:
                item.done(False, f"no IRC connection for {limit:.0f} s")

    def check_alive(self, now: float) -> None:
        """Liveness: PING a quiet server, drop one that stopped answering."""
        self.expire(now)
        if self.state is State.REGISTERING and now - self.registering_since > REGISTER_WITHIN:
            # It holds a connect slot of the network: a server that never says 001 must
            # not keep the other connections waiting.
            log.warning("%s: no 001 after %.0f s; trying again", self, REGISTER_WITHIN)
            self.conn.disconnect("Registration timed out")
            return
        if self.state is not State.CONNECTED:
            return
        silent = now - getattr(self.conn, "last_seen", now)
        stalled = self.conn.out.stalled_for(now)
        if stalled > STALLED_AFTER:
            log.warning("%s: the server read nothing of %d bytes for %.0f s; reconnecting",
                        self, len(self.conn.out), stalled)
            self.conn.out.clear()
            self.conn.disconnect("the server stopped reading")
        elif silent > DEAD_AFTER:
            log.warning("%s: no answer from the server for %.0f s; reconnecting", self, silent)
            self.conn.disconnect("Ping timeout")
        elif silent > PING_AFTER:
            self.send_now(f"PING :ircbridge-{int(now)}")

    @irc_thread_only
    def registered(self) -> None:
        """001 arrived: the connection is usable; rejoin channels and flush the queue.

        The backoff does not start over here (a server may close right after 001): only
        once the link stayed up STABLE_AFTER seconds. Autocmds and rejoins go through
        flood control like every other line.
        """
        self.state = State.CONNECTED
        self._release_slot()
        self._cancel_cap_timer()
        self.caps.registered()
        log.log(logging.INFO if self.is_bot else logging.DEBUG,  # puppets: thousands
                "%s: capabilities enabled: %s", self, " ".join(sorted(self.caps.enabled)) or "none")
        self.connected_at = time.monotonic()
        self.channels.clear()
        self._join_queued.clear()
        for line in self.autocmds:  # e.g. a NickServ IDENTIFY, before the channels are joined
            self._enqueue(Outgoing(line, per_link=True))
        for folded in self.wanted_channels:
            self._queue_join(folded)
        self.on_change(self, self._event(Change.CONNECTED, nick=self.conn.get_nickname()))
        self.drain()

    def stable(self) -> bool:
        """The link has stayed up long enough for the backoff to start over."""
        return self.state is State.CONNECTED and self.connected_at is not None and \
            time.monotonic() - self.connected_at >= STABLE_AFTER

    # ------------------------------------------------------------ IRCv3 CAP and SASL
    @irc_thread_only
    def cap(self, arguments: list[str]) -> None:
        """A CAP reply: LS (one or several lines), ACK, NAK, NEW, DEL; during registration
        and after it (cap-notify)."""
        self._cap_step(self.caps.feed(arguments))

    @irc_thread_only
    def authenticate(self, argument: str) -> None:
        self._cap_step(self.caps.challenge(argument))

    @irc_thread_only
    def sasl_result(self, ok: bool, reason: str) -> None:
        self._cap_step(self.caps.sasl_result(ok, reason))

    def _cap_deadline(self) -> None:
        """CAP_DEADLINE after the connect: CAP END now, with what the server said so far."""
        self._cap_timer = None
        if self.state is State.REGISTERING and not self.caps.ended:
            log.warning("%s: capability negotiation unfinished after %.0f s; ending it",
                        self, cap_setup.CAP_DEADLINE)
            self._cap_step(self.caps.deadline())

    def _cancel_cap_timer(self) -> None:
        if self._cap_timer is not None:
            self._cap_timer.cancel()
            self._cap_timer = None

    def _cap_step(self, step: Step) -> None:
        for line in step.lines:
            self.send_now(line)
        if self.state is State.CONNECTED and self.on_caps is not None:
            self.on_caps()  # a no-op unless what is published changed
        if step.sasl_failed is not None:
            log.warning("%s: SASL login failed: %s", self, step.sasl_failed)
            self.on_change(self, self._event(Change.SASL_FAILED, reason=step.sasl_failed))

    @irc_thread_only
    def nick_in_use(self) -> None:
        """433 while registering: try the next predictable alternative."""
        if self.state is not State.REGISTERING:
            self.on_change(self, self._event(Change.NICK_REFUSED, nick=self.wanted_nick))
            return
        self.nick_attempt += 1
        alternative = collision_nick(self.wanted_nick, self.nick_attempt, self.nick_max)
        self.on_change(self, self._event(Change.NICK_COLLISION, wanted=self.wanted_nick,
                                         using=alternative))
        self.conn.nick(alternative)

    def _event(self, change: Change, *, nick: str | None = None, reason: str | None = None,
               retry_in: float | None = None, wanted: str | None = None,
               using: str | None = None) -> IrcConnectionEvent:
        """What `on_change` hears of this connection."""
        return IrcConnectionEvent(self.network.name, UserId(self.owner), change, nick=nick,
                                  reason=reason, retry_in=retry_in, wanted=wanted, using=using)

    @irc_thread_only
    def disconnected(self, reason: str) -> None:
        """The socket closed (by us, the server, or an error)."""
        if self.state is State.CLOSED:
            return
        self._lost(reason)

    def _lost(self, reason: str) -> None:
        if self.server_error:
            reason, self.server_error = self.server_error, ""
        was_stable = self.connected_at is not None and \
            time.monotonic() - self.connected_at >= STABLE_AFTER
        self.connected_at = None
        self._release_slot()
        self._cancel_cap_timer()
        self.channels.clear()
        self._join_queued.clear()
        self.queue.remove_if(lambda item: item.per_link)  # redone on the next link
        self.echoes.lost()
        if was_stable:
            self.failures = 0
        else:
            self._server += 1  # the next server in turn (if the network lists several)
        self.failures += 1
        delay = backoff.delay(self.failures)
        banned, self.banned_reason = self.banned_reason, ""
        self.state = State.BACKOFF
        if banned:
            delay = max(delay, self.network.banned_retry_after)
            log.error("%s: the server bans us (%s); trying again in %.0f s", self, banned, delay)
            self.on_change(self, self._event(Change.BANNED, reason=banned, retry_in=delay))
        else:
            log.warning("%s lost: %s; reconnecting in %.1f s", self, reason, delay)
        self.on_change(self, self._event(Change.LOST, reason=reason, retry_in=delay))
        if self._retry_timer:
            self._retry_timer.cancel()
        self._retry_timer = self.thread.call_later(delay, self.start)

    def close(self, message: str = "") -> None:
        """Leave for good: QUIT, close the socket, fail what is still queued."""
        previous = self.state
        self.state = State.CLOSED
        if self._retry_timer:
            self._retry_timer.cancel()
        if self._drain_timer:
            self._drain_timer.cancel()
        self._cancel_cap_timer()
        self._release_slot()
        if previous in (State.REGISTERING, State.CONNECTED) and self.conn.is_connected():
            try:
                self.conn.disconnect(message)
            except Exception:  # noqa: BLE001 - closing anyway
                log.debug("disconnect failed", exc_info=True)
        for item in self.queue.take_all():
            if item.done:
                item.done(False, "connection closed")
        self.echoes.lost()
        try:
            self.thread.reactor._remove_connection(self.conn)
        except ValueError:
            pass

    # ------------------------------------------------------------ channels
    def refold(self, fold: Callable[[str], str]) -> None:
        """The network's CASEMAPPING is learnt (005): re-key the channels by it."""
        self.fold = fold
        written = {k: w.split(" ", 1)[0] for k, w in self.wanted_channels.items()}
        self.wanted_channels = {fold(written[k]): w for k, w in self.wanted_channels.items()}
        # Keys are folded already; the names as written give the new key where known.
        self.channels = {fold(written.get(c, c)) for c in self.channels}
        self._join_queued = {fold(written.get(c, c)) for c in self._join_queued}

    @irc_thread_only
    def join(self, channel: str, key: str | None = None) -> None:
        folded = self.fold(channel)
        self.wanted_channels[folded] = f"{channel} {key}" if key else channel
        if self.state is State.CONNECTED and folded not in self.channels:
            self._queue_join(folded)
            self.drain()

    def _queue_join(self, folded: str) -> None:
        """A JOIN under flood control, once until the server answers it (joined, refused)
        or the link is lost."""
        if folded in self._join_queued or folded not in self.wanted_channels:
            return
        self._join_queued.add(folded)
        self._enqueue(Outgoing(f"JOIN {self.wanted_channels[folded]}", per_link=True))

    def _enqueue(self, item: Outgoing) -> None:
        self.queue.append(item)

    @irc_thread_only
    def part(self, channel: str, reason: str = "") -> None:
        folded = self.fold(channel)
        self.wanted_channels.pop(folded, None)
        if self.state is State.CONNECTED and folded in self.channels:
            self.send(f"PART {channel}" + (f" :{reason}" if reason else ""))

    def joined(self, channel: str) -> None:
        self.channels.add(self.fold(channel))
        self._join_queued.discard(self.fold(channel))
        self.drain()

    def left(self, channel: str) -> None:
        self.channels.discard(self.fold(channel))
        self._join_queued.discard(self.fold(channel))

    def refused(self, target: str, reason: str, *, join: bool = True) -> None:
        """The server refused our JOIN (`join`), or a line, for `target` (a channel or a
        nick): fail the lines waiting for it; every other target's lines go on."""
        folded = self.fold(target)
        if join:
            self.wanted_channels.pop(folded, None)
            self._join_queued.discard(folded)
        for item in self.queue.take(folded):
            if item.done:
                item.done(False, f"{REFUSED}{reason}")
        self.drain()

    # ------------------------------------------------------------ output
    @irc_thread_only
    def send(self, line: str, *, channel: str | None = None,
             done: Callable[[bool, str | None], None] | None = None,
             before: Callable[[], None] | None = None, more: Sequence[str] = ()) -> None:
        """Queue a line under flood control; lines to a channel wait until we are in it.
        `more`: lines that go right after it, as one unit (a multiline batch)."""
        self.queue.append(Outgoing(line, self.fold(channel) if channel else None, done,
                                   before=before, target=line_target(line, channel, self.fold),
                                   more=tuple(more)))
        if self.state in (State.IDLE,):
            self.start()
        self.drain()

    def send_now(self, line: str) -> bool:
        """Send at once (registration, JOIN, PONG-like control); False if not connected."""
        if not self.conn.is_connected():
            return False
        try:
            self.conn.send_raw(line)
        except irc.client.InvalidCharacters:
            return False  # the guard in send_raw logged who tried
        except irc.client.MessageTooLong as e:
            log.error("refused to send a malformed line on %s: %s", self, e)
            return False
        except irc.client.ServerNotConnectedError:
            return False
        return True

    def drain(self) -> None:
        """Send what the bucket allows; schedule the next try for the rest."""
        if self.state is not State.CONNECTED:
            return
        while self.queue:
            wait = self.bucket.peek()
            if wait > 0:
                self._drain_later(wait)
                return
            # A second look sees the JOINs the first one queued for waiting channels.
            item = self.queue.next_ready(self._may_go) or self.queue.next_ready(self._may_go)
            if item is None:
                return  # every target with lines waits for its JOIN
            self.bucket.take()  # peek() said a token is there
            if item.before:
                item.before()
            ok = self.send_now(item.line)
            for extra in item.more if ok else ():
                if not self.send_now(extra):
                    ok = False
                    break
            if item.done:
                item.done(ok, None if ok else "not sent: the connection is down")
            if not ok and self.state is not State.CONNECTED:
                return

    def _may_go(self, item: Outgoing) -> bool:
        """A line may leave unless it waits for a channel we are not in (whose JOIN is
        then sent, if it was not already)."""
        if item.channel is None or item.channel in self.channels:
            return True
        if item.channel not in self.wanted_channels:
            self.wanted_channels[item.channel] = item.channel
        if self.state is State.CONNECTED:
            self._queue_join(item.channel)  # picked up by the drain loop that asked
        return False

    def _drain_later(self, wait: float) -> None:
        if self._drain_timer is None or self._drain_timer.cancelled:
            self._drain_timer = self.thread.call_later(wait, self._drain_tick)

    def _drain_tick(self) -> None:
        self._drain_timer = None
        self.drain()


class ConnectSlots:
    """The network's connect gate: at most `limit` connections from TCP connect to 001 at
    once, and new TCP connects (first connects and reconnects, bot and puppets) at most
    `rate` per second after a burst of `burst` (rate 0: no rate), so a restart with
    thousands of puppets never storms the server. An attempt that must wait for a token is
    begun by a timer on the IRC thread's scheduler (`call_later`), never by a sleep."""

    def __init__(self, limit: int, rate: float = 0.0, burst: int = 1, *,
                 call_later: Callable[[float, Callable[[], None]], Timer] | None = None,
                 clock: Callable[[], float] | None = None):
        self.limit = limit
        self.active = 0
        self.waiting: collections.deque[Callable[[], None]] = collections.deque()
        self.bucket = TokenBucket(rate, burst, clock)
        self.call_later = call_later
        self._timer: Timer | None = None

    def request(self, begin: Callable[[], None]) -> None:
        self.waiting.append(begin)
        self._pump()

    def release(self) -> None:
        self.active = max(0, self.active - 1)
        self._pump()

    def _pump(self) -> None:
        while self.waiting and self.active < self.limit:
            call_later = self.call_later
            wait = self.bucket.take() if call_later is not None else 0.0
            if wait > 0 and call_later is not None:
                if self._timer is None:
                    self._timer = call_later(wait, self._tick)
                return
            self.active += 1
            self.waiting.popleft()()

    def _tick(self) -> None:
        self._timer = None
        self._pump()

    def cancel(self) -> None:
        """Stop the timer (the network stops)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
