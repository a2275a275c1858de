"""Read and validate config.ini into frozen dataclasses.

Every problem is collected before anything is reported, so an admin fixes the whole file in
one pass: each message names the section, the key, the value found and what was expected.
This module is pure: it imports nothing of the project but `secretfile` (to write tokens
into config.ini with mode 0600).

Thread: the thread that loads the config, once (the CLI's main thread, or the one running
`create_app`); the frozen result may be read on any thread.
"""

from __future__ import annotations

import configparser
import dataclasses
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict
from urllib.parse import urlsplit

from ..rules.ids import UserId
from .secretfile import write_private

log = logging.getLogger(__name__)

ENV_CONFIG = "IRCBRIDGE_CONFIG"
ENV_DATABASE_URL = "IRCBRIDGE_DATABASE_URL"


class ConfigError(Exception):
    """Raised with every problem of a config file; `problems` holds one line each."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class HomeserverConfig:
    url: str
    domain: str


@dataclass(frozen=True)
class AppserviceConfig:
    id: str
    url: str
    bind: str
    threads: int
    as_token: str
    hs_token: str
    sender_localpart: str
    registration: Path
    max_body_bytes: int
    senders: int
    # Regexes of Matrix user ids this bridge never makes IRC puppets for (other application
    # services' bots and virtual users); other ircbridge bridges on the same database are
    # known without it (bridge/core/foreign.py).
    exclude_users: tuple[str, ...] = ()

    @property
    def bind_host(self) -> str:
        return self.bind.rsplit(":", 1)[0].strip("[]")

    @property
    def bind_port(self) -> int:
        return int(self.bind.rsplit(":", 1)[1])


@dataclass(frozen=True)
class DatabaseConfig:
    url: str
    keep_days: int = 7  # handled queue rows and transactions are pruned after this
    sqlite_synchronous: str = "full"  # "full": a commit survives power loss; "normal": not


@dataclass(frozen=True)
class NetworkConfig:
    name: str
    host: str
    port: int
    tls: bool
    tls_verify: bool
    display_name: str
    user_template: str
    alias_template: str
    puppet_nick_template: str
    bot_nick: str
    channels: tuple[str, ...]
    scrollback_lines: int
    flood_rate: float
    flood_burst: int
    max_lines: int
    connect_timeout: float
    max_concurrent_connects: int
    password: str
    # Static mappings from `rooms = #chan = !roomid, #other = !room2`: (channel, room id)
    # pairs linked at every start (kind "static"); see docs/admin.md.
    rooms: tuple[tuple[str, str], ...] = ()
    # Seconds a Matrix message may wait for its IRC connection before its sender is told it
    # was not delivered.
    give_up_after: float = 600.0
    # Seconds before a kicked bot or puppet tries to rejoin (the bot doubles it per try).
    kick_rejoin_after: float = 30.0
    # Seconds a netsplit QUIT waits for its user to come back before their ghost leaves.
    netsplit_leave_after: float = 1800.0
    # Matrix presence -> AWAY on the user's puppet (unavailable/offline: away; online: back).
    away_from_presence: bool = False
    # Relay mode (bridge.core.relay): "off" (every Matrix user has their own connection),
    # "optional" (own connections; a user may choose `!relay on`), "always" (the bot relays
    # everyone: RELAYMSG where offered, else `<nick> text`). A room may override it.
    relay_mode: str = "off"
    # Bytes of output a connection may hold for a server that does not read them before it
    # is dropped and reconnected.
    send_buffer_limit: int = 262144
    # The bot's own login: SASL PLAIN (account, password), or SASL EXTERNAL with a client
    # certificate (PEM files; the key may sit in the certificate's file), and the IRC lines
    # it sends after connecting, before it joins its channels.
    sasl_username: str = ""
    sasl_password: str = ""
    client_cert: Path | None = None
    client_key: Path | None = None
    autocmds: tuple[str, ...] = ()
    # New portal rooms (made for an alias or a !join) per rolling hour: on the whole network,
    # and for one user (alias queries name nobody, so they count on the network only).
    portals_per_hour: int = 30
    portals_per_user_per_hour: int = 10
    # Every (host, port) of `host = a.example:6697, b.example`, tried in turn; empty: (host,
    # port) only.
    servers: tuple[tuple[str, int], ...] = ()
    # Seconds to wait before connecting again after the server said we are banned (K-line).
    banned_retry_after: float = 3600.0
    # New TCP connects per second on this network (first connects and reconnects, the bot
    # and puppets alike) after a burst of `connect_burst`; 0: no rate (the concurrency cap
    # max_concurrent_connects still holds).
    connects_per_second: float = 5.0
    connect_burst: int = 5


@dataclass(frozen=True)
class LoggingConfig:
    level: str
    format: str
    file: str
    # (logger name, level) pairs from `levels = bridge.irc=DEBUG, peewee=WARNING`
    levels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class MetricsConfig:
    bind: str = ""  # empty: /metrics on the bridge's own port; else HOST:PORT of its own


@dataclass(frozen=True)
class StatusConfig:
    # Opens the status page at / and the details of /health; empty: the page answers 403
    # and /health says only ok / not ok with the names of failing parts.
    secret: str = ""


@dataclass(frozen=True)
class ProvisioningConfig:
    secret: str = ""  # empty: the provisioning API answers 403
    # Fernet key for what users store with !storepass/!certfp (`ircbridge generate-key`);
    # None: nothing secret can be stored.
    key_file: Path | None = None


@dataclass(frozen=True)
class MediaConfig:
    public_url: str = ""  # empty: [appservice] url
    link_ttl_days: int = 30
    max_bytes: int = 50 * 1024 * 1024
    # Seconds a download may wait for its reader to take the next chunk before the bridge
    # gives up on it and frees its slot (slow readers cannot hold every slot).
    read_timeout: float = 30.0


@dataclass(frozen=True)
class Config:
    path: Path
    homeserver: HomeserverConfig
    appservice: AppserviceConfig
    database: DatabaseConfig
    networks: tuple[NetworkConfig, ...]
    permissions: tuple[tuple[str, str], ...]
    logging: LoggingConfig
    warnings: tuple[str, ...] = field(default=())
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    provisioning: ProvisioningConfig = field(default_factory=ProvisioningConfig)
    media: MediaConfig = field(default_factory=MediaConfig)
    status: StatusConfig = field(default_factory=StatusConfig)

    def network(self, name: str) -> NetworkConfig | None:
        for net in self.networks:
            if net.name == name:
                return net
        return None

    @property
    def bot_user_id(self) -> UserId:
        return UserId(f"@{self.appservice.sender_localpart}:{self.homeserver.domain}")

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


# key -> (default or REQUIRED, kind); kinds are checked by _Reader methods
REQUIRED = object()

SECTION_KEYS: dict[str, dict[str, object]] = {
    "homeserver": {"url": REQUIRED, "domain": REQUIRED},
    "appservice": {
        "id": "ircbridge",
        "url": REQUIRED,
        "bind": "127.0.0.1:9999",
        "threads": "8",
        "as_token": "",
        "hs_token": "",
        "sender_localpart": "ircbot",
        "registration": "registration.yaml",
        "max_body_bytes": "10485760",
        "senders": "4",
        "exclude_users": "",
    },
    "database": {"url": "sqlite:///ircbridge.db", "keep_days": "7", "sqlite_synchronous": "full"},
    "logging": {"level": "INFO", "format": "text", "file": "", "levels": ""},
    "metrics": {"bind": ""},
    "status": {"secret": ""},
    "provisioning": {"secret": "", "key_file": ""},
    "media": {"public_url": "", "link_ttl_days": "30", "max_bytes": str(50 * 1024 * 1024),
              "read_timeout": "30"},
}
NETWORK_KEYS: dict[str, object] = {
    "host": REQUIRED,
    "port": "6697",
    "tls": "true",
    "tls_verify": "true",
    "display_name": "",
    "user_template": None,  # default depends on the network name
    "alias_template": None,
    "puppet_nick_template": "{localpart}[m]",
    "bot_nick": "",
    "channels": "",
    "scrollback_lines": "50",
    "flood_rate": "2.0",
    "flood_burst": "5",
    "max_lines": "3",
    "connect_timeout": "10",
    "max_concurrent_connects": "5",
    "connects_per_second": "5.0",
    "connect_burst": "5",
    "give_up_after": "600",
    "kick_rejoin_after": "30",
    "netsplit_leave_after": "1800",
    "away_from_presence": "false",
    "relay_mode": "off",
    "send_buffer_limit": "262144",
    "banned_retry_after": "3600",
    "sasl_username": "",
    "sasl_password": "",
    "client_cert": "",
    "client_key": "",
    "autocmds": "",
    "portals_per_hour": "30",
    "portals_per_user_per_hour": "10",
    "password": "",
    "rooms": "",
}
ROLES = ("user", "admin")
RELAY_MODES = ("off", "optional", "always")
LOCALPART_RE = re.compile(r"^[a-z0-9._=\-/+]+$")
CHANNEL_RE = re.compile(r"^[#&+!][^\s,:\x07\x00]{1,199}$")
NETWORK_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


class _KeysAsWritten(configparser.ConfigParser):
    """A ConfigParser that keeps keys as written (the default lower-cases them)."""

    def optionxform(self, optionstr: str) -> str:
        return optionstr


def new_parser() -> configparser.ConfigParser:
    """The parser config.ini is read with: `;` inline comments, `=` only, keys kept as written."""
    parser = _KeysAsWritten(
        delimiters=("=",),
        comment_prefixes=(";", "#"),
        inline_comment_prefixes=(";",),
        interpolation=None,
        strict=True,
        empty_lines_in_values=False,
    )
    return parser


class _Reader:
    """Reads one section, recording problems instead of raising."""

    def __init__(self, parser: configparser.ConfigParser, section: str, problems: list[str]):
        self.section = section
        self.values = dict(parser[section]) if parser.has_section(section) else {}
        self.problems = problems

    def problem(self, key: str, value: str, expected: str) -> None:
        self.problems.append(f"[{self.section}] {key} = {value!r}: expected {expected}")

    def raw(self, key: str, default: object) -> str:
        value = self.values.get(key)
        if value is None or value.strip() == "" and default is REQUIRED:
            if default is REQUIRED:
                self.problems.append(f"[{self.section}] {key}: missing; this key is required")
                return ""
            return "" if default is None else str(default)
        return value.strip()

    def string(
        self, key: str, default: object, check: Callable[[str], str | None] | None = None
    ) -> str:
        value = self.raw(key, default)
        if value and check is not None:
            expected = check(value)
            if expected:
                self.problem(key, value, expected)
        return value

    def integer(self, key: str, default: object, minimum: int, maximum: int) -> int:
        value = self.raw(key, default)
        try:
            number = int(value)
        except ValueError:
            self.problem(key, value, f"a whole number from {minimum} to {maximum}")
            return minimum
        if not minimum <= number <= maximum:
            self.problem(key, value, f"a whole number from {minimum} to {maximum}")
        return number

    def number(self, key: str, default: object, minimum: float, maximum: float) -> float:
        value = self.raw(key, default)
        try:
            number = float(value)
        except ValueError:
            self.problem(key, value, f"a number from {minimum} to {maximum}")
            return minimum
        if not minimum <= number <= maximum:
            self.problem(key, value, f"a number from {minimum} to {maximum}")
        return number

    def boolean(self, key: str, default: object) -> bool:
        value = self.raw(key, default).lower()
        if value in ("1", "yes", "true", "on"):
            return True
        if value in ("0", "no", "false", "off"):
            return False
        self.problem(key, value, "true or false")
        return False


def _regex_list(reader: _Reader, key: str) -> tuple[str, ...]:
    """Regexes separated by white space or new lines (write a space inside one as \\s)."""
    value = reader.string(key, "")
    out = []
    for item in value.split():
        try:
            re.compile(item)
        except re.error as e:
            reader.problem(key, item, f"a regular expression ({e})")
            continue
        out.append(item)
    return tuple(out)


def _http_url(value: str) -> str | None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "an http:// or https:// URL with a host, e.g. http://127.0.0.1:8008"
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return "an http:// or https:// URL with a valid port"
    return None


def _bind(value: str) -> str | None:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return "HOST:PORT, e.g. 127.0.0.1:9999"
    return None


def _database_url(value: str) -> str | None:
    scheme = value.split(":", 1)[0]
    if scheme == "sqlite" and value.startswith("sqlite:///") and len(value) > len("sqlite:///"):
        return None
    if scheme in ("postgresql", "postgres") and urlsplit(value).hostname is not None:
        return None
    if scheme in ("postgresql", "postgres") and "host=" in value:
        return None
    return "sqlite:///path/to/file.db or postgresql://user:password@host:5432/dbname"


def _localpart(value: str) -> str | None:
    if not LOCALPART_RE.match(value):
        return "a Matrix localpart: lower-case letters, digits and . _ = - / +"
    return None


def _template(placeholder: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        if value.count("{" + placeholder + "}") != 1:
            return f"a template containing {{{placeholder}}} exactly once"
        rest = value.replace("{" + placeholder + "}", "")
        if ":" in rest or any(c.isspace() for c in rest) or "{" in rest or "}" in rest:
            return f"a template with {{{placeholder}}} and no ':', spaces or other {{}} fields"
        if placeholder == "nick" and rest != rest.lower():
            return "a lower-case template (Matrix localparts are lower case)"
        return None

    return check


ROOM_ID_RE = re.compile(r"^![^\s,=]{1,254}$")


def _room_pairs(value: str) -> list[tuple[str, str]]:
    """`#chan = !room, #other = !room2` (commas or new lines between pairs)."""
    pairs = []
    for item in re.split(r"[,\n]", value):
        if item.strip():
            channel, _, room_id = item.partition("=")
            pairs.append((channel.strip(), room_id.strip()))
    return pairs


def _rooms(value: str) -> str | None:
    channels: set[str] = set()
    rooms: set[str] = set()
    for channel, room_id in _room_pairs(value):
        if not CHANNEL_RE.match(channel) or not ROOM_ID_RE.match(room_id):
            return ("a comma-separated list of #channel = !roomid pairs "
                    f"(bad: {channel!r} = {room_id!r})")
        if channel.lower() in channels or room_id in rooms:
            return f"each channel and each room at most once (repeated: {channel} = {room_id})"
        channels.add(channel.lower())
        rooms.add(room_id)
    return None


def _channels(value: str) -> str | None:
    for channel in _split_list(value):
        if not CHANNEL_RE.match(channel):
            return f"a comma-separated list of IRC channels like #matrix (bad: {channel!r})"
    return None


LEVEL_NAMES = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOGGER_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


def _levels(value: str) -> str | None:
    for item in _split_list(value):
        name, sep, level = item.partition("=")
        if not sep or not LOGGER_NAME_RE.match(name.strip()) \
                or level.strip().upper() not in LEVEL_NAMES:
            return ("a comma-separated list of logger=LEVEL, e.g. bridge.irc=DEBUG, "
                    f"peewee=WARNING (bad: {item!r})")
    return None


def _logger_levels(value: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in _split_list(value):
        name, _, level = item.partition("=")
        if LOGGER_NAME_RE.match(name.strip()) and level.strip().upper() in LEVEL_NAMES:
            pairs.append((name.strip(), level.strip().upper()))
    return tuple(pairs)


def _split_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def resolve_path(base: Path, value: str) -> Path:
    """Paths in config.ini are relative to the folder of config.ini."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path)


