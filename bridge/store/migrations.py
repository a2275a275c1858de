"""Schema upgrades: the `bridge_id` column (version 2), the outbox's kinds and msgids (3).

Schema version 1 had no owner column, so several bridges sharing one PostgreSQL took each
other's queues, links and admin rooms. Version 2 gives every such row the registration id
(`[appservice] id`) of the bridge it belongs to. The upgrade copies each old table aside,
creates the new one (with its new unique keys and indexes) and copies the rows back:
that one path works alike on SQLite and PostgreSQL, whose ALTER TABLE differ.

Who owns an old row: rows with a `network` column go to the bridge that serves that network
(the one whose config.ini runs `ircbridge migrate`); rows of other networks stay unclaimed
(`bridge_id = ''`) until their own bridge runs `migrate` too (`claim`). Rows without a
network (inbox, transactions, admin rooms) go to the bridge that migrates first.

Runs on the thread that calls `Store.migrate` (the `ircbridge migrate` command, or the first
start on an empty database), inside one write transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import peewee as pw

log = logging.getLogger(__name__)

UNCLAIMED = ""


def _columns(db: pw.Database, table: str) -> list[str]:
    return [c.name for c in db.get_columns(table)]


def needs_bridge_id(db: pw.Database, model: type[pw.Model]) -> bool:
    """True for a table made by schema version 1 (it exists and has no bridge_id)."""
    table = model._meta.table_name
    return db.table_exists(table) and "bridge_id" not in _columns(db, table)


def add_bridge_id(db: pw.Database, model: type[pw.Model], bridge_id: str,
                  networks: Iterable[str]) -> int:
    """Rebuild a version-1 table as `model` (which has bridge_id); returns the rows copied."""
    table = model._meta.table_name
    old = f"{table}__v1"
    q = _quote
    db.execute_sql(f"DROP TABLE IF EXISTS {q(old)}")
    db.execute_sql(f"CREATE TABLE {q(old)} AS SELECT * FROM {q(table)}")
    db.execute_sql(f"DROP TABLE {q(table)}")
    db.create_tables([model])
    old_columns = _columns(db, old)
    new_columns = {f.column_name for f in model._meta.sorted_fields}
    copied = [c for c in old_columns if c in new_columns and c != "bridge_id"]
    names = ", ".join(q(c) for c in copied)
    nets = sorted(set(networks))
    params: list[object] = [bridge_id]
    if "network" in old_columns:
        if nets:
            marks = ", ".join(_p(db) for _ in nets)
            owner = f"CASE WHEN {q('network')} IN ({marks}) THEN {_p(db)} ELSE {_p(db)} END"
            params = [*nets, bridge_id, UNCLAIMED]
        else:
            owner = _p(db)
            params = [UNCLAIMED]
    else:
        owner = _p(db)
    db.execute_sql(
        f"INSERT INTO {q(table)} ({names}, {q('bridge_id')}) SELECT {names}, {owner} "
        f"FROM {q(old)}", params)
    (count,) = db.execute_sql(f"SELECT COUNT(*) FROM {q(old)}").fetchone()
    db.execute_sql(f"DROP TABLE {q(old)}")
    if not isinstance(db, pw.SqliteDatabase) and "id" in copied:
        # The copied ids are explicit: move the new table's sequence past them.
        db.execute_sql(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
            f"COALESCE((SELECT MAX(id) FROM {q(table)}), 0) + 1, false)")
    log.info("table %s: %d rows now carry their bridge id", table, count)
    return int(count)


def claim(db: pw.Database, model: type[pw.Model], bridge_id: str,
          networks: Iterable[str]) -> int:
    """Give this bridge the unclaimed rows of its networks (left by another's migration)."""
    nets = sorted(set(networks))
    if not nets or "network" not in model._meta.fields:
        return 0
    field = model._meta.fields
    return int(model.update({field["bridge_id"]: bridge_id}).where(
        (field["bridge_id"] == UNCLAIMED) & (field["network"].in_(nets))).execute())


def unclaimed(model: type[pw.Model], networks: Iterable[str]) -> int:
    """How many rows of these networks no bridge has claimed yet."""
    nets = sorted(set(networks))
    if not nets or "network" not in model._meta.fields:
        return 0
    field = model._meta.fields
    return int(model.select().where(
        (field["bridge_id"] == UNCLAIMED) & (field["network"].in_(nets))).count())


def _quote(name: str) -> str:
    """An identifier quoted for SQLite and PostgreSQL alike (our names have no quotes)."""
    return f'"{name}"'


def _p(db: pw.Database) -> str:
    return "?" if isinstance(db, pw.SqliteDatabase) else "%s"


# Version 3: the outbox says what a row is. Version 2 marked state changes with fake
# msgtypes (`x.join`, `x.power`...) and private lines with placeholder room ids
# (`pm:<owner>:<folded nick>`); version 3 has a `kind` column and a `private_to` column,
# and keeps each IRC line's msgid (`msgid`; the message_id table is new in version 3).
OUTBOX_V3_COLUMNS = {
    "kind": "VARCHAR(16) NOT NULL DEFAULT 'message'",
    "private_to": "VARCHAR(255)",
    "msgid": "VARCHAR(255)",
    "reply_to": "VARCHAR(255)",  # the msgid a line replies to (+draft/reply)
}
SCROLLBACK_V3_COLUMNS = {"msgid": "VARCHAR(255)"}
OLD_PM_PREFIX = "pm:"


def add_columns(db: pw.Database, table: str, columns: dict[str, str]) -> None:
    """Add the columns a table lacks (name -> SQL type); a missing table is left alone."""
    if not db.table_exists(table):
        return
    have = set(_columns(db, table))
    for column, sql_type in columns.items():
        if column not in have:
            db.execute_sql(f"ALTER TABLE {_quote(table)} ADD COLUMN {_quote(column)} {sql_type}")


def add_outbox_kinds(db: pw.Database, table: str = "outbox_message") -> int:
    """Add the version-3 columns where they are missing and move the old markers into them;
    returns the rows rewritten. Safe to run again (it finds nothing left to do)."""
    if not db.table_exists(table):
        return 0
    q = _quote
    add_columns(db, table, OUTBOX_V3_COLUMNS)
    p = _p(db)
    cursor = db.execute_sql(
        f"UPDATE {q(table)} SET {q('kind')} = SUBSTR({q('msgtype')}, 3), {q('msgtype')} = '' "
        f"WHERE {q('msgtype')} LIKE {p}", ["x.%"])
    rewritten = max(0, cursor.rowcount or 0)
    rows = db.execute_sql(
        f"SELECT {q('id')}, {q('room_id')} FROM {q(table)} WHERE {q('room_id')} LIKE {p}",
        [OLD_PM_PREFIX + "%"]).fetchall()
    for row_id, key in rows:
        owner, _, _nick = str(key)[len(OLD_PM_PREFIX):].rpartition(":")
        db.execute_sql(
            f"UPDATE {q(table)} SET {q('private_to')} = {p}, {q('room_id')} = '' "
            f"WHERE {q('id')} = {p}", [owner, row_id])
    rewritten += len(rows)
    if rewritten:
        log.info("table %s: %d rows now say their kind and private conversation", table,
                 rewritten)
    return rewritten
