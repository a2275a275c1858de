"""IRCv3 message tags on the lines we send: escaping, checking and the `@...` prefix.

Why: a tag value comes from the Matrix side (a reaction key, a msgid we stored) and must
never break the line: the message-tags spec escapes `;`, space, `\\`, CR and LF in values;
a key that is not of the spec's form is dropped, and so is a tag set over the client-tag
limit. Pure functions; called on the inbox thread (building) and the IRC thread (sending).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# message-tags: the tag data a client sends (without "@" and the space) is at most 4094 bytes.
MAX_CLIENT_TAG_BYTES = 4094
REPLY = "+draft/reply"
REACT = "+draft/react"
LABEL = "label"
_KEY = re.compile(r"\+?(?:[A-Za-z0-9.-]+/)?[A-Za-z0-9-]+\Z")
_ESCAPES = {"\\": "\\\\", ";": "\\:", " ": "\\s", "\r": "\\r", "\n": "\\n", "\0": ""}


def escape_value(value: str) -> str:
    """A tag value escaped per the message-tags spec (NUL dropped: IRC forbids it)."""
    return "".join(_ESCAPES.get(char, char) for char in value)


def valid_key(key: str) -> bool:
    return bool(_KEY.match(key))


def tag_prefix(tags: Mapping[str, str] | None) -> str:
    """`@k=v;k2 ` for the tags with valid keys and values (empty value: the bare key); ""
    when none, or when the whole set is over the client-tag limit."""
    if not tags:
        return ""
    parts = [key if value == "" else f"{key}={escape_value(value)}"
             for key, value in tags.items() if valid_key(key)]
    data = ";".join(parts)
    if not data or len(data.encode()) > MAX_CLIENT_TAG_BYTES:
        return ""
    return f"@{data} "


def with_tags(line: str, tags: Mapping[str, str] | None) -> str:
    """`line` with the tags in front (unchanged without any)."""
    return tag_prefix(tags) + line


def split_tags(line: str) -> tuple[str, str]:
    """(the `@...` tag part with its space, the rest) of an outgoing line."""
    if line.startswith("@"):
        space = line.find(" ")
        if space > 0:
            return line[: space + 1], line[space + 1:]
    return "", line
