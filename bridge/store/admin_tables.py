"""The admin rooms' repository: which room is whose, sealed user secrets, published rooms.

The tables themselves are in the store's one schema (bridge/store/models.py: `AdminRoom`,
`UserSecret`, `PublishedRoom`), created and upgraded by `Store.migrate` with every other table;
`create_tables` here stays safe to call at the admin part's start. Secret values are
written only as `Vault.seal` output: this module never sees a password in the clear.

Every row carries the bridge's registration id (`bridge_id`), so bridges sharing one database
never load each other's admin rooms (a `!storepass` for one network never reaches another
bridge). Tables of schema version 1 are upgraded when the admin part starts, or by
`ircbridge migrate` (see store_migrations).

Thread: the admin startup thread (tables, loading) and the admin lanes (writes), each with its
own connection; `ircbridge migrate` on the main thread of the CLI.
"""

from __future__ import annotations

import logging
from typing import Any

import peewee as pw

from . import migrations as store_migrations
from .models import DEFAULT_BRIDGE_ID, AdminRoom, InboxEvent, PublishedRoom, UserSecret, now_ms

log = logging.getLogger(__name__)


MODELS = (AdminRoom, UserSecret, PublishedRoom)


class AdminStore:
    """Repository over the admin tables; any thread (peewee keeps a connection per thread)."""

    def __init__(self, db: pw.Database, bridge_id: str = DEFAULT_BRIDGE_ID):
        self.db = db
        self.bridge_id = bridge_id
        db.bind(MODELS, bind_refs=False, bind_backrefs=False)

    def create_tables(self, networks: tuple[str, ...] | list[str] = ()) -> None:
        """Create the tables, or upgrade version-1 ones (rows of `networks` become ours)."""
        writing = self.db.atomic("IMMEDIATE") if self.is_sqlite else self.db.atomic()
        with self.db.connection_context(), writing:
            for model in MODELS:
                if store_migrations.needs_bridge_id(self.db, model):
                    store_migrations.add_bridge_id(self.db, model, self.bridge_id, networks)
            self.db.create_tables(MODELS, safe=True)
            for model in MODELS:
                store_migrations.claim(self.db, model, self.bridge_id, networks)

    # ------------------------------------------------------------ admin rooms
    def admin_rooms(self) -> list[tuple[str, str]]:
        """(room_id, owner) pairs, oldest first."""
        rows = AdminRoom.select().where(AdminRoom.bridge_id == self.bridge_id)
        return [(r.room_id, r.user_id)
                for r in rows.order_by(AdminRoom.created_at, AdminRoom.room_id)]

    def add_admin_room(self, room_id: str, user_id: str) -> None:
        AdminRoom.insert(bridge_id=self.bridge_id, room_id=room_id, user_id=user_id,
                         created_at=now_ms()).on_conflict(
            conflict_target=[AdminRoom.bridge_id, AdminRoom.room_id],
            update={AdminRoom.user_id: user_id, AdminRoom.created_at: now_ms()},
        ).execute()

    def remove_admin_room(self, room_id: str) -> None:
        AdminRoom.delete().where((AdminRoom.bridge_id == self.bridge_id)
                                 & (AdminRoom.room_id == room_id)).execute()

    # ------------------------------------------------------------ secrets (sealed)
    def secrets(self) -> list[tuple[str, str, str, str]]:
        return [(r.user_id, r.network, r.kind, r.value)
                for r in UserSecret.select().where(UserSecret.bridge_id == self.bridge_id)]

    def secret(self, user_id: str, network: str, kind: str) -> str | None:
        row = UserSecret.get_or_none((UserSecret.bridge_id == self.bridge_id)
                                     & (UserSecret.user_id == user_id)
                                     & (UserSecret.network == network)
                                     & (UserSecret.kind == kind))
        return row.value if row else None

    def set_secret(self, user_id: str, network: str, kind: str, sealed: str) -> None:
        UserSecret.insert(
            bridge_id=self.bridge_id, user_id=user_id, network=network, kind=kind, value=sealed,
            updated_at=now_ms(),
        ).on_conflict(
            conflict_target=[UserSecret.bridge_id, UserSecret.user_id, UserSecret.network,
                             UserSecret.kind],
            update={UserSecret.value: sealed, UserSecret.updated_at: now_ms()},
        ).execute()

    def remove_secret(self, user_id: str, network: str, kind: str) -> bool:
        return UserSecret.delete().where(
            (UserSecret.bridge_id == self.bridge_id) & (UserSecret.user_id == user_id)
            & (UserSecret.network == network) & (UserSecret.kind == kind)
        ).execute() > 0

    # ------------------------------------------------------------ room directory
    def published(self) -> set[str]:
        return {r.room_id for r in PublishedRoom.select(PublishedRoom.room_id).where(
            PublishedRoom.bridge_id == self.bridge_id)}

    def mark_published(self, room_id: str, network: str) -> None:
        PublishedRoom.insert(bridge_id=self.bridge_id, room_id=room_id,
                             network=network).on_conflict_ignore().execute()

    # ------------------------------------------------------------ inbox hygiene
    def scrub_inbox_event(self, event_id: str, payload: str) -> None:
        """Overwrite a stored homeserver event (a !storepass message) with a scrubbed copy.

        The inbox keeps every pushed event for a week for dedupe; a password typed into
        the admin room must not stay there. On SQLite, secure_delete zeroes the old bytes
        and a TRUNCATE checkpoint empties the write-ahead log that still holds them.
        """
        if self.is_sqlite:
            self.db.execute_sql("PRAGMA secure_delete = ON")
        InboxEvent.update(payload=payload).where((InboxEvent.bridge_id == self.bridge_id)
                                                 & (InboxEvent.event_id == event_id)).execute()

    @property
    def is_sqlite(self) -> bool:
        return isinstance(self.db, pw.SqliteDatabase)

    def checkpoint(self) -> bool:
        """Move the SQLite write-ahead log into the database file and empty it (True when
        done, or nothing to do on PostgreSQL)."""
        if not self.is_sqlite:
            return True
        try:
            row: Any = self.db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except pw.OperationalError as e:
            log.debug("checkpoint failed: %s", e)
            return False
        return bool(row) and row[0] == 0
