"""Admin-room commands: what `!join #chan` means, decided without any I/O.

Why a module of its own: the text a user types is untrusted and endlessly varied, so turning
it into a `Command` is kept pure and total. `parse` returns a `Command` (or None for text that
is not a command) and raises only `CommandError` subclasses, whose message is what the bot
posts back as a notice. Running the command (IRC, Matrix, database) is `bridge.admin`'s job.

Grammar: `!name [network] args...`. The network is optional when one network is configured;
with several, commands that act on one connection need it. A leading word is taken as the
network only when it names a configured network and the command still gets its required
arguments without it (so `!whois local` asks about the nick "local").

Thread: any thread: pure (the admin lanes call `parse` before running a command).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..rules.names import valid_channel, valid_nick

# Raw IRC commands that would break what the bridge believes about its own connection.
DENIED_RAW = {
    "QUIT": "use !quit",
    "PASS": "use !storepass",
    "NICK": "use !nick",
    "USER": "use !username",
    "CAP": "the bridge negotiates capabilities itself",
    "AUTHENTICATE": "use !storepass sasl",
    "SERVER": "server-to-server command",
    "SERVICE": "server-to-server command",
    "SQUIT": "server-to-server command",
    "PROTOCTL": "the bridge negotiates the protocol itself",
    "WEBIRC": "gateway command",
}
# What an !autocmd of a user who is not a bridge admin may send: messages to services,
# user modes and away, the usual "after connect" chores.
AUTOCMD_USER_COMMANDS = frozenset({
    "PRIVMSG", "NOTICE", "MODE", "AWAY", "JOIN", "NS", "NICKSERV", "CS", "CHANSERV",
    "HS", "HOSTSERV", "MS", "MEMOSERV",
})
MAX_RAW_BYTES = 510  # an IRC line without its CR LF
USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,9}$")
RAW_COMMAND_RE = re.compile(r"^(?:[A-Za-z]+|[0-9]{3})$")
_SPACES_RE = re.compile(r"[^\S\r\n]")  # any whitespace but the line breaks parse refuses
MAX_AUTOCMDS = 10
PASSWORD_KINDS = ("server", "sasl")
CERTFP_ACTIONS = ("show", "new", "remove")


class CommandError(Exception):
    """A command that cannot run as typed; `str(error)` is told to the user."""


class UnknownCommand(CommandError):
    def __init__(self, name: str, suggestion: str | None = None):
        self.name = name
        self.suggestion = suggestion
        hint = f" Did you mean !{suggestion}?" if suggestion else ""
        shown = f"!{name}" if name else "!"
        super().__init__(f"Unknown command {shown}.{hint} Say !help for the list of commands.")


class UsageError(CommandError):
    """Wrong number or shape of arguments; the message ends with the usage line."""

    def __init__(self, command: str, problem: str):
        self.command = command
        self.problem = problem
        super().__init__(f"{problem}. Usage: {usage(command)}")


class InvalidArgument(UsageError):
    """An argument has the right place but a wrong value (a bad channel, nick, raw line)."""


class NetworkRequired(CommandError):
    def __init__(self, command: str, networks: Sequence[str]):
        self.command = command
        self.networks = tuple(networks)
        super().__init__(
            f"More than one network is bridged: say which, e.g. !{command} "
            f"{networks[0]} ... (networks: {', '.join(networks)})"
        )


class UnknownNetwork(CommandError):
    def __init__(self, name: str, networks: Sequence[str]):
        self.name = name
        self.networks = tuple(networks)
        super().__init__(f"Unknown network {name!r}; configured: {', '.join(networks)}")


class ForbiddenCommand(CommandError):
    """A raw IRC command the bridge refuses to send."""

    def __init__(self, raw_command: str, reason: str):
        self.raw_command = raw_command
        self.reason = reason
        super().__init__(f"{raw_command} cannot be sent through the bridge: {reason}")


class NotAllowed(CommandError):
    """The sender's role ([permissions]) does not allow this."""


@dataclass(frozen=True)
class Spec:
    name: str
    arguments: str  # the usage line after `!name [network]`
    summary: str
    min_args: int = 0
    max_args: int | None = 0  # None: the rest of the line is one argument
    network: str = "one"  # "one": acts on one network; "any": None means all; "none"
    admin: bool = False
    secret: bool = False  # its arguments are never echoed or logged


