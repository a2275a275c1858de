"""What the bridge must remember, in SQLite or PostgreSQL, through peewee.

Holds the room <-> channel links, virtual users, Matrix users' IRC settings, the two durable
queues (the inbox of homeserver events, written before a transaction is answered, and the
outbox of IRC lines, written before they are sent to the homeserver), scrollback, the schema
version and the single-instance locks. peewee keeps one connection per thread, so every
thread that calls a Store method gets its own connection.

Several bridges (one per network or group of networks, each with its own registration) may
share one PostgreSQL: every row that belongs to one bridge carries its registration id
(`bridge_id`, the `[appservice] id`) and every query of a `Store` filters on its own, so no
bridge takes another's queues, links, rooms or users. Only `meta` is shared.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import unquote, urlsplit

import peewee as pw
from playhouse.shortcuts import ReconnectMixin

from ..rules.ids import EventId, JsonDict, RoomId, UserId
from . import migrations as store_migrations
from .kinds import LineKind

log = logging.getLogger(__name__)

T = TypeVar("T")

# 2: bridge_id on every row of one bridge; 3: the outbox's kind and private_to columns
SCHEMA_VERSION = 3
DEFAULT_BRIDGE_ID = "ircbridge"  # the default [appservice] id
PENDING, DONE, FAILED = 0, 1, 2


class SchemaOutdated(Exception):
    """The database was made by an older bridge; `ircbridge migrate` brings it up to date."""


class LockHeld(Exception):
    """Another bridge process already serves this network on this database."""


def now_ms() -> int:
    return int(time.time() * 1000)


class BaseModel(pw.Model):
    class Meta:
        database = None  # bound by Store


class Meta(BaseModel):
    key = pw.CharField(primary_key=True, max_length=64)
    value = pw.TextField()

    class Meta:
        table_name = "meta"


class BridgeOwned(BaseModel):
    """A row that belongs to one bridge: its registration id (`[appservice] id`)."""

    bridge_id = pw.CharField(max_length=64, default=store_migrations.UNCLAIMED)


class RoomLink(BridgeOwned):
    """A Matrix room bridged to an IRC channel (a portal made by an alias query, or plumbed).

    A room is linked to one channel per network: a bridge serving two networks may link it
    to a channel of each, and other bridges to theirs."""

    id: pw.AutoField  # the implicit primary key, declared for the type checker only
    network = pw.CharField(max_length=64)
    channel = pw.CharField(max_length=200)  # case-folded, the key
    channel_name = pw.CharField(max_length=200)  # as first seen
    room_id = pw.CharField(max_length=255)
    # The column shadows Model.alias() (never used on this model), which the stubs type as a
    # classmethod.
    alias = pw.CharField(max_length=255, null=True)  # type: ignore[assignment]
    kind = pw.CharField(max_length=16, default="portal")
    created_at = pw.BigIntegerField(default=now_ms)

    class Meta:
        table_name = "room_link"
        indexes = ((("bridge_id", "network", "channel"), True),
                   (("bridge_id", "room_id", "network"), True))


class VirtualUser(BridgeOwned):
    """A Matrix user the bridge registered to stand for an IRC nick."""

    id = pw.BigAutoField()
    user_id = pw.CharField(max_length=255)
    network = pw.CharField(max_length=64)
    nick = pw.CharField(max_length=100)
    displayname = pw.CharField(max_length=256, null=True)
    created_at = pw.BigIntegerField(default=now_ms)

    class Meta:
        table_name = "virtual_user"
        indexes = ((("bridge_id", "user_id"), True),)


class IrcIdentity(BridgeOwned):
    """A Matrix user's settings on one IRC network (their puppet connection)."""

    user_id = pw.CharField(max_length=255)
    network = pw.CharField(max_length=64)
    nick = pw.CharField(max_length=100, null=True)
    settings = pw.TextField(default="{}")

    class Meta:
        table_name = "irc_identity"
        indexes = ((("bridge_id", "user_id", "network"), True),)


class HsTransaction(BridgeOwned):
    """A transaction the homeserver pushed; its events are in InboxEvent.

    txnIds are per application service: two bridges see the same ones."""

    id = pw.BigAutoField()
    txn_id = pw.CharField(max_length=255)
    digest = pw.CharField(max_length=64)
    received_at = pw.BigIntegerField(default=now_ms, index=True)

    class Meta:
        table_name = "hs_transaction"
        indexes = ((("bridge_id", "txn_id"), True),)


class InboxEvent(BridgeOwned):
    """Durable queue homeserver -> bridge: stored before the transaction is answered 200.

    An event pushed to two application services is queued (and handled) by each."""

    id = pw.BigAutoField()
    event_id = pw.CharField(max_length=255)
    room_id = pw.CharField(max_length=255, null=True)
    txn_id = pw.CharField(max_length=255)
    payload = pw.TextField()
    state = pw.SmallIntegerField(default=PENDING)
    created_at = pw.BigIntegerField(default=now_ms, index=True)

    class Meta:
        table_name = "inbox_event"
        indexes = ((("bridge_id", "event_id"), True),
                   (("bridge_id", "state", "id"), False))


class OutboxMessage(BridgeOwned):
    """Durable queue IRC -> homeserver: stored before it is sent; its id makes the txnId."""

    id = pw.BigAutoField()
    room_id = pw.CharField(max_length=255, index=True)
    network = pw.CharField(max_length=64)
    sender = pw.CharField(max_length=255)  # virtual user id
    nick = pw.CharField(max_length=100)
    # A message (msgtype says which) or a state change whose payload is the JSON body.
    kind = pw.CharField(max_length=16, default=LineKind.MESSAGE.value,
                        constraints=[pw.SQL("DEFAULT 'message'")])  # also for copied rows
    msgtype = pw.CharField(max_length=32, default="m.text")
    body = pw.TextField()
    html = pw.TextField(null=True)
    ts = pw.BigIntegerField()
    # A line of a private conversation: the Matrix user it is for; its room is found (or
    # made) in pm_room by (network, private_to, folded nick) when it is sent.
    private_to = pw.CharField(max_length=255, null=True)
    msgid = pw.CharField(max_length=255, null=True)  # the IRC line's msgid tag, if any
    reply_to = pw.CharField(max_length=255, null=True)  # the msgid it replies to (+draft/reply)
    state = pw.SmallIntegerField(default=PENDING)
    attempts = pw.IntegerField(default=0)
    event_id = pw.CharField(max_length=255, null=True)
    error = pw.TextField(null=True)
    created_at = pw.BigIntegerField(default=now_ms, index=True)

    class Meta:
        table_name = "outbox_message"
        # event_id: every reply and edit looks its original up (find_message).
        indexes = ((("bridge_id", "state", "id"), False),
                   (("bridge_id", "event_id"), False))


