"""Read-only questions the ops endpoints ask the database: queue depths, ages, links.

Why not Store methods: store.py belongs to the storage work; these are cheap aggregate queries
only the ops views need. They are built from the peewee models but executed on the given
database explicitly (`db.execute(query)`), so they never depend on which Store bound the
models last. A connection this module opens on a thread that had none is closed again (the
separate metrics port serves each scrape on a new thread).

Thread: request threads (the ops endpoints) and the thread serving a /metrics scrape (a
request thread, or a thread of the separate metrics port).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import peewee as pw

from ..store.models import FAILED, PENDING, InboxEvent, OutboxMessage, RoomLink, now_ms

QUEUES: dict[str, type[InboxEvent] | type[OutboxMessage]] = {
    "inbox": InboxEvent, "outbox": OutboxMessage}


@dataclass(frozen=True)
class QueueStats:
    pending: int
    oldest_age_seconds: float  # of the oldest pending row; 0 when empty
    failed: int


@dataclass(frozen=True)
class RoomRow:
    network: str
    channel: str
    room_id: str
    alias: str | None
    kind: str


@contextmanager
def connection(db: pw.Database) -> Iterator[pw.Database]:
    """Use this thread's connection; close it afterwards only if it was opened here."""
    opened = db.is_closed()
    try:
        yield db
    finally:
        if opened and not db.in_transaction():
            db.close()


def ping(db: pw.Database) -> float:
    """Seconds a trivial query took; raises when the database does not answer."""
    started = time.monotonic()
    with connection(db):
        db.execute_sql("SELECT 1").fetchone()
    return time.monotonic() - started


def _mine(model: Any, bridge_id: str | None) -> Any:
    """Rows of one bridge (several may share the database); every row with None."""
    return model.id.is_null(False) if bridge_id is None else model.bridge_id == bridge_id


def queue_stats(db: pw.Database, bridge_id: str | None = None) -> dict[str, QueueStats]:
    """Pending rows and the age of the oldest, per durable queue (`inbox`, `outbox`)."""
    result: dict[str, QueueStats] = {}
    now = now_ms()
    with connection(db):
        for name, model in QUEUES.items():
            query = model.select(
                pw.fn.COUNT(model.id), pw.fn.MIN(model.created_at)
            ).where(_mine(model, bridge_id) & (model.state == PENDING))
            count, oldest = db.execute(query).fetchone()
            failed_query = model.select(pw.fn.COUNT(model.id)).where(
                _mine(model, bridge_id) & (model.state == FAILED)
            )
            (failed,) = db.execute(failed_query).fetchone()
            age = max(0.0, (now - int(oldest)) / 1000.0) if count and oldest is not None else 0.0
            result[name] = QueueStats(int(count or 0), age, int(failed or 0))
    return result


def rooms_by_network(db: pw.Database, bridge_id: str | None = None) -> dict[str, int]:
    with connection(db):
        query = RoomLink.select(RoomLink.network, pw.fn.COUNT(RoomLink.id)).where(
            _mine(RoomLink, bridge_id)).group_by(RoomLink.network)
        return {network: int(count) for network, count in db.execute(query).fetchall()}


def rooms(db: pw.Database, limit: int = 500, bridge_id: str | None = None) -> list[RoomRow]:
    with connection(db):
        query = RoomLink.select(
            RoomLink.network, RoomLink.channel_name, RoomLink.room_id, RoomLink.alias,
            RoomLink.kind,
        ).where(_mine(RoomLink, bridge_id)).order_by(RoomLink.network, RoomLink.channel)
        query = query.limit(limit)
        return [RoomRow(*row) for row in db.execute(query).fetchall()]


def describe_error(e: BaseException) -> str:
    """A short, single-line reason for an admin (no URL, so no password)."""
    text = " ".join(str(e).split())[:200]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def safe(fn: Any, *args: Any, default: Any = None) -> tuple[Any, str | None]:
    """(result, None) or (default, reason): the ops views show what they can."""
    try:
        return fn(*args), None
    except Exception as e:  # noqa: BLE001
        return default, describe_error(e)
