"""Issue 6, "nothing lost, nothing injected": faults with real processes, counted both ways.

One stack (ngircd + Synapse + `ircbridge run`) serves the whole module; each test breaks one
part during traffic and then counts numbered messages on both sides: what a raw IRC client in
the channel received, and what /messages shows in the room. Every test asserts 0 lost and
0 duplicated. Tests run in file order; the SIGTERM test comes last because it ends the bridge.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest
import requests

from bridge.config.ini import load
from bridge.devstack.ports import LOOPBACK, free_port, wait_until
from bridge.devstack.stack import BridgeProcess
from bridge.store.models import PENDING, InboxEvent, OutboxMessage, Store
from tests.conftest import TEST_DB_ENV
from tests.stacks import World as StackWorld
from tests.stacks import observer_world
from tests.traffic import (
    IrcObserver,
    IrcTalker,
    MatrixTalker,
    Report,
    Tally,
    elapsed,
    eventually,
    inbox_bodies,
    kill_bridge,
    matrix_texts,
    seqs_in,
)
from tests.write_lock import WriteLock

CHANNEL = "#faults"
PUPPET = "alice[m]"
BOT = "ircbot"


World = StackWorld[IrcObserver]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with observer_world(tmp_path_factory.mktemp("faults"), CHANNEL, log_level="DEBUG") as w:
        yield w


@pytest.fixture
def ready(world: World) -> World:
    """Whatever an earlier test left broken comes back before the next one starts."""
    stack = world.stack
    if not stack.ircd.running:
        stack.ircd.start()
    if not stack.synapse.running:
        stack.synapse.start()
    if stack.bridge.proc is None or stack.bridge.proc.poll() is not None:
        stack.bridge.proc = None
        stack.bridge.start()
    if world.bob.client is None or world.bob.client.closed:
        world.bob.connect()
    try:
        wait_until(lambda: _health(stack.bridge).get("ok"), 20, interval=0.2,
                   what="the bridge to be healthy")
    except TimeoutError:
        # An earlier fault left the bridge broken (that test failed for it): start afresh,
        # so this test measures its own fault only.
        print(f"the bridge is unhealthy ({_health(stack.bridge).get('failing')}); restarting")
        kill_bridge(stack.bridge)
        stack.bridge.start()
        wait_until(lambda: _health(stack.bridge).get("ok"), 60, interval=0.2,
                   what="the bridge to be healthy")
    return world


def _health(bridge: BridgeProcess) -> dict:
    try:
        return bridge.health()
    except Exception:  # noqa: BLE001 - not answering yet
        return {}


def i2m(world: World, tag: str, sent: list[int]) -> Tally:
    """IRC -> Matrix: what of `sent` is in the room (latest events, via /messages)."""
    texts = matrix_texts(world.alice, world.room, limit=3 * len(sent) + 200)
    return Tally(f"IRC -> Matrix [{tag}]", sent, seqs_in(texts, tag))


def m2i(world: World, tag: str, sent: list[int]) -> Tally:
    """Matrix -> IRC: what of `sent` Bob received in the channel (across reconnects).

    Counted against what the homeserver handed to the bridge (its inbox): Synapse 1.163
    sometimes never pushes a transaction made while it recovers from a failed push (seen:
    txn 31 skipped after "Successfully recovered", 32 sent). That loss is reported, not
    blamed on the bridge; the bridge stores a transaction before answering it, so an
    event it was handed is always in its inbox.
    """
    handed = set(seqs_in(inbox_bodies(world.stack.database_url, tag), tag))
    got = seqs_in(world.bob.channel_texts(), tag)
    return Tally(f"Matrix -> IRC [{tag}]", [n for n in sent if n in handed], got,
                 upstream_lost=sorted(set(sent) - handed - set(got)))


def settle(world: World, tag: str) -> None:
    """One marker each way after the counted traffic: late duplicates would come before it."""
    world.alice.send_text(world.room, f"{tag}-marker 0")
    world.bob.c.privmsg(CHANNEL, f"{tag}-marker 1")
    eventually(lambda: f"{tag}-marker 0" in world.bob.channel_texts(), 60, "the m2i marker",
               interval=0.1)
    eventually(lambda: f"{tag}-marker 1" in matrix_texts(world.alice, world.room, 200), 60,
               "the i2m marker", interval=0.3)


def wait_all(world: World, tag_m: str, m_sent: list[int], tag_i: str, i_sent: list[int],
             timeout: float) -> None:
    """Until every counted message arrived (or the deadline; the tallies then say what is lost)."""
    try:
        eventually(lambda: not m2i(world, tag_m, m_sent).lost, timeout,
                   f"every {tag_m} line on IRC", interval=0.2)
        eventually(lambda: not i2m(world, tag_i, i_sent).lost, timeout,
                   f"every {tag_i} message in Matrix", interval=0.5)
        settle(world, tag_m)
    except TimeoutError:
        pass


def assert_clean(report: Report, *tallies: Tally, ordered: bool = True) -> None:
    for tally in tallies:
        report.add(str(tally))
    problems = [t for t in tallies if not t.clean or (ordered and not t.in_order)]
    assert not problems, str(report)


def second_bridge(world: World) -> BridgeProcess:
    """A copy of the bridge's config.ini in its own folder, bound to another port."""
    folder = world.stack.workdir / f"second-{time.monotonic_ns()}"
    folder.mkdir()
    port = free_port()
    text = world.stack.config_path.read_text(encoding="utf-8")
    text = text.replace(f"{LOOPBACK}:{world.stack.bridge_port}", f"{LOOPBACK}:{port}")
    (folder / "config.ini").write_text(text, encoding="utf-8")
    shutil.copy(world.stack.registration, folder / "registration.yaml")
    return BridgeProcess(folder / "config.ini", port)