class Scrollback(BridgeOwned):
    """Lines said in a channel before any room existed for it, replayed when one is made."""

    id = pw.BigAutoField()
    network = pw.CharField(max_length=64)
    channel = pw.CharField(max_length=200)
    nick = pw.CharField(max_length=100)
    msgtype = pw.CharField(max_length=32, default="m.text")
    body = pw.TextField()
    html = pw.TextField(null=True)
    ts = pw.BigIntegerField()
    msgid = pw.CharField(max_length=255, null=True)  # the IRC line's msgid tag, if any

    class Meta:
        table_name = "scrollback"
        indexes = ((("bridge_id", "network", "channel", "id"), False),)


class PmRoom(BridgeOwned):
    """A private conversation: a Matrix user's puppet and one IRC nick share this room."""

    network = pw.CharField(max_length=64)
    owner = pw.CharField(max_length=255)  # the Matrix user
    nick = pw.CharField(max_length=100)  # case-folded
    ghost = pw.CharField(max_length=255)  # the virtual user in the room
    room_id = pw.CharField(max_length=255)
    created_at = pw.BigIntegerField(default=now_ms)

    class Meta:
        table_name = "pm_room"
        indexes = ((("bridge_id", "network", "owner", "nick"), True),
                   (("bridge_id", "room_id"), True))


class BridgeRegistration(BaseModel):
    """What each bridge on this database answers for: its bot and user namespaces.

    Written by every bridge at start, read by the others, so that no bridge makes IRC
    puppets for another bridge's bot or virtual users (see bridge/core/foreign.py)."""

    bridge_id = pw.CharField(max_length=64, primary_key=True)
    bot_user_id = pw.CharField(max_length=255)
    user_regexes = pw.TextField(default="[]")  # JSON list of the registration's user regexes
    updated_at = pw.BigIntegerField(default=now_ms)

    class Meta:
        table_name = "bridge_registration"


# ------------------------------------------------------------ tables of other parts
# The admin rooms (bridge/store/admin_tables.py), the per-room options
# (bridge/store/room_options.py) and the media links (bridge/core/media_revocations.py)
# keep their rows here too: one schema, one version, one migration history.


class AdminRoom(BridgeOwned):
    """A private room between one Matrix user (its owner) and the bridge bot."""

    id = pw.BigAutoField()
    room_id = pw.CharField(max_length=255)
    user_id = pw.CharField(max_length=255, index=True)
    created_at = pw.BigIntegerField(default=now_ms)

    class Meta:
        table_name = "admin_room"
        indexes = ((("bridge_id", "room_id"), True),)


class UserSecret(BridgeOwned):
    """One sealed value per (user, network, kind): password, certificate, autocmds."""

    user_id = pw.CharField(max_length=255)
    network = pw.CharField(max_length=64)
    kind = pw.CharField(max_length=32)
    value = pw.TextField()
    updated_at = pw.BigIntegerField(default=now_ms)

    class Meta:
        table_name = "user_secret"
        indexes = ((("bridge_id", "user_id", "network", "kind"), True),)


class PublishedRoom(BridgeOwned):
    """A portal room listed in the homeserver's room directory for its network."""

    id = pw.BigAutoField()
    room_id = pw.CharField(max_length=255)
    network = pw.CharField(max_length=64)
    published_at = pw.BigIntegerField(default=now_ms)

    class Meta:
        table_name = "published_room"
        indexes = ((("bridge_id", "room_id"), True),)


class RoomOption(BridgeOwned):
    """Per-room choices: `mirror_modes` for linked rooms; `private` once a room is private."""

    id = pw.BigAutoField()
    room_id = pw.CharField(max_length=255)
    mirror_modes = pw.BooleanField(default=False)
    private = pw.BooleanField(default=False)
    relay = pw.CharField(max_length=8, null=True)  # relay override: on, off; None: network's

    class Meta:
        table_name = "room_option"
        indexes = ((("bridge_id", "room_id"), True),)


class MediaEvent(BaseModel):
    """A file a relayed message carried (its url or its thumbnail)."""

    id = pw.BigAutoField()
    event_id = pw.CharField(max_length=255)
    room_id = pw.CharField(max_length=255)
    server = pw.CharField(max_length=255)
    media_id = pw.CharField(max_length=255)
    created_at = pw.BigIntegerField(default=now_ms, index=True)

    class Meta:
        table_name = "media_event"
        indexes = ((("event_id", "server", "media_id"), True),)


class MediaRevoked(BaseModel):
    """A file whose message was redacted: its links answer 410."""

    id = pw.BigAutoField()
    server = pw.CharField(max_length=255)
    media_id = pw.CharField(max_length=255)
    revoked_at = pw.BigIntegerField(default=now_ms, index=True)

    class Meta:
        table_name = "media_revoked"
        indexes = ((("server", "media_id"), True),)


# Table names of the statements written as plain SQL (Store.record_transaction).
_T_INBOX = InboxEvent._meta.table_name
_T_TXN = HsTransaction._meta.table_name

