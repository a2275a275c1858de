"""A DNS server on a loopback address that answers every question with NXDOMAIN.

ircd-hybrid looks up the reverse DNS of every client and has no setting to stop it: with
the machine's resolver it would send a query off the machine per connection, and with no
resolver at all each registration waits for its resolver's timeout (about 11 s, measured).
:class:`NxdomainServer` binds UDP port 53 on a random 127.x.y.z address, so the daemon's
private ``resolv.conf`` can name it and every lookup fails at once ("Couldn't look up your
hostname") without a packet leaving loopback.

Its one socket is owned by its own daemon thread, which only answers; ``stop()`` from any
thread ends that thread, then closes the socket.
"""

from __future__ import annotations

import errno
import logging
import random
import socket
import struct
import threading

log = logging.getLogger(__name__)

DNS_PORT = 53
_HEADER = struct.Struct("!HHHHHH")
_RCODE_NXDOMAIN = 3


def nxdomain_answer(query: bytes) -> bytes | None:
    """The NXDOMAIN reply to one DNS query (its id and question echoed), None for junk."""
    if len(query) < _HEADER.size:
        return None
    ident, flags, qdcount, _an, _ns, _ar = _HEADER.unpack_from(query)
    if flags & 0x8000:  # a response, not a question
        return None
    # QR=1, the query's opcode and RD bit, RA=1, rcode NXDOMAIN.
    reply_flags = 0x8000 | (flags & 0x7900) | 0x0080 | _RCODE_NXDOMAIN
    header = _HEADER.pack(ident, reply_flags, min(qdcount, 1), 0, 0, 0)
    return header + _first_question(query[_HEADER.size:]) if qdcount else header


def _first_question(body: bytes) -> bytes:
    """The bytes of the first question (name, type, class), or b'' when it is malformed."""
    i = 0
    while i < len(body):
        length = body[i]
        if length == 0:
            end = i + 1 + 4
            return body[:end] if end <= len(body) else b""
        if length & 0xC0:  # no compression pointers in a question we echo
            return b""
        i += 1 + length
    return b""


class NxdomainServer:
    """UDP 127.x.y.z:53 answering NXDOMAIN; needs root (port 53)."""

    def __init__(self) -> None:
        self.address = ""
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> NxdomainServer:
        """Bind a free loopback address (tries a few random ones) and start answering."""
        for _ in range(50):
            address = f"127.{random.randint(1, 254)}.{random.randint(0, 255)}." \
                      f"{random.randint(1, 254)}"
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.bind((address, DNS_PORT))
            except OSError as exc:
                sock.close()
                if exc.errno == errno.EADDRINUSE:
                    continue
                raise
            self.address, self._sock = address, sock
            sock.settimeout(0.2)  # how soon the thread notices stop()
            break
        else:
            raise OSError("no free loopback address for the NXDOMAIN server")
        self._thread = threading.Thread(target=self._serve, args=(sock,),
                                        name=f"nxdomain {self.address}", daemon=True)
        self._thread.start()
        log.debug("NXDOMAIN server on %s:%d", self.address, DNS_PORT)
        return self

    def _serve(self, sock: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                query, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            answer = nxdomain_answer(query)
            if answer is not None:
                try:
                    sock.sendto(answer, peer)
                except OSError:
                    return

    def stop(self) -> None:
        """End the thread (within its 0.2 s read timeout), then close the socket."""
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=5)
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
