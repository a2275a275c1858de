"""Redacted messages take their media links with them.

A media link (bridge.media) is signed for a file, not for a message, and stays valid for
`[media] link_ttl_days`. So the bridge notes which files each relayed message carried
(`media_event`), and when such a message is redacted it marks its files revoked
(`media_revoked`); the media proxy (bridge/web/media.py) answers 410 for them from then on.

The two tables are part of the store's schema (bridge/store/models.py, created and upgraded
by `Store.migrate` like every table of the bridge). They carry no bridge id on
purpose: the signing secret is shared by every bridge on the database (meta `media_secret`),
so a file revoked by one bridge must stop being served by all. Rows older than the link
lifetime are pruned (a link made before them has expired by then).

Threads: the inbox thread calls `observe` for every event of a real user (a few indexed
writes); request threads call `is_revoked` for each download (one indexed read).
"""

from __future__ import annotations

import logging
import threading
import time

import peewee as pw

from ..matrix.wire import JsonObject
from ..store.models import MEDIA_MODELS as MODELS
from ..store.models import MediaEvent, MediaRevoked, now_ms
from .media import parse_mxc

log = logging.getLogger(__name__)

PRUNE_EVERY = 3600.0


def files_of(content: object) -> list[tuple[str, str]]:
    """(server, media_id) of every unencrypted file a message content names."""
    if not isinstance(content, dict):
        return []
    info = info_ if isinstance(info_ := content.get("info"), dict) else {}
    found = []
    for mxc in (content.get("url"), info.get("thumbnail_url")):
        if isinstance(mxc, str):
            try:
                found.append(parse_mxc(mxc))
            except ValueError:
                continue
    return found


def redacted_id(event: JsonObject) -> str | None:
    """The event a redaction removes (top-level `redacts`, or in content from room v11)."""
    content = content_ if isinstance(content_ := event.get("content"), dict) else {}
    target = event.get("redacts") or content.get("redacts")
    return target if isinstance(target, str) else None


class MediaRevocations:
    """`bridge.media.revocations`: notes files of messages, revokes them on redaction."""

    def __init__(self, db: pw.Database, ttl_seconds: int):
        self.db = db
        self.keep_ms = int(ttl_seconds) * 1000
        db.bind(MODELS, bind_refs=False, bind_backrefs=False)
        self._pruned = 0.0
        self._lock = threading.Lock()

    def create_tables(self) -> None:
        with self.db.connection_context():
            self.db.create_tables(MODELS, safe=True)

    def observe(self, event: JsonObject) -> None:
        """Note a message's files, or revoke a redacted message's; never raises."""
        try:
            self._observe(event)
        except Exception:  # noqa: BLE001 - never break the inbox thread
            log.exception("media revocations: cannot handle %s", event.get("event_id"))

    def _observe(self, event: JsonObject) -> None:
        etype = event.get("type")
        room_id, event_id = event.get("room_id"), event.get("event_id")
        if not isinstance(room_id, str) or not isinstance(event_id, str):
            return
        if etype == "m.room.message":
            files = files_of(event.get("content"))
            if files:
                MediaEvent.insert_many(
                    [{"event_id": event_id, "room_id": room_id, "server": server,
                      "media_id": media_id} for server, media_id in files]
                ).on_conflict_ignore().execute()
                self._maybe_prune()
        elif etype == "m.room.redaction":
            target = redacted_id(event)
            if target is not None:
                self.revoke_event(room_id, target)

    def revoke_event(self, room_id: str, event_id: str) -> int:
        """Revoke the files of `event_id` (in `room_id` only); the number revoked."""
        files = [(r.server, r.media_id) for r in MediaEvent.select().where(
            (MediaEvent.event_id == event_id) & (MediaEvent.room_id == room_id))]
        if files:
            MediaRevoked.insert_many(
                [{"server": server, "media_id": media_id} for server, media_id in files]
            ).on_conflict_ignore().execute()
            log.info("revoked the media links of redacted event %s in %s (%d files)",
                     event_id, room_id, len(files))
        return len(files)

    def is_revoked(self, server: str, media_id: str) -> bool:
        return bool(MediaRevoked.select().where(
            (MediaRevoked.server == server) & (MediaRevoked.media_id == media_id)).exists())

    def _maybe_prune(self) -> None:
        now = time.monotonic()
        with self._lock:
            if self._pruned and now - self._pruned < PRUNE_EVERY:
                return
            self._pruned = now
        cutoff = now_ms() - self.keep_ms
        MediaEvent.delete().where(MediaEvent.created_at < cutoff).execute()
        MediaRevoked.delete().where(MediaRevoked.revoked_at < cutoff).execute()
