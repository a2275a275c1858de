"""Per-room choices of the bridge: `mirror_modes` for linked rooms, `private` once private,
`relay` (on/off: the room's override of the network's relay_mode, bridge.core.relay).

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

RELAY_COLUMN = {"relay": "VARCHAR(8)"}  # added to tables made before relay mode


class RoomOptions:
    """The options table, cached in memory (any thread)."""

    def __init__(self, db: pw.Database, bridge_id: str = "ircbridge"):
        self.db = db
        self.bridge_id = bridge_id
        RoomOption.bind(db, bind_refs=False, bind_backrefs=False)
        self._lock = threading.Lock()
        self._rows: dict[str, tuple[bool, bool]] | None = None
        self._relay: dict[str, bool] = {}  # room -> relay override (absent: the network's)

    def load(self) -> None:
        sqlite = isinstance(self.db, pw.SqliteDatabase)
        with self.db.atomic("IMMEDIATE") if sqlite else self.db.atomic():
            if store_migrations.needs_bridge_id(self.db, RoomOption):
                store_migrations.add_bridge_id(self.db, RoomOption, self.bridge_id, ())
            self.db.create_tables([RoomOption], safe=True)
            store_migrations.add_columns(self.db, RoomOption._meta.table_name, RELAY_COLUMN)
        selected = list(RoomOption.select().where(RoomOption.bridge_id == self.bridge_id))
        rows = {r.room_id: (r.mirror_modes, r.private) for r in selected}
        relay = {r.room_id: r.relay == "on" for r in selected if r.relay in ("on", "off")}
        with self._lock:
            self._rows = rows
            self._relay = relay

    def relay(self, room_id: str) -> bool | None:
        """The room's relay override: True (the bot relays everyone), False (own
        connections), None (the network's relay_mode)."""
        with self._lock:
            return self._relay.get(room_id)

    def set_relay(self, room_id: str, relay: bool | None) -> None:
        value = None if relay is None else ("on" if relay else "off")
        mirror, priv = self._get(room_id)
        RoomOption.insert(bridge_id=self.bridge_id, room_id=room_id, mirror_modes=mirror,
                          private=priv, relay=value).on_conflict(
            conflict_target=[RoomOption.bridge_id, RoomOption.room_id],
            update={RoomOption.relay: value},
        ).execute()
        with self._lock:
            if relay is None:
                self._relay.pop(room_id, None)
            else:
                self._relay[room_id] = relay
            if self._rows is None:
                self._rows = {}
            self._rows.setdefault(room_id, (mirror, priv))

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