SPECS: dict[str, Spec] = {s.name: s for s in (
    Spec("help", "[command]", "List the commands, or explain one.", 0, 1, "none"),
    Spec("join", "#channel [key]", "Join an IRC channel (you are invited to its room).", 1, 2),
    Spec("part", "#channel", "Leave an IRC channel (and its room).", 1, 1),
    Spec("nick", "NEWNICK", "Change your IRC nick (checked with WHOIS first; remembered).",
         1, 1),
    Spec("whois", "NICK", "Ask the IRC server who someone is.", 1, 1),
    Spec("username", "[NAME]", "Show or set your IRC username (ident); used from your next "
         "connection.", 0, 1),
    Spec("storepass", "[server|sasl] PASSWORD", "Store your IRC password, encrypted; your "
         "message is redacted. server = PASS at connect (default), sasl = SASL PLAIN.",
         1, None, secret=True),
    Spec("removepass", "", "Forget your stored IRC password."),
    Spec("certfp", "[show|new|remove]", "Show (making it once) the TLS client certificate "
         "fingerprint to register with NickServ (CERT ADD).", 0, 1),
    Spec("autocmd", "[list | add RAW LINE | remove N | clear]", "IRC lines sent each time "
         "your connection is made, e.g. add PRIVMSG NickServ :IDENTIFY secret.", 0, None),
    Spec("longmessages", "[link|lines]", "How your messages longer than the network's "
         "max_lines reach IRC: the first line and a link to the whole text (link, the "
         "default), or every line (lines).", 0, 1),
    Spec("reactions", "[on|off]", "Whether your Matrix reactions reach IRC as a short "
         "line where the server cannot carry them as tags (on, the default) or not (off).",
         0, 1),
    Spec("relay", "[on|off]", "Where the network allows it (relay_mode = optional): on, "
         "the bridge's bot says your messages for you (as yourname/m, or <yourname> text) "
         "and you have no IRC connection of your own; off (the default), your own "
         "connection says them.", 0, 1),
    Spec("reconnect", "", "Drop your IRC connection and make it again."),
    Spec("quit", "", "Close your IRC connection (a message in a bridged room reopens it)."),
    Spec("listrooms", "", "List the channels your connection is in, with their rooms.",
         network="any"),
    Spec("cmd", "RAW IRC LINE", "Send a raw IRC line from your connection (bridge admins "
         "only; QUIT, PASS, NICK, USER, CAP... are refused).", 1, None, admin=True),
    Spec("bridgeversion", "", "Show the bridge's version.", network="none"),
    Spec("status", "", "Show your connections, nicks, channels and stored settings.",
         network="any"),
)}


@dataclass(frozen=True)
class Command:
    """A parsed command. `network` is None only for commands about every network."""

    name: str
    network: str | None
    args: tuple[str, ...] = ()

    @property
    def spec(self) -> Spec:
        return SPECS[self.name]

    def __repr__(self) -> str:
        args = self.args
        if self.spec.secret and args:
            args = ("<redacted>",)
        elif self.name == "autocmd" and args[:1] == ("add",):
            args = ("add", "<redacted>")
        elif self.name == "cmd" and args:
            args = (args[0].split(" ", 1)[0] + " <redacted>",)  # may be a NickServ IDENTIFY
        elif self.name == "join" and len(args) > 1:
            args = (args[0], "<redacted>")  # the channel key
        return f"Command({self.name!r}, network={self.network!r}, args={args!r})"

    __str__ = __repr__


def usage(name: str) -> str:
    spec = SPECS[name]
    network = " [network]" if spec.network != "none" else ""
    return f"!{name}{network}" + (f" {spec.arguments}" if spec.arguments else "")


def help_text(name: str | None = None, *, is_admin: bool = False) -> str:
    """The text of !help (one command's when `name` is given)."""
    if name is not None:
        spec = SPECS[name]
        return f"{usage(name)}\n{spec.summary}"
    lines = ["Commands (the network may be left out when only one is bridged):"]
    for spec in SPECS.values():
        if spec.admin and not is_admin:
            continue
        lines.append(f"{usage(spec.name)} — {spec.summary}")
    return "\n".join(lines)


def normalise(body: str) -> str:
    """The one form of a message that parsing and the secret check both read.

    Stripped, and every kind of space (tab, no-break space, em space...) but line breaks
    made a plain space. One character for one, so offsets into it are offsets into
    `body.strip()`: arguments such as passwords are still taken from what was typed.
    """
    return _SPACES_RE.sub(" ", body.strip())


def command_word(body: str) -> str | None:
    """The lower-case command name of a message, or None when it is not a command."""
    text = normalise(body)
    if not text.startswith("!"):
        return None
    first = text[1:].split(None, 1)
    return first[0].lower() if first else ""


