"""Message translation between IRC and Matrix, checked as users would see it.

Tables cover the cases people notice (a bold word arrives bold, a <script> from IRC arrives
escaped, a three-line message becomes three IRC lines, a long emoji line is split into valid
UTF-8 under the byte budget). Hypothesis properties cover what must hold for any input: no
CR/LF/NUL/\\x01 ever reaches an IRC line, chunks fit their budget, and the HTML we send to
Matrix is well-formed with no markup that IRC users wrote.
"""

from __future__ import annotations

import re
from html import unescape
from html.parser import HTMLParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.rules import formatting
from bridge.rules.formatting import (
    IRC_LINE_LIMIT,
    edit_text,
    emote_to_ctcp,
    html_to_irc,
    irc_to_matrix,
    matrix_body_to_irc_lines,
    parse_ctcp,
    payload_budget,
    reply_text,
    sanitize_line,
    split_for_irc,
    split_lines,
    strip_irc_formatting,
    strip_reply_fallback,
)

B, C, H, RS, M, R, IT, S, U = "\x02", "\x03", "\x04", "\x0f", "\x11", "\x16", "\x1d", "\x1e", "\x1f"
UNSAFE = ("\r", "\n", "\0", "\x01")
FR, DE = "\U0001F1EB\U0001F1F7", "\U0001F1E9\U0001F1EA"  # flag emoji: two code points each


def nbytes(text: str) -> int:
    return len(text.encode("utf-8"))


# --------------------------------------------------------------------------------------
# split_lines / sanitize_line
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("one\ntwo\nthree", ["one", "two", "three"]),  # three lines -> three IRC lines
        ("one\r\ntwo", ["one", "two"]),
        ("one\rtwo", ["one", "two"]),
        ("one\u2028two\u2029three\x85four", ["one", "two", "three", "four"]),
        ("a\n\nb", ["a", "", "b"]),
        ("trailing\n\n\n", ["trailing"]),
        ("", []),
        ("\n\n", []),
        ("nul\0byte", ["nulbyte"]),
        (f"{S}strike{S} {IT}italic{IT}", [f"{S}strike{S} {IT}italic{IT}"]),  # not line breaks
    ],
)
def test_split_lines(text: str, expected: list[str]) -> None:
    assert split_lines(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hi\r\nQUIT :bye", "hiQUIT :bye"),  # no command injection
        ("\x01VERSION\x01", "VERSION"),  # no unintended CTCP
        ("a\0b", "ab"),
        (f"{B}bold{B} {C}04red", f"{B}bold{B} {C}04red"),  # formatting codes kept
        ("plain text", "plain text"),
    ],
)
def test_sanitize_line(text: str, expected: str) -> None:
    assert sanitize_line(text) == expected


# --------------------------------------------------------------------------------------
# split_for_irc / payload_budget
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "max_bytes", "expected"),
    [
        ("", 10, []),
        ("hello world", 100, ["hello world"]),
        ("hello world foo bar", 11, ["hello world", "foo bar"]),  # word boundary, space dropped
        ("abcd efgh", 4, ["abcd", "efgh"]),  # window ends right before a space
        ("abcdefghij", 4, ["abcd", "efgh", "ij"]),  # no space: hard break
        (" abcdefg", 4, [" abc", "defg"]),  # never an empty chunk
        ("éééé", 5, ["éé", "éé"]),  # 2-byte characters never cut
        ("e\u0301" * 4, 7, ["e\u0301e\u0301", "e\u0301e\u0301"]),  # accent stays on its letter
        (FR + DE, 8, [FR, DE]),  # flags are never cut in half
        (f"ab{C}12cd", 4, ["ab", f"{C}12c", "d"]),  # colour code kept whole
        ("a\ud800b", 10, ["a\ufffdb"]),  # lone surrogate cannot be encoded
    ],
)
def test_split_for_irc(text: str, max_bytes: int, expected: list[str]) -> None:
    assert split_for_irc(text, max_bytes) == expected


