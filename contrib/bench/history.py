"""history: CHATHISTORY backfill and catch-up on Ergo (issue 14, item 5).

A real stack (Ergo + Synapse + `ircbridge run`, bridge.devstack). Bob, a raw IRC client,
says `--lines` lines (200) in a channel the bridge is not in; then Alice joins its alias:
the figure is the time from her join request to the last of them in the room (the portal
is made, the bot joins, asks `CHATHISTORY LATEST`, the room gets them). Then the bridge
is stopped for `--outage` seconds (30) while Bob says a line every 0.3 s, and started
again: the figure is lines recovered / lines said (each counted once; duplicates are
reported apart), and the time from the start to the last of them in the room.

    IRCBRIDGE_ERGO=... python contrib/bench/history.py [--lines 200] [--outage 30] [--db URL]

Prints one JSON object. Runs on its own thread (a script, not the test suite).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bridge.devstack.clients import MatrixClient, RawIrcClient  # noqa: E402
from bridge.devstack.ports import wait_until  # noqa: E402
from bridge.devstack.stack import Stack  # noqa: E402

CHANNEL = "#backfill"


def _bodies(alice: MatrixClient, room_id: str) -> list[str]:
    return [e["content"].get("body") for e in alice.messages(room_id, limit=2000)
            if e.get("type") == "m.room.message"]


def _last_is(alice: MatrixClient, room_id: str, text: str) -> bool:
    """Is `text` among the room's newest events? (A short read: polling the whole room
    would load Synapse more than the bridge does.)"""
    return any(e.get("content", {}).get("body") == text
               for e in alice.messages(room_id, limit=10))


def _say_all(bob: RawIrcClient, texts: list[str]) -> None:
    for text in texts:
        bob.privmsg(CHANNEL, text)
    bob.wait_for_privmsg(texts[-1], target=CHANNEL, timeout=60)


def run(workdir: Path, lines: int, outage: float, database_url: str | None) -> dict[str, Any]:
    stack = Stack(workdir, database_url=database_url, ircd_kind="ergo", channels="#elsewhere",
                  scrollback_lines=lines)
    result: dict[str, Any] = {"server": "ergo", "lines": lines, "outage_s": outage}
    try:
        stack.start()
        bob = stack.irc_user("Bob")
        bob.send("CAP REQ :server-time message-tags echo-message")
        bob.join(CHANNEL)
        early = [f"history line {i:03d}" for i in range(lines)]
        _say_all(bob, early)

        alice = stack.matrix_user("alice")
        started = time.monotonic()
        room_id = alice.join(stack.alias(CHANNEL))
        wait_until(lambda: _last_is(alice, room_id, early[-1]), 120, interval=0.05,
                   what="the last history line in the room")
        result["backfill_s"] = round(time.monotonic() - started, 2)
        shown = _bodies(alice, room_id)
        result["backfill_shown"] = sum(1 for b in shown if b in set(early))
        result["backfill_in_order"] = [b for b in shown if b in set(early)] == early

        stack.bridge.stop()
        said: list[str] = []
        stopped = time.monotonic()
        while time.monotonic() - stopped < outage:
            text = f"said while down {len(said):03d}"
            bob.privmsg(CHANNEL, text)
            said.append(text)
            time.sleep(0.3)  # a steady channel (a script, not a test: sleeping is the load)
        bob.wait_for_privmsg(said[-1], target=CHANNEL, timeout=30)
        started = time.monotonic()
        stack.bridge.start()
        try:
            wait_until(lambda: _last_is(alice, room_id, said[-1]), 120, interval=0.1,
                       what="the last line said while down")
        except TimeoutError:
            pass
        result["catch_up_s"] = round(time.monotonic() - started, 2)  # with the bridge's start
        shown = _bodies(alice, room_id)
        wanted = set(said)
        result["catch_up_said"] = len(said)
        result["catch_up_recovered"] = len({b for b in shown if b in wanted})
        result["catch_up_duplicates"] = sum(1 for b in shown if b in wanted) - \
            result["catch_up_recovered"]
        result["all_unique"] = len(shown) == len(set(shown))
        bob.close()
    finally:
        stack.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--lines", type=int, default=200)
    parser.add_argument("--outage", type=float, default=30.0)
    parser.add_argument("--db", default=None, help="a PostgreSQL URL (default: SQLite)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-history-") as folder:
        print(json.dumps(run(Path(folder), args.lines, args.outage, args.db), indent=2))


if __name__ == "__main__":
    main()
