"""The write buffer of one IRC connection: whole lines in, as many bytes out as the socket takes.

Why: with a blocking socket a server that stops reading stalls the IRC thread (and so every
connection), and `socket.send` may write part of a line and drop the rest. Sockets are
non-blocking; a line is appended here whole and written when the poller says the socket is
writable, so nothing is ever cut and nothing waits. A buffer that grows past `limit`, or
that makes no progress for a while, means the peer stopped reading: the connection is
dropped and redone by its owner. Runs on the IRC thread only.
"""

from __future__ import annotations

import socket
import ssl
import time

CHUNK = 64 * 1024
DEFAULT_LIMIT = 256 * 1024  # bytes waiting before the connection counts as stuck


class SendBuffer:
    """Bytes waiting for the socket (IRC thread only)."""

    def __init__(self, limit: int = DEFAULT_LIMIT):
        self.limit = limit
        self._data = bytearray()
        self._retry = 0  # TLS: a write that wanted to wait must be retried with this length
        self.waiting_since: float | None = None  # when the buffer last went from empty to not

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        self._data.clear()
        self._retry = 0
        self.waiting_since = None

    def add(self, data: bytes) -> None:
        if not self._data:
            self.waiting_since = time.monotonic()
        self._data += data

    @property
    def over_limit(self) -> bool:
        return len(self._data) > self.limit

    def stalled_for(self, now: float) -> float:
        """Seconds since the socket last took bytes while some were waiting (0 if empty)."""
        if not self._data or self.waiting_since is None:
            return 0.0
        return now - self.waiting_since

    def flush(self, sock: socket.socket) -> bool:
        """Write what the socket takes without waiting; True once everything is written.

        Raises OSError (other than would-block) when the connection is broken.
        """
        while self._data:
            size = self._retry or min(CHUNK, len(self._data))
            try:
                sent = sock.send(self._data[:size])
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError,
                    ssl.SSLWantReadError):
                if isinstance(sock, ssl.SSLSocket):
                    self._retry = size
                return False
            self._retry = 0
            if sent <= 0:
                return False
            del self._data[:sent]
            self.waiting_since = time.monotonic()
        self.waiting_since = None
        return True