def test_split_for_irc_long_emoji_line_fits_budget() -> None:
    text = "\U0001F600" * 150  # 600 bytes of emoji
    budget = payload_budget("PRIVMSG", "#chan")
    chunks = split_for_irc(text, budget)
    assert len(chunks) == 2
    assert all(nbytes(c) <= budget for c in chunks)
    assert "".join(chunks) == text
    for chunk in chunks:
        assert chunk.encode("utf-8").decode("utf-8") == chunk


def test_split_for_irc_keeps_zwj_emoji_together() -> None:
    family = "\U0001F468\u200d\U0001F469\u200d\U0001F467"  # 18 bytes, one user-visible glyph
    chunks = split_for_irc(family * 3, 20)
    assert chunks == [family] * 3


@pytest.mark.parametrize("max_bytes", [3, 0, -5])
def test_split_for_irc_rejects_tiny_budget(max_bytes: int) -> None:
    with pytest.raises(ValueError):
        split_for_irc("text", max_bytes)


@pytest.mark.parametrize(
    ("command", "target", "prefix_len", "expected"),
    [
        ("PRIVMSG", "#chan", 0, 512 - (1 + 100 + 1 + 7 + 1 + 5 + 2 + 2)),  # conservative default
        ("PRIVMSG", "#chan", 30, 512 - (1 + 30 + 1 + 7 + 1 + 5 + 2 + 2)),
        ("NOTICE", "bob", 20, 512 - (1 + 20 + 1 + 6 + 1 + 3 + 2 + 2)),
        ("PRIVMSG", "#café", 10, 512 - (1 + 10 + 1 + 7 + 1 + 6 + 2 + 2)),  # bytes, not chars
    ],
)
def test_payload_budget(command: str, target: str, prefix_len: int, expected: int) -> None:
    assert payload_budget(command, target, prefix_len) == expected


@pytest.mark.parametrize("prefix_len", [1, 40, 100])
def test_payload_budget_fills_exactly_one_irc_line(prefix_len: int) -> None:
    budget = payload_budget("PRIVMSG", "#room", prefix_len)
    line = f":{'n' * prefix_len} PRIVMSG #room :{'x' * budget}\r\n"
    assert nbytes(line) == IRC_LINE_LIMIT


