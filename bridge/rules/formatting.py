"""Translate message text between IRC and Matrix.

Why this module exists: the two networks disagree about almost everything a message can hold.

* An IRC line is at most 512 bytes, counting the ``:nick!user@host`` prefix the server adds,
  and a CR or LF ends it. A CR/LF (or NUL, or a stray ``\\x01``) leaking from Matrix text
  would let a Matrix user inject raw IRC commands or CTCPs. Matrix messages can be long and
  hold many lines (matrix-appservice-irc #488, #701, #1603).
* IRC styles text with mIRC control codes; Matrix uses a subset of HTML
  (``org.matrix.custom.html``). IRC text must be escaped before it becomes HTML, so nobody
  on IRC can inject markup into Matrix clients.
* Matrix has replies and edits, IRC has neither. They become short texts that read
  naturally on IRC instead of repeating whole messages (#636, #1026, #1179, #1307).

Every function here is pure (standard library only, no bridge imports), so the bridge can
call it from any thread and the behaviour is easy to test exhaustively.
"""

from __future__ import annotations

import html as _html
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from html.parser import HTMLParser

__all__ = [
    "IRC_LINE_LIMIT",
    "MAX_HTML_CHARS",
    "edit_text",
    "emote_to_ctcp",
    "html_to_irc",
    "irc_to_matrix",
    "matrix_body_to_irc_lines",
    "parse_ctcp",
    "payload_budget",
    "reply_text",
    "sanitize_line",
    "split_for_irc",
    "split_lines",
    "strip_irc_formatting",
    "strip_mx_reply",
    "strip_reply_fallback",
]

IRC_LINE_LIMIT = 512  # bytes, including the trailing CRLF
# Longer formatted bodies are not parsed: the plain body is used instead. Half of the
# largest Matrix event; a message this long reaches IRC as a paste link anyway.
MAX_HTML_CHARS = 32 * 1024

_DEFAULT_PREFIX_LEN = 100  # conservative length of "nick!user@host" when unknown
_MIN_CHUNK_BYTES = 4  # the longest UTF-8 character

BOLD = "\x02"
COLOUR = "\x03"
HEX_COLOUR = "\x04"
RESET = "\x0f"
MONOSPACE = "\x11"
REVERSE = "\x16"
ITALIC = "\x1d"
STRIKETHROUGH = "\x1e"
UNDERLINE = "\x1f"

_TOGGLES = (BOLD, ITALIC, UNDERLINE, STRIKETHROUGH, MONOSPACE)  # canonical order
_HTML_TAG = {BOLD: "b", ITALIC: "i", UNDERLINE: "u", STRIKETHROUGH: "del", MONOSPACE: "code"}

# One formatting code. Colour codes are matched whole, with their numbers, so that a
# splitter never cuts "\x0312" into "\x031" + "2".
_CODE_RE = re.compile(
    r"\x03(?:(?P<fg>\d{1,2})(?:,(?P<bg>\d{1,2}))?)?"
    r"|\x04(?:(?P<hfg>[0-9a-fA-F]{6})(?:,(?P<hbg>[0-9a-fA-F]{6}))?)?"
    r"|[\x02\x0f\x11\x16\x1d\x1e\x1f]"
)
# Characters that would be read as part of a colour code written just before them.
_MIRC_CONTINUATION = frozenset("0123456789,")
_HEX_CONTINUATION = frozenset("0123456789abcdefABCDEF,")
_COLOUR_GUARD = BOLD + BOLD  # an invisible separator after a colour code

# mIRC colours 0-15 plus the extended palette 16-98 (https://modern.ircdocs.horse/formatting);
# 99 means "default colour".
_MIRC_COLOURS = (
    "ffffff", "000000", "00007f", "009300", "ff0000", "7f0000", "9c009c", "fc7f00",
    "ffff00", "00fc00", "009393", "00ffff", "0000fc", "ff00ff", "7f7f7f", "d2d2d2",
    "470000", "472100", "474700", "324700", "004700", "00472c", "004747", "002747",
    "000047", "2e0047", "470047", "47002a", "740000", "743a00", "747400", "517400",
    "007400", "007449", "007474", "004074", "000074", "4b0074", "740074", "740045",
    "b50000", "b56300", "b5b500", "7db500", "00b500", "00b571", "00b5b5", "0063b5",
    "0000b5", "7500b5", "b500b5", "b5006b", "ff0000", "ff8c00", "ffff00", "b2ff00",
    "00ff00", "00ffa0", "00ffff", "008cff", "0000ff", "a500ff", "ff00ff", "ff0098",
    "ff5959", "ffb459", "ffff71", "cfff60", "6fff6f", "65ffc9", "6dffff", "59b4ff",
    "5959ff", "c459ff", "ff66ff", "ff59bc", "ff9c9c", "ffd39c", "ffff9c", "e2ff9c",
    "9cff9c", "9cffdb", "9cffff", "9cd3ff", "9c9cff", "dc9cff", "ff9cff", "ff94d3",
    "000000", "131313", "282828", "363636", "4d4d4d", "656565", "818181", "9f9f9f",
    "bcbcbc", "e2e2e2", "ffffff",
)
_BASIC_COLOURS = 16  # colours every IRC client knows

