"""Counting helpers for the fault, bad-input and soak tests: numbered messages both ways.

Every message a test sends carries `<tag> <seq>` as its whole text, so what arrives can be
counted exactly on both sides: on IRC from a raw client's history (kept across reconnects),
on Matrix through /messages (never /sync). A `Tally` says what was lost, duplicated, injected
or reordered.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.devstack.clients import MatrixClient, RawIrcClient
from bridge.devstack.ports import wait_until
from bridge.devstack.stack import BridgeProcess, Stack


def seqs_in(texts: Iterable[str], tag: str) -> list[int]:
    """The sequence numbers of the texts that are exactly `<tag> <number>`, in order."""
    prefix = tag + " "
    found: list[int] = []
    for text in texts:
        if text.startswith(prefix) and text[len(prefix):].isdigit():
            found.append(int(text[len(prefix):]))
    return found


@dataclass
class Tally:
    """What was sent and what arrived, for one tag in one direction."""

    what: str
    sent: list[int]
    got: list[int]
    upstream_lost: list[int] = field(default_factory=list)  # never handed to the bridge
    # Sent while the observer could not see them: missing is fine, twice or out of order not.
    may_miss: list[int] = field(default_factory=list)

    @property
    def lost(self) -> list[int]:
        return sorted(set(self.sent) - set(self.got) - set(self.may_miss))

    @property
    def duplicated(self) -> list[int]:
        return sorted(n for n, c in Counter(self.got).items() if c > 1)

    @property
    def injected(self) -> list[int]:
        return sorted(set(self.got) - set(self.sent))

    @property
    def in_order(self) -> bool:
        firsts = list(dict.fromkeys(self.got))
        return firsts == sorted(firsts)

    @property
    def clean(self) -> bool:
        return not (self.lost or self.duplicated or self.injected)

    def __str__(self) -> str:
        return (f"{self.what}: sent {len(self.sent)}, received {len(self.got)}, "
                f"lost {len(self.lost)} {self.lost[:20]}, duplicated {len(self.duplicated)} "
                f"{self.duplicated[:20]}, injected {self.injected[:20]}, "
                f"in order: {self.in_order}"
                + (f"; unobservable (may be missing): {len(self.may_miss)}, seen "
                   f"{len(set(self.may_miss) & set(self.got))}" if self.may_miss else "")
                + (f"; never handed to the bridge by the homeserver: {self.upstream_lost}"
                   if self.upstream_lost else ""))


def inbox_bodies(url: str, tag: str) -> list[str]:
    """Bodies of the events in the bridge's inbox (any state) whose text starts with `tag`."""
    import json

    from bridge.store.models import InboxEvent, Store

    store = Store(url)
    try:
        with store.db.connection_context():
            rows = InboxEvent.select(InboxEvent.payload).where(
                InboxEvent.payload.contains(f'"body": "{tag} '))
            bodies = []
            for row in rows:
                content = json.loads(row.payload).get("content")
                if isinstance(content, dict) and isinstance(content.get("body"), str):
                    bodies.append(content["body"])
            return bodies
    finally:
        store.close()


def matrix_texts(client: MatrixClient, room_id: str, limit: int = 1000) -> list[str]:
    """Bodies of the latest `limit` m.room.message events, oldest first (via /messages)."""
    return [e.get("content", {}).get("body", "") for e in client.messages(room_id, limit=limit)
            if e.get("type") == "m.room.message" and isinstance(e.get("content"), dict)]


class IrcObserver:
    """A plain IRC user sitting in a channel; its history survives reconnects."""

    def __init__(self, stack: Stack, nick: str, channel: str):
        self.stack = stack
        self.nick = nick
        self.channel = channel
        self.old: list[RawIrcClient] = []
        self.client: RawIrcClient | None = None
        self.join_names: set[str] = set()

    def connect(self) -> IrcObserver:
        """Connect, join, and remember who was already in the channel when we arrived."""
        if self.client is not None:
            self.old.append(self.client)
            self.client.close()
        self.client = self.stack.irc_user(self.nick)
        start = len(self.client.history)
        self.client.join(self.channel)
        end = self.client.wait_for(lambda m: m.command == "366", timeout=10, start=start)
        index = self.client.history.index(end)
        self.join_names = {
            n.lstrip("@+%~&!") for m in self.client.history[start:index]
            if m.command == "353" for n in m.text.split()
        }
        return self

    @property
    def c(self) -> RawIrcClient:
        assert self.client is not None
        return self.client

    def pump(self) -> None:
        if self.client is not None and not self.client.closed:
            try:
                self.client.pump()
            except OSError:
                pass

    def history(self) -> list[Any]:
        self.pump()
        return [m for c in [*self.old, *([self.client] if self.client else [])] for m in c.history]

    def channel_texts(self, sender: str | None = None) -> list[str]:
        """Texts of every PRIVMSG to the channel seen so far (optionally from one nick)."""
        folded = self.channel.casefold()
        return [m.text for m in self.history()
                if m.command == "PRIVMSG" and m.target.casefold() == folded
                and (sender is None or (m.nick or "").casefold() == sender.casefold())]

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


