"""The store on the configured database (SQLite by default, PostgreSQL in CI's second run)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from bridge.rules import translate
from bridge.store.models import (
    DONE,
    PENDING,
    SCHEMA_VERSION,
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
    assert fresh.migrate() == (0, SCHEMA_VERSION)
    fresh.open()
    fresh.close()


def test_a_second_process_cannot_take_the_network_lock(store: Store, db_url: str) -> None:
    store.acquire_network_lock("local")
    code = textwrap.dedent(f"""
        from bridge.store.models import Store, LockHeld
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


# ------------------------------------------------------------------ several bridges, one database
def test_two_bridges_on_one_database_never_take_each_others_rows(db_url: str) -> None:
    from bridge.store.admin_tables import AdminStore

    alpha = Store(db_url, "alpha-bridge")
    beta = Store(db_url, "beta-bridge", database=alpha.db)
    alpha.open(networks=["alpha"])
    beta.open(networks=["beta"])
    try:
        # An event pushed to both application services (both are in the room), under the
        # same txnId (each application service has its own counter): each queues it.
        assert alpha.record_transaction("1", [event(1)]) == (False, 1)
        assert beta.record_transaction("1", [event(1)]) == (False, 1)
        assert beta.record_transaction("1", [event(1)]) == (True, 0)
        [(a_row, _)] = alpha.pending_inbox()
        [(b_row, _)] = beta.pending_inbox()
        assert a_row != b_row
        alpha.mark_inbox([a_row, b_row], DONE)  # alpha cannot mark beta's row done
        assert alpha.pending_inbox() == [] and alpha.inbox_depth() == 0
        assert [e["event_id"] for _, e in beta.pending_inbox()] == ["$e1"]

        # IRC lines of one bridge are in its outbox only.
        alpha.queue_lines([line(1)], {("local", "#matrix"): "!shared"}, {"local": 5})
        assert [q.body for q in alpha.pending_outbox()] == ["line 1"]
        assert beta.pending_outbox() == [] and beta.outbox_depth() == 0
        beta.queue_lines([line(2, channel="#early")], {}, {"local": 5})
        assert alpha.scrollback("local", "#early") == []
        assert [s.body for s in beta.scrollback("local", "#early")] == ["line 2"]

        # One room linked to a channel of each bridge.
        a_link = alpha.add_link("alpha", "#one", "#One", "!shared", None, kind="plumbed")
        b_link = beta.add_link("beta", "#two", "#Two", "!shared", None, kind="plumbed")
        assert alpha.all_links() == [a_link] and beta.all_links() == [b_link]
        assert alpha.link_for_room("!shared").network == "alpha"
        assert beta.link_for_room("!shared").network == "beta"
        with pytest.raises(ValueError, match="already linked"):
            alpha.add_link("alpha", "#other", "#other", "!shared", None)
        assert beta.remove_link("!shared") and alpha.link_for_room("!shared") == a_link

        # Users, private rooms, message history.
        alpha.set_identity("@alice:localhost", "local", nick="alice[m]")
        assert beta.identity("@alice:localhost", "local") == {}
        alpha.remember_virtual_user("@irc_local_bob:localhost", "local", "bob", "bob")
        assert beta.virtual_user("@irc_local_bob:localhost") is None
        alpha.set_pm_room("local", "@alice:localhost", "bob", "@irc_local_bob:localhost", "!pm")
        assert beta.pm_for_room("!pm") is None and alpha.pm_for_room("!pm") is not None
        [queued] = alpha.pending_outbox()
        alpha.outbox_done([(queued.id, "$from-irc")])
        assert alpha.find_message("$from-irc", "!shared")[0] == "irc"
        assert beta.find_message("$from-irc", "!shared") is None
        assert alpha.find_message("$e1", "!r")[0] == "matrix"
        assert beta.find_message("$e1", "!r") is not None

        # Admin rooms and sealed secrets: a `!storepass` for beta's network never reaches alpha.
        a_admin, b_admin = AdminStore(alpha.db, "alpha-bridge"), AdminStore(beta.db, "beta-bridge")
        a_admin.create_tables(["alpha"])
        b_admin.add_admin_room("!adm", "@alice:localhost")
        b_admin.set_secret("@alice:localhost", "beta", "password", "sealed")
        b_admin.mark_published("!portal", "beta")
        assert a_admin.admin_rooms() == [] and a_admin.secrets() == []
        assert a_admin.published() == set()
        assert b_admin.admin_rooms() == [("!adm", "@alice:localhost")]
        assert b_admin.secret("@alice:localhost", "beta", "password") == "sealed"
    finally:
        alpha.close()
        beta.close()


