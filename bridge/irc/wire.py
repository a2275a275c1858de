"""The rules every outgoing IRC line passes, in the one place lines leave (`send_raw`).

Why one place: a line can be built by our code, by the irc library (NICK, USER, PASS, QUIT)
or from a user's `!cmd`/autocmd; a guard or a redaction in each caller misses one of them.
`problem()` refuses CR, LF and NUL anywhere in a line (a bare CR ends a line for many
servers, so a user id like `@x\\rQUIT:evil` would inject a command); `redact()` is the only
form in which an outgoing line may reach a log, whatever the length of the secret;
`clean_field()` strips control characters from the fields we build from Matrix ids.
Pure functions; called on the IRC thread.
"""

from __future__ import annotations

import sys
import unicodedata
from types import FrameType

REDACTED = "[redacted]"
_FORBIDDEN = ("\r", "\n", "\0")
# SASL mechanisms and the empty/abort responses are safe to show; anything else sent with
# AUTHENTICATE is a (base64) credential.
_SAFE_AUTHENTICATE = frozenset({
    "+", "*", "PLAIN", "EXTERNAL", "SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-512",
    "ECDSA-NIST256P-CHALLENGE",
})
# First words of a message to services that carry a password after them.
SECRET_VERBS = frozenset({
    "IDENTIFY", "ID", "LOGIN", "AUTH", "REGISTER", "GHOST", "RECOVER", "RELEASE", "REGAIN",
    "SETPASS", "RESETPASS", "CONFIRM", "DROP", "SET",
})
# Commands some servers offer as aliases for /msg NickServ etc.
_SERVICE_ALIASES = frozenset({
    "NICKSERV", "NS", "CHANSERV", "CS", "AUTHSERV", "AS", "USERSERV", "Q", "X", "HOSTSERV",
    "IDENTIFY", "LOGIN", "AUTH",
})
_MODULE_PREFIXES = ("irc.", "jaraco.")
# The funnels every line passes through; the caller worth naming is above them.
_FUNNELS = frozenset({"send_now", "send", "drain", "_drain_tick", "_flush_target", "_say"})


def problem(line: str) -> str | None:
    """Why `line` must not be sent, or None."""
    for char in _FORBIDDEN:
        if char in line:
            return f"it contains {char!r}"
    return None


def caller() -> str:
    """`module:function:line` of the code that tried to send: the first frame outside the
    irc library, this package's funnels and the IRC thread's loop (which ran it)."""
    frame: FrameType | None = sys._getframe(1)
    innermost = "?"
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        name = frame.f_code.co_name
        where = f"{module}:{name}:{frame.f_lineno}"
        if module == "bridge.irc.reactor" and name in ("_drain_calls", "_run_timers", "run"):
            return innermost  # work handed to the IRC thread: the funnel it called is all
        funnel = module.startswith("bridge.irc.") and name in _FUNNELS
        if module not in (__name__, "bridge.irc.reactor") and not module.startswith(
                _MODULE_PREFIXES):
            if not funnel:
                return where
            innermost = where
        frame = frame.f_back
    return innermost


def _is_channel(target: str) -> bool:
    return target[:1] in "#&+!"


def redact(line: str) -> str:
    """`line` as it may be logged: credentials replaced by [redacted], by command."""
    prefix = ""
    rest = line
    if rest.startswith("@"):  # message tags
        tags, _, rest = rest.partition(" ")
        prefix = tags + " "
    words = rest.split(" ")
    command = words[0].upper()
    if command == "PASS" and len(words) > 1:
        return f"{prefix}{words[0]} {REDACTED}"
    if command == "AUTHENTICATE" and len(words) > 1:
        if len(words) == 2 and words[1].upper() in _SAFE_AUTHENTICATE:
            return prefix + rest
        return f"{prefix}{words[0]} {REDACTED}"
    if command == "OPER" and len(words) > 2:
        return f"{prefix}{words[0]} {words[1]} {REDACTED}"
    if command in ("PRIVMSG", "NOTICE", "SQUERY") and len(words) > 2:
        target = words[1]
        text = " ".join(words[2:])
        text = text[1:] if text.startswith(":") else text
        if not _is_channel(target) and _secret_text(text):
            verb = text.split(" ", 1)[0]
            return f"{prefix}{words[0]} {target} :{verb} {REDACTED}"
        return prefix + rest
    if command in _SERVICE_ALIASES and len(words) > 1:
        text = " ".join(words[1:]).lstrip(":")
        if command in ("IDENTIFY", "LOGIN", "AUTH") or _secret_text(text):
            return f"{prefix}{words[0]} {REDACTED}"
    return prefix + rest


def _secret_text(text: str) -> bool:
    first = text.strip().split(" ", 1)[0].upper()
    return first in SECRET_VERBS


def clean_field(text: str, *, spaces: bool = True) -> str:
    """`text` without control characters (C0, C1, DEL; format characters too); for the
    username (no spaces either) and realname we build from Matrix ids."""
    kept = "".join(
        c for c in text
        if unicodedata.category(c) not in ("Cc", "Cf") and (spaces or not c.isspace())
    )
    return kept.strip()
