"""A real IRC daemon on 127.0.0.1, for tests and ``ircbridge demo``.

The bridge must be tested against a real IRC server, with its real numerics,
its real flood control and its real way of dropping links. :class:`IrcDaemon`
runs one of four real servers -- Debian's ngircd (the default: a full RFC 2812
server), InspIRCd 3 with its IRCv3 modules and Atheme for SASL (see
:mod:`bridge.devstack.services`), ircd-hybrid (:mod:`bridge.devstack.hybrid`)
or Ergo, the IRCv3 reference server (:mod:`bridge.devstack.ergo`) -- and falls
back to miniircd (pure Python, from PyPI) when ngircd is not installed. Each
listens on a free loopback port, never on 6667 where a system ngircd may
already run, with a config of its own in ``workdir`` that lifts per-IP limits
and flood control (tests and puppets all connect from 127.0.0.1) and lets the
first joiner of a channel be its operator, as the tests expect.

``IRCBRIDGE_TEST_IRCD=ngircd|inspircd|hybrid|ergo`` picks the server of every
stack and daemon that does not name one (``IRCBRIDGE_IRCD`` is the older name).
Runs on the thread that starts it.
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

from bridge.devstack import ergo, hybrid, services
from bridge.devstack.certs import self_signed_certificate
from bridge.devstack.clients import IrcError, RawIrcClient
from bridge.devstack.nxdomain import NxdomainServer
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

KINDS = ("ngircd", "inspircd", "hybrid", "ergo", "miniircd")
# The real servers the tests are run on, one at a time (issue 14's four).
TEST_SERVERS = ("ngircd", "inspircd", "hybrid", "ergo")
TEST_KIND_ENV = "IRCBRIDGE_TEST_IRCD"
LEGACY_KIND_ENV = "IRCBRIDGE_IRCD"
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
    """IRCBRIDGE_TEST_IRCD (or IRCBRIDGE_IRCD) when set, else ngircd when installed,
    else miniircd."""
    return (os.environ.get(TEST_KIND_ENV) or os.environ.get(LEGACY_KIND_ENV)
            or ("ngircd" if ngircd_path() else "miniircd"))


def missing(kind: str) -> str | None:
    """Why ``kind`` cannot run here (what to install), or None when it can."""
    if kind == "ngircd" and not ngircd_path():
        return "ngircd is not installed (apt-get install -y ngircd)"
    if kind == "inspircd" and services.missing_binaries():
        names = " ".join(services.missing_binaries())
        return f"inspircd with atheme is not installed (apt-get install -y {names})"
    if kind == "hybrid" and not hybrid.hybrid_path():
        return ("ircd-hybrid is not installed (it conflicts with Debian's ngircd package: "
                "apt-get download ircd-hybrid, then dpkg-deb --fsys-tarfile it | tar -x -C / "
                "./usr/sbin/ircd-hybrid ./usr/lib/ircd-hybrid)")
    if kind == "ergo" and not ergo.ergo_path():
        return (f"no Ergo build at {ergo.ergo_folder() / 'ergo'} "
                f"(or set {ergo.ERGO_ENV} to an ergo binary with default.yaml beside it)")
    return None


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
        reason = missing(kind)
        if reason:
            raise ValueError(reason)
        if peers and kind != "ngircd":
            raise ValueError("linked servers (peers) are made with ngircd only")
        if tls and kind not in ("ngircd", "inspircd"):
            raise ValueError("a TLS port is made by ngircd and inspircd only")
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
        # ngircd and inspircd: a second port speaking TLS with a self-signed certificate.
        self.tls_port = free_port() if tls else None
        # inspircd: the server and its services (Atheme, for SASL), started as one.
        self._services: services.SaslIrcd | None = None
        if kind == "inspircd":
            self._services = services.SaslIrcd(
                self.workdir, port=self._port, tls=tls, server_name=server_name, ircv3=True,
                flood_control=flood_control, oper=(self.oper_name, self.oper_password))
            self.tls_port = self._services.tls_port
        # hybrid and ergo: what they read and write, in a folder made at start().
        self._nxdomain: NxdomainServer | None = None
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
        if self._services is not None:
            return self._services.running
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        if self._services is not None:
            return self._services.pid
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

    def _nobody_folder(self) -> Path:
        """A temp folder the daemon may write after dropping root for ``nobody`` (the
        test's own folder is root's, mode 0700); removed on stop() or at exit."""
        self._piddir = Path(tempfile.mkdtemp(prefix=f"ircbridge-{self._kind}-"))
        self._piddir_cleanup = weakref.finalize(
            self, shutil.rmtree, str(self._piddir), ignore_errors=True
        )
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(self._piddir, nobody.pw_uid, nobody.pw_gid)
        return self._piddir

    def _hybrid_command(self) -> list[str]:
        folder = self._nobody_folder()
        text = hybrid.hybrid_config(server_name=self.server_name, port=self._port,
                                    folder=folder, flood_control=self.flood_control,
                                    oper_name=self.oper_name,
                                    oper_password=self.oper_password)
        self.config_path.write_text(text)  # a copy to read; the daemon reads its own
        config = folder / "ircd.conf"
        config.write_text(text)
        nameserver = None
        if os.geteuid() == 0:
            self._nxdomain = NxdomainServer().start()
            nameserver = self._nxdomain.address
        command = hybrid.hybrid_command(config, folder, nameserver)
        if os.geteuid() == 0:
            for path in folder.iterdir():
                os.chown(path, pwd.getpwnam("nobody").pw_uid, -1)
        return command

    def _ergo_command(self) -> list[str]:
        folder = self.workdir / "ergo"
        if folder.exists():  # a restart: all IRC state is lost, as with the others
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        self.config_path.write_text(ergo.ergo_config(
            server_name=self.server_name, port=self._port, folder=folder,
            flood_control=self.flood_control, oper_name=self.oper_name,
            oper_password_hash=self._ergo_oper_hash()))
        ergo.ergo_initdb(self.config_path)
        return ergo.ergo_command(self.config_path)

    def _ergo_oper_hash(self) -> str | None:
        if not hasattr(self, "_oper_hash"):
            self._oper_hash = ergo.ergo_password_hash(self.oper_password)
        return self._oper_hash

    def _command(self) -> list[str]:
        if self._kind == "hybrid":
            return self._hybrid_command()
        if self._kind == "ergo":
            return self._ergo_command()
        if self._kind == "ngircd":
            self.workdir.joinpath("ngircd.conf.d").mkdir(parents=True, exist_ok=True)
            piddir = self._nobody_folder()
            self.config_path.write_text(self.ngircd_config(piddir / "ngircd.pid"))
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
        if self._services is not None:
            self._services.start(timeout)  # its own readiness poll: SASL offered
            log.info("%r is up (pid %s)", self, self.pid)
            return self
        try:
            cmd = self._command()
        except BaseException:
            self.stop()
            raise
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
            logs = self._log_tail()
            self.stop()
            raise StartupError(f"{self._kind} did not come up: {exc}\n" + logs) from exc
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
        if self._services is not None:
            self._services.stop(timeout)
        proc, self._proc = self._proc, None
        if proc is not None:
            code = terminate(proc, timeout)
            log.info("%s on port %d stopped (exit code %s)", self._kind, self._port, code)
        if self._nxdomain is not None:
            self._nxdomain.stop()
            self._nxdomain = None
        if self._piddir_cleanup is not None:
            self._piddir_cleanup()
            self._piddir_cleanup = None
        self._piddir = None

    def kill(self) -> None:
        """SIGKILL at once (a crash, for fault tests)."""
        if self._services is not None:
            self._services.kill()
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
        paths = [self._log_path]
        if self._kind == "hybrid" and self._piddir is not None:
            paths += [self._piddir / "debug.log", self._piddir / "user.log"]
        parts = [f"--- last lines of {path} ---\n{text}" for path in paths
                 if (text := tail(path, lines))]
        return "\n".join(parts) or "(no log output)"

    # -- helpers --------------------------------------------------------------

    def client(self, nick: str, timeout: float = 10) -> RawIrcClient:
        """A connected, registered :class:`RawIrcClient` (username: the nick, except on
        ircd-hybrid, which refuses ``[]`` and such there: its letters and digits)."""
        username = None
        if self._kind == "hybrid":
            username = "".join(c for c in nick if c.isascii() and c.isalnum())[:10] or "user"
        return RawIrcClient().connect(self.host, self._port, nick, timeout=timeout,
                                      username=username)
