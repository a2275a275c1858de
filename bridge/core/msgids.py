"""Matrix -> IRC msgids: the tags a reply carries, and the echoes' msgids kept beside events.

Why: a Matrix reply to a bridged message names that message's IRC msgid (`+draft/reply`),
so IRC clients with message-tags thread it; and the msgid the server gave a Matrix
message (it arrives with the echo, bridge.irc.echo) is stored beside the event, so IRC
replies and reactions to it find it, across restarts.

Thread: `reply_tags` on the inbox thread (it reads the store); `MsgidWriter.link` from the
IRC thread (a Receipt's `echoed`): it only queues, and its own thread (`msgid-writer`)
writes.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from ..irc import tags as message_tags
from ..rules.ids import EventId, JsonDict, RoomId
from ..store.models import QueuedLine, Store

log = logging.getLogger(__name__)


def replied_event(content: JsonDict) -> EventId | None:
    """The event id a Matrix message replies to, if it is a reply."""
    relates = content.get("m.relates_to")
    reply = relates.get("m.in_reply_to") if isinstance(relates, dict) else None
    event_id = reply.get("event_id") if isinstance(reply, dict) else None
    return EventId(event_id) if isinstance(event_id, str) and event_id else None


def reply_tags(store: Store, network: str, content: JsonDict) -> dict[str, str]:
    """`{"+draft/reply": msgid}` for a reply to a message whose msgid is known, else {}."""
    event_id = replied_event(content)
    msgid = store.msgid_of_event(network, event_id) if event_id else None
    return {message_tags.REPLY: msgid} if msgid else {}


class MsgidWriter:
    """Stores echoed msgids off the IRC thread, in order, one at a time."""

    def __init__(self, store: Store):
        self.store = store
        self._pool: ThreadPoolExecutor | None = None

    def link(self, network: str, msgid: str, room_id: RoomId, event_id: EventId,
             ts: int) -> None:
        """Any thread: remember `msgid` as `event_id` (written soon, never waited for)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="msgid-writer")
        self._pool.submit(self._write, network, msgid, room_id, event_id, ts)

    def _write(self, network: str, msgid: str, room_id: RoomId, event_id: EventId,
               ts: int) -> None:
        try:
            self.store.link_msgid(network, msgid, room_id, event_id, ts)
        except Exception:  # noqa: BLE001 - a lost link costs a reply's thread, nothing more
            log.exception("could not store msgid %s of %s", msgid, event_id)

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def in_reply_to(store: Store, line: QueuedLine, room_id: RoomId,
                content: dict[str, object]) -> None:
    """Sender thread: an IRC line with +draft/reply naming a message of this room becomes a
    Matrix reply to that event (its text is unchanged: IRC wrote it readable already)."""
    if not line.reply_to:
        return
    found = store.event_of_msgid(line.network, line.reply_to)
    if found is None or found[0] != room_id:
        return  # unknown, or another room's (a private conversation): a plain line
    content["m.relates_to"] = {"m.in_reply_to": {"event_id": found[1]}}
