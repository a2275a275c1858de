"""Shared pieces of the benchmarks: the stack, the clients that count, statistics, processes.

Everything here talks to real daemons on loopback (ngircd, Synapse, the bridge started by
`ircbridge run`). Every wait has a deadline and every loop a bound; nothing here imports the
bridge's internals except the devstack (to start things), the config loader (to read the
tokens) and the store models (to seed or drop the bridge's tables).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import resource
import socket
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from bridge.devstack.clients import MatrixClient
from bridge.devstack.ports import LOOPBACK, terminate, track
from bridge.devstack.stack import SERVER_NAME, Stack

log = logging.getLogger("bench")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RESULTS = HERE / "results"
# The bench uses a database of its own on the test server: test runs use
# `test` (and drop the bridge's tables and hold its per-network advisory lock there).
PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
WHATIF_DIR = HERE / "whatif"
# What-if patches (whatif/sitecustomize.py) every BenchStack loads into the bridge; run.py
# sets it from --whatif.
WHATIF: list[str] = []
PG_URL = os.environ.get("IRCBRIDGE_BENCH_PG_URL", f"{PG_SERVER}/ircbridge_bench")


# --------------------------------------------------------------------------- small helpers

def q(value: str) -> str:
    """Quote one URL path segment completely."""
    return quote(value, safe="")


def percentile(values: Iterable[float], p: float) -> float | None:
    """Linear-interpolated percentile (p in 0..100); None for no values."""
    data = sorted(values)
    if not data:
        return None
    if len(data) == 1:
        return data[0]
    k = (len(data) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def latency_summary(values_s: list[float]) -> dict[str, Any]:
    """p50/p90/p99/max in milliseconds of latencies given in seconds."""
    ms = [v * 1000.0 for v in values_s]
    if not ms:
        return {"n": 0, "p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None,
                "mean_ms": None}
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50) or 0.0, 2),
        "p90_ms": round(percentile(ms, 90) or 0.0, 2),
        "p99_ms": round(percentile(ms, 99) or 0.0, 2),
        "max_ms": round(max(ms), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
    }


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.05,
             what: str = "a condition") -> Any:
    """Poll until `predicate()` is truthy and return it; TimeoutError after `timeout` s."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / max(interval, 0.001)) + 2):
        value = predicate()
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(interval, remaining))
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")


