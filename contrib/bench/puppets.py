"""puppets: K Matrix users each get their own IRC connection (a puppet).

Two layouts, each level on a fresh stack:

- spread (the connection count): K users join bridged rooms of `per_room` users each. The
  rooms are links inserted into the bridge's database before it starts (as in `startup`:
  the room ids need not exist on Synapse, and K/per_room real rooms would cost seconds
  each to create). The users' `m.room.member` joins are pushed in transactions of 100; one
  plain IRC client in every channel counts the puppets' JOINs. Figures: time until every
  puppet has joined, the bridge's RSS before and after (VmRSS of the gunicorn worker; the
  master is listed too), memory per puppet, open descriptors, and a message relayed through
  the last puppet (PUT -> seen on IRC).
- one room (a big channel): K users in one portal room made through the alias query. Every
  puppet's JOIN reaches every other puppet already there, so the IRC lines into the bridge
  grow with K squared; this layout shows what that costs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from common import (
    BenchStack,
    IrcWatcher,
    Profiler,
    cpu_seconds,
    fd_count,
    raise_nofile,
    summarize_profile,
    wait_for,
)


def run(workdir: Path, db: str, *, quick: bool, profile: Path | None = None,
        large: bool = False, counts: list[int] | None = None,
        per_room: int | None = None, one_room: list[int] | None = None) -> dict[str, Any]:
    counts = counts or ([100] if quick else [100, 1000]) + ([5000] if large else [])
    one_room = one_room if one_room is not None else \
        ([100] if quick else [100, 300]) + ([1000] if large else [])
    per_room = per_room or 10
    limits = raise_nofile(max(counts + one_room) * 2 + 2048)
    result: dict[str, Any] = {"nofile": list(limits), "per_room": per_room,
                              "levels": [], "one_room": []}

    def profile_for(tag: str) -> Path | None:
        return profile.with_name(f"{profile.stem}-{tag}{profile.suffix}") if profile else None

    for k in counts:
        result["levels"].append(
            _level(workdir / f"k{k}", db, k, per_room, profile_for(f"{k}"), seeded=True))
    for k in one_room:
        result["one_room"].append(
            _level(workdir / f"one{k}", db, k, k, profile_for(f"one{k}"), seeded=False))
    return result


def seed_links(url: str, rooms: int) -> None:
    """Insert `rooms` links #pupN <-> !pupseedN with the bridge's own models."""
    from startup import _fill

    from bridge.store.models import RoomLink, Store

    store = Store(url)
    try:
        store.open()
        now = int(time.time() * 1000)
        rows = [_fill(RoomLink, {
            "bridge_id": store.bridge_id, "network": "local", "channel": f"#pup{i}",
            "channel_name": f"#pup{i}",
            "room_id": f"!pupseed{i:06d}", "alias": f"#irc_local_#pup{i}:localhost",
            "kind": "portal", "created_at": now,
        }) for i in range(rooms)]
        with store.db.connection_context(), store.db.atomic():
            for i in range(0, len(rows), 500):
                RoomLink.insert_many(rows[i:i + 500]).execute()
    finally:
        store.close()