def resolve_database_url(base: Path, url: str) -> str:
    """Make a relative sqlite:/// path absolute against the config folder."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        return "sqlite:///" + str(resolve_path(base, path))
    return url


def load(path: str | os.PathLike[str], *, environ: dict[str, str] | None = None) -> Config:
    """Read config.ini, validate everything, and raise ConfigError listing every problem."""
    environ = dict(os.environ) if environ is None else environ
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            [f"{path}: no such file; copy config.ini from the project and edit it"]
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError([f"{path}: cannot be read ({e})"]) from e
    return parse(text, path=path.resolve(), environ=environ)


def parse(text: str, *, path: Path, environ: dict[str, str] | None = None) -> Config:
    environ = {} if environ is None else environ
    parser = new_parser()
    problems: list[str] = []
    warnings: list[str] = []
    try:
        parser.read_string(text, source=str(path))
    except configparser.Error as e:
        raise ConfigError([f"{path}: {e.message.strip()}"]) from e

    _check_sections(parser, problems, warnings)

    base = path.parent
    hs = _Reader(parser, "homeserver", problems)
    homeserver = HomeserverConfig(
        url=hs.string("url", REQUIRED, _http_url).rstrip("/"),
        domain=hs.string(
            "domain",
            REQUIRED,
            lambda v: None if re.match(r"^[A-Za-z0-9.\-\[\]:]+$", v) else "a server name",
        ),
    )
    appservice = _appservice(parser, base, problems)

    d = _Reader(parser, "database", problems)
    db_url = environ.get(ENV_DATABASE_URL) or d.string("url", "sqlite:///ircbridge.db")
    if (expected := _database_url(db_url)) is not None:
        problems.append(f"[database] url = {db_url!r}: expected {expected}")
    database = DatabaseConfig(
        url=resolve_database_url(base, db_url),
        keep_days=d.integer("keep_days", SECTION_KEYS["database"]["keep_days"], 1, 36500),
        sqlite_synchronous=d.string(
            "sqlite_synchronous", SECTION_KEYS["database"]["sqlite_synchronous"],
            lambda v: None if v in ("full", "normal") else "full or normal"),
    )

    lg = _Reader(parser, "logging", problems)
    logging_config = LoggingConfig(
        level=lg.string(
            "level",
            "INFO",
            lambda v: None
            if v.upper() in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
            else "DEBUG, INFO, WARNING, ERROR or CRITICAL",
        ).upper(),
        format=lg.string(
            "format", "text", lambda v: None if v in ("text", "json") else "text or json"
        ),
        file=lg.string("file", ""),
        levels=_logger_levels(lg.string("levels", "", _levels)),
    )
    metrics = MetricsConfig(bind=_Reader(parser, "metrics", problems).string("bind", "", _bind))
    pr = _Reader(parser, "provisioning", problems)
    key_file = pr.string("key_file", "")
    provisioning = ProvisioningConfig(
        secret=pr.string("secret", ""),
        key_file=resolve_path(base, key_file) if key_file else None,
    )
    status = _status(parser, provisioning, problems, warnings)

    md = _Reader(parser, "media", problems)
    media_defaults = SECTION_KEYS["media"]
    media = MediaConfig(
        public_url=md.string("public_url", "", _http_url).rstrip("/") or appservice.url,
        link_ttl_days=md.integer("link_ttl_days", media_defaults["link_ttl_days"], 1, 3650),
        max_bytes=md.integer("max_bytes", media_defaults["max_bytes"], 1024, 1 << 40),
        read_timeout=md.number("read_timeout", media_defaults["read_timeout"], 0.5, 3600.0),
    )

    networks = tuple(
        _network(parser, section, problems, warnings, base)
        for section in parser.sections()
        if section.startswith("network:")
    )
    if not networks:
        problems.append("[network:NAME]: no network configured; add at least one section")

    permissions = _permissions(parser, problems)
    if problems:
        raise ConfigError(problems)
    return Config(
        path=path,
        homeserver=homeserver,
        appservice=appservice,
        database=database,
        networks=networks,
        permissions=permissions,
        logging=logging_config,
        warnings=tuple(warnings),
        metrics=metrics,
        provisioning=provisioning,
        media=media,
        status=status,
    )


def _check_sections(
    parser: configparser.ConfigParser, problems: list[str], warnings: list[str]
) -> None:
    """Unknown sections and keys are warnings; a missing required section is a problem."""
    known = set(SECTION_KEYS) | {"permissions"}
    for section in parser.sections():
        if section not in known and not section.startswith("network:"):
            warnings.append(f"[{section}]: unknown section, ignored")
    for section, keys in SECTION_KEYS.items():
        if parser.has_section(section):
            for key in parser[section]:
                if key not in keys:
                    warnings.append(f"[{section}] {key}: unknown key, ignored")
        elif any(v is REQUIRED for v in keys.values()):
            problems.append(f"[{section}]: missing section")


def _appservice(
    parser: configparser.ConfigParser, base: Path, problems: list[str]
) -> AppserviceConfig:
    a = _Reader(parser, "appservice", problems)
    defaults = SECTION_KEYS["appservice"]
    appservice = AppserviceConfig(
        id=a.string("id", defaults["id"], lambda v: "an id without '|'" if "|" in v else None),
        url=a.string("url", REQUIRED, _http_url).rstrip("/"),
        bind=a.string("bind", defaults["bind"], _bind),
        threads=a.integer("threads", defaults["threads"], 2, 256),
        as_token=a.string("as_token", ""),
        hs_token=a.string("hs_token", ""),
        sender_localpart=a.string("sender_localpart", defaults["sender_localpart"], _localpart),
        registration=resolve_path(base, a.string("registration", defaults["registration"])),
        max_body_bytes=a.integer("max_body_bytes", defaults["max_body_bytes"], 1024, 1 << 30),
        senders=a.integer("senders", defaults["senders"], 1, 64),
        exclude_users=_regex_list(a, "exclude_users"),
    )
    if appservice.as_token and appservice.as_token == appservice.hs_token:
        problems.append("[appservice] hs_token: must differ from as_token")
    return appservice


def _status(parser: configparser.ConfigParser, provisioning: ProvisioningConfig,
            problems: list[str], warnings: list[str]) -> StatusConfig:
    """[status]: its secret is the status page's alone (it once shared [provisioning]'s)."""
    status = StatusConfig(secret=_Reader(parser, "status", problems).string("secret", ""))
    if status.secret and status.secret == provisioning.secret:
        problems.append("[status] secret: must differ from [provisioning] secret (the status "
                        "page's secret must not open the provisioning API)")
    elif provisioning.secret and not status.secret:
        warnings.append("[provisioning] secret no longer opens the status page: set a "
                        "different [status] secret for it (the page answers 403 until then)")
    return status


def _network(
    parser: configparser.ConfigParser, section: str, problems: list[str], warnings: list[str],
    base: Path | None = None,
) -> NetworkConfig:
    name = section.split(":", 1)[1].strip()
    if not NETWORK_NAME_RE.match(name):
        problems.append(f"[{section}]: network name {name!r}: expected letters, digits, . _ -")
    r = _Reader(parser, section, problems)
    for key in r.values:
        if key not in NETWORK_KEYS:
            warnings.append(f"[{section}] {key}: unknown key, ignored")
    lower = name.lower()
    user_template = r.string("user_template", f"irc_{lower}_{{nick}}", _template("nick"))
    alias_template = r.string("alias_template", f"irc_{lower}_{{channel}}", _template("channel"))
    puppet = r.string(
        "puppet_nick_template",
        NETWORK_KEYS["puppet_nick_template"],
        lambda v: None
        if "{localpart}" in v or "{displayname}" in v
        else "a template containing {localpart} or {displayname}",
    )
    tls = r.boolean("tls", NETWORK_KEYS["tls"])
    port = r.integer("port", "6697" if tls else "6667", 1, 65535)
    servers = _servers(r, port)
    return NetworkConfig(
        name=name,
        host=servers[0][0] if servers else "",
        port=servers[0][1] if servers else port,
        servers=servers,
        banned_retry_after=r.number("banned_retry_after", NETWORK_KEYS["banned_retry_after"],
                                    60.0, 30 * 86400.0),
        tls=tls,
        tls_verify=r.boolean("tls_verify", NETWORK_KEYS["tls_verify"]),
        display_name=r.string("display_name", name) or name,
        user_template=user_template,
        alias_template=alias_template,
        puppet_nick_template=puppet,
        bot_nick=r.string(
            "bot_nick",
            "",
            lambda v: None if re.match(r"^[A-Za-z\[\]\\`_^{|}][A-Za-z0-9\[\]\\`_^{|}-]*$", v)
            else "a valid IRC nick",
        ),
        channels=tuple(_split_list(r.string("channels", "", _channels))),
        scrollback_lines=r.integer("scrollback_lines", NETWORK_KEYS["scrollback_lines"], 0, 100000),
        flood_rate=r.number("flood_rate", NETWORK_KEYS["flood_rate"], 0.0, 10000.0),
        flood_burst=r.integer("flood_burst", NETWORK_KEYS["flood_burst"], 1, 10000),
        max_lines=r.integer("max_lines", NETWORK_KEYS["max_lines"], 1, 1000),
        connect_timeout=r.number("connect_timeout", NETWORK_KEYS["connect_timeout"], 0.5, 300.0),
        max_concurrent_connects=r.integer(
            "max_concurrent_connects", NETWORK_KEYS["max_concurrent_connects"], 1, 10000
        ),
        connects_per_second=r.number("connects_per_second", NETWORK_KEYS["connects_per_second"],
                                     0.0, 10000.0),
        connect_burst=r.integer("connect_burst", NETWORK_KEYS["connect_burst"], 1, 10000),
        give_up_after=r.number("give_up_after", NETWORK_KEYS["give_up_after"], 1.0, 7 * 86400.0),
        kick_rejoin_after=r.number("kick_rejoin_after", NETWORK_KEYS["kick_rejoin_after"],
                                   0.1, 86400.0),
        netsplit_leave_after=r.number("netsplit_leave_after",
                                      NETWORK_KEYS["netsplit_leave_after"], 0.1, 7 * 86400.0),
        away_from_presence=r.boolean("away_from_presence", NETWORK_KEYS["away_from_presence"]),
        relay_mode=r.string("relay_mode", NETWORK_KEYS["relay_mode"],
                            lambda v: None if v in RELAY_MODES else "off, optional or always"),
        send_buffer_limit=r.integer("send_buffer_limit", NETWORK_KEYS["send_buffer_limit"],
                                    4096, 1 << 30),
        portals_per_hour=r.integer("portals_per_hour", NETWORK_KEYS["portals_per_hour"],
                                   0, 100000),
        portals_per_user_per_hour=r.integer(
            "portals_per_user_per_hour", NETWORK_KEYS["portals_per_user_per_hour"], 0, 100000),
        password=r.string("password", ""),
        rooms=tuple(_room_pairs(r.string("rooms", "", _rooms))),
        **_bot_login(r, tls, base or Path(".")),
    )


def _servers(r: _Reader, port: int) -> tuple[tuple[str, int], ...]:
    """`host = a.example, b.example:7000, [::1]:6697`: (host, port) pairs, `port` by default."""
    value = r.string("host", REQUIRED)
    found: list[tuple[str, int]] = []
    for entry in _split_list(value):
        host, this_port = entry, port
        if entry.startswith("["):  # [IPv6]:port
            inside, _, rest = entry[1:].partition("]")
            host = inside
            if rest.startswith(":") and rest[1:].isdigit():
                this_port = int(rest[1:])
            elif rest:
                host = ""
        elif entry.count(":") == 1:
            name, _, digits = entry.partition(":")
            host = name
            this_port = int(digits) if digits.isdigit() else 0
        if not host or not 0 < this_port < 65536 or " " in host:
            r.problem("host", value, "host names or addresses, each with an optional :port, "
                                     "separated by commas")
            return ()
        found.append((host, this_port))
    return tuple(found)


class _BotLogin(TypedDict):
    """NetworkConfig's bot login fields, as _bot_login reads them."""

    sasl_username: str
    sasl_password: str
    client_cert: Path | None
    client_key: Path | None
    autocmds: tuple[str, ...]