_LINE_BREAK_RE = re.compile("\r\n|[\r\n\u2028\u2029\x85]")
_UNSAFE_IN_LINE = {0: None, 1: None, 10: None, 13: None}  # NUL, CTCP marker, LF, CR
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_WHITESPACE_RE = re.compile(r"[ \t\n\r]+")
_ZWJ = "\u200d"


# --------------------------------------------------------------------------------------
# Lines and sanitising
# --------------------------------------------------------------------------------------


def split_lines(text: str) -> list[str]:
    """Split a Matrix body into IRC lines; NULs go, trailing empty lines are dropped.

    Only real line breaks split: str.splitlines() would also split on \\x1d and \\x1e,
    the IRC italic and strikethrough codes.
    """
    lines = _LINE_BREAK_RE.split(text.replace("\0", ""))
    while lines and not lines[-1]:
        lines.pop()
    return lines


def sanitize_line(text: str) -> str:
    """Remove NUL, CR, LF and \\x01 so Matrix text can never make an IRC command or CTCP.

    IRC formatting codes are kept: html_to_irc produces them and the bridge sanitises its
    output before sending.
    """
    return text.translate(_UNSAFE_IN_LINE)


# --------------------------------------------------------------------------------------
# Splitting long lines
# --------------------------------------------------------------------------------------


def _is_attached(ch: str) -> bool:
    """Whether ch always belongs to the character before it (combining marks and friends)."""
    if ch == _ZWJ or unicodedata.category(ch) in ("Mn", "Me", "Mc"):
        return True
    code = ord(ch)
    return (
        0xFE00 <= code <= 0xFE0F  # variation selectors
        or 0x1F3FB <= code <= 0x1F3FF  # emoji skin tones
        or 0xE0020 <= code <= 0xE007F  # emoji tag sequences
        or 0xE0100 <= code <= 0xE01EF  # variation selectors supplement
    )


def _is_regional_indicator(ch: str) -> bool:
    return 0x1F1E6 <= ord(ch) <= 0x1F1FF


def _joins(cluster: str, ch: str) -> bool:
    """Whether ch continues the grapheme cluster (an approximation of UAX #29)."""
    if unicodedata.category(cluster[0]) == "Cc" or unicodedata.category(ch) == "Cc":
        return False
    if cluster[-1] == _ZWJ:  # emoji ZWJ sequences
        return not ch.isspace()
    if _is_regional_indicator(ch):
        return len(cluster) == 1 and _is_regional_indicator(cluster)
    return _is_attached(ch)


def _graphemes(text: str) -> list[str]:
    """Split text into user-perceived characters (base + combining marks, emoji sequences)."""
    clusters: list[str] = []
    for ch in text:
        if clusters and _joins(clusters[-1], ch):
            clusters[-1] += ch
        else:
            clusters.append(ch)
    return clusters


def _units(text: str, max_bytes: int) -> list[str]:
    """The pieces a line may be split between: graphemes and whole formatting codes.

    A piece longer than max_bytes is cut into code points (a code point is at most 4 bytes).
    """
    units: list[str] = []
    pos = 0
    for match in _CODE_RE.finditer(text):
        units.extend(_graphemes(text[pos : match.start()]))
        units.append(match.group())
        pos = match.end()
    units.extend(_graphemes(text[pos:]))
    return [part for unit in units for part in _fit(unit, max_bytes)]


def _fit(unit: str, max_bytes: int) -> Iterable[str]:
    return (unit,) if _byte_len(unit) <= max_bytes else tuple(unit)


def _byte_len(text: str) -> int:
    return len(text.encode("utf-8"))


def _take_chunk(units: list[str], sizes: list[int], start: int, max_bytes: int) -> tuple[str, int]:
    """One chunk from units[start:]; returns it and where the next chunk starts."""
    end, used, last_space = start, 0, -1
    while end < len(units) and used + sizes[end] <= max_bytes:
        if units[end] == " " and end > start:
            last_space = end
        used += sizes[end]
        end += 1
    if end == len(units):
        return "".join(units[start:end]), end
    if units[end] == " ":  # the window ends right before a space: a perfect break
        return "".join(units[start:end]), end + 1
    if last_space > start:  # break at the last space, which is dropped
        return "".join(units[start:last_space]), last_space + 1
    return "".join(units[start:end]), end  # no space: hard break


def split_for_irc(text: str, max_bytes: int) -> list[str]:
    """Split one line into chunks of at most max_bytes of UTF-8.

    Never splits inside a character, a grapheme cluster that fits, or a colour code.
    Breaks at the last space in the window (dropping it), else hard-breaks. Lone
    surrogates, which cannot be encoded, become U+FFFD.
    """
    if max_bytes < _MIN_CHUNK_BYTES:
        raise ValueError(f"max_bytes must be at least {_MIN_CHUNK_BYTES}, got {max_bytes}")
    units = _units(_SURROGATE_RE.sub("\ufffd", text), max_bytes)
    sizes = [_byte_len(unit) for unit in units]
    chunks: list[str] = []
    start = 0
    while start < len(units):
        chunk, start = _take_chunk(units, sizes, start, max_bytes)
        chunks.append(chunk)
    return chunks


