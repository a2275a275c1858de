"""IRCv3 draft/multiline as text rules: the server's limits, a Matrix message's lines as a
batch's chunks (long lines split with `draft/multiline-concat`), a received batch's text.

Why a module: a multi-line Matrix message goes to IRC as one multiline BATCH where the server
offers it (no paste link, no line limit), within the server's `max-bytes` / `max-lines`;
beyond them the old rules apply (every line, or a paste link past `max_lines`). A chunk that
continues the line before it is a `Continued` string, so everything that takes the lines as
plain `str` (a connection without the capability) still sends them, one PRIVMSG each.

Pure; any thread (translate.py calls it on the inbox thread, irc/multiline.py on the IRC
thread).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from . import formatting

CAP = "draft/multiline"
CONCAT_TAG = "draft/multiline-concat"


@dataclass(frozen=True)
class Limits:
    """What the server takes in one multiline batch (its `draft/multiline` value)."""

    max_bytes: int  # total bytes of the message's text (required by the spec)
    max_lines: int = 0  # lines (PRIVMSGs) in one batch; 0: no limit


class Continued(str):
    """A chunk that continues the line before it (sent with `draft/multiline-concat`)."""

    __slots__ = ()


def limits(caps: Mapping[str, str]) -> Limits | None:
    """The multiline limits of a connection's enabled caps; None when it cannot batch
    (no `batch` or `draft/multiline`, or no usable `max-bytes`)."""
    if CAP not in caps or "batch" not in caps:
        return None
    values: dict[str, str] = {}
    for item in caps[CAP].split(","):
        key, _, value = item.partition("=")
        values[key.strip()] = value.strip()
    try:
        max_bytes = int(values.get("max-bytes", ""))
        max_lines = int(values.get("max-lines") or 0)
    except ValueError:
        return None
    if max_bytes <= 0 or max_lines < 0:
        return None
    return Limits(max_bytes, max_lines)


def content_bytes(lines: Sequence[str]) -> int:
    """The bytes a batch's text counts: every chunk, and a newline between two lines (none
    before a `Continued` chunk)."""
    total = 0
    for i, line in enumerate(lines):
        total += len(line.encode("utf-8", "replace"))
        if i and not isinstance(line, Continued):
            total += 1
    return total


def fits(lines: Sequence[str], limit: Limits) -> bool:
    return (limit.max_lines == 0 or len(lines) <= limit.max_lines) \
        and content_bytes(lines) <= limit.max_bytes


def split_line(line: str, budget: int) -> list[str]:
    """One line as chunks of at most `budget` bytes whose concatenation is the line: the
    space a break drops (formatting.split_for_irc) is kept at the end of the chunk before,
    and no formatting is reopened (the receiver joins the chunks as they are)."""
    if len(line.encode("utf-8", "replace")) <= budget:
        return [line]
    parts = formatting.split_for_irc(line, max(formatting._MIN_CHUNK_BYTES, budget - 1))
    out: list[str] = []
    position = 0
    for part in parts:
        at = line.find(part, position)
        if at < 0:  # the splitter changed the text (a lone surrogate): take its chunks
            return [parts[0], *(Continued(p) for p in parts[1:])]
        if out:
            out[-1] = type(out[-1])(out[-1] + line[position:at])  # the dropped space
        out.append(Continued(part) if out else part)
        position = at + len(part)
    if out and position < len(line):
        out[-1] = type(out[-1])(out[-1] + line[position:])
    return out


def plan(body: str, html: str | None, budget: int, limit: Limits) -> list[str] | None:
    """A Matrix message's chunks for one multiline batch (lines of at most `budget` bytes,
    continuations as `Continued`), or None when it is one short line (nothing to batch) or
    does not fit the server's limits (then the plain rules apply)."""
    logical = formatting.matrix_body_to_irc_lines(body, html, max(limit.max_bytes, budget))
    chunks: list[str] = []
    for line in logical:
        chunks.extend(split_line(line, budget))
    if len(chunks) < 2 or not fits(chunks, limit):
        return None
    return chunks


def joined(parts: Sequence[tuple[str, bool]]) -> str:
    """A received batch's text: its lines (text, concat) joined by newlines, a concat line
    straight onto the one before."""
    text = ""
    for i, (part, concat) in enumerate(parts):
        text += part if (concat or i == 0) else "\n" + part
    return text
