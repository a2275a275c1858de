"""A real IRC daemon on 127.0.0.1, for tests and ``ircbridge demo``.

The bridge must be tested against a real IRC server, with its real numerics,
its real flood control and its real way of dropping links. :class:`IrcDaemon`
runs Debian's ngircd when it is installed (a full RFC 2812 server) and falls
back to miniircd (pure Python, from PyPI) otherwise. Either listens on a free
loopback port, never on 6667 where a system ngircd may already run.
"""

from __future__ import annotations

import logging
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from bridge.devstack.clients import IrcError, RawIrcClient
from bridge.devstack.ports import (
    LOOPBACK,
    StartupError,
    free_port,
    port_open,
    tail,
    terminate,
    track,
    wait_until,
)

log = logging.getLogger(__name__)

KINDS = ("ngircd", "miniircd")
NGIRCD_FALLBACK_PATH = Path("/usr/sbin/ngircd")


def ngircd_path() -> str | None:
    """Where the ngircd binary is, or None when it is not installed."""
    found = shutil.which("ngircd")
    if found:
        return found
    if NGIRCD_FALLBACK_PATH.exists():
        return str(NGIRCD_FALLBACK_PATH)
    return None


def default_kind() -> str:
    """IRCBRIDGE_IRCD when set, else ngircd when installed, else miniircd."""
    return os.environ.get("IRCBRIDGE_IRCD") or ("ngircd" if ngircd_path() else "miniircd")


@dataclass(frozen=True)
class ServerPeer:
    """Another ngircd linked to this one; `port` set: this side connects to it."""

    name: str
    password: str
    port: int | None = None