def _level(workdir: Path, db: str, k: int, per_room: int, profile: Path | None, *,
           seeded: bool) -> dict[str, Any]:
    rooms_needed = max(1, -(-k // per_room))
    stack = BenchStack(workdir, db=db)
    watcher: IrcWatcher | None = None
    out: dict[str, Any] = {"puppets": k, "rooms": rooms_needed,
                           "layout": "seeded links" if seeded else "one portal room"}
    try:
        channels = [f"#pup{r}" for r in range(rooms_needed)]
        if seeded:
            stack.start(before_bridge=lambda s: seed_links(s.database_url, rooms_needed))
        else:
            stack.start()
        watcher = IrcWatcher(stack.ircd.host, stack.ircd.port, "pupwatch").connect()
        for channel in channels:
            watcher.join(channel)
        if seeded:
            room_ids = [f"!pupseed{r:06d}" for r in range(rooms_needed)]
        else:
            room_ids = [_portal(stack, watcher, channels[0])]
        time.sleep(1.0)  # let the start settle before the baseline
        watcher.reset_joins()
        pusher = stack.as_client()
        users = [f"@p{i}:localhost" for i in range(k)]
        # JOIN lines into the bridge grow as k * per_room / 2; give each about 2 us per puppet
        hard = min(600.0 if seeded else 300.0, 120 + k * k * per_room * 1e-6)
        out["deadline_s"] = round(hard)
        out.update(_connect_all(stack, watcher, pusher, room_ids, users, per_room, hard,
                                profile))
        last_room = room_ids[(k - 1) // per_room]
        out["last_puppet_msg_ms"] = _through_last(pusher, watcher, last_room, users[-1], "last")
        out["last_puppet_msg2_ms"] = _through_last(pusher, watcher, last_room, users[-1],
                                                   "again")
        if profile:
            out["profile"] = {"file": profile.name, **summarize_profile(profile)}
        pusher.close()
        return out
    finally:
        if watcher is not None:
            watcher.close()
        stack.stop()


def _portal(stack: BenchStack, watcher: IrcWatcher, channel: str) -> str:
    """A portal room made through the alias query; waits for the bot and the reader's puppet."""
    user = stack.matrix_user("pupuser")
    room_id = user.join(stack.alias(channel))
    wait_for(lambda: watcher.join_count(channel) >= 1, 30, 0.05, "the bot")
    try:  # the reading user's own puppet (the homeserver pushes its join to the bridge)
        wait_for(lambda: watcher.join_count(channel) >= 2, 10, 0.05, "a puppet")
    except TimeoutError:
        pass
    return room_id


def _connect_all(stack: BenchStack, watcher: IrcWatcher, pusher: Any, room_ids: list[str],
                 users: list[str], per_room: int, hard: float, profile: Path | None
                 ) -> dict[str, Any]:
    """Push every user's join; wait until the watcher saw every puppet JOIN (bounded)."""
    k = len(users)
    worker = stack.worker_pid()
    base = stack.bridge_rss_kb()
    base_fds = fd_count(worker)
    out: dict[str, Any] = {"rss_before_kb": base}
    cpu_before = cpu_seconds(worker)
    prof = Profiler(worker, profile, duration=hard + 30) if profile else None
    if prof:
        prof.__enter__()
    try:
        started = time.monotonic()
        for chunk in range(0, k, 100):
            events = [pusher.member_join(room_ids[i // per_room], users[i])
                      for i in range(chunk, min(k, chunk + 100))]
            pusher.put_transaction(events)
        out["push_s"] = round(time.monotonic() - started, 2)
        _wait_count(watcher.join_count, k, idle_timeout=60, hard_timeout=hard)
    finally:
        if prof:
            prof.__exit__(None, None, None)
    count = watcher.join_count()
    times = sorted(watcher.join_times)
    end = times[-1] if times else time.monotonic()
    out["joined"] = count
    out["connect_all_s"] = round(end - started, 2)
    out["connects_per_s"] = round(count / max(end - started, 1e-6), 1)
    if count >= 2:
        out["connect_half_s"] = round(times[count // 2 - 1] - started, 2)
        out["connect_p90_s"] = round(times[int(count * 0.9) - 1] - started, 2)
    out["bridge_cpu_s"] = round(cpu_seconds(worker) - cpu_before, 2)
    time.sleep(2.0)  # let late replies settle before reading memory
    after = stack.bridge_rss_kb()
    out["rss_after_kb"] = after
    out["fds_added"] = fd_count(worker) - base_fds
    out["rss_per_puppet_kb"] = round((after["worker_kb"] - base["worker_kb"]) / max(count, 1),
                                     2)
    return out


def _through_last(pusher: Any, watcher: IrcWatcher, room_id: str, user_id: str, tag: str
                  ) -> float | None:
    """Milliseconds from the PUT of one message by `user_id` to its arrival on IRC."""
    watcher.retag(tag)
    sent = time.monotonic()
    pusher.put_transaction([pusher.message(room_id, user_id, f"{tag} 1 via the last puppet")])
    try:
        wait_for(lambda: watcher.arrived() >= 1, 60, 0.005, f"the {tag} line")
    except TimeoutError:
        return None
    return round((watcher.arrivals[1] - sent) * 1000, 1)


def _wait_count(count: Any, total: int, *, idle_timeout: float, hard_timeout: float) -> None:
    deadline = time.monotonic() + hard_timeout
    seen, last_change = count(), time.monotonic()
    while time.monotonic() < deadline:
        now_count = count()
        if now_count >= total:
            return
        if now_count != seen:
            seen, last_change = now_count, time.monotonic()
        elif time.monotonic() - last_change > idle_timeout:
            return
        time.sleep(0.1)