def accepted_connections(world: World) -> int:
    """How many TCP connections the IRC daemon has accepted so far (from its log)."""
    return len(re.findall(r"Accepted connection", world.stack.ircd.log_path.read_text(
        errors="replace")))


def assert_refused(world: World, second: BridgeProcess, report: Report) -> None:
    """The second bridge exits with a clear message and never reaches the IRC server."""
    before = accepted_connections(world)
    started = time.monotonic()
    try:
        with pytest.raises(RuntimeError, match="exited"):
            second.start(timeout=60)
    finally:
        if second.proc is not None and second.proc.poll() is None:
            report.add(f"the second bridge STARTED; its log:\n{second.log(40)}")
            second.stop(timeout=5)
    report.add(f"second bridge exited after {elapsed(started)} s with "
               f"{second.proc.returncode if second.proc else '?'}")
    log = second.log(200)
    assert re.search(r"another bridge .*already serves network 'local'", log), log
    nicks = world.bob.c.names(CHANNEL)
    assert [n for n in nicks if n.lower().startswith(BOT)] == [BOT], nicks
    world.bob.c.send("WHOIS ircbot_")
    reply = world.bob.c.wait_for(lambda m: m.command in ("311", "401"), timeout=10)
    assert reply.command == "401", reply.raw  # no such nick: no second bot
    # Also no connection that came and went: the daemon accepted none from the second bridge.
    assert accepted_connections(world) == before


# ------------------------------------------------------------------------------- (6)
def test_a_second_bridge_on_the_same_database_refuses_to_start(ready: World) -> None:
    report = Report()
    second = second_bridge(ready)
    assert_refused(ready, second, report)
    # The first bridge was not disturbed: both ways still work.
    ready.alice.send_text(ready.room, "lock-m2i 0")
    ready.bob.c.privmsg(CHANNEL, "lock-i2m 0")
    wait_all(ready, "lock-m2i", [0], "lock-i2m", [0], 30)
    assert_clean(report, m2i(ready, "lock-m2i", [0]), i2m(ready, "lock-i2m", [0]))


# ------------------------------------------------------------------------------- (2)
def _irc_state(world: World) -> dict:
    return (_health(world.stack.bridge).get("networks") or {}).get("local") or {}