# --------------------------------------------------------------------------------------
# IRC -> Matrix
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "body", "html"),
    [
        ("just text", "just text", None),
        ("<script>alert(1)</script>", "<script>alert(1)</script>", None),  # plain stays plain
        (f"{B}hi{B} there", "hi there", "<b>hi</b> there"),
        (f"{IT}it{IT}", "it", "<i>it</i>"),
        (f"{U}un{U}", "un", "<u>un</u>"),
        (f"{S}gone{S}", "gone", "<del>gone</del>"),
        (f"{M}x = 1{M}", "x = 1", "<code>x = 1</code>"),
        (f"{C}04red", "red", '<font data-mx-color="#ff0000">red</font>'),
        (f"{C}1,8x", "x", '<font data-mx-color="#000000" data-mx-bg-color="#ffff00">x</font>'),
        (f"{C}52x", "x", '<font data-mx-color="#ff0000">x</font>'),  # extended palette
        (f"{C}88x", "x", '<font data-mx-color="#000000">x</font>'),
        (f"{C}99x", "x", None),  # 99 = default colour
        (f"{H}FF8800orange", "orange", '<font data-mx-color="#ff8800">orange</font>'),
        (f"{H}ff0000,0000ffx", "x",
         '<font data-mx-color="#ff0000" data-mx-bg-color="#0000ff">x</font>'),
        (f"{C}12345", "345", '<font data-mx-color="#0000fc">345</font>'),  # at most 2 digits
        (f"{C}4,x", ",x", '<font data-mx-color="#ff0000">,x</font>'),  # comma without digit is text
        (f"{C},5x", ",5x", None),  # bare \x03 resets, the rest is text
        (f"{C}04red{C} plain", "red plain", '<font data-mx-color="#ff0000">red</font> plain'),
        (f"{B}<script>{B}", "<script>", "<b>&lt;script&gt;</b>"),  # IRC cannot inject markup
        (f'{B}"a" & b{B}', '"a" & b', "<b>&quot;a&quot; &amp; b</b>"),
        (f"{B}a{IT}b{B}c{IT}", "abc", "<b>a<i>b</i></b><i>c</i>"),  # overlapping, reopened
        (f"{B}{IT}ab{RS}c", "abc", "<b><i>ab</i></b>c"),  # reset closes everything
        (f"{B}open", "open", "<b>open</b>"),  # closed at the end
        (f"{C}04{B}x{C}y", "xy", '<b><font data-mx-color="#ff0000">x</font>y</b>'),
        (f"{C}04,01{R}x", "x", '<font data-mx-color="#000000" data-mx-bg-color="#ff0000">x</font>'),
        (f"{R}x", "x", None),  # reverse without colours: ignored
        (f"see {B}https://e.org/?a=1&b=2{B}", "see https://e.org/?a=1&b=2",
         "see <b>https://e.org/?a=1&amp;b=2</b>"),  # URL stays text, escaped
    ],
)
def test_irc_to_matrix(text: str, body: str, html: str | None) -> None:
    assert irc_to_matrix(text) == (body, html)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"{B}b{B} {C}04,01c{C} {H}ff0000,00ff00d{RS} {IT}i{IT}{U}u{U}{S}s{S}{M}m{M}{R}r",
         "b c d iusmr"),
        (f"{C}1234", "34"),
        (f"{C},5", ",5"),
        ("nothing to strip", "nothing to strip"),
    ],
)
def test_strip_irc_formatting(text: str, expected: str) -> None:
    assert strip_irc_formatting(text) == expected


