"""Helpers of the durable-queue unit tests: rows made through the real store."""

from __future__ import annotations

import itertools
import time
from typing import Any

from bridge.store.models import IrcLine, QueuedLine, Store

ROOM = "!room:localhost"
NETWORK = "local"
_ids = itertools.count()


def event(body: str, room_id: str = ROOM) -> dict[str, Any]:
    return {"event_id": f"$e{next(_ids)}-{time.monotonic_ns()}", "room_id": room_id,
            "sender": "@alice:localhost", "type": "m.room.message",
            "content": {"msgtype": "m.text", "body": body}}


def store_events(store: Store, *bodies: str) -> None:
    """One transaction per call, as the homeserver pushes them."""
    store.record_transaction(f"t{next(_ids)}", [event(b) for b in bodies])


def irc_line(body: str, channel: str = "#chan", nick: str = "bob") -> IrcLine:
    return IrcLine(network=NETWORK, channel=channel, channel_name=channel, nick=nick,
                   sender=f"@irc_{nick}:localhost", msgtype="m.text", body=body, html=None,
                   ts=int(time.time() * 1000))


def queue_rows(store: Store, room_bodies: list[tuple[str, str]]) -> list[QueuedLine]:
    """Outbox rows, in this order, for (room id, body) pairs."""
    rooms = {(NETWORK, room_id): room_id for room_id, _ in room_bodies}
    lines = [irc_line(body, channel=room_id) for room_id, body in room_bodies]
    return store.queue_lines(lines, rooms, {NETWORK: 0})