def _bot_login(r: _Reader, tls: bool, base: Path) -> _BotLogin:
    """The bot's SASL and autocmd keys of a [network] section."""
    cert = r.string("client_cert", "")
    key = r.string("client_key", "")
    if cert and not tls:
        r.problem("client_cert", cert, "tls = true (a client certificate needs TLS)")
    if key and not cert:
        r.problem("client_key", key, "client_cert as well")
    autocmds = tuple(line.strip() for line in r.raw("autocmds", "").splitlines()
                     if line.strip())
    return _BotLogin(
        sasl_username=r.string("sasl_username", ""),
        sasl_password=r.string("sasl_password", ""),
        client_cert=resolve_path(base, cert) if cert else None,
        client_key=resolve_path(base, key) if key else None,
        autocmds=autocmds,
    )


def _permissions(
    parser: configparser.ConfigParser, problems: list[str]
) -> tuple[tuple[str, str], ...]:
    if not parser.has_section("permissions"):
        return (("*", "user"),)
    entries = []
    for who, role in parser["permissions"].items():
        role = role.strip().lower()
        if role not in ROLES:
            problems.append(f"[permissions] {who} = {role!r}: expected user or admin")
            continue
        if not (who == "*" or who.startswith("@") and ":" in who or re.match(r"^[\w.\-:]+$", who)):
            problems.append(
                f"[permissions] {who} = {role!r}: expected a Matrix id (@user:server), "
                "a server name or *"
            )
            continue
        entries.append((who, role))
    return tuple(entries)


