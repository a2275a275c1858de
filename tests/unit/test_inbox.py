"""The inbox worker on a real temp-file database: order, outcomes, stop, and crash points."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from bridge.devstack.ports import wait_until
from bridge.pipeline.inbox import Completion, InboxWorker, SentJournal
from bridge.store.models import DONE, FAILED, PENDING, InboxEvent, Store
from tests.unit.queues import store_events


def _states(store: Store) -> dict[str, int]:
    """Body -> inbox state, for every stored event."""
    import json

    with store.db.connection_context():
        return {json.loads(r.payload)["content"]["body"]: r.state
                for r in InboxEvent.select().order_by(InboxEvent.id)}


class Collect:
    """A handler that keeps the completions it was given, to finish them later."""

    def __init__(self) -> None:
        self.bodies: list[str] = []
        self.completions: list[Completion] = []
        self.lock = threading.Lock()

    def __call__(self, event: dict[str, Any], completion: Completion) -> None:
        with self.lock:
            self.bodies.append(event["content"]["body"])
            self.completions.append(completion)


def test_events_are_handed_out_in_order_and_marked(store: Store, tmp_path: Path) -> None:
    store_events(store, "a", "b", "c")
    store_events(store, "d", "e")
    seen: list[str] = []
    worker = InboxWorker(store, lambda e, c: (seen.append(e["content"]["body"]), c.finished()),
                         batch=2, journal=tmp_path / "j.sent")
    worker.start()
    wait_until(lambda: len(seen) == 5 and worker.idle.is_set(), 10, interval=0.01,
               what="every event handled")
    worker.stop()
    worker.close()
    assert seen == ["a", "b", "c", "d", "e"]
    assert set(_states(store).values()) == {DONE}


def test_a_failed_or_raising_event_is_marked_failed_and_the_rest_go_on(
    store: Store, tmp_path: Path
) -> None:
    store_events(store, "ok", "fails", "raises", "after")

    def handle(event: dict[str, Any], completion: Completion) -> None:
        body = event["content"]["body"]
        if body == "raises":
            raise ValueError("a bad event")
        completion.finished(body != "fails")

    worker = InboxWorker(store, handle, journal=tmp_path / "j.sent")
    worker.start()
    wait_until(lambda: PENDING not in _states(store).values(), 10, interval=0.01,
               what="every event marked")
    worker.stop()
    worker.close()
    assert _states(store) == {"ok": DONE, "fails": FAILED, "raises": FAILED, "after": DONE}


def test_finishing_twice_counts_once(store: Store, tmp_path: Path) -> None:
    store_events(store, "once")
    collect = Collect()
    worker = InboxWorker(store, collect, journal=tmp_path / "j.sent")
    worker.start()
    wait_until(lambda: collect.completions, 10, interval=0.01, what="the event handed out")
    collect.completions[0].finished(True)
    collect.completions[0].finished(False)
    wait_until(lambda: _states(store)["once"] == DONE, 10, interval=0.01, what="marked done")
    worker.stop()
    worker.close()
    assert (tmp_path / "j.sent").read_bytes() == b"1\n"


def test_stop_never_raises_and_keeps_what_did_not_finish(store: Store, tmp_path: Path) -> None:
    """Issue 12 item 2: stop() raised `OSError: Bad file descriptor` (the inbox thread had
    closed the journal that stop then read). Now: no error; what finished before the stop is
    kept, what failed because of the stop (connections closing) is handled again."""
    store_events(store, "sent", "closed-by-stop")
    collect = Collect()
    worker = InboxWorker(store, collect, journal=tmp_path / "j.sent")
    worker.start()
    wait_until(lambda: len(collect.completions) == 2, 10, interval=0.01,
               what="two events handed out")
    worker.stop()  # raised OSError before
    store_events(store, "never-handed")  # arrived during the stop
    worker.notify()
    sent, closed = collect.completions
    sent.started()
    sent.finished(True)
    assert closed.stopping
    closed.started()  # its first line left, then the connection closed for the stop
    closed.finished(False)
    worker.close()
    worker.close()  # twice is harmless

    again = Collect()
    uncertain: list[str] = []
    second = InboxWorker(store, again, journal=tmp_path / "j.sent")
    second.on_uncertain = lambda e: uncertain.append(e["content"]["body"])
    second.start()
    wait_until(lambda: again.bodies, 10, interval=0.01, what="the next start's work")
    second.stop()
    second.close()
    states = _states(store)
    assert states["sent"] == DONE
    assert uncertain == ["closed-by-stop"] and states["closed-by-stop"] == FAILED
    assert again.bodies == ["never-handed"]


def test_stop_without_a_journal_marks_what_finished(store: Store) -> None:
    store_events(store, "one")
    collect = Collect()
    worker = InboxWorker(store, collect)
    worker.start()
    wait_until(lambda: collect.completions, 10, interval=0.01, what="the event handed out")
    worker.stop()
    collect.completions[0].finished(True)
    worker.close()
    assert _states(store) == {"one": DONE}


CRASHING_WORKER = """
import os, signal, sys
from pathlib import Path
from bridge.pipeline.inbox import InboxWorker
from bridge.store.models import Store

store = Store(sys.argv[1])

def handle(event, completion):
    body = event["content"]["body"]
    if body == "delivered":
        completion.started()
        completion.finished(True)  # journaled; the database mark comes after this handler
    elif body == "cut":
        completion.started()  # first line written, the rest not: killed here
        os.kill(os.getpid(), signal.SIGKILL)

worker = InboxWorker(store, handle, journal=Path(sys.argv[2]))
worker.start()
worker._thread.join(30)
"""


def test_a_kill_at_each_crash_point_is_recovered_at_the_next_start(
    store: Store, db_url: str, tmp_path: Path
) -> None:
    """Killed (SIGKILL) after one event's lines all left but before its row was marked, and
    while another's lines were being written: the next start marks the first done without
    sending it again, reports the second to its sender instead of repeating it, and hands
    out the one that never started."""
    store_events(store, "delivered", "cut", "later")
    journal = tmp_path / "j.sent"
    result = subprocess.run([sys.executable, "-c", CRASHING_WORKER, db_url, str(journal)],
                            env={**os.environ}, timeout=60, capture_output=True)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()[-2000:]
    assert set(_states(store).values()) == {PENDING}  # nothing reached the database

    again = Collect()
    uncertain: list[str] = []
    worker = InboxWorker(store, again, journal=journal)
    worker.on_uncertain = lambda e: uncertain.append(e["content"]["body"])
    worker.start()
    wait_until(lambda: again.bodies, 10, interval=0.01, what="the next start's work")
    again.completions[0].finished(True)
    wait_until(lambda: _states(store)["later"] == DONE, 10, interval=0.01, what="later done")
    worker.stop()
    worker.close()
    assert again.bodies == ["later"]
    assert uncertain == ["cut"]
    assert _states(store) == {"delivered": DONE, "cut": FAILED, "later": DONE}


def test_the_journal_is_emptied_once_everything_is_in_the_database(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SentJournal, "ROTATE_BYTES", 8)
    store_events(store, *[f"m{n}" for n in range(10)])
    worker = InboxWorker(store, lambda e, c: (c.started(), c.finished()),
                         journal=tmp_path / "j.sent")
    worker.start()
    wait_until(lambda: set(_states(store).values()) == {DONE}, 10, interval=0.01,
               what="every event done")
    store_events(store, "wake")
    wait_until(lambda: _states(store)["wake"] == DONE, 10, interval=0.01, what="wake done")
    worker.stop()
    worker.close()
    assert (tmp_path / "j.sent").stat().st_size < 8 * 10
