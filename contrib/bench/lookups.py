"""Reply lookup, pruning and inbox commit figures on a big database (prints figures only).

Every Matrix reply or edit looks the replied-to event up (`Store.find_message`: outbox by
event id, then inbox by event id); without an index on `outbox_message.event_id` that is a
scan of the whole table, and the tables grow until `[database] keep_days` prunes them.
This fills the outbox with `--rows` delivered lines (default 1,000,000) and the inbox with a
tenth of that, then measures:

- reply lookup time (median and 95th percentile of `--lookups` random existing and missing
  event ids), with the schema's indexes, and again with the outbox index dropped;
- one pruning pass that deletes half of the rows (the older half);
- inbox commit time of a pushed transaction (one event) with SQLite `synchronous` FULL
  and NORMAL (the `[database] sqlite_synchronous` trade-off; SQLite runs only).

    python contrib/bench/lookups.py [--db-url postgresql://...] [--rows N] [--lookups N]

Without --db-url a temp-file SQLite is used. A PostgreSQL database given here is emptied.
No stack is started: this measures the store alone, on the thread that runs the script.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bridge.store.models import (  # noqa: E402
    DONE,
    MODELS,
    InboxEvent,
    OutboxMessage,
    Store,
    now_ms,
)

BATCH = 2000


def fill(store: Store, rows: int) -> float:
    started = time.perf_counter()
    old = now_ms() - 30 * 86400 * 1000
    mine = store.bridge_id
    with store.db.connection_context():
        for start in range(0, rows, BATCH):
            with store.writing():
                OutboxMessage.insert_many([
                    {"bridge_id": mine, "room_id": f"!room{i % 500}:localhost",
                     "network": "local", "sender": f"@irc_local_u{i % 3000}:localhost",
                     "nick": f"u{i % 3000}", "body": f"line number {i} of the benchmark",
                     "ts": old + i, "state": DONE, "event_id": f"$out{i}",
                     "created_at": old + i * 2}
                    for i in range(start, min(rows, start + BATCH))
                ]).execute()
        for start in range(0, rows // 10, BATCH):
            with store.writing():
                InboxEvent.insert_many([
                    {"bridge_id": mine, "event_id": f"$in{i}",
                     "room_id": f"!room{i % 500}:localhost",
                     "txn_id": str(i // 10), "state": DONE, "created_at": old + i * 20,
                     "payload": json.dumps({"event_id": f"$in{i}", "sender": "@alice:localhost",
                                            "room_id": f"!room{i % 500}:localhost",
                                            "content": {"msgtype": "m.text", "body": f"m {i}"}})}
                    for i in range(start, min(rows // 10, start + BATCH))
                ]).execute()
    return time.perf_counter() - started


def lookups(store: Store, rows: int, count: int) -> dict[str, float]:
    rng = random.Random(7)
    times: list[float] = []
    with store.db.connection_context():
        for k in range(count):
            if k % 3 == 0:
                event_id, room = f"$in{rng.randrange(rows // 10)}", None
            elif k % 3 == 1:
                event_id, room = f"$out{rng.randrange(rows)}", None
            else:
                event_id, room = f"$missing{k}", "!room1:localhost"
            if room is None:
                n = int(event_id[4:] if event_id.startswith("$out") else event_id[3:])
                room = f"!room{n % 500}:localhost"
            started = time.perf_counter()
            store.find_message(event_id, room)
            times.append(time.perf_counter() - started)
    times.sort()
    return {"median_ms": round(statistics.median(times) * 1000, 3),
            "p95_ms": round(times[int(len(times) * 0.95) - 1] * 1000, 3),
            "lookups": count}


def drop_outbox_event_index(store: Store) -> str:
    with store.db.connection_context():
        for index in store.db.get_indexes("outbox_message"):
            if "event_id" in index.columns:
                store.db.execute_sql(f'DROP INDEX "{index.name}"')
                return index.name
    return ""


def commit_times(url: str, synchronous: str, count: int = 200) -> dict[str, float]:
    store = Store(url, sqlite_synchronous=synchronous)
    times: list[float] = []
    with store.db.connection_context():
        for n in range(count):
            event = {"event_id": f"$commit-{synchronous}-{n}", "room_id": "!r:localhost",
                     "type": "m.room.message", "sender": "@alice:localhost",
                     "content": {"msgtype": "m.text", "body": f"commit {n}"}}
            started = time.perf_counter()
            store.record_transaction(f"c-{synchronous}-{n}", [event])
            times.append(time.perf_counter() - started)
    store.close()
    return {"median_ms": round(statistics.median(times) * 1000, 3),
            "p95_ms": round(sorted(times)[int(count * 0.95) - 1] * 1000, 3),
            "commits": count}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db-url", help="PostgreSQL URL (emptied!); default: temp SQLite")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=3000)
    args = parser.parse_args(argv)
    tmp = tempfile.TemporaryDirectory()
    url = args.db_url or f"sqlite:///{Path(tmp.name) / 'bench.db'}"
    store = Store(url)
    with store.db.connection_context():
        store.db.drop_tables(MODELS, safe=True)
    store.open()
    result: dict[str, Any] = {"database": "postgresql" if args.db_url else "sqlite",
                              "outbox_rows": args.rows, "inbox_rows": args.rows // 10}
    result["fill_seconds"] = round(fill(store, args.rows), 1)
    result["reply_lookup_indexed"] = lookups(store, args.rows, args.lookups)
    dropped = drop_outbox_event_index(store)
    result["reply_lookup_without_outbox_event_id_index"] = lookups(
        store, args.rows, max(30, args.lookups // 100))
    result["dropped_index"] = dropped
    started = time.perf_counter()
    with store.db.connection_context():
        gone = store.prune(max_age_ms=now_ms() - (now_ms() - 30 * 86400 * 1000 + args.rows))
    result["prune_half"] = {"rows_deleted": gone,
                            "seconds": round(time.perf_counter() - started, 2)}
    store.close()
    if not args.db_url:
        result["inbox_commit_synchronous_full"] = commit_times(url, "full")
        result["inbox_commit_synchronous_normal"] = commit_times(url, "normal")
    print(json.dumps(result, indent=2))
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
