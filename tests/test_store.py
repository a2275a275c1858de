"""The store on the configured database (SQLite by default, PostgreSQL in CI's second run)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from bridge import translate
from bridge.store import (
    DONE,
    PENDING,
    IrcLine,
    LockHeld,
    Meta,
    SchemaOutdated,
    Store,
)


def event(n: int, room: str = "!r") -> dict:
    return {"event_id": f"$e{n}", "room_id": room, "type": "m.room.message",
            "sender": "@alice:localhost", "content": {"msgtype": "m.text", "body": f"m{n}"}}


def line(n: int, channel: str = "#matrix", nick: str = "bob") -> IrcLine:
    return IrcLine(network="local", channel=channel, channel_name=channel, nick=nick,
                   sender=f"@irc_local_{nick}:localhost", msgtype="m.text", body=f"line {n}",
                   html=None, ts=1421416883133 + n)


def test_transactions_are_stored_and_deduplicated_by_txn_and_event(store: Store) -> None:
    assert store.record_transaction("1", [event(1), event(2)]) == (False, 2)
    # The homeserver retries the same transaction: a no-op.
    assert store.record_transaction("1", [event(1), event(2)]) == (True, 0)
    # Synapse on SQLite restarts its counter at 1: new events under an old txnId still count,
    # and an event seen before is never queued twice.
    assert store.record_transaction("1", [event(2), event(3)]) == (True, 1)
    pending = store.pending_inbox()
    assert [e["event_id"] for _, e in pending] == ["$e1", "$e2", "$e3"]
    store.mark_inbox([pending[0][0]], DONE)
    assert [e["event_id"] for _, e in store.pending_inbox()] == ["$e2", "$e3"]
    assert store.inbox_depth() == 2


def test_lines_without_a_room_become_bounded_scrollback_then_replay_in_order(store: Store) -> None:
    limits = {"local": 3}
    queued = store.queue_lines([line(i) for i in range(5)], {}, limits)
    assert queued == []
    kept = store.scrollback("local", "#matrix")
    assert [s.body for s in kept] == ["line 2", "line 3", "line 4"]
    replayed = store.replay_scrollback("local", "#matrix", "!room",
                                       lambda nick: f"@irc_local_{nick}:localhost")
    assert [q.body for q in replayed] == ["line 2", "line 3", "line 4"]
    assert [q.ts for q in replayed] == [1421416883135, 1421416883136, 1421416883137]
    assert all(q.room_id == "!room" for q in replayed)
    assert store.scrollback("local", "#matrix") == []
    # Lines for a channel with a room go straight to the outbox.
    live = store.queue_lines([line(9)], {("local", "#matrix"): "!room"}, limits)
    assert [q.body for q in live] == ["line 9"]
    pending = store.pending_outbox()
    assert [q.body for q in pending] == ["line 2", "line 3", "line 4", "line 9"]
    store.outbox_done([(pending[0].id, "$x")])
    assert store.outbox_depth() == 3
    ids = [q.id for q in pending]
    assert ids == sorted(ids) and len(set(ids)) == 4


def test_links_round_trip(store: Store) -> None:
    link = store.add_link("local", "#matrix", "#Matrix", "!abc", "#irc_local_#matrix:localhost")
    assert store.link_for_channel("local", "#matrix") == link
    assert store.link_for_room("!abc").channel_name == "#Matrix"
    # A second add for the same channel keeps the first room.
    assert store.add_link("local", "#matrix", "#matrix", "!other", None).room_id == "!abc"
    assert store.remove_link("!abc") and store.all_links() == []


def test_identity_settings_persist(store: Store) -> None:
    store.set_identity("@alice:localhost", "local", nick="alice[m]", autocmds=["x"])
    store.set_identity("@alice:localhost", "local", quiet=True)
    assert store.identity("@alice:localhost", "local") == {
        "nick": "alice[m]", "autocmds": ["x"], "quiet": True}


def test_txn_prefix_is_stable_per_database(store: Store, db_url: str) -> None:
    first = store.txn_prefix()
    other = Store(db_url)
    assert other.txn_prefix() == first
    other.close()


def test_an_old_schema_is_refused_with_the_command_to_run(store: Store, db_url: str) -> None:
    Meta.update(value="0").where(Meta.key == "schema_version").execute()
    fresh = Store(db_url)
    with pytest.raises(SchemaOutdated, match="ircbridge -c config.ini migrate"):
        fresh.open()
    assert fresh.migrate() == (0, 1)
    fresh.open()
    fresh.close()


def test_a_second_process_cannot_take_the_network_lock(store: Store, db_url: str) -> None:
    store.acquire_network_lock("local")
    code = textwrap.dedent(f"""
        from bridge.store import Store, LockHeld
        s = Store({db_url!r})
        try:
            s.acquire_network_lock("local")
        except LockHeld as e:
            print("HELD:", e)
        else:
            print("TAKEN")
        s.acquire_network_lock("other")
        print("OTHER OK")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HELD: another bridge" in out.stdout, out.stderr
    assert "OTHER OK" in out.stdout
    store.release_locks()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "TAKEN" in out.stdout, out.stderr


def test_lock_held_in_the_same_process_twice_is_refused(store: Store, db_url: str) -> None:
    store.acquire_network_lock("local")
    other = Store(db_url)
    if store.is_sqlite:
        with pytest.raises(LockHeld):
            other.acquire_network_lock("local")
    other.close()
    assert PENDING == 0


def test_find_message_looks_only_in_the_room_asked_about(store: Store) -> None:
    """A reply or edit names an event id; the event of another room (a PM, an admin room)
    must never be found from a bridged channel's room (the class of CVE-2024-32000)."""
    secret = {**event(90, room="!pm"), "origin_server_ts": 1000,
              "content": {"msgtype": "m.text", "body": "my private words"}}
    store.record_transaction("t90", [secret])
    assert store.find_message("$e90", "!channel") is None
    assert store.find_message("$e90", "!pm") == ("matrix", "@alice:localhost",
                                                 "my private words", 1000)
    (queued,) = store.queue_lines([line(91, channel="#other")],
                                  {("local", "#other"): "!other"}, {})
    store.outbox_done([(queued.id, "$irc91")])
    assert store.find_message("$irc91", "!channel") is None
    assert store.find_message("$irc91", "!other") == ("irc", "bob", "line 91", queued.ts)


def test_an_edit_naming_another_rooms_event_reveals_nothing_of_it(store: Store) -> None:
    """The store plus the Matrix -> IRC translation: `s/4711/4712/` would tell the PM's text."""
    secret = {**event(92, room="!pm"), "content": {"msgtype": "m.text",
                                                    "body": "the vault code is 4711"}}
    store.record_transaction("t92", [secret])

    def find(event_id: str) -> translate.Origin | None:
        found = store.find_message(event_id, "!channel")
        return translate.Origin(*found) if found else None

    ctx = translate.Context(budget=400, max_lines=5, find_message=find,
                            nick_for_user=lambda user_id: "alice[m]")
    edit = {"msgtype": "m.text", "body": "* the vault code is 4712",
            "m.new_content": {"msgtype": "m.text", "body": "the vault code is 4712"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": "$e92"}}
    assert translate.to_irc(edit, ctx) == (["* the vault code is 4712"], "m.text")
    reply = {"msgtype": "m.text", "body": "guess what",
             "m.relates_to": {"m.in_reply_to": {"event_id": "$e92"}}}
    assert translate.to_irc(reply, ctx) == (["guess what"], "m.text")
