"""i2m: IRC -> Matrix, against the homeserver's own ceiling measured in the same run.

Rooms: `ROOMS` portal rooms (made through the real alias query). The bridge sends each room's
lines from one of its `senders` threads (a room always maps to the same thread, to keep its
order), so the rooms are picked to land on distinct sender threads where possible: the bridge
then has the same concurrency as the ceiling client (one thread per room, different rooms).

Phases, each run first through the bridge and then straight to Synapse:

1. burst: N lines, N/ROOMS per room, said at once by one plain IRC client per channel; the
   ceiling client sends the same N messages from ROOMS threads (one room each) with the
   as_token as the same virtual users, once before and once after the bridge's run (the
   ceiling is their mean: Synapse gets slower as the rooms grow). Figures: lines/s,
   p50/p99 latency, ratio.
2. paced: single room, a line through the bridge and a message straight to Synapse in turn,
   each every 100 ms. Figures: p50/p99 latency of each and the bridge-added p50 (bridge p50
   minus ceiling p50).

Arrival is the homeserver's creation time of the event (read with /messages as the time of
the answer minus `unsigned.age`), so how often the bench reads does not add latency.
"""

from __future__ import annotations

import threading
import time
import zlib
from pathlib import Path
from typing import Any

from common import (
    BenchStack,
    IrcSpeaker,
    IrcWatcher,
    Profiler,
    RoomReader,
    cpu_seconds,
    latency_summary,
    q,
    summarize_profile,
)

from bridge.devstack.clients import MatrixClient

ROOMS = 4
SENDERS = 4  # the bridge's [appservice] senders (default)


def run(workdir: Path, db: str, *, quick: bool, profile: Path | None = None,
        lines: int | None = None) -> dict[str, Any]:
    total = lines or (120 if quick else 1000)
    paced = 30 if quick else 100
    total -= total % ROOMS
    stack = BenchStack(workdir, db=db, appservice={"senders": str(SENDERS)})
    result: dict[str, Any] = {"lines": total, "rooms": ROOMS, "bridge_senders": SENDERS,
                              "ceiling_threads": ROOMS, "layout": "one room per thread"}
    speakers: list[IrcSpeaker] = []
    watcher: IrcWatcher | None = None
    try:
        stack.start()
        user = stack.matrix_user("i2mreader")
        rooms = _pick_rooms(stack, user)
        result["sender_threads_hit"] = len({_sender_of(r) for _c, r in rooms})
        channels = [c for c, _r in rooms]
        watcher = IrcWatcher(stack.ircd.host, stack.ircd.port, "i2mwatch").connect()
        for channel in channels:
            watcher.join(channel)
        for i in range(ROOMS):
            speaker = IrcSpeaker(stack.ircd.host, stack.ircd.port, f"spk{i}").connect()
            speaker.join(channels[i])
            speakers.append(speaker)
        readers = [RoomReader(user, room_id) for _c, room_id in rooms]

        # warm-up: each speaker's ghost is registered and joined.
        for i, speaker in enumerate(speakers):
            speaker.say(channels[i], f"warm {i}")
        _read_until(readers, "warm", [1] * ROOMS, idle_timeout=30, hard_timeout=60)
        ghosts = [stack.ghost(f"spk{i}") for i in range(ROOMS)]
        room_ids = [r for _c, r in rooms]
        hs = [MatrixClient(stack.synapse.url, stack.as_token, ghosts[i]) for i in range(ROOMS)]

        per_room = total // ROOMS
        worker = stack.worker_pid()

        # 1. burst: ceiling, bridge, ceiling again (Synapse slows down as rooms grow, so
        # the ceiling is the mean of the runs on either side of the bridge's).
        result["burst_ceiling_before"] = _ceiling_burst(hs, room_ids, readers, "hsa", per_room)
        # with idle samples: the senders wait on the homeserver and the database, and the
        # split between the two is the question
        prof = Profiler(worker, profile, duration=120 + total * 0.2, idle=True) \
            if profile else None
        if prof:
            prof.__enter__()
        try:
            result["burst_bridge"] = _bridge_burst(speakers, channels, readers, per_room,
                                                   worker)
        finally:
            if prof:
                prof.__exit__(None, None, None)
        result["burst_ceiling_after"] = _ceiling_burst(hs, room_ids, readers, "hsb", per_room)
        before, after = result["burst_ceiling_before"], result["burst_ceiling_after"]
        result["burst_ceiling"] = {
            key: round((before[key] + after[key]) / 2, 2)
            for key in ("lines_per_s", "p50_ms", "p90_ms", "p99_ms", "mean_ms")
            if before.get(key) is not None and after.get(key) is not None
        }
        c = result["burst_ceiling"].get("lines_per_s")
        result["ratio_throughput"] = round(result["burst_bridge"]["lines_per_s"] / c, 3) \
            if c else None

        # 2. paced, one room
        result["paced_bridge"], result["paced_ceiling"] = _paced(
            speakers[0], channels[0], hs[0], room_ids[0], readers[0], paced)
        pb, pc = result["paced_bridge"]["p50_ms"], result["paced_ceiling"]["p50_ms"]
        result["bridge_added_p50_ms"] = round(pb - pc, 2) if pb is not None and pc else None
        if profile:
            result["profile"] = {"file": profile.name, **summarize_profile(profile)}
        result["rss"] = stack.bridge_rss_kb()
        for client in hs:
            client.close()
        return result
    finally:
        for speaker in speakers:
            speaker.close()
        if watcher is not None:
            watcher.close()
        stack.stop()


