#!/usr/bin/env python
"""Run the ircbridge benchmarks against a real local stack (ngircd + Synapse + the bridge).

    python contrib/bench/run.py [--db sqlite|postgresql|both] [--only m2i,i2m,...] [--quick]
                                [--large] [--profile] [--keep]

Every scenario starts its own stack (bridge.devstack.stack.Stack) in a temporary folder, so
scenarios do not disturb each other. Each run prints a table per scenario and writes
contrib/bench/results/<scenario>-<db>.json. Not part of the test suite. See
docs/performance.md for what the figures mean and the latest results.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parents[1]))

import common  # noqa: E402
import i2m  # noqa: E402
import m2i  # noqa: E402
import puppets  # noqa: E402
import query  # noqa: E402
import startup  # noqa: E402

SCENARIOS: dict[str, Callable[..., dict[str, Any]]] = {
    "m2i": m2i.run,
    "i2m": i2m.run,
    "puppets": puppets.run,
    "query": query.run,
    "startup": startup.run,
}
ORDER = ("startup", "query", "m2i", "i2m", "puppets")

log = logging.getLogger("bench")


# --------------------------------------------------------------------------- figures

def _get(data: dict[str, Any], path: str) -> Any:
    node: Any = data
    for part in path.split("."):
        if isinstance(node, list):
            try:
                node = node[int(part)]
            except (ValueError, IndexError):
                return None
        elif isinstance(node, dict):
            node = node.get(part)
        else:
            return None
        if node is None:
            return None
    return node


Row = tuple[str, Any, str, bool | None]
Adder = Callable[..., None]


def _m2i_rows(add: Adder, data: dict[str, Any]) -> None:
    add("senders (puppets in the channel)", "senders")
    add("burst: events/s sustained", "burst.events_per_s", ">= 5000", lambda v: v >= 5000)
    add("burst: queued -> IRC p50 ms", "burst.p50_ms")
    add("burst: queued -> IRC p99 ms", "burst.p99_ms")
    add("burst: accepted by the AS API /s", "burst.accepted_per_s")
    add("burst: PUT of 100 events p50 ms", "burst.put_ms.p50_ms")
    add("burst: bridge CPU ms/event", "burst.bridge_cpu_ms_per_event")
    add("burst: lost", "burst.lost")
    add("failed PUTs (retried like Synapse)", "txn_failures")
    for i, rate in enumerate((1000, 5000)):
        add(f"{rate}/s offered: delivered/s", f"steady.{i}.events_per_s")
        if rate == 1000:  # issue 13 item 7: p50 <= 50 ms at 1,000 events/s
            add(f"{rate}/s offered: p50 ms", f"steady.{i}.p50_ms", "<= 50", lambda v: v <= 50)
        else:
            add(f"{rate}/s offered: p50 ms", f"steady.{i}.p50_ms")
        add(f"{rate}/s offered: p99 ms", f"steady.{i}.p99_ms")
        add(f"{rate}/s offered: mean txn size", f"steady.{i}.mean_txn_size")
    add("50/s (no load): p50 ms", "paced.p50_ms", "<= 20", lambda v: v <= 20)
    add("50/s (no load): p99 ms", "paced.p99_ms")
    add("50/s (no load): PUT p50 ms", "paced.put_ms.p50_ms")


def _i2m_rows(add: Adder, data: dict[str, Any]) -> None:
    add("rooms / sender threads used", "sender_threads_hit")
    add("burst bridge: lines/s", "burst_bridge.lines_per_s")
    add("burst ceiling: msgs/s", "burst_ceiling.lines_per_s")
    add("burst: ratio bridge/ceiling", "ratio_throughput", ">= 0.9", lambda v: v >= 0.9)
    add("burst bridge: p50 ms", "burst_bridge.p50_ms")
    add("burst bridge: p99 ms", "burst_bridge.p99_ms")
    add("burst ceiling: p50 ms", "burst_ceiling.p50_ms")
    add("burst ceiling: p99 ms", "burst_ceiling.p99_ms")
    add("burst bridge: lost", "burst_bridge.lost")
    add("burst bridge: rooms in order", "burst_bridge.in_order_rooms")
    add("paced 10/s bridge: p50 ms", "paced_bridge.p50_ms")
    add("paced 10/s bridge: p99 ms", "paced_bridge.p99_ms")
    add("paced 10/s ceiling: p50 ms", "paced_ceiling.p50_ms")
    add("paced 10/s ceiling: p99 ms", "paced_ceiling.p99_ms")
    add("bridge-added p50 ms", "bridge_added_p50_ms", "<= 5", lambda v: v <= 5)


def _puppets_rows(add: Adder, data: dict[str, Any]) -> None:
    for i, level in enumerate(data.get("levels", [])):
        k = level.get("puppets")
        add(f"K={k}: joined", f"levels.{i}.joined", f"= {k}", lambda v, k=k: v >= k)
        add(f"K={k}: time to connect all s", f"levels.{i}.connect_all_s")
        add(f"K={k}: connects/s", f"levels.{i}.connects_per_s")
        add(f"K={k}: worker RSS before KB", f"levels.{i}.rss_before_kb.worker_kb")
        add(f"K={k}: worker RSS after KB", f"levels.{i}.rss_after_kb.worker_kb")
        add(f"K={k}: RSS per puppet KB", f"levels.{i}.rss_per_puppet_kb", "<= 25",
            lambda v: v <= 25)
        add(f"K={k}: bridge CPU s", f"levels.{i}.bridge_cpu_s")
        add(f"K={k}: msg via last puppet ms", f"levels.{i}.last_puppet_msg_ms")
        add(f"K={k}: again, idle ms", f"levels.{i}.last_puppet_msg2_ms")
    for i, level in enumerate(data.get("one_room", [])):
        k = level.get("puppets")
        add(f"one room K={k}: joined", f"one_room.{i}.joined", f"= {k}", lambda v, k=k: v >= k)
        add(f"one room K={k}: time to join all s", f"one_room.{i}.connect_all_s")
        add(f"one room K={k}: bridge CPU s", f"one_room.{i}.bridge_cpu_s")
        add(f"one room K={k}: RSS per puppet KB", f"one_room.{i}.rss_per_puppet_kb")
        add(f"one room K={k}: msg via last puppet ms", f"one_room.{i}.last_puppet_msg_ms")


def _query_rows(add: Adder, data: dict[str, Any]) -> None:
    add("alias query (join) p50 ms", "alias.p50_ms", "<= 1000", lambda v: v <= 1000)
    add("alias query (join) p99 ms", "alias.p99_ms")
    add("alias failures", "alias.failures")
    add("HS createRoom alone p50 ms", "hs_create_room.p50_ms")
    add("user query fresh p50 ms", "user_fresh.p50_ms")
    add("user query fresh p99 ms", "user_fresh.p99_ms")
    add("user query known p50 ms", "user_known.p50_ms")


def _startup_rows(add: Adder, data: dict[str, Any]) -> None:
    add("empty DB: ready s", "empty_ready_s")
    add("rooms / virtual users", "seeded.room_links")
    add("seeded: ready s", "seeded_ready_s", "<= 10", lambda v: v <= 10)
    add("seeded: busy after ready s", "busy_after_ready_s")
    add("seeded: CPU after ready s", "cpu_after_ready_s")
    add("seeded: worker RSS KB", "seeded_rss_kb.worker_kb")
    add("empty: worker RSS KB", "empty_rss_kb.worker_kb")


ROWS: dict[str, Callable[[Adder, dict[str, Any]], None]] = {
    "m2i": _m2i_rows, "i2m": _i2m_rows, "puppets": _puppets_rows, "query": _query_rows,
    "startup": _startup_rows,
}


def rows_for(scenario: str, data: dict[str, Any]) -> list[Row]:
    """(figure, value, target text, met?) rows of one scenario's result."""
    rows: list[Row] = []

    def add(label: str, path: str, target: str = "", ok: Callable[[Any], bool] | None = None
            ) -> None:
        value = _get(data, path)
        met = ok(value) if ok is not None and value is not None else None
        rows.append((label, value, target, met))

    ROWS[scenario](add, data)
    if data.get("error"):
        rows.append(("ERROR", str(data.get("error_summary") or "see the JSON")[:70], "", False))
    return rows


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(scenario: str, results: dict[str, dict[str, Any]]) -> str:
    """One scenario's figures, a column per database."""
    dbs = list(results)
    per_db = {db: rows_for(scenario, data) for db, data in results.items()}
    labels: list[str] = []
    targets: dict[str, str] = {}
    for rows in per_db.values():
        for label, _v, target, _m in rows:
            if label not in labels:
                labels.append(label)
            if target:
                targets[label] = target
    cells = {db: {label: (fmt(v) + ("" if m is None else (" ok" if m else " MISS")))
                  for label, v, _t, m in rows} for db, rows in per_db.items()}
    head = ["figure", *dbs, "target"]
    body = [[label, *[cells[db].get(label, "-") for db in dbs], targets.get(label, "")]
            for label in labels]
    widths = [max(len(str(r[i])) for r in [head, *body]) for i in range(len(head))]
    lines = [f"== {scenario}"]
    lines.append("  ".join(str(h).ljust(w) for h, w in zip(head, widths, strict=True)))
    lines.append("  ".join("-" * w for w in widths))
    for r in body:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))
    return "\n".join(lines)


