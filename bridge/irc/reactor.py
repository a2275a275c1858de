"""The IRC thread: one reactor, every IRC socket, and the only way in (`call`).

jaraco's Reactor polls with select(), which stops at 1024 sockets, and its scheduler has no
lock of its own. So this module runs its own loop around a selectors-based reactor (epoll
on Linux), wakes it through a socket pair when another thread hands in work, and keeps its
own timer heap that is only touched on the IRC thread. Nothing here sleeps or waits on HTTP.

Every outgoing line leaves through `BridgeServerConnection.send_raw`: the one guard (no CR,
LF or NUL), the one redacted DEBUG log of the line, and the connection's non-blocking write
buffer, flushed when the poller reports the socket writable. A connection that ends says
QUIT, half-closes, and its socket is read until the server hangs up (`linger`), so the QUIT
is never lost to the TCP reset that closing a socket with unread input sends.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import TypeVar, TypeVarTuple

import irc.client
from jaraco.stream import buffer as line_buffer

from . import tags as message_tags
from . import wire
from .sendbuffer import SendBuffer

log = logging.getLogger(__name__)
wire_log = logging.getLogger("bridge.irc.wire")

R = TypeVar("R")
Ts = TypeVarTuple("Ts")

_WAKE = object()
LINGER_SECONDS = 2.0  # how long a closed connection's socket is read for its server's goodbye
_RELAYED = frozenset({"PRIVMSG", "NOTICE"})
_CHANNEL_PREFIXES = "#&+!"  # irc.client.is_channel's


class BridgeServerConnection(irc.client.ServerConnection):
    """A ServerConnection that decodes input leniently (IRC is not always UTF-8), drops NUL
    bytes (IRC forbids them, and PostgreSQL text cannot hold them), survives a line it
    cannot parse (one bad line must not lose the good lines read with it), and writes through
    a non-blocking buffer instead of a blocking `socket.send`."""

    buffer_class = line_buffer.LenientDecodingLineBuffer
    reactor: SelectorReactor

    def __init__(self, reactor: SelectorReactor):
        super().__init__(reactor)
        self.out = SendBuffer()
        self.write_wanted = False  # the socket took less than we had: wait for writability
        self.first_lines: list[str] = []  # sent before the library's PASS/NICK/USER
        # Set by the network: is this connection the one that relays what is said in a
        # channel? The others' copies of channel PRIVMSG/NOTICE lines are dropped unparsed.
        self.relays: Callable[[str], bool] | None = None

    def send_raw(self, string: str) -> None:
        """The one place every line leaves: guard, redacted log, write buffer."""
        if getattr(self, "socket", None) is None:
            raise irc.client.ServerNotConnectedError("Not connected.")
        why = wire.problem(string)
        if why is not None:
            log.error("refused to send a line to %s from %s: %s: %r", self.server,
                      wire.caller(), why, wire.redact(string))
            raise irc.client.InvalidCharacters(f"line refused: {why}")
        data = self._prep_message(string)
        if wire_log.isEnabledFor(logging.DEBUG):  # redact() only for a line that is logged
            wire_log.debug("to %s: %s", self.server, wire.redact(string))
        self.out.add(data)
        if self.write_wanted:
            self._check_limit()  # the socket is full: the poller says when to try again
        else:
            self.flush()

    def _prep_message(self, string: str) -> bytes:
        """The line's bytes: 512 at most without its tags (message-tags gives tags their
        own 4096 bytes), as the library checks a line without them."""
        tag_part, rest = message_tags.split_tags(string)
        if not tag_part:
            return bytes(super()._prep_message(string))
        if len(tag_part.encode()) > message_tags.MAX_CLIENT_TAG_BYTES + 2:
            raise irc.client.MessageTooLong("message tags limited to 4096 bytes")
        return self.encode(tag_part) + bytes(super()._prep_message(rest))

    def flush(self) -> None:
        """Write what the socket takes now; ask the poller to wake us for the rest."""
        sock = getattr(self, "socket", None)
        if sock is None:
            self.out.clear()
            self.write_wanted = False
            return
        try:
            done = self.out.flush(sock)
        except OSError as e:
            self.out.clear()
            self.write_wanted = False
            self.disconnect(f"Write error: {e}")
            return
        self.write_wanted = not done
        if self._check_limit():
            self.reactor.want_write(self, not done)

    def _check_limit(self) -> bool:
        """Drop the connection when its peer left too much unread; False if it was."""
        if not self.out.over_limit:
            return True
        waiting = len(self.out)
        self.out.clear()
        self.write_wanted = False
        log.warning("%s stopped reading (%d bytes waiting); dropping the connection",
                    self.server, waiting)
        self.disconnect(f"the server stopped reading ({waiting} bytes waiting)")
        return False

    def process_data(self) -> None:
        """Read what the socket has (non-blocking) and handle each complete line."""
        try:
            reader = getattr(self.socket, "read", self.socket.recv)
            new_data = reader(2**14)
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except OSError:
            self.disconnect("Connection reset by peer")
            return
        if not new_data:
            self.disconnect("Connection reset by peer")
            return
        self.buffer.feed(new_data)
        for line in self.buffer:
            if line and not self._someone_elses(line):
                self._process_line(line)

    def _someone_elses(self, line: str) -> bool:
        """A PRIVMSG/NOTICE to a channel that another of our connections relays.

        Every connection of ours in a channel gets a copy of every line said there, and
        only one of them relays it (`Network.forwarder`): with 50 puppets in a room, 49
        copies of each line were parsed in full only to be dropped by the network's handler
        (the largest cost of Matrix -> IRC, whose own lines come back as those copies).
        Dropping them here, by a look at the first words, changes nothing else: no other
        handler takes channel messages.
        """
        relays = self.relays
        if relays is None:
            return False
        if line[0] == "@":  # message tags
            space = line.find(" ")
            if space < 0:
                return False
            line = line[space + 1:]
        if line[:1] != ":":
            return False
        parts = line.split(" ", 3)
        if len(parts) < 4:
            return False
        command = parts[1]
        if command not in _RELAYED and command.upper() not in _RELAYED:
            return False
        if parts[0][1:].split("!", 1)[0] == getattr(self, "real_nickname", None):
            return False  # our own line, echoed (echo-message): bridge.irc.echo waits for it
        target = parts[2]
        return target[:1] in _CHANNEL_PREFIXES and not relays(target)

    def _process_line(self, line: str) -> None:
        if "\x00" in line:
            line = line.replace("\x00", "")
        try:
            super()._process_line(line)
        except Exception:  # noqa: BLE001 - garbage from the server: skip this line only
            log.warning("skipped a line from %s that could not be handled: %r",
                        self.server, line[:200], exc_info=log.isEnabledFor(logging.DEBUG))

    def disconnect(self, message: str = "") -> None:
        """QUIT, then half-close and hand the socket to the reactor to read until the server
        hangs up (or LINGER_SECONDS): closing a socket with unread input sends a TCP reset,
        and a reset loses the QUIT the server had not read yet (seen with Ergo: the bot's
        goodbye became "Write error" while the channel was busy). IRC thread."""
        try:
            del self.connected
        except AttributeError:
            return
        try:
            self.quit(message)
        except irc.client.ServerNotConnectedError:
            pass
        sock = self.socket
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        del self.socket
        self._handle_event(irc.client.Event("disconnect", self.server, "", [message]))
        self.reactor.linger(sock)


class SelectorReactor(irc.client.Reactor):
    """A Reactor that polls with `selectors` instead of select(), so sockets may pass 1024."""

    connection_class = BridgeServerConnection

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self._registered: dict[irc.client.ServerConnection, socket.socket] = {}
        super().__init__(on_connect=self._on_socket_open, on_disconnect=self._on_socket_gone)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, _WAKE)
        # Half-closed sockets read until their server hangs up: socket -> deadline.
        self._lingering: dict[socket.socket, float] = {}
        # Highest priority so the socket leaves the selector before anyone reconnects.
        self.add_global_handler("disconnect", self._on_disconnect_event, -100)

    def _on_socket_open(self, sock: socket.socket) -> None:
        for conn in self.connections:
            if getattr(conn, "socket", None) is sock:
                self.selector.register(sock, selectors.EVENT_READ, conn)
                self._registered[conn] = sock
                if isinstance(conn, BridgeServerConnection):
                    conn.out.clear()
                    conn.write_wanted = False
                    for line in conn.first_lines:
                        conn.send_raw(line)
                return

    def want_write(self, conn: BridgeServerConnection, wanted: bool) -> None:
        """Poll `conn`'s socket for writability too while its buffer holds bytes."""
        sock = self._registered.get(conn)
        if sock is None:
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if wanted else 0)
        try:
            if self.selector.get_key(sock).events != events:
                self.selector.modify(sock, events, conn)
        except (KeyError, ValueError):
            pass

    def _forget(self, conn: irc.client.ServerConnection) -> None:
        sock = self._registered.pop(conn, None)
        if sock is not None:
            try:
                self.selector.unregister(sock)
            except (KeyError, ValueError):
                pass

    def _on_socket_gone(self, sock: socket.socket | None) -> None:
        for conn, registered in list(self._registered.items()):
            if registered is sock:
                self._forget(conn)

    def _on_disconnect_event(self, conn: irc.client.ServerConnection,
                             event: irc.client.Event) -> None:
        self._forget(conn)

    def linger(self, sock: socket.socket) -> None:
        """Read and drop what a closed connection's server still sends until it hangs up,
        then close the socket (see BridgeServerConnection.disconnect)."""
        try:
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ, _Lingering(sock))
        except (KeyError, ValueError, OSError):
            sock.close()
            return
        self._lingering[sock] = time.monotonic() + LINGER_SECONDS

    def _read_lingering(self, sock: socket.socket) -> None:
        try:
            while sock.recv(2**14):
                pass
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError,
                ssl.SSLWantWriteError):
            return  # more later
        except OSError:
            pass
        self._stop_lingering(sock)  # the server hung up (or reset)

    def _stop_lingering(self, sock: socket.socket) -> None:
        self._lingering.pop(sock, None)
        try:
            self.selector.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()

    def _expire_lingering(self) -> None:
        now = time.monotonic()
        for sock in [s for s, deadline in self._lingering.items() if deadline <= now]:
            self._stop_lingering(sock)

    def finish_lingering(self, timeout: float = LINGER_SECONDS) -> None:
        """At shutdown: poll until every half-closed socket's server has hung up, or
        `timeout`, so the last QUITs are read before the process exits."""
        deadline = time.monotonic() + timeout
        while self._lingering and time.monotonic() < deadline:
            self.process_once(min(0.05, max(0.0, deadline - time.monotonic())))
        for sock in list(self._lingering):
            self._stop_lingering(sock)

    def wake(self) -> None:
        """Interrupt a waiting poll; safe from any thread."""
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # already awake (buffer full) or closing

    def process_once(self, timeout: float = 0) -> None:
        events = self.selector.select(timeout)
        with self.mutex:
            for key, mask in events:
                if key.data is _WAKE:
                    self._drain_wake()
                elif isinstance(key.data, _Lingering):
                    self._read_lingering(key.data.sock)
                else:
                    self._serve(key.data, mask)
            self.process_timeout()
            if self._lingering:
                self._expire_lingering()

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    @staticmethod
    def _serve(conn: BridgeServerConnection, mask: int) -> None:
        """A connection's socket is ready: flush what waits, read what came."""
        if getattr(conn, "socket", None) is None:
            return
        if mask & selectors.EVENT_WRITE:
            conn.flush()
            if not mask & selectors.EVENT_READ or getattr(conn, "socket", None) is None:
                return
        conn.last_seen = time.monotonic()
        conn.process_data()
        # TLS may hold decrypted bytes the poller cannot see.
        sock = getattr(conn, "socket", None)
        while sock is not None and getattr(sock, "pending", lambda: 0)():
            conn.process_data()
            sock = getattr(conn, "socket", None)

    def close(self) -> None:
        for sock in list(self._lingering):
            self._stop_lingering(sock)
        self.selector.close()
        self._wake_r.close()
        self._wake_w.close()