def payload_budget(command: str, target: str, prefix_len: int = 0) -> int:
    """Bytes left for text in ``:<prefix> <command> <target> :<text>\\r\\n``.

    Counted as other clients receive it, after the server prepends ``:nick!user@host ``.
    prefix_len is the length of ``nick!user@host``; 0 or less means a conservative 100.
    """
    prefix = prefix_len if prefix_len > 0 else _DEFAULT_PREFIX_LEN
    overhead = (
        1 + prefix + 1  # ":prefix "
        + _byte_len(command) + 1  # "PRIVMSG "
        + _byte_len(target) + 2  # "#chan :"
        + 2  # "\r\n"
    )
    return IRC_LINE_LIMIT - overhead


# --------------------------------------------------------------------------------------
# IRC formatting state
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Style:
    """Formatting in force at a point of an IRC line. Colours: "NN" (mIRC) or "#rrggbb"."""

    toggles: frozenset[str] = frozenset()
    fg: str | None = None
    bg: str | None = None
    reverse: bool = False


_PLAIN = _Style()


def _colour_value(raw: str) -> str | None:
    if len(raw) == 6:
        return "#" + raw.lower()
    number = int(raw)
    return None if number >= len(_MIRC_COLOURS) else f"{number:02d}"  # 99: default


def _apply_colour(style: _Style, match: re.Match[str]) -> _Style:
    is_mirc = match.group()[0] == COLOUR
    fg, bg = (match["fg"], match["bg"]) if is_mirc else (match["hfg"], match["hbg"])
    if fg is None:
        return replace(style, fg=None, bg=None)
    new_bg = style.bg if bg is None else _colour_value(bg)
    return replace(style, fg=_colour_value(fg), bg=new_bg)


def _apply_code(style: _Style, match: re.Match[str]) -> _Style:
    code = match.group()[0]
    if code == RESET:
        return _PLAIN
    if code == REVERSE:
        return replace(style, reverse=not style.reverse)
    if code in (COLOUR, HEX_COLOUR):
        return _apply_colour(style, match)
    return replace(style, toggles=style.toggles ^ {code})


def _runs(text: str) -> Iterator[tuple[str, _Style]]:
    """Split IRC text into (text, style) runs."""
    style, pos = _PLAIN, 0
    for match in _CODE_RE.finditer(text):
        if match.start() > pos:
            yield text[pos : match.start()], style
        style, pos = _apply_code(style, match), match.end()
    if pos < len(text):
        yield text[pos:], style


def _style_after(text: str) -> _Style:
    style = _PLAIN
    for match in _CODE_RE.finditer(text):
        style = _apply_code(style, match)
    return style


def _hex(colour: str) -> str:
    return colour if colour.startswith("#") else "#" + _MIRC_COLOURS[int(colour)]


def _restore_colour(fg: str | None, bg: str | None) -> str:
    if fg is None and bg is None:
        return ""
    if all(c is None or not c.startswith("#") for c in (fg, bg)):
        return COLOUR + (fg or "99") + ("," + bg if bg else "")
    if fg is None:  # \x04 cannot set only a background
        return ""
    return HEX_COLOUR + _hex(fg)[1:] + ("," + _hex(bg)[1:] if bg else "")


def _with_style(style: _Style, text: str) -> str:
    """text, preceded by the codes that switch a fresh IRC line to style (colour last).

    A guard keeps text's first character from being read as part of the colour code.
    """
    codes = "".join(code for code in _TOGGLES if code in style.toggles)
    if style.reverse:
        codes += REVERSE
    colour = _restore_colour(style.fg, style.bg)
    continuation = _HEX_CONTINUATION if colour.startswith(HEX_COLOUR) else _MIRC_CONTINUATION
    if colour and text[:1] in continuation:
        colour += _COLOUR_GUARD
    return codes + colour + text


def strip_irc_formatting(text: str) -> str:
    """IRC text without bold/italic/underline/strike/monospace/colour/reverse/reset codes."""
    return _CODE_RE.sub("", text)


# --------------------------------------------------------------------------------------
# IRC -> Matrix
# --------------------------------------------------------------------------------------

_Tag = tuple[str, str]  # (name, opening tag)


def _font_tag(fg: str | None, bg: str | None) -> _Tag:
    attrs = ""
    if fg:
        attrs += f' data-mx-color="{_hex(fg)}"'
    if bg:
        attrs += f' data-mx-bg-color="{_hex(bg)}"'
    return "font", f"<font{attrs}>"


def _tags_for(style: _Style) -> list[_Tag]:
    tags = [(_HTML_TAG[c], f"<{_HTML_TAG[c]}>") for c in _TOGGLES if c in style.toggles]
    fg, bg = (style.bg, style.fg) if style.reverse else (style.fg, style.bg)
    if fg or bg:
        tags.append(_font_tag(fg, bg))
    return tags


