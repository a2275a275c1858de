"""IRCv3 capability negotiation and SASL framing, as the specs say (pure functions).

Why a module: `CAP LS 302` replies may span several lines (`CAP * LS * :...` for every line
but the last, capability-negotiation.md), and a SASL response longer than 400 bytes of
base64 goes out as 400-byte `AUTHENTICATE` chunks, followed by `AUTHENTICATE +` when the
last chunk is exactly 400 bytes (sasl-3.1.md, "Authentication exchange"). Getting either
wrong makes SASL look "not offered" or hang. Called on the IRC thread by connection.py.
"""

from __future__ import annotations

import base64

CHUNK = 400


class CapList:
    """Collects the capabilities of a (possibly multi-line) `CAP LS` / `CAP LIST` reply."""

    def __init__(self) -> None:
        self.caps: dict[str, str] = {}

    def feed(self, arguments: list[str]) -> bool:
        """Take one reply's arguments after the target (`["LS", "*", "a b=c"]` or
        `["LS", "a b"]`); True once the last line arrived."""
        more = len(arguments) > 2 and arguments[1] == "*"
        text = arguments[-1] if len(arguments) > 1 else ""
        for item in text.split():
            name, _, value = item.partition("=")
            self.caps[name] = value
        return not more

    def offers_sasl(self, mechanism: str) -> bool:
        """SASL is offered, and (when the server lists mechanisms, as 302 does) ours too."""
        if "sasl" not in self.caps:
            return False
        listed = [m.strip().upper() for m in self.caps["sasl"].split(",") if m.strip()]
        return not listed or mechanism.upper() in listed


def authenticate_chunks(response: bytes) -> list[str]:
    """The arguments of the `AUTHENTICATE` lines that carry `response` (raw bytes)."""
    if not response:
        return ["+"]
    encoded = base64.b64encode(response).decode("ascii")
    chunks = [encoded[i:i + CHUNK] for i in range(0, len(encoded), CHUNK)]
    if len(chunks[-1]) == CHUNK:
        chunks.append("+")
    return chunks
