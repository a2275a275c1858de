"""draft/multiline on the wire: one Matrix message as one BATCH, one received BATCH as one line.

Out: `batch_lines` gives `BATCH +ref draft/multiline <target>`, the message's PRIVMSG (or
NOTICE) lines tagged `batch=ref` (and `draft/multiline-concat` on a split line's
continuations, bridge.rules.multiline.Continued) and `BATCH -ref`, when the connection has
the capability and the message fits its limits; else None (the lines go one by one, as
before). The caller queues the lines under the connection's flood control.

In: `IncomingBatches` (one per link) keeps the PRIVMSG/NOTICE lines of an open
`draft/multiline` batch and, at `BATCH -ref`, gives one event with the joined text and the
BATCH line's tags (msgid, time: where Ergo puts them), which the network relays like any
line. A batch is bounded (MAX_LINES / MAX_BYTES): past that its
lines are relayed one by one.

IRC thread only (connection.py / network.py call it).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import irc.client

from ..rules.multiline import CAP, CONCAT_TAG, Continued, fits, joined, limits
from . import tags as message_tags
from .echo import EchoWaits, MessageSend
from .events import tag_map
from .receipt import Receipt


class Link(Protocol):
    """What a batch needs of a connection (connection.IrcConnection)."""

    echoes: EchoWaits
    fold: Callable[[str], str]

    def send(self, line: str, *, channel: str | None = None,
             done: Callable[[bool, str | None], None] | None = None,
             before: Callable[[], None] | None = None, more: Sequence[str] = ()) -> None: ...

MAX_LINES = 1000  # lines kept of one received batch
MAX_BYTES = 64 * 1024  # bytes kept of one received batch
_refs = itertools.count(1)


def batch_lines(caps: Mapping[str, str], command: str, target: str,
                lines: Sequence[str]) -> list[str] | None:
    """The wire lines of one multiline batch, or None when `caps` cannot carry it (no
    capability, one line, over the advertised max-bytes / max-lines)."""
    limit = limits(caps)
    if limit is None or len(lines) < 2 or not fits(lines, limit):
        return None
    ref = f"ml{next(_refs)}"
    out = [f"BATCH +{ref} {CAP} {target}"]
    for line in lines:
        tags = f"batch={ref}" + (f";{CONCAT_TAG}" if isinstance(line, Continued) else "")
        out.append(f"@{tags} {command} {target} :{line}")
    out.append(f"BATCH -{ref}")
    return out


def send_batch(conn: Link, target: str, channel: str | None, command: str,
               lines: Sequence[str], receipt: Receipt, tags: Mapping[str, str] | None,
               caps: Mapping[str, str]) -> bool:
    """Queue `lines` as one batch on `conn` (False: they cannot go as one, nothing queued).
    The batch is one message: client tags (a reply's) on its BATCH line, one echo awaited
    for its whole text (echo-message), `receipt.finished` once its last line left or was
    echoed, or any line failed."""
    wire = batch_lines(caps, command, target, lines)
    if wire is None:
        return False
    if "message-tags" in caps:
        wire[0] = message_tags.with_tags(wire[0], tags)
    text = joined([(line, isinstance(line, Continued)) for line in lines])
    no_labels = [cap for cap in caps if cap != "labeled-response"]  # the echo is matched
    _, written = MessageSend(no_labels, conn.echoes, 1, receipt).line(  # by its text
        command, target, conn.fold(target), text, text)
    # One queue item: the whole batch leaves in one step, or (the link lost before it
    # left) all of it goes on the next link; never an opening BATCH on one link and its
    # lines on the next.
    conn.send(wire[0], channel=channel, done=written, before=receipt.started, more=wire[1:])
    return True


@dataclass
class _Open:
    target: str
    tags: list[dict[str, str | None]] = field(default_factory=list)  # the BATCH line's
    source: irc.client.NickMask | None = None
    first: irc.client.Event | None = None
    parts: list[tuple[str, bool]] = field(default_factory=list)
    size: int = 0
    full: bool = False


class IncomingBatches:
    """The draft/multiline batches open on one link (IRC thread only)."""

    def __init__(self) -> None:
        self._open: dict[str, _Open] = {}

    def batch(self, event: irc.client.Event) -> irc.client.Event | None:
        """A BATCH line: `+ref draft/multiline target` opens one, `-ref` closes it and gives
        the message (an event like the first line's, its text the whole message), or None."""
        words = [w for w in [event.target, *(event.arguments or [])] if w]
        if not words:
            return None
        ref = words[0]
        if ref.startswith("+"):
            if len(words) >= 3 and words[1] == CAP:
                self._open[ref[1:]] = _Open(words[2], list(event.tags or []))
            return None
        if not ref.startswith("-"):
            return None
        found = self._open.pop(ref[1:], None)
        if found is None or found.first is None or not found.parts:
            return None
        first = found.first
        # The message's msgid and time are on the BATCH line (Ergo); the first line's
        # tags fill in the rest.
        tags = [t for t in found.tags if t.get("key") != "batch"]
        keys = {t.get("key") for t in tags}
        tags += [t for t in (first.tags or [])
                 if t.get("key") not in ("batch", CONCAT_TAG) and t.get("key") not in keys]
        return irc.client.Event(first.type, first.source, first.target,
                                [joined(found.parts)], tags)

    def take(self, event: irc.client.Event, text: str) -> bool:
        """Keep a PRIVMSG/NOTICE line of an open multiline batch (True), or leave it to be
        relayed as it is (False: no batch tag, not ours, or the batch is full)."""
        if not self._open:
            return False
        tags = tag_map(event.tags)
        found = self._open.get(tags.get("batch", ""))
        if found is None or found.full:
            return False
        if found.size + len(text) > MAX_BYTES or len(found.parts) >= MAX_LINES:
            found.full = True  # the rest goes line by line
            return False
        if found.first is None:
            found.first = event
        found.parts.append((text, CONCAT_TAG in tags))
        found.size += len(text)
        return True

    def clear(self) -> None:
        self._open.clear()