def _two_bridge_config(folder, db_url: str, bridge_id: str, network: str):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.ini"
    path.write_text(f"""
[homeserver]
url = http://127.0.0.1:8008
domain = localhost
[appservice]
id = {bridge_id}
url = http://127.0.0.1:9999
[database]
url = {db_url}
[network:{network}]
host = 127.0.0.1
tls = false
""", encoding="utf-8")
    return path


def test_migrate_a_version_1_database_that_two_bridges_shared(db_url: str, tmp_path) -> None:
    from bridge.cli.main import main
    from bridge.store.admin_tables import AdminStore
    from tests.schema_v1 import make_v1_database

    make_v1_database(db_url)
    alpha_cfg = _two_bridge_config(tmp_path / "alpha", db_url, "alpha-bridge", "alpha")
    beta_cfg = _two_bridge_config(tmp_path / "beta", db_url, "beta-bridge", "beta")
    first = Store(db_url, "alpha-bridge")
    with pytest.raises(SchemaOutdated, match="migrate"):
        first.open(networks=["alpha"])
    first.close()
    # (Each Store binds the models to its database: the command's Store, then ours again.)
    assert main(["-c", str(alpha_cfg), "migrate"]) == 0
    alpha = Store(db_url, "alpha-bridge")
    try:
        alpha.open(networks=["alpha"])
        assert alpha.schema_version() == SCHEMA_VERSION
        # Alpha's rows, and the rows without a network, are alpha's now.
        assert [lk.room_id for lk in alpha.all_links()] == ["!a"]
        assert alpha.virtual_user("@irc_alpha_bob:localhost").nick == "bob"
        assert alpha.identity("@alice:localhost", "alpha") == {"nick": "alice[m]"}
        assert alpha.identity("@alice:localhost", "beta") == {}
        assert [e["event_id"] for _, e in alpha.pending_inbox()] == ["$in1", "$in2"]
        assert [q.body for q in alpha.pending_outbox()] == ["out 1", "out 2"]
        assert alpha.find_message("$out0", "!a")[2] == "out 0"
        assert alpha.pm_for_room("!pm").nick == "bob"
        assert alpha.record_transaction("7", [{"event_id": f"$in{n}", "room_id": "!a"}
                                              for n in range(3)]) == (True, 0)
        assert alpha.txn_prefix() == "abcdef012345"
        a_admin = AdminStore(alpha.db, "alpha-bridge")
        assert a_admin.admin_rooms() == [("!admin", "@alice:localhost")]
        assert a_admin.published() == {"!a"} and a_admin.secrets() == []
        # New rows get new ids (on PostgreSQL the sequences moved past the copied ones).
        [new] = alpha.queue_lines([line(5)], {("local", "#matrix"): "!a"}, {})
        assert new.id > 4

        # Beta's rows waited for beta's own migrate: until then beta refuses to start.
        beta = Store(db_url, "beta-bridge", database=alpha.db)
        with pytest.raises(SchemaOutdated, match="migrate"):
            beta.open(networks=["beta"])
        assert main(["-c", str(beta_cfg), "migrate"]) == 0
        beta = Store(db_url, "beta-bridge", database=alpha.db)
        beta.open(networks=["beta"])
        assert [(lk.room_id, lk.kind) for lk in beta.all_links()] == [("!b", "plumbed")]
        assert beta.virtual_user("@irc_beta_carol:localhost").nick == "carol"
        assert beta.identity("@alice:localhost", "beta") == {"nick": "al[m]"}
        assert [q.body for q in beta.pending_outbox()] == ["beta out"]
        assert [s.body for s in beta.scrollback("beta", "#b")] == ["early"]
        assert beta.pending_inbox() == []
        b_admin = AdminStore(beta.db, "beta-bridge")
        assert b_admin.secrets() == [("@alice:localhost", "beta", "password", "sealed")]
        assert b_admin.admin_rooms() == []
        # Migrating again changes nothing.
        assert main(["-c", str(alpha_cfg), "migrate"]) == 0
        alpha = Store(db_url, "alpha-bridge", database=beta.db)
        assert [q.body for q in alpha.pending_outbox()] == ["out 1", "out 2", "line 5"]
    finally:
        alpha.close()
        from tests.admin_db import clean

        clean(os.environ.get("IRCBRIDGE_TEST_DATABASE_URL"))


