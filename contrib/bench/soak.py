#!/usr/bin/env python
"""Soak: both directions at a steady rate for a long time, then count what was lost.

    python contrib/bench/soak.py [--minutes 10] [--rate 5] [--db sqlite|postgresql] [--keep]

Starts its own stack (ngircd + Synapse + `ircbridge run`, bridge.devstack) in a temporary
folder. A Matrix user sends `soakm2i <n>` into a bridged room while a plain IRC user says
`soaki2m <n>` in the channel, each `--rate` messages per second. A second IRC client records
what reaches IRC; /messages (never /sync) is read for what reaches Matrix. At the end it
prints, per direction, messages sent, received, lost and duplicated, and the bridge's RSS
(gunicorn master + worker) at start and end. Exit code 1 when anything was lost or
duplicated. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parents[1]))

from common import BenchStack, IrcSpeaker, IrcWatcher, RoomReader, fd_count, wait_for  # noqa: E402

CHANNEL = "#soak"
TAG_M2I = "soakm2i"
TAG_I2M = "soaki2m"


def _matrix_sender(user: Any, room_id: str, rate: float, until: float, sent: list[int],
                   errors: list[str]) -> None:
    """Alice's side: one message every 1/rate s; only accepted sends count as sent."""
    seq, interval = 0, 1.0 / rate
    next_at = time.monotonic()
    while next_at < until:
        try:
            user.send_text(room_id, f"{TAG_M2I} {seq}")
            sent.append(seq)
        except Exception as e:  # noqa: BLE001 - counted, the soak goes on
            errors.append(repr(e)[:200])
        seq += 1
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))


def run(minutes: float, rate: float, db: str, workdir: Path) -> dict[str, Any]:
    stack = BenchStack(workdir, db=db, channels=CHANNEL)
    watcher: IrcWatcher | None = None
    speaker: IrcSpeaker | None = None
    result: dict[str, Any] = {"minutes": minutes, "rate_per_direction": rate, "db": db}
    try:
        stack.start()
        watcher = IrcWatcher(stack.ircd.host, stack.ircd.port, "soakwatch", tag=TAG_M2I)
        watcher.connect()
        watcher.join(CHANNEL)
        speaker = IrcSpeaker(stack.ircd.host, stack.ircd.port, "soakspeak").connect()
        speaker.join(CHANNEL)
        user = stack.matrix_user("soakuser")
        room_id = user.join(stack.alias(CHANNEL))
        reader = RoomReader(user, room_id)
        # Warm-up: the puppet connects and joins, the speaker's virtual user exists.
        user.send_text(room_id, "warm-up")
        wait_for(lambda: watcher.join_count(CHANNEL) >= 2, 60, 0.1, "the bot and the puppet")
        speaker.say(CHANNEL, "warm-up")
        time.sleep(1.0)
        rss_start = stack.bridge_rss_kb()
        fds_start = fd_count(stack.worker_pid())
        print(f"soak: {minutes:g} min at {rate:g} msg/s each way on {db}; "
              f"bridge RSS at start {rss_start['total_kb']} KiB", flush=True)

        started = time.monotonic()
        until = started + minutes * 60.0
        m_sent: list[int] = []
        m_errors: list[str] = []
        matrix_thread = threading.Thread(
            target=_matrix_sender, args=(user, room_id, rate, until, m_sent, m_errors),
            name="soak-matrix", daemon=True)
        matrix_thread.start()
        i_sent: list[int] = []
        seq, interval = 0, 1.0 / rate
        next_at = time.monotonic()
        next_report = started + 30.0
        while next_at < until:
            speaker.say(CHANNEL, f"{TAG_I2M} {seq}")
            i_sent.append(seq)
            seq += 1
            now = time.monotonic()
            if now >= next_report:
                reader.poll()
                print(f"  {now - started:6.0f} s: IRC->Matrix {reader.count(TAG_I2M)}/"
                      f"{len(i_sent)}, Matrix->IRC {watcher.arrived()}/{len(m_sent)}, "
                      f"RSS {stack.bridge_rss_kb()['total_kb']} KiB", flush=True)
                next_report += 30.0
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
        matrix_thread.join(60)

        # Drain: everything sent should arrive within a minute.
        def caught_up() -> bool:
            reader.poll()
            return reader.count(TAG_I2M) >= len(i_sent) and watcher.arrived() >= len(m_sent)

        try:
            wait_for(caught_up, 60, 0.5, "the last messages")
        except TimeoutError:
            pass
        time.sleep(2.0)  # late duplicates
        reader.poll()
        rss_end = stack.bridge_rss_kb()
        i_got = set(reader.created.get(TAG_I2M, {}))
        m_got = set(watcher.arrivals)
        result.update({
            "irc_to_matrix": {"sent": len(i_sent), "received": len(i_got & set(i_sent)),
                              "lost": len(set(i_sent) - i_got),
                              "duplicated": reader.duplicates},
            "matrix_to_irc": {"sent": len(m_sent), "received": len(m_got & set(m_sent)),
                              "lost": len(set(m_sent) - m_got),
                              "duplicated": watcher.duplicates,
                              "refused_by_homeserver": len(m_errors)},
            "rss_kb": {"start": rss_start["total_kb"], "end": rss_end["total_kb"],
                       "worker_start": rss_start["worker_kb"],
                       "worker_end": rss_end["worker_kb"]},
            "fds": {"start": fds_start, "end": fd_count(stack.worker_pid())},
            "seconds": round(time.monotonic() - started, 1),
        })
        return result
    finally:
        for client in (watcher, speaker):
            if client is not None:
                try:
                    client.close()
                except OSError:
                    pass
        stack.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long (default 10)")
    parser.add_argument("--rate", type=float, default=5.0,
                        help="messages per second in each direction (default 5)")
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--json", type=Path, help="also write the result to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    workdir = Path(tempfile.mkdtemp(prefix="ircbridge-soak-"))
    try:
        result = run(args.minutes, args.rate, args.db, workdir)
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    for key, title in (("irc_to_matrix", "IRC -> Matrix"), ("matrix_to_irc", "Matrix -> IRC")):
        d = result[key]
        print(f"{title:14} sent {d['sent']:6}  received {d['received']:6}  "
              f"lost {d['lost']:4}  duplicated {d['duplicated']:4}")
    rss = result["rss_kb"]
    print(f"bridge RSS     start {rss['start']} KiB  end {rss['end']} KiB  "
          f"(worker {rss['worker_start']} -> {rss['worker_end']} KiB); "
          f"open fds {result['fds']['start']} -> {result['fds']['end']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    bad = any(result[k]["lost"] or result[k]["duplicated"]
              for k in ("irc_to_matrix", "matrix_to_irc"))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