# --------------------------------------------------------------------------------------
# Matrix HTML -> IRC
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        ("<b>bold</b> word", f"{B}bold{B} word"),
        ("<strong>bold</strong>", f"{B}bold{B}"),
        ("<i>a</i><em>b</em>", f"{IT}a{IT}{IT}b{IT}"),
        ("<u>under</u>", f"{U}under{U}"),
        ("<del>a</del><s>b</s><strike>c</strike>", f"{S}a{S}{S}b{S}{S}c{S}"),
        ("run <code>ls -l</code>", f"run {M}ls -l{M}"),
        ("<b>a <b>b</b> c</b>", f"{B}a b c{B}"),  # nested same style does not toggle off
        ("<b><i>x</b>y</i>", f"{B}{IT}x{IT}{B}y"),  # misnested: closed in order
        ("<b>unclosed", f"{B}unclosed"),
        ("<b>a<br>b</b>", f"{B}a\n{B}b{B}"),  # every IRC line is bold again
        ("<a href='https://example.com'>site</a>", "site (https://example.com)"),
        ("<a href='https://example.com'>https://example.com</a>", "https://example.com"),
        ("<a href='http://example.com/'>example.com</a>", "example.com"),  # linkified text
        ("<a href='https://example.com'></a>", "https://example.com"),
        ("<a href='https://matrix.to/#/@alice:ex.org'>Alice</a>: hi", "Alice: hi"),  # pill
        ("<a href='https://matrix.to/#/#room:ex.org'>#room:ex.org</a>", "#room:ex.org"),
        ("<a href='https://matrix.to/#/!r:x/$ev'>this</a>", "this (https://matrix.to/#/!r:x/$ev)"),
        ("a<br>b<br/>c", "a\nb\nc"),
        ("<p>one</p>\n<p>two</p>\n", "one\ntwo"),
        ("<div>a</div><div>b</div>", "a\nb"),
        ("<h1>Title</h1>text", f"{B}Title{B}\ntext"),
        ("<ul>\n<li>one</li>\n<li>two</li>\n</ul>\n", "• one\n• two"),
        ("<ol><li>a</li><li>b</li></ol>", "1. a\n2. b"),
        ("<ol start='3'><li>c</li><li>d</li></ol>", "3. c\n4. d"),
        ("<ul><li>a<ul><li>b</li></ul></li></ul>", "• a\n  • b"),
        ("<blockquote>quoted<br>two</blockquote>reply", "> quoted\n> two\nreply"),
        ("<blockquote><blockquote>deep</blockquote></blockquote>", "> > deep"),
        ("<mx-reply><blockquote><a href='https://matrix.to/#/@a:b'>a</a> old</blockquote>"
         "</mx-reply>new", "new"),
        ("<img src='mxc://x/y' alt=':cat:'> meow", ":cat: meow"),
        ("<img src='mxc://x/y'>", ""),
        ("<font data-mx-color='#ff0000'>red</font> plain", f"{C}04red{C} plain"),
        ("<font color='#FE0101'>near red</font>", f"{C}04near red{C}"),
        ("<span data-mx-bg-color='#ffff00'>hl</span>", f"{C}99,08hl{C}"),
        ("<font data-mx-color='#ff0000'>r<font data-mx-color='#0000fc'>b</font>r</font>",
         f"{C}04r{C}12b{C}04r{C}"),
        ("<font data-mx-color='#ff0000'>x</font>5", f"{C}04x{C}{B}{B}5"),  # 5 stays text
        ("<span data-mx-color='not-a-colour'>x</span>", "x"),
        ("&lt;b&gt; &amp; &quot;q&quot; &eacute;", '<b> & "q" é'),
        ("a<script>alert(1)</script>b<style>p{}</style>c", "abc"),
        ("<pre><code>line1\n  line2\n</code></pre>", "line1\n  line2"),
        ("<pre>a\n\nb</pre>", "a\n\nb"),
        ("<p>  lots   of\n  space  </p>", "lots of space"),
        ("<br><br>a<br><br>", "a"),
        ("a\x01b\x00c\x03d\re", "abcd e"),  # control characters from Matrix never pass
        ("<table><tr><td>a</td><td>b</td></tr><tr><td>c</td></tr></table>", "a b\nc"),
        ("</i>stray", "stray"),
        ("a < b > c", "a < b > c"),
        ("a <![ b <b>bold</b>", f"a <![ b {B}bold{B}"),  # html.parser would raise here
        ("<![CDATA[x]]>y", "y"),
        ("", ""),
    ],
)
def test_html_to_irc(html: str, expected: str) -> None:
    assert html_to_irc(html) == expected


def test_html_to_irc_survives_a_parser_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(self: object, data: str) -> None:
        raise AssertionError("parser bug")

    monkeypatch.setattr(formatting._IrcRenderer, "feed", explode)
    html = "<p>first &amp; <b>second</b></p><mx-reply>quote</mx-reply><script>x</script>third"
    assert html_to_irc(html) == "first & second\nthird"


# --------------------------------------------------------------------------------------
# matrix_body_to_irc_lines
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "html", "expected"),
    [
        ("one\ntwo\nthree", None, ["one", "two", "three"]),
        ("a\n\n\nb", None, ["a", "b"]),  # empty lines are not sent
        ("**bold**", "<b>bold</b>", [f"{B}bold{B}"]),  # html preferred
        ("hi\r\nQUIT :bye", None, ["hi", "QUIT :bye"]),  # each stays inside its own PRIVMSG
        ("\x01VERSION\x01", None, ["VERSION"]),
        ("fallback", "<mx-reply>only a quote</mx-reply>", ["fallback"]),
        ("   \n\t\n", None, []),
        ("x", "<p>para one</p><p>para two</p>", ["para one", "para two"]),
    ],
)
def test_matrix_body_to_irc_lines(body: str, html: str | None, expected: list[str]) -> None:
    assert matrix_body_to_irc_lines(body, html, 400) == expected


