"""IRCv3 batches and CHATHISTORY on the IRC side (bridge.irc.batches, bridge.irc.history).

The pure parts (the batch tracker, the merge of history and live lines, the request line),
then sessions against the scripted loopback server (tests/scripted_irc.py) that answers
CHATHISTORY with the batches a server sends: LATEST for a new portal, AFTER pages for a
catch-up when the bot joins again, FAIL and silence, and netsplit/netjoin batches whose
QUITs are split QUITs whatever their reason.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from bridge.devstack.ports import wait_until
from bridge.irc import history as history_module
from bridge.irc.batches import BatchTracker, batch_type
from bridge.irc.events import IrcKind, IrcMembership, IrcMessage, MembershipChange
from bridge.irc.history import HistoryResult, merge, request_line
from tests.scripted_irc import Client, ScriptedIrcServer
from tests.unit.test_irc_wire import bridge_side, connected, network, registered

CAPS = ["CAP * LS :batch draft/chathistory server-time message-tags"]
OLD = "2020-01-02T03:04:05.006Z"  # years old: a live line this old would take the receive time
OLD_MS = 1577934245006
RECENT_MS = (int(time.time()) - 60) * 1000  # a minute ago: within the live bounds too
RECENT = datetime.fromtimestamp(RECENT_MS / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


# ---------------------------------------------------------------- pure parts
def test_a_batch_opens_collects_and_closes_nested_ones_inside_their_parent() -> None:
    tracker: BatchTracker[str] = BatchTracker()
    assert tracker.command("+a", ["draft/chathistory", "#chan"], {}) is None
    assert tracker.command("+b", ["draft/multiline", "#chan"], {"batch": "a"}) is None
    outer = tracker.of({"batch": "a"})
    inner = tracker.of({"batch": "b"})
    assert outer is not None and inner is not None
    assert (outer.type, outer.params) == ("chathistory", ("#chan",))
    assert tracker.outermost(inner) is outer
    tracker.add(outer, "line 1")
    assert tracker.command("-b", [], {}) is inner
    assert outer.children == [inner]
    assert tracker.command("-a", [], {}) is outer
    assert outer.events == ["line 1"]
    assert tracker.of({"batch": "a"}) is None and tracker.command("-a", [], {}) is None
    assert tracker.command("oops", [], {}) is None and batch_type("NETSPLIT") == "netsplit"


def test_a_server_cannot_grow_the_open_batches_or_a_batch_without_bound() -> None:
    tracker: BatchTracker[int] = BatchTracker(max_open=2, max_events=3)
    for ref in "abc":
        tracker.command("+" + ref, ["netsplit"], {})
    assert set(tracker.open) == {"a", "b"}
    batch = tracker.of({"batch": "a"})
    assert batch is not None
    assert [tracker.add(batch, i) for i in range(4)] == [True, True, True, False]
    assert len(tracker.clear()) == 2 and tracker.open == {}


def _message(text: str, ts: int, msgid: str | None = None) -> IrcMessage:
    return IrcMessage("t", "#chan", "bob", text, IrcKind.PRIVMSG, ts,
                      tags={"msgid": msgid} if msgid else {})


def test_merge_keeps_each_msgid_once_and_orders_by_time_keeping_the_servers_order() -> None:
    history = [_message("one", 10, "m1"), _message("two", 20, "m2"), _message("three", 20, "m3")]
    live = [_message("two again", 20, "m2"), _message("live", 15), _message("four", 30, "m4")]
    assert [m.text for m in merge(history, live)] == ["one", "live", "two", "three", "four"]


def test_the_request_lines() -> None:
    assert request_line("#chan", 50) == "CHATHISTORY LATEST #chan * 50"
    assert request_line("#chan", 9, "msgid=abc") == "CHATHISTORY AFTER #chan msgid=abc 9"


# ---------------------------------------------------------------- scripted sessions
class HistoryServer:
    """Answers CHATHISTORY through `answer(client, words)`, records the requests."""

    def __init__(self, answer: Callable[[Client, list[str]], None],
                 isupport: str = "CHATHISTORY=1000") -> None:
        self.requests: list[str] = []
        self.answer = answer
        self.isupport = isupport
        self.server = ScriptedIrcServer(cap_ls=CAPS, on_line=self._line)

    def _line(self, client: Client, line: str) -> None:
        if line.startswith("CHATHISTORY "):
            self.requests.append(line)
            self.answer(client, line.split(" "))
        elif line.startswith("USER"):
            client.send(f":scripted 005 * {self.isupport} :are supported")


def _history_lines(ref: str, channel: str, lines: list[tuple[str, str, str]]) -> list[str]:
    out = [f":scripted BATCH +{ref} chathistory {channel}"]
    for msgid, when, text in lines:
        out.append(f"@batch={ref};msgid={msgid};time={when} :bob!b@h PRIVMSG {channel} :{text}")
    out.append(f":scripted BATCH -{ref}")
    return out


def _joined(side, server: ScriptedIrcServer, channel: str = "#chan"):  # type: ignore[no-untyped-def]
    net = side.network("t")
    assert net is not None
    registered(server, "tbot")
    bot = side.call_sync(lambda: net.bot)
    connected(side, bot)
    side.call(net.join_bot, channel)
    wait_until(lambda: side.call_sync(lambda: net.bot_in(channel)), 10, what="the bot in")
    return net, bot


def test_latest_brings_the_servers_lines_with_their_old_times_and_the_live_ones_waiting(
) -> None:
    client_box: list[Client] = []

    def answer(client: Client, words: list[str]) -> None:
        client_box.append(client)
        # A live line arrives before the answer: it waits, and is not relayed as live.
        client.send(f"@msgid=live1;time={RECENT} :carol!c@h PRIVMSG #chan :live")
        # The history: an old line, an ACTION, and the live line again (same msgid).
        client.send(f":scripted BATCH +h1 chathistory {words[2]}")
        client.send(f"@batch=h1;msgid=old0;time={OLD} :bob!b@h PRIVMSG #chan :too old")
        client.send("@batch=h1;msgid=j1 :dave!d@h JOIN #chan")  # event-playback: dropped
        client.send(f"@batch=h1;msgid=old1;time={OLD} :bob!b@h PRIVMSG #chan :old line")
        client.send(f"@batch=h1;msgid=old2;time={OLD} :bob!b@h PRIVMSG #chan "
                    ":\x01ACTION waves\x01")
        client.send(f"@batch=h1;msgid=live1;time={RECENT} "
                    ":carol!c@h PRIVMSG #chan :live")
        client.send(":scripted BATCH -h1")

    scripted = HistoryServer(answer)
    results: list[HistoryResult] = []
    done = threading.Event()
    with scripted.server as server, bridge_side(network(server.port)) as (side, listener):
        net, bot = _joined(side, server)
        side.call(net.history.latest, bot, "#chan", 2,
                  lambda r: (results.append(r), done.set()))
        assert done.wait(10)
        # Twice as many asked for (a server's JOINs count); the newest 2 history lines kept.
        assert scripted.requests == ["CHATHISTORY LATEST #chan * 4"]
        assert listener.of("irc_message") == []  # nothing of it came as live lines
        anchor = side.call_sync(lambda: net.history.anchors.get("#chan"))
    [result] = results
    assert result.complete and result.from_server == 2
    assert [(m.nick, m.text, m.kind, m.ts) for m in result.messages] == [
        ("bob", "waves", IrcKind.ACTION, OLD_MS), ("carol", "live", IrcKind.PRIVMSG, RECENT_MS)]
    assert anchor == "live1"


def test_a_catch_up_asks_after_the_anchor_page_by_page_while_pages_are_full() -> None:
    pages = {"msgid=a0": [("a1", OLD, "one"), ("a2", OLD, "two")],
             "msgid=a2": [("a3", OLD, "three"), ("a4", OLD, "four")],
             "msgid=a4": [("a5", OLD, "five")]}

    def answer(client: Client, words: list[str]) -> None:
        for line in _history_lines(f"p{len(scripted.requests)}", words[2], pages[words[3]]):
            client.send(line)

    scripted = HistoryServer(answer, isupport="CHATHISTORY=2")
    results: list[HistoryResult] = []
    with scripted.server as server, bridge_side(network(server.port)) as (side, _listener):
        net, bot = _joined(side, server)
        client = registered(server, "tbot")

        def on_join(channel: str) -> None:
            net.history.catch_up(net.bot, channel, results.append)

        side.call_sync(lambda: net.history.remember({"#CHAN": "a0"}))
        side.call_sync(lambda: setattr(net.history, "on_bot_join", on_join))
        client.send(":tbot!u@scripted JOIN #chan")  # the bot is back (a rejoin)
        wait_until(lambda: results, 10, what="the catch-up")
        assert scripted.requests == ["CHATHISTORY AFTER #chan msgid=a0 2",
                                     "CHATHISTORY AFTER #chan msgid=a2 2",
                                     "CHATHISTORY AFTER #chan msgid=a4 2"]
        assert side.call_sync(lambda: net.history.anchors["#chan"]) == "a5"
    assert [m.text for m in results[0].messages] == ["one", "two", "three", "four", "five"]


def test_without_an_anchor_there_is_no_catch_up_and_without_the_caps_no_request() -> None:
    with ScriptedIrcServer() as server, bridge_side(network(server.port)) as (side, _):
        net, bot = _joined(side, server)
        got: list[HistoryResult] = []
        assert side.call_sync(net.history.catch_up, bot, "#chan", got.append) is False
        side.call_sync(net.history.latest, bot, "#chan", 5, got.append)
        assert [(r.complete, r.reason) for r in got] == [
            (False, "the server does not offer draft/chathistory batch")]
        assert not any(line.startswith("CHATHISTORY") for line in registered(server, "tbot")
                       .lines())


def test_a_fail_or_no_answer_ends_the_request_with_what_it_has(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(history_module, "ANSWER_WITHIN", 0.5)

    def answer(client: Client, words: list[str]) -> None:
        client.send(f"@msgid=l{len(scripted.requests)} :carol!c@h PRIVMSG {words[2]} "
                    ":said meanwhile")
        if words[2] == "#chan":
            client.send(":scripted FAIL CHATHISTORY MESSAGE_ERROR LATEST #chan :no history")

    scripted = HistoryServer(answer)
    results: list[HistoryResult] = []
    with scripted.server as server, bridge_side(network(server.port)) as (side, listener):
        net, bot = _joined(side, server)
        side.call(net.join_bot, "#quiet")
        wait_until(lambda: side.call_sync(lambda: net.bot_in("#quiet")), 10, what="#quiet")
        side.call(net.history.latest, bot, "#chan", 5, results.append)
        wait_until(lambda: results, 10, what="the FAIL")
        side.call(net.history.latest, bot, "#quiet", 5, results.append)
        wait_until(lambda: len(results) == 2, 10, what="the timeout")
        assert listener.of("irc_message") == []
    assert [(r.channel, r.complete, r.from_server) for r in results] == [
        ("#chan", False, 0), ("#quiet", False, 0)]
    assert "MESSAGE_ERROR" in results[0].reason and results[1].reason == \
        "no answer from the server"
    assert [[m.text for m in r.messages] for r in results] == [["said meanwhile"]] * 2


def test_the_quits_of_a_netsplit_batch_are_split_quits_whatever_their_reason() -> None:
    with ScriptedIrcServer(cap_ls=CAPS) as server, \
            bridge_side(network(server.port, netsplit_leave_after=60.0)) as (side, listener):
        net, _bot = _joined(side, server)
        client = registered(server, "tbot")
        client.send(":scripted 353 tbot = #chan :tbot alice bob carol")
        client.send(":scripted 366 tbot #chan :End of NAMES")
        client.send(":scripted BATCH +s1 netsplit hub.example leaf.example")
        client.send("@batch=s1 :alice!a@h QUIT :*.net *.split")  # no server names
        client.send("@batch=s1 :bob!b@h QUIT :*.net *.split")
        client.send(":scripted BATCH -s1")
        client.send(":carol!c@h QUIT :Quit: bye")  # a plain quit, for the order
        wait_until(lambda: listener.of("irc_membership"), 10, what="carol's quit")
        pending = side.call_sync(lambda: sorted(net.splits.pending))
        assert pending == ["alice", "bob"]
        client.send(":scripted BATCH +j1 netjoin hub.example leaf.example")
        client.send("@batch=j1 :alice!a@h JOIN #chan")
        client.send(":scripted BATCH -j1")
        wait_until(lambda: side.call_sync(lambda: sorted(net.splits.pending)) == ["bob"], 10,
                   what="alice back")
        events = [e for e in listener.of("irc_membership") if isinstance(e, IrcMembership)]
    assert [(e.nick, e.change) for e in events] == [
        ("carol", MembershipChange.QUIT), ("alice", MembershipChange.JOIN)]


def test_a_history_batch_nobody_asked_for_is_a_replay_for_the_core() -> None:
    """InspIRCd's chanhistory replays a +H channel's lines on JOIN, unasked."""
    with ScriptedIrcServer(cap_ls=CAPS) as server, bridge_side(network(server.port)) as (
            side, listener):
        net, _bot = _joined(side, server)
        replays: list[HistoryResult] = []
        side.call_sync(lambda: setattr(net.history, "on_replay", replays.append))
        client = registered(server, "tbot")
        for raw in _history_lines("r1", "#chan", [("r1", OLD, "replayed")]):
            client.send(raw)
        wait_until(lambda: replays, 10, what="the replay")
        assert listener.of("irc_message") == []
        assert side.call_sync(lambda: net.history.anchors["#chan"]) == "r1"
    assert [(r.channel, [m.text for m in r.messages], r.from_server) for r in replays] == [
        ("#chan", ["replayed"], 1)]
