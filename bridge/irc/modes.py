"""Channel modes as the server defines them, and what they mean for a channel's room.

Pure: no I/O, no threads. The IRC thread (bridge.irc.network) keeps one `ChannelModes` per
channel, fed by RPL_CHANNELMODEIS (324), NAMES and MODE lines, and hands frozen
`ChannelState` snapshots to the core. ISUPPORT decides the grammar: PREFIX lists the
membership modes (each takes a nick), CHANMODES the four kinds of channel modes (list modes
and keys always take an argument, limits only when set, flags never). A server that sends
no ISUPPORT gets the RFC 1459 defaults.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

# Modes that keep a channel's content from the public: a key, invite-only, secret, private.
PRIVATE_MODES = frozenset("kisp")
# Membership modes -> Matrix power level (matrix-appservice-irc's default map; other
# prefixes such as +h/+q/+a grant nothing unless mapped). Never above MAX_LEVEL.
POWER_FOR_MODE: Mapping[str, int] = {"o": 50, "v": 1}
MAX_LEVEL = 50


class ModeChange(NamedTuple):
    sign: str  # "+" or "-"
    mode: str
    argument: str | None


@dataclass(frozen=True)
class ModeSyntax:
    """Which modes take an argument, from ISUPPORT PREFIX and CHANMODES."""

    prefix_modes: str = "ov"  # highest rank first
    prefix_symbols: str = "@+"
    list_modes: str = "beI"  # CHANMODES type A: always an argument
    key_modes: str = "k"  # type B: always an argument
    limit_modes: str = "l"  # type C: an argument when set
    flag_modes: str = "imnpst"  # type D: never an argument

    @classmethod
    def from_isupport(cls, prefix: Mapping[str, str] | None,
                      chanmodes: Sequence[str] | str | None) -> ModeSyntax:
        """`prefix` as jaraco's FeatureSet keeps it (symbol -> mode, in rank order);
        `chanmodes` the CHANMODES value split on commas."""
        default = cls()
        symbols = "".join(prefix) if prefix else default.prefix_symbols
        modes = "".join(prefix.values()) if prefix else default.prefix_modes
        if isinstance(chanmodes, str):
            chanmodes = chanmodes.split(",")
        kinds = [*(chanmodes or ()), "", "", "", ""][:4] if chanmodes else [
            default.list_modes, default.key_modes, default.limit_modes, default.flag_modes]
        return cls(modes, symbols, *kinds)

    def takes_argument(self, sign: str, mode: str) -> bool:
        if mode in self.prefix_modes or mode in self.list_modes or mode in self.key_modes:
            return True
        return mode in self.limit_modes and sign == "+"

    def symbol_mode(self, symbol: str) -> str | None:
        index = self.prefix_symbols.find(symbol)
        return self.prefix_modes[index] if index >= 0 and symbol else None


def parse_modes(syntax: ModeSyntax, words: Sequence[str]) -> list[ModeChange]:
    """`["+ho-v", "Dan", "Eve", "Fay"]` -> one change per letter with its own argument.

    A change whose argument is missing (a broken server) is kept without one; modes the
    syntax does not know are taken as flags, as RFC 1459 servers send them.
    """
    if not words:
        return []
    changes: list[ModeChange] = []
    arguments = list(words[1:])
    sign = "+"
    for letter in words[0]:
        if letter in "+-":
            sign = letter
            continue
        argument = None
        if syntax.takes_argument(sign, letter):
            argument = arguments.pop(0) if arguments else None
        changes.append(ModeChange(sign, letter, argument))
    return changes


@dataclass(frozen=True)
class ChannelState:
    """What the core needs to know of a channel: its modes, and whether our bot was kept out
    (a channel the bot cannot join is read only by puppets: as private as a keyed one)."""

    modes: frozenset[str] = frozenset()
    known: bool = False  # the server told us the modes (324) at least once
    bot_refused: str | None = None  # the server's reason, while the bot cannot join

    @property
    def private(self) -> bool:
        return bool(self.modes & PRIVATE_MODES) or self.bot_refused is not None

    @property
    def join_rule(self) -> str:
        """The room's join rule for this whole mode set (not just the last change)."""
        return "invite" if self.private else "public"

    def describe(self) -> str:
        parts = [f"+{m}" for m in sorted(self.modes & PRIVATE_MODES)]
        if self.bot_refused:
            parts.append(f"the bridge cannot join ({self.bot_refused})")
        return ", ".join(parts)