def _bridge_burst(speakers: list[IrcSpeaker], channels: list[str], readers: list[RoomReader],
                  per_room: int, worker: int) -> dict[str, Any]:
    """Each speaker says `per_room` lines at once in its channel; read until all arrived."""
    total = per_room * len(speakers)
    cpu_before = cpu_seconds(worker)
    sent: dict[int, float] = {}
    first = time.time()
    for i, speaker in enumerate(speakers):
        seqs = range(i * per_room, (i + 1) * per_room)
        now = time.time()
        sent.update((s, now) for s in seqs)
        speaker.say_many(channels[i], [f"i2m {s} x" for s in seqs])
    _read_until(readers, "i2m", [per_room] * len(readers), idle_timeout=30,
                hard_timeout=60 + total * 0.2)
    figures = _figures(readers, "i2m", sent, first, total)
    figures["bridge_cpu_s"] = round(cpu_seconds(worker) - cpu_before, 2)
    figures["in_order_rooms"] = sum(1 for r in readers if _in_order(r, "i2m"))
    return figures


def _paced(speaker: IrcSpeaker, channel: str, hs: MatrixClient, room_id: str,
           reader: RoomReader, count: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """A line through the bridge and a message straight to Synapse in turn, 50 ms apart,
    so both see the same homeserver; returns (bridge figures, ceiling figures)."""
    sent_bridge: dict[int, float] = {}
    sent_direct: dict[int, float] = {}
    for seq in range(count):
        sent_bridge[seq] = time.time()
        speaker.say(channel, f"lat {seq} x")
        time.sleep(0.05)
        _direct(hs, room_id, "hslat", range(seq, seq + 1), sent_direct)
        time.sleep(0.05)
    _read_until([reader], "lat", [count], idle_timeout=15, hard_timeout=60)
    _read_until([reader], "hslat", [count], idle_timeout=15, hard_timeout=60)
    return (_figures([reader], "lat", sent_bridge, min(sent_bridge.values()), count),
            _figures([reader], "hslat", sent_direct, min(sent_direct.values()), count))


def _ceiling_burst(hs: list[MatrixClient], room_ids: list[str], readers: list[RoomReader],
                   tag: str, per_room: int) -> dict[str, Any]:
    """The burst straight to Synapse: one thread per room, `per_room` messages each."""
    sent: dict[int, float] = {}
    first = time.time()
    threads = [
        threading.Thread(target=_direct, args=(hs[i], room_ids[i], tag,
                                               range(i * per_room, (i + 1) * per_room), sent,
                                               first))
        for i in range(len(room_ids))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60 + per_room * 0.5)
    _read_until(readers, tag, [per_room] * len(readers), idle_timeout=30, hard_timeout=60)
    return _figures(readers, tag, sent, first, per_room * len(room_ids))


def _sender_of(room_id: str) -> int:
    """Which sender thread the bridge uses for a room (mirrors bridge/pipeline/outbox.py's
    Senders)."""
    return zlib.crc32(room_id.encode()) % SENDERS


def _pick_rooms(stack: BenchStack, user: MatrixClient, max_rooms: int = 24
                ) -> list[tuple[str, str]]:
    """Make portal rooms until ROOMS of them map to distinct sender threads (bounded)."""
    chosen: dict[int, tuple[str, str]] = {}
    spare: list[tuple[str, str]] = []
    for n in range(max_rooms):
        channel = f"#i2m{n}"
        room_id = user.join(stack.alias(channel))
        index = _sender_of(room_id)
        if index in chosen:
            spare.append((channel, room_id))
        else:
            chosen[index] = (channel, room_id)
        if len(chosen) >= ROOMS:
            break
    picked = list(chosen.values())
    while len(picked) < ROOMS and spare:
        picked.append(spare.pop(0))
    return picked


def _direct(client: MatrixClient, room_id: str, tag: str, seqs: range,
            sent: dict[int, float], offered: float | None = None) -> None:
    """Send numbered messages straight to Synapse as the client's (virtual) user.

    Latency counts from `offered` when given (a burst: every message was there at once, as
    the IRC lines of the bridge's burst), else from each send.
    """
    for seq in seqs:
        now = time.time()
        sent[seq] = offered if offered is not None else now
        txn = f"bench{tag}{seq}-{int(now * 1000)}"
        client.request(
            "PUT", f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/{txn}",
            json={"msgtype": "m.text", "body": f"{tag} {seq} x"},
            params={"user_id": client.user_id, "ts": str(int(now * 1000))},
        )


def _read_until(readers: list[RoomReader], tag: str, wanted: list[int], *,
                idle_timeout: float, hard_timeout: float, interval: float = 0.25) -> None:
    """Read the rooms until each has `wanted` events of `tag` or no progress for a while."""
    deadline = time.monotonic() + hard_timeout
    last_total, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        for reader in readers:
            reader.poll()
        counts = [r.count(tag) for r in readers]
        if all(c >= w for c, w in zip(counts, wanted, strict=True)):
            return
        total = sum(counts)
        if total != last_total:
            last_total, last_change = total, time.monotonic()
        elif time.monotonic() - last_change > idle_timeout:
            return
        time.sleep(interval)


def _figures(readers: list[RoomReader], tag: str, sent: dict[int, float], first: float,
             total: int) -> dict[str, Any]:
    created: dict[int, float] = {}
    for reader in readers:
        created.update(reader.created.get(tag, {}))
    lat = [created[s] - sent[s] for s in created if s in sent]
    last = max(created.values()) if created else first
    span = max(last - first, 1e-6)
    return {
        "arrived": len(created),
        "lost": total - len(created),
        "lines_per_s": round(len(created) / span, 1),
        **latency_summary(lat),
    }


def _in_order(reader: RoomReader, tag: str) -> bool:
    """Did the room's events of `tag` arrive in sequence order?"""
    table = reader.created.get(tag, {})
    by_time = [seq for seq, _t in sorted(table.items(), key=lambda kv: kv[1])]
    return by_time == sorted(by_time)
