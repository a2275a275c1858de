"""IRCv3 capability negotiation (CAP 302, cap-notify) and SASL framing, as pure state.

Why a module: `CAP LS 302` replies may span several lines (`CAP * LS * :...` for every line
but the last, capability-negotiation.md), a `CAP REQ` is answered as a whole (ACK or NAK of
the full list), capabilities come and go while connected (`CAP NEW` / `CAP DEL`,
cap-notify), and registration waits for `CAP END`: a server that never answers must not
keep us unregistered until its own registration timeout. A SASL response longer than 400
bytes of base64 goes out as 400-byte `AUTHENTICATE` chunks, followed by `AUTHENTICATE +`
when the last chunk is exactly 400 bytes (sasl-3.1.md). Getting any of this wrong makes
SASL look "not offered", hangs registration, or loses capabilities.

`CapNegotiation` does no I/O and reads no clock: connection.py feeds it what the server
said (and the deadline, from a timer) and sends the lines it returns. Called on the IRC
thread only, by connection.py; each connection has its own.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

CHUNK = 400
VERSION = 302
# Seconds from the TCP connect until CAP END goes out whatever the server (or its SASL
# services) still owes us. Below every registration timeout we know: InspIRCd's default
# <connect timeout> is 10 s, ngircd, hybrid and Ergo allow more.
CAP_DEADLINE = 8.0
# The longest line we send, without its CR LF (RFC 1459: 512 bytes with it), with room to
# spare for servers that count the prefix they would add.
MAX_LINE = 500

# What the bridge uses (issue 14), in the order they are requested. `sasl` is requested
# whenever offered (it only allows AUTHENTICATE); the exchange runs only with credentials.
# `echo-message` is safe to take: a line from one of our own nicks is never relayed
# (network.py `_ours`), so an echo cannot come back to Matrix.
WANTED: tuple[str, ...] = (
    "cap-notify", "server-time", "message-tags", "echo-message", "labeled-response", "batch",
    "multi-prefix", "userhost-in-names", "extended-join", "account-notify", "away-notify",
    "chghost", "setname", "invite-notify", "account-tag", "draft/chathistory",
    "draft/event-playback",  # history replays JOIN/PART as such, not as HistServ lines
    "draft/multiline", "draft/relaymsg", "sasl",
)


class CapList:
    """Collects the capabilities of a (possibly multi-line) `CAP LS` / `CAP LIST` reply."""

    def __init__(self) -> None:
        self.caps: dict[str, str] = {}

    def feed(self, arguments: list[str]) -> bool:
        """Take one reply's arguments after the target (`["LS", "*", "a b=c"]` or
        `["LS", "a b"]`); True once the last line arrived."""
        more = len(arguments) > 2 and arguments[1] == "*"
        text = arguments[-1] if len(arguments) > 1 else ""
        self.caps.update(parse_caps(text))
        return not more

    def offers_sasl(self, mechanism: str) -> bool:
        """SASL is offered, and (when the server lists mechanisms, as 302 does) ours too."""
        return offers_sasl(self.caps, mechanism)


def parse_caps(text: str) -> dict[str, str]:
    """`a b=c -d` -> {"a": "", "b": "c", "-d": ""} (modifiers are the caller's business)."""
    caps: dict[str, str] = {}
    for item in text.split():
        name, _, value = item.partition("=")
        if name:
            caps[name] = value
    return caps


def offers_sasl(caps: Mapping[str, str], mechanism: str) -> bool:
    """SASL is in `caps`, and (when the server lists mechanisms, as 302 does) ours too."""
    if "sasl" not in caps:
        return False
    listed = [m.strip().upper() for m in caps["sasl"].split(",") if m.strip()]
    return not listed or mechanism.upper() in listed


def req_lines(caps: Iterable[str], limit: int = MAX_LINE) -> list[list[str]]:
    """Group capability names into `CAP REQ :...` lines of at most `limit` bytes each."""
    groups: list[list[str]] = []
    head = len(b"CAP REQ :")
    size = head
    for cap in caps:
        width = len(cap.encode()) + (0 if size == head else 1)
        if groups and size + width <= limit:
            groups[-1].append(cap)
            size += width
        else:
            groups.append([cap])
            size = head + len(cap.encode())
    return groups


def req_line(group: Iterable[str]) -> str:
    return "CAP REQ :" + " ".join(group)


def authenticate_chunks(response: bytes) -> list[str]:
    """The arguments of the `AUTHENTICATE` lines that carry `response` (raw bytes)."""
    if not response:
        return ["+"]
    encoded = base64.b64encode(response).decode("ascii")
    chunks = [encoded[i:i + CHUNK] for i in range(0, len(encoded), CHUNK)]
    if len(chunks[-1]) == CHUNK:
        chunks.append("+")
    return chunks


@dataclass
class Step:
    """What the connection does after feeding the negotiation: send `lines` (in order);
    report `sasl_failed` (the reason) when a configured SASL login did not happen."""

    lines: list[str] = field(default_factory=list)
    sasl_failed: str | None = None


class CapNegotiation:
    """One connection's capabilities, from `CAP LS 302` to `CAP END` and on while connected.

    Phases: "ls" (collecting LS lines), "req" (REQs sent, waiting for every ACK/NAK),
    "sasl" (AUTHENTICATE under way), "done" (CAP END sent, or registration happened
    without it). `offered` and `enabled` map capability names to their values ("" for
    none); `enabled` is what the server ACKed and did not DEL since.
    """

    def __init__(self, *, sasl_mechanism: str | None = None, sasl_response: bytes = b"",
                 wanted: Iterable[str] = WANTED, line_limit: int = MAX_LINE):
        self.wanted = tuple(wanted)
        self.sasl_mechanism = sasl_mechanism
        self._sasl_response = sasl_response
        self.line_limit = line_limit
        self._reset()

    def _reset(self) -> None:
        self.phase = "idle"
        self.offered: dict[str, str] = {}
        self.enabled: dict[str, str] = {}
        self._ls = CapList()
        self._pending: list[frozenset[str]] = []  # REQs sent and not answered, in order
        self._retried: set[str] = set()  # caps asked again one by one after a NAK
        self._sasl_sent = False  # the client response went out (AUTHENTICATE <data>)

    # ------------------------------------------------------------ views
    @property
    def ended(self) -> bool:
        """CAP END went out (or was not needed): registration is not held by us."""
        return self.phase == "done"

    def snapshot(self) -> Mapping[str, str]:
        """The enabled capabilities as an immutable mapping (safe to hand to any thread)."""
        return MappingProxyType(dict(self.enabled))

    # ------------------------------------------------------------ inputs
    def begin(self) -> Step:
        """The first line, sent before NICK/USER so the server holds registration."""
        self._reset()
        self.phase = "ls"
        return Step([f"CAP LS {VERSION}"])

    def feed(self, arguments: list[str]) -> Step:
        """One CAP reply, its arguments after the target (`["LS", "*", "a b"]`,
        `["ACK", "a b"]`, `["NEW", "c=1"]`, ...)."""
        if not arguments:
            return Step()
        sub = arguments[0].upper()
        text = arguments[-1] if len(arguments) > 1 else ""
        if sub == "LS" and self.phase == "ls":
            if not self._ls.feed(arguments):
                return Step()  # more LS lines follow
            self.offered = {**self._ls.caps, **self.offered}  # a NEW may have come first
            return self._request(self._wanted_of(self.offered))
        if sub in ("ACK", "NAK"):
            return self._answered(text, ack=sub == "ACK")
        if sub == "NEW":
            return self._new(parse_caps(text))
        if sub == "DEL":
            for name in parse_caps(text):
                self.offered.pop(name, None)
                self.enabled.pop(name, None)
        return Step()

    def _new(self, new: dict[str, str]) -> Step:
        """cap-notify: capabilities offered from now on (or with new values)."""
        self.offered.update(new)
        for name, value in new.items():
            if name in self.enabled:
                self.enabled[name] = value
        if self.phase in ("idle", "ls"):
            return Step()  # before the LS is complete: it will be asked with the rest
        return self._request(self._wanted_of(new))

    def challenge(self, argument: str) -> Step:
        """`AUTHENTICATE <argument>` from the server: `+` asks for our response."""
        if self.phase != "sasl" or argument != "+" or self._sasl_sent:
            return Step()
        self._sasl_sent = True
        return Step([f"AUTHENTICATE {chunk}" for chunk in authenticate_chunks(self._sasl_response)])

    def sasl_result(self, ok: bool, reason: str) -> Step:
        """903 (ok) or 902/904/905/906: the login is over either way; registration goes on."""
        if self.phase != "sasl":
            return Step()
        return self._end(None if ok else reason)

    def deadline(self) -> Step:
        """CAP_DEADLINE passed since the connect: end the negotiation with what we have."""
        if self.phase in ("idle", "done"):
            return Step()
        failed = None
        if self.sasl_mechanism is not None:
            failed = "no answer from the server's SASL in time" if self.phase == "sasl" \
                else "the server did not finish capability negotiation in time"
        self._pending.clear()
        return self._end(failed)

    def registered(self) -> None:
        """001 arrived: a server that knows no CAP registered us without CAP END."""
        if self.phase != "done":
            self._pending.clear()
            self.phase = "done"

    # ------------------------------------------------------------ internals
    def _wanted_of(self, caps: Mapping[str, str]) -> list[str]:
        return [name for name in self.wanted if name in caps and name not in self.enabled
                and not any(name in pending for pending in self._pending)]

    def _request(self, names: list[str]) -> Step:
        step = Step()
        for group in req_lines(names, self.line_limit):
            self._pending.append(frozenset(group))
            step.lines.append(req_line(group))
        if self.phase == "ls":
            self.phase = "req"
            if not self._pending:
                return self._after_req(step)
        return step

    def _answered(self, text: str, *, ack: bool) -> Step:
        caps = parse_caps(text)
        names = frozenset(name.lstrip("-~=") for name in caps)
        # Servers answer REQs in order; match by content, else take the oldest.
        index = next((i for i, p in enumerate(self._pending) if p == names), 0)
        asked = self._pending.pop(index) if self._pending else names
        step = Step()
        if ack:
            for raw in caps:
                name = raw.lstrip("~=")
                if name.startswith("-"):
                    self.enabled.pop(name[1:], None)
                else:
                    self.enabled[name] = self.offered.get(name, "")
        elif len(asked) > 1:
            # The whole line was refused (one cap went away in between?): ask for each
            # once on its own, so one refusal does not cost the others.
            again = [n for n in self.wanted if n in asked and n not in self._retried]
            self._retried.update(again)
            for name in again:
                self._pending.append(frozenset((name,)))
                step.lines.append(req_line((name,)))
        if self.phase == "req" and not self._pending:
            return self._after_req(step)
        return step

    def _after_req(self, step: Step) -> Step:
        """Every REQ of the registration is answered: SASL if we can, else CAP END."""
        mechanism = self.sasl_mechanism
        if mechanism is None:
            return self._end(None, step)
        if "sasl" not in self.enabled or not offers_sasl(self.offered, mechanism):
            why = f"the server offers no SASL {mechanism}" if not offers_sasl(
                self.offered, mechanism) else "the server refused the sasl capability"
            return self._end(why, step)
        self.phase = "sasl"
        step.lines.append(f"AUTHENTICATE {mechanism}")
        return step

    def _end(self, sasl_failed: str | None, step: Step | None = None) -> Step:
        step = step or Step()
        self.phase = "done"
        step.lines.append("CAP END")
        step.sasl_failed = sasl_failed
        return step
