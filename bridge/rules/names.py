"""Pure naming rules: IRC nick <-> Matrix localpart, channel <-> room alias, puppet nicks.

Nick -> localpart follows the Matrix spec's suggested mapping for bridges (appendices,
"Mapping from other character sets"): upper case becomes `_` + lower case, `_` becomes `__`,
any other byte outside `a-z 0-9 . -` becomes `=xx`. The result is always a valid
lower-case localpart, and the mapping is reversible, so a user id always names one nick.

Thread: any thread: pure (request threads, the inbox thread and the IRC thread all call it).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from .ids import UserId

_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-")
_NICK_FIRST = re.compile(r"[A-Za-z\[\]\\`_^{|}]")
_NICK_REST = re.compile(r"[A-Za-z0-9\[\]\\`_^{|}\-]")
CHANNEL_PREFIXES = "#&+!"
MAX_MXID_BYTES = 255


def escape_nick(nick: str) -> str:
    """Map an IRC nick to a lower-case Matrix localpart fragment (reversible).

    >>> escape_nick("Bob")
    '_bob'
    >>> escape_nick("a_b[m]")
    'a__b=5bm=5d'
    """
    out: list[str] = []
    for ch in nick:
        if ch in _PLAIN:
            out.append(ch)
        elif ch == "_":
            out.append("__")
        elif "A" <= ch <= "Z":
            out.append("_" + ch.lower())
        else:
            out.extend(f"={b:02x}" for b in ch.encode("utf-8"))
    return "".join(out)


def unescape_nick(text: str) -> str | None:
    """Reverse of escape_nick; None when `text` is not something escape_nick produces.

    >>> unescape_nick("_bob")
    'Bob'
    """
    out = bytearray()
    i = 0
    while i < len(text):
        ch = text[i]
        if ch in _PLAIN:
            out += ch.encode()
            i += 1
        elif ch == "_":
            if i + 1 >= len(text):
                return None
            nxt = text[i + 1]
            if nxt == "_":
                out += b"_"
            elif "a" <= nxt <= "z":
                out += nxt.upper().encode()
            else:
                return None
            i += 2
        elif ch == "=":
            pair = text[i + 1 : i + 3]
            if len(pair) != 2 or not re.fullmatch(r"[0-9a-f]{2}", pair):
                return None
            out.append(int(pair, 16))
            i += 3
        else:
            return None
    try:
        nick = out.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return nick if escape_nick(nick) == text else None


@dataclass(frozen=True)
class Template:
    """A `prefix{field}suffix` template, usable both ways."""

    prefix: str
    suffix: str

    @classmethod
    def parse(cls, template: str, field: str) -> Template:
        marker = "{" + field + "}"
        if template.count(marker) != 1:
            raise ValueError(f"template {template!r} must contain {marker} exactly once")
        prefix, suffix = template.split(marker)
        return cls(prefix, suffix)

    def fill(self, value: str) -> str:
        return f"{self.prefix}{value}{self.suffix}"

    def match(self, text: str) -> str | None:
        if len(text) <= len(self.prefix) + len(self.suffix):
            return None
        if not (text.startswith(self.prefix) and text.endswith(self.suffix)):
            return None
        return text[len(self.prefix) : len(text) - len(self.suffix)] or None


_RFC1459 = str.maketrans("[]\\~", "{}|^")


def irc_lower(text: str) -> str:
    """RFC 1459 case folding, the IRC default (`[]\\~` are the upper case of `{}|^`)."""
    return text.lower().translate(_RFC1459)


_ASCII = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_STRICT_RFC1459 = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ[]\\", "abcdefghijklmnopqrstuvwxyz{}|")


def ascii_lower(text: str) -> str:
    """CASEMAPPING=ascii: only A-Z fold; `[` and `{` are different characters."""
    return text.translate(_ASCII)


def strict_rfc1459_lower(text: str) -> str:
    """CASEMAPPING=strict-rfc1459: as rfc1459, except that `~` and `^` differ."""
    return text.translate(_STRICT_RFC1459)


def casefolder(casemapping: str | None) -> Callable[[str], str]:
    """The folding of a network's ISUPPORT CASEMAPPING (rfc1459 when unknown or absent)."""
    return {"ascii": ascii_lower, "strict-rfc1459": strict_rfc1459_lower}.get(
        (casemapping or "").lower(), irc_lower)