class _Lingering:
    """The selector's mark of a half-closed socket (SelectorReactor.linger)."""

    __slots__ = ("sock",)

    def __init__(self, sock: socket.socket):
        self.sock = sock


class Timer:
    """A handle for a callback scheduled on the IRC thread."""

    __slots__ = ("when", "fn", "cancelled")

    def __init__(self, when: float, fn: Callable[[], object]):
        self.when = when
        self.fn = fn
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class IrcThread:
    """Owns the reactor; other threads reach it only through `call`."""

    def __init__(self, name: str = "irc-reactor", poll_interval: float = 0.5):
        self.reactor = SelectorReactor()
        self._calls: queue.SimpleQueue[tuple[Callable[..., object], tuple[object, ...]]] = (
            queue.SimpleQueue()
        )
        self._timers: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._stop = threading.Event()
        self._poll_interval = poll_interval
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.started = threading.Event()
        # True once a wake byte was sent since the loop last looked at the calls: later
        # callers skip the syscall (one per event was a tenth of the Matrix -> IRC cost).
        self._woken = False

    # ------------------------------------------------------------ any thread
    def start(self) -> None:
        self._thread.start()
        self.started.wait(5)

    def call(self, fn: Callable[[*Ts], object], *args: *Ts) -> None:
        """Run fn(*args) on the IRC thread, soon; the only safe way in from other threads."""
        self._calls.put((fn, args))
        if not self._woken and threading.current_thread() is not self._thread:
            # The loop clears the flag before it drains the calls, so a call put after the
            # clear either is drained or finds the flag clear and wakes the poll.
            self._woken = True
            self.reactor.wake()

    def call_sync(self, fn: Callable[[*Ts], R], *args: *Ts, timeout: float = 10.0) -> R:
        """Run fn on the IRC thread and wait for its result (never from the IRC thread)."""
        if self.in_thread():
            return fn(*args)
        done = threading.Event()
        results: list[R] = []
        errors: list[BaseException] = []

        def run() -> None:
            try:
                results.append(fn(*args))
            except BaseException as e:  # noqa: BLE001 - handed back to the caller
                errors.append(e)
            finally:
                done.set()

        self.call(run)
        if not done.wait(timeout):
            raise TimeoutError("the IRC thread did not answer in time")
        if errors:
            raise errors[0]
        return results[0]

    def in_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.reactor.wake()
        if self._thread.is_alive() and not self.in_thread():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # ------------------------------------------------------------ IRC thread only
    def call_later(self, delay: float, fn: Callable[[], object]) -> Timer:
        timer = Timer(time.monotonic() + max(0.0, delay), fn)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    def _run(self) -> None:
        log.debug("IRC thread started")
        self.started.set()
        while not self._stop.is_set():
            try:
                self.reactor.process_once(self._next_timeout())
                self._woken = False  # before the drain: see `call`
                self._drain_calls()
                self._run_timers()
            except Exception:  # noqa: BLE001 - one bad handler must not stop every connection
                log.exception("error on the IRC thread; continuing")
        self._drain_calls()  # final QUITs handed in by stop()
        self.reactor.finish_lingering()  # ...read by their servers before we exit
        try:
            self.reactor.close()
        except Exception:  # noqa: BLE001
            log.debug("closing the reactor failed", exc_info=True)
        log.debug("IRC thread stopped")

    def _next_timeout(self) -> float:
        if not self._calls.empty():
            return 0.0
        if self._timers:
            return max(0.0, min(self._poll_interval, self._timers[0][0] - time.monotonic()))
        return self._poll_interval

    def _drain_calls(self) -> None:
        while True:
            try:
                fn, args = self._calls.get_nowait()
            except queue.Empty:
                return
            try:
                fn(*args)
            except Exception:  # noqa: BLE001
                log.exception("error in work handed to the IRC thread")

    def _run_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            try:
                timer.fn()
            except Exception:  # noqa: BLE001
                log.exception("error in a timer on the IRC thread")