def test_other_bridges_users_are_foreign(db_url: str) -> None:
    from bridge.core.foreign import ForeignUsers

    alpha = Store(db_url, "alpha-bridge")
    beta = Store(db_url, "beta-bridge", database=alpha.db)
    alpha.open()
    try:
        beta.register_bridge("@betabot:localhost", [r"@irc_beta_.+:localhost$"])
        foreign = ForeignUsers(alpha, exclude=[r"@telegram_.*:localhost"])
        for user in ("@betabot:localhost", "@irc_beta_bob:localhost",
                     "@telegram_123:localhost"):
            assert foreign.is_foreign(user), user
        for user in ("@alice:localhost", "@irc_alpha_bob:localhost"):
            assert not foreign.is_foreign(user), user
        assert ForeignUsers(beta).is_foreign("@betabot:localhost") is False  # itself
        # A bridge that registers after the first look is known for the next new user.
        assert not foreign.is_foreign("@irc_gamma_x:localhost")
        Store(db_url, "gamma-bridge", database=alpha.db).register_bridge(
            "@gammabot:localhost", [r"@irc_gamma_.+:localhost$"])
        assert foreign.is_foreign("@gammabot:localhost")
        assert foreign.is_foreign("@irc_gamma_y:localhost")
    finally:
        alpha.close()
        beta.close()


# ------------------------------------------------------------------ durability, retention, indexes
def test_the_sqlite_inbox_commit_survives_power_loss(db_url: str) -> None:
    """synchronous=FULL in WAL mode syncs the WAL at every commit (NORMAL does not)."""
    if not db_url.startswith("sqlite"):
        pytest.skip("PostgreSQL commits are durable (fsync) by default")
    import threading

    seen: list[int] = []
    store = Store(db_url)
    store.open()

    def request_thread() -> None:  # the path of a pushed transaction
        store.record_transaction("1", [event(1)])
        seen.append(store.db.execute_sql("PRAGMA synchronous").fetchone()[0])
        store.close_connection()

    t = threading.Thread(target=request_thread)
    t.start()
    t.join(30)
    store.close()
    assert seen == [2]  # FULL
    fast = Store(db_url, sqlite_synchronous="normal")
    assert fast.db.execute_sql("PRAGMA synchronous").fetchone()[0] == 1
    fast.close()


def test_outcome_marks_leave_the_thread_s_commits_durable(db_url: str) -> None:
    """Outcomes commit without an fsync (a lost mark repeats an event, never loses one);
    the thread's next commits, a pushed transaction's included, are FULL again."""
    if not db_url.startswith("sqlite"):
        pytest.skip("PostgreSQL commits are durable (fsync) by default")
    store = Store(db_url)
    store.open()
    store.record_transaction("1", [event(1), event(2)])
    (first, _), (second, _) = store.pending_inbox()
    store.finish_inbox([first], [second])
    assert store.db.execute_sql("PRAGMA synchronous").fetchone()[0] == 2  # FULL again
    assert store.pending_inbox() == []
    store.close()