# Characters a nick may hold besides letters and digits: a mention is a nick not touching them.
_NICK_CHARS = r"\w\[\]\\`^{|}-"


def _mention_pattern(mentions: Mapping[str, str]) -> re.Pattern[str] | None:
    """One pattern for every mentioned nick, longest first; literal alternatives bounded
    by look-arounds of one character each, so it cannot backtrack."""
    if not mentions:
        return None
    names = "|".join(re.escape(nick) for nick in sorted(mentions, key=len, reverse=True))
    return re.compile(rf"(?<![{_NICK_CHARS}])(?:{names})(?![{_NICK_CHARS}])")


def _escape_run(text: str, pattern: re.Pattern[str] | None,
                mentions: Mapping[str, str]) -> str:
    """One text run as HTML: escaped, each mention a pill (matrix.to link)."""
    if pattern is None:
        return _html.escape(text, quote=True)
    out: list[str] = []
    pos = 0
    for match in pattern.finditer(text):
        nick = match.group()
        out.append(_html.escape(text[pos : match.start()], quote=True))
        out.append(f'<a href="https://matrix.to/#/{_html.escape(mentions[nick], quote=True)}">'
                   f"{_html.escape(nick, quote=True)}</a>")
        pos = match.end()
    out.append(_html.escape(text[pos:], quote=True))
    return "".join(out)


def _render_html(runs: list[tuple[str, _Style]], mentions: Mapping[str, str] | None = None
                 ) -> str:
    """Well-formed HTML: tags close in reverse order and reopen after an overlapping close.

    Mentions become pills inside each text run, so no nick ever touches the markup."""
    pattern = _mention_pattern(mentions or {})
    out: list[str] = []
    stack: list[_Tag] = []
    for text, style in runs:
        wanted = _tags_for(style)
        keep = 0
        while keep < len(stack) and stack[keep] in wanted:
            keep += 1
        out.extend(f"</{name}>" for name, _ in reversed(stack[keep:]))
        del stack[keep:]
        for tag in wanted:
            if tag not in stack:
                stack.append(tag)
                out.append(tag[1])
        out.append(_escape_run(text, pattern, mentions or {}))
    out.extend(f"</{name}>" for name, _ in reversed(stack))
    return "".join(out)


def irc_to_matrix(text: str, mentions: Mapping[str, str] | None = None
                  ) -> tuple[str, str | None]:
    """IRC text -> (plain body, org.matrix.custom.html body or None when nothing is styled).

    Everything from IRC is HTML-escaped; only our own tags reach the HTML. URLs stay text.
    `mentions` (nick as written -> Matrix user id) become pills, matched in the text runs
    before any HTML exists.
    """
    runs = [(part, style) for part, style in _runs(text) if part]
    body = "".join(part for part, _ in runs)
    pattern = _mention_pattern(mentions or {})
    mentioned = pattern is not None and any(pattern.search(part) for part, _ in runs)
    if not mentioned and not any(_tags_for(style) for _, style in runs):
        return body, None
    return body, _render_html(runs, mentions)


# --------------------------------------------------------------------------------------
# Matrix HTML -> IRC
# --------------------------------------------------------------------------------------

_BLOCK_TAGS = frozenset(
    "p div li blockquote h1 h2 h3 h4 h5 h6 pre tr table ul ol dl dt dd details summary "
    "section article header footer nav aside main figure figcaption address caption".split()
)
_SKIP_TAGS = frozenset("mx-reply script style head title template noscript".split())
_VOID_TAGS = frozenset("br img hr wbr input meta link area base col embed source track".split())
_STYLE_TAGS = {
    "b": BOLD, "strong": BOLD, "i": ITALIC, "em": ITALIC, "u": UNDERLINE, "ins": UNDERLINE,
    "del": STRIKETHROUGH, "s": STRIKETHROUGH, "strike": STRIKETHROUGH, "code": MONOSPACE,
    **{f"h{level}": BOLD for level in range(1, 7)},
}
# Control characters never taken from Matrix HTML text (all IRC codes are among them).
_HTML_TEXT_CONTROLS_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CSS_COLOUR_RE = re.compile(r"#?([0-9a-fA-F]{6}|[0-9a-fA-F]{3})")
_PILL_RE = re.compile(r"(https?://matrix\.to/#/[@#!]|matrix:(u|r|roomid)/)", re.IGNORECASE)
_SCHEME_RE = re.compile(r"^[a-z][a-z0-9+.-]*:(//)?", re.IGNORECASE)
_PRE_BREAK_RE = re.compile("\r\n|[\r\n]")
_MAX_NESTING = 8  # deeper quotes and lists are not indented further


def _clean_text(text: str) -> str:
    return _HTML_TEXT_CONTROLS_RE.sub("", text)


def _clean_attr(value: str | None) -> str:
    return _WHITESPACE_RE.sub(" ", _clean_text(value or "")).strip(" ")


