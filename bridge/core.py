"""The bridge's policy: what happens when the homeserver asks or pushes, and when IRC speaks.

`Bridge` decides and delegates the I/O: homeserver calls through `matrix`, IRC work through
`IrcSide.call` (the IRC thread), persistence through `store`, and the two durable queues
through `inbox` and `outbox`. It imports no Flask: the web layer calls into it.

Threads: request threads call `handle_transaction`, `query_user`, `query_room`; the inbox
thread calls `on_matrix_event`; the IRC thread calls the `irc_*` listener methods (which only
queue); the senders call `deliver`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import threading
import time
from html import escape
from collections.abc import Callable
from typing import Any

from . import formatting, translate
from .config import Config, NetworkConfig, role_of
from .inbox import InboxWorker
from .irc import IrcSide
from .matrix import (
    Forbidden,
    HomeserverClient,
    HomeserverUnavailable,
    Intent,
    IntentCache,
    MatrixError,
    RoomInUse,
    UnknownToken,
)
from .names import NetworkNames, displayname_for_nick, irc_lower, is_channel, puppet_nick
from .outbox import GiveUp, Recorder, Retry, RoomCreated, Senders
from .store import PM_PREFIX, IrcLine, Link, QueuedLine, Store

log = logging.getLogger(__name__)

# IRC channel modes -> Matrix power levels of the virtual user (matrix-appservice-irc's
# default map).
POWER_FOR_MODE = {"o": 50, "v": 1}
# "irc.example.net other.example.net": the QUIT reason servers give in a netsplit.
_NETSPLIT = re.compile(r"^[\w.-]+\.[a-z]{2,} [\w.-]+\.[a-z]{2,}$", re.I)


def with_pills(html: str, mentions: dict[str, str]) -> str:
    """Turn IRC nicks of Matrix users into pills (matrix.to links) in escaped HTML."""
    for nick, user_id in sorted(mentions.items(), key=lambda kv: -len(kv[0])):
        pattern = re.compile(r"(?<![\w\[\]\\`^{|}-])" + re.escape(escape(nick))
                             + r"(?![\w\[\]\\`^{|}-])")
        link = f'<a href="https://matrix.to/#/{escape(user_id)}">{escape(nick)}</a>'
        html = pattern.sub(lambda _m, link=link: link, html)
    return html


class Bridge:
    """One per process (in `app.extensions["bridge"]`); wires every part together."""

    def __init__(self, config: Config, store: Store | None = None,
                 client: HomeserverClient | None = None):
        self.config = config
        self.store = store or Store(config.database.url)
        self.client = client or HomeserverClient(
            config.homeserver.url, config.appservice.as_token,
            server_name=config.homeserver.domain,
        )
        self.cache = IntentCache()
        self.names = {
            n.name: NetworkNames(n.user_template, n.alias_template, config.homeserver.domain)
            for n in config.networks
        }
        self.bot = Intent(self.client, config.bot_user_id, is_bot=True, cache=self.cache)
        self.irc = IrcSide(config.networks, self, self._bot_nick)
        self._links_lock = threading.Lock()
        self._links_by_room: dict[str, Link] = {}
        self._links_by_channel: dict[tuple[str, str], Link] = {}
        self._alias_locks: dict[tuple[str, str], threading.Lock] = {}
        self._alias_locks_guard = threading.Lock()
        self._topics: dict[tuple[str, str], str] = {}
        self._channel_waiters: dict[tuple[str, str], list[threading.Event]] = {}
        self.txn_prefix = ""
        self.recorder: Recorder | None = None
        self.senders: Senders | None = None
        self.inbox: InboxWorker | None = None
        self.hs_ready = threading.Event()
        # Admin rooms and their commands (bridge.admin); None until that part is wired in.
        self.admin: Any = None
        # Signed media links and pastes of long messages (bridge.media); None = plain mxc.
        self.media: Any = None
        self.health: dict[str, Any] = {"homeserver": "unknown", "ping": "unknown"}
        self._stopping = threading.Event()
        self._started = False
        self._start_lock = threading.Lock()

    # ------------------------------------------------------------ lifecycle
    def _bot_nick(self, network: NetworkConfig) -> str:
        return network.bot_nick or f"{self.config.appservice.sender_localpart[:20]}"

    def start(self, *, connect_irc: bool = True, check_homeserver: bool = True) -> None:
        """Take the per-network locks, then start the threads. Raises LockHeld."""
        with self._start_lock:
            if self._started:
                return
            self._started = True
        networks = [n.name for n in self.config.networks]
        try:
            for name in networks:
                self.store.acquire_network_lock(name)
        except Exception:
            self.store.release_locks()
            self._started = False
            raise
        self.txn_prefix = self.store.txn_prefix()
        self._load_links()
        self.senders = Senders(self.store, self.deliver, count=self.config.appservice.senders)
        self.recorder = Recorder(
            self.store,
            {(lk.network, lk.channel): lk.room_id for lk in self._links_by_room.values()},
            {n.name: n.scrollback_lines for n in self.config.networks},
            self._sender_for_nick,
            self.senders.dispatch,
        )
        self.inbox = InboxWorker(self.store, self.on_matrix_event)
        self.senders.start()
        self.recorder.start()
        self.senders.dispatch(self.store.pending_outbox())
        self.inbox.start()
        if check_homeserver:
            threading.Thread(target=self._startup_checks, name="startup-checks",
                             daemon=True).start()
        else:
            self.hs_ready.set()
        if connect_irc:
            self.irc.start()

    def stop(self) -> None:
        """Clean stop: QUIT every connection, let the queues settle, release the locks."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if not self._started:
            return
        self.irc.stop("Bridge shutting down")
        if self.inbox:
            self.inbox.stop()
        if self.recorder:
            self.recorder.stop()
        if self.senders:
            self.senders.stop()
        self.client.close()
        self.store.close()

    def _load_links(self) -> None:
        with self._links_lock:
            for link in self.store.all_links():
                self._links_by_room[link.room_id] = link
                self._links_by_channel[(link.network, link.channel)] = link

    def _startup_checks(self) -> None:
        """Check the homeserver once it answers; one clear log line per failure mode."""
        pause = 1.0
        while not self._stopping.is_set():
            try:
                self.client.request("GET", "/_matrix/client/versions", retry=False)
                whoami = self.client.whoami()
                if whoami.get("user_id") != self.config.bot_user_id:
                    log.error("the homeserver says the as_token belongs to %s, expected %s",
                              whoami.get("user_id"), self.config.bot_user_id)
                self.bot.ensure_registered()
                self.health["homeserver"] = "ok"
                self.hs_ready.set()
                break
            except UnknownToken:
                self.health["homeserver"] = "as_token refused"
                log.error(
                    "the homeserver refused the as_token: is %s listed in its "
                    "app_service_config_files, and was it restarted after that?",
                    self.config.appservice.registration,
                )
            except HomeserverUnavailable as e:
                self.health["homeserver"] = "unreachable"
                log.error("homeserver %s unreachable (%s); retrying in %.0f s",
                          self.config.homeserver.url, e, pause)
            except MatrixError as e:
                self.health["homeserver"] = f"error {e.errcode}"
                log.error("homeserver check failed: %s", e)
            except Exception as e:  # noqa: BLE001 - e.g. connection refused with retry off
                self.health["homeserver"] = "unreachable"
                log.error("homeserver %s unreachable (%s); retrying in %.0f s",
                          self.config.homeserver.url, type(e).__name__, pause)
            self._stopping.wait(pause)
            pause = min(30.0, pause * 2)
        self._check_ping()

    def _check_ping(self) -> None:
        """Ask the homeserver to ping us back (spec checklist item 43)."""
        attempts = 0
        while not self._stopping.is_set() and attempts < 10:
            attempts += 1
            try:
                result = self.client.ping(self.config.appservice.id, f"startup-{time.time():.0f}")
                self.health["ping"] = "ok"
                log.info("homeserver reached the bridge at %s (AS ping %s ms)",
                         self.config.appservice.url, result.get("duration_ms"))
                return
            except MatrixError as e:
                self.health["ping"] = e.errcode or str(e.status)
                if e.errcode == "M_BAD_STATUS":
                    log.error("the homeserver reached the bridge but got HTTP %s (%s): "
                              "check hs_token in config.ini and the registration file",
                              e.body.get("status"), str(e.body.get("body"))[:200])
                elif e.errcode in ("M_CONNECTION_FAILED", "M_CONNECTION_TIMEOUT"):
                    log.error("the homeserver cannot reach the bridge at %s (%s): check "
                              "[appservice] url and bind", self.config.appservice.url, e.errcode)
                elif e.errcode == "M_FORBIDDEN":
                    log.error("the homeserver refused the ping: wrong as_token or "
                              "[appservice] id %r", self.config.appservice.id)
                    return
                elif e.errcode == "M_URL_NOT_SET":
                    log.error("the registration file has no url: the homeserver will not "
                              "push events; set [appservice] url and regenerate it")
                    return
                else:
                    log.error("AS ping failed: %s", e)
            except Exception as e:  # noqa: BLE001
                log.error("AS ping failed: %s", type(e).__name__)
            self._stopping.wait(min(30.0, 2.0 * attempts))

    # ------------------------------------------------------------ naming helpers
    def _sender_for_nick(self, network: str, nick: str) -> str:
        return self.names[network].user_id_for_nick(nick)

    def is_ours(self, user_id: str) -> bool:
        """The bot or any virtual user: their events are echoes and are never relayed."""
        if user_id == self.config.bot_user_id:
            return True
        return any(n.nick_for_user_id(user_id) is not None for n in self.names.values())

    def link_for_room(self, room_id: str) -> Link | None:
        with self._links_lock:
            return self._links_by_room.get(room_id)

    def _remember_link(self, link: Link) -> None:
        with self._links_lock:
            self._links_by_room[link.room_id] = link
            self._links_by_channel[(link.network, link.channel)] = link

    # ------------------------------------------------------------ AS API (request threads)
    def handle_transaction(self, txn_id: str, events: list[dict[str, Any]]) -> tuple[bool, int]:
        """Store the events durably (before the 200) and wake the inbox worker."""
        seen, new = self.store.record_transaction(txn_id, events)
        if new and self.inbox is not None:
            self.inbox.notify()
        return seen, new

    def query_user(self, user_id: str) -> bool:
        """Register a virtual user the homeserver asked about; False means 404."""
        for network, names in self.names.items():
            nick = names.nick_for_user_id(user_id)
            if nick is None:
                continue
            self._prepare_ghost(network, nick, user_id)
            return True
        return False

    def _prepare_ghost(self, network: str, nick: str, user_id: str) -> Intent:
        intent = Intent(self.client, user_id, cache=self.cache)
        intent.ensure_registered()
        name = displayname_for_nick(nick)
        if self.cache.displayname(user_id) != name:
            intent.set_displayname(name)
            self.store.remember_virtual_user(user_id, network, nick, name)
        return intent

    def parse_alias(self, alias: str) -> tuple[str, str] | None:
        for network, names in self.names.items():
            channel = names.channel_for_alias(alias)
            if channel is not None:
                return network, channel
        return None

    def query_room(self, alias: str) -> bool:
        """Create the portal room for a channel alias, blocking; False means 404.

        Two queries for the same alias at once make one room: the second waits on a
        per-channel lock and then finds the link. Scrollback is replayed after the answer.
        """
        parsed = self.parse_alias(alias)
        if parsed is None:
            return False
        network, channel = parsed
        folded = irc_lower(channel)
        key = (network, folded)
        with self._alias_locks_guard:
            lock = self._alias_locks.setdefault(key, threading.Lock())
        with lock:
            with self._links_lock:
                link = self._links_by_channel.get(key)
            if link is not None:
                # The room exists but the homeserver did not know this alias (another case,
                # or it was deleted): point it at the room.
                try:
                    self.client.put_alias(alias, link.room_id)
                except MatrixError as e:
                    log.info("alias %s for existing room: %s", alias, e)
                return True
            self._bot_into_channel(network, channel, folded)
            room_id = self._create_portal(network, channel, alias)
            link = self.store.add_link(network, folded, channel, room_id, alias)
            self._remember_link(link)
        self._after_room_created(network, channel, folded, room_id)
        return True

    def _bot_into_channel(self, network: str, channel: str, folded: str,
                          timeout: float = 5.0) -> None:
        """Have the bot join before the room is made, so its name and topic are known.

        Bounded: Synapse gives the whole alias query 60 s, and a channel that cannot be
        joined still gets a room (the bot keeps trying to join in the background).
        """
        net = self.irc.network(network)
        if net is None or not self.irc.started:
            return
        ready = threading.Event()
        with self._links_lock:
            self._channel_waiters.setdefault((network, folded), []).append(ready)
        try:
            if self.irc.call_sync(net.bot_in, channel, timeout=timeout):
                return
            self.irc.call(net.join_bot, channel)
            if not ready.wait(timeout):
                log.warning("the bot could not join %s on %s within %.0f s; creating the "
                            "room anyway", channel, network, timeout)
        except TimeoutError:
            log.warning("the IRC thread did not answer; creating the room for %s anyway", channel)
        finally:
            with self._links_lock:
                waiters = self._channel_waiters.get((network, folded), [])
                if ready in waiters:
                    waiters.remove(ready)

    def _create_portal(self, network: str, channel: str, alias: str) -> str:
        localpart = alias[1:].rsplit(":", 1)[0]
        topic = self._topics.get((network, irc_lower(channel)), "")
        body: dict[str, Any] = {
            "room_alias_name": localpart,
            "name": channel,
            "preset": "public_chat",
            "visibility": "private",
            "initial_state": [
                {"type": "m.room.history_visibility", "state_key": "",
                 "content": {"history_visibility": "shared"}},
            ],
            "creation_content": {"m.federate": True},
        }
        if topic:
            body["topic"] = topic
        self.bot.ensure_registered()
        try:
            room_id = self.client.create_room(body)
            log.info("created room %s for %s on %s", room_id, channel, network)
        except RoomInUse:
            found = self.client.resolve_alias(alias)
            if not found:
                raise
            room_id = found
        self.cache.mark_joined(room_id, self.config.bot_user_id)
        return room_id

    def _after_room_created(self, network: str, channel: str, folded: str, room_id: str) -> None:
        assert self.recorder is not None
        self.recorder.put(RoomCreated(network, folded, room_id, threading.Event()))
        net = self.irc.network(network)
        if net is not None:
            self.irc.call(net.join_bot, channel)

    def link_room(self, network: str, channel: str, room_id: str, *, kind: str = "plumbed") -> Link:
        """Bridge an existing Matrix room to a channel (provisioning, static mappings).

        The bot joins the room (it must be public or the bot invited) and the channel.
        Raises ValueError for an unknown network, an invalid channel, or a channel or room
        that is already linked elsewhere.
        """
        from .names import valid_channel

        if network not in self.names:
            raise ValueError(f"unknown network {network!r}")
        if not valid_channel(channel):
            raise ValueError(f"not a valid IRC channel: {channel!r}")
        folded = irc_lower(channel)
        with self._links_lock:
            existing = self._links_by_channel.get((network, folded))
            by_room = self._links_by_room.get(room_id)
        if existing is not None and existing.room_id != room_id:
            raise ValueError(f"{channel} on {network} is already linked to {existing.room_id}")
        if by_room is not None and (by_room.network, by_room.channel) != (network, folded):
            raise ValueError(f"{room_id} is already linked to {by_room.channel_name} on "
                             f"{by_room.network}")
        if existing is not None:
            return existing
        self.bot.ensure_registered()
        self.bot.join(room_id)
        link = self.store.add_link(network, folded, channel, room_id, None, kind=kind)
        self._remember_link(link)
        self._after_room_created(network, channel, folded, room_id)
        return link

    def unlink_room(self, room_id: str) -> Link | None:
        """Stop bridging a room; the bot leaves the channel when no other room needs it."""
        link = self.link_for_room(room_id)
        if link is None:
            return None
        self.store.remove_link(room_id)
        with self._links_lock:
            self._links_by_room.pop(room_id, None)
            self._links_by_channel.pop((link.network, link.channel), None)
        if self.recorder is not None:
            self.recorder.forget(link.network, link.channel)
        net = self.irc.network(link.network)
        if net is not None and self.irc.started:
            self.irc.call(net.part_bot, link.channel_name)
        return link

    def links(self, room_id: str | None = None) -> list[Link]:
        with self._links_lock:
            links = list(self._links_by_room.values())
        return [lk for lk in links if room_id is None or lk.room_id == room_id]

    # ------------------------------------------------------------ Matrix -> IRC (inbox thread)
    def on_matrix_event(self, event: dict[str, Any], done: Callable[[bool], None]) -> None:
        sender = event.get("sender")
        room_id = event.get("room_id")
        content = event.get("content")
        if not isinstance(sender, str) or not isinstance(room_id, str) or self.is_ours(sender) \
                or not isinstance(content, dict):
            done(True)
            return
        if self.admin is not None and self.admin.handle_event(event):
            done(True)
            return
        if event.get("type") == "m.room.member" and self._invite_to_ghost(event, content):
            done(True)
            return
        if role_of(self.config, sender) is None:
            log.info("ignoring %s in %s: not allowed by [permissions]", sender, room_id)
            done(True)
            return
        link = self.link_for_room(room_id)
        if link is not None:
            self._channel_event(event, content, link, done)
            return
        pm = self.store.pm_for_room(room_id)
        if pm is not None and pm.owner == sender:
            self._private_event(event, content, pm, done)
            return
        done(True)

    def _channel_event(self, event: dict[str, Any], content: dict[str, Any], link: Link,
                       done: Callable[[bool], None]) -> None:
        net = self.irc.network(link.network)
        etype = event.get("type")
        sender = str(event["sender"])
        if net is None:
            done(True)
            return
        if etype == "m.room.member":
            self._membership_to_irc(event, content, link)
            done(True)
            return
        if etype == "m.room.topic" and event.get("state_key") == "":
            topic = formatting.sanitize_line(str(content.get("topic") or "")).strip()
            self.irc.call(net.command, sender, f"TOPIC {link.channel_name} :{topic}",
                          link.channel_name)
            done(True)
            return
        if etype != "m.room.message":
            done(True)
            return
        lines, kind = translate.to_irc(content, self._translate_context(net.config,
                                                                        link.channel_name))
        if not lines:
            done(True)
            return

        def sent(ok: bool, error: str | None) -> None:
            if not ok:
                log.warning("message %s not sent to IRC: %s", event.get("event_id"), error)
            done(ok)

        self.irc.call(net.say, sender, None, link.channel_name, lines, kind, sent)

    def _private_event(self, event: dict[str, Any], content: dict[str, Any], pm: Any,
                       done: Callable[[bool], None]) -> None:
        net = self.irc.network(pm.network)
        if net is None or event.get("type") != "m.room.message":
            done(True)
            return
        nick = self.names[pm.network].nick_for_user_id(pm.ghost) or pm.nick
        lines, kind = translate.to_irc(content, self._translate_context(net.config, nick))

        def sent(ok: bool, error: str | None) -> None:
            done(ok)

        self.irc.call(net.say_private, str(event["sender"]), nick, lines, kind, sent)

    def _translate_context(self, network: NetworkConfig, target: str) -> translate.Context:
        def find(event_id: str) -> translate.Origin | None:
            found = self.store.find_message(event_id)
            return translate.Origin(*found) if found else None

        return translate.Context(
            budget=formatting.payload_budget("PRIVMSG", target),
            max_lines=network.max_lines,
            find_message=find,
            nick_for_user=lambda user_id: self.nick_of(network.name, user_id),
            media=self.media,
        )

    def nick_of(self, network: str, user_id: str) -> str:
        """The IRC nick that stands for a Matrix user id: a ghost's nick, or a puppet's."""
        names = self.names.get(network)
        if names is not None:
            nick = names.nick_for_user_id(user_id)
            if nick is not None:
                return nick
        net = self.irc.network(network)
        conn = net.puppets.get(user_id) if net is not None else None
        if conn is not None:
            return conn.nick
        config = self.config.network(network)
        template = config.puppet_nick_template if config else "{localpart}[m]"
        return puppet_nick(template, user_id, None, net.nick_max if net else 30)

    def _membership_to_irc(self, event: dict[str, Any], content: dict[str, Any],
                           link: Link) -> None:
        sender = str(event["sender"])
        target = event.get("state_key")
        membership = content.get("membership")
        if not isinstance(target, str):
            return
        net = self.irc.network(link.network)
        if net is None:
            return
        channel = link.channel_name
        if target == sender:
            if membership == "join":
                self.irc.call(self._puppet_join, link, sender, content.get("displayname"))
            elif membership == "leave":
                self.irc.call(self._puppet_part, link, sender)
            return
        nick = self.names[link.network].nick_for_user_id(target)
        reason = formatting.sanitize_line(str(content.get("reason") or ""))[:200]
        if nick is not None and membership in ("leave", "ban"):
            # A Matrix user removed an IRC user: their puppet does it on IRC (if it may).
            if membership == "ban":
                self.irc.call(net.command, sender, f"MODE {channel} +b {nick}!*@*", channel)
            self.irc.call(net.command, sender, f"KICK {channel} {nick} :{reason or 'kicked'}",
                          channel)
        elif nick is None and membership in ("leave", "ban") and not self.is_ours(target):
            self.irc.call(self._puppet_part, link, target)

    def _invite_to_ghost(self, event: dict[str, Any], content: dict[str, Any]) -> bool:
        """A Matrix user invites a virtual user: a private conversation with that nick."""
        target = event.get("state_key")
        if content.get("membership") != "invite" or not isinstance(target, str):
            return False
        for network, names in self.names.items():
            nick = names.nick_for_user_id(target)
            if nick is None:
                continue
            room_id = str(event["room_id"])
            if self.link_for_room(room_id) is not None:
                return True  # invited into a bridged room: IRC decides who is there
            intent = self._prepare_ghost(network, nick, target)
            try:
                intent.join(room_id)
            except MatrixError as e:
                log.warning("%s could not join %s: %s", target, room_id, e)
                return True
            self.store.set_pm_room(network, str(event["sender"]), irc_lower(nick), target,
                                   room_id)
            net = self.irc.network(network)
            if net is not None:
                self.irc.call(net.puppet, str(event["sender"]))
            return True
        return False

    def _puppet_join(self, link: Link, user_id: str, displayname: str | None) -> None:
        net = self.irc.network(link.network)
        if net is not None:
            net.puppet(user_id, displayname).join(link.channel_name)

    def _puppet_part(self, link: Link, user_id: str) -> None:
        net = self.irc.network(link.network)
        if net is not None and user_id in net.puppets:
            net.puppets[user_id].part(link.channel_name)

    # ------------------------------------------------------------ IRC listener (IRC thread)
    def _record(self, network: str, channel: str, nick: str, sender: str, msgtype: str,
                body: str, html: str | None, ts: int | None = None) -> None:
        if self.recorder is None:
            return
        self.recorder.put(IrcLine(
            network=network, channel=channel, channel_name=channel, nick=nick, sender=sender,
            msgtype=msgtype, body=body, html=html,
            ts=ts if ts is not None else int(time.time() * 1000),
        ))

    def _has_room(self, network: str, channel: str) -> bool:
        with self._links_lock:
            return (network, channel) in self._links_by_channel

    def irc_message(self, network: str, channel: str, nick: str, text: str, kind: str,
                    ts: int, mentions: dict[str, str] | None = None) -> None:
        body, html = formatting.irc_to_matrix(text)
        if not body.strip():
            return
        if mentions:
            html = with_pills(html if html is not None else escape(body), mentions)
        self._record(network, channel, nick, self._sender_for_nick(network, nick), kind, body,
                     html, ts)

    def irc_private(self, network: str, owner: str, nick: str, text: str, kind: str,
                    ts: int) -> None:
        body, html = formatting.irc_to_matrix(text)
        if not body.strip():
            return
        key = f"{PM_PREFIX}{owner}:{irc_lower(nick)}"
        self._record(network, key, nick, self._sender_for_nick(network, nick), kind, body,
                     html, ts)

    def irc_topic(self, network: str, channel: str, topic: str, nick: str | None) -> None:
        self._topics[(network, channel)] = topic
        if nick is not None and self._has_room(network, channel):
            self._record(network, channel, nick, self._sender_for_nick(network, nick),
                         "x.topic", json.dumps({"topic": topic}), None)

    def irc_membership(self, network: str, channel: str, nick: str, what: str,
                       details: dict[str, Any]) -> None:
        if not self._has_room(network, channel):
            return
        sender = self._sender_for_nick(network, nick)
        if what == "nick":
            new = str(details.get("new"))
            self._record(network, channel, nick, sender, "x.leave",
                         json.dumps({"reason": f"changed nick to {new}"}), None)
            self._record(network, channel, new, self._sender_for_nick(network, new), "x.join",
                         "{}", None)
            return
        if what == "quit" and _NETSPLIT.match(str(details.get("reason") or "")):
            return  # a netsplit: they are back when it heals; do not churn the room
        kind = {"join": "x.join", "part": "x.leave", "quit": "x.leave", "kick": "x.kick"}[what]
        self._record(network, channel, nick, sender, kind, json.dumps(details), None,
                     details.get("ts"))

    def irc_mode(self, network: str, channel: str, sign: str, mode: str,
                 argument: str | None, by: str | None, user_id: str | None = None) -> None:
        if not self._has_room(network, channel):
            return
        if mode in POWER_FOR_MODE and argument:
            level = POWER_FOR_MODE[mode] if sign == "+" else 0
            self._record(network, channel, argument,
                         user_id or self._sender_for_nick(network, argument), "x.power",
                         json.dumps({"level": level, "matrix_user": bool(user_id)}), None)
        elif mode in ("i", "k"):
            self._record(network, channel, "", self.config.bot_user_id, "x.joinrule",
                         json.dumps({"invite": sign == "+", "mode": mode}), None)

    def irc_failure(self, network: str, owner: str, target: str, reason: str) -> None:
        """A line of a Matrix user was refused by IRC: tell them, never drop it silently."""
        folded = irc_lower(target)
        who = self.nick_of(network, owner)
        text = f"{who}: not delivered to {target} on IRC: {reason}"
        if is_channel(target):
            if self._has_room(network, folded):
                self._record(network, folded, "", self.config.bot_user_id, "m.notice", text,
                             None)
            return
        # In a private room the bot is not a member: the other side's virtual user says it.
        self._record(network, f"{PM_PREFIX}{owner}:{folded}", target,
                     self._sender_for_nick(network, target), "m.notice", text, None)

    def irc_connection(self, network: str, owner: str, what: str, details: dict[str, Any]) -> None:
        who = owner or "bot"
        if what == "channel_ready":
            with self._links_lock:
                for event in self._channel_waiters.get((network, details["channel"]), []):
                    event.set()
            return
        if self.admin is not None and hasattr(self.admin, "connection_event"):
            try:
                self.admin.connection_event(network, owner, what, details)
            except Exception:  # noqa: BLE001 - reporting must never break the IRC thread
                log.exception("admin room report failed")
        if what == "connected":
            log.info("%s connected to %s as %s", who, network, details.get("nick"))
        elif what == "nick_collision":
            log.info("%s on %s: nick %s taken, using %s", who, network, details.get("wanted"),
                     details.get("using"))

    # ------------------------------------------------------------ IRC -> Matrix (senders)
    def deliver(self, line: QueuedLine) -> str:
        """Send one outbox row to the homeserver, as its virtual user, with the IRC time."""
        try:
            room_id, line = self._route(line)
            if room_id is None:
                raise GiveUp(f"no room for {line.room_id}")
            if line.msgtype.startswith("x."):
                return self._deliver_state(line, room_id)
            if line.sender == self.config.bot_user_id:
                intent = self.bot
            else:
                intent = self._prepare_ghost(line.network, line.nick, line.sender)
            content: dict[str, Any] = {"msgtype": line.msgtype, "body": line.body}
            if line.html:
                content["format"] = "org.matrix.custom.html"
                content["formatted_body"] = line.html
            return intent.send_message(
                room_id, content, ts=line.ts, txn_id=f"{self.txn_prefix}.{line.id}"
            )
        except HomeserverUnavailable as e:
            raise Retry(str(e)) from e
        except Forbidden as e:
            raise GiveUp(str(e)) from e
        except MatrixError as e:
            if e.status == 429 or e.status >= 500 or e.status == 0:
                raise Retry(str(e)) from e
            raise GiveUp(str(e)) from e

    def _route(self, line: QueuedLine) -> tuple[str | None, QueuedLine]:
        """The room of a row; a private conversation's room is looked up, or made.

        In a private room the other side is one virtual user whatever the case of the nick
        IRC used this time, so the row is sent as that user.
        """
        if not line.room_id.startswith(PM_PREFIX):
            return line.room_id, line
        owner, _, nick = line.room_id[len(PM_PREFIX):].rpartition(":")
        pm = self.store.pm_room(line.network, owner, nick)
        if pm is not None:
            if line.sender != pm.ghost and irc_lower(line.nick) == nick:
                ghost_nick = self.names[line.network].nick_for_user_id(pm.ghost) or line.nick
                line = dataclasses.replace(line, sender=pm.ghost, nick=ghost_nick)
            return pm.room_id, line
        if line.sender == self.config.bot_user_id:
            return None, line
        ghost = self._prepare_ghost(line.network, line.nick, line.sender)
        room_id = ghost.create_room(
            alias_localpart=None, name=None, topic=None, preset="trusted_private_chat",
            invite=[owner], extra_body={"is_direct": True},
        )
        self.store.set_pm_room(line.network, owner, nick, line.sender, room_id)
        log.info("opened a private room %s for %s and %s", room_id, owner, line.nick)
        return room_id, line

    def _deliver_state(self, line: QueuedLine, room_id: str) -> str:
        """Membership, topic and power changes said on IRC, as their virtual users."""
        details = json.loads(line.body or "{}")
        kind = line.msgtype
        if kind == "x.join":
            self._prepare_ghost(line.network, line.nick, line.sender).ensure_joined(room_id)
        elif kind in ("x.leave", "x.kick"):
            if not self.cache.is_joined(room_id, line.sender):
                return ""
            reason = str(details.get("reason") or "")
            if kind == "x.kick" and details.get("by"):
                reason = f"kicked by {details['by']}" + (f": {reason}" if reason else "")
                try:
                    self.bot.kick(room_id, line.sender, reason)
                except Forbidden:
                    Intent(self.client, line.sender, cache=self.cache).leave(room_id)
            else:
                Intent(self.client, line.sender, cache=self.cache).leave(room_id)
            self.cache.forget_joined(room_id, line.sender)
        elif kind == "x.topic":
            intent = self._prepare_ghost(line.network, line.nick, line.sender)
            try:
                return intent.set_state(room_id, "m.room.topic", "",
                                        {"topic": details.get("topic", "")}, ts=line.ts)
            except Forbidden:
                return self.bot.set_state(room_id, "m.room.topic", "",
                                          {"topic": details.get("topic", "")}, ts=line.ts)
        elif kind == "x.power":
            if not details.get("matrix_user"):
                self._prepare_ghost(line.network, line.nick, line.sender)
            power = self.bot.get_state(room_id, "m.room.power_levels") or {}
            users = dict(power.get("users") or {})
            level = int(details.get("level", 0))
            if users.get(line.sender, 0) == level:
                return ""
            if level:
                users[line.sender] = level
            else:
                users.pop(line.sender, None)
            return self.bot.set_state(room_id, "m.room.power_levels", "",
                                      {**power, "users": users})
        elif kind == "x.joinrule":
            rule = "invite" if details.get("invite") else "public"
            return self.bot.set_state(room_id, "m.room.join_rules", "", {"join_rule": rule})
        return ""

    # ------------------------------------------------------------ third-party lookups
    def thirdparty_protocol(self) -> dict[str, Any]:
        """The `irc` protocol for clients' network pickers (spec checklist F44)."""
        return {
            "user_fields": ["network", "nickname"],
            "location_fields": ["network", "channel"],
            "icon": "mxc://matrix.org/irc",
            "field_types": {
                "network": {"regexp": "[a-zA-Z0-9_.-]+", "placeholder": "network"},
                "channel": {"regexp": "[#&+!][^\\s,:]+", "placeholder": "#channel"},
                "nickname": {"regexp": "[^\\s#&+!][^\\s]*", "placeholder": "nick"},
            },
            "instances": [
                {"network_id": n.name, "desc": n.display_name, "fields": {"network": n.name},
                 "icon": "mxc://matrix.org/irc"}
                for n in self.config.networks
            ],
        }

    def thirdparty_location(self, network: str | None, channel: str | None) -> list[dict[str, Any]]:
        from .names import valid_channel

        if not network or not channel or network not in self.names or not valid_channel(channel):
            return []
        alias = self.names[network].alias_for_channel(channel)
        return [{"alias": alias, "protocol": "irc",
                 "fields": {"network": network, "channel": channel}}]

    def thirdparty_user(self, network: str | None, nick: str | None) -> list[dict[str, Any]]:
        from .names import valid_nick

        if not network or not nick or network not in self.names or not valid_nick(nick):
            return []
        return [{"userid": self.names[network].user_id_for_nick(nick), "protocol": "irc",
                 "fields": {"network": network, "nickname": nick}}]

    def thirdparty_location_by_alias(self, alias: str | None) -> list[dict[str, Any]]:
        parsed = self.parse_alias(alias or "")
        if parsed is None:
            return []
        network, channel = parsed
        return [{"alias": alias, "protocol": "irc",
                 "fields": {"network": network, "channel": channel}}]

    def thirdparty_user_by_id(self, user_id: str | None) -> list[dict[str, Any]]:
        for network, names in self.names.items():
            nick = names.nick_for_user_id(user_id or "")
            if nick is not None:
                return [{"userid": user_id, "protocol": "irc",
                         "fields": {"network": network, "nickname": nick}}]
        return []

    # ------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        return {
            "homeserver": self.health.get("homeserver"),
            "ping": self.health.get("ping"),
            "networks": self.irc.status() if self.irc.started else {},
            "rooms": len(self._links_by_room),
            "inbox_in_flight": self.inbox.in_flight if self.inbox else 0,
            "outbox_depth": self.senders.depth if self.senders else 0,
        }
