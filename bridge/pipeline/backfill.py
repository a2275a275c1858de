"""A channel's history from the server (CHATHISTORY), made durable like its live lines.

Two ways in, both through the recorder (bridge.pipeline.outbox), so the order of a
channel's rows stays the recorder's: a new portal's `RoomCreated` carries the server's
recent lines, merged here with the scrollback the bot heard (`replay_with_history`); a
catch-up after a restart or a reconnect is a `HistoryLines` item (`fresh_lines`). Either
way a line is written once: by msgid against what this bridge relayed or queued already
(message_id, outbox, scrollback), and against each other (by msgid, else by nick, text and
time), in time order.

Thread: the recorder (`irc-recorder`); `merge_lines` is pure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from ..rules.ids import RoomId, UserId
from ..store.kinds import LineKind
from ..store.models import (
    IrcLine,
    OutboxMessage,
    QueuedLine,
    Scrollback,
    Store,
)


@dataclass(frozen=True)
class HistoryLines:
    """A marker in the recorder's stream: lines of a channel's history that the bridge may
    have missed (a catch-up); those it has already are dropped."""

    network: str
    channel: str  # folded
    lines: tuple[IrcLine, ...]


def _key(line: IrcLine) -> str:
    return line.msgid or f"\0{line.nick}\0{line.body}\0{line.ts}"


def merge_lines(heard: Iterable[IrcLine], history: Iterable[IrcLine],
                known: set[str]) -> list[IrcLine]:
    """The lines the bot heard and the server's history as one list, in time order (stable),
    each line once; history lines whose msgid is in `known` (relayed already) are left out."""
    seen: set[str] = set()
    out: list[IrcLine] = []
    for line in heard:
        seen.add(_key(line))
        out.append(line)
    for line in history:
        key = _key(line)
        if key in seen or (line.msgid and line.msgid in known):
            continue
        seen.add(key)
        out.append(line)
    out.sort(key=lambda line: line.ts)
    return out


def _chunks(items: list[str], size: int = 500) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def relayed_msgids(store: Store, network: str, msgids: Iterable[str], *,
                   scrollback: bool = True) -> set[str]:
    """Which of these msgids this bridge has already: sent (message_id), queued (outbox),
    or kept as scrollback (unless `scrollback` is False)."""
    wanted = sorted({m for m in msgids if m})
    found: set[str] = set()
    bridge = store.bridge_id
    for chunk in _chunks(wanted):
        found |= store.known_msgids(network, chunk)
        found |= {str(r.msgid) for r in OutboxMessage.select(OutboxMessage.msgid).where(
            (OutboxMessage.bridge_id == bridge) & (OutboxMessage.network == network)
            & OutboxMessage.msgid.in_(chunk))}
        if scrollback:
            found |= {str(r.msgid) for r in Scrollback.select(Scrollback.msgid).where(
                (Scrollback.bridge_id == bridge) & (Scrollback.network == network)
                & Scrollback.msgid.in_(chunk))}
    return found


def _outbox_row(store: Store, room_id: RoomId, line: IrcLine) -> QueuedLine:
    row = OutboxMessage.create(
        bridge_id=store.bridge_id, room_id=room_id, network=line.network, sender=line.sender,
        nick=line.nick, kind=LineKind.MESSAGE, msgtype=line.msgtype, body=line.body,
        html=line.html, ts=line.ts, msgid=line.msgid)
    return QueuedLine(id=row.id, room_id=room_id, network=line.network, sender=line.sender,
                      nick=line.nick, msgtype=line.msgtype, body=line.body, html=line.html,
                      ts=line.ts, msgid=line.msgid)


def replay_with_history(store: Store, network: str, channel: str, room_id: RoomId,
                        history: Iterable[IrcLine],
                        sender_for: Callable[[str], UserId]) -> list[QueuedLine]:
    """A new room's first rows: its scrollback and the server's history, merged (see
    `merge_lines`), into the outbox in time order; the scrollback is emptied."""
    history = list(history)
    with store.writing():
        where = ((Scrollback.bridge_id == store.bridge_id) & (Scrollback.network == network)
                 & (Scrollback.channel == channel))
        heard = [IrcLine(network=network, channel=channel, channel_name=channel, nick=sb.nick,
                         sender=sender_for(sb.nick), msgtype=sb.msgtype, body=sb.body,
                         html=sb.html, ts=sb.ts, msgid=sb.msgid)
                 for sb in Scrollback.select().where(where).order_by(Scrollback.id)]
        known = relayed_msgids(store, network, (line.msgid or "" for line in history),
                               scrollback=False)
        queued = [_outbox_row(store, room_id, line)
                  for line in merge_lines(heard, history, known)]
        Scrollback.delete().where(where).execute()
    return queued


def fresh_lines(store: Store, item: HistoryLines, room_id: RoomId | None) -> list[IrcLine]:
    """A catch-up's lines that the bridge does not have yet, in time order; none older than
    the newest line the room got (a server's replay on JOIN reaches further back than the
    room: those lines would land out of order)."""
    known = relayed_msgids(store, item.network, (line.msgid or "" for line in item.lines))
    last = store.last_msgid(item.network, room_id) if room_id else None
    # A second of slack: some servers keep history times to the second only.
    floor = last[1] - 1000 if last is not None else None
    return [line for line in merge_lines((), item.lines, known)
            if floor is None or line.ts >= floor]
