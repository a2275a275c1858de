"""query: the two queries the homeserver blocks on.

- room alias: a Matrix client's `POST /join/#irc_local_#chanN:localhost` for a fresh channel,
  end to end (Synapse asks the bridge, the bridge creates the portal room, answers, then the
  client's join goes through);
- user: `GET /_matrix/app/v1/users/@irc_local_nickN:localhost` straight to the bridge with the
  hs_token (the bridge registers the virtual user and sets its display name), fresh ids;
  and the same ids again (already known).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from common import BenchStack, Profiler, latency_summary, summarize_profile


def run(workdir: Path, db: str, *, quick: bool, profile: Path | None = None,
        count: int | None = None) -> dict[str, Any]:
    count = count or (10 if quick else 20)
    stack = BenchStack(workdir, db=db)
    result: dict[str, Any] = {"count": count}
    try:
        stack.start()
        user = stack.matrix_user("queryuser")
        pusher = stack.as_client()
        # one warm-up of each, so first-request costs (imports, connections) are not counted
        user.join(stack.alias("#qwarm"))
        pusher.query_user(stack.ghost("qwarm"))

        prof = Profiler(stack.worker_pid(), profile, duration=300) if profile else None
        if prof:
            prof.__enter__()
        try:
            alias_times: list[float] = []
            failures = 0
            for i in range(count):
                started = time.monotonic()
                try:
                    user.join(stack.alias(f"#q{i}"))
                except Exception:  # noqa: BLE001 - counted, the run goes on
                    failures += 1
                    continue
                alias_times.append(time.monotonic() - started)
        finally:
            if prof:
                prof.__exit__(None, None, None)
        result["alias"] = {"failures": failures, **latency_summary(alias_times)}

        # the homeserver's own createRoom with an alias, for comparison
        direct: list[float] = []
        for i in range(min(count, 10)):
            started = time.monotonic()
            user.create_room(preset="public_chat", room_alias_name=f"plain{i}", name=f"p{i}")
            direct.append(time.monotonic() - started)
        result["hs_create_room"] = latency_summary(direct)

        fresh: list[float] = []
        statuses: dict[int, int] = {}
        for i in range(count):
            status, took = pusher.query_user(stack.ghost(f"qnick{i}"))
            statuses[status] = statuses.get(status, 0) + 1
            fresh.append(took)
        result["user_fresh"] = {"statuses": statuses, **latency_summary(fresh)}
        again: list[float] = []
        for i in range(count):
            _status, took = pusher.query_user(stack.ghost(f"qnick{i}"))
            again.append(took)
        result["user_known"] = latency_summary(again)
        if profile:
            result["profile"] = {"file": profile.name, **summarize_profile(profile)}
        pusher.close()
        return result
    finally:
        stack.stop()
