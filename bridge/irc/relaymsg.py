"""Relay mode on the wire: the bot says a Matrix user's lines for them.

Where the server offers draft/relaymsg, each line is `RELAYMSG <channel> <nick><sep>m :text`
(the server shows it from a spoofed `alice/m`, with the separator the cap's value names,
`/` by default; Ergo allows it to channel operators); else it is the bot's own
`PRIVMSG <channel> :<alice> text` (`* alice text` for an emote). The lines are queued on the
bot's connection under its flood control; the receipt hears the end once the last one left
or any failed (no echo is awaited: a relayed line comes back from the spoofed nick).

`relayed_by_us`: the server marks a relayed line with a `draft/relaymsg=<relayer>` tag; a line
relayed by one of our nicks is our own and never goes back to Matrix.

IRC thread only (network.py calls it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from .receipt import Receipt

CAP = "draft/relaymsg"
TAG = "draft/relaymsg"
SUFFIX = "m"


class BotLink(Protocol):
    """What relaying needs of the bot's connection (connection.IrcConnection)."""

    def send(self, line: str, *, channel: str | None = None,
             done: Callable[[bool, str | None], None] | None = None,
             before: Callable[[], None] | None = None) -> None: ...


def separator(caps: Mapping[str, str]) -> str | None:
    """The relayed-nick separator the server offers (None: no draft/relaymsg)."""
    if CAP not in caps:
        return None
    value = caps[CAP].strip()
    return value[0] if value else "/"


def wire_lines(caps: Mapping[str, str], channel: str, nick: str, lines: Sequence[str],
               kind: str) -> list[str]:
    """The lines the bot sends for `nick`'s message (see module)."""
    sep = separator(caps)
    command = "NOTICE" if kind == "m.notice" else "PRIVMSG"
    if sep is not None:
        spoofed = f"{nick}{sep}{SUFFIX}"
        return [f"RELAYMSG {channel} {spoofed} :"
                + (f"\x01ACTION {line}\x01" if kind == "m.emote" else line) for line in lines]
    return [f"{command} {channel} :" + (f"* {nick} {line}" if kind == "m.emote"
                                        else f"<{nick}> {line}") for line in lines]


def send(bot: BotLink, caps: Mapping[str, str], channel: str, nick: str,
         lines: Sequence[str], kind: str, receipt: Receipt) -> None:
    wire = wire_lines(caps, channel, nick, lines, kind)
    if not wire:
        receipt.finished(True, None)
        return
    remaining = [len(wire)]
    failed: list[str] = []

    def one_done(ok: bool, error: str | None) -> None:
        if not ok and not failed:
            failed.append(error or "not sent")
        remaining[0] -= 1
        if remaining[0] == 0:
            receipt.finished(not failed, failed[0] if failed else None)

    for i, line in enumerate(wire):
        bot.send(line, channel=channel, done=one_done,
                 before=receipt.started if i == 0 else None)


def relayed_by_us(tags: Mapping[str, str], ours: Callable[[str], bool]) -> bool:
    """A line the server relayed for one of our nicks (RELAYMSG): our own."""
    relayer = tags.get(TAG)
    return bool(relayer) and ours(relayer or "")