def test_old_handled_rows_are_pruned_on_a_timer(store: Store) -> None:
    from bridge.devstack.ports import wait_until
    from bridge.store.models import HsTransaction, InboxEvent, OutboxMessage, now_ms
    from bridge.store.retention import DAY_MS, Pruner

    store.record_transaction("old", [event(1), event(2)])
    store.record_transaction("new", [event(3)])
    store.queue_lines([line(1), line(2)], {("local", "#matrix"): "!r"}, {})
    [(first, _), *_] = store.pending_inbox()
    store.mark_inbox([first], DONE)
    out = store.pending_outbox()
    store.outbox_done([(out[0].id, "$sent")])
    eight_days_ago = now_ms() - 8 * DAY_MS
    InboxEvent.update(created_at=eight_days_ago).where(InboxEvent.event_id != "$e3").execute()
    OutboxMessage.update(created_at=eight_days_ago).execute()
    HsTransaction.update(received_at=eight_days_ago).where(HsTransaction.txn_id == "old").execute()

    pruner = Pruner(store, keep_days=7, every=0.05, first_after=0.0)
    pruner.start()
    try:
        wait_until(lambda: pruner.runs >= 1, 30, what="a pruning run")
    finally:
        pruner.stop()
    # Handled old rows are gone; pending ones (old or not) and recent ones stay.
    assert sorted(e["event_id"] for _, e in store.pending_inbox()) == ["$e2", "$e3"]
    assert InboxEvent.select().where(InboxEvent.event_id == "$e1").count() == 0
    assert [q.body for q in store.pending_outbox()] == ["line 2"]
    assert store.find_message("$sent", "!r") is None
    assert [t.txn_id for t in HsTransaction.select()] == ["new"]


def test_the_bridge_prunes_with_keep_days_from_config(config_path) -> None:
    from bridge.config import ini as config_module
    from bridge.core.bridge import Bridge
    from bridge.store.retention import DAY_MS

    text = config_path.read_text().replace("[database]\n", "[database]\nkeep_days = 3\n")
    config_path.write_text(text)
    config = config_module.load(config_path)
    assert config.database.keep_days == 3
    bridge = Bridge(config)
    try:
        assert bridge.pruner.keep_ms == 3 * DAY_MS
        assert bridge.store.bridge_id == "ircbridge-test"
    finally:
        bridge.store.close()


def test_lookups_by_event_id_and_state_use_indexes(store: Store) -> None:
    indexed = {tuple(ix.columns) for table in ("outbox_message", "inbox_event")
               for ix in store.db.get_indexes(table)}
    assert ("bridge_id", "event_id") in indexed  # replies and edits (find_message)
    assert ("bridge_id", "state", "id") in indexed  # pending rows at start and each poll
    if store.is_sqlite:
        plan = store.db.execute_sql(
            "EXPLAIN QUERY PLAN SELECT * FROM outbox_message WHERE bridge_id = ? "
            "AND event_id = ?", ("x", "$y")).fetchall()
        assert "USING INDEX" in " ".join(str(row[-1]) for row in plan)