def holds_secret(body: str) -> bool:
    """Whether a command message may hold a secret, read as `parse` reads it.

    Its stored copy is scrubbed and it is redacted in the room: !storepass, any !cmd (a raw
    line may be a NickServ IDENTIFY), !autocmd add, and !join with a channel key. Typos
    and wrong arguments count too: the check must never be narrower than the parser.
    """
    words = normalise(body).split()
    if not words or not words[0].startswith("!"):
        return False
    name, args = words[0][1:].lower(), [w.lower() for w in words[1:]]
    if name in ("storepass", "cmd"):
        return True
    if name == "autocmd":
        return "add" in args[:2]
    if name == "join":
        channel = next((i for i, w in enumerate(args) if valid_channel(w)), None)
        return len(args) > (1 if channel is None else channel + 1)
    return False


def parse(body: str, networks: Sequence[str]) -> Command | None:
    """Parse a message; None when it does not start with `!`. Raises only CommandError."""
    text = body.strip()
    if not text.startswith("!"):
        return None
    if "\n" in text or "\r" in text:
        name = command_word(text) or ""
        if name in SPECS:
            raise InvalidArgument(name, "Send one command per message")
        raise UnknownCommand(name[:40], _suggest(name))
    body = text[1:]
    words = _words(normalise(text)[1:])  # arguments are cut from `body`, as typed
    if not words:
        raise UnknownCommand("", None)
    name = words[0][0].lower()
    spec = SPECS.get(name)
    if spec is None:
        raise UnknownCommand(name[:40], _suggest(name))
    network, consumed, args = _take_network(spec, words, networks)
    values = [w for w, _ in args]
    if len(values) < spec.min_args:
        raise UsageError(name, "Missing argument")
    if spec.max_args is not None and len(values) > spec.max_args:
        raise UsageError(name, "Too many arguments")
    checked = _CHECKS.get(name, _no_check)(name, values, body[consumed:].strip())
    return Command(name, network, checked)


def _take_network(spec: Spec, words: list[tuple[str, int]], networks: Sequence[str]
                  ) -> tuple[str | None, int, list[tuple[str, int]]]:
    """(network, offset past the words used, remaining words) for a command's arguments."""
    args = words[1:]
    consumed = words[0][1]
    if spec.network == "none":
        return None, consumed, args
    if args:
        found = _network_named(args[0][0], networks)
        if found is not None and len(args) - 1 >= spec.min_args:
            return found, args[0][1], args[1:]
    values = [w for w, _ in args]
    if _extra_word_is_network(spec, values):
        raise UnknownNetwork(values[0][:40], networks)
    if len(networks) == 1:
        return networks[0], consumed, args
    if spec.network == "one":
        if spec.max_args is not None and len(values) > spec.min_args \
                and re.match(r"^[A-Za-z0-9_.-]+$", values[0]):
            raise UnknownNetwork(values[0][:40], networks)
        raise NetworkRequired(spec.name, networks)
    return None, consumed, args


def validate_raw(name: str, line: str) -> str:
    """A raw IRC line the bridge may send: one line, at most 510 bytes, not a denied command.

    Returns it with the command word in upper case.
    """
    line = line.strip()
    if not line:
        raise UsageError(name, "Missing the IRC line")
    if any(c in line for c in "\r\n\0"):
        raise InvalidArgument(name, "The IRC line must not contain line breaks or NUL")
    if len(line.encode("utf-8")) > MAX_RAW_BYTES:
        raise InvalidArgument(name, f"The IRC line is longer than {MAX_RAW_BYTES} bytes")
    command, _, params = line.partition(" ")
    if not RAW_COMMAND_RE.match(command):
        raise InvalidArgument(name, f"{command[:40]!r} is not an IRC command")
    command = command.upper()
    if command in DENIED_RAW:
        raise ForbiddenCommand(command, DENIED_RAW[command])
    return f"{command} {params}".rstrip() if params else command


def check_autocmd(line: str, *, is_admin: bool) -> None:
    """Raise NotAllowed when a user who is not an admin adds a command outside the safe set."""
    command = line.split(" ", 1)[0].upper()
    if not is_admin and command not in AUTOCMD_USER_COMMANDS:
        allowed = ", ".join(sorted(AUTOCMD_USER_COMMANDS))
        raise NotAllowed(f"Only bridge admins may auto-send {command}; you may use: {allowed}")


# ----------------------------------------------------------------------------- helpers
def _words(text: str) -> list[tuple[str, int]]:
    """Whitespace-separated words with the offset just past each one."""
    return [(m.group(0), m.end()) for m in re.finditer(r"\S+", text)]


def _suggest(name: str) -> str | None:
    if not name:
        return None
    found = difflib.get_close_matches(name.lower()[:40], list(SPECS), n=1, cutoff=0.6)
    return found[0] if found else None


def _network_named(word: str, networks: Sequence[str]) -> str | None:
    for network in networks:
        if network.lower() == word.lower():
            return network
    return None


