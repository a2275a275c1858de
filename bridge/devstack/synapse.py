"""A real Synapse homeserver on 127.0.0.1, for tests and ``ircbridge demo``.

The bridge is only trustworthy if it is tested against the homeserver it will
talk to in production. :class:`SynapseServer` writes a minimal homeserver.yaml
(SQLite, one plain-HTTP client listener on loopback, open registration, every
rate limit lifted, the given appservice registrations loaded), runs
``python -m synapse.app.homeserver`` as a child process and waits until the
client API answers.

Thread: the test's or the demo's main thread; Synapse is a child process.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

import requests
import yaml

from bridge.devstack.clients import MatrixClient, MatrixError
from bridge.devstack.ports import (
    LOOPBACK,
    StartupError,
    free_port,
    tail,
    terminate,
    track,
    wait_until,
)

log = logging.getLogger(__name__)

# Every rate limiter this Synapse version reads (synapse/config/ratelimiting.py),
# lifted so tests and bridges never see 429. Dotted names are nested keys.
UNLIMITED = {"per_second": 10000, "burst_count": 100000}
RATE_LIMIT_KEYS = (
    "rc_message",
    "rc_registration",
    "rc_registration_token_validity",
    "rc_login.address",
    "rc_login.account",
    "rc_login.failed_attempts",
    "rc_admin_redaction",
    "rc_joins.local",
    "rc_joins.remote",
    "rc_joins_per_room",
    "rc_key_requests",
    "rc_3pid_validation",
    "rc_invites.per_room",
    "rc_invites.per_user",
    "rc_invites.per_issuer",
    "rc_third_party_invite",
    "rc_media_create",
    "rc_presence.per_user",
    "rc_delayed_event_mgmt",
    "rc_room_creation",
    "rc_reports",
    "rc_user_directory",
    "rc_profile",
)


def _rate_limits() -> dict[str, Any]:
    config: dict[str, Any] = {}
    for key in RATE_LIMIT_KEYS:
        node = config
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = dict(UNLIMITED)
    return config


class SynapseServer:
    """One Synapse process with its own SQLite database, config and logs in ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        *,
        server_name: str = "localhost",
        port: int | None = None,
        registration_files: list[Path] | tuple[Path, ...] = (),
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self._server_name = server_name
        self._port = port or free_port()
        self.registration_files = [Path(p).resolve() for p in registration_files]
        self.registration_shared_secret = secrets.token_urlsafe(32)
        self.macaroon_secret_key = secrets.token_urlsafe(32)
        self.form_secret = secrets.token_urlsafe(32)
        self.config_path = self.workdir / "homeserver.yaml"
        self.log_config_path = self.workdir / "log_config.yaml"
        self.signing_key_path = self.workdir / "signing.key"
        self.stdout_path = self.workdir / "synapse.stdout.log"
        self._log_path = self.workdir / "homeserver.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._http = requests.Session()

    # -- properties -----------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self._port}"

    @property
    def server_name(self) -> str:
        return self._server_name

    @property
    def port(self) -> int:
        return self._port

    @property
    def log_path(self) -> Path:
        return self._log_path

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def user_id(self, localpart: str) -> str:
        return f"@{localpart}:{self._server_name}"

    def __repr__(self) -> str:
        return f"SynapseServer({self.url}, server_name={self._server_name!r})"

    # -- configuration --------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """The homeserver.yaml contents as a dict (written by :meth:`start`)."""
        config: dict[str, Any] = {
            "server_name": self._server_name,
            "public_baseurl": self.url + "/",
            "pid_file": str(self.workdir / "homeserver.pid"),
            "listeners": [
                {
                    "port": self._port,
                    "bind_addresses": [LOOPBACK],
                    "type": "http",
                    "tls": False,
                    "x_forwarded": False,
                    # openid: /_matrix/federation/v1/openid/userinfo, which the bridge
                    # asks about the OpenID tokens of provisioning requests.
                    "resources": [{"names": ["client", "openid"], "compress": False}],
                }
            ],
            "database": {
                "name": "sqlite3",
                "args": {"database": str(self.workdir / "homeserver.db")},
            },
            "log_config": str(self.log_config_path),
            "media_store_path": str(self.workdir / "media_store"),
            "signing_key_path": str(self.signing_key_path),
            "report_stats": False,
            # The default 12 rounds cost ~250 ms per registration or login.
            "bcrypt_rounds": 4,
            "enable_metrics": False,
            "enable_registration": True,
            "enable_registration_without_verification": True,
            "registration_shared_secret": self.registration_shared_secret,
            "macaroon_secret_key": self.macaroon_secret_key,
            "form_secret": self.form_secret,
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "enable_authenticated_media": True,
            "url_preview_enabled": False,
            "room_list_publication_rules": [{"action": "allow"}],
            "alias_creation_rules": [{"action": "allow"}],
            "app_service_config_files": [str(p) for p in self.registration_files],
        }
        config.update(_rate_limits())
        return config

    def _log_config(self) -> dict[str, Any]:
        # A plain FileHandler: Synapse's generated config buffers INFO lines for 5 s.
        return {
            "version": 1,
            "formatters": {
                "precise": {
                    "format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - "
                    "%(request)s - %(message)s"
                }
            },
            "handlers": {
                "file": {
                    "class": "logging.FileHandler",
                    "formatter": "precise",
                    "filename": str(self._log_path),
                    "encoding": "utf8",
                }
            },
            "loggers": {"synapse.storage.SQL": {"level": "INFO"}},
            "root": {"level": "INFO", "handlers": ["file"]},
            "disable_existing_loggers": False,
        }

    def _write_files(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.signing_key_path.exists():
            from signedjson.key import generate_signing_key, write_signing_keys

            key = generate_signing_key("a_" + secrets.token_hex(2))
            with open(self.signing_key_path, "w") as fh:
                write_signing_keys(fh, [key])
        self.log_config_path.write_text(yaml.safe_dump(self._log_config(), sort_keys=False))
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))

    # -- lifecycle ------------------------------------------------------------

    def start(self, timeout: float = 60) -> SynapseServer:
        """Write the config, start Synapse and wait until the client API answers."""
        if self.running:
            return self
        self._write_files()
        log.info("starting Synapse %s in %s", self.url, self.workdir)
        with open(self.stdout_path, "ab") as out:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "synapse.app.homeserver", "-c", str(self.config_path)],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        track(self._proc)
        proc = self._proc

        def ready() -> bool:
            if proc.poll() is not None:
                raise StartupError(
                    f"Synapse exited with code {proc.returncode} during startup\n"
                    + self._log_tail()
                )
            try:
                resp = self._http.get(self.url + "/_matrix/client/versions", timeout=1)
            except requests.RequestException:
                return False
            return resp.status_code == 200

        try:
            wait_until(ready, timeout, interval=0.02, what=f"Synapse on {self.url}")
        except TimeoutError as exc:
            self.stop()
            raise StartupError(
                f"Synapse did not answer on {self.url} within {timeout:g} s\n" + self._log_tail()
            ) from exc
        except StartupError:
            self.stop()
            raise
        log.info("Synapse %s is up (pid %d)", self.url, proc.pid)
        return self

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL."""
        proc, self._proc = self._proc, None
        if proc is not None:
            code = terminate(proc, timeout)
            log.info("Synapse %s stopped (exit code %s)", self.url, code)
        self._http.close()

    def kill(self) -> None:
        """SIGKILL at once (a crash, for fault tests)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        self.stop()

    def restart(self, timeout: float = 60) -> SynapseServer:
        """Stop and start again on the same port with the same data."""
        self.stop()
        return self.start(timeout)

    def __enter__(self) -> SynapseServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _log_tail(self, lines: int = 40) -> str:
        parts = []
        for path in (self.stdout_path, self._log_path):
            text = tail(path, lines)
            if text:
                parts.append(f"--- last lines of {path} ---\n{text}")
        return "\n".join(parts) or "(no log output)"

    # -- users ----------------------------------------------------------------

    def register_user(
        self, localpart: str, password: str | None = None, *, admin: bool = False
    ) -> MatrixClient:
        """Register ``localpart`` and return a logged-in :class:`MatrixClient`.

        Normal users go through open registration (the m.login.dummy UIA flow);
        ``admin=True`` uses the shared-secret admin API instead.
        """
        password = password if password is not None else "pw-" + localpart
        if admin:
            return self._register_admin(localpart, password)
        url = self.url + "/_matrix/client/v3/register"
        body: dict[str, Any] = {
            "username": localpart,
            "password": password,
            "initial_device_display_name": "devstack",
            "auth": {"type": "m.login.dummy"},
        }
        resp = self._http.post(url, json=body, timeout=30)
        if resp.status_code == 401:
            # User-interactive auth: repeat the dummy stage within the session.
            session = resp.json().get("session")
            body["auth"] = {"type": "m.login.dummy", "session": session}
            resp = self._http.post(url, json=body, timeout=30)
        if resp.status_code != 200:
            raise MatrixError("POST", "/_matrix/client/v3/register", resp.status_code, resp.text)
        data = resp.json()
        return MatrixClient(self.url, data["access_token"], data["user_id"])

    def _register_admin(self, localpart: str, password: str) -> MatrixClient:
        path = "/_synapse/admin/v1/register"
        resp = self._http.get(self.url + path, timeout=30)
        if resp.status_code != 200:
            raise MatrixError("GET", path, resp.status_code, resp.text)
        nonce = resp.json()["nonce"]
        # HMAC-SHA1 over nonce, user, password and "admin", NUL-separated.
        mac = hmac.new(
            self.registration_shared_secret.encode(),
            b"\x00".join(p.encode() for p in (nonce, localpart, password, "admin")),
            hashlib.sha1,
        )
        body = {
            "nonce": nonce,
            "username": localpart,
            "password": password,
            "admin": True,
            "mac": mac.hexdigest(),
        }
        resp = self._http.post(self.url + path, json=body, timeout=30)
        if resp.status_code != 200:
            raise MatrixError("POST", path, resp.status_code, resp.text)
        data = resp.json()
        return MatrixClient(self.url, data["access_token"], data["user_id"])

    def login(self, localpart: str, password: str | None = None) -> MatrixClient:
        """Log an existing user in with a password; return a new client."""
        password = password if password is not None else "pw-" + localpart
        path = "/_matrix/client/v3/login"
        body = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": localpart},
            "password": password,
        }
        resp = self._http.post(self.url + path, json=body, timeout=30)
        if resp.status_code != 200:
            raise MatrixError("POST", path, resp.status_code, resp.text)
        data = resp.json()
        return MatrixClient(self.url, data["access_token"], data["user_id"])
