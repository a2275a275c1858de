"""What each admin-room command does, once `commands.parse` has understood it.

Runs on an admin lane thread (never the IRC or inbox thread): it may wait on IRC replies
(through `IrcQueries.ask`) and call the homeserver. Every failure becomes the text of the
notice the user gets; nothing raises out of `CommandRunner.run`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from ..config.ini import Config
from ..core.access import PortalLimited
from ..irc.queries import (
    JOIN_TIMEOUT,
    NICK_TIMEOUT,
    WHOIS_TIMEOUT,
    ConnectionSnapshot,
    IrcQueries,
    IrcUnavailable,
)
from ..matrix import MatrixError
from ..rules.ids import RoomId, UserId
from ..rules.permissions import role_of
from ..store.admin_tables import AdminStore
from ..store.models import Link
from ..version import __version__
from .grammar import (
    MAX_AUTOCMDS,
    SPECS,
    Command,
    CommandError,
    NotAllowed,
    check_autocmd,
    command_word,
    help_text,
    holds_secret,
    parse,
)
from .seams import BridgeForAdmin, PuppetSettings, SecretValue
from .vault import VaultError, fingerprints, make_client_certificate

log = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")

NOT_ALLOWED = ("Sorry, {user} is not allowed to use this bridge (see [permissions] in the "
               "bridge's config.ini); ask the bridge's admin.")


def secret_message(body: str) -> bool:
    """Whether a command message may hold a secret (its stored copy is scrubbed, and it is
    redacted in the room); see `commands.holds_secret`."""
    return holds_secret(body)


def mask_line(line: str) -> str:
    """An autocmd line without its text (it may hold a password)."""
    parts = line.split(" ", 2)
    if len(parts) < 3:
        return line
    return f"{parts[0]} {parts[1]} … ({len(parts[2])} characters hidden)"


@dataclass(frozen=True)
class Ctx:
    user_id: UserId
    role: str
    room_id: str


class RoomsForCommands(Protocol):
    """What the commands need of the admin rooms (`rooms.AdminRooms` is one): the bridge and
    its config, the IRC queries, the secret store and each user's puppet settings. A Protocol,
    so the runner does not import the rooms that make it (no cycle)."""

    @property
    def bridge(self) -> BridgeForAdmin: ...
    @property
    def config(self) -> Config: ...
    @property
    def irc(self) -> IrcQueries: ...
    @property
    def store(self) -> AdminStore: ...

    def puppet_settings(self, network: str, user_id: str) -> PuppetSettings: ...
    def autocmds_for(self, network: str, user_id: str) -> list[str]: ...
    def set_identity(self, network: str, user_id: str, **values: str) -> None: ...
    def set_secret(self, network: str, user_id: str, kind: str, value: SecretValue) -> None: ...
    def expect_connection(self, network: str, user_id: str) -> None: ...


class CommandRunner:
    """Runs parsed commands for the admin rooms (lane threads), given them as a Protocol."""

    def __init__(self, admin: RoomsForCommands):
        self.admin = admin
        self.bridge = admin.bridge
        self.config = admin.config

    @property
    def networks(self) -> list[str]:
        return [n.name for n in self.config.networks]

    def run(self, body: str, user_id: str, room_id: str) -> str:
        """The reply to one message of the room's owner (never raises)."""
        word = command_word(body) or ""
        try:
            role = role_of(self.config, user_id)
            if role is None:
                raise NotAllowed(NOT_ALLOWED.format(user=user_id))
            spec = SPECS.get(word)
            if spec is not None and spec.admin and role != "admin":
                raise NotAllowed(f"!{word} is for bridge admins only (an `= admin` line in "
                                 "[permissions] of the bridge's config.ini).")
            command = parse(body, self.networks)
            if command is None:
                return ""
            log.info("%s in %s: %r", user_id, room_id, command)
            handler = getattr(self, "do_" + command.name)
            return str(handler(Ctx(UserId(user_id), role, room_id), command))
        except CommandError as e:
            return str(e)
        except IrcUnavailable as e:
            return f"Cannot do that now: {e}."
        except VaultError as e:
            return f"Cannot keep secrets: {e}."
        except MatrixError as e:
            log.warning("!%s of %s: homeserver error %s", word, user_id, e)
            return f"The homeserver refused: {e.error or e.errcode}."
        except Exception:  # noqa: BLE001 - the user gets a notice, the log the traceback
            log.exception("!%s of %s failed", word, user_id)
            return f"Something went wrong running !{word}; the bridge's log has the details."

    # ------------------------------------------------------------------ helpers
    def _ask(self, timeout: float, fn: Callable[Concatenate[Future[T], P], None],
             *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(future, *args)` run on the IRC thread; what it puts in the future."""
        def call(future: Future[T]) -> None:
            fn(future, *args, **kwargs)

        result: T = self.admin.irc.ask(call, timeout=timeout)
        return result

    def _snapshot(self, user_id: str) -> dict[str, ConnectionSnapshot] | None:
        try:
            return self._ask(5.0, self.admin.irc.snapshot, user_id)
        except IrcUnavailable:
            return None

    def _link(self, network: str, channel: str) -> Link | None:
        folded = self.bridge.fold_channel(network, channel)
        for link in self.bridge.links():
            if link.network == network and link.channel == folded:
                return link
        return None

    def _membership(self, room_id: str, user_id: str) -> str | None:
        try:
            state = self.bridge.client.get_state(RoomId(room_id), "m.room.member", user_id)
        except MatrixError:
            return None
        membership = state.get("membership") if state else None
        return membership if isinstance(membership, str) else None

    # ------------------------------------------------------------------ general
    def do_help(self, ctx: Ctx, c: Command) -> str:
        return help_text(c.args[0] if c.args else None, is_admin=ctx.role == "admin")

    def do_bridgeversion(self, ctx: Ctx, c: Command) -> str:
        return f"ircbridge {__version__}"

    def do_status(self, ctx: Ctx, c: Command) -> str:
        snap = self._snapshot(ctx.user_id)
        lines = [f"You are {ctx.user_id} (role: {ctx.role})."]
        for network in [c.network] if c.network else self.networks:
            info = snap.get(network) if snap is not None else None
            if info is None:
                state = "unknown (the IRC side is not answering)"
            elif info["state"] == "none":
                state = "no connection (a message in a bridged room, !join or !reconnect " \
                        "makes one)"
            else:
                state = f"{info['state']} as {info['nick']}"
                if info["channels"]:
                    state += " in " + ", ".join(info["channels"])
            settings = self.admin.puppet_settings(network, ctx.user_id)
            stored = [
                f"nick {settings.get('nick') or '(default)'}",
                f"username {settings.get('username') or '(default)'}",
                "password: " + (f"stored ({settings.get('password_kind', 'server')})"
                                if settings.get("password") else "none"),
                "certificate: " + ("yes" if settings.get("certificate") else "no"),
                f"autocmds: {len(settings.get('autocmds', []))}",
            ]
            lines.append(f"{network}: {state}")
            lines.append("  stored: " + ", ".join(stored))
        return "\n".join(lines)

    def do_listrooms(self, ctx: Ctx, c: Command) -> str:
        snap = self._snapshot(ctx.user_id)
        if snap is None:
            raise IrcUnavailable("the IRC side is not answering")
        links = {(lk.network, lk.channel): lk for lk in self.bridge.links()}
        lines = []
        for network in [c.network] if c.network else self.networks:
            info = snap.get(network)
            if info is None:
                continue
            for name in info["channels"]:
                channel = name.split(" ", 1)[0]
                folded = self.bridge.fold_channel(network, channel)
                link = links.get((network, folded))
                where = f" → {link.alias or link.room_id}" if link else " (no room yet)"
                joined = "" if folded in info["in"] else " (joining)"
                lines.append(f"{network} {channel}{joined}{where}")
        return "\n".join(lines) if lines else "You are in no IRC channels."

    # ------------------------------------------------------------------ channels
    def do_join(self, ctx: Ctx, c: Command) -> str:
        assert c.network is not None
        channel = c.args[0]
        key = c.args[1] if len(c.args) > 1 else None
        refused = self._ask(JOIN_TIMEOUT, self.admin.irc.join, c.network, ctx.user_id, channel, key)
        if refused:
            return f"Could not join {channel} on {c.network}: {refused}"
        link = self._link(c.network, channel)
        if link is None:
            alias = self.bridge.names[c.network].alias_for_channel(
                channel, self.bridge.casemapping(c.network))
            try:
                self.bridge.query_room(alias, for_user=ctx.user_id)
            except PortalLimited as e:
                return f"Joined {channel} on {c.network}; no room for it now: {e}."
            link = self._link(c.network, channel)
        if link is None:
            return f"Joined {channel} on {c.network}; its room could not be made."
        where = link.alias or link.room_id
        membership = self._membership(link.room_id, ctx.user_id)
        if membership == "join":
            return f"Joined {channel} on {c.network}; you are already in its room {where}."
        if membership == "invite":
            return f"Joined {channel} on {c.network}; I invited you to its room {where}."
        try:
            self.bridge.bot.invite(link.room_id, ctx.user_id)
        except MatrixError as e:
            return (f"Joined {channel} on {c.network}, but I could not invite you to its room "
                    f"({e.error or e.errcode}): join {where} yourself.")
        return f"Joined {channel} on {c.network}; I invited you to its room {where}."

    def do_part(self, ctx: Ctx, c: Command) -> str:
        assert c.network is not None
        channel = c.args[0]
        was_in = self._ask(5.0, self.admin.irc.part, c.network, ctx.user_id, channel)
        text = f"Left {channel} on {c.network}." if was_in else \
            f"You were not in {channel} on {c.network}."
        link = self._link(c.network, channel)
        if link is not None and self._membership(link.room_id, ctx.user_id) == "join":
            try:
                self.bridge.bot.kick(link.room_id, ctx.user_id, f"Left {channel} with !part")
                text += f" You left its room {link.alias or link.room_id}."
            except MatrixError:
                text += f" Leave its room {link.alias or link.room_id} yourself, or your next " \
                        "message there joins the channel again."
        return text

    # ------------------------------------------------------------------ identity
    def do_whois(self, ctx: Ctx, c: Command) -> str:
        assert c.network is not None
        result = self._ask(WHOIS_TIMEOUT, self.admin.irc.whois, c.network, c.args[0], ctx.user_id)
        return str(result.text())

    def do_nick(self, ctx: Ctx, c: Command) -> str:
        assert c.network is not None
        new = c.args[0]
        info = (self._snapshot(ctx.user_id) or {}).get(c.network)
        current = info["nick"] if info is not None else None
        fold = self.bridge.fold_nick
        if current is None or fold(c.network, current) != fold(c.network, new):
            try:
                who = self._ask(WHOIS_TIMEOUT, self.admin.irc.whois, c.network, new, ctx.user_id)
            except IrcUnavailable as e:
                return f"Cannot check {new} with WHOIS now ({e}); try again later."
            if who.found:
                return (f"The nick {new} is in use on {c.network} (by {who.user}@{who.host}); "
                        "choose another.")
        refused = self._ask(NICK_TIMEOUT, self.admin.irc.change_nick, c.network, ctx.user_id, new)
        if refused not in (None, "offline"):
            return f"{c.network} refused the nick {new}: {refused}"
        self.admin.set_identity(c.network, ctx.user_id, nick=new)
        if refused == "offline":
            return f"Saved: you will be {new} on {c.network} from your next connection."
        return f"You are now {new} on {c.network}; the bridge keeps this nick for you."

    def do_username(self, ctx: Ctx, c: Command) -> str:
        assert c.network is not None
        if not c.args:
            current = self.admin.puppet_settings(c.network, ctx.user_id).get("username")
            return (f"Your username on {c.network} is {current}." if current else
                    f"You have no username set on {c.network} (the default comes from your "
                    "Matrix id).")
        self.admin.set_identity(c.network, ctx.user_id, username=c.args[0])
        return (f"Your username on {c.network} is now {c.args[0]}; it is used from your next "
                "connection (!reconnect to use it now).")

    def do_longmessages(self, ctx: Ctx, c: Command) -> str:
        assert c.network is not None
        if not c.args:
            current = self.admin.puppet_settings(c.network, ctx.user_id).get("long_messages")
            return (f"Your long messages reach {c.network} as "
                    + ("every line." if current == "lines" else "their first line and a link."))
        self.admin.set_identity(c.network, ctx.user_id, long_messages=c.args[0])
        return (f"From now on your long messages reach {c.network} as "
                + ("every line." if c.args[0] == "lines" else "their first line and a link."))

    def do_reactions(self, ctx: Ctx, c: Command) -> str:
        assert c.network is not None
        if not c.args:
            off = self.admin.puppet_settings(c.network, ctx.user_id).get("reactions") == "off"
        else:
            self.admin.set_identity(c.network, ctx.user_id, reactions=c.args[0])
            off = c.args[0] == "off"
        return (f"Your reactions reach {c.network} as tags only, where the server has them."
                if off else f"Your reactions reach {c.network} as tags, else as a short line.")

    def do_relay(self, ctx: Ctx, c: Command) -> str:
        assert c.network is not None
        network = self.config.network(c.network)
        mode = network.relay_mode if network is not None else "off"
        current = self.admin.puppet_settings(c.network, ctx.user_id).get("relay") == "on"
        if mode != "optional":
            return (f"On {c.network} the bridge's bot relays everyone's messages (relay_mode "
                    "always); there is no choice to make." if mode == "always" else
                    f"On {c.network} everyone has their own IRC connection (relay_mode off).")
        if not c.args:
            return (f"On {c.network} the bridge's bot says your messages for you." if current
                    else f"On {c.network} your own IRC connection says your messages.")
        self.admin.set_identity(c.network, ctx.user_id, relay=c.args[0])
        if c.args[0] == "on":
            self._ask(5.0, self.admin.irc.quit, c.network, ctx.user_id)
            return (f"From now on the bridge's bot says your messages on {c.network}; your "
                    "own connection is closed.")
        return (f"From now on your own IRC connection says your messages on {c.network} "
                "(made with your next message).")

    # ------------------------------------------------------------------ secrets
    def do_storepass(self, ctx: Ctx, c: Command) -> str:
        assert c.network is not None
        kind, password = c.args
        value: dict[str, str] = {"kind": kind, "password": password}
        if kind == "sasl":
            account = self._current_nick(ctx.user_id, c.network)
            if account:
                value["account"] = account
        self.admin.set_secret(c.network, ctx.user_id, "password", value)
        text = (f"Stored your {kind} password for {c.network}, encrypted. It is used from "
                "your next connection (!reconnect to use it now).")
        if kind == "sasl":
            who = value.get("account") or "your username"
            text += (f" SASL PLAIN logs in as account {who}; after a !nick, store it again "
                     "to log in as the new nick.")
        return text

    def _current_nick(self, user_id: str, network: str) -> str | None:
        info = (self._snapshot(user_id) or {}).get(network)
        if info is not None and info["state"] != "none" and info["nick"]:
            return info["nick"]
        nick = self.admin.puppet_settings(network, user_id).get("nick")
        return str(nick) if nick else None

    def do_removepass(self, ctx: Ctx, c: Command) -> str:
        assert c.network is not None
        had = self.admin.store.secret(ctx.user_id, c.network, "password") is not None
        self.admin.set_secret(c.network, ctx.user_id, "password", None)
        return f"Removed your stored password for {c.network}." if had else \
            f"You had no stored password for {c.network}."

    def do_certfp(self, ctx: Ctx, c: Command) -> str:
        assert c.network is not None
        action = c.args[0] if c.args else "show"
        current = self.admin.puppet_settings(c.network, ctx.user_id).get("certificate")
        if action == "remove":
            self.admin.set_secret(c.network, ctx.user_id, "certfp", None)
            return f"Removed your client certificate for {c.network}." if current else \
                f"You had no client certificate for {c.network}."
        made = False
        if current is None or action == "new":
            nick = self.admin.puppet_settings(c.network, ctx.user_id).get("nick") or ctx.user_id
            cert_pem, key_pem = make_client_certificate(nick)
            current = {"certificate": cert_pem, "key": key_pem}
            self.admin.set_secret(c.network, ctx.user_id, "certfp", current)
            made = True
        prints = fingerprints(current["certificate"])
        head = "Made your client certificate" if made else "Your client certificate"
        text = (f"{head} for {c.network}.\nSHA-512: {prints['sha512']}\n"
                f"SHA-256: {prints['sha256']}\nRegister it with your services, e.g. "
                f"/msg NickServ CERT ADD {prints['sha512']}.")
        network = self.config.network(c.network)
        if network is not None and not network.tls:
            text += f" Note: {c.network} is reached without TLS, so it is not presented there."
        else:
            text += (" It is presented from your next connection (with SASL EXTERNAL); "
                     "!reconnect to use it now.")
        return text

    def do_autocmd(self, ctx: Ctx, c: Command) -> str:
        assert c.network is not None
        lines = self.admin.autocmds_for(c.network, ctx.user_id)
        action = c.args[0]
        if action == "list":
            if not lines:
                return f"No commands run when you connect to {c.network}."
            shown = [f"{i}. {mask_line(line)}" for i, line in enumerate(lines, 1)]
            return f"Run when you connect to {c.network}:\n" + "\n".join(shown)
        if action == "clear":
            self.admin.set_secret(c.network, ctx.user_id, "autocmd", None)
            return f"Cleared your commands for {c.network}."
        if action == "remove":
            index = int(c.args[1])
            if not 1 <= index <= len(lines):
                return f"There is no line {index}; !autocmd list shows {len(lines)}."
            del lines[index - 1]
            self.admin.set_secret(c.network, ctx.user_id, "autocmd", lines)
            return f"Removed line {index}."
        line = c.args[1]
        check_autocmd(line, is_admin=ctx.role == "admin")
        if len(lines) >= MAX_AUTOCMDS:
            return f"You have {MAX_AUTOCMDS} lines already; remove one first."
        self.admin.set_secret(c.network, ctx.user_id, "autocmd", [*lines, line])
        return (f"Added line {len(lines) + 1}: {mask_line(line)}. It is sent each time you "
                f"connect to {c.network}.")

    # ------------------------------------------------------------------ connection
    def do_reconnect(self, ctx: Ctx, c: Command) -> str:
        assert c.network is not None
        self.admin.expect_connection(c.network, ctx.user_id)
        existed = self._ask(5.0, self.admin.irc.reconnect, c.network, ctx.user_id)
        return f"Reconnecting to {c.network}…" if existed else f"Connecting to {c.network}…"

    def do_quit(self, ctx: Ctx, c: Command) -> str:
        assert c.network is not None
        existed = self._ask(5.0, self.admin.irc.quit, c.network, ctx.user_id)
        return (f"Disconnected from {c.network}. A message in a bridged room connects you "
                "again.") if existed else f"You had no connection to {c.network}."

    def do_cmd(self, ctx: Ctx, c: Command) -> str:
        assert c.network is not None
        line = c.args[0]
        self._ask(5.0, self.admin.irc.send_raw, c.network, ctx.user_id, line)
        return f"Sent {line.split(' ', 1)[0]} on {c.network}."
