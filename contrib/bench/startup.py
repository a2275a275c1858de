"""startup: time from starting `ircbridge run` to /health 200.

First with an empty database (the schema is created), then, after the bridge is stopped,
with `rooms` room links and `users` virtual users inserted directly through the bridge's
peewee models (the room ids need not exist on Synapse). Both starts are timed the same way:
from the process start to the first 200 from /health (polled every 0.1 s by the devstack).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import peewee as pw
from common import BenchStack, Profiler, cpu_seconds, fd_count, summarize_profile


def run(workdir: Path, db: str, *, quick: bool, profile: Path | None = None,
        rooms: int | None = None, users: int | None = None) -> dict[str, Any]:
    rooms = rooms or (2000 if quick else 10000)
    users = users or (10000 if quick else 50000)
    stack = BenchStack(workdir, db=db)
    result: dict[str, Any] = {"rooms": rooms, "virtual_users": users}
    try:
        stack.start_parts()
        started = time.monotonic()
        stack.bridge.start(timeout=120)
        result["empty_ready_s"] = round(time.monotonic() - started, 2)
        result["empty_rss_kb"] = stack.bridge_rss_kb()
        stack.bridge.stop()

        started = time.monotonic()
        seeded = seed(stack.database_url, rooms, users)
        result["seed_s"] = round(time.monotonic() - started, 2)
        result["seeded"] = seeded

        started = time.monotonic()
        stack.bridge.start(timeout=180)
        ready = time.monotonic() - started
        result["seeded_ready_s"] = round(ready, 2)
        worker = stack.worker_pid()
        result["seeded_rss_kb"] = stack.bridge_rss_kb()
        # what the bridge keeps doing after it said it is ready (restoring puppets, ...)
        prof = Profiler(worker, profile, duration=130) if profile else None
        if prof:
            prof.__enter__()
        try:
            busy_s, cpu_s = settle(worker, timeout=120)
        finally:
            if prof:
                prof.__exit__(None, None, None)
        result["busy_after_ready_s"] = round(busy_s, 1)
        result["cpu_after_ready_s"] = round(cpu_s, 2)
        if profile:
            result["profile_after_ready"] = {"file": profile.name,
                                             **summarize_profile(profile)}
        result["fds_after"] = fd_count(worker)
        result["rss_after_kb"] = stack.bridge_rss_kb()
        return result
    finally:
        stack.stop()


def settle(pid: int, *, timeout: float, window: float = 1.0, idle_pct: float = 5.0
           ) -> tuple[float, float]:
    """Seconds until the process used under `idle_pct` % of a core over `window`, and the
    CPU seconds it used until then (bounded by `timeout`)."""
    started = time.monotonic()
    first = cpu_seconds(pid)
    last = first
    for _ in range(int(timeout / window) + 1):
        time.sleep(window)
        now = cpu_seconds(pid)
        if (now - last) / window * 100 < idle_pct:
            return time.monotonic() - started - window, last - first
        last = now
        if time.monotonic() - started > timeout:
            break
    return time.monotonic() - started, last - first


def seed(url: str, rooms: int, users: int) -> dict[str, int]:
    """Insert room links and virtual users with the bridge's own models (bulk, in chunks)."""
    from bridge.store.models import RoomLink, Store, VirtualUser

    store = Store(url)
    try:
        store.open()
        now = int(time.time() * 1000)
        link_rows = [
            _fill(RoomLink, {
                "bridge_id": store.bridge_id, "network": "local", "channel": f"#seed{i}",
                "channel_name": f"#seed{i}",
                "room_id": f"!seedroom{i:06d}", "alias": f"#irc_local_#seed{i}:localhost",
                "kind": "portal", "created_at": now,
            })
            for i in range(rooms)
        ]
        user_rows = [
            _fill(VirtualUser, {
                "bridge_id": store.bridge_id, "user_id": f"@irc_local_seed{i}:localhost",
                "network": "local",
                "nick": f"seed{i}", "displayname": f"seed{i}", "created_at": now,
            })
            for i in range(users)
        ]
        with store.db.connection_context():
            for model, rows in ((RoomLink, link_rows), (VirtualUser, user_rows)):
                with store.db.atomic():
                    for i in range(0, len(rows), 500):
                        model.insert_many(rows[i:i + 500]).execute()
            counts = {"room_links": RoomLink.select().count(),
                      "virtual_users": VirtualUser.select().count()}
        return counts
    finally:
        store.close()


def _fill(model: type[pw.Model], row: dict[str, Any]) -> dict[str, Any]:
    """Keep the row's keys the model has; give required fields it lacks a plain value."""
    fields = model._meta.fields  # type: ignore[attr-defined]
    out = {k: v for k, v in row.items() if k in fields}
    for name, f in fields.items():
        if name in out or f.null or f.default is not None or isinstance(f, pw.AutoField):
            continue
        if isinstance(f, pw.IntegerField | pw.BigIntegerField | pw.SmallIntegerField):
            out[name] = 0
        elif isinstance(f, pw.BooleanField):
            out[name] = False
        else:
            out[name] = ""
    return out
