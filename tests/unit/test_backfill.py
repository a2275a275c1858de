"""Server history into rooms (bridge.pipeline.backfill, through the recorder, on a real
temp-file database): a new room's scrollback merged with the server's lines, each once and
in time order; a catch-up stores only what the bridge has not sent, queued or kept."""

from __future__ import annotations

import dataclasses
import threading

from bridge.devstack.ports import wait_until
from bridge.pipeline.backfill import HistoryLines, merge_lines, relayed_msgids
from bridge.pipeline.outbox import RoomCreated
from bridge.rules.ids import EventId, RoomId
from bridge.store.models import IrcLine, Store
from tests.unit.queues import NETWORK, ROOM, irc_line
from tests.unit.test_recorder import Dispatched, outbox_bodies, recorder, scrollback_bodies


def line(body: str, ts: int, msgid: str | None = None, nick: str = "bob") -> IrcLine:
    return dataclasses.replace(irc_line(body, nick=nick), ts=ts, msgid=msgid)


def test_merge_lines_drops_what_was_heard_or_relayed_and_orders_by_time() -> None:
    heard = [line("heard 2", 20, "m2"), line("heard, no msgid", 25)]
    history = [line("one", 10, "m1"), line("two", 20, "m2"), line("relayed", 22, "m9"),
               line("heard, no msgid", 25), line("three", 30, "m3")]
    merged = merge_lines(heard, history, known={"m9"})
    assert [(x.body, x.ts) for x in merged] == [
        ("one", 10), ("heard 2", 20), ("heard, no msgid", 25), ("three", 30)]


def test_relayed_msgids_are_sent_queued_or_kept_ones(store: Store) -> None:
    store.link_msgid(NETWORK, "sent", RoomId(ROOM), EventId("$e"), 1)
    store.queue_lines([line("queued", 2, "queued")], {(NETWORK, "#chan"): ROOM}, {NETWORK: 5})
    store.queue_lines([line("kept", 3, "kept", nick="x")], {}, {NETWORK: 5})
    asked = ["sent", "queued", "kept", "new"]
    assert relayed_msgids(store, NETWORK, asked) == {"sent", "queued", "kept"}
    assert relayed_msgids(store, NETWORK, asked, scrollback=False) == {"sent", "queued"}
    assert relayed_msgids(store, "other", asked) == set()


def test_a_new_room_gets_its_scrollback_and_the_servers_history_once_each_in_time_order(
    store: Store,
) -> None:
    dispatched = Dispatched()
    rec = recorder(store, dispatched, rooms={})
    rec.start()
    rec.put(line("heard a", 200, "a"))
    rec.put(line("heard b", 300, "b"))
    history = (line("before the bot", 100, "h0"), line("heard a", 200, "a"),
               line("between", 250, "h1"), line("heard b", 300, "b"))
    made = RoomCreated(NETWORK, "#chan", RoomId(ROOM), threading.Event(), True, history)
    rec.put(made)
    rec.put(line("live after", 400, "c"))
    assert made.done.wait(10)
    wait_until(lambda: "live after" in dispatched.bodies(), 10, interval=0.01,
               what="the live line")
    rec.stop()
    expected = ["before the bot", "heard a", "between", "heard b", "live after"]
    assert dispatched.bodies() == expected
    assert outbox_bodies(store) == expected and scrollback_bodies(store) == []
    assert [x.msgid for x in dispatched.lines] == ["h0", "a", "h1", "b", "c"]
    assert [x.ts for x in dispatched.lines] == [100, 200, 250, 300, 400]


def test_a_catch_up_stores_only_the_lines_the_bridge_has_not_got(store: Store) -> None:
    dispatched = Dispatched()
    rec = recorder(store, dispatched)
    store.link_msgid(NETWORK, "s1", RoomId(ROOM), EventId("$sent"), 5000)
    # Queued before the stop, not sent yet: pending in the outbox, not in message_id.
    store.queue_lines([line("queued", 5050, "q1")], {(NETWORK, "#chan"): ROOM}, {NETWORK: 5})
    rec.start()
    lines = (line("older than the room's newest", 3999, "o1"),
             line("sent", 5000, "s1"), line("queued", 5050, "q1"),
             line("missed 2", 5300, "m2"), line("missed 1", 4200, "m1"))
    rec.put(HistoryLines(NETWORK, "#chan", lines))
    rec.put(line("live", 5400, "l1"))
    wait_until(lambda: "live" in dispatched.bodies(), 10, interval=0.01, what="the live line")
    rec.stop()
    assert dispatched.bodies() == ["missed 1", "missed 2", "live"]
    assert outbox_bodies(store) == ["queued", "missed 1", "missed 2", "live"]