@dataclass
class ChannelModes:
    """The IRC thread's view of one channel's modes and of its members' prefixes."""

    flags: dict[str, str | None] = field(default_factory=dict)
    prefixes: dict[str, set[str]] = field(default_factory=dict)  # folded nick -> modes
    known: bool = False
    bot_refused: str | None = None
    # Nicks whose prefixes came from a NAMES entry with one symbol: without the server's
    # multi-prefix, `@nick` may hide a +v. Losing a prefix of theirs asks NAMES again.
    unsure: set[str] = field(default_factory=set)
    recheck: dict[str, str] = field(default_factory=dict)  # folded -> as written, till NAMES

    def snapshot(self) -> ChannelState:
        return ChannelState(frozenset(self.flags), self.known, self.bot_refused)

    def reset(self, syntax: ModeSyntax, changes: Iterable[ModeChange]) -> None:
        """RPL_CHANNELMODEIS: the full set of channel (not list, not member) modes."""
        self.flags = {}
        self.known = True
        self.apply(syntax, changes, lambda nick: nick)

    def apply(self, syntax: ModeSyntax, changes: Iterable[ModeChange],
              fold: Callable[[str], str]) -> list[str]:
        """Apply a MODE line; returns the folded nicks whose prefixes changed."""
        touched: list[str] = []
        for sign, letter, argument in changes:
            if letter in syntax.prefix_modes:
                if not argument:
                    continue
                nick = fold(argument)
                held = self.prefixes.setdefault(nick, set())
                if sign == "+":
                    held.add(letter)
                else:
                    held.discard(letter)
                touched.append(nick)
            elif letter in syntax.list_modes:
                continue  # bans and exceptions are not channel state the room mirrors
            elif sign == "+":
                self.flags[letter] = argument
            else:
                self.flags.pop(letter, None)
        return touched

    def names(self, syntax: ModeSyntax, entries: Iterable[str],
              fold: Callable[[str], str]) -> None:
        """A NAMES reply: `@+nick` (several symbols with multi-prefix) sets the prefixes."""
        for entry in entries:
            held: set[str] = set()
            rest = entry
            while rest and (found := syntax.symbol_mode(rest[0])) is not None:
                held.add(found)
                rest = rest[1:]
            if rest:
                nick = fold(rest)
                self.prefixes[nick] = held
                if len(held) == 1 and len(syntax.prefix_modes) > 1:
                    self.unsure.add(nick)
                else:
                    self.unsure.discard(nick)

    def level(self, nick: str, powers: Mapping[str, int] = POWER_FOR_MODE) -> int:
        """The power the highest remaining prefix of a (folded) nick maps to, at most 50."""
        held = self.prefixes.get(nick, set())
        return min(MAX_LEVEL, max((powers.get(m, 0) for m in held), default=0))

    def needs_names(self, nick: str, changes: Iterable[ModeChange],
                    fold: Callable[[str], str]) -> bool:
        """A prefix was taken from a nick whose lower prefixes NAMES may have hidden."""
        return nick in self.unsure and any(
            c.sign == "-" and c.argument and fold(c.argument) == nick for c in changes)

    def forget(self, nick: str) -> None:
        self.prefixes.pop(nick, None)
        self.unsure.discard(nick)
        self.recheck.pop(nick, None)

    def rename(self, old: str, new: str) -> None:
        if old in self.prefixes:
            self.prefixes[new] = self.prefixes.pop(old)
        if old in self.unsure:
            self.unsure.discard(old)
            self.unsure.add(new)
        if old in self.recheck:
            self.recheck[new] = self.recheck.pop(old)