def raise_nofile(wanted: int) -> tuple[int, int]:
    """Raise RLIMIT_NOFILE (children started later inherit it); returns the new (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def git_revision() -> str | None:
    """The checked-out commit, read from .git files (no git command is run)."""
    git = ROOT / ".git"
    try:
        common_dir = git
        if git.is_file():  # a worktree: `.git` names its folder, refs live in the main one
            git = Path(git.read_text().strip().removeprefix("gitdir: "))
            common_file = git / "commondir"
            common_dir = (git / common_file.read_text().strip()).resolve() \
                if common_file.exists() else git
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head[:12]
        ref = head[5:]
        for base in (git, common_dir):
            path = base / ref
            if path.exists():
                return path.read_text().strip()[:12]
        packed = common_dir / "packed-refs"
        if packed.exists():
            for line in packed.read_text().splitlines():
                if line.endswith(" " + ref):
                    return line.split()[0][:12]
    except OSError:
        return None
    return None


# --------------------------------------------------------------------------- processes

def children(pid: int) -> list[int]:
    """Direct children of `pid` (from /proc/PID/task/*/children)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                found.extend(int(x) for x in fh.read().split())
        except OSError:
            continue
    return found


def rss_kb(pid: int) -> int:
    """VmRSS of a process in KiB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return 0
    return 0


def system_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    try:
        with open("/proc/stat") as fh:
            fields = [float(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return sum(fields) - idle, sum(fields)


def loadavg() -> float | None:
    try:
        with open("/proc/loadavg") as fh:
            return float(fh.read().split()[0])
    except (OSError, ValueError):
        return None


def foreign_load(own: set[int] | None = None, marker: str = "") -> list[str]:
    """Other test stacks running on the machine now (pytest, Synapse, ngircd, bridges whose
    command line does not hold `marker`, the bench's own folder): they share the CPUs."""
    found: list[str] = []
    mine = own or set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in mine:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if marker and marker in cmd:
            continue
        if any(word in cmd for word in ("pytest", "synapse.app", "ngircd", "-m bridge")):
            found.append(f"{entry} {cmd[:80]}")
    return found


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks
    except (OSError, IndexError, ValueError):
        return 0.0


# --------------------------------------------------------------------------- the stack

class BenchStack(Stack):
    """The devstack with a few config keys overridden, and a hook before the bridge starts.

    `network` and `appservice` map keys to values that replace (or add to) the lines the
    devstack writes into [network:local] and [appservice].
    """

    def __init__(self, workdir: Path, *, db: str, network: dict[str, str] | None = None,
                 appservice: dict[str, str] | None = None, channels: str = "#matrix",
                 log_level: str = "INFO"):
        url = PG_URL if db == "postgresql" else None
        super().__init__(workdir, database_url=url, channels=channels, log_level=log_level,
                         ircd_kind="ngircd")
        self.db = db
        # Benchmarks make many portal rooms in minutes: no portal limits in the way.
        limits = {"portals_per_hour": "100000", "portals_per_user_per_hour": "100000"}
        self.overrides = {"network:local": {**limits, **(network or {})},
                          "appservice": dict(appservice or {})}
        self._hs_token: str | None = None
        self._as_token: str | None = None
        if WHATIF:
            path = os.environ.get("PYTHONPATH", "")
            self.bridge.env = {
                "PYTHONPATH": str(WHATIF_DIR) + (os.pathsep + path if path else ""),
                "IRCBRIDGE_BENCH_WHATIF": ",".join(WHATIF),
            }

    def write_config(self) -> None:
        super().write_config()
        text = self.config_path.read_text(encoding="utf-8")
        for section, values in self.overrides.items():
            for key, value in values.items():
                text = _set_key(text, section, key, value)
        self.config_path.write_text(text, encoding="utf-8")

    def start_parts(self) -> None:
        """ircd, config, registration, Synapse: everything but the bridge."""
        from bridge.cli.main import main as cli_main

        if self.db == "postgresql":
            drop_bridge_tables(PG_URL)
        self.ircd.start()
        self.write_config()
        if cli_main(["-c", str(self.config_path), "generate-registration"]) != 0:
            raise RuntimeError("generate-registration failed")
        self.synapse.start()

    def start(self, before_bridge: Callable[[BenchStack], None] | None = None) -> BenchStack:
        self.start_parts()
        if before_bridge is not None:
            before_bridge(self)
        self.bridge.start(timeout=120)
        return self

    def stop(self) -> None:
        super().stop()
        if self.db == "postgresql":
            try:
                drop_bridge_tables(PG_URL)
            except Exception:  # noqa: BLE001 - the next run drops them first anyway
                log.warning("could not drop the bridge's tables", exc_info=True)

    def _tokens(self) -> None:
        from bridge.config.ini import load

        config = load(self.config_path)
        self._hs_token = config.appservice.hs_token
        self._as_token = config.appservice.as_token

    @property
    def hs_token(self) -> str:
        if self._hs_token is None:
            self._tokens()
        assert self._hs_token is not None
        return self._hs_token

    @property
    def as_token(self) -> str:
        if self._as_token is None:
            self._tokens()
        assert self._as_token is not None
        return self._as_token

    @property
    def master_pid(self) -> int:
        assert self.bridge.proc is not None
        return self.bridge.proc.pid

    def worker_pid(self, timeout: float = 10.0) -> int:
        """The gunicorn worker (the one process that holds the bridge's threads)."""
        kids = wait_for(lambda: children(self.master_pid), timeout, 0.05, "the gunicorn worker")
        return int(kids[0])

    def bridge_rss_kb(self) -> dict[str, int]:
        worker = self.worker_pid()
        master = rss_kb(self.master_pid)
        work = rss_kb(worker)
        return {"master_kb": master, "worker_kb": work, "total_kb": master + work}

    def as_client(self) -> AsClient:
        """A client for the bridge's AS API, as the homeserver calls it."""
        return AsClient(self.bridge.url, self.hs_token)

    def as_matrix(self, user_id: str | None = None) -> MatrixClient:
        """A client-server client holding the as_token (optionally asserting a user)."""
        return MatrixClient(self.synapse.url, self.as_token, user_id or f"@ircbot:{SERVER_NAME}")


def _set_key(text: str, section: str, key: str, value: str) -> str:
    """Set `key = value` in `[section]` of an ini text: replace the line or add it."""
    lines = text.splitlines()
    start = None
    for i, line in enumerate(lines):
        if line.strip() == f"[{section}]":
            start = i
            break
    if start is None:
        lines += ["", f"[{section}]", f"{key} = {value}"]
        return "\n".join(lines) + "\n"
    end = len(lines)
    for j in range(start + 1, len(lines)):
        if lines[j].startswith("["):
            end = j
            break
    pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
    for j in range(start + 1, end):
        if pattern.match(lines[j]):
            lines[j] = f"{key} = {value}"
            return "\n".join(lines) + "\n"
    lines.insert(start + 1, f"{key} = {value}")
    return "\n".join(lines) + "\n"


def drop_bridge_tables(url: str) -> None:
    """Drop the bridge's tables (as tests/conftest.py clean_database does)."""
    from bridge.store.models import MODELS, Store

    store = Store(url)
    try:
        with store.db.connection_context():
            store.db.drop_tables(MODELS, safe=True)
    finally:
        store.close()


# --------------------------------------------------------------------------- AS API pusher

class AsClient:
    """Pushes transactions and queries to the bridge exactly as Synapse does."""

    def __init__(self, base_url: str, hs_token: str):
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.headers["Authorization"] = f"Bearer {hs_token}"
        self.session.headers["Content-Type"] = "application/json"
        self._txn = itertools.count(int(time.time()))
        self._prefix = uuid.uuid4().hex[:10]
        self._event = itertools.count(1)
        self.errors: list[str] = []
        self.stalled_s = 0.0

    def close(self) -> None:
        self.session.close()

    def event(self, room_id: str, sender: str, content: dict[str, Any],
              etype: str = "m.room.message", state_key: str | None = None) -> dict[str, Any]:
        """An event shaped like Synapse's (with the legacy `age` and `user_id`)."""
        now = int(time.time() * 1000)
        event: dict[str, Any] = {
            "event_id": f"${self._prefix}{next(self._event)}",
            "room_id": room_id,
            "sender": sender,
            "user_id": sender,
            "type": etype,
            "content": content,
            "origin_server_ts": now,
            "age": 0,
            "unsigned": {"age": 0},
        }
        if state_key is not None:
            event["state_key"] = state_key
        return event

    def message(self, room_id: str, sender: str, body: str) -> dict[str, Any]:
        return self.event(room_id, sender, {"msgtype": "m.text", "body": body})

    def member_join(self, room_id: str, user_id: str) -> dict[str, Any]:
        return self.event(room_id, user_id, {"membership": "join"}, "m.room.member", user_id)

    def put_transaction(self, events: list[dict[str, Any]], timeout: float = 60,
                        max_attempts: int = 6) -> float:
        """PUT one transaction and return the seconds until it was answered 200.

        Like Synapse, a failed transaction is retried with the same txnId after 2 s, 4 s,
        8 s ... (Synapse's recoverer); failures are counted in `errors` and the waits in
        `stalled_s`. Raises after `max_attempts`.
        """
        txn = next(self._txn)
        body = json.dumps({"events": events}).encode()
        started = time.monotonic()
        for attempt in range(1, max_attempts + 1):
            try:
                resp = self.session.put(f"{self.base_url}/_matrix/app/v1/transactions/{txn}",
                                        data=body, timeout=timeout)
                status, text = resp.status_code, resp.text[:200]
            except requests.RequestException as e:
                status, text = 0, type(e).__name__
            if status == 200:
                return time.monotonic() - started
            self.errors.append(f"{status} {text}")
            if attempt == max_attempts:
                break
            pause = 2.0 ** attempt
            self.stalled_s += pause
            time.sleep(pause)
        raise RuntimeError(f"transaction {txn}: {self.errors[-1]} after {max_attempts} tries")

    def query_user(self, user_id: str, timeout: float = 60) -> tuple[int, float]:
        started = time.monotonic()
        resp = self.session.get(f"{self.base_url}/_matrix/app/v1/users/{q(user_id)}",
                                timeout=timeout)
        return resp.status_code, time.monotonic() - started


# --------------------------------------------------------------------------- IRC watcher

@dataclass
class IrcWatcher:
    """A plain IRC client on its own thread that records what arrives, with timestamps.

    PRIVMSGs whose text is `<tag> <seq> ...` land in `arrivals[seq]` (monotonic time of the
    first arrival); JOINs are counted per channel. PINGs are answered.
    """

    host: str
    port: int
    nick: str
    tag: str = "bench"
    arrivals: dict[int, float] = field(default_factory=dict)
    duplicates: int = 0
    joins: dict[str, set[str]] = field(default_factory=dict)
    join_times: list[float] = field(default_factory=list)
    lines: int = 0

    def __post_init__(self) -> None:
        self.sock: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._buffer = b""
        self._lock = threading.Lock()
        self._joined: set[str] = set()
        self._registered = threading.Event()
        self._prefix = f"{self.tag} ".encode()

    def connect(self, timeout: float = 10.0) -> IrcWatcher:
        self.sock = socket.create_connection((self.host, self.port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self.sock.settimeout(0.2)
        self._send(f"NICK {self.nick}")
        self._send(f"USER {self.nick} 0 * :bench watcher")
        self._thread = threading.Thread(target=self._run, name=f"watch-{self.nick}", daemon=True)
        self._thread.start()
        if not self._registered.wait(timeout):
            raise TimeoutError(f"IRC watcher {self.nick} did not register")
        return self

    def join(self, channel: str, timeout: float = 10.0) -> None:
        self._send(f"JOIN {channel}")
        wait_for(lambda: channel.lower() in self._joined, timeout, 0.02, f"JOIN {channel}")

    def retag(self, tag: str) -> None:
        """Count texts starting with `tag` from now on (arrivals are cleared)."""
        with self._lock:
            self.tag = tag
            self._prefix = f"{tag} ".encode()
            self.arrivals = {}
            self.duplicates = 0

    def reset_joins(self) -> None:
        with self._lock:
            self.joins = {}
            self.join_times = []

    def join_count(self, channel: str | None = None) -> int:
        with self._lock:
            if channel is not None:
                return len(self.joins.get(channel.lower(), ()))
            return sum(len(v) for v in self.joins.values())

    def arrived(self) -> int:
        with self._lock:
            return len(self.arrivals)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self.sock is not None:
            try:
                self._send("QUIT :bench done")
            except OSError:
                pass
            self.sock.close()
            self.sock = None

    def _send(self, line: str) -> None:
        assert self.sock is not None
        self.sock.sendall(line.encode() + b"\r\n")

    def _run(self) -> None:
        assert self.sock is not None
        while not self._stop.is_set():
            try:
                data = self.sock.recv(262144)
            except (TimeoutError, BlockingIOError):
                continue
            except OSError:
                return
            if not data:
                return
            now = time.monotonic()
            self._buffer += data
            *lines, self._buffer = self._buffer.split(b"\n")
            with self._lock:
                for raw in lines:
                    self._line(raw.rstrip(b"\r"), now)

    def _line(self, raw: bytes, now: float) -> None:
        self.lines += 1
        if raw.startswith(b"PING"):
            try:
                self._send("PONG" + raw[4:].decode(errors="replace"))
            except OSError:
                pass
            return
        if not raw.startswith(b":"):
            return
        parts = raw.split(b" ", 3)
        if len(parts) < 3:
            return
        command = parts[1]
        if command == b"PRIVMSG" and len(parts) == 4:
            self._privmsg(parts[3], now)
        elif command == b"JOIN":
            self._join(parts[0], parts[2], now)
        elif command == b"001":
            self._registered.set()

    def _privmsg(self, trailing: bytes, now: float) -> None:
        text = trailing[1:] if trailing.startswith(b":") else trailing
        if not text.startswith(self._prefix):
            return
        try:
            seq = int(text[len(self._prefix):].split(b" ", 1)[0])
        except ValueError:
            return
        if seq in self.arrivals:
            self.duplicates += 1
        else:
            self.arrivals[seq] = now

    def _join(self, prefix: bytes, target: bytes, now: float) -> None:
        nick = prefix[1:].split(b"!", 1)[0].decode(errors="replace")
        channel = target.lstrip(b":").decode(errors="replace").lower()
        if nick.lower() == self.nick.lower():
            self._joined.add(channel)
        else:
            self.joins.setdefault(channel, set()).add(nick)
            self.join_times.append(now)


class IrcSpeaker:
    """A plain IRC client that only sends (reads are drained on a thread; PINGs answered)."""

    def __init__(self, host: str, port: int, nick: str):
        self.watcher = IrcWatcher(host, port, nick, tag="\x00never")
        self.nick = nick

    def connect(self) -> IrcSpeaker:
        self.watcher.connect()
        return self

    def join(self, channel: str) -> None:
        self.watcher.join(channel)

    def say(self, channel: str, text: str) -> None:
        self.watcher._send(f"PRIVMSG {channel} :{text}")

    def say_many(self, channel: str, texts: list[str]) -> None:
        data = b"".join(f"PRIVMSG {channel} :{t}\r\n".encode() for t in texts)
        assert self.watcher.sock is not None
        self.watcher.sock.sendall(data)

    def close(self) -> None:
        self.watcher.close()


# --------------------------------------------------------------------------- Matrix reader

class RoomReader:
    """Reads a room's new events incrementally with /messages (dir=f from a saved token).

    Each text event whose body is `<tag> <seq> ...` is recorded with the homeserver's creation
    time of the event, computed as (time the answer came) - unsigned.age, so the reading
    interval does not add to the measured latency.
    """

    def __init__(self, client: MatrixClient, room_id: str):
        self.client = client
        self.room_id = room_id
        self.token = self._now_token()
        self.created: dict[str, dict[int, float]] = {}
        self.senders: dict[str, dict[int, str]] = {}
        self.duplicates = 0
        self.events_seen = 0

    def _now_token(self) -> str:
        resp = self.client.request(
            "GET", f"/_matrix/client/v3/rooms/{q(self.room_id)}/messages",
            params={"dir": "b", "limit": 1},
        )
        return str(resp["start"])

    def poll(self, max_pages: int = 20) -> int:
        """Read what is new (at most `max_pages` pages of 1000); returns events read."""
        count = 0
        for _ in range(max_pages):
            resp = self.client.request(
                "GET", f"/_matrix/client/v3/rooms/{q(self.room_id)}/messages",
                params={"dir": "f", "limit": 1000, "from": self.token},
            )
            received = time.time()
            chunk = resp.get("chunk") or []
            if resp.get("end"):
                self.token = str(resp["end"])
            for event in chunk:
                self._record(event, received)
            count += len(chunk)
            if len(chunk) < 1000:
                break
        self.events_seen += count
        return count

    def _record(self, event: dict[str, Any], received: float) -> None:
        if event.get("type") != "m.room.message":
            return
        body = (event.get("content") or {}).get("body")
        if not isinstance(body, str):
            return
        words = body.split(" ", 2)
        if len(words) < 2:
            return
        tag, seq_text = words[0], words[1]
        try:
            seq = int(seq_text)
        except ValueError:
            return
        age = (event.get("unsigned") or {}).get("age")
        created = received - (age / 1000.0) if isinstance(age, int | float) else received
        table = self.created.setdefault(tag, {})
        if seq in table:
            self.duplicates += 1
            return
        table[seq] = created
        self.senders.setdefault(tag, {})[seq] = str(event.get("sender"))

    def count(self, tag: str) -> int:
        return len(self.created.get(tag, {}))


# --------------------------------------------------------------------------- py-spy

class Profiler:
    """`py-spy record` against a pid for one phase, raw (collapsed) output plus a summary."""

    def __init__(self, pid: int, out: Path, *, rate: int = 200, duration: float = 60.0,
                 idle: bool = False):
        self.pid = pid
        self.out = out
        self.proc: subprocess.Popen[bytes] | None = None
        cmd = ["py-spy", "record", "-p", str(pid), "-o", str(out), "-f", "raw", "-r", str(rate),
               "-d", str(max(1, int(duration))), "--threads", "--nonblocking"]
        if idle:
            cmd.append("--idle")
        self.cmd = cmd

    def __enter__(self) -> Profiler:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)
        track(self.proc)
        time.sleep(0.3)  # let it attach
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            # SIGINT makes py-spy write what it has; terminate() sends SIGTERM to the group.
            try:
                os.killpg(self.proc.pid, 2)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                terminate(self.proc, 5)
            self.proc = None


def summarize_profile(path: Path, top: int = 25) -> dict[str, Any]:
    """Aggregate a py-spy raw (collapsed) profile: samples per thread, hottest frames.

    `self` counts samples whose innermost frame is the function; `inclusive` counts samples
    with the function anywhere on the stack (per thread). Idle waits are excluded when the
    profile was taken without --idle.
    """
    if not path.exists():
        return {}
    per_thread: dict[str, int] = {}
    self_time: dict[str, int] = {}
    inclusive: dict[str, dict[str, int]] = {}
    total = 0
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            try:
                count = int(count_text)
            except ValueError:
                continue
            frames = stack.split(";")
            thread = _thread_name(frames[0])
            total += count
            per_thread[thread] = per_thread.get(thread, 0) + count
            if len(frames) > 1:
                leaf = _short(frames[-1])
                self_time[leaf] = self_time.get(leaf, 0) + count
            seen: set[str] = set()
            for frame in frames[1:]:
                name = _short(frame)
                if name in seen:
                    continue
                seen.add(name)
                table = inclusive.setdefault(thread, {})
                table[name] = table.get(name, 0) + count

    def pct(n: int) -> float:
        return round(100.0 * n / total, 1) if total else 0.0

    return {
        "samples": total,
        "threads": {t: pct(n) for t, n in sorted(per_thread.items(), key=lambda kv: -kv[1])},
        "self": [(f, pct(n)) for f, n in sorted(self_time.items(), key=lambda kv: -kv[1])[:top]],
        "inclusive": {
            t: [(f, pct(n)) for f, n in sorted(tab.items(), key=lambda kv: -kv[1])[:top]]
            for t, tab in sorted(inclusive.items(), key=lambda kv: -per_thread.get(kv[0], 0))[:6]
        },
    }


def _thread_name(frame: str) -> str:
    # py-spy --threads: 'thread (0x7f...)' or 'process 123:"python ..."' then 'thread (..)'.
    m = re.search(r'"([^"]+)"', frame)
    return m.group(1) if m else frame.strip()


def _short(frame: str) -> str:
    """'function (path/to/file.py:123)' -> 'function (file.py)' (lines merged)."""
    m = re.match(r"^(.*?) \((.*?):(\d+)\)$", frame.strip())
    if not m:
        return frame.strip()
    func, path, _line = m.groups()
    parts = path.split("/")
    if "bridge" in parts:
        short = "/".join(parts[parts.index("bridge"):])
    elif "site-packages" in parts:
        short = "/".join(parts[parts.index("site-packages") + 1:])
    else:
        short = parts[-1]
    return f"{func} ({short})"


# --------------------------------------------------------------------------- setup helpers

def bridged_room(stack: BenchStack, user: MatrixClient, channel: str) -> str:
    """Join a portal through its alias (so the bridge's alias query makes room and link)."""
    return user.join(stack.alias(channel))


def wait_bot_in(watcher: IrcWatcher, channel: str, nick: str = "ircbot",
                timeout: float = 30) -> None:
    """Wait until the bridge's bot has joined `channel` (seen by a watcher already in it)."""
    wait_for(lambda: nick.lower() in {n.lower() for n in watcher.joins.get(channel.lower(), ())},
             timeout, 0.05, f"the bot to join {channel}")


def loopback() -> str:
    return LOOPBACK


def tail_text(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a text file."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def postgres_available(url: str = PG_URL) -> bool:
    """True when the PostgreSQL server of `url` answers; creates the database if missing."""
    try:
        import psycopg2
    except ImportError:
        return False
    try:
        conn = psycopg2.connect(url, connect_timeout=3)
    except psycopg2.OperationalError as e:
        if "does not exist" not in str(e):
            return False
        return _create_database(url)
    except Exception:  # noqa: BLE001 - any failure means "not available"
        return False
    conn.close()
    return True


def _create_database(url: str) -> bool:
    import psycopg2

    base, _, name = url.rpartition("/")
    try:
        conn = psycopg2.connect(f"{base}/postgres", connect_timeout=3)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
    except Exception:  # noqa: BLE001
        log.warning("could not create the database %s", name, exc_info=True)
        return False
    return True