def fill_tokens(path: Path, as_token: str, hs_token: str) -> bool:
    """Write tokens into empty `as_token =` / `hs_token =` lines of [appservice], in place.

    The file is edited as text so that comments and order survive; returns True if it
    changed. Lines that already hold a token are never touched.
    """
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    changed, seen = _fill_empty_token_lines(lines, as_token, hs_token)
    missing = [k for k in ("as_token", "hs_token") if k not in seen]
    if missing:
        lines = _append_token_lines(lines, missing, as_token, hs_token)
        changed = True
    if changed:  # it now holds both tokens: 0600, whatever its mode was
        write_private(path, "".join(lines).encode("utf-8"))
    return changed


_SECTION_HEADER = re.compile(r"^\s*\[([^\]]+)\]")


def _fill_empty_token_lines(
    lines: list[str], as_token: str, hs_token: str
) -> tuple[bool, set[str]]:
    """Fill the first empty line of each token key in [appservice], editing `lines` in place.

    Returns whether a line changed and which keys have a line at all (empty or not).
    """
    section = None
    seen: set[str] = set()
    changed = False
    for i, line in enumerate(lines):
        m = _SECTION_HEADER.match(line)
        if m:
            section = m.group(1).strip()
            continue
        if section != "appservice":
            continue
        for key, token in (("as_token", as_token), ("hs_token", hs_token)):
            km = re.match(rf"^([ \t]*{key}[ \t]*=)([ \t]*)(;[^\r\n]*)?(\r?\n)?$", line)
            if km and key not in seen:
                comment = km.group(3)
                newline = km.group(4) or ""
                rest = f"  {comment}" if comment else ""
                lines[i] = f"{km.group(1)} {token}{rest}{newline}"
                changed = True
            if re.match(rf"^\s*{key}\s*=", line):
                seen.add(key)
    return changed, seen


def _append_token_lines(
    lines: list[str], missing: list[str], as_token: str, hs_token: str
) -> list[str]:
    """No line at all for `missing`: append them at the end of [appservice] (made if absent)."""
    out: list[str] = []
    section = None
    inserted = False
    for line in lines:
        m = _SECTION_HEADER.match(line)
        if m and section == "appservice" and not inserted:
            out.extend(_token_lines(missing, as_token, hs_token))
            inserted = True
        if m:
            section = m.group(1).strip()
        out.append(line)
    if not inserted:
        if out and not out[-1].endswith("\n"):
            out[-1] += "\n"
        if section != "appservice":
            out.append("[appservice]\n")
        out.extend(_token_lines(missing, as_token, hs_token))
    return out


def _token_lines(keys: list[str], as_token: str, hs_token: str) -> list[str]:
    return [f"{k} = {as_token if k == 'as_token' else hs_token}\n" for k in keys]


def require_tokens(config: Config) -> list[str]:
    """Problems that block serving (but not generate-registration): empty tokens."""
    missing = [k for k in ("as_token", "hs_token") if not getattr(config.appservice, k)]
    return [
        f"[appservice] {k}: empty; run `ircbridge -c {config.path.name} generate-registration`"
        for k in missing
    ]
