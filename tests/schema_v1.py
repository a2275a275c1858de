"""The tables as schema version 1 made them (before rows carried their bridge id).

Frozen copies of the old models, so a test can make a database the way a bridge of that
version left it and check that `ircbridge migrate` upgrades it without losing a row.
"""

from __future__ import annotations

import peewee as pw

from bridge.store.models import open_database


class _Old(pw.Model):
    class Meta:
        database = None


class Meta(_Old):
    key = pw.CharField(primary_key=True, max_length=64)
    value = pw.TextField()

    class Meta:
        table_name = "meta"


class RoomLink(_Old):
    network = pw.CharField(max_length=64)
    channel = pw.CharField(max_length=200)
    channel_name = pw.CharField(max_length=200)
    room_id = pw.CharField(max_length=255, unique=True)
    alias = pw.CharField(max_length=255, null=True)
    kind = pw.CharField(max_length=16, default="portal")
    created_at = pw.BigIntegerField(default=0)

    class Meta:
        table_name = "room_link"
        indexes = ((("network", "channel"), True),)


class VirtualUser(_Old):
    user_id = pw.CharField(max_length=255, primary_key=True)
    network = pw.CharField(max_length=64)
    nick = pw.CharField(max_length=100)
    displayname = pw.CharField(max_length=256, null=True)
    created_at = pw.BigIntegerField(default=0)

    class Meta:
        table_name = "virtual_user"


class IrcIdentity(_Old):
    user_id = pw.CharField(max_length=255)
    network = pw.CharField(max_length=64)
    nick = pw.CharField(max_length=100, null=True)
    settings = pw.TextField(default="{}")

    class Meta:
        table_name = "irc_identity"
        indexes = ((("user_id", "network"), True),)


class HsTransaction(_Old):
    txn_id = pw.CharField(max_length=255, primary_key=True)
    digest = pw.CharField(max_length=64)
    received_at = pw.BigIntegerField(default=0)

    class Meta:
        table_name = "hs_transaction"


class InboxEvent(_Old):
    id = pw.BigAutoField()
    event_id = pw.CharField(max_length=255, unique=True)
    room_id = pw.CharField(max_length=255, null=True)
    txn_id = pw.CharField(max_length=255)
    payload = pw.TextField()
    state = pw.SmallIntegerField(default=0, index=True)
    created_at = pw.BigIntegerField(default=0)

    class Meta:
        table_name = "inbox_event"


class OutboxMessage(_Old):
    id = pw.BigAutoField()
    room_id = pw.CharField(max_length=255, index=True)
    network = pw.CharField(max_length=64)
    sender = pw.CharField(max_length=255)
    nick = pw.CharField(max_length=100)
    msgtype = pw.CharField(max_length=32, default="m.text")
    body = pw.TextField()
    html = pw.TextField(null=True)
    ts = pw.BigIntegerField()
    state = pw.SmallIntegerField(default=0, index=True)
    attempts = pw.IntegerField(default=0)
    event_id = pw.CharField(max_length=255, null=True)
    error = pw.TextField(null=True)
    created_at = pw.BigIntegerField(default=0)

    class Meta:
        table_name = "outbox_message"


class Scrollback(_Old):
    id = pw.BigAutoField()
    network = pw.CharField(max_length=64)
    channel = pw.CharField(max_length=200)
    nick = pw.CharField(max_length=100)
    msgtype = pw.CharField(max_length=32, default="m.text")
    body = pw.TextField()
    html = pw.TextField(null=True)
    ts = pw.BigIntegerField()

    class Meta:
        table_name = "scrollback"
        indexes = ((("network", "channel", "id"), False),)


class PmRoom(_Old):
    network = pw.CharField(max_length=64)
    owner = pw.CharField(max_length=255)
    nick = pw.CharField(max_length=100)
    ghost = pw.CharField(max_length=255)
    room_id = pw.CharField(max_length=255, unique=True)
    created_at = pw.BigIntegerField(default=0)

    class Meta:
        table_name = "pm_room"
        indexes = ((("network", "owner", "nick"), True),)


class AdminRoom(_Old):
    room_id = pw.CharField(max_length=255, primary_key=True)
    user_id = pw.CharField(max_length=255, index=True)
    created_at = pw.BigIntegerField(default=0)

    class Meta:
        table_name = "admin_room"


class UserSecret(_Old):
    user_id = pw.CharField(max_length=255)
    network = pw.CharField(max_length=64)
    kind = pw.CharField(max_length=32)
    value = pw.TextField()
    updated_at = pw.BigIntegerField(default=0)

    class Meta:
        table_name = "user_secret"
        indexes = ((("user_id", "network", "kind"), True),)


class PublishedRoom(_Old):
    room_id = pw.CharField(max_length=255, primary_key=True)
    network = pw.CharField(max_length=64)
    published_at = pw.BigIntegerField(default=0)

    class Meta:
        table_name = "published_room"


MODELS = (Meta, RoomLink, VirtualUser, IrcIdentity, HsTransaction, InboxEvent, OutboxMessage,
          Scrollback, PmRoom, AdminRoom, UserSecret, PublishedRoom)


def make_v1_database(url: str) -> None:
    """A version-1 database as two bridges (networks alpha and beta) sharing it left it."""
    db = open_database(url)
    with db.connection_context(), db.bind_ctx(MODELS):
        db.drop_tables(MODELS, safe=True)
        db.create_tables(MODELS)
        Meta.create(key="schema_version", value="1")
        Meta.create(key="txn_prefix", value="abcdef012345")
        RoomLink.create(network="alpha", channel="#a", channel_name="#A", room_id="!a",
                        alias="#irc_alpha_#a:localhost")
        RoomLink.create(network="beta", channel="#b", channel_name="#B", room_id="!b",
                        kind="plumbed")
        VirtualUser.create(user_id="@irc_alpha_bob:localhost", network="alpha", nick="bob")
        VirtualUser.create(user_id="@irc_beta_carol:localhost", network="beta", nick="carol")
        IrcIdentity.create(user_id="@alice:localhost", network="alpha", nick="alice[m]")
        IrcIdentity.create(user_id="@alice:localhost", network="beta", nick="al[m]")
        HsTransaction.create(txn_id="7", digest="d" * 64)
        for n in range(3):
            InboxEvent.create(event_id=f"$in{n}", room_id="!a", txn_id="7",
                              payload=f'{{"event_id": "$in{n}", "room_id": "!a"}}',
                              state=1 if n == 0 else 0)
        for n in range(3):
            OutboxMessage.create(room_id="!a", network="alpha", sender="@irc_alpha_bob:localhost",
                                 nick="bob", body=f"out {n}", ts=n, state=1 if n == 0 else 0,
                                 event_id=f"$out{n}" if n == 0 else None)
        OutboxMessage.create(room_id="!b", network="beta", sender="@irc_beta_carol:localhost",
                             nick="carol", body="beta out", ts=9)
        Scrollback.create(network="beta", channel="#b", nick="carol", body="early", ts=1)
        PmRoom.create(network="alpha", owner="@alice:localhost", nick="bob",
                      ghost="@irc_alpha_bob:localhost", room_id="!pm")
        AdminRoom.create(room_id="!admin", user_id="@alice:localhost")
        UserSecret.create(user_id="@alice:localhost", network="beta", kind="password",
                          value="sealed")
        PublishedRoom.create(room_id="!a", network="alpha")
    db.close()
