"""Relay mode on the wire: the bot says a Matrix user's lines for them.

Where the server offers draft/relaymsg, each line is `RELAYMSG <channel> <nick><sep>m :text`
(the server shows it from a spoofed `alice/m`, with the separator the cap's value names,
`/` by default; Ergo allows it to channel operators); else it is the bot's own
`PRIVMSG <channel> :<alice> text` (`* alice text` for an emote). The lines are queued on the
bot's connection under its flood control; the receipt hears the end once the last one left
or any failed (no echo is awaited: a relayed line comes back from the spoofed nick).

`relayed_by_us`: the server marks a relayed line with a `draft/relaymsg=<relayer>` tag; a line
relayed by one of our nicks is our own and never goes back to Matrix.

`Relays` (one per network) keeps the RELAYMSG lines the server has not yet shown back: a
`FAIL RELAYMSG` (Ergo: the bot is no channel operator there) refuses the oldest one, which is
said again as `<alice> text`, and that channel gets the plain form from then on.

IRC thread only (network.py calls it).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from .receipt import Receipt

log = logging.getLogger(__name__)

CAP = "draft/relaymsg"
MAX_PENDING = 500  # RELAYMSG lines remembered until the server shows them back
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


@dataclass(frozen=True)
class _Sent:
    folded: str
    channel: str
    nick: str
    line: str
    kind: str


class Relays:
    """One network's relayed lines waiting to be shown back, and the channels that refused
    RELAYMSG (IRC thread only)."""

    def __init__(self) -> None:
        self.pending: collections.deque[_Sent] = collections.deque(maxlen=MAX_PENDING)
        self.refused: set[str] = set()  # folded channels where the plain form is used

    def send(self, bot: BotLink, caps: Mapping[str, str], channel: str, folded: str,
             nick: str, lines: Sequence[str], kind: str, receipt: Receipt) -> None:
        if folded in self.refused:
            caps = {k: v for k, v in caps.items() if k != CAP}
        elif separator(caps) is not None:
            self.pending.extend(_Sent(folded, channel, nick, line, kind) for line in lines)
        send(bot, caps, channel, nick, lines, kind, receipt)

    def shown(self, folded: str, text: str) -> None:
        """The server showed one of our relayed lines (its `draft/relaymsg` tag)."""
        for sent in self.pending:
            if sent.folded == folded and text in (sent.line, f"\x01ACTION {sent.line}\x01"):
                self.pending.remove(sent)
                return

    def failed(self, bot: BotLink, reason: str) -> None:
        """`FAIL RELAYMSG ...`: the oldest waiting line was refused; it is said again as
        `<nick> text`, and so is everything after it in that channel."""
        if not self.pending:
            return
        sent = self.pending.popleft()
        if sent.folded not in self.refused:
            log.warning("RELAYMSG refused in %s (%s); relaying as <nick> text there",
                        sent.channel, reason)
        self.refused.add(sent.folded)
        for line in wire_lines({}, sent.channel, sent.nick, [sent.line], sent.kind):
            bot.send(line, channel=sent.channel)