class MatrixTalker:
    """Sends `<tag> <seq>` texts from a Matrix user on its own thread, at a steady pace.

    Only the sends the homeserver accepted count as sent (a refused one is a message the
    user saw fail, not one the bridge lost).
    """

    def __init__(self, client: MatrixClient, room_id: str, tag: str, count: int,
                 interval: float = 0.0, first: int = 0):
        self.client = client
        self.room_id = room_id
        self.tag = tag
        self.count = count
        self.first = first
        self.interval = interval
        self.sent: list[int] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"talker-{tag}", daemon=True)

    def start(self) -> MatrixTalker:
        self._thread.start()
        return self

    def _run(self) -> None:
        for seq in range(self.first, self.first + self.count):
            if self._stop.is_set():
                return
            try:
                self.client.send_text(self.room_id, f"{self.tag} {seq}")
                self.sent.append(seq)
            except Exception as e:  # noqa: BLE001 - the user saw an error: not sent
                self.errors.append(repr(e)[:200])
            if self.interval:
                self._stop.wait(self.interval)

    def join(self, timeout: float = 120) -> MatrixTalker:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"talker {self.tag} did not finish"
        return self

    def stop(self) -> None:
        self._stop.set()


def worker_pids(bridge: BridgeProcess) -> list[int]:
    """The gunicorn master's children (the worker that holds the bridge's threads)."""
    if bridge.proc is None:
        return []
    found: list[int] = []
    task_dir = Path(f"/proc/{bridge.proc.pid}/task")
    try:
        tasks = os.listdir(task_dir)
    except OSError:
        return found
    for tid in tasks:
        try:
            found.extend(int(x) for x in (task_dir / tid / "children").read_text().split())
        except OSError:
            continue
    return found


def gone(pid: int) -> bool:
    """True once `pid` no longer runs (absent, or a zombie waiting to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def kill_bridge(bridge: BridgeProcess) -> None:
    """SIGKILL the bridge and wait until its worker is really gone (port closed)."""
    workers = worker_pids(bridge)
    bridge.kill()
    wait_until(lambda: all(gone(p) for p in workers), 20, what="the killed worker to exit")


def eventually(predicate: Callable[[], Any], timeout: float, what: str,
               tick: Callable[[], None] | None = None, interval: float = 0.2) -> Any:
    """wait_until, running `tick` (e.g. reading an IRC socket) on every poll."""
    def check() -> Any:
        if tick is not None:
            tick()
        return predicate()

    return wait_until(check, timeout, interval=interval, what=what)


def elapsed(since: float) -> float:
    return round(time.monotonic() - since, 2)


@dataclass
class Report:
    """Figures a test prints (pytest -s) and attaches to its failure message."""

    lines: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        self.lines.append(text)
        print(text)

    def __str__(self) -> str:
        return "\n".join(self.lines)


class IrcTalker:
    """Sends `<tag> <seq>` PRIVMSGs from a raw IRC client on its own thread, at a steady pace."""

    def __init__(self, client: RawIrcClient, channel: str, tag: str, count: int,
                 interval: float = 0.0, first: int = 0):
        self.client = client
        self.channel = channel
        self.tag = tag
        self.count = count
        self.interval = interval
        self.first = first
        self.sent: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"irc-talker-{tag}", daemon=True)

    def start(self) -> IrcTalker:
        self._thread.start()
        return self

    def _run(self) -> None:
        for seq in range(self.first, self.first + self.count):
            if self._stop.is_set():
                return
            try:
                self.client.send(f"PRIVMSG {self.channel} :{self.tag} {seq}")
            except OSError:
                return
            self.sent.append(seq)
            if self.interval:
                self._stop.wait(self.interval)

    def join(self, timeout: float = 120) -> IrcTalker:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"IRC talker {self.tag} did not finish"
        return self