def test_long_message_split_under_budget() -> None:
    budget = payload_budget("PRIVMSG", "#chan", 40)
    lines = matrix_body_to_irc_lines("word " * 300, None, budget)
    assert len(lines) >= 4
    assert all(nbytes(line) <= budget for line in lines)
    assert " ".join(lines).split() == ["word"] * 300  # nothing lost


def test_long_bold_line_is_bold_in_every_chunk() -> None:
    lines = matrix_body_to_irc_lines("", "<b>" + "bold " * 100 + "</b>", 120)
    assert len(lines) > 2
    for line in lines:
        assert nbytes(line) <= 120
        assert irc_to_matrix(line)[1].startswith("<b>")


def test_coloured_chunk_start_keeps_digits_visible() -> None:
    html = "<font data-mx-color='#ff0000'>" + "1" * 100 + "</font>"
    lines = matrix_body_to_irc_lines("", html, 40)
    assert "".join(irc_to_matrix(line)[0] for line in lines) == "1" * 100


def test_matrix_body_to_irc_lines_rejects_tiny_budget() -> None:
    with pytest.raises(ValueError):
        matrix_body_to_irc_lines("text", None, 2)


# --------------------------------------------------------------------------------------
# Replies, edits, CTCP
# --------------------------------------------------------------------------------------

LONG = "This is a rather long message that goes on and on"


@pytest.mark.parametrize(
    ("nick", "quoted", "text", "short", "expected"),
    [
        ("alice", "anything", "yes", True, "alice: yes"),
        ("alice", "hello there", "yes", False, '<alice> "hello there" <- yes'),
        ("alice", LONG, "yes", False, f'<alice> "{LONG[:40].rstrip()}…" <- yes'),
        ("alice", "x" * 40, "ok", False, f'<alice> "{"x" * 40}" <- ok'),  # exactly 40: no cut
        ("alice", "line one\nline two", "ok", False, '<alice> "line one line two" <- ok'),
        ("alice", "> <@bob:hs> older\n\nactual", "ok", False, '<alice> "actual" <- ok'),
        ("alice", f"{B}bold{B} {C}04red", "ok", False, '<alice> "bold red" <- ok'),
        ("alice", "", "ok", False, "alice: ok"),
    ],
)
def test_reply_text(nick: str, quoted: str, text: str, short: bool, expected: str) -> None:
    assert reply_text(nick, quoted, text, short=short) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("> <@a:b> quoted\n> more\n\nreply", "reply"),
        ("> just a quote\n\nnot a fallback", "> just a quote\n\nnot a fallback"),
        ("plain", "plain"),
    ],
)
def test_strip_reply_fallback(body: str, expected: str) -> None:
    assert strip_reply_fallback(body) == expected


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("I really like teh cat", "I really like the cat", "s/teh/the/"),
        ("meet at 5pm tomorrow in the lobby", "meet at 6pm tomorrow in the lobby", "s/5pm/6pm/"),
        ("please review the pull request today", "please review the second pull request today",
         "s/pull/second pull/"),
        ("the quick brown fox jumps over it", "the slow fox jumps over it", "s/quick brown/slow/"),
        ("path a/b is right here", "path a/c is right here", r"s/a\/b/a\/c/"),
        ("hello", "goodbye", "* goodbye"),  # "* new" is shorter
        ("hello", "hello world", "* hello world"),
        ("no no no", "no yes no", "* no yes no"),  # s/no/yes/ would change the first "no"
        ("a quick brown fox jumps over the lazy dog", "a slow brown fox jumps over the happy dog",
         "* a slow brown fox jumps over the happy dog"),  # two changes
        ("line one\nline two", "line one line two", "* line one line two"),
        ("same", "same", "* same"),
    ],
)
def test_edit_text(old: str, new: str, expected: str) -> None:
    assert edit_text(old, new) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("waves", "\x01ACTION waves\x01"),
        ("a\r\nPRIVMSG #x :b", "\x01ACTION a PRIVMSG #x :b\x01"),
        ("\x01VERSION\x01", "\x01ACTION VERSION\x01"),
        (f"{B}loudly{B}", f"\x01ACTION {B}loudly{B}\x01"),
    ],
)
def test_emote_to_ctcp(text: str, expected: str) -> None:
    assert emote_to_ctcp(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\x01ACTION waves\x01", ("ACTION", "waves")),
        ("\x01ACTION waves", ("ACTION", "waves")),  # closing \x01 optional
        ("\x01ACTION waves at you\x01", ("ACTION", "waves at you")),
        ("\x01VERSION\x01", ("VERSION", "")),
        ("\x01action hi\x01", ("ACTION", "hi")),
        ("hello", None),
        ("\x01\x01", None),
        ("", None),
    ],
)
def test_parse_ctcp(text: str, expected: tuple[str, str] | None) -> None:
    assert parse_ctcp(text) == expected


