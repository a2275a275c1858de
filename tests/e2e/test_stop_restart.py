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

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from bridge.devstack.clients import MatrixClient
from bridge.devstack.ports import terminate
from bridge.devstack.stack import Stack
from bridge.store.models import InboxEvent, Store
from tests.conftest import TEST_DB_ENV, clean_database
from tests.traffic import (
    IrcObserver,
    Report,
    Tally,
    eventually,
    kill_bridge,
    matrix_texts,
    seqs_in,
)

CHANNEL = "#stops"
FLOOD_RATE = 1.0  # lines per second per connection, after a burst of FLOOD_BURST
FLOOD_BURST = 2


class World:
    stack: Stack
    bob: IrcObserver
    alice: MatrixClient
    room: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World()
    url = os.environ.get(TEST_DB_ENV)
    if url:
        clean_database(url)
    w.stack = Stack(tmp_path_factory.mktemp("stops"), database_url=url, channels=CHANNEL,
                    log_level="DEBUG", log_levels="irc.client=DEBUG",
                    flood_rate=FLOOD_RATE, flood_burst=FLOOD_BURST,
                    network_extra="max_lines = 20")

    def bob_first(stack: Stack) -> None:
        w.bob = IrcObserver(stack, "Bob", CHANNEL).connect()

    try:
        w.stack.start(before_bridge=bob_first)
        w.alice = w.stack.matrix_user("alice")
        w.room = w.alice.join(w.stack.alias(CHANNEL))
        w.alice.send_text(w.room, "warm-up")
        eventually(lambda: "warm-up" in w.bob.channel_texts(), 30, "alice's puppet to speak")
        yield w
    finally:
        if getattr(w, "bob", None):
            w.bob.close()
        if os.environ.get("IRCBRIDGE_SHOW_LOG"):
            print(w.stack.bridge.log(400))
        w.stack.stop()
        if url:
            clean_database(url)


def _inbox_bodies(url: str, tag: str) -> list[str]:
    """Bodies of the inbox events (any state) whose text starts with `tag`."""
    store = Store(url)
    try:
        with store.db.connection_context():
            rows = InboxEvent.select(InboxEvent.payload).where(
                InboxEvent.payload.contains(f'"body": "{tag} '))
            return [json.loads(r.payload)["content"]["body"] for r in rows]
    finally:
        store.close()


class WriteLock:
    """Hold the write lock of the bridge's outbox and scrollback (a database that does not
    take writes), so lines said on IRC stay in the bridge's memory."""

    def __init__(self, url: str):
        self.url = url
        self.conn: Any = None

    def __enter__(self) -> WriteLock:
        if self.url.startswith("sqlite:///"):
            import sqlite3

            self.conn = sqlite3.connect(self.url[len("sqlite:///"):], isolation_level=None)
            self.conn.execute("BEGIN IMMEDIATE")
        else:
            import psycopg2

            self.conn = psycopg2.connect(self.url)
            self.conn.cursor().execute(
                "LOCK TABLE outbox_message, scrollback IN EXCLUSIVE MODE")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.url.startswith("sqlite"):
            self.conn.execute("ROLLBACK")
        else:
            self.conn.rollback()
        self.conn.close()


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
    eventually(lambda: len(_inbox_bodies(url, tag_m)) == len(m_sent), 30,
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
