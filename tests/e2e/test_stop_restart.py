"""Stopping and restarting the bridge process keeps every queued line, and tells the truth.

One stack (ngircd + Synapse + `ircbridge run`, the bridge as a real gunicorn process) with
flood control on, so Matrix lines really wait in the IRC connection's queue. The tests:

- SIGTERM while Matrix lines wait for flood control and IRC lines wait for a database that
  is locked by the test: the process exits cleanly, and after the restart every line of
  both directions arrives once, in order.
- SIGKILL between the first and the last line of a multi-line message: after the restart
  the sender is told the message may not have arrived, and nothing of it is said again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from bridge.devstack.ports import terminate
from tests.stacks import World as StackWorld
from tests.stacks import observer_world
from tests.traffic import (
    IrcObserver,
    Report,
    Tally,
    eventually,
    inbox_bodies,
    kill_bridge,
    matrix_texts,
    seqs_in,
)
from tests.write_lock import WriteLock

CHANNEL = "#stops"
FLOOD_RATE = 1.0  # lines per second per connection, after a burst of FLOOD_BURST
FLOOD_BURST = 2


World = StackWorld[IrcObserver]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with observer_world(tmp_path_factory.mktemp("stops"), CHANNEL, log_level="DEBUG",
                        log_levels="irc.client=DEBUG", flood_rate=FLOOD_RATE,
                        flood_burst=FLOOD_BURST, network_extra="max_lines = 20") as w:
        yield w


def _said(world: World, tag: str) -> list[int]:
    return seqs_in(world.bob.channel_texts(), tag)


def _bridge_read(world: World, text: str) -> bool:
    """The bridge's IRC thread read a line with `text`: irc.client logs each line it reads
    at DEBUG ("FROM SERVER: ... PRIVMSG #c :text", or its event "arguments: ['text']")
    before the bridge's handlers run on that same thread."""
    log = world.stack.bridge.log_path.read_text(errors="replace")
    return any("irc.client" in line and (f"PRIVMSG {CHANNEL} :{text}" in line or
                                         f"arguments: [{text!r}]" in line)
               for line in log.splitlines())


def test_sigterm_keeps_the_lines_queued_both_ways(world: World) -> None:
    report = Report()
    url = world.stack.database_url
    tag_m, tag_i = "term-m2i", "term-i2m"
    m_sent = list(range(12))
    for n in m_sent:
        world.alice.send_text(world.room, f"{tag_m} {n}")
    # Every line is in the bridge's inbox; flood control lets out one a second.
    eventually(lambda: len(inbox_bodies(url, tag_m)) == len(m_sent), 30,
               "Alice's lines in the bridge's inbox", interval=0.05)
    eventually(lambda: len(_said(world, tag_m)) >= 1, 30, "Alice's first line on IRC",
               tick=world.bob.pump, interval=0.05)
    i_sent = list(range(10))
    proc = world.stack.bridge.proc
    assert proc is not None
    with WriteLock(url):
        for n in i_sent:
            world.bob.c.privmsg(CHANNEL, f"{tag_i} {n}")
        eventually(lambda: _bridge_read(world, f"{tag_i} {i_sent[-1]}"), 30,
                   "the bridge to read Bob's lines", interval=0.05)
        before = len(set(_said(world, tag_m)))
        started = time.monotonic()
        code = terminate(proc, 20)  # SIGTERM, the database still locked
        took = time.monotonic() - started
        world.stack.bridge.proc = None
    report.add(f"SIGTERM with {len(m_sent) - before} Matrix lines waiting for flood "
               f"control and {len(i_sent)} IRC lines for the database: exit {code} "
               f"after {took:.1f} s")
    log = world.stack.bridge.log(300)
    assert code == 0, f"{report}\n{log}"
    assert "Bad file descriptor" not in log, log
    world.stack.bridge.start()
    try:
        eventually(lambda: set(m_sent) <= set(_said(world, tag_m)), 60,
                   "every Matrix line on IRC", tick=world.bob.pump, interval=0.2)
        eventually(lambda: set(i_sent) <= set(seqs_in(matrix_texts(world.alice, world.room),
                                                      tag_i)),
                   60, "every IRC line in Matrix", interval=0.5)
    except TimeoutError:
        pass
    m2i = Tally(f"Matrix -> IRC [{tag_m}]", m_sent, _said(world, tag_m))
    i2m = Tally(f"IRC -> Matrix [{tag_i}]", i_sent,
                seqs_in(matrix_texts(world.alice, world.room), tag_i))
    for tally in (m2i, i2m):
        report.add(str(tally))
    notices = [t for t in matrix_texts(world.alice, world.room) if "not delivered" in t]
    report.add(f"notices: {notices}")
    assert m2i.clean and m2i.in_order and i2m.clean and i2m.in_order, str(report)
    assert not notices, str(report)


def test_a_message_cut_by_a_kill_is_reported_to_its_sender(world: World) -> None:
    """Killed after the first of a message's lines left: its sender hears that it may not
    have arrived, and no line of it is said a second time."""
    report = Report()
    if world.stack.bridge.proc is None or world.stack.bridge.proc.poll() is not None:
        world.stack.bridge.proc = None
        world.stack.bridge.start()
    tag = "cut"
    lines = list(range(10))
    body = "\n".join(f"{tag} {n}" for n in lines)
    world.alice.send_text(world.room, body)
    eventually(lambda: len(_said(world, tag)) >= 1, 30, "the message's first line on IRC",
               tick=world.bob.pump, interval=0.02)
    kill_bridge(world.stack.bridge)
    world.bob.pump()
    said_before = _said(world, tag)
    report.add(f"killed after {len(said_before)} of {len(lines)} lines")
    assert len(said_before) < len(lines), str(report)
    world.stack.bridge.start()

    def notice() -> dict[str, Any] | None:
        for event in world.alice.messages(world.room, limit=50):
            content = event.get("content") or {}
            if content.get("msgtype") == "m.notice" and \
                    "may not have arrived" in str(content.get("body")):
                return event
        return None

    try:
        found = eventually(notice, 60, "the notice to alice", interval=0.5)
    except TimeoutError:
        found = None
    # A marker after the restart: anything said again would come before it.
    world.alice.send_text(world.room, "cut-marker 0")
    eventually(lambda: "cut-marker 0" in world.bob.channel_texts(), 60, "the marker",
               tick=world.bob.pump)
    said = _said(world, tag)
    report.add(f"said on IRC: {said}")
    assert found is not None, f"no notice\n{report}\n{world.stack.bridge.log(80)}"
    assert found["sender"] == "@ircbot:localhost", found
    assert "alice[m]: not delivered to #stops" in found["content"]["body"], found
    assert said == said_before, f"lines said again after the restart\n{report}"