def test_irc_daemon_restart_queues_what_matrix_users_say_and_delivers_it(ready: World) -> None:
    """ngircd goes away during traffic: Alice keeps talking; after it is back the bot and her
    puppet reconnect, rejoin, and everything she said meanwhile arrives once, in order."""
    world, report = ready, Report()
    tag_m, tag_i = "ircd-m2i", "ircd-i2m"
    # Traffic before the restart, waited for: a line on a socket the server is closing is
    # IRC's to lose, not the bridge's.
    m_sent = MatrixTalker(world.alice, world.room, tag_m, 10).start().join().sent
    i_sent = IrcTalker(world.bob.c, CHANNEL, tag_i, 10).start().join().sent
    wait_all(world, tag_m, m_sent, tag_i, i_sent, 30)
    unobservable: list[int] = []
    for attempt in range(3):
        world.bob.close()
        world.stack.ircd.stop()
        eventually(lambda: _irc_state(world).get("bot") not in (None, "connected") and
                   "connected" not in (_irc_state(world).get("puppets") or {}).values(),
                   20, "the bridge to notice that IRC is gone")
        down = MatrixTalker(world.alice, world.room, tag_m, 15, interval=0.2,
                            first=100 * (attempt + 1)).start().join()
        m_sent += down.sent
        report.add(f"attempt {attempt}: alice said {len(down.sent)} lines while IRC was down")
        world.stack.ircd.start()
        world.bob.connect()
        if not {BOT, PUPPET} & world.bob.join_names:
            break
        # The bridge was back in the channel before Bob: what it said first Bob never saw.
        report.add(f"the bridge rejoined before the observer ({world.bob.join_names}); again")
        unobservable += down.sent
    else:
        pytest.fail(f"the observer never rejoined first\n{report}")
    eventually(lambda: {BOT, PUPPET} <= world.bob.c.names(CHANNEL), 60,
               "the bot and alice's puppet to rejoin", interval=0.5)
    later = MatrixTalker(world.alice, world.room, tag_m, 10, first=1000).start().join()
    m_sent += later.sent
    i_sent += IrcTalker(world.bob.c, CHANNEL, tag_i, 10, first=1000).start().join().sent
    # What was said while the bridge was back before Bob may be missing from what he saw
    # (if it went out before he joined), but must not come twice or out of order: it may
    # also reach him, when the bridge's first link after the restart dropped before it
    # sent them (seen on InspIRCd, which resets the first connections while it starts).
    observable = [n for n in m_sent if n not in unobservable]
    wait_all(world, tag_m, observable, tag_i, i_sent, 60)
    sent_to_irc = m2i(world, tag_m, m_sent)
    sent_to_irc.may_miss = unobservable
    assert_clean(report, sent_to_irc, i2m(world, tag_i, i_sent))


# ------------------------------------------------------------------------------- (3)
needs_postgres = pytest.mark.skipif(
    not os.environ.get(TEST_DB_ENV),
    reason=f"PostgreSQL faults need {TEST_DB_ENV} (the bridge runs on SQLite here)")
# A restart of PostgreSQL breaks every other run that uses the same server at that moment
# (CI's lanes side by side: a bridge of another lane failed to start, an alias query of
# another lane got a closed connection). Where runs share it, .ci/run sets this and runs
# the restart tests alone once the lanes are done.
PG_SHARED_ENV = "IRCBRIDGE_TEST_PG_SHARED"
restarts_postgres = pytest.mark.skipif(
    bool(os.environ.get(PG_SHARED_ENV)),
    reason=f"other test runs share this PostgreSQL ({PG_SHARED_ENV} is set): its restart "
           "tests run alone, after them")


def _pg_version() -> str:
    return sorted(os.listdir("/etc/postgresql"), key=lambda v: float(v))[-1]


def _restart_postgres() -> None:
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", _pg_version(), "main",
                    "restart"], check=True, timeout=120, capture_output=True)
    wait_until(lambda: subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", "5432"],
                                      capture_output=True).returncode == 0,
               60, interval=0.1, what="PostgreSQL to accept connections")


@needs_postgres
@restarts_postgres
def test_postgres_restart_during_traffic_loses_and_repeats_nothing(ready: World) -> None:
    world, report = ready, Report()
    tag_m, tag_i = "pg-m2i", "pg-i2m"
    talker = MatrixTalker(world.alice, world.room, tag_m, 60, interval=0.05).start()
    irc = IrcTalker(world.bob.c, CHANNEL, tag_i, 60, interval=0.05).start()
    eventually(lambda: len(m2i(world, tag_m, talker.sent).got) >= 10, 30,
               "traffic to flow", tick=world.bob.pump)
    started = time.monotonic()
    _restart_postgres()
    report.add(f"PostgreSQL restarted in {elapsed(started)} s")
    talker.join()
    irc.join()
    wait_all(world, tag_m, talker.sent, tag_i, irc.sent, 90)
    assert_clean(report, m2i(world, tag_m, talker.sent), i2m(world, tag_i, irc.sent))