def _nearest_mirc(rgb: str) -> int:
    """The mIRC colour for #rrggbb: an exact palette match, else the nearest basic colour."""
    if rgb in _MIRC_COLOURS:
        return _MIRC_COLOURS.index(rgb)
    red, green, blue = (int(rgb[i : i + 2], 16) for i in (0, 2, 4))

    def distance(index: int) -> int:
        other = _MIRC_COLOURS[index]
        return sum((a - int(other[i : i + 2], 16)) ** 2
                   for a, i in ((red, 0), (green, 2), (blue, 4)))

    return min(range(_BASIC_COLOURS), key=distance)


def _css_colour(value: str | None) -> int | None:
    match = _CSS_COLOUR_RE.fullmatch((value or "").strip())
    if not match:
        return None
    digits = match.group(1).lower()
    if len(digits) == 3:
        digits = "".join(d * 2 for d in digits)
    return _nearest_mirc(digits)


def _mirc_code(fg: int | None, bg: int | None) -> str:
    if bg is None:
        return COLOUR if fg is None else f"{COLOUR}{fg:02d}"
    return f"{COLOUR}{99 if fg is None else fg:02d},{bg:02d}"


def _normalise_url(url: str) -> str:
    return _SCHEME_RE.sub("", url.strip().lower()).rstrip("/")


def _is_pill(href: str) -> bool:
    return bool(_PILL_RE.match(href)) and "/$" not in href and "/e/" not in href


def _link_suffix(text: str, href: str) -> str:
    """What follows a link's text on IRC: nothing, the URL, or " (URL)"."""
    if not href:
        return ""
    if not text:
        return " " + href
    if _is_pill(href) or _normalise_url(text) == _normalise_url(href):
        return ""
    return f" ({href})"


def _safe_int(value: str | None, default: int) -> int:
    try:
        return int(value or default)
    except ValueError:
        return default


