"""m2i: Matrix -> IRC. Transactions PUT straight to the bridge's AS API, as Synapse sends them.

One bridged room (made through the real alias query), `senders` Matrix users talking in it;
a plain IRC client in the channel records when each numbered line arrives. Phases:

1. warm-up: one message per sender, so every puppet connects and joins first;
2. paced: single-event transactions at a light rate: latency without queueing;
3. steady: a fixed offered rate (1,000 and 5,000 events/s) in transactions every 10 ms:
   latency at that load (it grows without bound when the rate is above what the bridge
   sustains);
4. burst: back-to-back transactions of 100 events (one in flight, like Synapse): sustained
   events/s, and latency from the PUT to arrival (which then includes the queue).
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
    latency_summary,
    summarize_profile,
    wait_for,
)

CHANNEL = "#bench"


def run(workdir: Path, db: str, *, quick: bool, profile: Path | None = None,
        senders: int | None = None, events: int | None = None) -> dict[str, Any]:
    senders = senders or (10 if quick else 50)
    total = events or (2000 if quick else 10000)
    paced = 100 if quick else 300
    stack = BenchStack(workdir, db=db)
    result: dict[str, Any] = {"senders": senders, "events": total, "txn_size": 100}
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
        for chunk in range(0, senders, 100):
            pusher.put_transaction([pusher.message(room_id, ids[i], f"warm {i}")
                                    for i in range(chunk, min(senders, chunk + 100))])
        wait_for(lambda: watcher.arrived() >= senders, 60 + senders * 0.5, 0.05,
                 f"{senders} warm-up lines on IRC")
        result["warmup_s"] = round(time.monotonic() - started, 2)
        result["puppets_in_channel"] = watcher.join_count(CHANNEL) - 1

        # 2. paced: one event per transaction, 50 per second.
        watcher.retag("lat")
        put_at: dict[int, float] = {}
        interval = 0.02
        next_at = time.monotonic()
        for seq in range(paced):
            now = time.monotonic()
            if next_at > now:
                time.sleep(next_at - now)
            next_at += interval
            put_at[seq] = time.monotonic()
            pusher.put_transaction([pusher.message(room_id, ids[seq % senders], f"lat {seq}")])
        wait_for(lambda: watcher.arrived() >= paced, 30, 0.05, "paced lines on IRC")
        lat = [watcher.arrivals[s] - put_at[s] for s in put_at if s in watcher.arrivals]
        result["paced"] = {"rate_per_s": 1 / interval, **latency_summary(lat)}

        # 3. steady: a fixed offered rate, transactions every 10 ms (as Synapse batches
        # what queued while the previous transaction was in flight).
        result["steady"] = []
        for rate in (1000, 5000):
            result["steady"].append(
                _steady(pusher, watcher, room_id, ids, rate, 2.0 if quick else 4.0))

        # 4. burst: back-to-back transactions of 100.
        watcher.retag("m2i")
        put_at = {}
        put_times: list[float] = []
        worker = stack.worker_pid()
        cpu_before = cpu_seconds(worker)
        prof = Profiler(worker, profile, duration=120) if profile else None
        if prof:
            prof.__enter__()
        try:
            first = time.monotonic()
            for chunk in range(0, total, 100):
                batch = []
                now = time.monotonic()
                for seq in range(chunk, min(total, chunk + 100)):
                    put_at[seq] = now
                    batch.append(pusher.message(room_id, ids[seq % senders], f"m2i {seq} x"))
                put_times.append(pusher.put_transaction(batch))
            last_put = time.monotonic()
            _wait_progress(watcher, total, idle_timeout=20, hard_timeout=300)
        finally:
            if prof:
                prof.__exit__(None, None, None)
        cpu_used = cpu_seconds(worker) - cpu_before
        arrived = dict(watcher.arrivals)
        last = max(arrived.values()) if arrived else time.monotonic()
        span = max(last - first, 1e-6)
        lat = [arrived[s] - put_at[s] for s in arrived if s in put_at]
        result["burst"] = {
            "arrived": len(arrived),
            "lost": total - len(arrived),
            "duplicates": watcher.duplicates,
            "events_per_s": round(len(arrived) / span, 1),
            "accepted_per_s": round(total / max(last_put - first, 1e-6), 1),
            "put_ms": latency_summary(put_times),
            "txn_failures": len(pusher.errors),
            "txn_stalled_s": round(pusher.stalled_s, 1),
            "txn_errors": sorted(set(e[:80] for e in pusher.errors))[:5],
            "bridge_cpu_s": round(cpu_used, 2),
            "bridge_cpu_ms_per_event": round(1000 * cpu_used / max(len(arrived), 1), 3),
            **latency_summary(lat),
        }
        if profile:
            result["profile"] = {"file": profile.name, **summarize_profile(profile)}
        result["rss"] = stack.bridge_rss_kb()
        pusher.close()
        return result
    finally:
        if watcher is not None:
            watcher.close()
        stack.stop()


def _steady(pusher: Any, watcher: IrcWatcher, room_id: str, ids: list[str], rate: int,
            seconds: float) -> dict[str, Any]:
    """Offer `rate` events/s for `seconds` in transactions every 10 ms; latency at that load."""
    tag = f"st{rate}"
    watcher.retag(tag)
    per_txn = max(1, rate // 100)
    txns = int(seconds * 100)
    put_at: dict[int, float] = {}
    seq = 0
    start = time.monotonic()
    behind = 0
    for n in range(txns):
        due = start + n * 0.01
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        elif now - due > 0.01:
            behind += 1
        batch = []
        stamp = time.monotonic()
        for _ in range(per_txn):
            put_at[seq] = stamp
            batch.append(pusher.message(room_id, ids[seq % len(ids)], f"{tag} {seq} x"))
            seq += 1
        pusher.put_transaction(batch)
    offered_s = time.monotonic() - start
    _wait_progress(watcher, seq, idle_timeout=15, hard_timeout=120)
    arrived = dict(watcher.arrivals)
    lat = [arrived[s] - put_at[s] for s in arrived if s in put_at]
    last = max(arrived.values()) if arrived else time.monotonic()
    return {
        "offered_per_s": rate,
        "achieved_offer_per_s": round(seq / max(offered_s, 1e-6), 1),
        "late_txns": behind,
        "events": seq,
        "arrived": len(arrived),
        "delivered_per_s": round(len(arrived) / max(last - start, 1e-6), 1),
        **latency_summary(lat),
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
        time.sleep(0.05)