@given(st.text())
def test_emote_round_trips(text: str) -> None:
    command, args = parse_ctcp(emote_to_ctcp(text)) or ("", "")
    assert command == "ACTION"
    assert not any(ch in args for ch in UNSAFE)


# --------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------

IRC_ALPHABET = st.sampled_from(
    list("ab ,0123459<>&\"'é") + [B, C, H, RS, M, R, IT, S, U, "\U0001F600", "\u0301", "fF"]
)
HTML_PIECES = st.sampled_from([
    "<b>", "</b>", "<i>", "</i>", "<p>", "</p>", "<br>", "<ul>", "<li>", "</li>", "</ul>",
    "<ol start='x'>", "<pre>", "</pre>", "\n", "<blockquote>", "</blockquote>", "<mx-reply>",
    "</mx-reply>", "<a href='https://e.org'>", "<a href='https://matrix.to/#/@u:s'>", "</a>",
    "<font data-mx-color='#ff0000'>", "<span data-mx-bg-color='#00f'>", "</font>", "</span>",
    "<code>", "</code>", "<img alt='x\r\ny'>", "<script>", "</script>", "&lt;", "&#13;", "&#x1;",
    "&#0;", "\x01", "\0", "\r", "word", " ", "1", ",", "<", ">", "&", "<!--", "-->", "<![", "]]>",
    "\u2028", "é", "\U0001F600",
])
html_like = st.lists(HTML_PIECES | st.text(max_size=5), max_size=30).map("".join)


def rejoins(chunks: list[str], text: str) -> bool:
    """Whether text == the chunks joined, each join being "" or one dropped space.

    A space right after the last chunk may be dropped too (it was a break point).
    """
    ends = {0}
    for chunk in chunks:
        ends = {
            p + gap + len(chunk)
            for p in ends
            for gap in (0, 1)
            if (gap == 0 or text[p : p + 1] == " ") and text.startswith(chunk, p + gap)
        }
    return len(text) in ends or (text.endswith(" ") and len(text) - 1 in ends)


@settings(deadline=None)
@given(st.text(), st.integers(min_value=4, max_value=64))
def test_split_for_irc_chunks_fit_and_rejoin(text: str, max_bytes: int) -> None:
    chunks = split_for_irc(text, max_bytes)
    for chunk in chunks:
        assert chunk
        assert nbytes(chunk) <= max_bytes
        assert chunk.encode("utf-8").decode("utf-8") == chunk
    assert rejoins(chunks, text)


@settings(deadline=None)
@given(st.lists(st.sampled_from("abcé "), min_size=1), st.integers(min_value=4, max_value=30))
def test_split_for_irc_never_separates_combining_marks(bases: list[str], max_bytes: int) -> None:
    text = "".join(base + "\u0301" for base in bases)
    for chunk in split_for_irc(text, max_bytes):
        assert not chunk.startswith("\u0301")


