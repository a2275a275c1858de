"""Per-room choices of the bridge: `mirror_modes` for linked rooms, `private` once private.

One table of the store's schema (`room_option`, created and upgraded by `Store.migrate`, like
every table of the bridge), read once into memory at start. Its rows carry the bridge's
registration id, as every row of one bridge (store_migrations).

Threads: any thread (the cache has its own lock; peewee keeps a connection per thread).
"""

from __future__ import annotations

import threading

import peewee as pw

from . import migrations as store_migrations
from .models import RoomOption


class RoomOptions:
    """The options table, cached in memory (any thread)."""

    def __init__(self, db: pw.Database, bridge_id: str = "ircbridge"):
        self.db = db
        self.bridge_id = bridge_id
        RoomOption.bind(db, bind_refs=False, bind_backrefs=False)
        self._lock = threading.Lock()
        self._rows: dict[str, tuple[bool, bool]] | None = None

    def load(self) -> None:
        sqlite = isinstance(self.db, pw.SqliteDatabase)
        with self.db.atomic("IMMEDIATE") if sqlite else self.db.atomic():
            if store_migrations.needs_bridge_id(self.db, RoomOption):
                store_migrations.add_bridge_id(self.db, RoomOption, self.bridge_id, ())
            self.db.create_tables([RoomOption], safe=True)
        rows = {r.room_id: (r.mirror_modes, r.private)
                for r in RoomOption.select().where(RoomOption.bridge_id == self.bridge_id)}
        with self._lock:
            self._rows = rows

    def _get(self, room_id: str) -> tuple[bool, bool]:
        with self._lock:
            return (self._rows or {}).get(room_id, (False, False))

    def mirror_modes(self, room_id: str) -> bool:
        return self._get(room_id)[0]

    def private(self, room_id: str) -> bool:
        return self._get(room_id)[1]

    def set(self, room_id: str, *, mirror_modes: bool | None = None,
            private: bool | None = None) -> None:
        mirror, priv = self._get(room_id)
        mirror = mirror if mirror_modes is None else mirror_modes
        priv = priv if private is None else private
        RoomOption.insert(bridge_id=self.bridge_id, room_id=room_id, mirror_modes=mirror,
                          private=priv).on_conflict(
            conflict_target=[RoomOption.bridge_id, RoomOption.room_id],
            update={RoomOption.mirror_modes: mirror, RoomOption.private: priv},
        ).execute()
        with self._lock:
            if self._rows is None:
                self._rows = {}
            self._rows[room_id] = (mirror, priv)