class IrcDaemon:
    """One IRC server process with its config and log in ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        server_name: str = "irc.localhost",
        flood_control: bool = False,
        kind: str | None = None,
        tls: bool = False,
        peers: tuple[ServerPeer, ...] = (),
    ) -> None:
        kind = kind or default_kind()
        if kind not in KINDS:
            raise ValueError(f"unknown IRC daemon kind {kind!r}; expected one of {KINDS}")
        if kind == "ngircd" and not ngircd_path():
            raise ValueError("ngircd is not installed (apt-get install ngircd)")
        if kind == "miniircd" and flood_control:
            log.warning("miniircd has no flood control; flood_control=True has no effect")
        self.workdir = Path(workdir).resolve()
        self._kind = kind
        self._port = port or free_port()
        self.server_name = server_name
        self.flood_control = flood_control
        # An IRC operator (ngircd only), e.g. to KILL a bridge's connection in fault tests.
        self.oper_name = "devstack"
        self.oper_password = secrets.token_hex(8)
        # ngircd only: a second port speaking TLS with a self-signed certificate.
        self.tls_port = free_port() if tls else None
        # ngircd only: servers linked to this one (a second server makes real netsplits).
        self.peers = peers
        self.config_path = self.workdir / f"{kind}.conf"
        self._log_path = self.workdir / f"{kind}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._piddir: Path | None = None
        self._piddir_cleanup: weakref.finalize | None = None

    # -- properties -----------------------------------------------------------

    @property
    def host(self) -> str:
        return LOOPBACK

    @property
    def port(self) -> int:
        return self._port

    @property
    def kind(self) -> str:
        return self._kind

    @property
    def log_path(self) -> Path:
        return self._log_path

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def __repr__(self) -> str:
        return f"IrcDaemon({self._kind} on {self.host}:{self._port})"

    # -- ngircd configuration -------------------------------------------------

    def ngircd_config(self, pid_file: Path) -> str:
        """The ngircd.conf text. Limits that bite tests are lifted; flood
        control (the penalty system) stays only when ``flood_control``."""
        include_dir = self.workdir / "ngircd.conf.d"
        lines = [
            "[Global]",
            f"\tName = {self.server_name}",
            "\tInfo = ircbridge devstack IRC server",
            "\tAdminInfo1 = ircbridge devstack",
            "\tAdminInfo2 = loopback only",
            "\tAdminEMail = root@localhost",
            f"\tListen = {LOOPBACK}",
            f"\tPorts = {self._port}",
            # Written after ngircd dropped root for 'nobody': the folder must be
            # writable by that user (ServerUID = root is refused).
            f"\tPidFile = {pid_file}",
            "\tMotdPhrase = ircbridge devstack IRC server",
            "[Limits]",
            "\tMaxConnectionsIP = 0",
            "\tMaxNickLength = 30",
            "\tMaxJoins = 0",
            "\tMaxListSize = 10000",
        ]
        if not self.flood_control:
            # 0 disables the penalty system ("not recommended" warning in the log).
            lines.append("\tMaxPenaltyTime = 0")
        lines += [
            "[Options]",
            "\tDNS = no",
            "\tIdent = no",
            "\tPAM = no",
            # Keep the system's /etc/ngircd/ngircd.conf.d out of this instance.
            f"\tIncludeDir = {include_dir}",
            "\tOperCanUseMode = yes",
        ]
        if self.tls_port:
            cert, key = self_signed_certificate(self.workdir, self.server_name)
            lines += ["[SSL]", f"\tCertFile = {cert}", f"\tKeyFile = {key}",
                      f"\tPorts = {self.tls_port}"]
        for peer in self.peers:
            lines += ["[Server]", f"\tName = {peer.name}", f"\tMyPassword = {peer.password}",
                      f"\tPeerPassword = {peer.password}"]
            if peer.port:  # this side connects to it
                lines += [f"\tHost = {LOOPBACK}", f"\tPort = {peer.port}"]
        lines += [
            "[Operator]",
            f"\tName = {self.oper_name}",
            f"\tPassword = {self.oper_password}",
            "",
        ]
        return "\n".join(lines)

    def _command(self) -> list[str]:
        if self._kind == "ngircd":
            self.workdir.joinpath("ngircd.conf.d").mkdir(parents=True, exist_ok=True)
            self._piddir = Path(tempfile.mkdtemp(prefix="ircbridge-ngircd-"))
            # Removed on stop(), or at interpreter exit at the latest.
            self._piddir_cleanup = weakref.finalize(
                self, shutil.rmtree, str(self._piddir), ignore_errors=True
            )
            if os.geteuid() == 0:
                nobody = pwd.getpwnam("nobody")
                os.chown(self._piddir, nobody.pw_uid, nobody.pw_gid)
            self.config_path.write_text(self.ngircd_config(self._piddir / "ngircd.pid"))
            binary = ngircd_path()
            assert binary is not None
            passive = [] if any(p.port for p in self.peers) else ["--passive"]
            return [binary, "--nodaemon", *passive, "--config", str(self.config_path)]
        cmd = [
            sys.executable,
            "-m",
            "miniircd",
            "--listen",
            LOOPBACK,
            "--ports",
            str(self._port),
            "--verbose",
        ]
        if os.geteuid() == 0:
            # miniircd refuses to run as root without an explicit --setuid.
            cmd += ["--setuid", "nobody"]
        return cmd

    # -- lifecycle ------------------------------------------------------------

    def start(self, timeout: float = 20) -> IrcDaemon:
        """Start the daemon and wait until it accepts and registers a client."""
        if self.running:
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = self._command()
        log.info("starting %s on %s:%d", self._kind, self.host, self._port)
        with open(self._log_path, "ab") as out:
            self._proc = subprocess.Popen(
                cmd,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        track(self._proc)
        proc = self._proc

        def alive_and(check: bool) -> bool:
            if proc.poll() is not None:
                raise StartupError(
                    f"{self._kind} exited with code {proc.returncode} during startup\n"
                    + self._log_tail()
                )
            return check

        try:
            wait_until(
                lambda: alive_and(port_open(self.host, self._port)),
                timeout,
                interval=0.02,
                what=f"{self._kind} to listen on {self.host}:{self._port}",
            )
            self._probe(timeout)
        except (TimeoutError, OSError, IrcError) as exc:
            self.stop()
            raise StartupError(f"{self._kind} did not come up: {exc}\n" + self._log_tail()) from exc
        except StartupError:
            self.stop()
            raise
        log.info("%s is up on %s:%d (pid %d)", self._kind, self.host, self._port, proc.pid)
        return self

    def _probe(self, timeout: float) -> None:
        """Register a throw-away client (NICK/USER -> 001), then QUIT."""
        client = RawIrcClient()
        try:
            client.connect(self.host, self._port, "probe" + secrets.token_hex(2), timeout=timeout)
            client.quit("devstack probe", timeout=2)
        finally:
            client.close()

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL."""
        proc, self._proc = self._proc, None
        if proc is not None:
            code = terminate(proc, timeout)
            log.info("%s on port %d stopped (exit code %s)", self._kind, self._port, code)
        if self._piddir_cleanup is not None:
            self._piddir_cleanup()
            self._piddir_cleanup = None
        self._piddir = None

    def kill(self) -> None:
        """SIGKILL at once (a crash, for fault tests)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        self.stop()

    def restart(self, timeout: float = 20) -> IrcDaemon:
        """Stop and start again on the same port (all IRC state is lost)."""
        self.stop()
        return self.start(timeout)

    def __enter__(self) -> IrcDaemon:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _log_tail(self, lines: int = 40) -> str:
        text = tail(self._log_path, lines)
        return f"--- last lines of {self._log_path} ---\n{text}" if text else "(no log output)"

    # -- helpers --------------------------------------------------------------

    def client(self, nick: str, timeout: float = 10) -> RawIrcClient:
        """A connected, registered :class:`RawIrcClient`."""
        return RawIrcClient().connect(self.host, self._port, nick, timeout=timeout)


def self_signed_certificate(folder: Path, hostname: str) -> tuple[Path, Path]:
    """A throwaway certificate for a TLS test server (cryptography ships with Synapse)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "tls.crt", folder / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path