class TagChecker(HTMLParser):
    """Records whether every opened tag closes, in order."""

    ALLOWED = {"b", "i", "u", "del", "code", "font"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        assert tag in self.ALLOWED
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack.pop() == tag

    def handle_data(self, data: str) -> None:
        self.text.append(data)


OUR_TAGS = re.compile(r'</?(b|i|u|del|code)>|<font( data-mx-(bg-)?color="#[0-9a-f]{6}")+>|</font>')


@settings(deadline=None)
@given(st.lists(IRC_ALPHABET).map("".join))
def test_irc_to_matrix_html_is_well_formed_and_escaped(text: str) -> None:
    body, html = irc_to_matrix(text)
    assert body == strip_irc_formatting(text)
    if html is None:
        return
    checker = TagChecker()
    checker.feed(html)
    checker.close()
    assert checker.stack == []
    assert "".join(checker.text) == body  # nothing lost, nothing invented
    outside_tags = OUR_TAGS.sub("", html)
    assert "<" not in outside_tags and ">" not in outside_tags
    assert unescape(outside_tags) == body


@settings(deadline=None)
@given(st.one_of(st.text(), html_like))
def test_html_to_irc_never_raises_or_leaks_unsafe_characters(html: str) -> None:
    out = html_to_irc(html)
    assert "\r" not in out and "\0" not in out and "\x01" not in out
    for line in split_lines(out):
        assert "\n" not in line and "\r" not in line
    assert out == out.strip("\n")


@settings(deadline=None)
@given(
    st.one_of(st.text(), html_like),
    st.one_of(st.none(), st.text(), html_like),
    st.integers(min_value=4, max_value=IRC_LINE_LIMIT),
)
def test_matrix_body_to_irc_lines_are_safe_and_fit(
    body: str, html: str | None, max_bytes: int
) -> None:
    for line in matrix_body_to_irc_lines(body, html, max_bytes):
        assert not any(ch in line for ch in UNSAFE)
        assert 0 < nbytes(line) <= max_bytes
        assert strip_irc_formatting(line).strip()


WORDS = st.sampled_from(["alpha", "beta", "gamma", "delta", "x/y"])


@settings(deadline=None)
@given(st.lists(WORDS, min_size=1, max_size=12), st.lists(WORDS, min_size=1, max_size=12))
def test_edit_text_sed_applies_to_the_old_text(old_words: list[str], new_words: list[str]) -> None:
    old, new = " ".join(old_words), " ".join(new_words)
    out = edit_text(old, new)
    if out.startswith("* "):
        assert out == "* " + new
        return
    match = re.fullmatch(r"s/((?:[^/\\]|\\/)*)/((?:[^/\\]|\\/)*)/", out)
    assert match
    before, after = (part.replace("\\/", "/") for part in match.groups())
    assert old.replace(before, after, 1) == new


def test_the_one_line_fast_path_gives_what_the_full_path_gives() -> None:
    """Short plain messages skip the splitter; for any body the answer is the same as the
    full path's (printable text of every script, spaces, emoji, long and short)."""
    import random

    from bridge.rules import formatting as f

    rng = random.Random(13)
    alphabet = "abc XYZ 123 .,;:!?-_/\\'\"<>&é漢字🙂\u200d\u00a0\t"
    for _ in range(300):
        body = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 700)))
        for budget in (60, 200, 450):
            full = [line for line in f.split_lines(body)]
            slow: list[str] = []
            for line in full:
                line = f.sanitize_line(line)
                if f._has_visible_text(line):
                    slow.extend(c for c in f._split_keeping_format(line, budget)
                                if f._has_visible_text(c))
            assert f.matrix_body_to_irc_lines(body, None, budget) == slow, (body, budget)
