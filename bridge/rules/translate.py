"""What a Matrix message becomes on IRC: edits, replies, media, pills and long messages.

The text rules themselves are pure (bridge.rules.formatting); this module adds what needs the
bridge's memory: the original of an edited or replied-to message, the IRC nick of a Matrix
user, a media link or a paste of a long message. Those come in as callables, so the
translation stays testable without a homeserver.

Thread: any thread: pure given its callables; the Matrix -> IRC path calls it on the inbox
thread.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from . import formatting, multiline
from .ids import JsonDict
from .multiline import Limits as MultilineLimits

log = logging.getLogger(__name__)

TEXT_TYPES = ("m.text", "m.notice", "m.emote")
MEDIA_TYPES = ("m.image", "m.file", "m.video", "m.audio")
SHORT_REPLY_MS = 5 * 60 * 1000  # replies to messages newer than this use "nick: text"
# A user pill as clients write it. Possessive, and no part crosses a "<", so a body full
# of unclosed pills costs one pass (a lazy `(.*?)</a>` re-read the rest for each).
_PILL = re.compile(
    r'<a\s++href=["\']https://matrix\.to/#/(@[^"\'<>]++)["\']\s*+>[^<]*+</a>', re.I
)


class MediaLinker(Protocol):
    def link(self, mxc: str, filename: str | None) -> str: ...

    def paste(self, text: str, filename: str = "message.txt") -> str: ...


@dataclass(frozen=True)
class Origin:
    """Where an earlier message came from: IRC (who = nick) or Matrix (who = user id)."""

    origin: str
    who: str
    body: str
    ts: int


@dataclass
class Context:
    budget: int  # bytes of text per IRC line
    max_lines: int
    find_message: Callable[[str], Origin | None]
    nick_for_user: Callable[[str], str]
    media: MediaLinker | None = None
    now_ms: Callable[[], int] = lambda: int(time.time() * 1000)
    paste: bool = True  # the sender's choice: long messages as a link (True) or every line
    # The server's draft/multiline limits (None: no batches): a multi-line message that fits
    # goes as one batch (multiline.Continued marks a split line's continuations), no paste.
    multiline: MultilineLimits | None = None


def _html_of(content: JsonDict) -> str | None:
    if content.get("format") != "org.matrix.custom.html":
        return None
    html = content.get("formatted_body")
    if not isinstance(html, str) or len(html) > formatting.MAX_HTML_CHARS:
        return None  # past the cap the plain body is used: parsing must stay cheap
    return html


def _pills_to_nicks(html: str, ctx: Context) -> str:
    def replace(match: re.Match[str]) -> str:
        from html import escape
        from urllib.parse import unquote

        return escape(ctx.nick_for_user(unquote(match.group(1))))

    return _PILL.sub(replace, html)


def _origin_nick(origin: Origin, ctx: Context) -> str:
    return origin.who if origin.origin == "irc" else ctx.nick_for_user(origin.who)


def to_irc(content: JsonDict, ctx: Context) -> tuple[list[str], str]:
    """IRC lines and kind (m.text, m.notice, m.emote) for one m.room.message content."""
    msgtype = content.get("msgtype")
    body = content.get("body")
    if not isinstance(body, str):
        return [], "m.text"
    kind = msgtype if isinstance(msgtype, str) and msgtype in TEXT_TYPES else "m.text"
    budget = ctx.budget - (len("\x01ACTION \x01") if kind == "m.emote" else 0)
    relates = relates_ if isinstance(relates_ := content.get("m.relates_to"), dict) else {}
    if relates.get("rel_type") == "m.replace":
        return _edit(content, relates, ctx, budget), kind
    if msgtype in MEDIA_TYPES:
        return _media(content, body, ctx, budget), kind
    body, html = _reply(content, body, relates, ctx)
    lines = formatting.matrix_body_to_irc_lines(body, html, budget)
    if ctx.multiline is not None and kind != "m.emote" and len(lines) > 1:
        batch = multiline.plan(body, html, budget, ctx.multiline)
        if batch is not None:
            return batch, kind
    if len(lines) > ctx.max_lines and ctx.media is not None and ctx.paste:
        return _pasted(lines, html, body, ctx, budget), kind
    return lines, kind


def _edit(content: JsonDict, relates: dict[str, object], ctx: Context,
          budget: int) -> list[str]:
    """An edit: a short `s/old/new/` or `* new text` (IRC has no edits)."""
    new_content = content.get("m.new_content")
    new_body = new_content.get("body") if isinstance(new_content, dict) else None
    if not isinstance(new_body, str):
        return []
    original = ctx.find_message(str(relates.get("event_id")))
    text = formatting.edit_text(original.body, new_body) if original else "* " + new_body
    return formatting.matrix_body_to_irc_lines(text, None, budget)[: ctx.max_lines]


def _media(content: JsonDict, body: str, ctx: Context, budget: int) -> list[str]:
    """A file: its caption and a link served by the bridge."""
    url = content.get("url")
    link = url if isinstance(url, str) else ""
    # With `filename` present, `body` is a caption (spec v1.10).
    filename = name if isinstance(name := content.get("filename"), str) else body
    if isinstance(url, str) and ctx.media is not None:
        try:
            link = ctx.media.link(url, filename)
        except ValueError:
            link = url
    return formatting.matrix_body_to_irc_lines(f"{body} {link}".strip(), None, budget)


def _reply(content: JsonDict, body: str, relates: dict[str, object],
           ctx: Context) -> tuple[str, str | None]:
    """The text to send: a reply reads `nick: text`; pills become nicks."""
    html = _html_of(content)
    reply_to = relates.get("m.in_reply_to")
    if not (isinstance(reply_to, dict) and isinstance(reply_to.get("event_id"), str)):
        return body, _pills_to_nicks(html, ctx) if html is not None else None
    original = ctx.find_message(reply_to["event_id"])
    own = formatting.strip_reply_fallback(body)
    if html is not None:
        html = formatting.strip_mx_reply(html)
        own = formatting.html_to_irc(_pills_to_nicks(html, ctx))
    if original is None:
        return own, None
    short = ctx.now_ms() - original.ts < SHORT_REPLY_MS
    return formatting.reply_text(_origin_nick(original, ctx), original.body, own,
                                 short=short), None


def _pasted(lines: list[str], html: str | None, body: str, ctx: Context,
            budget: int) -> list[str]:
    """Too many lines: the first one and a link to the whole text."""
    assert ctx.media is not None
    full = formatting.html_to_irc(html) if html else body
    try:
        link = ctx.media.paste(formatting.strip_irc_formatting(full))
    except Exception as e:  # noqa: BLE001 - too long and no paste: send it all instead
        log.warning("could not upload a long message (%s); sending every line", e)
        return lines
    suffix = f" … (full message: {link})"
    first = formatting.split_for_irc(lines[0], max(8, budget - len(suffix.encode())))[0]
    return [first + suffix]