# The tables whose rows belong to one bridge (upgraded by store_migrations).
class MessageId(BridgeOwned):
    """An IRC msgid (IRCv3 message-ids) beside the Matrix event it is, both ways.

    Written when a relayed line reaches the homeserver (IRC -> Matrix) and when the echo of
    a Matrix message comes back from the server with its msgid (Matrix -> IRC). Replies and
    reactions find their target through it; CHATHISTORY catch-up starts after the newest
    msgid of a room. Pruned with the queues (same keep_days)."""

    id = pw.BigAutoField()
    network = pw.CharField(max_length=64)
    msgid = pw.CharField(max_length=255)
    room_id = pw.CharField(max_length=255)
    event_id = pw.CharField(max_length=255)
    ts = pw.BigIntegerField()  # the line's time (server-time, or when it was seen)
    created_at = pw.BigIntegerField(default=now_ms, index=True)

    class Meta:
        table_name = "message_id"
        indexes = ((("bridge_id", "network", "msgid"), True),
                   (("bridge_id", "network", "event_id"), False),
                   (("bridge_id", "room_id", "ts"), False))


OWNED_MODELS: tuple[type[BridgeOwned], ...] = (
    RoomLink,
    VirtualUser,
    IrcIdentity,
    HsTransaction,
    InboxEvent,
    OutboxMessage,
    MessageId,
    Scrollback,
    PmRoom,
    AdminRoom,
    UserSecret,
    PublishedRoom,
    RoomOption,
)
# Files of relayed messages: no bridge id on purpose (bridge/core/media_revocations.py).
MEDIA_MODELS: tuple[type[BaseModel], ...] = (MediaEvent, MediaRevoked)
MODELS: tuple[type[BaseModel], ...] = (Meta, *OWNED_MODELS, BridgeRegistration, *MEDIA_MODELS)


class ReconnectingPostgres(ReconnectMixin, pw.PostgresqlDatabase):
    """Reconnects after the server restarted instead of failing every later query.

    ReconnectMixin only knows MySQL's messages by default; these are psycopg2's.
    """

    reconnect_errors = ReconnectMixin.reconnect_errors + (
        (pw.OperationalError, "server closed the connection"),
        (pw.OperationalError, "terminating connection"),
        (pw.OperationalError, "connection to server"),
        (pw.InterfaceError, "connection already closed"),
    )


def open_database(url: str, sqlite_synchronous: str = "full") -> pw.Database:
    """A peewee database from `sqlite:///path` or `postgresql://user:pass@host:port/db`.

    SQLite runs in WAL mode with `synchronous` = FULL by default: the WAL is synced at every
    commit, so an inbox transaction answered 200 survives a power loss, not only a crash of
    the process (NORMAL syncs only at checkpoints). `[database] sqlite_synchronous = normal`
    trades that for faster commits; docs/operations.md has the figures."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return pw.SqliteDatabase(
            path,
            pragmas={
                "journal_mode": "wal",
                "synchronous": "full" if sqlite_synchronous == "full" else "normal",
                "foreign_keys": 1,
                "busy_timeout": 15000,
            },
            timeout=15,
        )
    parts = urlsplit(url)
    if parts.scheme in ("postgresql", "postgres"):
        return ReconnectingPostgres(
            unquote(parts.path.lstrip("/")) or "postgres",
            user=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            host=parts.hostname,
            port=parts.port or 5432,
            connect_timeout=10,
        )
    raise ValueError(f"unsupported database url scheme: {parts.scheme!r}")


@dataclass(frozen=True)
class Link:
    network: str
    channel: str
    channel_name: str
    room_id: RoomId
    alias: str | None
    kind: str


@dataclass(frozen=True)
class PrivateRoom:
    """A pm_room row: the room a Matrix user and one IRC nick talk in."""

    network: str
    owner: UserId  # the Matrix user
    nick: str  # case-folded
    ghost: UserId  # the virtual user in the room
    room_id: RoomId


@dataclass(frozen=True)
class QueuedLine:
    """One outbox row, as the homeserver senders see it."""

    id: int
    room_id: RoomId
    network: str
    sender: UserId
    nick: str
    msgtype: str
    body: str
    html: str | None
    ts: int
    attempts: int = 0
    kind: LineKind = LineKind.MESSAGE
    private_to: UserId | None = None  # a private conversation's Matrix user (room_id is "")
    msgid: str | None = None  # the IRC line's msgid: stored beside its event once sent
    reply_to: str | None = None  # the msgid it replies to (+draft/reply): m.in_reply_to

    @property
    def lane(self) -> str:
        """Rows of one lane are sent in order: a room's, or one private conversation's."""
        if self.private_to is None:
            return self.room_id
        return f"private {self.network} {self.private_to} {self.nick.casefold()}"


@dataclass(frozen=True)
class IrcLine:
    """A line said on IRC, before it is known whether it goes to a room or to scrollback."""

    network: str
    channel: str  # case-folded
    channel_name: str
    nick: str
    sender: UserId
    msgtype: str
    body: str
    html: str | None
    ts: int
    kind: LineKind = LineKind.MESSAGE
    private_to: UserId | None = None  # a private conversation: the Matrix user it is for
    msgid: str | None = None  # IRCv3 msgid tag
    reply_to: str | None = None  # the msgid its +draft/reply tag names

    @classmethod
    def from_json(cls, text: str) -> IrcLine:
        """A line kept in the stop's spill file (written with dataclasses.asdict)."""
        values = json.loads(text)
        values["kind"] = LineKind(values.get("kind", LineKind.MESSAGE))
        return cls(**values)