def fold_channel(casemapping: str | None, channel: str) -> str:
    """The key of a channel on a network whose ISUPPORT CASEMAPPING is `casemapping`.

    Every channel comparison and every stored channel key goes through this one function,
    on the IRC thread and in the core (which reads the casemapping from the snapshot the
    IRC thread publishes, see bridge.irc.IrcSide.casemapping). rfc1459 before 005 arrives.
    """
    return casefolder(casemapping)(channel)


def is_channel(name: str) -> bool:
    return bool(name) and name[0] in CHANNEL_PREFIXES


def valid_channel(name: str) -> bool:
    return (
        is_channel(name)
        and 1 < len(name) <= 200
        and not any(c in name for c in " ,:\x07\x00\r\n")
    )


class NetworkNames:
    """The naming rules of one network: built from its templates and the server name."""

    def __init__(self, user_template: str, alias_template: str, domain: str):
        self.user = Template.parse(user_template, "nick")
        self.alias = Template.parse(alias_template, "channel")
        self.domain = domain

    # users
    def localpart_for_nick(self, nick: str) -> str:
        return self.user.fill(escape_nick(nick))

    def user_id_for_nick(self, nick: str) -> UserId:
        return UserId(f"@{self.localpart_for_nick(nick)}:{self.domain}")

    def nick_for_user_id(self, user_id: str) -> str | None:
        """The nick a virtual user id stands for, or None if it is not one of ours."""
        localpart = _local_of(user_id, "@", self.domain)
        if localpart is None:
            return None
        escaped = self.user.match(localpart)
        if escaped is None:
            return None
        nick = unescape_nick(escaped)
        if nick is None or not valid_nick(nick):
            return None
        return nick

    # rooms
    def alias_localpart(self, channel: str, casemapping: str | None = None) -> str:
        return self.alias.fill(fold_channel(casemapping, channel))

    def alias_for_channel(self, channel: str, casemapping: str | None = None) -> str:
        return f"#{self.alias_localpart(channel, casemapping)}:{self.domain}"

    def channel_for_alias(self, alias: str) -> str | None:
        """The channel an alias of ours names, or None (unknown or not a valid channel)."""
        localpart = _local_of(alias, "#", self.domain)
        if localpart is None:
            return None
        channel = self.alias.match(localpart)
        if channel is None or not valid_channel(channel):
            return None
        return channel


def _local_of(identifier: str, sigil: str, domain: str) -> str | None:
    if not identifier.startswith(sigil):
        return None
    body = identifier[1:]
    local, sep, server = body.rpartition(":")
    if not sep or server != domain or not local:
        return None
    if len(identifier.encode("utf-8")) > MAX_MXID_BYTES:
        return None
    return local


def valid_nick(nick: str, max_length: int = 64) -> bool:
    if not nick or len(nick) > max_length or not _NICK_FIRST.match(nick[0]):
        return False
    return all(_NICK_REST.match(c) for c in nick[1:])


def sanitize_nick(text: str) -> str:
    """Turn any text into a valid IRC nick: invalid characters become `_`."""
    chars = [c if _NICK_REST.match(c) else "_" for c in text]
    nick = "".join(chars) or "_"
    if not _NICK_FIRST.match(nick[0]):
        nick = "M" + nick
    return nick


def puppet_nick(template: str, user_id: str, displayname: str | None, max_length: int) -> str:
    """The IRC nick of a Matrix user, from `puppet_nick_template`, cut to NICKLEN.

    The template's own text (e.g. the `[m]` suffix) is kept; the user's part is shortened.
    """
    localpart = user_id[1:].split(":", 1)[0]
    field = "{displayname}" if "{displayname}" in template else "{localpart}"
    value = (displayname or localpart) if field == "{displayname}" else localpart
    fixed = sanitize_nick(template.replace(field, "")) if template.replace(field, "") else ""
    room = max(1, max_length - len(fixed))
    part = sanitize_nick(value)[:room]
    nick = sanitize_nick(template.replace(field, part))
    return nick[:max_length]


def collision_nick(nick: str, attempt: int, max_length: int) -> str:
    """A predictable alternative nick after a collision: nick_, nick__, then nick1, nick2..."""
    suffix = "_" * attempt if attempt <= 2 else str(attempt - 2)
    return nick[: max(1, max_length - len(suffix))] + suffix


def displayname_for_nick(nick: str) -> str:
    """The display name of a virtual user keeps the nick exactly as IRC writes it."""
    return nick
