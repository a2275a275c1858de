"""The IRC connection's own rules, on the real IRC thread against a real IRC daemon."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.config.ini import NetworkConfig
from bridge.devstack.ircd import IrcDaemon
from bridge.devstack.ports import wait_until
from bridge.irc import IrcSide
from bridge.irc import connection as connection_module
from bridge.irc.connection import State
from tests import irc_side
from tests.irc_listener import RecordingListener

Listener = RecordingListener


def network(port: int, **overrides: Any) -> NetworkConfig:
    return irc_side.network(port, **{"channels": ("#unit",), **overrides})


def test_a_silent_server_is_pinged_then_dropped_and_reconnected(
    ircd: IrcDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    listener = Listener()
    side = IrcSide((network(ircd.port),), listener, lambda n: n.bot_nick)
    side.start()
    try:
        net = side.network("t")
        assert net is not None
        wait_until(lambda: net.bot is not None and net.bot.state is State.CONNECTED, 10,
                   what="the bot to connect")
        bot = net.bot
        monkeypatch.setattr(connection_module, "DEAD_AFTER", -1.0)  # everything looks dead
        side.call(bot.check_alive, 10**9)
        wait_until(lambda: listener.connection_events("lost"), 10, what="the drop")
        monkeypatch.setattr(connection_module, "DEAD_AFTER", 240.0)
        wait_until(lambda: bot.state is State.CONNECTED and "#unit" in bot.channels, 20,
                   what="the reconnect and rejoin")
    finally:
        side.stop()


def test_many_puppets_connect_within_the_per_network_cap(ircd: IrcDaemon) -> None:
    listener = Listener()
    side = IrcSide((network(ircd.port, max_concurrent_connects=3),), listener,
                   lambda n: n.bot_nick)
    side.start()
    try:
        net = side.network("t")
        assert net is not None
        seen_active: list[int] = []

        def start_many() -> None:
            for i in range(30):
                net.puppet(f"@user{i}:localhost")
            seen_active.append(net.slots.active)

        side.call_sync(start_many)
        wait_until(lambda: side.call_sync(
            lambda: all(c.state is State.CONNECTED for c in net.puppets.values())), 30,
            what="30 puppets to connect")
        assert max(seen_active) <= 3
        nicks = side.call_sync(lambda: sorted(c.nick for c in net.puppets.values()))
        assert nicks == sorted(f"user{i}[m]" for i in range(30))
    finally:
        side.stop()


@pytest.fixture
def tls_ircd(tmp_path: Path) -> Iterator[IrcDaemon]:
    from bridge.devstack.ircd import ngircd_path

    if not ngircd_path():
        pytest.skip("the TLS server is ngircd's: apt-get install ngircd (.ci/run does)")
    daemon = IrcDaemon(tmp_path / "tls-ircd", kind="ngircd", tls=True)
    daemon.start()
    yield daemon
    daemon.stop()


def test_tls_is_verified_by_default_and_self_signed_needs_an_opt_out(tls_ircd: IrcDaemon) -> None:
    assert tls_ircd.tls_port is not None
    strict = Listener()
    side = IrcSide((network(tls_ircd.tls_port, tls=True, tls_verify=True),), strict,
                   lambda n: n.bot_nick)
    side.start()
    try:
        lost = wait_until(lambda: strict.connection_events("lost"), 10,
                          what="the refused certificate")
        assert "CERTIFICATE_VERIFY_FAILED" in (lost[0].reason or "")
    finally:
        side.stop()
    relaxed = Listener()
    side = IrcSide((network(tls_ircd.tls_port, tls=True, tls_verify=False),), relaxed,
                   lambda n: n.bot_nick)
    side.start()
    try:
        net = side.network("t")
        assert net is not None
        wait_until(lambda: net.bot is not None and "#unit" in net.bot.channels, 10,
                   what="a TLS connection with the self-signed certificate")
    finally:
        side.stop()


def test_more_than_1024_connections_work(tmp_path: Path) -> None:
    """select() stops at descriptor 1024; the IRC thread polls with epoll instead."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip(f"the hard limit on open files is {hard}: too low for this test")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4096), hard))
    daemon = IrcDaemon(tmp_path / "big")  # inherits the raised limit
    daemon.start()
    listener = Listener()
    # No connects-per-second rate: this test is about file descriptors, not pacing.
    config = network(daemon.port, max_concurrent_connects=64, connects_per_second=0.0)
    side = IrcSide((config,), listener, lambda n: n.bot_nick)
    side.start()
    count = 1100
    try:
        net = side.network("t")
        assert net is not None
        side.call_sync(lambda: [net.puppet(f"@u{i}:localhost") for i in range(count)])
        connected = wait_until(lambda: side.call_sync(
            lambda: sum(c.state is State.CONNECTED for c in net.puppets.values())) == count
            and count, 120, interval=0.5, what=f"{count} connections")
        assert connected == count
        highest = side.call_sync(lambda: max(c.conn.socket.fileno()
                                             for c in net.puppets.values()))
        assert highest > 1024
        last = side.call_sync(lambda: net.puppets[f"@u{count - 1}:localhost"])
        side.call_sync(lambda: last.join("#unit"))
        wait_until(lambda: side.call_sync(lambda: "#unit" in last.channels), 20,
                   what="the last connection to join")
    finally:
        side.stop()
        daemon.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
