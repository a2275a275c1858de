"""A connection's last words reach the server: QUIT, then a half-close, and the socket is
read until the server hangs up. Closing a socket that still holds unread input sends a TCP
reset, and the reset made the server drop the QUIT it had not read yet (the bot's goodbye on
Ergo became "Write error" while the channel was busy). Real loopback sockets; the test's
thread plays the IRC thread."""

from __future__ import annotations

import select
import socket
import threading

from bridge.irc.reactor import SelectorReactor

NOISE = b":carol!c@h PRIVMSG #busy :" + b"x" * 400 + b"\r\n"


def _busy_server(listener: socket.socket, closed: threading.Event, got: list[bytes],
                 errors: list[BaseException]) -> None:
    """What Ergo does with a busy channel: it goes on writing the channel's lines to the
    client for a while before it reads the client's QUIT, and a failed write ends the
    client there (its QUIT unread)."""
    peer, _ = listener.accept()
    try:
        while not closed.is_set():
            peer.sendall(NOISE * 10)
            closed.wait(0.01)
        for _ in range(20):  # still busy after the client said goodbye
            peer.sendall(NOISE * 10)
        while True:
            data = peer.recv(65536)
            if not data:
                break
            got.append(data)
    except OSError as e:  # the client's socket reset: what Ergo reports as a write error
        errors.append(e)
    finally:
        peer.close()


def test_the_quit_is_read_by_the_server_though_the_client_had_unread_input() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    closed = threading.Event()
    got: list[bytes] = []
    errors: list[BaseException] = []
    server = threading.Thread(target=_busy_server, args=(listener, closed, got, errors))
    server.start()
    reactor = SelectorReactor()
    conn = reactor.server()
    conn.connect("127.0.0.1", listener.getsockname()[1], "bot")
    readable, _, _ = select.select([conn.socket], [], [], 10)
    assert readable, "the server's lines arrived"  # and stay unread in our buffer
    conn.disconnect("Bridge shutting down")
    closed.set()
    reactor.finish_lingering(timeout=5)
    server.join(10)
    listener.close()
    reactor.close()
    said = b"".join(got)
    assert not errors, f"the server could not write to the closing client: {errors!r}"
    assert b"QUIT :Bridge shutting down\r\n" in said, said[-200:]
    assert not reactor._lingering, "the half-closed socket was closed once the server hung up"
