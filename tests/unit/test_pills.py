"""IRC -> Matrix pills: a mention of a Matrix user's puppet nick becomes a matrix.to link.

Pills are made per text run, before the HTML is rendered, so a nick that is also a tag or
attribute name (`a`, `b`, `href`, `font`) or an entity name (`amp`, `lt`) never rewrites
the markup. The path under test is the bridge's own: `IrcToMatrix.irc_message`.
"""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any, cast

import pytest

from bridge.core.irc_to_matrix import IrcToMatrix
from bridge.core.lines import LineQueue
from bridge.irc.events import IrcKind, IrcMessage
from bridge.store.models import IrcLine


class _Lines(LineQueue):
    """The real line queue, keeping what it is given instead of handing it to a recorder."""

    def __init__(self) -> None:
        self.lines: list[IrcLine] = []

    def _put(self, line: IrcLine) -> None:
        self.lines.append(line)


class _Directory:
    def sender_for_nick(self, network: str, nick: str) -> str:
        return f"@irc_{nick}:hs"

    def has_room(self, network: str, channel: str) -> bool:
        return True  # a bridged channel: its lines are recorded


class _Privacy:
    # The state rows this path never delivers.
    state_power = state_join_rule = state_private = state_invite = None

    def may_relay(self, network: str, channel: str) -> bool:
        return True  # a public channel


def _part(lines: _Lines) -> IrcToMatrix:
    """The real IrcToMatrix, given stand-ins for the collaborators this path uses."""
    none = cast(Any, None)
    return IrcToMatrix(none, none, none, none, none, none, {}, none, cast(Any, _Directory()),
                       cast(Any, lines), cast(Any, _Privacy()))


class _Reader(HTMLParser):
    """The text of an HTML body and the (href, text) of its links; fails on stray markup."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.links: list[tuple[str, str]] = []
        self.open: list[str] = []
        self._href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        assert tag in ("a", "b", "i", "u", "del", "code", "font"), tag
        self.open.append(tag)
        if tag == "a":
            assert [k for k, _ in attrs] == ["href"], attrs
            self._href = attrs[0][1]
            self.links.append((str(self._href), ""))

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open.pop() == tag, tag

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self.open and self.open[-1] == "a":
            href, text = self.links[-1]
            self.links[-1] = (href, text + data)


def relay(text: str, mentions: dict[str, str]) -> IrcLine:
    lines = _Lines()
    _part(lines).irc_message(IrcMessage("local", "#chan", "bob", text, IrcKind.PRIVMSG, 1,
                                        mentions))
    (line,) = lines.lines
    return line


def pill(user_id: str) -> str:
    return f"https://matrix.to/#/{user_id}"


@pytest.mark.parametrize(("text", "mentions"), [
    ("a: look at href and <font>", {"a": "@a:hs", "href": "@href:hs", "font": "@font:hs"}),
    ("\x02b\x02 said hi to b", {"b": "@b:hs"}),
    ("x & amp < lt", {"amp": "@amp:hs", "lt": "@lt:hs"}),
    ("alice and a and al", {"alice": "@alice:hs", "a": "@a:hs", "al": "@al:hs"}),
    ("quot said \"hi\" to gt", {"quot": "@quot:hs", "gt": "@gt:hs"}),
    ("matrix and to and https", {"matrix": "@m:hs", "to": "@to:hs", "https": "@h:hs"}),
])
def test_nicks_that_are_html_words_become_pills_without_breaking_the_message(
        text: str, mentions: dict[str, str]) -> None:
    line = relay(text, mentions)
    assert line.html is not None
    reader = _Reader()
    reader.feed(line.html)
    reader.close()
    assert reader.open == []
    assert "".join(reader.text) == line.body
    assert sorted(set(reader.links)) == sorted({(pill(u), n) for n, u in mentions.items()})


def test_every_mention_is_a_pill_and_the_rest_stays_text() -> None:
    line = relay("a: see <b>href</b>", {"a": "@a:hs", "href": "@href:hs"})
    assert line.body == "a: see <b>href</b>"
    assert line.html == (f'<a href="{pill("@a:hs")}">a</a>: see &lt;b&gt;'
                         f'<a href="{pill("@href:hs")}">href</a>&lt;/b&gt;')


def test_without_mentions_plain_text_has_no_html() -> None:
    assert relay("hello a", {}).html is None
