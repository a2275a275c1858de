"""The sent journal: what it keeps across a killed process, and what a replay makes of it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from bridge.pipeline.inbox import SentJournal


def test_replay_tells_finished_rows_from_rows_cut_while_sending(tmp_path: Path) -> None:
    journal = SentJournal(tmp_path / "j.sent")
    journal.record_start(1)
    journal.record(1)  # started and finished
    journal.record(2)  # finished without a start (e.g. a state event)
    journal.record_start(3)  # started, never finished: cut
    journal.close()
    assert SentJournal(tmp_path / "j.sent").replay() == ([1, 2], [3])


def test_a_killed_process_keeps_every_record_it_made(tmp_path: Path) -> None:
    path = tmp_path / "j.sent"
    code = (
        "import os, signal, sys\n"
        "from bridge.pipeline.inbox import SentJournal\n"
        "j = SentJournal(__import__('pathlib').Path(sys.argv[1]))\n"
        "for n in range(1, 101):\n"
        "    j.record_start(n)\n"
        "    if n % 2:\n"
        "        j.record(n)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(path)],
                            env={**os.environ}, timeout=60)
    assert result.returncode == -signal.SIGKILL
    finished, cut = SentJournal(path).replay()
    assert finished == list(range(1, 101, 2))
    assert cut == list(range(2, 101, 2))


def test_appends_from_many_threads_are_never_torn(tmp_path: Path) -> None:
    journal = SentJournal(tmp_path / "j.sent")

    def write(first: int) -> None:
        for n in range(first, first + 500):
            journal.record_start(n)
            journal.record(n)

    threads = [threading.Thread(target=write, args=(k * 1000,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    finished, cut = journal.replay()
    assert len(finished) == 8 * 500 and cut == []
    words = (tmp_path / "j.sent").read_bytes().split(b"\n")
    assert all(w.isdigit() or (w[:1] == b"S" and w[1:].isdigit()) for w in words if w)


def test_clear_and_close(tmp_path: Path) -> None:
    journal = SentJournal(tmp_path / "j.sent")
    journal.record(7)
    assert journal.size() > 0
    journal.clear()
    assert journal.size() == 0 and journal.replay() == ([], [])
    journal.close()
    # After the close (a late completion during a stop): nothing is written, nothing raises.
    journal.record(8)
    journal.record_start(9)
    assert journal.size() == 0
    journal.close()
    assert (tmp_path / "j.sent").read_bytes() == b""


def test_the_journal_is_private_to_the_bridge(tmp_path: Path) -> None:
    SentJournal(tmp_path / "j.sent").close()
    assert (tmp_path / "j.sent").stat().st_mode & 0o077 == 0
