"""Admin rooms: a private room between a Matrix user and the bridge bot, for `!commands`.

Why it looks like this: the core hands every event from a real user to `handle_event` on the
inbox thread before anything else, so that method only looks at in-memory sets and queues
work; it never does I/O and never raises. The work (joining rooms, running commands, posting
notices) runs on a few "lanes": worker threads where everything about one room runs on the
same thread, in order. Connection events come from the IRC thread and are only queued.

This object (`bridge.admin`) also applies the static room mappings of `[network:NAME] rooms`
at start and lists portal rooms in the homeserver's room directory per network.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping

from ..irc.events import IrcConnectionEvent
from ..irc.queries import IrcQueries
from ..matrix import MatrixError
from ..matrix.client import q
from ..matrix.wire import JsonObject
from ..ops import logs
from ..pipeline.lanes import Lanes
from ..rules.ids import RoomId
from ..rules.permissions import role_of
from ..store.admin_tables import AdminStore
from . import grammar as commands
from .runner import CommandRunner, secret_message
from .seams import BridgeForAdmin, ClientCertificate, PuppetSettings, SecretValue
from .vault import Vault, VaultError, load_vault

log = logging.getLogger(__name__)

LANES = 4
REDACTED_BODY = "<redacted by the bridge: it held a secret>"


class AdminRooms:
    """The `bridge.admin` object: admin rooms, their commands, and their notices."""

    def __init__(self, bridge: BridgeForAdmin, *, lanes: int = LANES):
        self.bridge = bridge
        self.config = bridge.config
        self.store = AdminStore(bridge.store.db, bridge.store.bridge_id)
        self.vault: Vault | None = None
        self.vault_problem: str | None = None
        try:
            self.vault = load_vault(self.config.provisioning.key_file)
        except VaultError as e:
            self.vault_problem = str(e)
            log.error("[provisioning] key_file: %s; stored passwords are unavailable", e)
        self.irc = IrcQueries(bridge, self)
        self.runner = CommandRunner(self)
        self.lanes = Lanes(lanes, "admin")
        self._lock = threading.Lock()
        self._owner: dict[str, str] = {}  # admin room -> owner
        self._room_of: dict[str, str] = {}  # owner -> newest admin room
        self._settings: dict[tuple[str, str], PuppetSettings] = {}  # (network, user) -> ...
        self._published: set[str] = set()
        self._publishing: set[str] = set()
        self._down: set[tuple[str, str]] = set()  # (network, user) told "lost"
        self._expect: set[tuple[str, str]] = set()  # (network, user) asked to (re)connect
        self._told: set[tuple[str, str, str]] = set()  # refusals told since last connect
        self._stop = threading.Event()
        self._started = False

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Create the tables, load the rooms and settings, hook into the IRC thread."""
        if self._started:
            return
        self._started = True
        self.store.create_tables([n.name for n in self.bridge.config.networks])
        self._load()
        self.lanes.start()
        self.bridge.irc.call(self.irc.install)
        threading.Thread(target=self._startup, name="admin-startup", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self.lanes.stop()

    def _load(self) -> None:
        rooms = self.store.admin_rooms()
        published = self.store.published()
        with self._lock:
            for room_id, owner in rooms:
                self._owner[room_id] = owner
                self._room_of[owner] = room_id
            self._published = published
        for net in self.config.networks:
            for user_id, identity in self.bridge.store.identities(net.name):
                self._cache_identity(net.name, user_id, identity)
        for user_id, network, kind, sealed in self.store.secrets():
            self._cache_secret(network, user_id, kind, sealed)

    def _startup(self) -> None:
        """Once the homeserver answers: static mappings, then the room directory."""
        while not self.bridge.hs_ready.wait(1.0):
            if self._stop.is_set():
                return
        try:
            self.apply_static_mappings()
        except Exception:  # noqa: BLE001
            log.exception("static room mappings failed")
        try:
            self.publish_portals()
        except Exception:  # noqa: BLE001
            log.exception("publishing portal rooms failed")

    # ------------------------------------------------------------------ settings cache
    def _cache_identity(self, network: str, user_id: str,
                        identity: Mapping[str, object]) -> None:
        nick, username, long_messages, reactions, relay = (
            str(value) if value else None
            for value in (identity.get("nick"), identity.get("username"),
                          identity.get("long_messages"), identity.get("reactions"),
                          identity.get("relay")))
        with self._lock:
            entry = self._settings.setdefault((network, user_id), PuppetSettings())
            entry.pop("nick", None)
            entry.pop("username", None)
            entry.pop("long_messages", None)
            entry.pop("relay", None)
            if nick:
                entry["nick"] = nick
            if username:
                entry["username"] = username
            if long_messages:
                entry["long_messages"] = long_messages
            entry.pop("reactions", None)
            if reactions:
                entry["reactions"] = reactions
            if relay:
                entry["relay"] = relay

    def _cache_secret(self, network: str, user_id: str, kind: str, sealed: str | None) -> None:
        value: object = None
        if sealed is not None:
            if self.vault is None:
                return
            try:
                value = json.loads(self.vault.open(sealed))
            except (VaultError, ValueError) as e:
                log.error("stored %s of %s on %s cannot be read: %s", kind, user_id, network, e)
                return
        with self._lock:
            entry = self._settings.setdefault((network, user_id), PuppetSettings())
            if kind == "password":
                entry.pop("password", None)
                entry.pop("password_kind", None)
                entry.pop("sasl_username", None)
                if isinstance(value, dict) and value:
                    entry["password"] = str(value.get("password", ""))
                    entry["password_kind"] = str(value.get("kind", "server"))
                    if value.get("account"):
                        entry["sasl_username"] = str(value["account"])
                    _protect([entry["password"]])
            elif kind == "autocmd":
                entry["autocmds"] = [str(line) for line in value] \
                    if isinstance(value, list) else []
            elif kind == "certfp":
                entry["certificate"] = _certificate(value)

    def puppet_settings(self, network: str, user_id: str) -> PuppetSettings:
        """What a new connection of the user needs (nick, username, password). Any thread;
        cheap (memory only), so the IRC thread may call it when it makes a connection."""
        with self._lock:
            return self._settings.get((network, user_id), PuppetSettings()).copy()

    def autocmds_for(self, network: str, user_id: str) -> list[str]:
        with self._lock:
            return list(self._settings.get((network, user_id), PuppetSettings())
                        .get("autocmds", []))

    def set_identity(self, network: str, user_id: str, **values: str) -> None:
        self.bridge.store.set_identity(user_id, network, **values)
        self._cache_identity(network, user_id, self.bridge.store.identity(user_id, network))

    def set_secret(self, network: str, user_id: str, kind: str, value: SecretValue) -> None:
        """Seal and store (value None removes); raises VaultError without a key file."""
        if value is None:
            self.store.remove_secret(user_id, network, kind)
            self._cache_secret(network, user_id, kind, None)
            if kind == "autocmd":
                self.bridge.irc.call(self.irc.refresh, network, user_id)
            return
        vault = self.require_vault()
        sealed = vault.seal(json.dumps(value))
        self.store.set_secret(user_id, network, kind, sealed)
        self._cache_secret(network, user_id, kind, sealed)
        if kind == "autocmd":
            self.bridge.irc.call(self.irc.refresh, network, user_id)

    def require_vault(self) -> Vault:
        if self.vault is None:
            raise VaultError(
                self.vault_problem
                or "the bridge has no key file to encrypt secrets with; its admin must run "
                   "`ircbridge generate-key` and set [provisioning] key_file"
            )
        return self.vault

    # ------------------------------------------------------------------ rooms
    def owner_of(self, room_id: str) -> str | None:
        with self._lock:
            return self._owner.get(room_id)

    def room_of(self, user_id: str) -> str | None:
        with self._lock:
            return self._room_of.get(user_id)

    def _remember_room(self, room_id: str, owner: str) -> None:
        self.store.add_admin_room(room_id, owner)
        with self._lock:
            self._owner[room_id] = owner
            self._room_of[owner] = room_id

    def _forget_room(self, room_id: str) -> None:
        self.store.remove_admin_room(room_id)
        with self._lock:
            owner = self._owner.pop(room_id, None)
            if owner is not None and self._room_of.get(owner) == room_id:
                del self._room_of[owner]
                others = [r for r, o in self._owner.items() if o == owner]
                if others:
                    self._room_of[owner] = others[-1]

    # ------------------------------------------------------------------ inbox thread
    def handle_event(self, event: JsonObject) -> bool:
        """Take the events that belong to admin rooms (True) and queue their work.

        Called by the core on the inbox thread for every event of a real user; memory
        only, never raises.
        """
        room_id = event.get("room_id")
        try:
            return self._handle(event)
        except Exception:  # noqa: BLE001 - never break the inbox thread
            log.exception("admin: cannot handle event %s", event.get("event_id"))
            return isinstance(room_id, str) and self.owner_of(room_id) is not None

    def _handle(self, event: JsonObject) -> bool:
        room_id, sender = event.get("room_id"), event.get("sender")
        if not isinstance(room_id, str) or not isinstance(sender, str):
            return False
        etype = event.get("type")
        content = content_ if isinstance(content_ := event.get("content"), dict) else {}
        bot = self.config.bot_user_id
        if etype == "m.room.member" and event.get("state_key") == bot:
            membership = content.get("membership")
            if membership == "invite" and self.bridge.link_for_room(RoomId(room_id)) is None:
                self.lanes.submit(room_id, self._accept_invite, room_id, sender,
                                  bool(content.get("is_direct")))
                return True
            if self.owner_of(room_id) is None:
                return False
            if membership in ("leave", "ban"):  # the bot was kicked out of an admin room
                self.lanes.submit(room_id, self._forget_room, room_id)
            return True
        owner = self.owner_of(room_id)
        if owner is None:
            self._maybe_publish(room_id)
            return False
        if etype == "m.room.member" and event.get("state_key") == owner \
                and content.get("membership") in ("leave", "ban"):
            self.lanes.submit(room_id, self._owner_left, room_id)
        elif etype == "m.room.message" and sender == owner and isinstance(content.get("body"), str):
            self.lanes.submit(room_id, self._on_message, room_id, owner, event, content)
        return True

    # ------------------------------------------------------------------ lanes
    def _accept_invite(self, room_id: str, inviter: str, is_direct: bool) -> None:
        if role_of(self.config, inviter) is None:  # refused before (bridge.access): never join
            return
        bot = self.bridge.bot
        try:
            bot.ensure_registered()
            bot.join(room_id)
            members = set(self.bridge.client.joined_members(RoomId(room_id)))
        except MatrixError as e:
            log.warning("cannot join the room %s that %s invited the bot to: %s",
                        room_id, inviter, e)
            return
        others = members - {self.config.bot_user_id, inviter}
        if others:
            log.info("invited to %s by %s: not an admin room (%d other members)",
                     room_id, inviter, len(others))
            if is_direct:
                self.notice(room_id, "An admin room must be private: only you and me. This "
                                     "room has other members, so I take no commands here.")
            return
        self._remember_room(room_id, inviter)
        log.info("admin room %s for %s", room_id, inviter)
        networks = ", ".join(n.name for n in self.config.networks)
        self.notice(room_id, f"Hello {inviter}! This is your admin room for the IRC bridge "
                             f"(networks: {networks}). Say !help for the commands.")

    def _owner_left(self, room_id: str) -> None:
        self._forget_room(room_id)
        try:
            self.bridge.bot.leave(RoomId(room_id))
        except MatrixError as e:
            log.info("leaving admin room %s: %s", room_id, e)

    def _on_message(self, room_id: str, owner: str, event: JsonObject,
                    content: JsonObject) -> None:
        body = str(content.get("body"))
        notes: list[str] = []
        if _holds_secret(content):  # an edit may bring the secret too
            notes.extend(self._hide_secret_message(room_id, event, body))
        word = commands.command_word(body)
        if word is None:
            if notes:
                self.notice(room_id, "\n".join(notes))
            elif content.get("msgtype") in ("m.text", None):
                self.notice(room_id, "Commands start with ! — say !help for the list.")
            return
        reply = self.runner.run(body, owner, room_id)
        text = "\n".join([t for t in (reply, *notes) if t])
        if text:
            self.notice(room_id, text)

    def _hide_secret_message(self, room_id: str, event: JsonObject, body: str) -> list[str]:
        """Scrub the stored copy of a message holding a secret, and redact it in the room."""
        event_id = event.get("event_id")
        if not isinstance(event_id, str):
            return []
        word = commands.command_word(body) or ""
        scrubbed = {**event, "content": {"msgtype": "m.text", "body": f"!{word} {REDACTED_BODY}"}}
        for attempt in range(5):
            try:
                self.store.scrub_inbox_event(event_id, json.dumps(scrubbed))
                if self.store.checkpoint():
                    break
            except Exception:  # noqa: BLE001 - try again; a busy database is normal
                log.warning("scrubbing a stored secret message failed (try %d)", attempt + 1)
            self._stop.wait(0.2 * (attempt + 1))
        try:
            txn = self.bridge.client.new_txn_id()
            self.bridge.client.request(
                "PUT", f"/_matrix/client/v3/rooms/{q(room_id)}/redact/{q(event_id)}/{q(txn)}",
                json={"reason": "held a password"},
            )
            return []
        except MatrixError as e:
            log.info("cannot redact %s in %s: %s", event_id, room_id, e)
            return ["I could not redact your message (I lack the power level to): please "
                    "delete it yourself, it holds a secret."]

    # ------------------------------------------------------------------ notices
    def notice(self, room_id: str, text: str) -> None:
        """Post an m.notice as the bot (lane threads)."""
        try:
            self.bridge.bot.send_message(RoomId(room_id), {"msgtype": "m.notice", "body": text})
        except MatrixError as e:
            log.warning("cannot post a notice in admin room %s: %s", room_id, e)

    def notify(self, user_id: str, text: str) -> None:
        """Post a notice in the user's admin room, if they have one (any thread; queues)."""
        room_id = self.room_of(user_id)
        if room_id is not None:
            self.lanes.submit(room_id, self.notice, room_id, text)

    # ------------------------------------------------------------------ connection events
    def connection_event(self, event: IrcConnectionEvent) -> None:
        """The core's hook (IRC thread): only queues. Safe to call twice for one event."""
        self.irc.connection_event(event)

    def expect_connection(self, network: str, user_id: str) -> None:
        with self._lock:
            self._expect.add((network, user_id))

    def queue_connection_event(self, event: IrcConnectionEvent) -> None:
        """Decide (memory only, IRC thread) whether the owner hears of it; queue the notice.

        Quiet by design: "connected" is told only after a "lost" or when the user asked for
        a connection, "lost" once until the next "connected", and each refusal (banned,
        password, SASL) once per connection attempt series, so reconnects with backoff do
        not flood the room.
        """
        network, owner, what = event.network, event.owner, event.change
        if not owner:
            return
        key = (network, owner)
        with self._lock:
            if owner not in self._room_of:
                return
            if what == "connected":
                told = key in self._down or key in self._expect
                self._down.discard(key)
                self._expect.discard(key)
                self._told = {t for t in self._told if t[:2] != key}
                if not told:
                    return
            elif what == "lost":
                if key in self._down:
                    return
                self._down.add(key)
            elif what in ONCE_PER_CONNECTION:
                if (network, owner, what) in self._told:
                    return
                self._told.add((network, owner, what))
        text = connection_text(event)
        if text:
            self.notify(owner, text)

    # ------------------------------------------------------------------ static mappings
    def apply_static_mappings(self) -> None:
        """Link `[network:NAME] rooms` pairs; unlink static links no longer configured."""
        wanted = {
            (net.name, self.bridge.fold_channel(net.name, channel), room_id): channel
            for net in self.config.networks for channel, room_id in net.rooms
        }
        for link in self.bridge.links():
            key = (link.network, self.bridge.fold_channel(link.network, link.channel_name),
                   link.room_id)
            if link.kind == "static" and key not in wanted:
                log.info("static mapping %s = %s on %s removed from config.ini: unlinking",
                         link.channel_name, link.room_id, link.network)
                self.bridge.unlink_room(link.room_id)
        for (network, _folded, room_id), channel in wanted.items():
            try:
                self.bridge.link_room(network, channel, RoomId(room_id), kind="static")
            except ValueError as e:
                log.error("[network:%s] rooms: %s = %s: %s", network, channel, room_id, e)
            except MatrixError as e:
                log.error("[network:%s] rooms: %s = %s: the bot cannot join the room (%s); "
                          "make it public or invite %s", network, channel, room_id, e,
                          self.config.bot_user_id)

    # ------------------------------------------------------------------ room directory
    def room_created(self, network: str, room_id: str) -> None:
        """The core's hook after it made a portal room: list it in the directory (queues)."""
        if self.bridge.room_is_private(RoomId(room_id)):
            return  # a private channel's room is never listed
        with self._lock:
            if room_id in self._published or room_id in self._publishing:
                return
            self._publishing.add(room_id)
        self.lanes.submit(room_id, self._publish, network, room_id)

    def _maybe_publish(self, room_id: str) -> None:
        with self._lock:
            if room_id in self._published or room_id in self._publishing:
                return
        link = self.bridge.link_for_room(RoomId(room_id))
        if link is not None and link.kind == "portal":
            self.room_created(link.network, room_id)

    def room_unlisted(self, room_id: str) -> None:
        """The core unlisted a room whose channel turned private."""
        with self._lock:
            self._published.discard(room_id)

    def publish_portals(self) -> None:
        for link in self.bridge.links():
            if link.kind == "portal":
                self.room_created(link.network, link.room_id)

    def _publish(self, network: str, room_id: str) -> None:
        try:
            self.bridge.client.publish_appservice_room(network, RoomId(room_id),
                                                       self.config.appservice.id)
            self.store.mark_published(room_id, network)
            with self._lock:
                self._published.add(room_id)
            log.info("listed %s in the room directory of %s", room_id, network)
        except MatrixError as e:
            log.warning("cannot list %s in the room directory of %s: %s", room_id, network, e)
        finally:
            with self._lock:
                self._publishing.discard(room_id)


def _certificate(value: object) -> ClientCertificate | None:
    """A stored certificate (PEM and key), or None when there is none (or it is damaged)."""
    if not isinstance(value, dict):
        return None
    certificate, key = value.get("certificate"), value.get("key")
    if not isinstance(certificate, str) or not isinstance(key, str):
        return None
    return ClientCertificate(certificate=certificate, key=key)


def _holds_secret(content: JsonObject) -> bool:
    """A message, or the new text of an edit, that may hold a secret."""
    new = content.get("m.new_content")
    bodies = [content.get("body"), new.get("body") if isinstance(new, dict) else None]
    return any(isinstance(b, str) and secret_message(b) for b in bodies)


ONCE_PER_CONNECTION = ("banned", "password_refused", "sasl_failed", "nick_collision")


def connection_text(event: IrcConnectionEvent) -> str | None:
    """The notice for one connection event of a user's own connection (None: say nothing)."""
    network, what = event.network, event.change
    if what == "connected":
        return f"Connected to {network} as {event.nick}."
    if what == "lost":
        retry = event.retry_in
        when = f"; reconnecting in {retry:.0f} s" if isinstance(retry, float) else ""
        return f"Lost the connection to {network} ({event.reason}){when}."
    templates = {
        "nick_collision": "The nick {wanted} is taken on {network}; you are {using} (say !nick "
                          "to choose another).",
        "kicked": "You were kicked from {channel} on {network}.",
        "nick_changed": "Your nick on {network} is now {new} (it was {old}).",
        "banned": "{network} refused your connection: {reason}.",
        "password_refused": "{network} refused your password ({reason}): check it with "
                            "!storepass, or !removepass.",
        "sasl_failed": "SASL login failed on {network}: {reason}.",
    }
    template = templates.get(what)
    if template is None:
        return None
    return template.format(network=network, wanted=event.wanted, using=event.using,
                           channel=event.channel, reason=event.reason, old=event.old,
                           new=event.new)


def _protect(secrets: list[str]) -> None:
    """Keep stored passwords out of the log, whoever would write them (jaraco at DEBUG)."""
    try:
        logs.protect(secrets)
    except Exception:  # noqa: BLE001 - logging hygiene must never stop the bridge
        log.debug("cannot register secrets with the log filter", exc_info=True)
