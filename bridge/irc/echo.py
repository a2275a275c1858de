"""echo-message: a Matrix message counts as delivered when the server echoes it back.

Why: bytes that left the socket may still be refused (+m, +n, a ban: 404, or a standard
reply FAIL), and the echo is the only place the server tells a line's msgid. On a
connection with echo-message every PRIVMSG/NOTICE we write waits here for its echo: matched
by its `label` where labeled-response is on, else by target and text, oldest first. A
refusal settles the line as not delivered; no echo within ECHO_TIMEOUT, or a lost
connection, settles it as today (delivered once written). `MessageSend` counts one
message's lines and calls its Receipt once.

Thread: the IRC thread only (one `EchoWaits` per connection; timers on the IRC thread).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import tags as message_tags
from .receipt import Receipt

if TYPE_CHECKING:
    from .reactor import Timer

ECHO_TIMEOUT = 15.0  # seconds; past it the line counts as delivered (as without echoes)

# settle(ok, error, msgid, ts): how one written line ended.
Settle = Callable[[bool, str | None, str | None, int | None], None]


@dataclass
class _Wait:
    target: str  # folded channel or nick
    text: str  # as the echo's event carries it (an ACTION without its CTCP wrapping)
    label: str | None
    settle: Settle
    timer: Timer | None = None


class EchoWaits:
    """The lines of one connection whose echo has not come yet (IRC thread only)."""

    def __init__(self, call_later: Callable[[float, Callable[[], None]], Timer] | None = None,
                 timeout: float = ECHO_TIMEOUT):
        self.call_later = call_later
        self.timeout = timeout
        self._waits: list[_Wait] = []
        self._labels = itertools.count(1)

    def __len__(self) -> int:
        return len(self._waits)

    def new_label(self) -> str:
        return f"ib{next(self._labels)}"

    def wait(self, target: str, text: str, label: str | None, settle: Settle) -> None:
        """A line was written: wait for its echo (or a refusal, or the timeout)."""
        item = _Wait(target, text, label, settle)
        self._waits.append(item)
        if self.call_later is not None:
            item.timer = self.call_later(self.timeout, lambda: self._expire(item))

    def _take(self, item: _Wait) -> None:
        self._waits.remove(item)
        if item.timer is not None:
            item.timer.cancel()

    def _find(self, target: str | None, text: str | None, label: str | None) -> _Wait | None:
        if label:
            return next((w for w in self._waits if w.label == label), None)
        return next((w for w in self._waits if (target is None or w.target == target)
                     and (text is None or w.text == text)), None)

    def echo(self, target: str, text: str, label: str | None, msgid: str | None,
             ts: int | None) -> bool:
        """Our own line came back; True if it was one we waited for."""
        item = self._find(target, text, label)
        if item is None:
            return False
        self._take(item)
        item.settle(True, None, msgid, ts)
        return True

    def refused(self, target: str | None, label: str | None, reason: str) -> str | None:
        """The server refused a line (404..., FAIL): the oldest waiting for `target` (any
        target for None), or the one with `label`, is not delivered. Its target, or None."""
        item = self._find(target, None, label)
        if item is None:
            return None
        self._take(item)
        item.settle(False, reason, None, None)
        return item.target

    def _expire(self, item: _Wait) -> None:
        if item in self._waits:
            self._waits.remove(item)
            item.settle(True, None, None, None)

    def lost(self) -> None:
        """The link is gone: what was written counts as delivered (no echo will come)."""
        waits, self._waits = self._waits, []
        for item in waits:
            if item.timer is not None:
                item.timer.cancel()
            item.settle(True, None, None, None)


class MessageSend:
    """One message's lines on one connection; its Receipt hears the end once."""

    def __init__(self, caps: Container[str], waits: EchoWaits, count: int,
                 receipt: Receipt):
        self.echo = "echo-message" in caps
        self.labels = self.echo and "labeled-response" in caps
        self.client_tags = "message-tags" in caps
        self.waits = waits
        self.receipt = receipt
        self._remaining = count
        self._failed: str | None = None

    def line(self, command: str, target: str, folded_target: str, text: str,
             echo_text: str, tags: Mapping[str, str] | None = None
             ) -> tuple[str, Callable[[bool, str | None], None]]:
        """The line to queue (with its tags) and its `done` callback for the queue."""
        wanted = dict(tags) if tags and self.client_tags else {}
        label = self.waits.new_label() if self.labels else None
        if label:
            wanted[message_tags.LABEL] = label
        line = message_tags.with_tags(f"{command} {target} :{text}", wanted)

        def written(ok: bool, error: str | None) -> None:
            if not ok or not self.echo:
                self._settle(ok, error, None, None)
                return
            self.waits.wait(folded_target, echo_text, label, self._settle)

        return line, written

    def _settle(self, ok: bool, error: str | None, msgid: str | None, ts: int | None) -> None:
        if not ok and self._failed is None:
            self._failed = error or "not sent"
        if ok and msgid:
            self.receipt.echoed(msgid, ts if ts is not None else 0)
        self._remaining -= 1
        if self._remaining == 0:
            self.receipt.finished(self._failed is None, self._failed)
