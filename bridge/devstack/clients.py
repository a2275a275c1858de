"""Small, synchronous IRC and Matrix clients for tests and the demo.

Tests need to act as a plain IRC user and as a plain Matrix user against the
real daemons the devstack starts, and to wait (with deadlines) for what the
bridge delivers. These clients are deliberately minimal and independent of the
bridge's own code, so that they check the bridge from the outside.

Thread: the test's or the demo's thread (a lock guards each client's buffer).
"""

from __future__ import annotations

import itertools
import json as jsonlib
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import requests

from bridge.devstack.ports import wait_until

log = logging.getLogger(__name__)


# --- IRC ---------------------------------------------------------------------

_TAG_UNESCAPES = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}


def _unescape_tag(value: str) -> str:
    out: list[str] = []
    chars = iter(value)
    for ch in chars:
        if ch == "\\":
            nxt = next(chars, "")
            out.append(_TAG_UNESCAPES.get(nxt, nxt))
        else:
            out.append(ch)
    return "".join(out)


@dataclass
class IrcMessage:
    """One line received from the IRC server, parsed."""

    raw: str
    prefix: str | None
    nick: str | None
    command: str
    params: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The trailing parameter (message text for PRIVMSG/NOTICE), or ''."""
        return self.params[-1] if self.params else ""

    @property
    def target(self) -> str:
        """The first parameter (the channel or nick of a PRIVMSG), or ''."""
        return self.params[0] if self.params else ""

    @property
    def action(self) -> str | None:
        """The text of a CTCP ACTION (``/me``), or None when this is not one."""
        text = self.text
        if self.command == "PRIVMSG" and text.startswith("\x01ACTION ") and len(text) > 8:
            return text[8:].rstrip("\x01")
        return None

    @classmethod
    def parse(cls, raw: str) -> IrcMessage:
        rest = raw
        tags: dict[str, str] = {}
        if rest.startswith("@"):
            tag_part, _, rest = rest[1:].partition(" ")
            for item in tag_part.split(";"):
                if not item:
                    continue
                key, _, value = item.partition("=")
                tags[key] = _unescape_tag(value)
            rest = rest.lstrip(" ")
        prefix = nick = None
        if rest.startswith(":"):
            prefix, _, rest = rest[1:].partition(" ")
            rest = rest.lstrip(" ")
            nick = prefix.split("!", 1)[0].split("@", 1)[0]
        if " :" in rest:
            head, _, trailing = rest.partition(" :")
            words = head.split()
            params = words[1:] + [trailing]
        elif rest.startswith(":"):
            words, params = [], [rest[1:]]
        else:
            words = rest.split()
            params = words[1:]
        command = words[0].upper() if words else ""
        return cls(raw=raw, prefix=prefix, nick=nick, command=command, params=params, tags=tags)


class IrcError(RuntimeError):
    """The IRC server refused something (registration, a JOIN, ...)."""


# Numerics that mean a JOIN failed.
_JOIN_ERRORS = {"403", "405", "437", "471", "473", "474", "475", "476", "477", "479"}
# Numerics that mean registration failed.
_REGISTER_ERRORS = {"431", "432", "433", "436", "437", "451", "461", "462", "464", "465"}


class RawIrcClient:
    """A plain-socket IRC client, driven from the calling (test) thread.

    Every line read is parsed into an :class:`IrcMessage` and appended to
    ``history``. PINGs are answered whenever the client reads. ``wait_for``
    returns the first message from ``cursor`` on that matches and has not been
    returned by an earlier ``wait_for`` yet, reading more until its deadline.
    """

    def __init__(self, *, encoding: str = "utf-8", send_timeout: float = 10) -> None:
        self.encoding = encoding
        self.send_timeout = send_timeout
        self.sock: socket.socket | None = None
        self.nick: str = ""
        self.host: str = ""
        self.port: int = 0
        self.history: list[IrcMessage] = []
        self.cursor = 0
        self.closed = True
        self._consumed: set[int] = set()
        self._buffer = b""
        self._lock = threading.RLock()

    # -- connection ---------------------------------------------------------

    def connect(
        self,
        host: str,
        port: int,
        nick: str,
        timeout: float = 10,
        *,
        username: str | None = None,
        realname: str | None = None,
        password: str | None = None,
    ) -> RawIrcClient:
        """Connect, register as ``nick`` and wait for 001 (RPL_WELCOME)."""
        self.host, self.port, self.nick = host, port, nick
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.closed = False
        if password:
            self.send(f"PASS {password}")
        self.send(f"NICK {nick}")
        self.send(f"USER {username or nick} 0 * :{realname or nick}")
        msg = self.wait_for(
            lambda m: m.command in {"001", "ERROR"} | _REGISTER_ERRORS, timeout=timeout
        )
        if msg.command != "001":
            self.close()
            raise IrcError(f"registration as {nick!r} failed: {msg.raw}")
        if msg.params:
            self.nick = msg.params[0]
        return self

    def __enter__(self) -> RawIrcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, line: str) -> None:
        """Send one raw line (CRLF is added)."""
        if "\r" in line or "\n" in line:
            raise ValueError(f"IRC line must not contain CR or LF: {line!r}")
        if self.sock is None or self.closed:
            raise ConnectionError("IRC client is not connected")
        data = line.encode(self.encoding) + b"\r\n"
        with self._lock:
            self.sock.settimeout(self.send_timeout)
            self.sock.sendall(data)

    def quit(self, message: str = "bye", timeout: float = 5) -> None:
        """Send QUIT, wait for the server to close the link, then close."""
        if self.closed:
            return
        try:
            self.send(f"QUIT :{message}")
            self.wait_for(lambda m: m.command == "ERROR", timeout=timeout)
        except (OSError, TimeoutError):
            pass
        finally:
            self.close()

    def close(self) -> None:
        self.closed = True
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    # -- commands -----------------------------------------------------------

    def join(self, channel: str, timeout: float = 10, key: str | None = None) -> IrcMessage:
        """JOIN ``channel`` and wait for the server's echo of our own JOIN."""
        start = len(self.history)
        self.send(f"JOIN {channel} {key}" if key else f"JOIN {channel}")
        folded = channel.casefold()

        def done(m: IrcMessage) -> bool:
            if m.command == "JOIN":
                return self._is_me(m.nick) and m.target.casefold() == folded
            return m.command in _JOIN_ERRORS and any(p.casefold() == folded for p in m.params)

        msg = self.wait_for(done, timeout=timeout, start=start)
        if msg.command != "JOIN":
            raise IrcError(f"could not join {channel}: {msg.raw}")
        return msg

    def part(self, channel: str, reason: str = "", timeout: float = 10) -> IrcMessage:
        start = len(self.history)
        self.send(f"PART {channel} :{reason}" if reason else f"PART {channel}")
        folded = channel.casefold()
        return self.wait_for(
            lambda m: m.command == "PART" and self._is_me(m.nick) and m.target.casefold() == folded,
            timeout=timeout,
            start=start,
        )

    def privmsg(self, target: str, text: str) -> None:
        self.send(f"PRIVMSG {target} :{text}")

    def notice(self, target: str, text: str) -> None:
        self.send(f"NOTICE {target} :{text}")

    def action(self, target: str, text: str) -> None:
        """Send a CTCP ACTION (what ``/me text`` sends)."""
        self.send(f"PRIVMSG {target} :\x01ACTION {text}\x01")

    def names(self, channel: str, timeout: float = 10) -> set[str]:
        """The nicks in ``channel`` (status prefixes like @ and + stripped)."""
        start = len(self.history)
        self.send(f"NAMES {channel}")
        folded = channel.casefold()
        end_index, _ = self._wait(
            lambda m: m.command == "366" and len(m.params) > 1 and m.params[1].casefold() == folded,
            timeout,
            start,
            True,
        )
        nicks: set[str] = set()
        for i in range(start, end_index):
            m = self.history[i]
            if m.command == "353" and len(m.params) >= 3 and m.params[-2].casefold() == folded:
                self._consumed.add(i)
                nicks.update(n.lstrip("@+%~&!") for n in m.text.split())
        return nicks

    # -- waiting ------------------------------------------------------------

    def mark(self) -> int:
        """Ignore everything received so far in later ``wait_for`` calls."""
        self.pump()
        self.cursor = len(self.history)
        return self.cursor

    def reset_cursor(self, position: int = 0) -> None:
        """Let ``wait_for`` look at history again from ``position`` on, including
        messages that earlier ``wait_for`` calls already returned."""
        self.cursor = position
        self._consumed = {i for i in self._consumed if i < position}

    def wait_for(
        self,
        predicate: Callable[[IrcMessage], bool],
        timeout: float = 10,
        *,
        start: int | None = None,
        consume: bool = True,
    ) -> IrcMessage:
        """Return the first unconsumed message from ``start`` (default: ``cursor``)
        on that satisfies ``predicate``, reading from the socket until ``timeout``.

        Raises TimeoutError (with the last lines seen) when nothing matches in
        time, ConnectionError when the server closes the link first.
        """
        return self._wait(predicate, timeout, start, consume)[1]

    def _wait(
        self,
        predicate: Callable[[IrcMessage], bool],
        timeout: float,
        start: int | None,
        consume: bool,
    ) -> tuple[int, IrcMessage]:
        deadline = time.monotonic() + timeout
        index = self.cursor if start is None else start
        with self._lock:
            while True:
                while index < len(self.history):
                    msg = self.history[index]
                    if index not in self._consumed and predicate(msg):
                        if consume:
                            self._consumed.add(index)
                        return index, msg
                    index += 1
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(self._timeout_text(timeout))
                if not self._read(remaining):
                    if self.closed:
                        raise ConnectionError(
                            f"IRC connection of {self.nick} closed; last lines:\n"
                            + self._last_lines()
                        )

    def wait_for_privmsg(
        self,
        text: str | Callable[[str], bool],
        *,
        target: str | None = None,
        sender: str | None = None,
        timeout: float = 10,
    ) -> IrcMessage:
        """Wait for a PRIVMSG whose text equals ``text`` (or satisfies it)."""
        check = text if callable(text) else (lambda t: t == text)

        def pred(m: IrcMessage) -> bool:
            return (
                m.command == "PRIVMSG"
                and (target is None or m.target.casefold() == target.casefold())
                and (sender is None or (m.nick or "").casefold() == sender.casefold())
                and check(m.text)
            )

        return self.wait_for(pred, timeout=timeout)

    def pump(self) -> int:
        """Read whatever is already waiting on the socket; return the line count."""
        before = len(self.history)
        with self._lock:
            while not self.closed and self._read(0):
                pass
        return len(self.history) - before

    def messages(self, command: str | None = None) -> Iterable[IrcMessage]:
        """History from ``cursor`` on, optionally only one command."""
        for msg in itertools.islice(self.history, self.cursor, None):
            if command is None or msg.command == command.upper():
                yield msg

    # -- internals ----------------------------------------------------------

    def _is_me(self, nick: str | None) -> bool:
        return nick is not None and nick.casefold() == self.nick.casefold()

    def _read(self, timeout: float) -> bool:
        """Read once (up to ``timeout`` s); True when at least some data came."""
        if self.sock is None or self.closed:
            return False
        self.sock.settimeout(timeout if timeout > 0 else 0.0)
        try:
            data = self.sock.recv(65536)
        except (TimeoutError, BlockingIOError):
            return False
        except OSError:
            self.close()
            return False
        if not data:
            self._flush_partial()
            self.close()
            return False
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            self._handle_line(line.rstrip(b"\r"))
        return True

    def _flush_partial(self) -> None:
        if self._buffer.strip():
            self._handle_line(self._buffer.rstrip(b"\r"))
        self._buffer = b""

    def _handle_line(self, data: bytes) -> None:
        if not data:
            return
        raw = data.decode(self.encoding, errors="replace")
        msg = IrcMessage.parse(raw)
        self.history.append(msg)
        if msg.command == "PING" and not self.closed:
            try:
                self.send(f"PONG :{msg.text}" if msg.params else "PONG")
            except OSError:
                pass
        elif msg.command == "NICK" and self._is_me(msg.nick) and msg.params:
            self.nick = msg.params[0]

    def _last_lines(self, count: int = 15) -> str:
        return "\n".join(m.raw for m in self.history[-count:])

    def _timeout_text(self, timeout: float) -> str:
        return (
            f"timed out after {timeout:g} s waiting for an IRC message to {self.nick}; "
            f"last lines:\n{self._last_lines()}"
        )