def _extra_word_is_network(spec: Spec, values: list[str]) -> bool:
    """One word too many, and the first looks like a network name: a mistyped network."""
    return (
        spec.max_args is not None
        and len(values) == spec.max_args + 1
        and bool(re.match(r"^[A-Za-z0-9_.-]+$", values[0]))
    )


def _no_check(name: str, values: list[str], rest: str) -> tuple[str, ...]:
    return tuple(values)


def _check_help(name: str, values: list[str], rest: str) -> tuple[str, ...]:
    if values:
        wanted = values[0].lstrip("!").lower()
        if wanted not in SPECS:
            raise UnknownCommand(wanted[:40], _suggest(wanted))
        return (wanted,)
    return ()


def _channel(name: str, value: str) -> str:
    if not valid_channel(value):
        raise InvalidArgument(name, f"{value[:60]!r} is not an IRC channel (they start with #)")
    return value


def _check_join(name: str, values: list[str], rest: str) -> tuple[str, ...]:
    channel = _channel(name, values[0])
    if len(values) > 1:
        key = values[1]
        if len(key) > 50 or any(ord(c) < 33 or c == "," for c in key):
            raise InvalidArgument(name, "The channel key has characters IRC does not allow")
        return channel, key
    return (channel,)


def _check_part(name: str, values: list[str], rest: str) -> tuple[str, ...]:
    return (_channel(name, values[0]),)


def _check_nick(name: str, values: list[str], rest: str) -> tuple[str, ...]:
    if not valid_nick(values[0]):
        raise InvalidArgument(name, f"{values[0][:60]!r} is not a valid IRC nick")
    return (values[0],)


def _check_username(name: str, values: list[str], rest: str) -> tuple[str, ...]:
    if values and not USERNAME_RE.match(values[0]):
        raise InvalidArgument(
            name, "A username is 1 to 10 letters, digits, '_', '.' or '-', starting with a "
                  "letter or digit")
    return tuple(values)


def _check_storepass(name: str, values: list[str], rest: str) -> tuple[str, ...]:
    kind = "server"
    password = rest
    if len(values) > 1 and values[0].lower() in PASSWORD_KINDS:
        kind = values[0].lower()
        password = rest[len(values[0]):].strip()
    if not password:
        raise UsageError(name, "Missing the password")
    if any(c in password for c in "\r\n\0"):
        raise InvalidArgument(name, "The password must not contain line breaks or NUL")
    if len(password.encode("utf-8")) > 300:
        raise InvalidArgument(name, "The password is longer than 300 bytes")
    return kind, password


def _check_certfp(name: str, values: list[str], rest: str) -> tuple[str, ...]:
    action = values[0].lower() if values else "show"
    if action not in CERTFP_ACTIONS:
        raise InvalidArgument(name, f"Unknown action {values[0][:40]!r}")
    return (action,)


def _check_longmessages(name: str, values: list[str], rest: str) -> tuple[str, ...]:
    if not values:
        return ()
    choice = values[0].lower()
    if choice not in ("link", "lines"):
        raise InvalidArgument(name, "Say link or lines")
    return (choice,)


def _check_on_off(name: str, values: list[str], rest: str) -> tuple[str, ...]:
    if not values:
        return ()
    choice = values[0].lower()
    if choice not in ("on", "off"):
        raise InvalidArgument(name, "Say on or off")
    return (choice,)


def _check_autocmd(name: str, values: list[str], rest: str) -> tuple[str, ...]:
    if not values or values[0].lower() == "list":
        if len(values) > 1:
            raise UsageError(name, "Too many arguments")
        return ("list",)
    action = values[0].lower()
    after = rest[len(values[0]):].strip()
    if action == "add":
        return "add", validate_raw(name, after)
    if action == "remove":
        if len(values) != 2 or not values[1].isdigit() or not 1 <= int(values[1]) <= 1000:
            raise UsageError(name, "Say which line to remove by its number in !autocmd list")
        return "remove", str(int(values[1]))
    if action == "clear":
        if len(values) > 1:
            raise UsageError(name, "Too many arguments")
        return ("clear",)
    raise InvalidArgument(name, f"Unknown action {values[0][:40]!r}")


def _check_cmd(name: str, values: list[str], rest: str) -> tuple[str, ...]:
    return (validate_raw(name, rest),)


_CHECKS = {
    "help": _check_help,
    "join": _check_join,
    "part": _check_part,
    "nick": _check_nick,
    "whois": _check_nick,
    "username": _check_username,
    "storepass": _check_storepass,
    "certfp": _check_certfp,
    "autocmd": _check_autocmd,
    "longmessages": _check_longmessages,
    "reactions": _check_on_off,
    "relay": _check_on_off,
    "cmd": _check_cmd,
}