class Store:
    """Repository over one bridge's rows (`bridge_id`); safe to call from any thread."""

    def __init__(self, url: str, bridge_id: str = DEFAULT_BRIDGE_ID, *,
                 sqlite_synchronous: str = "full", database: pw.Database | None = None):
        """`database`: share another Store's connections (peewee binds the models to one
        database object per process; tests use it to play two bridges in one process)."""
        self.url = url
        self.bridge_id = bridge_id
        self.db = database or open_database(url, sqlite_synchronous)
        self.db.bind(MODELS, bind_refs=False, bind_backrefs=False)
        self._locks: list[Any] = []
        self._lock_guard = threading.Lock()

    def writing(self) -> AbstractContextManager[object]:
        """A write transaction. On SQLite it takes the write lock up front (BEGIN IMMEDIATE):
        a deferred transaction that read first cannot wait for the lock and fails with
        'database is locked' when another thread wrote meanwhile."""
        if self.is_sqlite:
            return self.db.atomic("IMMEDIATE")
        return self.db.atomic()

    @property
    def is_sqlite(self) -> bool:
        return isinstance(self.db, pw.SqliteDatabase)

    # ---------------------------------------------------------------- schema
    def schema_version(self) -> int | None:
        """The stored schema version; None for an empty database."""
        with self.db.connection_context():
            if not self.db.table_exists(Meta._meta.table_name):
                return None
            row = Meta.get_or_none(Meta.key == "schema_version")
            return int(row.value) if row else 0

    def migrate(self, networks: Iterable[str] = ()) -> tuple[int | None, int]:
        """Create or upgrade the schema; returns (version before, version after).

        `networks` are the networks this bridge serves: old rows of those networks become
        this bridge's (see store_migrations); run it with each bridge's config."""
        before = self.schema_version()
        networks = list(networks)
        with self.db.connection_context(), self.writing():
            for model in OWNED_MODELS:
                if store_migrations.needs_bridge_id(self.db, model):
                    store_migrations.add_bridge_id(self.db, model, self.bridge_id, networks)
            store_migrations.add_outbox_kinds(self.db, OutboxMessage._meta.table_name)
            store_migrations.add_columns(self.db, Scrollback._meta.table_name,
                                         store_migrations.SCROLLBACK_V3_COLUMNS)
            store_migrations.add_columns(self.db, RoomOption._meta.table_name,
                                         {"relay": "VARCHAR(8)"})  # relay mode's override
            self.db.create_tables(MODELS, safe=True)
            for model in OWNED_MODELS:
                store_migrations.claim(self.db, model, self.bridge_id, networks)
            Meta.insert(key="schema_version", value=str(SCHEMA_VERSION)).on_conflict(
                conflict_target=[Meta.key], update={Meta.value: str(SCHEMA_VERSION)}
            ).execute()
            Meta.insert(key="txn_prefix", value=secrets.token_hex(6)).on_conflict_ignore().execute()
        return before, SCHEMA_VERSION

    def open(self, config_name: str = "config.ini", networks: Iterable[str] = ()) -> None:
        """Check the schema before serving: create it when empty, refuse when old (or when
        rows of this bridge's networks were left unclaimed by another bridge's migration)."""
        networks = list(networks)
        version = self.schema_version()
        if version is None:
            log.info("empty database: creating the schema (version %d)", SCHEMA_VERSION)
            self.migrate(networks)
        elif version < SCHEMA_VERSION:
            raise SchemaOutdated(
                f"the database schema is at version {version} and this bridge needs "
                f"{SCHEMA_VERSION}: run `ircbridge -c {config_name} migrate` first"
            )
        elif version > SCHEMA_VERSION:
            raise SchemaOutdated(
                f"the database schema is at version {version}, newer than this bridge "
                f"({SCHEMA_VERSION}): upgrade ircbridge"
            )
        elif networks:
            with self.db.connection_context():
                left = sum(store_migrations.unclaimed(m, networks) for m in OWNED_MODELS)
            if left:
                raise SchemaOutdated(
                    f"{left} rows of network(s) {', '.join(networks)} were kept for their "
                    f"bridge by another bridge's migration: run `ircbridge -c {config_name} "
                    "migrate` first"
                )

    def close(self) -> None:
        if not self.db.is_closed():
            self.db.close()
        self.release_locks()

    def meta(self, key: str) -> str | None:
        row = Meta.get_or_none(Meta.key == key)
        return row.value if row else None

    def txn_prefix(self) -> str:
        """A random prefix made once per database, so outbox txnIds never repeat."""
        value = self.meta("txn_prefix")
        if value is None:
            value = secrets.token_hex(6)
            Meta.insert(key="txn_prefix", value=value).on_conflict_ignore().execute()
            value = self.meta("txn_prefix") or value
        return value

    # ---------------------------------------------------------------- locks
    def acquire_network_lock(self, network: str) -> None:
        """Take the exclusive per-network lock, or raise LockHeld naming the holder."""
        with self._lock_guard:
            if self.is_sqlite:
                path = f"{self.db.database}.{network}.lock"
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
                    os.close(fd)
                    raise LockHeld(
                        f"another bridge (pid {holder}) already serves network {network!r} "
                        f"with this database (lock file {path}); stop it first"
                    ) from None
                os.ftruncate(fd, 0)
                os.write(fd, str(os.getpid()).encode())
                self._locks.append(("file", fd))
            else:
                key = _advisory_key(network)
                conn = self._dedicated_pg_connection()
                with conn.cursor() as cur:
                    cur.execute("SELECT pg_try_advisory_lock(%s)", (key,))
                    (ok,) = cur.fetchone()
                if not ok:
                    conn.close()
                    raise LockHeld(
                        f"another bridge already serves network {network!r} on this "
                        "PostgreSQL database (advisory lock held); stop it first"
                    )
                self._locks.append(("pg", (conn, network)))

    def _dedicated_pg_connection(self) -> Any:
        import psycopg2  # only with the postgres extra

        params = dict(self.db.connect_params)
        conn = psycopg2.connect(dbname=self.db.database, **params)
        conn.autocommit = True
        return conn

    def check_locks(self) -> None:
        """PostgreSQL: an advisory lock dies with its session (e.g. the server restarted).
        Take it again on a new session, or raise LockHeld if another bridge took it."""
        with self._lock_guard:
            locks = list(self._locks)
        for i, (kind, handle) in enumerate(locks):
            if kind != "pg":
                continue
            conn, network = handle
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")
                continue
            except Exception:  # noqa: BLE001 - the session is gone
                log.warning("the lock of network %r was lost with its database session; "
                            "taking it again", network)
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass
            fresh = self._dedicated_pg_connection()
            with fresh.cursor() as cur:
                cur.execute("SELECT pg_try_advisory_lock(%s)", (_advisory_key(network),))
                (ok,) = cur.fetchone()
            if not ok:
                fresh.close()
                raise LockHeld(f"another bridge took network {network!r} while the database "
                               "was restarting")
            with self._lock_guard:
                self._locks[self._locks.index(locks[i])] = ("pg", (fresh, network))

    def release_locks(self) -> None:
        with self._lock_guard:
            for kind, handle in self._locks:
                try:
                    if kind == "file":
                        os.close(handle)
                    else:
                        handle[0].close()
                except Exception:  # noqa: BLE001 - best effort on shutdown
                    log.debug("releasing a lock failed", exc_info=True)
            self._locks.clear()

    # ---------------------------------------------------------------- links
    # ---------------------------------------------------------------- bridges on this database
    def register_bridge(self, bot_user_id: str, user_regexes: list[str]) -> None:
        """Tell the other bridges on this database which users this one answers for."""
        regexes = json.dumps(user_regexes)
        BridgeRegistration.insert(
            bridge_id=self.bridge_id, bot_user_id=bot_user_id, user_regexes=regexes,
        ).on_conflict(
            conflict_target=[BridgeRegistration.bridge_id],
            update={BridgeRegistration.bot_user_id: bot_user_id,
                    BridgeRegistration.user_regexes: regexes,
                    BridgeRegistration.updated_at: now_ms()},
        ).execute()

    def other_bridges(self) -> list[tuple[str, str, list[str]]]:
        """(bridge id, bot user id, user regexes) of every other bridge on this database."""
        rows = BridgeRegistration.select().where(BridgeRegistration.bridge_id != self.bridge_id)
        out = []
        for r in rows.order_by(BridgeRegistration.bridge_id):
            try:
                regexes = [str(x) for x in json.loads(r.user_regexes or "[]")]
            except ValueError:
                regexes = []
            out.append((r.bridge_id, r.bot_user_id, regexes))
        return out

    # ---------------------------------------------------------------- links
    def all_links(self) -> list[Link]:
        rows = RoomLink.select().where(RoomLink.bridge_id == self.bridge_id)
        return [_link(r) for r in rows.order_by(RoomLink.id)]

    def link_for_channel(self, network: str, channel: str) -> Link | None:
        row = RoomLink.get_or_none((RoomLink.bridge_id == self.bridge_id)
                                   & (RoomLink.network == network) & (RoomLink.channel == channel))
        return _link(row) if row else None

    def link_for_room(self, room_id: RoomId) -> Link | None:
        """The room's first link (see links_for_room)."""
        links = self.links_for_room(room_id)
        return links[0] if links else None

    def links_for_room(self, room_id: RoomId) -> list[Link]:
        rows = RoomLink.select().where((RoomLink.bridge_id == self.bridge_id)
                                       & (RoomLink.room_id == room_id))
        return [_link(r) for r in rows.order_by(RoomLink.id)]

    def add_link(
        self, network: str, channel: str, channel_name: str, room_id: RoomId, alias: str | None,
        kind: str = "portal",
    ) -> Link:
        with self.writing():
            RoomLink.insert(
                bridge_id=self.bridge_id, network=network, channel=channel,
                channel_name=channel_name, room_id=room_id, alias=alias, kind=kind,
            ).on_conflict_ignore().execute()
        link = self.link_for_channel(network, channel)
        if link is None:  # the room is linked to another channel of this network
            taken = [lk for lk in self.links_for_room(room_id) if lk.network == network]
            raise ValueError(f"{room_id} is already linked to "
                             f"{taken[0].channel_name if taken else '?'} on {network}")
        return link

    def rekey_link(self, network: str, old: str, new: str) -> None:
        """Store a link under the key its network's CASEMAPPING gives (see Bridge)."""
        with self.writing():
            RoomLink.update(channel=new).where(
                (RoomLink.bridge_id == self.bridge_id) & (RoomLink.network == network)
                & (RoomLink.channel == old)).execute()

    def remove_link(self, room_id: RoomId, network: str | None = None) -> bool:
        """Unlink the room from every network, or from `network` only."""
        where = (RoomLink.bridge_id == self.bridge_id) & (RoomLink.room_id == room_id)
        if network is not None:
            where = where & (RoomLink.network == network)
        return RoomLink.delete().where(where).execute() > 0

    # ---------------------------------------------------------------- users
    def remember_virtual_user(
        self, user_id: UserId, network: str, nick: str, displayname: str
    ) -> None:
        VirtualUser.insert(
            bridge_id=self.bridge_id, user_id=user_id, network=network, nick=nick,
            displayname=displayname,
        ).on_conflict(
            conflict_target=[VirtualUser.bridge_id, VirtualUser.user_id],
            update={VirtualUser.nick: nick, VirtualUser.displayname: displayname},
        ).execute()

    def virtual_user(self, user_id: UserId) -> VirtualUser | None:
        return VirtualUser.get_or_none((VirtualUser.bridge_id == self.bridge_id)
                                       & (VirtualUser.user_id == user_id))

    def identity(self, user_id: str, network: str) -> dict[str, object]:
        row = IrcIdentity.get_or_none(
            (IrcIdentity.bridge_id == self.bridge_id) & (IrcIdentity.user_id == user_id)
            & (IrcIdentity.network == network)
        )
        if row is None:
            return {}
        data = json.loads(row.settings or "{}")
        if row.nick:
            data["nick"] = row.nick
        return data

    def set_identity(self, user_id: str, network: str, **settings: object) -> None:
        current = self.identity(user_id, network)
        current.update(settings)
        nick = current.pop("nick", None)
        IrcIdentity.insert(
            bridge_id=self.bridge_id, user_id=user_id, network=network, nick=nick,
            settings=json.dumps(current),
        ).on_conflict(
            conflict_target=[IrcIdentity.bridge_id, IrcIdentity.user_id, IrcIdentity.network],
            update={IrcIdentity.nick: nick, IrcIdentity.settings: json.dumps(current)},
        ).execute()

    def identities(self, network: str) -> list[tuple[str, dict[str, object]]]:
        rows = IrcIdentity.select().where((IrcIdentity.bridge_id == self.bridge_id)
                                          & (IrcIdentity.network == network))
        return [(r.user_id, self.identity(r.user_id, network)) for r in rows]

    # ---------------------------------------------------------------- private rooms
    def pm_room(self, network: str, owner: UserId, nick: str) -> PrivateRoom | None:
        return _private(PmRoom.get_or_none(
            (PmRoom.bridge_id == self.bridge_id) & (PmRoom.network == network)
            & (PmRoom.owner == owner) & (PmRoom.nick == nick)
        ))

    def pm_for_room(self, room_id: RoomId) -> PrivateRoom | None:
        return _private(PmRoom.get_or_none((PmRoom.bridge_id == self.bridge_id)
                                           & (PmRoom.room_id == room_id)))

    def end_pm_room(self, room_id: RoomId) -> None:
        """The private room was left: the next private message opens a new one."""
        with self.writing():
            PmRoom.delete().where((PmRoom.bridge_id == self.bridge_id)
                                  & (PmRoom.room_id == room_id)).execute()

    def set_pm_room(self, network: str, owner: UserId, nick: str, ghost: UserId,
                    room_id: RoomId) -> None:
        with self.writing():
            PmRoom.delete().where(
                (PmRoom.bridge_id == self.bridge_id) & (PmRoom.network == network)
                & (PmRoom.owner == owner) & (PmRoom.nick == nick)
            ).execute()
            PmRoom.insert(bridge_id=self.bridge_id, network=network, owner=owner, nick=nick,
                          ghost=ghost, room_id=room_id).on_conflict(
                conflict_target=[PmRoom.bridge_id, PmRoom.room_id],
                update={PmRoom.network: network, PmRoom.owner: owner, PmRoom.nick: nick,
                        PmRoom.ghost: ghost},
            ).execute()

    # ---------------------------------------------------------------- message history
    def find_message(self, event_id: EventId, room_id: RoomId
                     ) -> tuple[str, str, str, int] | None:
        """What a Matrix event of `room_id` said, for replies and edits: (origin, who, body, ts).

        origin is "irc" (who = the nick) or "matrix" (who = the sender's user id). Only the
        given room is searched: a reply or edit naming another room's event (a private
        conversation, an admin room) finds nothing.
        """
        row = OutboxMessage.get_or_none((OutboxMessage.bridge_id == self.bridge_id)
                                        & (OutboxMessage.event_id == event_id)
                                        & (OutboxMessage.room_id == room_id))
        if row is not None:
            return "irc", row.nick, row.body, row.ts
        inbox = InboxEvent.get_or_none((InboxEvent.bridge_id == self.bridge_id)
                                       & (InboxEvent.event_id == event_id)
                                       & (InboxEvent.room_id == room_id))
        if inbox is not None:
            event = json.loads(inbox.payload)
            content = content_ if isinstance(content_ := event.get("content"), dict) else {}
            new = content.get("m.new_content")
            body = (new if isinstance(new, dict) else content).get("body")
            return ("matrix", str(event.get("sender")), body if isinstance(body, str) else "",
                    int(event.get("origin_server_ts") or 0))
        return None

    # ---------------------------------------------------------------- IRC msgids
    def link_msgid(self, network: str, msgid: str, room_id: RoomId, event_id: EventId,
                   ts: int) -> None:
        """Remember that IRC's `msgid` on `network` is Matrix's `event_id` in `room_id`
        (the first pairing wins: a msgid names one message)."""
        MessageId.insert(bridge_id=self.bridge_id, network=network, msgid=msgid,
                         room_id=room_id, event_id=event_id, ts=ts).on_conflict_ignore().execute()

    def event_of_msgid(self, network: str, msgid: str) -> tuple[RoomId, EventId] | None:
        """(room_id, event_id) of an IRC msgid, if it was relayed either way."""
        row = MessageId.get_or_none((MessageId.bridge_id == self.bridge_id)
                                    & (MessageId.network == network)
                                    & (MessageId.msgid == msgid))
        return (RoomId(row.room_id), EventId(row.event_id)) if row is not None else None

    def msgid_of_event(self, network: str, event_id: EventId) -> str | None:
        """The IRC msgid of a Matrix event on `network`, if the server gave it one."""
        row = MessageId.get_or_none((MessageId.bridge_id == self.bridge_id)
                                    & (MessageId.network == network)
                                    & (MessageId.event_id == event_id))
        return str(row.msgid) if row is not None else None

    def known_msgids(self, network: str, msgids: Iterable[str]) -> set[str]:
        """Which of these msgids are relayed already (a backfill skips them)."""
        wanted = list(set(msgids))
        if not wanted:
            return set()
        rows = MessageId.select(MessageId.msgid).where(
            (MessageId.bridge_id == self.bridge_id) & (MessageId.network == network)
            & (MessageId.msgid.in_(wanted)))
        return {str(r.msgid) for r in rows}

    def last_msgid(self, network: str, room_id: RoomId) -> tuple[str, int] | None:
        """The newest (msgid, ts) relayed in a room: where a CHATHISTORY catch-up starts."""
        row = (MessageId.select().where((MessageId.bridge_id == self.bridge_id)
                                        & (MessageId.network == network)
                                        & (MessageId.room_id == room_id))
               .order_by(MessageId.ts.desc(), MessageId.id.desc()).first())
        return (str(row.msgid), int(row.ts)) if row is not None else None

    # ---------------------------------------------------------------- inbox
    def record_transaction(self, txn_id: str, events: list[JsonDict]) -> tuple[bool, int]:
        """Store a pushed transaction's events before answering; dedupe by txnId and event_id.

        Returns (seen_before, number of new events queued). A txnId seen before with the same
        events is a retry and a no-op; with other events (Synapse on SQLite restarts its
        counter at 1) the events are still checked one by one.

        One transaction of two statements per 100 events in the usual case (the txnId
        inserted if new, the rows with `ON CONFLICT DO NOTHING`; a retry also updates the
        txnId's digest), written as plain SQL: this runs for every pushed event, and
        building peewee queries row by row cost more than the database did.
        """
        ids = [str(e.get("event_id")) for e in events]
        digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()
        db = self.db
        p = db.param
        with self.writing():
            if not self.is_sqlite:
                # One pushed transaction at a time, as SQLite's BEGIN IMMEDIATE does: the
                # inbox reads rows by increasing id, and two PostgreSQL transactions could
                # commit their ids out of order; the one with the lower ids, committed
                # second, would never be read (until a restart).
                db.execute_sql("SELECT pg_advisory_xact_lock(%s)",
                               (_advisory_key(f"inbox:{self.bridge_id}"),))
            created = now_ms()
            seen = db.execute_sql(
                f"INSERT INTO {_T_TXN} (bridge_id, txn_id, digest, received_at) "
                f"VALUES ({p}, {p}, {p}, {p}) ON CONFLICT (bridge_id, txn_id) DO NOTHING",
                (self.bridge_id, txn_id, digest, created)).rowcount == 0
            if seen:
                found = db.execute_sql(
                    f"SELECT digest FROM {_T_TXN} WHERE bridge_id = {p} AND txn_id = {p}",
                    (self.bridge_id, txn_id)).fetchone()
                if found is not None and found[0] == digest:
                    return True, 0  # a retry of the same transaction: nothing to do
                db.execute_sql(
                    f"UPDATE {_T_TXN} SET digest = {p}, received_at = {p} "
                    f"WHERE bridge_id = {p} AND txn_id = {p}",
                    (digest, created, self.bridge_id, txn_id))
            rows = [
                (self.bridge_id, event_id,
                 room_id if isinstance(room_id := e.get("room_id"), str) else None,
                 txn_id, json.dumps(e, ensure_ascii=False), PENDING, created)
                for event_id, e in zip(ids, events, strict=True)
            ]
            new = 0
            for batch in _chunks(rows, 100):
                values = ", ".join([f"({p}, {p}, {p}, {p}, {p}, {p}, {p})"] * len(batch))
                cursor = db.execute_sql(
                    f"INSERT INTO {_T_INBOX} (bridge_id, event_id, room_id, txn_id, payload, "
                    f"state, created_at) VALUES {values} "
                    "ON CONFLICT (bridge_id, event_id) DO NOTHING",
                    [value for row in batch for value in row])
                new += max(cursor.rowcount, 0)
        return seen, new

    def pending_inbox(
        self, after_id: int = 0, limit: int = 200
    ) -> list[tuple[int, JsonDict]]:
        query = (
            InboxEvent.select(InboxEvent.id, InboxEvent.payload)
            .where((InboxEvent.bridge_id == self.bridge_id) & (InboxEvent.state == PENDING)
                   & (InboxEvent.id > after_id))
            .order_by(InboxEvent.id)
            .limit(limit)
            .tuples()  # plain tuples: no model instance per row
        )
        rows = cast("Iterable[tuple[int, str]]", query)  # peewee's stubs know no .tuples()
        loads = json.loads
        return [(row_id, loads(payload)) for row_id, payload in rows]

    def mark_inbox(self, ids: Iterable[int], state: int = DONE) -> None:
        ids = list(ids)
        for batch in _chunks(ids, 500):
            InboxEvent.update(state=state).where(
                (InboxEvent.bridge_id == self.bridge_id) & InboxEvent.id.in_(batch)).execute()

    def finish_inbox(self, done: list[int], failed: list[int]) -> None:
        """Mark handled (pending) rows done and failed rows failed, in one transaction.

        `state = PENDING` is in the condition for the index: with `bridge_id` and the ids
        alone SQLite searched the (bridge_id, state, id) index by bridge_id only, a scan of
        every row the bridge kept (7 days of them) at each mark.

        On SQLite this one transaction commits with `synchronous = NORMAL` (no fsync; the
        next FULL commit, a pushed transaction's, syncs it with the rest of the WAL): an
        outcome that a power loss takes back makes its event handled again, never lost, as
        does the sent journal, which is not synced either. Holding the write lock through an
        fsync here made the pushed transactions wait for it."""
        if not done and not failed:
            return
        relaxed = None
        if self.is_sqlite:
            relaxed = self.db.execute_sql("PRAGMA synchronous").fetchone()[0]
            if relaxed > 1:
                self.db.execute_sql("PRAGMA synchronous = NORMAL")
        try:
            with self.writing():
                for state, ids in ((DONE, done), (FAILED, failed)):
                    for batch in _chunks(ids, 500):
                        InboxEvent.update(state=state).where(
                            (InboxEvent.bridge_id == self.bridge_id)
                            & (InboxEvent.state == PENDING) & InboxEvent.id.in_(batch)
                        ).execute()
        finally:
            if relaxed is not None and relaxed > 1:  # this thread's other commits stay FULL
                self.db.execute_sql(f"PRAGMA synchronous = {int(relaxed)}")

    def inbox_events(self, ids: list[int]) -> list[JsonDict]:
        rows = InboxEvent.select(InboxEvent.payload).where(
            (InboxEvent.bridge_id == self.bridge_id) & InboxEvent.id.in_(ids))
        return [json.loads(r.payload) for r in rows.order_by(InboxEvent.id)]

    def inbox_depth(self) -> int:
        return InboxEvent.select().where((InboxEvent.bridge_id == self.bridge_id)
                                         & (InboxEvent.state == PENDING)).count()

    def prune(self, max_age_ms: int = 7 * 86400 * 1000) -> int:
        """Forget handled transactions and events older than the window (dedupe stays
        bounded); pending rows stay. Called by bridge.store.retention's timer. Returns rows gone."""
        cutoff = now_ms() - max_age_ms
        with self.writing():
            gone = HsTransaction.delete().where((HsTransaction.bridge_id == self.bridge_id)
                                                & (HsTransaction.received_at < cutoff)).execute()
            gone += InboxEvent.delete().where(
                (InboxEvent.bridge_id == self.bridge_id) & (InboxEvent.state != PENDING)
                & (InboxEvent.created_at < cutoff)
            ).execute()
            gone += OutboxMessage.delete().where(
                (OutboxMessage.bridge_id == self.bridge_id) & (OutboxMessage.state != PENDING)
                & (OutboxMessage.created_at < cutoff)
            ).execute()
            gone += MessageId.delete().where(
                (MessageId.bridge_id == self.bridge_id) & (MessageId.created_at < cutoff)
            ).execute()
        if gone:
            log.info("pruned %d handled rows older than %.1f days", gone, max_age_ms / 86400e3)
        return int(gone)

    def close_connection(self) -> None:
        """Close the calling thread's connection (a thread that ends)."""
        if not self.db.is_closed():
            self.db.close()

    # ---------------------------------------------------------------- outbox / scrollback
    def queue_lines(self, lines: list[IrcLine], rooms: dict[tuple[str, str], RoomId],
                    scrollback_limits: dict[str, int]) -> list[QueuedLine]:
        """Persist IRC lines in one transaction: to the outbox if their channel has a room
        (per `rooms`), else to scrollback (pruned to the network's limit)."""
        queued: list[QueuedLine] = []
        trimmed: set[tuple[str, str]] = set()
        with self.writing():
            for line in lines:
                room_id = rooms.get((line.network, line.channel))
                if line.private_to is not None:
                    room_id = RoomId("")  # resolved (or made) by the sender, in pm_room
                if room_id is None:
                    if line.kind != LineKind.MESSAGE or line.sender.startswith("@") and \
                            line.nick == "":
                        continue  # membership and bridge notices are never scrollback
                    if scrollback_limits.get(line.network, 0) <= 0:
                        continue
                    Scrollback.create(
                        bridge_id=self.bridge_id, network=line.network, channel=line.channel,
                        nick=line.nick,
                        msgtype=line.msgtype, body=line.body, html=line.html, ts=line.ts,
                        msgid=line.msgid,
                    )
                    trimmed.add((line.network, line.channel))
                    continue
                row = OutboxMessage.create(
                    bridge_id=self.bridge_id, room_id=room_id, network=line.network,
                    sender=line.sender, nick=line.nick, kind=line.kind,
                    msgtype=line.msgtype, body=line.body, html=line.html, ts=line.ts,
                    private_to=line.private_to, msgid=line.msgid, reply_to=line.reply_to,
                )
                queued.append(_queued(row))
            for network, channel in trimmed:
                self._trim_scrollback(network, channel, scrollback_limits.get(network, 0))
        return queued

    def _trim_scrollback(self, network: str, channel: str, keep: int) -> None:
        where = ((Scrollback.bridge_id == self.bridge_id) & (Scrollback.network == network)
                 & (Scrollback.channel == channel))
        cutoff = (
            Scrollback.select(Scrollback.id).where(where).order_by(Scrollback.id.desc())
            .offset(keep).limit(1).scalar()
        )
        if cutoff is not None:
            Scrollback.delete().where(where & (Scrollback.id <= cutoff)).execute()

    def replay_scrollback(self, network: str, channel: str, room_id: RoomId,
                          sender_for: Callable[[str], UserId]) -> list[QueuedLine]:
        """Move a channel's scrollback into the outbox of its new room, oldest first."""
        queued: list[QueuedLine] = []
        with self.writing():
            where = ((Scrollback.bridge_id == self.bridge_id) & (Scrollback.network == network)
                     & (Scrollback.channel == channel))
            for sb in Scrollback.select().where(where).order_by(Scrollback.id):
                row = OutboxMessage.create(
                    bridge_id=self.bridge_id, room_id=room_id, network=network,
                    sender=sender_for(sb.nick), nick=sb.nick,
                    msgtype=sb.msgtype, body=sb.body, html=sb.html, ts=sb.ts, msgid=sb.msgid,
                )
                queued.append(_queued(row))
            Scrollback.delete().where(where).execute()
        return queued

    def drop_scrollback(self, network: str, channel: str) -> None:
        """Forget a channel's scrollback (a private channel's room never shows it)."""
        Scrollback.delete().where(
            (Scrollback.network == network) & (Scrollback.channel == channel)).execute()

    def scrollback(self, network: str, channel: str) -> list[Scrollback]:
        where = ((Scrollback.bridge_id == self.bridge_id) & (Scrollback.network == network)
                 & (Scrollback.channel == channel))
        return list(Scrollback.select().where(where).order_by(Scrollback.id))

    def pending_outbox(self) -> list[QueuedLine]:
        rows = OutboxMessage.select().where(
            (OutboxMessage.bridge_id == self.bridge_id) & (OutboxMessage.state == PENDING)
        ).order_by(OutboxMessage.id)
        return [_queued(r) for r in rows]

    def outbox_done(self, ids_and_events: list[tuple[int, EventId]]) -> None:
        with self.writing():
            for row_id, event_id in ids_and_events:
                OutboxMessage.update(state=DONE, event_id=event_id).where(
                    OutboxMessage.id == row_id
                ).execute()

    def outbox_failed(self, row_id: int, error: str) -> None:
        OutboxMessage.update(state=FAILED, error=error[:1000]).where(
            OutboxMessage.id == row_id
        ).execute()

    def outbox_depth(self) -> int:
        return OutboxMessage.select().where((OutboxMessage.bridge_id == self.bridge_id)
                                            & (OutboxMessage.state == PENDING)).count()

    @contextmanager
    def connection(self) -> Iterator[None]:
        """Open this thread's connection if needed; keeps it for the thread's next call."""
        self.db.connect(reuse_if_open=True)
        yield


def _link(row: RoomLink) -> Link:
    return Link(row.network, row.channel, row.channel_name, RoomId(row.room_id), row.alias,
                row.kind)


def _private(row: PmRoom | None) -> PrivateRoom | None:
    if row is None:
        return None
    return PrivateRoom(row.network, UserId(row.owner), row.nick, UserId(row.ghost),
                       RoomId(row.room_id))


def _queued(row: OutboxMessage) -> QueuedLine:
    return QueuedLine(
        id=row.id, room_id=RoomId(row.room_id), network=row.network, sender=UserId(row.sender),
        nick=row.nick,
        msgtype=row.msgtype, body=row.body, html=row.html, ts=row.ts, attempts=row.attempts,
        kind=LineKind(row.kind),
        private_to=UserId(row.private_to) if row.private_to is not None else None,
        msgid=row.msgid, reply_to=row.reply_to,
    )


def _advisory_key(network: str) -> int:
    digest = hashlib.blake2b(f"ircbridge:{network}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