@needs_postgres
@restarts_postgres
def test_after_a_postgres_restart_a_second_bridge_is_still_refused(ready: World) -> None:
    """The single-instance lock is a PostgreSQL advisory lock: it must outlive a restart."""
    report = Report()
    _restart_postgres()
    # The running bridge works again (it reconnects to the database by itself).
    ready.alice.send_text(ready.room, "pglock-m2i 0")
    wait_all(ready, "pglock-m2i", [0], "pglock-none", [], 60)
    assert_refused(ready, second_bridge(ready), report)


# ------------------------------------------------------------------------------- (4)
def _outbox(url: str, tag: str) -> tuple[int, int]:
    """(rows, pending rows) of the outbox whose body is `<tag> <n>`."""
    store = Store(url)
    try:
        with store.db.connection_context():
            rows = OutboxMessage.select().where(OutboxMessage.body.startswith(tag + " "))
            return rows.count(), rows.where(OutboxMessage.state == PENDING).count()
    finally:
        store.close()


def test_sigkill_mid_traffic_resumes_from_the_durable_queues(ready: World) -> None:
    """Killed with SIGKILL while both directions are busy, then started again: Matrix -> IRC
    resumes from the inbox (Synapse's retried transactions are not relayed twice) and the
    IRC lines already in the outbox are sent once."""
    world, report = ready, Report()
    tag_m, tag_i = "kill-m2i", "kill-i2m"
    db_url = world.stack.database_url
    talker = MatrixTalker(world.alice, world.room, tag_m, 60, interval=0.03).start()
    eventually(lambda: len(m2i(world, tag_m, talker.sent).got) >= 10, 30,
               "Matrix -> IRC traffic to flow", tick=world.bob.pump)
    burst = list(range(150))
    assert world.bob.c.sock is not None
    world.bob.c.sock.sendall(b"".join(f"PRIVMSG {CHANNEL} :{tag_i} {n}\r\n".encode()
                                      for n in burst))
    eventually(lambda: _outbox(db_url, tag_i)[0] >= len(burst), 30,
               "the IRC burst to be in the outbox", interval=0.02)
    rows, pending = _outbox(db_url, tag_i)
    arrived = len(set(m2i(world, tag_m, talker.sent).got))
    kill_bridge(world.stack.bridge)
    report.add(f"killed with {pending} of {rows} IRC lines pending in the outbox, "
               f"{arrived} Matrix lines relayed, {len(talker.sent)} sent so far")
    started = time.monotonic()
    world.stack.bridge.start()
    report.add(f"bridge back in {elapsed(started)} s")
    talker.join()
    wait_all(world, tag_m, talker.sent, tag_i, burst, 90)
    assert_clean(report, m2i(world, tag_m, talker.sent), i2m(world, tag_i, burst))
    assert _outbox(db_url, tag_i)[1] == 0


def test_sigkill_before_the_inbox_is_marked_does_not_resend_delivered_lines(
    ready: World
) -> None:
    """Lines already written to IRC whose inbox rows were not yet marked done when the
    process died (the database was slow to commit) are not sent a second time."""
    world, report = ready, Report()
    tag = "slowdb-m2i"
    hs_token = load(world.stack.config_path).appservice.hs_token
    events = [{"event_id": f"$slowdb-{n}-{time.monotonic_ns()}", "room_id": world.room,
               "sender": world.alice.user_id, "type": "m.room.message",
               "origin_server_ts": int(time.time() * 1000),
               "content": {"msgtype": "m.text", "body": f"{tag} {n}"}} for n in range(20)]
    r = requests.put(f"{world.stack.bridge.url}/_matrix/app/v1/transactions/slowdb-1",
                     json={"events": events}, timeout=30,
                     headers={"Authorization": f"Bearer {hs_token}"})
    assert r.status_code == 200, r.text
    with WriteLock(world.stack.database_url, "inbox_event"):
        eventually(lambda: len(set(seqs_in(world.bob.channel_texts(), tag))) == 20, 10,
                   "the lines on IRC while the database is locked", interval=0.05)
        kill_bridge(world.stack.bridge)
    world.stack.bridge.start()
    settle(world, tag)
    assert_clean(report, Tally(f"Matrix -> IRC [{tag}]", list(range(20)),
                               seqs_in(world.bob.channel_texts(), tag)))


