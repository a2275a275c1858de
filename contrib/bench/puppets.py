"""puppets: K Matrix users each get their own IRC connection (a puppet).

Per level K (a fresh stack each): the users' `m.room.member` joins are pushed in transactions
of 100 into bridged rooms, at most `per_room` users per room; a plain IRC client in each
channel counts the puppets' JOINs. Figures: time until every puppet has joined, the bridge's
RSS before and after (gunicorn master + worker; VmRSS), memory per puppet, and a message
relayed through the last puppet (PUT -> seen on IRC), which crosses a channel where every
other puppet of the room receives the line too.
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
        per_room: int | None = None) -> dict[str, Any]:
    counts = counts or ([100] if quick else [100, 1000] + ([5000] if large else []))
    per_room = per_room or 1000
    limits = raise_nofile(max(counts) * 2 + 2048)
    result: dict[str, Any] = {"nofile": list(limits), "per_room": per_room, "levels": []}
    for k in counts:
        level_profile = profile.with_name(f"{profile.stem}-{k}{profile.suffix}") \
            if profile else None
        result["levels"].append(
            _level(workdir / f"k{k}", db, k, per_room, level_profile, quick))
    return result


def _level(workdir: Path, db: str, k: int, per_room: int, profile: Path | None,
           quick: bool) -> dict[str, Any]:
    rooms_needed = max(1, -(-k // per_room))
    stack = BenchStack(workdir, db=db)
    watchers: list[IrcWatcher] = []
    out: dict[str, Any] = {"puppets": k, "rooms": rooms_needed}
    try:
        stack.start()
        user = stack.matrix_user("pupuser")
        channels = [f"#pup{r}" for r in range(rooms_needed)]
        room_ids = []
        for channel in channels:
            watcher = IrcWatcher(stack.ircd.host, stack.ircd.port,
                                 f"pw{len(watchers)}").connect()
            watcher.join(channel)
            watchers.append(watcher)
            room_ids.append(user.join(stack.alias(channel)))
        # The bot joins each channel; so does the reading user's own puppet (the homeserver
        # pushes that user's join to the bridge). Both belong to the baseline.
        for watcher, channel in zip(watchers, channels, strict=True):
            wait_for(lambda w=watcher, c=channel: w.join_count(c) >= 1, 30, 0.05,
                     f"the bot in {channel}")
            try:
                wait_for(lambda w=watcher, c=channel: w.join_count(c) >= 2, 10, 0.05,
                         f"the reader's puppet in {channel}")
            except TimeoutError:
                pass
        time.sleep(1.0)  # let the rooms' own joins settle before the baseline
        for watcher in watchers:
            watcher.reset_joins()
        worker = stack.worker_pid()
        base = stack.bridge_rss_kb()
        base_fds = fd_count(worker)
        out["rss_before_kb"] = base
        pusher = stack.as_client()
        users = [f"@p{i}:localhost" for i in range(k)]
        cpu_before = cpu_seconds(worker)
        prof = Profiler(worker, profile, duration=600) if profile else None
        if prof:
            prof.__enter__()
        try:
            started = time.monotonic()
            for chunk in range(0, k, 100):
                events = [pusher.member_join(room_ids[i // per_room], users[i])
                          for i in range(chunk, min(k, chunk + 100))]
                pusher.put_transaction(events)
            out["push_s"] = round(time.monotonic() - started, 2)

            def joined() -> int:
                return sum(w.join_count() for w in watchers)

            hard = 120 + k * (0.2 if k > 1000 else 0.1)
            _wait_count(joined, k, idle_timeout=60, hard_timeout=hard)
            done = time.monotonic()
            count = joined()
            times = sorted(t for w in watchers for t in w.join_times)
            out["joined"] = count
            out["connect_all_s"] = round((times[-1] if times else done) - started, 2)
            out["connects_per_s"] = round(count / max(out["connect_all_s"], 1e-6), 1)
            if times and count >= 2:
                half = times[min(len(times) - 1, count // 2)]
                out["connect_half_s"] = round(half - started, 2)
        finally:
            if prof:
                prof.__exit__(None, None, None)
        out["bridge_cpu_s"] = round(cpu_seconds(worker) - cpu_before, 2)
        time.sleep(2.0)  # let buffers and late replies settle before reading memory
        after = stack.bridge_rss_kb()
        out["rss_after_kb"] = after
        out["fds"] = fd_count(worker) - base_fds
        delta = after["worker_kb"] - base["worker_kb"]
        out["rss_per_puppet_kb"] = round(delta / max(count, 1), 2)
        # a message through the last puppet
        last = k - 1
        room = room_ids[last // per_room]
        watcher = watchers[last // per_room]
        watcher.retag("last")
        sent = time.monotonic()
        pusher.put_transaction([pusher.message(room, users[last], "last 1 via the last puppet")])
        try:
            wait_for(lambda: watcher.arrived() >= 1, 120, 0.01, "the last puppet's line")
            out["last_puppet_msg_ms"] = round((watcher.arrivals[1] - sent) * 1000, 1)
        except TimeoutError:
            out["last_puppet_msg_ms"] = None
        # a second one, now that nothing else is going on
        watcher.retag("again")
        sent = time.monotonic()
        pusher.put_transaction([pusher.message(room, users[last], "again 1 second line")])
        try:
            wait_for(lambda: watcher.arrived() >= 1, 120, 0.01, "the second line")
            out["last_puppet_msg2_ms"] = round((watcher.arrivals[1] - sent) * 1000, 1)
        except TimeoutError:
            out["last_puppet_msg2_ms"] = None
        if profile:
            out["profile"] = {"file": profile.name, **summarize_profile(profile)}
        pusher.close()
        return out
    finally:
        for watcher in watchers:
            watcher.close()
        stack.stop()


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