class _IrcRenderer(HTMLParser):
    """Turns org.matrix.custom.html into IRC lines with control codes.

    Each IRC line is sent as its own message and clients reset formatting between
    messages, so every line starts by re-applying the formatting still open.
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self._parts: list[str] = []
        self._started = False  # the current line has its prefix and formatting
        self._space = False  # the last character written is a space
        self._guard = False  # the last thing written is a colour code
        self._styles = dict.fromkeys(_TOGGLES, 0)
        self._colours: list[tuple[int | None, int | None]] = []
        self._open: list[tuple[str, tuple[str, ...]]] = []  # (tag, how to undo it)
        self._open_names: dict[str, int] = {}  # how many of each tag are open
        self._skip = 0
        self._pre = 0
        self._pre_fresh = False
        self._quote = 0
        self._lists: list[int | None] = []  # next number, or None for bullets
        self._links: list[tuple[str, list[str]]] = []
        self._starters = {
            "a": self._start_link, "font": self._start_colour, "span": self._start_colour,
            "ul": self._start_list, "ol": self._start_list, "li": self._start_item,
            "blockquote": self._start_quote, "pre": self._start_pre,
            "td": self._start_cell, "th": self._start_cell,
        }

    # -- output ------------------------------------------------------------------------

    def finish(self) -> list[str]:
        self._block_break()
        return self.lines

    def _end_line(self) -> None:
        self.lines.append("".join(self._parts))
        self._parts, self._started, self._space, self._guard = [], False, False, False

    def _block_break(self) -> None:
        if self._started:
            self._end_line()

    def _start_line(self) -> None:
        self._started = True
        self._parts.append("> " * min(self._quote, _MAX_NESTING))
        self._parts.append("".join(c for c in _TOGGLES if self._styles[c] > 0))
        self._space = self._quote > 0
        if self._colours:
            self._emit_colour()

    def _write(self, text: str) -> None:
        """Append text as is (starting the line first if needed)."""
        if not self._started:
            self._start_line()
        if self._guard and text[0] in _MIRC_CONTINUATION:
            self._parts.append(_COLOUR_GUARD)
        self._parts.append(text)
        self._guard = False
        self._space = text[-1] == " "
        if self._links:
            self._links[-1][1].append(text)

    def _write_inline(self, text: str) -> None:
        """Append text whose whitespace is already collapsed, HTML style."""
        if not self._started or self._space:
            text = text.lstrip(" ")
        if text:
            self._write(text)

    def _toggle(self, code: str, delta: int) -> None:
        was_on = self._styles[code] > 0
        self._styles[code] += delta
        if self._started and was_on != (self._styles[code] > 0):
            self._parts.append(code)
            self._guard = False

    def _emit_colour(self) -> None:
        if self._started:
            fg, bg = self._colours[-1] if self._colours else (None, None)
            self._parts.append(_mirc_code(fg, bg))
            self._guard = bg is None

    # -- parser callbacks --------------------------------------------------------------

    def parse_marked_section(self, i: int, report: bool = True) -> int:
        """html.parser raises on "<![" + junk; keep such text instead of failing."""
        try:
            return super().parse_marked_section(i, report)
        except AssertionError:
            self.handle_data(self.rawdata[i : i + 3])
            return i + 3

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._skip:
            if tag in _SKIP_TAGS:
                self._skip += 1
                self._push(tag, ("skip",))
        elif tag in _VOID_TAGS:
            self._void(tag, dict(attrs))
        else:
            self._push(tag, self._start(tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID_TAGS or (self._skip and tag not in _SKIP_TAGS):
            return
        if not self._open_names.get(tag):  # a stray end tag: ignored
            return
        while True:  # close everything opened inside it, then the element itself
            name, undo = self._open.pop()
            self._open_names[name] -= 1
            for action in reversed(undo):
                self._undo(action)
            if name == tag:
                return

    def _push(self, tag: str, undo: tuple[str, ...]) -> None:
        self._open.append((tag, undo))
        self._open_names[tag] = self._open_names.get(tag, 0) + 1

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        data = _clean_text(data)
        if self._pre:
            self._pre_data(data)
        else:
            self._write_inline(_WHITESPACE_RE.sub(" ", data))

    # -- elements ----------------------------------------------------------------------

    def _start(self, tag: str, attrs: dict[str, str | None]) -> tuple[str, ...]:
        if tag in _SKIP_TAGS:
            self._skip += 1
            return ("skip",)
        undo: list[str] = []
        if tag in _BLOCK_TAGS:
            self._block_break()
            undo.append("block")
        code = _STYLE_TAGS.get(tag)
        if code and not (code == MONOSPACE and self._pre):
            self._toggle(code, 1)
            undo.append(code)
        starter = self._starters.get(tag)
        action = starter(tag, attrs) if starter else None
        if action:
            undo.append(action)
        return tuple(undo)

    def _undo(self, action: str) -> None:
        if action in _TOGGLES:
            self._toggle(action, -1)
        elif action == "block":
            self._block_break()
        elif action == "colour":
            self._colours.pop()
            self._emit_colour()
        elif action == "link":
            self._end_link()
        else:
            counter = {"skip": "_skip", "pre": "_pre", "quote": "_quote"}.get(action)
            if counter:
                setattr(self, counter, getattr(self, counter) - 1)
            elif action == "list":
                self._lists.pop()

    def _void(self, tag: str, attrs: dict[str, str | None]) -> None:
        if tag == "br":
            self._end_line()
        elif tag == "hr":
            self._block_break()
        elif tag == "img":
            self._write_inline(_clean_attr(attrs.get("alt") or attrs.get("title")))

    def _start_link(self, tag: str, attrs: dict[str, str | None]) -> str:
        self._links.append((_clean_attr(attrs.get("href")), []))
        return "link"

    def _end_link(self) -> None:
        href, parts = self._links.pop()
        suffix = _link_suffix(_clean_attr("".join(parts)), href)
        if suffix:
            self._write_inline(suffix)

    def _start_colour(self, tag: str, attrs: dict[str, str | None]) -> str | None:
        fg = _css_colour(attrs.get("data-mx-color") or attrs.get("color"))
        bg = _css_colour(attrs.get("data-mx-bg-color"))
        if fg is None and bg is None:
            return None
        parent_fg, parent_bg = self._colours[-1] if self._colours else (None, None)
        self._colours.append((parent_fg if fg is None else fg, parent_bg if bg is None else bg))
        self._emit_colour()
        return "colour"

    def _start_list(self, tag: str, attrs: dict[str, str | None]) -> str:
        self._lists.append(_safe_int(attrs.get("start"), 1) if tag == "ol" else None)
        return "list"

    def _start_item(self, tag: str, attrs: dict[str, str | None]) -> None:
        number = self._lists[-1] if self._lists else None
        marker = "• " if number is None else f"{number}. "
        if number is not None:
            self._lists[-1] = number + 1
        self._write("  " * min(max(len(self._lists) - 1, 0), _MAX_NESTING) + marker)

    def _start_quote(self, tag: str, attrs: dict[str, str | None]) -> str:
        self._quote += 1
        return "quote"

    def _start_pre(self, tag: str, attrs: dict[str, str | None]) -> str:
        self._pre += 1
        self._pre_fresh = True
        return "pre"

    def _start_cell(self, tag: str, attrs: dict[str, str | None]) -> None:
        if self._started:
            self._write_inline(" ")

    def _pre_data(self, data: str) -> None:
        if self._pre_fresh and data.startswith(("\n", "\r")):
            data = data[2:] if data.startswith("\r\n") else data[1:]
        self._pre_fresh = False
        for index, segment in enumerate(_PRE_BREAK_RE.split(data)):
            if index:
                self._end_line()
            if segment:
                self._write(segment)


# Linear-time HTML hygiene. html.parser re-scans the rest of the document for every "<"
# it cannot close (a tag, a comment, a quoted value), which is quadratic: 60 KB of "<a "
# cost 50 s on the inbox thread. So before parsing, every "<" is looked at once: a complete
# tag passes as it is, comments, declarations and processing instructions go, and any other
# "<" becomes "&lt;" (the text html.parser would have made of it). No pattern here can
# backtrack: each one consumes a character at most once and never crosses a "<".
_TAG_CANDIDATE_RE = re.compile(r"""<(?:[^<>"']++|"[^"<]*+"|'[^'<]*+')*+>""")
_TAG_START_RE = re.compile(r"</?[A-Za-z]")


def _sanitise_html(html: str) -> str:
    """html in which every "<" opens a complete tag; see above. Linear in len(html)."""
    out: list[str] = []
    pos = 0
    no_comment_end_after = len(html) + 1  # no "-->" at or after this offset
    while (lt := html.find("<", pos)) >= 0:
        out.append(html[pos:lt])
        if html.startswith("<!--", lt):
            end = html.find("-->", lt + 4) if lt < no_comment_end_after else -1
            if end >= 0:
                pos = end + 3  # a comment: dropped
                continue
            no_comment_end_after = min(no_comment_end_after, lt)
        else:
            match = _TAG_CANDIDATE_RE.match(html, lt)
            if match is not None and _TAG_START_RE.match(html, lt):
                out.append(match.group())
                pos = match.end()
                continue
            if match is not None and html[lt + 1 : lt + 2] in ("!", "?"):
                pos = match.end()  # a declaration, marked section or instruction: dropped
                continue
        out.append("&lt;")
        pos = lt + 1
    out.append(html[pos:])
    return "".join(out)


def _strip_elements(html: str, name: str) -> str:
    """html without its <name>...</name> elements (up to the first closing tag each).

    A loop of forward searches, never rescanning: once no closing tag follows, it stops.
    """
    opener = re.compile(rf"<{name}(?=[\s/>])[^<>]*+>", re.IGNORECASE)
    closer = re.compile(rf"</{name}\s*+>", re.IGNORECASE)
    out: list[str] = []
    pos = 0
    while (start := opener.search(html, pos)) is not None:
        end = closer.search(html, start.end())
        if end is None:
            break
        out.append(html[pos : start.start()])
        pos = end.end()
    out.append(html[pos:])
    return "".join(out)


def strip_mx_reply(html: str) -> str:
    """A reply's formatted_body without its <mx-reply> fallback. Linear in len(html)."""
    return _strip_elements(html, "mx-reply")


_FALLBACK_BREAK_RE = re.compile(r"<br\s*+/?>|</(?:p|div|li|h[1-6]|pre|tr|blockquote)\s*+>", re.I)
_FALLBACK_TAG_RE = re.compile(r"<[^>]*+>")


def _fallback_lines(html: str) -> list[str]:
    """Crude tag stripping, used only if the parser ever fails."""
    text = html
    for name in ("mx-reply", "script", "style"):
        text = _strip_elements(text, name)
    text = _FALLBACK_TAG_RE.sub("", _FALLBACK_BREAK_RE.sub("\n", text))
    return [_clean_text(line) for line in split_lines(_html.unescape(text))]


def _tidy_lines(lines: list[str]) -> str:
    # rstrip(" \t"), not rstrip(): Python counts the IRC codes \x1d-\x1f as whitespace.
    lines = [line.rstrip(" \t") for line in lines]
    filled = [index for index, line in enumerate(lines) if line]
    return "\n".join(lines[filled[0] : filled[-1] + 1]) if filled else ""


def html_to_irc(html: str) -> str:
    """Matrix org.matrix.custom.html -> IRC text with control codes; lines joined by \\n.

    Never raises: broken HTML is parsed leniently, and if the parser itself fails the tags
    are simply stripped. Control characters in the HTML's text never reach the output.
    Linear in len(html): stray "<" are made text before html.parser sees them.
    """
    html = _sanitise_html(html)
    try:
        renderer = _IrcRenderer()
        renderer.feed(html)
        renderer.close()
        lines = renderer.finish()
    except Exception:  # html.parser is lenient, but a message must never be lost to it
        lines = _fallback_lines(html)
    return _tidy_lines(lines)


# --------------------------------------------------------------------------------------
# Matrix message -> IRC lines
# --------------------------------------------------------------------------------------

# Longest formatting prefix re-applied to a continuation chunk: five toggles, reverse,
# \x04RRGGBB,RRGGBB and the colour guard.
_CARRY_RESERVE = len(_TOGGLES) + 1 + 14 + len(_COLOUR_GUARD)


def _plain_one_line(body: str, max_bytes: int) -> bool:
    """A body that is already one safe IRC line: printable (no line break, control or
    formatting character, no lone surrogate), not blank, within the byte budget."""
    return (body.isprintable() and not body.isspace() and bool(body)
            and (len(body) * 4 <= max_bytes or len(body.encode("utf-8")) <= max_bytes))


def _has_visible_text(text: str) -> bool:
    return bool(strip_irc_formatting(text).strip())


def _split_keeping_format(line: str, max_bytes: int) -> list[str]:
    """split_for_irc, then start each chunk with the formatting open at its start."""
    if not _CODE_RE.search(line) or max_bytes - _CARRY_RESERVE < _MIN_CHUNK_BYTES:
        return split_for_irc(line, max_bytes)
    chunks = split_for_irc(line, max_bytes - _CARRY_RESERVE)
    out = chunks[:1]
    for chunk in chunks[1:]:
        out.append(_with_style(_style_after(out[-1]), chunk))
    return out


def matrix_body_to_irc_lines(body: str, html: str | None, max_bytes: int) -> list[str]:
    """A Matrix message -> IRC lines, each safe to send and at most max_bytes of UTF-8.

    Prefers the HTML (formatting survives) and falls back to the plain body. Lines without
    visible text are dropped; a long bold line stays bold in every chunk.
    """
    if max_bytes < _MIN_CHUNK_BYTES:
        raise ValueError(f"max_bytes must be at least {_MIN_CHUNK_BYTES}, got {max_bytes}")
    if not html and _plain_one_line(body, max_bytes):
        return [body]  # most messages: the full path would give this one line too
    text = html_to_irc(html) if html else ""
    if not _has_visible_text(text):
        text = body
    out: list[str] = []
    for line in split_lines(text):
        line = sanitize_line(line)
        if _has_visible_text(line):
            out.extend(c for c in _split_keeping_format(line, max_bytes) if _has_visible_text(c))
    return out


# --------------------------------------------------------------------------------------
# Replies, edits, CTCP
# --------------------------------------------------------------------------------------

_QUOTE_CHARS = 40
_ANY_WHITESPACE_RE = re.compile(r"\s+")


def strip_reply_fallback(body: str) -> str:
    """Remove a Matrix reply fallback ("> <@user:hs> quoted" lines and a blank line)."""
    lines = body.split("\n")
    if not lines[0].startswith("> <"):
        return body
    index = 0
    while index < len(lines) and lines[index].startswith(">"):
        index += 1
    if index < len(lines) and lines[index] == "":
        index += 1
    return "\n".join(lines[index:])


def _quote_snippet(quoted: str) -> str:
    flat = strip_irc_formatting(sanitize_line(strip_reply_fallback(quoted).replace("\n", " ")))
    clusters = _graphemes(_ANY_WHITESPACE_RE.sub(" ", flat).strip())
    if len(clusters) <= _QUOTE_CHARS:
        return "".join(clusters)
    return "".join(clusters[:_QUOTE_CHARS]).rstrip() + "…"


def reply_text(nick: str, quoted: str, text: str, *, short: bool) -> str:
    """A Matrix reply as IRC text: "nick: text", or '<nick> "quote…" <- text'.

    The quote is flattened to one line and cut to 40 characters. Pass `text` without its
    reply fallback (see strip_reply_fallback).
    """
    snippet = "" if short else _quote_snippet(quoted)
    if not snippet:
        return f"{nick}: {text}"
    return f'<{nick}> "{snippet}" <- {text}'


_TOKEN_RE = re.compile(r"\s+|\S+")


def _common_prefix(a: list[str], b: list[str]) -> int:
    count = 0
    while count < min(len(a), len(b)) and a[count] == b[count]:
        count += 1
    return count


def _changed_region(old: list[str], new: list[str]) -> tuple[int, int]:
    """(prefix, suffix) token counts the two lists share, widened to include a word."""
    prefix = _common_prefix(old, new)
    limit = min(len(old), len(new)) - prefix
    suffix = min(_common_prefix(old[::-1], new[::-1]), limit)
    while not any(t.strip() for t in old[prefix : len(old) - suffix]):
        if suffix:
            suffix -= 1
        elif prefix:
            prefix -= 1
        else:
            break
    return prefix, suffix


def _sed_edit(old: str, new: str) -> str | None:
    """A "s/old/new/" for one contiguous change, or None when that would mislead."""
    old_tokens, new_tokens = _TOKEN_RE.findall(old), _TOKEN_RE.findall(new)
    if old_tokens == new_tokens:
        return None
    prefix, suffix = _changed_region(old_tokens, new_tokens)
    before = "".join(old_tokens[prefix : len(old_tokens) - suffix])
    after = "".join(new_tokens[prefix : len(new_tokens) - suffix])
    if not before or _LINE_BREAK_RE.search(before + after):
        return None
    if old.replace(before, after, 1) != new:  # the first match is not the change
        return None
    return "s/{}/{}/".format(before.replace("/", "\\/"), after.replace("/", "\\/"))


def edit_text(old: str, new: str) -> str:
    """A Matrix edit as short IRC text: "s/teh/the/" when shorter, else "* <new text>"."""
    full = "* " + new
    sed = _sed_edit(old, new)
    return sed if sed is not None and len(sed) <= len(full) else full


def emote_to_ctcp(text: str) -> str:
    """An m.emote as a CTCP ACTION; line breaks become spaces, unsafe characters go."""
    return "\x01ACTION " + sanitize_line(" ".join(split_lines(text))) + "\x01"


def parse_ctcp(text: str) -> tuple[str, str] | None:
    """("ACTION", "waves") for "\\x01ACTION waves\\x01" (closing \\x01 optional), else None."""
    if not text.startswith("\x01"):
        return None
    inner = text[1:].split("\x01", 1)[0]
    command, _, args = inner.partition(" ")
    if not command:
        return None
    return command.upper(), args
