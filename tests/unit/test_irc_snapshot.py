"""Other threads read IRC-thread state only through the snapshot the IRC thread publishes.

Against a scripted loopback IRC server (tests/scripted_irc.py): the IRC thread processes a
real 005 and a real NICK, and the published NetworkSnapshot follows; an IRC-only method
called from this (non-IRC) thread raises while the thread check is on.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.devstack.ports import wait_until
from bridge.irc import threadcheck
from bridge.irc.snapshot import NetworkSnapshot
from tests.scripted_irc import ScriptedIrcServer
from tests.unit.test_irc_wire import bridge_side, connected, network, registered

BRIDGE = Path(__file__).resolve().parents[2] / "bridge"

# Attributes of Network / IrcConnection objects that only the IRC thread may read.
FORBIDDEN = re.compile(
    r"(?<!snapshot)\.(puppets|nick_max|our_nicks|puppet_nicks|former_nicks|channel_modes"
    r"|wanted_nick)\b")


@pytest.fixture
def checked_threads() -> Iterator[None]:
    was = threadcheck.enabled()
    threadcheck.enable(True)
    try:
        yield
    finally:
        threadcheck.enable(was)


def test_an_irc_only_method_called_off_the_irc_thread_raises(checked_threads: None) -> None:
    with ScriptedIrcServer() as server, bridge_side(network(server.port)) as (side, _):
        net = side.network("t")
        assert net is not None
        registered(server, "tbot")
        with pytest.raises(threadcheck.WrongThread):
            net.puppet("@alice:localhost")
        with pytest.raises(threadcheck.WrongThread):
            net.our_nicks()
        bot = side.call_sync(lambda: net.bot)
        with pytest.raises(threadcheck.WrongThread):
            bot.send("PRIVMSG #x :hi")
        # The same calls are fine on the IRC thread.
        assert side.call_sync(net.our_nicks) == {"tbot"}


def test_the_snapshot_follows_nicklen_casemapping_and_a_nick_change(
        checked_threads: None) -> None:
    with ScriptedIrcServer() as server, bridge_side(network(server.port)) as (side, _):
        net = side.network("t")
        assert net is not None
        assert side.snapshot("t") == NetworkSnapshot("t")
        bot_client = registered(server, "tbot")
        connected(side, side.call_sync(lambda: net.bot))
        bot_client.send(":scripted 005 tbot NICKLEN=12 CASEMAPPING=ascii :are supported")
        wait_until(lambda: side.snapshot("t").nick_max == 12,  # type: ignore[union-attr]
                   10, what="NICKLEN in the snapshot")
        assert side.casemapping("t") == "ascii"

        alice = side.call_sync(net.puppet, "@alice:localhost")
        client = registered(server, "alice[m]")
        connected(side, alice)
        wait_until(lambda: (side.snapshot("t") or NetworkSnapshot("t")).nicks
                   .get("@alice:localhost") == "alice[m]", 10, what="alice's nick")

        client.send(":alice[m]!alice@host NICK :Alicia")  # e.g. services renaming her
        snap = wait_until(
            lambda: (s := side.snapshot("t")) and s.nicks.get("@alice:localhost") == "Alicia"
            and s, 10, what="the new nick in the snapshot")
        assert isinstance(snap, NetworkSnapshot)
        with pytest.raises(TypeError):
            snap.nicks["@bob:localhost"] = "bob"  # type: ignore[index]

        side.call_sync(net.drop_puppet, "@alice:localhost")
        assert "@alice:localhost" not in side.snapshot("t").nicks  # type: ignore[union-attr]


def test_no_other_part_reads_irc_thread_attributes() -> None:
    found = []
    for package in ("core", "admin", "web", "ops", "pipeline", "cli"):
        for path in sorted((BRIDGE / package).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if FORBIDDEN.search(line.split("#", 1)[0]):
                    found.append(f"{path.relative_to(BRIDGE)}:{number}: {line.strip()}")
    assert found == []


def test_the_suite_runs_with_the_thread_check_on() -> None:
    """tests/conftest.py turns the check on before the bridge is imported (issue 13, item 3)."""
    if os.environ.get("IRCBRIDGE_CHECK_THREADS") in ("", "0"):
        pytest.skip("IRCBRIDGE_CHECK_THREADS is off in this environment")
    assert threadcheck.enabled()
