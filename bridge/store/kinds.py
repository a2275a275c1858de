"""What an outbox row carries: a message, or one typed change of a room's state.

An IRC->Matrix row is a message (its `msgtype` says m.text, m.notice or m.emote) or one of
the state changes below, each with a payload dataclass stored as JSON in the row's body.
`encode` and `decode` are the only places that know the JSON form; everything else passes
the dataclasses. Pure (no I/O); any thread.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from enum import StrEnum


class LineKind(StrEnum):
    """The `kind` column of outbox_message."""

    MESSAGE = "message"  # m.room.message; the row's msgtype says which
    JOIN = "join"  # a nick joined the channel: its virtual user joins the room
    LEAVE = "leave"  # parted, quit or changed nick: its virtual user leaves
    KICK = "kick"  # kicked on IRC: the bot kicks its virtual user
    TOPIC = "topic"  # the channel's topic, set by its virtual user
    POWER = "power"  # a member's highest channel prefix, as a power level
    JOIN_RULE = "joinrule"  # the channel became invite-only, or public again
    SYNC = "sync"  # who is in the channel now, as the bot found it
    PRIVATE = "private"  # the channel turned private: the portal becomes invite-only
    INVITE = "invite"  # a Matrix user's puppet joined a private channel: invite them
    REACTION = "reaction"  # an IRC +draft/react: an m.reaction of the virtual user


@dataclass(frozen=True)
class Join:
    ts: int | None = None


@dataclass(frozen=True)
class Leave:
    reason: str = ""
    by: str | None = None  # who kicked (KICK rows)
    netsplit: bool = False


@dataclass(frozen=True)
class Topic:
    topic: str


@dataclass(frozen=True)
class Power:
    level: int
    matrix_user: bool  # the member is a Matrix user's puppet (no virtual user to make)


@dataclass(frozen=True)
class JoinRule:
    invite: bool


@dataclass(frozen=True)
class Sync:
    nicks: tuple[str, ...]


@dataclass(frozen=True)
class MadePrivate:
    why: str


@dataclass(frozen=True)
class Invite:
    pass


@dataclass(frozen=True)
class Reaction:
    key: str
    msgid: str  # the IRC line reacted to


Payload = Join | Leave | Topic | Power | JoinRule | Sync | MadePrivate | Invite | Reaction

_TYPES: dict[LineKind, type[Payload]] = {
    LineKind.JOIN: Join,
    LineKind.LEAVE: Leave,
    LineKind.KICK: Leave,
    LineKind.TOPIC: Topic,
    LineKind.POWER: Power,
    LineKind.JOIN_RULE: JoinRule,
    LineKind.SYNC: Sync,
    LineKind.PRIVATE: MadePrivate,
    LineKind.INVITE: Invite,
    LineKind.REACTION: Reaction,
}


def encode(payload: Payload) -> str:
    """The JSON body of a state row."""
    return json.dumps(dataclasses.asdict(payload), separators=(",", ":"))


def decode(kind: LineKind, body: str) -> Payload:
    """The payload of a state row (unknown fields of another version are ignored)."""
    cls = _TYPES[kind]
    raw = json.loads(body or "{}")
    fields = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in raw.items() if k in fields} if isinstance(raw, dict) else {}
    if cls is Sync:
        values["nicks"] = tuple(str(n) for n in values.get("nicks") or ())
    return cls(**values)