def markdown(scenario: str, results: dict[str, dict[str, Any]]) -> str:
    """The same table as `table`, as Markdown (for docs/performance.md)."""
    text = table(scenario, results).splitlines()
    head = [c for c in _split_cells(text[1])]
    lines = [f"**{scenario}**", "", "| " + " | ".join(head) + " |",
             "|" + "|".join("---" for _ in head) + "|"]
    widths = [len(c) for c in text[2].split("  ")]
    for row in text[3:]:
        cells, pos = [], 0
        for w in widths:
            cells.append(row[pos:pos + w].strip())
            pos += w + 2
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _split_cells(line: str) -> list[str]:
    return [c.strip() for c in line.split("  ") if c.strip()]


def report(names: list[str], dbs: list[str], suffix: str = "") -> str:
    """Markdown tables from the JSON already in results/ (nothing is run)."""
    parts = []
    for name in names:
        found = {}
        for db in dbs:
            path = common.RESULTS / f"{name}-{db}{suffix}.json"
            if path.exists():
                found[db] = json.loads(path.read_text(encoding="utf-8"))
        if found:
            parts.append(markdown(name, found))
    return "\n\n".join(parts)


# --------------------------------------------------------------------------- running

def suffix_for(args: argparse.Namespace) -> str:
    """What sets a run's results apart in their file names: -quick, -large, -whatif-…,
    -profiled (a plain default run has none)."""
    return ("-quick" if args.quick else "") + ("-large" if args.large else "") \
        + (f"-whatif-{'+'.join(common.WHATIF)}" if common.WHATIF else "") \
        + ("-profiled" if args.profile else "")


