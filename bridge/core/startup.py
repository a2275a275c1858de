"""What the bridge does once it runs: check the homeserver, then bring its users back.

The checks are the ones of `ircbridge check` (bridge.ops.checks): the as_token is accepted
(retried with growing pauses until it is, one clear log line per failure), then the AS ping
proves the homeserver can push to us. Then the Matrix users of every bridged room get their
IRC connections again, paced by the per-network connect limit (never a reconnect storm).

Thread: `run` on the "startup-checks" thread the bridge starts. It writes single keys of the
bridge's `health` (one assignment each), which request threads only read.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ..config.ini import Config
from ..irc import IrcSide
from ..matrix import ONCE, HomeserverClient, Intent, MatrixError
from ..ops.checks import check_as_token, check_ping
from ..rules.ids import UserId
from ..rules.permissions import role_of
from ..store.models import Link
from .directory import Directory

log = logging.getLogger(__name__)

# Ping answers that another try cannot change: the configuration must be fixed first.
FINAL_PING_CODES = frozenset({"M_FORBIDDEN", "M_URL_NOT_SET"})
PING_ATTEMPTS = 10
MAX_PAUSE = 30.0

PuppetJoin = Callable[[Link, str, "str | None"], None]


class Startup:
    """The startup checks and the puppets' return (see module)."""

    def __init__(self, config: Config, client: HomeserverClient, bot: Intent, irc: IrcSide,
                 directory: Directory, links: Callable[[], list[Link]],
                 puppet_join: PuppetJoin, stopping: threading.Event,
                 health: dict[str, str]):
        self.config = config
        self.client = client
        self.bot = bot
        self.irc = irc
        self.directory = directory
        self.links = links
        self.puppet_join = puppet_join
        self.stopping = stopping
        self.hs_ready = threading.Event()
        self.health = health

    def set_health(self, what: str, state: str) -> None:
        self.health[what] = state

    def run(self) -> None:
        """The startup-checks thread: homeserver, ping, then the puppets."""
        if self.wait_for_homeserver():
            self.ping()
            self.restore_puppets()

    def wait_for_homeserver(self) -> bool:
        """Until the homeserver accepts the as_token (or the bridge stops); the bot is
        registered then. False when the bridge stopped first."""
        pause = 1.0
        while not self.stopping.is_set():
            result = check_as_token(self.config, self.client, policy=ONCE)
            if result.ok or result.code == "wrong user":
                if not result.ok:  # misconfigured, but the homeserver answers: go on
                    log.error("%s", result.message)
                try:
                    self.bot.ensure_registered()
                    self.set_health("homeserver", "ok")
                    self.hs_ready.set()
                    return True
                except MatrixError as e:
                    self.set_health("homeserver", f"error {e.errcode}")
                    log.error("cannot register the bridge bot: %s; retrying in %.0f s", e, pause)
            else:
                self.set_health("homeserver", result.code)
                log.error("%s; retrying in %.0f s", result.message, pause)
            self.stopping.wait(pause)
            pause = min(MAX_PAUSE, pause * 2)
        return False

    def ping(self) -> None:
        """Ask the homeserver to ping us back (spec checklist item 43)."""
        for attempt in range(1, PING_ATTEMPTS + 1):
            if self.stopping.is_set():
                return
            result = check_ping(self.config, self.client)
            self.set_health("ping", "ok" if result.ok else result.code)
            if result.ok:
                log.info("%s", result.message)
                return
            log.error("%s", result.message)
            if result.code in FINAL_PING_CODES:
                return
            self.stopping.wait(min(MAX_PAUSE, 2.0 * attempt))

    def restore_puppets(self) -> None:
        """After a restart, the Matrix users of every bridged room are back on IRC."""
        if not self.irc.started:
            return
        links = self.links()
        wanted: list[tuple[Link, str, str | None]] = []
        for link in links:
            try:
                members = self.client.joined_members(link.room_id)
            except MatrixError as e:
                log.warning("cannot list the members of %s: %s", link.room_id, e)
                continue
            for user_id, info in members.items():
                member = UserId(user_id)
                if self.directory.is_ours(member) or self.directory.is_foreign(member) \
                        or role_of(self.config, user_id) is None:
                    continue
                name = info.get("display_name") if isinstance(info, dict) else None
                wanted.append((link, user_id, name if isinstance(name, str) else None))
        if not wanted:
            return
        log.info("restoring %d IRC connections of Matrix users in %d rooms",
                 len({u for _, u, _ in wanted}), len(links))
        for link, user_id, name in wanted:
            self.irc.call(self.puppet_join, link, user_id, name)


