"""m2i: Matrix -> IRC. Transactions PUT straight to the bridge's AS API, as Synapse sends them.

One bridged room (made through the real alias query), `senders` Matrix users talking in it;
a plain IRC client in the channel records when each numbered line arrives.

The pusher behaves like Synapse's appservice scheduler: events arrive in a queue at the
offered rate; one transaction is in flight at a time, and each carries every event queued
meanwhile, up to 100. Latency counts from the moment an event entered the queue (for
Synapse: when it was persisted) to its arrival on IRC. Phases:

1. warm-up: one message per sender, so every puppet connects and joins first;
2. paced: 50 events/s, one per transaction: latency without load;
3. steady: 1,000 and 5,000 events/s offered for a few seconds: latency at that load (it
   grows without bound when the rate is above what the bridge sustains);
4. burst: N events queued at once: the sustained events/s, and the latency (which then
   includes the queue).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from common import (
    AsClient,
    BenchStack,
    IrcWatcher,
    Profiler,
    cpu_seconds,
    latency_summary,
    summarize_profile,
    wait_for,
)

CHANNEL = "#bench"
MAX_TXN = 100  # Synapse's MAX_EVENTS_PER_TRANSACTION


def run(workdir: Path, db: str, *, quick: bool, profile: Path | None = None,
        senders: int | None = None, events: int | None = None) -> dict[str, Any]:
    senders = senders or (10 if quick else 50)
    total = events or (3000 if quick else 10000)
    stack = BenchStack(workdir, db=db)
    result: dict[str, Any] = {"senders": senders, "events": total, "max_txn": MAX_TXN}
    watcher: IrcWatcher | None = None
    try:
        stack.start()
        watcher = IrcWatcher(stack.ircd.host, stack.ircd.port, "m2iwatch").connect()
        watcher.join(CHANNEL)
        user = stack.matrix_user("m2iuser")
        room_id = user.join(stack.alias(CHANNEL))
        wait_for(lambda: watcher.join_count(CHANNEL) >= 1, 30, 0.05, "the bot in the channel")
        pusher = stack.as_client()
        ids = [f"@u{i}:localhost" for i in range(senders)]

        # 1. warm-up: every sender's puppet connects and joins.
        watcher.retag("warm")
        started = time.monotonic()
        for chunk in range(0, senders, MAX_TXN):
            pusher.put_transaction([pusher.message(room_id, ids[i], f"warm {i}")
                                    for i in range(chunk, min(senders, chunk + MAX_TXN))])
        wait_for(lambda: watcher.arrived() >= senders, 60 + senders * 0.5, 0.05,
                 f"{senders} warm-up lines on IRC")
        result["warmup_s"] = round(time.monotonic() - started, 2)
        result["puppets_in_channel"] = watcher.join_count(CHANNEL) - 1

        seconds = 2.0 if quick else 4.0
        # 2. paced
        result["paced"] = _phase(pusher, watcher, room_id, ids, "lat", 50, int(50 * seconds))
        # 3. steady
        result["steady"] = [
            _phase(pusher, watcher, room_id, ids, f"st{rate}", rate, int(rate * seconds))
            for rate in (1000, 5000)
        ]
        # 4. burst
        worker = stack.worker_pid()
        cpu_before = cpu_seconds(worker)
        prof = Profiler(worker, profile, duration=120) if profile else None
        if prof:
            prof.__enter__()
        try:
            burst = _phase(pusher, watcher, room_id, ids, "m2i", None, total)
        finally:
            if prof:
                prof.__exit__(None, None, None)
        cpu_used = cpu_seconds(worker) - cpu_before
        burst["bridge_cpu_s"] = round(cpu_used, 2)
        burst["bridge_cpu_ms_per_event"] = round(1000 * cpu_used / max(burst["arrived"], 1), 3)
        result["burst"] = burst
        result["txn_failures"] = len(pusher.errors)
        result["txn_stalled_s"] = round(pusher.stalled_s, 1)
        result["txn_errors"] = sorted({e[:100] for e in pusher.errors})[:5]
        if profile:
            result["profile"] = {"file": profile.name, **summarize_profile(profile)}
        result["rss"] = stack.bridge_rss_kb()
        pusher.close()
        return result
    finally:
        if watcher is not None:
            watcher.close()
        stack.stop()


def _phase(pusher: AsClient, watcher: IrcWatcher, room_id: str, ids: list[str], tag: str,
           rate: float | None, count: int) -> dict[str, Any]:
    """Offer `count` events at `rate` per second (None: all at once), Synapse-style.

    Returns delivery and latency figures. Bounded: the offer takes count/rate seconds plus
    the PUTs; the wait for arrivals stops after 15 s without progress or 300 s in all.
    """
    watcher.retag(tag)
    queued_at: dict[int, float] = {}
    put_times: list[float] = []
    sizes: list[int] = []
    start = time.monotonic()
    next_seq = 0
    for _ in range(count + 1):  # at most one transaction per event
        if next_seq >= count:
            break
        now = time.monotonic()
        due = count if rate is None else min(count, int((now - start) * rate) + 1)
        if due <= next_seq:  # nothing queued yet: wait for the next event to come
            time.sleep(max(0.0, start + next_seq / rate - now))  # type: ignore[operator]
            due = next_seq + 1
        upto = min(due, next_seq + MAX_TXN)
        batch = []
        for seq in range(next_seq, upto):
            # the time the event "was persisted" by the homeserver
            queued_at[seq] = start if rate is None else start + seq / rate
            batch.append(pusher.message(room_id, ids[seq % len(ids)], f"{tag} {seq} x"))
        put_times.append(pusher.put_transaction(batch))
        sizes.append(len(batch))
        next_seq = upto
    offered_s = time.monotonic() - start
    _wait_progress(watcher, count, idle_timeout=15, hard_timeout=300)
    arrived = dict(watcher.arrivals)
    last = max(arrived.values()) if arrived else time.monotonic()
    lat = [arrived[s] - queued_at[s] for s in arrived if s in queued_at]
    return {
        "offered_per_s": rate,
        "events": count,
        "arrived": len(arrived),
        "lost": count - len(arrived),
        "duplicates": watcher.duplicates,
        "events_per_s": round(len(arrived) / max(last - start, 1e-6), 1),
        "accepted_per_s": round(count / max(offered_s, 1e-6), 1),
        "transactions": len(sizes),
        "mean_txn_size": round(sum(sizes) / max(len(sizes), 1), 1),
        "put_ms": latency_summary(put_times),
        **latency_summary(lat),
        # latency of every (count/20)th event, in order: a backlog shows as a ramp
        "series_ms": [round((arrived[s] - queued_at[s]) * 1000, 1) if s in arrived else None
                      for s in range(0, count, max(1, count // 20))],
    }


def _wait_progress(watcher: IrcWatcher, total: int, *, idle_timeout: float,
                   hard_timeout: float) -> None:
    """Wait for `total` arrivals; give up after `idle_timeout` s without any new one."""
    deadline = time.monotonic() + hard_timeout
    seen, last_change = watcher.arrived(), time.monotonic()
    while time.monotonic() < deadline:
        count = watcher.arrived()
        if count >= total:
            return
        if count != seen:
            seen, last_change = count, time.monotonic()
        elif time.monotonic() - last_change > idle_timeout:
            return
        time.sleep(0.02)