def test_room_options_belong_to_one_bridge_and_old_rows_are_kept(store: Store) -> None:
    from bridge.store.room_options import RoomOptions

    # The table as it was first made (no bridge id), with one row.
    store.db.execute_sql("DROP TABLE room_option")
    store.db.execute_sql("CREATE TABLE room_option (room_id VARCHAR(255) NOT NULL PRIMARY KEY, "
                         "mirror_modes BOOLEAN NOT NULL, private BOOLEAN NOT NULL)")
    store.db.execute_sql("INSERT INTO room_option VALUES ('!old', TRUE, FALSE)")
    alpha = RoomOptions(store.db, "alpha-bridge")
    alpha.load()
    assert alpha.mirror_modes("!old")
    beta = RoomOptions(store.db, "beta-bridge")
    beta.load()
    beta.set("!shared", private=True)
    alpha.set("!shared", mirror_modes=True)
    beta.load()
    alpha.load()
    assert not beta.mirror_modes("!old") and beta.private("!shared")
    assert not beta.mirror_modes("!shared")
    assert alpha.mirror_modes("!shared") and not alpha.private("!shared")
    from tests.admin_db import clean

    clean(os.environ.get("IRCBRIDGE_TEST_DATABASE_URL"))


def test_exclude_users_from_config_are_never_puppeted(config_path) -> None:
    from bridge.config import ini as config_module
    from bridge.core.bridge import Bridge

    text = config_path.read_text()
    config_path.write_text(text.replace("[appservice]\n", "[appservice]\nexclude_users = "
                                        "@telegram_.*:localhost\n  @discord_[0-9]+:localhost\n"))
    config = config_module.load(config_path)
    assert config.appservice.exclude_users == ("@telegram_.*:localhost",
                                               "@discord_[0-9]+:localhost")
    bridge = Bridge(config)
    try:
        assert bridge.is_foreign("@telegram_42:localhost")
        assert bridge.is_foreign("@discord_7:localhost")
        assert not bridge.is_foreign("@alice:localhost")
        assert not bridge.is_foreign("@irc_local_bob:localhost")  # ours, not foreign
    finally:
        bridge.store.close()
    config_path.write_text(text.replace("[appservice]\n", "[appservice]\nexclude_users = ([\n"))
    with pytest.raises(config_module.ConfigError, match="exclude_users"):
        config_module.load(config_path)


def test_migrate_creates_every_table_of_the_bridge(db_url: str, tmp_path) -> None:
    """`ircbridge migrate` on an empty database makes the admin rooms', the room options'
    and the media tables too, not only the queues: nothing is left for a later start."""
    from bridge.cli.main import main

    cfg = _two_bridge_config(tmp_path / "alpha", db_url, "alpha-bridge", "alpha")
    assert main(["-c", str(cfg), "migrate"]) == 0
    store = Store(db_url, "alpha-bridge")
    try:
        with store.db.connection_context():
            tables = set(store.db.get_tables())
    finally:
        store.close()
    assert {"admin_room", "user_secret", "published_room", "room_option",
            "media_event", "media_revoked", "outbox_message", "inbox_event"} <= tables


def test_migrate_moves_version_2_markers_into_the_kind_and_private_columns(db_url: str) -> None:
    """A version-2 database held state changes as fake msgtypes (`x.kick` with a JSON body)
    and private lines under placeholder room ids (`pm:<owner>:<nick>`). After `migrate`, the
    pending rows say their kind and their private conversation, and deliver as such."""
    from bridge.store.kinds import Leave, LineKind, decode

    store = Store(db_url)
    store.open()
    db = store.db
    with db.connection_context():
        for column in ("kind", "private_to", "msgid"):
            db.execute_sql(f'ALTER TABLE "outbox_message" DROP COLUMN "{column}"')
        db.execute_sql('ALTER TABLE "scrollback" DROP COLUMN "msgid"')
        mark = "?" if store.is_sqlite else "%s"
        marks = ", ".join([mark] * 11)
        insert = ('INSERT INTO "outbox_message" (bridge_id, room_id, network, sender, nick, '
                  f'msgtype, body, ts, state, attempts, created_at) VALUES ({marks})')
        db.execute_sql(insert, ["ircbridge", "!room:localhost", "local", "@irc_bob:localhost",
                                "bob", "x.kick", '{"by": "op", "reason": "flood"}', 1, PENDING,
                                0, 1])
        db.execute_sql(insert, ["ircbridge", "pm:@alice:localhost:bob", "local",
                                "@irc_bob:localhost", "Bob", "m.text", "psst", 2, PENDING, 0, 2])
        Meta.update(value="2").where(Meta.key == "schema_version").execute()
    store.close()

    store = Store(db_url)
    try:
        with pytest.raises(SchemaOutdated, match="migrate"):
            store.open()
        assert store.migrate() == (2, SCHEMA_VERSION)
        kick, private = store.pending_outbox()
        assert kick.kind is LineKind.KICK and kick.room_id == "!room:localhost"
        assert decode(kick.kind, kick.body) == Leave("flood", by="op")
        assert private.kind is LineKind.MESSAGE and private.msgtype == "m.text"
        assert (private.room_id, private.private_to) == ("", "@alice:localhost")
        assert store.migrate() == (SCHEMA_VERSION, SCHEMA_VERSION)  # nothing left to do
        assert [r.kind for r in store.pending_outbox()] == [LineKind.KICK, LineKind.MESSAGE]
    finally:
        store.close()