# --- Matrix ------------------------------------------------------------------


class MatrixError(RuntimeError):
    """A client-server API call answered with a non-2xx status."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.body = body
        self.errcode: str | None = None
        self.json: dict[str, Any] = {}
        try:
            parsed = jsonlib.loads(body)
            if isinstance(parsed, dict):
                self.json = parsed
                self.errcode = parsed.get("errcode")
        except ValueError:
            pass
        super().__init__(f"{method} {path} -> HTTP {status}: {body[:2000]}")


def _q(value: str) -> str:
    return quote(value, safe="")


class MatrixClient:
    """A tiny client-server API client (``requests``, Bearer auth only)."""

    def __init__(
        self, base_url: str, access_token: str, user_id: str, *, timeout: float = 30
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.access_token = access_token
        self.user_id = user_id
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {access_token}"
        self._txn = itertools.count()
        self._txn_prefix = uuid.uuid4().hex[:12]

    def __repr__(self) -> str:
        return f"MatrixClient({self.base_url!r}, user_id={self.user_id!r})"

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> MatrixClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """Call ``path`` (starting with /_matrix/...) and return the decoded JSON."""
        resp = self.session.request(
            method, self.base_url + path, json=json, params=params, timeout=self.timeout
        )
        if not 200 <= resp.status_code < 300:
            raise MatrixError(method, path, resp.status_code, resp.text)
        if not resp.content:
            return {}
        return resp.json()

    def _txn_id(self) -> str:
        return f"{self._txn_prefix}-{next(self._txn)}"

    # -- rooms ----------------------------------------------------------------

    def create_room(self, **body: Any) -> str:
        return str(self.request("POST", "/_matrix/client/v3/createRoom", json=body)["room_id"])

    def join(self, room_id_or_alias: str, via: list[str] | None = None) -> str:
        params = {"via": via} if via else None
        resp = self.request(
            "POST", f"/_matrix/client/v3/join/{_q(room_id_or_alias)}", json={}, params=params
        )
        return str(resp["room_id"])

    def invite(self, room_id: str, user_id: str) -> None:
        self.request(
            "POST", f"/_matrix/client/v3/rooms/{_q(room_id)}/invite", json={"user_id": user_id}
        )

    def leave(self, room_id: str) -> None:
        self.request("POST", f"/_matrix/client/v3/rooms/{_q(room_id)}/leave", json={})

    def resolve_alias(self, alias: str) -> str:
        resp = self.request("GET", f"/_matrix/client/v3/directory/room/{_q(alias)}")
        return str(resp["room_id"])

    def joined_rooms(self) -> list[str]:
        return list(self.request("GET", "/_matrix/client/v3/joined_rooms")["joined_rooms"])

    def joined_members(self, room_id: str) -> dict[str, dict[str, Any]]:
        """user_id -> {"display_name": ..., "avatar_url": ...} of joined members."""
        resp = self.request("GET", f"/_matrix/client/v3/rooms/{_q(room_id)}/joined_members")
        return dict(resp["joined"])

    def state(self, room_id: str, type: str, state_key: str = "") -> dict[str, Any]:
        """The content of one state event."""
        return dict(
            self.request(
                "GET", f"/_matrix/client/v3/rooms/{_q(room_id)}/state/{_q(type)}/{_q(state_key)}"
            )
        )

    def room_state(self, room_id: str) -> list[dict[str, Any]]:
        """All current state events of the room."""
        return list(self.request("GET", f"/_matrix/client/v3/rooms/{_q(room_id)}/state"))

    def send_state(
        self, room_id: str, type: str, content: dict[str, Any], state_key: str = ""
    ) -> str:
        resp = self.request(
            "PUT",
            f"/_matrix/client/v3/rooms/{_q(room_id)}/state/{_q(type)}/{_q(state_key)}",
            json=content,
        )
        return str(resp["event_id"])

    # -- messages -------------------------------------------------------------

    def send_event(self, room_id: str, type: str, content: dict[str, Any]) -> str:
        resp = self.request(
            "PUT",
            f"/_matrix/client/v3/rooms/{_q(room_id)}/send/{_q(type)}/{self._txn_id()}",
            json=content,
        )
        return str(resp["event_id"])

    def send_text(
        self, room_id: str, text: str, msgtype: str = "m.text", html: str | None = None
    ) -> str:
        content: dict[str, Any] = {"msgtype": msgtype, "body": text}
        if html is not None:
            content["format"] = "org.matrix.custom.html"
            content["formatted_body"] = html
        return self.send_event(room_id, "m.room.message", content)

    def messages(
        self, room_id: str, limit: int = 100, dir: str = "b", **params: Any
    ) -> list[dict[str, Any]]:
        """Up to ``limit`` timeline events via ``/messages``, in chronological order.

        With ``dir="b"`` these are the latest ``limit`` events; with ``dir="f"``
        the first ones. Pages through the room as needed, so ``limit`` may exceed
        the server's per-request cap.
        """
        events: list[dict[str, Any]] = []
        token: str | None = params.pop("from", None)
        while len(events) < limit:
            query: dict[str, Any] = {"dir": dir, "limit": min(limit - len(events), 1000)}
            query.update(params)
            if token is not None:
                query["from"] = token
            resp = self.request(
                "GET", f"/_matrix/client/v3/rooms/{_q(room_id)}/messages", params=query
            )
            chunk = resp.get("chunk", [])
            events.extend(chunk)
            token = resp.get("end")
            if not chunk or token is None:
                break
        if dir == "b":
            events.reverse()
        return events

    def wait_for_message(
        self,
        room_id: str,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float = 20,
        *,
        limit: int = 100,
        interval: float = 0.1,
    ) -> dict[str, Any]:
        """Poll ``/messages`` until one of the latest ``limit`` events satisfies
        ``predicate``; return the earliest such event."""

        def find() -> dict[str, Any] | None:
            for event in self.messages(room_id, limit=limit):
                if predicate(event):
                    return event
            return None

        try:
            return wait_until(find, timeout, interval, what=f"a matching event in {room_id}")
        except TimeoutError as exc:
            recent = self.messages(room_id, limit=10)
            lines = "\n".join(
                f"  {e.get('sender')} {e.get('type')} {e.get('content')}" for e in recent
            )
            raise TimeoutError(
                f"timed out after {timeout:g} s waiting for a matching event in {room_id} "
                f"as {self.user_id}; latest events:\n{lines}"
            ) from exc

    def wait_for_text(self, room_id: str, body: str, timeout: float = 20) -> dict[str, Any]:
        """Wait for an m.room.message whose body is exactly ``body``."""
        return self.wait_for_message(
            room_id,
            lambda e: (
                e.get("type") == "m.room.message" and e.get("content", {}).get("body") == body
            ),
            timeout,
        )

    # -- users ----------------------------------------------------------------

    def whoami(self) -> str:
        return str(self.request("GET", "/_matrix/client/v3/account/whoami")["user_id"])

    def profile(self, user_id: str | None = None) -> dict[str, Any]:
        return dict(
            self.request("GET", f"/_matrix/client/v3/profile/{_q(user_id or self.user_id)}")
        )

    def set_displayname(self, name: str) -> None:
        self.request(
            "PUT",
            f"/_matrix/client/v3/profile/{_q(self.user_id)}/displayname",
            json={"displayname": name},
        )