# ------------------------------------------------------------------------------- (1)
def _inbox(url: str, tag: str) -> int:
    """How many inbox rows (events the homeserver handed over) carry a `<tag> <n>` body."""
    store = Store(url)
    try:
        with store.db.connection_context():
            return InboxEvent.select().where(
                InboxEvent.payload.contains(f'"body": "{tag} ')).count()
    finally:
        store.close()


OUTAGE_S = 30.0


def test_homeserver_stops_for_30s_during_traffic(ready: World) -> None:
    """Synapse is gone for 30 s while IRC keeps talking: every IRC line arrives once and in
    order when it is back; what Matrix users said before the stop reaches IRC once."""
    world, report = ready, Report()
    tag_m, tag_i = "hs-m2i", "hs-i2m"
    m_sent = MatrixTalker(world.alice, world.room, tag_m, 20).start().join().sent
    i_sent = IrcTalker(world.bob.c, CHANNEL, tag_i, 10).start().join().sent
    # Synapse forgets a transaction it was pushing when it stops: it resends it only after
    # the next failed push, minutes later and after newer ones (seen with Synapse 1.163).
    # That is the homeserver's loss; the bridge answers for what it was handed.
    eventually(lambda: _inbox(world.stack.database_url, tag_m) >= len(m_sent), 30,
               "the bridge to store the Matrix messages sent before the stop", interval=0.05)
    world.stack.synapse.stop()
    stopped = time.monotonic()
    seq = len(i_sent)
    while time.monotonic() - stopped < OUTAGE_S:  # the deliberate outage: a line every 0.5 s
        world.bob.c.privmsg(CHANNEL, f"{tag_i} {seq}")
        i_sent.append(seq)
        seq += 1
        world.bob.pump()
        time.sleep(0.5)
    world.stack.synapse.start()
    report.add(f"Synapse was down {elapsed(stopped)} s; {len(i_sent)} IRC lines said")
    back = time.monotonic()
    i_sent += IrcTalker(world.bob.c, CHANNEL, tag_i, 10, first=seq).start().join().sent
    m_sent += MatrixTalker(world.alice, world.room, tag_m, 10, first=100).start().join().sent
    wait_all(world, tag_m, m_sent, tag_i, i_sent, 120)
    report.add(f"caught up {elapsed(back)} s after Synapse was back")
    assert_clean(report, m2i(world, tag_m, m_sent), i2m(world, tag_i, i_sent))


# ------------------------------------------------------------------------------- (5)
def test_sigterm_stops_cleanly_with_quit_and_loses_nothing(ready: World) -> None:
    """SIGTERM: the bot and every puppet QUIT (a raw client in the channel sees it), the
    process exits within 10 s, and what Alice said just before is delivered after restart."""
    world, report = ready, Report()
    tag_m = "term-m2i"
    world.alice.send_text(world.room, f"{tag_m} 0")
    eventually(lambda: f"{tag_m} 0" in world.bob.channel_texts(), 30, "alice's puppet")
    talker = MatrixTalker(world.alice, world.room, tag_m, 30, interval=0.02, first=1).start()
    eventually(lambda: len(m2i(world, tag_m, talker.sent).got) >= 5, 30, "traffic",
               tick=world.bob.pump, interval=0.02)
    mark = len(world.bob.c.history)
    started = time.monotonic()
    code = world.stack.bridge.stop(timeout=10)
    took = time.monotonic() - started
    report.add(f"exit code {code} after {took:.2f} s")
    quits = {}
    eventually(lambda: quits.update({m.nick: m.text for m in world.bob.c.history[mark:]
                                     if m.command == "QUIT"}) or {BOT, PUPPET} <= set(quits),
               10, "QUIT of the bot and the puppet", tick=world.bob.pump)
    report.add(f"QUITs seen: {quits}")
    assert code == 0, str(report)
    assert took < 10, str(report)
    assert all("shutting down" in reason.lower() for reason in quits.values()), quits
    talker.join()
    world.stack.bridge.start()
    sent = [0, *talker.sent]
    wait_all(world, tag_m, sent, "term-none", [], 60)
    assert_clean(report, m2i(world, tag_m, sent))