def run_one(name: str, db: str, args: argparse.Namespace, base: Path) -> dict[str, Any]:
    """Run one scenario on one database in its own folder; never raises."""
    workdir = Path(tempfile.mkdtemp(prefix=f"{name}-{db}-", dir=base))
    stem = f"{name}-{db}" + suffix_for(args)
    profile = common.RESULTS / f"{stem}.pyspy.txt" if args.profile else None
    kwargs: dict[str, Any] = {"quick": args.quick, "profile": profile}
    if name == "puppets":
        kwargs["large"] = args.large
        if args.puppets:
            kwargs["counts"] = [int(x) for x in args.puppets.split(",")]
        if args.per_room:
            kwargs["per_room"] = args.per_room
    started = time.monotonic()
    meta = {
        "scenario": name, "db": db, "quick": args.quick, "large": args.large,
        "profiled": bool(args.profile), "whatif": list(common.WHATIF),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "revision": common.git_revision(), "cpus": os.cpu_count(),
        "python": platform.python_version(), "machine": platform.machine(),
    }
    meta["loadavg_before"] = common.loadavg()
    meta["other_processes_before"] = common.foreign_load({os.getpid()}, str(base))
    busy0, total0 = common.system_cpu()
    try:
        data = SCENARIOS[name](workdir, db, **kwargs)
    except Exception as e:  # noqa: BLE001 - one scenario's failure must not stop the others
        log.error("%s on %s failed: %s", name, db, e)
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        data = {"error": traceback.format_exc(), "error_summary": f"{type(e).__name__}: {first}"}
        log_path = workdir / "bridge" / "bridge.log"
        if log_path.exists():
            data["bridge_log_tail"] = common.tail_text(log_path, 40)
    meta["seconds"] = round(time.monotonic() - started, 1)
    busy1, total1 = common.system_cpu()
    # both cores busy = 100 %: how loaded the machine was while this scenario ran
    meta["machine_busy_pct"] = round(100 * (busy1 - busy0) / max(total1 - total0, 1), 1)
    meta["loadavg_after"] = common.loadavg()
    meta["other_processes_after"] = common.foreign_load({os.getpid()}, str(base))
    data = {"meta": meta, **data}
    common.RESULTS.mkdir(parents=True, exist_ok=True)
    out = common.RESULTS / f"{stem}.json"
    out.write_text(json.dumps(data, indent=1, default=str) + "\n", encoding="utf-8")
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--only", default=",".join(ORDER),
                        help=f"comma-separated scenarios (default: all: {','.join(ORDER)})")
    parser.add_argument("--quick", action="store_true", help="smaller runs (about 3 minutes)")
    parser.add_argument("--large", action="store_true", help="puppets: add K=5000")
    parser.add_argument("--puppets", help="puppets: comma-separated K values (overrides)")
    parser.add_argument("--per-room", type=int, help="puppets: users per bridged room")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy record the bridge worker during each measured phase")
    parser.add_argument("--whatif", default="",
                        help="measure with what-if patches loaded into the bridge "
                             "(whatif/sitecustomize.py: our_nicks, irc_lower, switchinterval); "
                             "results go to <scenario>-<db>-whatif-<names>.json")
    parser.add_argument("--keep", action="store_true", help="keep the stacks' folders")
    parser.add_argument("--report", action="store_true",
                        help="print Markdown tables of the results already in results/ "
                             "(runs nothing)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    common.WHATIF[:] = [n.strip() for n in args.whatif.split(",") if n.strip()]
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}")
    names = [n for n in ORDER if n in names]
    dbs = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    if args.report:
        print(report(names, dbs, suffix_for(args)))
        return 0
    if "postgresql" in dbs and not common.postgres_available():
        print(f"PostgreSQL at {common.PG_URL} does not answer: skipping it", file=sys.stderr)
        dbs.remove("postgresql")
    if args.profile and shutil.which("py-spy") is None:
        parser.error("--profile needs py-spy (pip install py-spy)")
    common.raise_nofile(16384 if args.large else 8192)
    base = Path(tempfile.mkdtemp(prefix="ircbridge-bench-"))
    started = time.monotonic()
    results: dict[str, dict[str, dict[str, Any]]] = {n: {} for n in names}
    try:
        for db in dbs:
            for name in names:
                t0 = time.monotonic()
                print(f"-- {name} on {db} ...", file=sys.stderr, flush=True)
                results[name][db] = run_one(name, db, args, base)
                print(f"   done in {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"stacks kept in {base}", file=sys.stderr)
    for name in names:
        print(table(name, results[name]))
        print()
    print(f"total {time.monotonic() - started:.0f} s; JSON in {common.RESULTS}")
    failed = [f"{n}/{db}" for n, per in results.items() for db, d in per.items() if "error" in d]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
