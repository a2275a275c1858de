"""A whole local stack: an IRC daemon, a Synapse and the bridge, wired together on loopback.

Used by `ircbridge demo` and by the end-to-end tests, so the demo shows exactly what the tests
check. The bridge runs as its own process through `ircbridge run` (gunicorn), as an admin
would run it.

Thread: the test's or the demo's main thread; the daemons are child processes.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import requests

from ..config.ini import load as load_config
from ..config.registration import generate as generate_registration
from .clients import MatrixClient, RawIrcClient
from .ircd import IrcDaemon
from .ports import LOOPBACK, free_port, tail, terminate, track, wait_until
from .synapse import SynapseServer

log = logging.getLogger(__name__)

SERVER_NAME = "localhost"


class BridgeProcess:
    """`ircbridge -c config.ini run` as a child process, with its log in a file."""

    def __init__(self, config_path: Path, port: int, env: dict[str, str] | None = None,
                 status_secret: str = ""):
        self.config_path = config_path
        self.port = port
        self.status_secret = status_secret  # [status] secret: /health with its details
        self.log_path = config_path.parent / "bridge.log"
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self, timeout: float = 60) -> BridgeProcess:
        env = {**os.environ, **self.env}
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bridge", "-c", str(self.config_path), "run"],
                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                cwd=self.config_path.parent,
            )
        track(self.proc)

        def healthy() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"the bridge exited ({self.proc.returncode}):\n"
                                   + tail(self.log_path, 60))
            try:
                return requests.get(f"{self.url}/health", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        try:
            wait_until(healthy, timeout, interval=0.1, what="the bridge's /health")
        except TimeoutError as e:
            raise RuntimeError(f"{e}\n{tail(self.log_path, 60)}") from e
        return self

    def health(self) -> dict:
        """/health with its details (the status secret); without it only ok and names."""
        headers = {"Authorization": f"Bearer {self.status_secret}"} if self.status_secret else {}
        return requests.get(f"{self.url}/health", headers=headers, timeout=5).json()

    def stop(self, timeout: float = 15) -> int | None:
        if self.proc is None:
            return None
        code = terminate(self.proc, timeout)
        self.proc = None
        return code

    def kill(self) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None

    def log(self, lines: int = 80) -> str:
        return tail(self.log_path, lines)


class Stack:
    """IRC daemon + Synapse + bridge in one folder; `start()` brings them up in order."""

    def __init__(self, workdir: Path, *, database_url: str | None = None,
                 channels: str = "#matrix", user_template: str = "irc_local_{nick}",
                 alias_template: str = "irc_local_{channel}", scrollback_lines: int = 50,
                 log_level: str = "INFO", ircd_kind: str | None = None,
                 puppet_nick_template: str = "{localpart}[m]", network_extra: str = "",
                 flood_rate: float = 0.0, flood_burst: int = 5, log_levels: str = "",
                 appservice_id: str = "ircbridge", bot_localpart: str = "ircbot",
                 network_name: str = "local", synapse: SynapseServer | None = None):
        """`synapse`: share another stack's homeserver (a second bridge, with its own
        registration, id, bot and network; the homeserver must load both registrations:
        add this stack's `registration` to its `registration_files` before it starts)."""
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        # IRCBRIDGE_TEST_IRCD=ngircd|inspircd|hybrid|ergo picks the daemon when `ircd_kind`
        # does not (default: ngircd when installed); see bridge.devstack.ircd.default_kind.
        self.ircd = IrcDaemon(workdir / "ircd", kind=ircd_kind)
        self.bridge_port = free_port()
        self.config_path = workdir / "bridge" / "config.ini"
        self.config_path.parent.mkdir(exist_ok=True)
        self.registration = self.config_path.parent / "registration.yaml"
        self.synapse = synapse or SynapseServer(workdir / "synapse", server_name=SERVER_NAME,
                                                registration_files=[self.registration])
        self._own_synapse = synapse is None
        self.appservice_id = appservice_id
        self.bot_localpart = bot_localpart
        self.network_name = network_name
        self.database_url = database_url or f"sqlite:///{self.config_path.parent / 'bridge.db'}"
        self.channels = channels
        self.user_template = user_template
        self.alias_template = alias_template
        self.scrollback_lines = scrollback_lines
        self.log_level = log_level
        self.puppet_nick_template = puppet_nick_template
        self.network_extra = network_extra  # more `key = value` lines for [network:local]
        self.flood_rate = flood_rate  # 0: no flood control, so tests need not wait for it
        self.flood_burst = flood_burst
        self.log_levels = log_levels  # e.g. "irc.client=DEBUG" to log every IRC line read
        self.status_secret = "status-" + secrets.token_hex(12)
        self.bridge = BridgeProcess(self.config_path, self.bridge_port,
                                    status_secret=self.status_secret)

    def write_config(self) -> None:
        self.config_path.write_text(f"""; written by the devstack
[homeserver]
url = {self.synapse.url}
domain = {SERVER_NAME}

[appservice]
id = {self.appservice_id}
url = http://{LOOPBACK}:{self.bridge_port}
bind = {LOOPBACK}:{self.bridge_port}
threads = 8
as_token =
hs_token =
sender_localpart = {self.bot_localpart}
registration = registration.yaml

[database]
url = {self.database_url}

[logging]
level = {self.log_level}
levels = {self.log_levels}

[status]
secret = {self.status_secret}

[network:{self.network_name}]
host = {LOOPBACK}
port = {self.ircd.port}
tls = false
user_template = {self.user_template}
alias_template = {self.alias_template}
puppet_nick_template = {self.puppet_nick_template}
bot_nick = {self.bot_localpart}
channels = {self.channels}
scrollback_lines = {self.scrollback_lines}
flood_rate = {self.flood_rate}
flood_burst = {self.flood_burst}
connect_timeout = 5
{self.network_extra}

[permissions]
* = user
""", encoding="utf-8")

    def start(self, before_bridge: Callable[[Stack], None] | None = None) -> Stack:
        """IRC daemon, config and registration, Synapse, then the bridge.

        `before_bridge` runs once the IRC daemon and Synapse are up (e.g. to have IRC users
        in a channel before the bridge arrives, as in the founding story).
        """
        self.prepare()
        if not self.synapse.running:
            self.synapse.start()
        if before_bridge is not None:
            before_bridge(self)
        self.bridge.start()
        return self

    def prepare(self) -> Stack:
        """The IRC daemon, config.ini and the registration file (the homeserver needs it
        before it starts)."""
        if not self.ircd.running:
            self.ircd.start()
        self.write_config()
        generate_registration(load_config(self.config_path))
        return self

    def stop(self) -> None:
        parts = (self.bridge, self.synapse, self.ircd) if self._own_synapse else \
            (self.bridge, self.ircd)
        for part in parts:
            try:
                part.stop()
            except Exception:  # noqa: BLE001 - stop everything we can
                log.exception("stopping %s failed", part)

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # helpers for scripted users
    def irc_user(self, nick: str) -> RawIrcClient:
        return self.ircd.client(nick)

    def matrix_user(self, localpart: str) -> MatrixClient:
        return self.synapse.register_user(localpart)

    def alias(self, channel: str) -> str:
        local = self.alias_template.replace("{channel}", channel.lower())
        return f"#{local}:{SERVER_NAME}"

    def ghost(self, nick: str) -> str:
        from ..rules.names import NetworkNames

        names = NetworkNames(self.user_template, self.alias_template, SERVER_NAME)
        return names.user_id_for_nick(nick)