def test_state_rows_and_private_lines_keep_their_kind_through_the_outbox(store: Store) -> None:
    """What the core queues is what the senders get back: the kind, its typed payload, and
    the Matrix user of a private line (whose room the sender finds, or makes)."""
    from bridge.store import kinds
    from bridge.store.kinds import LineKind, Power, Sync

    power = IrcLine("local", "#matrix", "#matrix", "op", "@irc_local_op:localhost", "",
                    kinds.encode(Power(50, False)), None, 5, kind=LineKind.POWER)
    sync = IrcLine("local", "#matrix", "#matrix", "", "@ircbot:localhost", "",
                   kinds.encode(Sync(("a", "b"))), None, 6, kind=LineKind.SYNC)
    private = IrcLine("local", "bob", "bob", "Bob", "@irc_local_bob:localhost", "m.text",
                      "hi", None, 7, private_to="@alice:localhost")
    queued = store.queue_lines([power, sync, private], {("local", "#matrix"): "!r"},
                               {"local": 10})
    assert [q.kind for q in queued] == [LineKind.POWER, LineKind.SYNC, LineKind.MESSAGE]
    assert kinds.decode(queued[0].kind, queued[0].body) == Power(50, False)
    assert kinds.decode(queued[1].kind, queued[1].body) == Sync(("a", "b"))
    assert (queued[2].room_id, queued[2].private_to) == ("", "@alice:localhost")
    assert queued[2].lane != queued[0].lane  # a private conversation is a lane of its own
    # State changes of a channel without a room are never kept as scrollback.
    assert store.queue_lines([power], {}, {"local": 10}) == []
    assert store.scrollback("local", "#matrix") == []


def test_msgids_pair_with_their_events_both_ways_and_are_pruned(store: Store) -> None:
    """An IRC msgid names one Matrix event (the first pairing wins); lookups go both ways,
    a backfill learns which msgids it already relayed, a catch-up where to start; old
    pairs go with the queues' pruning."""
    store.link_msgid("local", "m1", "!r", "$e1", 100)
    store.link_msgid("local", "m2", "!r", "$e2", 200)
    store.link_msgid("local", "m1", "!r", "$other", 300)  # a replay of m1: ignored
    store.link_msgid("other", "m1", "!r2", "$x", 50)  # same msgid, another network
    assert store.event_of_msgid("local", "m1") == ("!r", "$e1")
    assert store.event_of_msgid("other", "m1") == ("!r2", "$x")
    assert store.msgid_of_event("local", "$e2") == "m2"
    assert store.msgid_of_event("local", "$x") is None
    assert store.known_msgids("local", ["m1", "m3", "m2"]) == {"m1", "m2"}
    assert store.last_msgid("local", "!r") == ("m2", 200)
    assert store.last_msgid("local", "!nowhere") is None
    assert store.prune(max_age_ms=-1000) >= 3
    assert store.event_of_msgid("local", "m1") is None
