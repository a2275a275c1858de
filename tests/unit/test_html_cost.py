"""One Matrix message must not stall the inbox thread: hostile formatted_body costs no more
than an ordinary one of the same size.

No absolute times: each hostile body is timed against a baseline message of the same length
measured in the same test (best of a few runs each, so a busy machine hurts both alike).
Before the fix, 30 KB of `<a ` openers cost hundreds of times the baseline (the quadratic
re-scans of html.parser, and lazy `.*?` patterns for pills and reply fallbacks).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from bridge.rules import formatting, translate

SIZE = 30_000  # characters: under the HTML cap, so the parser really reads them
RATIO = 8  # a hostile body may cost at most this many baselines
BASELINE = ('<p>Hello <b>world</b>, see <a href="https://example.org/x">this link</a> and '
            '<a href="https://matrix.to/#/@alice:example.org">Alice</a></p>\n')
OPENERS = {
    "tag openers": "<a",
    "tag openers and spaces": "<a ",
    "unclosed attribute values": "<a x='",
    "unclosed double-quoted values": '<a x="y ',
    "comment openers": "<!--",
    "reply fallback openers": "<mx-reply>",
    "pill openers": '<a href="https://matrix.to/#/@',
    "whole pill openers": '<a href="https://matrix.to/#/@u:hs">',
    "end tag openers": "</",
    "declarations": "<!",
    "marked sections": "<![CDATA[",
    "processing instructions": "<?",
    "lone brackets": "<",
    "script bodies": "<script></",
    "entities": "&#x",
}


def _ctx() -> translate.Context:
    return translate.Context(budget=400, max_lines=5, find_message=lambda _e: None,
                             nick_for_user=lambda user_id: "nick")


def _content(html: str, reply: bool) -> dict[str, Any]:
    content: dict[str, Any] = {"msgtype": "m.text", "body": "plain body",
                               "format": "org.matrix.custom.html", "formatted_body": html}
    if reply:
        content["m.relates_to"] = {"m.in_reply_to": {"event_id": "$earlier"}}
    return content


def _cost(content: dict[str, Any], runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        translate.to_irc(content, _ctx())
        best = min(best, time.perf_counter() - start)
    return best


def _fill(unit: str, size: int = SIZE) -> str:
    return (unit * (size // len(unit) + 1))[:size]


@pytest.mark.parametrize("reply", [False, True], ids=["message", "reply"])
@pytest.mark.parametrize("name", list(OPENERS))
def test_hostile_html_costs_no_more_than_an_ordinary_message(name: str, reply: bool) -> None:
    baseline = _cost(_content(_fill(BASELINE), reply))
    hostile = _cost(_content(_fill(OPENERS[name]), reply), runs=1)
    if hostile > RATIO * baseline:  # one slow run may be the machine: measure again
        hostile = _cost(_content(_fill(OPENERS[name]), reply))
    assert hostile <= RATIO * baseline, (
        f"{name}: {hostile:.3f} s against a baseline of {baseline:.3f} s "
        f"({hostile / baseline:.0f}x)")


def test_html_past_the_cap_falls_back_to_the_plain_body() -> None:
    body = "the plain text of a very long message"
    html = _fill("<b>formatted</b> ", formatting.MAX_HTML_CHARS + 1)
    content = {"msgtype": "m.text", "body": body, "format": "org.matrix.custom.html",
               "formatted_body": html}
    assert translate.to_irc(content, _ctx()) == ([body], "m.text")
    within = {**content, "formatted_body": "<b>formatted</b>"}
    assert translate.to_irc(within, _ctx()) == (["\x02formatted\x02"], "m.text")


def test_hostile_html_still_reads_as_its_text() -> None:
    """What the sanitising keeps: stray brackets are text, comments and declarations go."""
    cases = {
        "a <a b": "a <a b",
        "x <!-- hidden --> y": "x y",
        "x <!-- never closed": "x <!-- never closed",
        "<![CDATA[x]]>y": "y",
        "1 < 2 and 3 > 2": "1 < 2 and 3 > 2",
        '<a href="https://e.org/">e</a> <a x=\'': "e (https://e.org/) <a x='",
        "<b>bold</b> <i": "\x02bold\x02 <i",
        "<mx-reply>quoted</mx-reply>own": "own",
        "<mx-reply>never closed": "",
    }
    for html, text in cases.items():
        assert formatting.html_to_irc(html) == text, html
