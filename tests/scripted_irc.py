"""A small scripted IRC server on loopback, for what a real daemon cannot be made to do.

ngircd and InspIRCd always read their clients and never split `CAP LS` over several lines
for a short list; to test a server that stops reading, a multi-line `CAP * LS * :...`, or
what bytes exactly reach the socket, the tests need a peer they script. It is a real TCP
server (real sockets, real kernel buffers), one thread per client, and records every byte
it receives. It registers a client (001) after NICK and USER (and after CAP END when the
client started a CAP negotiation), answers PING, lets JOINs succeed or refuses them with the
numeric it was given, and does SASL PLAIN the way the IRCv3 spec says, recording each
AUTHENTICATE chunk.
"""

from __future__ import annotations

import base64
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from bridge.devstack.ports import LOOPBACK


@dataclass
class Client:
    """One accepted connection, as the server saw it."""

    sock: socket.socket
    raw: bytearray = field(default_factory=bytearray)
    nick: str = ""
    registered: threading.Event = field(default_factory=threading.Event)
    closed: threading.Event = field(default_factory=threading.Event)
    reading: threading.Event = field(default_factory=threading.Event)
    authenticate: list[str] = field(default_factory=list)  # AUTHENTICATE arguments received
    sasl_payload: bytes | None = None  # the decoded PLAIN payload, once complete
    lock: threading.Lock = field(default_factory=threading.Lock)

    def lines(self) -> list[str]:
        """Every complete line received (CR LF stripped), decoded leniently."""
        with self.lock:
            data = bytes(self.raw)
        *complete, _rest = data.split(b"\r\n")
        return [line.decode("utf-8", "replace") for line in complete]

    def send(self, line: str) -> None:
        try:
            self.sock.sendall(line.encode() + b"\r\n")
        except OSError:
            pass


class ScriptedIrcServer:
    """Accepts IRC clients on 127.0.0.1; see the module docstring for what it answers."""

    def __init__(self, *, cap_ls: list[str] | None = None, receive_buffer: int = 0,
                 on_line: Callable[[Client, str], None] | None = None,
                 refuse: dict[str, str] | None = None):
        # Lines answering `CAP LS`, e.g. ["CAP * LS * :multi-prefix", "CAP * LS :sasl"];
        # None: the server knows no CAP (it ignores it, as old servers do).
        self.cap_ls = cap_ls
        self.on_line = on_line
        # Channel (lower case) -> the numeric reply that refuses a JOIN to it, e.g.
        # {"#fwd": "470 {nick} #fwd #elsewhere :Forwarding"}; other JOINs succeed.
        self.refuse = refuse or {}
        # Cleared: registrations wait (no 001) until `release_welcomes()`.
        self.welcome_allowed = threading.Event()
        self.welcome_allowed.set()
        self._held: list[Client] = []
        # Set: right after 001 the server says ERROR and closes (a K-line, an excess flood).
        self.close_after_welcome = threading.Event()
        self.closing_text = "Closing Link: excess flood"
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if receive_buffer:  # inherited by accepted sockets: a small window fills fast
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.listener.bind((LOOPBACK, 0))
        self.listener.listen(64)
        self.port = int(self.listener.getsockname()[1])
        self.clients: list[Client] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> ScriptedIrcServer:
        thread = threading.Thread(target=self._accept, name="scripted-ircd", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        self.listener.close()
        for client in list(self.clients):
            client.reading.set()
            try:
                client.sock.close()
            except OSError:
                pass

    def __enter__(self) -> ScriptedIrcServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def client(self, nick: str) -> Client | None:
        """The newest registered client with this nick."""
        for client in reversed(list(self.clients)):
            if client.nick == nick and client.registered.is_set():
                return client
        return None

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _addr = self.listener.accept()
            except OSError:
                return
            client = Client(sock)
            client.reading.set()
            self.clients.append(client)
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True,
                                      name="scripted-ircd-client")
            thread.start()
            self._threads.append(thread)

    def _serve(self, client: Client) -> None:
        pending = b""
        state = {"user": False, "cap": False}
        try:
            while not self._stop.is_set():
                client.reading.wait()
                try:
                    data = client.sock.recv(65536)
                except OSError:
                    break
                if not data:
                    break
                with client.lock:
                    client.raw += data
                pending += data
                while b"\r\n" in pending:
                    raw_line, pending = pending.split(b"\r\n", 1)
                    self._handle(client, raw_line.decode("utf-8", "replace"), state)
        finally:
            client.closed.set()
            try:  # hang up as a server does once its client has: the bridge reads until then
                client.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def release_welcomes(self) -> None:
        self.welcome_allowed.set()
        held, self._held = self._held, []
        for client in held:
            self._send_welcome(client)

    def _welcome(self, client: Client, state: dict[str, bool]) -> None:
        if client.nick and state["user"] and not state["cap"] and not client.registered.is_set():
            if not self.welcome_allowed.is_set():
                self._held.append(client)
                return
            self._send_welcome(client)

    def _send_welcome(self, client: Client) -> None:
        client.send(f":scripted 001 {client.nick} :Welcome")
        client.send(f":scripted 376 {client.nick} :End of MOTD")
        client.registered.set()
        if self.close_after_welcome.is_set():
            client.send(f"ERROR :{self.closing_text}")
            try:
                client.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _handle(self, client: Client, line: str, state: dict[str, bool]) -> None:
        words = line.split(" ")
        command = words[0].upper()
        if self.on_line is not None:
            self.on_line(client, line)
        if command == "JOIN" and len(words) > 1:
            self._join(client, words[1])
        elif command == "NICK" and len(words) > 1:
            client.nick = words[1].lstrip(":")
            self._welcome(client, state)
        elif command == "USER":
            state["user"] = True
            self._welcome(client, state)
        elif command == "PING":
            client.send(f":scripted PONG scripted :{line.partition(' ')[2].lstrip(':')}")
        elif command == "CAP" and len(words) > 1 and self.cap_ls is not None:
            self._cap(client, words[1].upper(), line, state)
        elif command == "AUTHENTICATE" and len(words) > 1:
            self._authenticate(client, words[1])

    def _join(self, client: Client, channels: str) -> None:
        for channel in channels.split(","):
            refusal = self.refuse.get(channel.lower())
            if refusal is not None:
                client.send(f":scripted {refusal.format(nick=client.nick)}")
            else:
                client.send(f":{client.nick}!u@scripted JOIN {channel}")

    def _cap(self, client: Client, sub: str, line: str, state: dict[str, bool]) -> None:
        if sub == "LS":
            state["cap"] = True
            for reply in self.cap_ls or []:
                client.send(f":scripted {reply}")
        elif sub == "REQ":
            client.send(f":scripted CAP * ACK :{line.split(':', 1)[-1]}")
        elif sub == "END":
            state["cap"] = False
            self._welcome(client, state)

    def _authenticate(self, client: Client, argument: str) -> None:
        client.authenticate.append(argument)
        if argument.upper() == "PLAIN" and len(client.authenticate) == 1:
            client.send("AUTHENTICATE +")
            return
        chunks = client.authenticate[1:]
        if argument != "+" and len(argument) == 400:
            return  # more follows
        data = "".join(c for c in chunks if c != "+")
        client.sasl_payload = base64.b64decode(data)
        nick = client.nick or "*"
        client.send(f":scripted 900 {nick} {nick}!u@h account :You are now logged in")
        client.send(f":scripted 903 {nick} :SASL authentication successful")
