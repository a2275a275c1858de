"""A real IRC network with services on 127.0.0.1: InspIRCd linked to Atheme.

SASL (PLAIN and EXTERNAL), NickServ accounts and certificate fingerprints need an IRC
server *and* a services package; ngircd and miniircd do neither. :class:`SaslIrcd` runs
Debian's ``inspircd`` (3.x) with the sasl/services_account/spanningtree modules and a
self-signed TLS port, and links Debian's ``atheme-services`` (7.2, protocol module
``inspircd``) to it over loopback. Both are configured entirely from files in ``workdir``
(no system config, no system service) and run in the foreground, so they die with their
process group. Install both with ``apt-get install -y inspircd atheme-services``.

Thread: the test's or the demo's main thread; the daemons are child processes.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import subprocess
from pathlib import Path
from types import TracebackType

from bridge.devstack.certs import self_signed_certificate
from bridge.devstack.clients import IrcError, IrcMessage, RawIrcClient
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
from bridge.irc import tls as irc_tls

log = logging.getLogger(__name__)

INSPIRCD_FALLBACK_PATH = Path("/usr/sbin/inspircd")
ATHEME_FALLBACK_PATH = Path("/usr/bin/atheme-services")
SERVICES_NAME = "services.int"
INSPIRCD_MODULES = Path("/usr/lib/inspircd/modules")
# IRCv3 and what goes with it; ircv3_sts stays out (no TLS redirect for tests).
IRCV3_MODULES = (
    "ircv3", "ircv3_accounttag", "ircv3_batch", "ircv3_capnotify", "ircv3_chghost",
    "ircv3_ctctags", "ircv3_echomessage", "ircv3_invitenotify", "ircv3_labeledresponse",
    "ircv3_msgid", "ircv3_servertime", "chanhistory", "namesx", "uhnames", "monitor",
    "setname",
)


def inspircd_path() -> str | None:
    """Where the inspircd binary is, or None when it is not installed."""
    found = shutil.which("inspircd")
    if found:
        return found
    return str(INSPIRCD_FALLBACK_PATH) if INSPIRCD_FALLBACK_PATH.exists() else None


def atheme_path() -> str | None:
    """Where the atheme-services binary is, or None when it is not installed."""
    found = shutil.which("atheme-services")
    if found:
        return found
    return str(ATHEME_FALLBACK_PATH) if ATHEME_FALLBACK_PATH.exists() else None


def available_modules(names: tuple[str, ...]) -> list[str]:
    """Those of ``names`` whose ``m_NAME.so`` the installed InspIRCd has."""
    return [n for n in names if (INSPIRCD_MODULES / f"m_{n}.so").exists()]


def missing_binaries() -> list[str]:
    """The Debian packages still to install before a :class:`SaslIrcd` can run."""
    missing = []
    if inspircd_path() is None:
        missing.append("inspircd")
    if atheme_path() is None:
        missing.append("atheme-services")
    return missing


class TlsRawIrcClient(RawIrcClient):
    """:class:`RawIrcClient` over TLS, optionally with a client certificate (CertFP)."""

    def connect_tls(
        self,
        host: str,
        port: int,
        nick: str,
        timeout: float = 10,
        *,
        cert_pem: str | None = None,
        key_pem: str | None = None,
    ) -> TlsRawIrcClient:
        """Connect with TLS (the server's certificate is not checked), register, wait for 001."""
        pair = (cert_pem, key_pem) if cert_pem and key_pem else None
        self.sock = irc_tls.connect(host, port, tls=True, verify=False, timeout=timeout,
                                    client_cert=pair)
        self.host, self.port, self.nick = host, port, nick
        self.closed = False
        self.send(f"NICK {nick}")
        self.send(f"USER {nick} 0 * :{nick}")
        msg = self.wait_for(lambda m: m.command in {"001", "ERROR", "433", "432"},
                            timeout=timeout)
        if msg.command != "001":
            self.close()
            raise IrcError(f"TLS registration as {nick!r} failed: {msg.raw}")
        self.nick = msg.params[0] if msg.params else nick
        return self

    def _read(self, timeout: float) -> bool:
        # A non-blocking TLS socket raises SSLWantReadError (an OSError) when nothing is
        # there, which the plain client would take for a dead link: never read with 0 s.
        return super()._read(max(timeout, 0.01))


class SaslIrcd:
    """InspIRCd plus Atheme (NickServ, SaslServ) on loopback, config and data in ``workdir``.

    ``port`` is plain text, ``tls_port`` (when ``tls``) speaks TLS with a self-signed
    certificate and asks for client certificates (for CertFP / SASL EXTERNAL). With
    ``server_password`` there is one more plain port, ``password_port``, whose connect
    class only admits clients that send that server password (PASS).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        tls: bool = True,
        server_password: str | None = None,
        server_name: str = "irc.localhost",
        ircv3: bool = False,
        flood_control: bool = False,
        oper: tuple[str, str] | None = None,
    ) -> None:
        """``ircv3``: load the IRCv3 modules as well (:data:`IRCV3_MODULES`, those present);
        ``flood_control``: keep InspIRCd's fakelag; ``oper``: an operator (name, password)."""
        missing = missing_binaries()
        if missing:
            raise ValueError(f"not installed: {', '.join(missing)} "
                             f"(apt-get install -y {' '.join(missing)})")
        self.workdir = Path(workdir).resolve()
        self.server_name = server_name
        self._port = port or free_port()
        self.tls_port = free_port() if tls else None
        self.server_password = server_password
        self.password_port = free_port() if server_password else None
        self.link_port = free_port()
        self._link_password = secrets.token_hex(12)
        self.ircv3 = ircv3
        self.flood_control = flood_control
        self.oper = oper
        self.inspircd_config_path = self.workdir / "inspircd.conf"
        self.atheme_config_path = self.workdir / "atheme" / "atheme.conf"
        self.inspircd_log_path = self.workdir / "inspircd.log"
        self.atheme_log_path = self.workdir / "atheme" / "atheme.log"
        self._inspircd: subprocess.Popen[bytes] | None = None
        self._atheme: subprocess.Popen[bytes] | None = None
        self._whois_client: RawIrcClient | None = None

    # -- properties -----------------------------------------------------------

    @property
    def host(self) -> str:
        return LOOPBACK

    @property
    def port(self) -> int:
        return self._port

    @property
    def running(self) -> bool:
        return all(p is not None and p.poll() is None for p in (self._inspircd, self._atheme))

    @property
    def pid(self) -> int | None:
        """The inspircd process's id (its ``/bin/sh`` wrapper execs it in place)."""
        return self._inspircd.pid if self._inspircd is not None else None

    def __repr__(self) -> str:
        return f"SaslIrcd(inspircd+atheme on {self.host}:{self._port}, tls {self.tls_port})"

    # -- configuration ----------------------------------------------------------

    def inspircd_config(self) -> str:
        """inspircd.conf: SASL towards the services, generous limits, no DNS/ident lookups."""
        w = self.workdir
        lines = [
            f'<server name="{self.server_name}" description="ircbridge devstack" '
            f'network="devstack" id="001">',
            '<admin name="devstack" nick="devstack" email="root@localhost">',
            f'<bind address="{LOOPBACK}" port="{self._port}" type="clients">',
            f'<bind address="{LOOPBACK}" port="{self.link_port}" type="servers">',
        ]
        client_ports = [str(self._port)]
        if self.tls_port:
            cert, key = self_signed_certificate(w, self.server_name)
            lines += [
                '<module name="ssl_gnutls">',
                # requestclientcert: CertFP; sha256 is what NickServ CERT stores.
                f'<sslprofile name="devstack" provider="gnutls" certfile="{cert}" '
                f'keyfile="{key}" hash="sha256" requestclientcert="yes" dhfile="">',
                f'<bind address="{LOOPBACK}" port="{self.tls_port}" type="clients" '
                'sslprofile="devstack">',
            ]
            client_ports.append(str(self.tls_port))
        # Without flood control or per-IP limits: tests open many connections from 127.0.0.1.
        flood = ('fakelag="yes"' if self.flood_control else
                 'fakelag="no" commandrate="100000000" threshold="100000000"')
        limits = ('allow="*" maxchans="1000" localmax="100000" globalmax="100000" '
                  f'limit="100000" maxconnwarn="no" {flood} recvq="1M" softsendq="1M" '
                  'hardsendq="4M" resolvehostnames="no" useident="no" pingfreq="120" '
                  'timeout="30"')
        if self.password_port:
            lines.append(f'<bind address="{LOOPBACK}" port="{self.password_port}" '
                         'type="clients">')
            # A wrong or missing PASS matches no class: "Access denied by configuration".
            lines.append(f'<connect name="password" port="{self.password_port}" '
                         f'password="{self.server_password}" hash="plaintext" {limits}>')
        lines += [
            f'<connect name="main" port="{",".join(client_ports)}" {limits}>',
            f'<pid file="{w / "inspircd.pid"}">',
            f'<log method="file" type="* -USERINPUT -USEROUTPUT" level="default" '
            f'target="{self.inspircd_log_path}">',
            f'<files motd="{w / "inspircd.motd"}">',
            '<limits maxnick="30">',
            '<module name="cap">',
            '<module name="spanningtree">',
            '<module name="services_account">',
            '<module name="sasl">',
            '<module name="sslinfo">',
            '<module name="svshold">',
            '<module name="chghost">',
            '<module name="cban">',
            f'<sasl target="{SERVICES_NAME}" requiressl="no">',
            f'<link name="{SERVICES_NAME}" ipaddr="{LOOPBACK}" port="{self.link_port}" '
            f'allowmask="127.0.0.0/8" sendpass="{self._link_password}" '
            f'recvpass="{self._link_password}">',
            f'<uline server="{SERVICES_NAME}" silent="yes">',
        ]
        if self.ircv3:
            lines += [f'<module name="{name}">' for name in available_modules(IRCV3_MODULES)]
            # History is replayed on join only in channels with mode +H (none by default).
            lines.append('<chanhistory maxlines="100" notice="no" bots="yes">')
        if self.oper:
            name, password = self.oper
            lines += ['<class name="devstack" commands="*" privs="*" usermodes="*" '
                      'chanmodes="*">',
                      '<type name="devstack" classes="devstack">',
                      f'<oper name="{name}" password="{password}" host="*@*" '
                      'type="devstack">']
        lines.append("")
        return "\n".join(lines)

    def atheme_config(self) -> str:
        """atheme.conf: NickServ (REGISTER, IDENTIFY, CERT) and SaslServ (PLAIN, EXTERNAL)."""
        modules = [
            "protocol/inspircd", "backend/opensex", "crypto/pbkdf2v2",
            "nickserv/main", "nickserv/help", "nickserv/register", "nickserv/identify",
            "nickserv/logout", "nickserv/info", "nickserv/cert", "nickserv/status",
            "saslserv/main", "saslserv/plain", "saslserv/external",
        ]
        load = "\n".join(f'loadmodule "modules/{m}";' for m in modules)
        return f"""{load}

serverinfo {{
	name = "{SERVICES_NAME}";
	desc = "ircbridge devstack services";
	numeric = "00A";
	recontime = 1;
	netname = "devstack";
	hidehostsuffix = "users.devstack";
	adminname = "devstack";
	adminemail = "root@localhost";
	registeremail = "noreply@localhost";
	mta = "/bin/true";
	loglevel = {{ all; }};
	maxlogins = 1000;
	maxusers = 1000;
	mdlimit = 30;
	emaillimit = 10;
	emailtime = 300;
	auth = none;
	casemapping = rfc1459;
}};

uplink "{self.server_name}" {{
	host = "{LOOPBACK}";
	password = "{self._link_password}";
	port = {self.link_port};
}};

nickserv {{
	nick = "NickServ";
	user = "NickServ";
	host = "{SERVICES_NAME}";
	real = "Nickname Services";
	maxnicks = 5;
	expire = 0;
}};

saslserv {{
	nick = "SaslServ";
	user = "SaslServ";
	host = "{SERVICES_NAME}";
	real = "SASL Authentication Agent";
}};

general {{
	flood_msgs = 0;
	flood_time = 10;
	ratelimit_uses = 0;
	ratelimit_period = 60;
	kline_time = 7;
	commit_interval = 5;
	default_clone_allowed = 100000;
	default_clone_warn = 100000;
	uplink_sendq_limit = 1048576;
	language = "en";
	immune_level = immune;
}};
"""

    # -- lifecycle ------------------------------------------------------------

    def start(self, timeout: float = 30) -> SaslIrcd:
        """Start inspircd, then atheme, and wait until SASL is offered to clients."""
        if self.running:
            return self
        (self.workdir / "atheme").mkdir(parents=True, exist_ok=True)
        self.inspircd_config_path.write_text(self.inspircd_config())
        (self.workdir / "inspircd.motd").write_text("ircbridge devstack (inspircd + atheme)\n")
        self.atheme_config_path.write_text(self.atheme_config())
        try:
            self._inspircd = self._spawn(self._inspircd_command(), self.workdir / "inspircd.out")
            wait_until(
                lambda: self._alive(port_open(self.host, self._port)),
                timeout, interval=0.02, what=f"inspircd to listen on {self.host}:{self._port}",
            )
            self._atheme = self._spawn(self._atheme_command(),
                                       self.workdir / "atheme" / "atheme.out")
            wait_until(self._sasl_offered, timeout, interval=0.1,
                       what="atheme to link and offer SASL PLAIN and EXTERNAL")
        except (TimeoutError, OSError, IrcError) as exc:
            self.stop()
            raise StartupError(f"inspircd+atheme did not come up: {exc}\n"
                               + self._log_tails()) from exc
        except StartupError:
            self.stop()
            raise
        log.info("%r is up", self)
        return self

    def _inspircd_command(self) -> list[str]:
        binary = inspircd_path()
        assert binary is not None
        cmd = [binary, "--config", str(self.inspircd_config_path), "--nofork"]
        if os.geteuid() == 0:
            cmd.append("--runasroot")  # it refuses root otherwise; tests run in containers
        return cmd

    def _atheme_command(self) -> list[str]:
        binary = atheme_path()
        assert binary is not None
        data = self.workdir / "atheme"
        # -n: stay in the foreground (its process group is ours to end); -D: the database.
        return [binary, "-n", "-c", str(self.atheme_config_path), "-D", str(data),
                "-l", str(self.atheme_log_path), "-p", str(data / "atheme.pid")]

    def _spawn(self, cmd: list[str], out_path: Path) -> subprocess.Popen[bytes]:
        log.info("starting %s", " ".join(cmd))
        # A crash must not leave a core file (megabytes) in the test's folder.
        wrapped = ["/bin/sh", "-c", 'ulimit -c 0 && exec "$@"', "devstack", *cmd]
        with open(out_path, "ab") as out:
            proc = subprocess.Popen(
                wrapped, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        track(proc)
        return proc

    def _alive(self, check: bool) -> bool:
        for name, proc in (("inspircd", self._inspircd), ("atheme", self._atheme)):
            if proc is not None and proc.poll() is not None:
                raise StartupError(f"{name} exited with code {proc.returncode} during "
                                   f"startup\n" + self._log_tails())
        return check

    def _sasl_offered(self) -> bool:
        """True once inspircd advertises ``sasl=...EXTERNAL...`` (atheme linked and burst)."""
        self._alive(True)
        lines: list[str] = []
        try:
            with RawIrcClient() as client:
                client.connect(self.host, self._port, "probe" + secrets.token_hex(3),
                               timeout=5)
                client.send("CAP LS 302")
                while True:
                    msg = client.wait_for(lambda m: m.command == "CAP", timeout=5)
                    lines += msg.text.split()
                    if len(msg.params) < 4 or msg.params[2] != "*":
                        break  # the last line of a CAP 302 multi-line LS
                client.quit("devstack probe", timeout=2)
        except (OSError, IrcError) as exc:  # TimeoutError and ConnectionError included
            log.debug("SASL probe: %s", exc)
            return False
        mechanisms = next((c.split("=", 1)[1] for c in lines if c.startswith("sasl=")), "")
        return "PLAIN" in mechanisms.split(",") and "EXTERNAL" in mechanisms.split(",")

    def stop(self, timeout: float = 15) -> None:
        """Atheme first (SIGTERM: it saves its database), then inspircd (SIGKILL).

        Debian's inspircd 3.15 with ssl_gnutls loaded segfaults while unloading its modules
        after SIGTERM (exit -11 and a core file, measured here); it keeps no state worth a
        clean exit, so it is killed outright.
        """
        self._close_whois_client()
        atheme, self._atheme = self._atheme, None
        if atheme is not None:
            log.info("atheme stopped (exit code %s)", terminate(atheme, timeout))
        inspircd, self._inspircd = self._inspircd, None
        if inspircd is not None:
            if inspircd.poll() is None:
                inspircd.kill()
                inspircd.wait(timeout=10)
            log.info("inspircd stopped (exit code %s)", terminate(inspircd, timeout))

    def kill(self) -> None:
        """SIGKILL both at once (a crash, for fault tests)."""
        for proc in (self._atheme, self._inspircd):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        self.stop()

    def __enter__(self) -> SaslIrcd:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _log_tails(self, lines: int = 30) -> str:
        parts = []
        for path in (self.workdir / "inspircd.out", self.inspircd_log_path,
                     self.workdir / "atheme" / "atheme.out"):
            text = tail(path, lines)
            if text:
                parts.append(f"--- last lines of {path} ---\n{text}")
        return "\n".join(parts) or "(no log output)"

    # -- helpers --------------------------------------------------------------

    def client(self, nick: str, timeout: float = 10) -> RawIrcClient:
        """A connected, registered plain-text :class:`RawIrcClient`."""
        return RawIrcClient().connect(self.host, self._port, nick, timeout=timeout)

    def _services_reply(self, client: RawIrcClient, service: str, command: str,
                        done: tuple[str, ...], timeout: float, what: str) -> IrcMessage:
        """Send ``command`` to a service; return its first NOTICE containing one of ``done``.

        Raises IrcError naming ``what`` (never the command: it may hold a password) with
        the service's answers when it never says any of them.
        """
        start = len(client.history)
        client.privmsg(service, command)
        try:
            return client.wait_for(
                lambda m: (m.command == "NOTICE" and (m.nick or "").lower() == service.lower()
                           and any(d.lower() in m.text.lower() for d in done)),
                timeout=timeout, start=start,
            )
        except TimeoutError as exc:
            said = [m.text for m in client.history[start:]
                    if m.command == "NOTICE" and (m.nick or "").lower() == service.lower()]
            raise IrcError(f"{service} {what} failed: {' / '.join(said) or exc}") from exc

    def register_account(self, name: str, password: str, timeout: float = 10) -> None:
        """Register the NickServ account ``name`` (connecting as that nick), then leave."""
        with self.client(name, timeout) as client:
            self._services_reply(client, "NickServ",
                                 f"REGISTER {password} {name.lower()}@example.com",
                                 ("is now registered",), timeout, "REGISTER")
            client.quit("registered", timeout=2)

    def add_certfp(self, account: str, password: str, cert_pem: str, key_pem: str,
                   timeout: float = 10) -> str:
        """Add the fingerprint of a client certificate to ``account``; return the fingerprint.

        Connects over TLS with that certificate, IDENTIFYs and sends ``NickServ CERT ADD``.
        """
        if self.tls_port is None:
            raise ValueError("add_certfp needs the TLS port (SaslIrcd(..., tls=True))")
        client = TlsRawIrcClient()
        try:
            client.connect_tls(self.host, self.tls_port, "cert" + secrets.token_hex(4),
                               timeout, cert_pem=cert_pem, key_pem=key_pem)
            self._services_reply(client, "NickServ", f"IDENTIFY {account} {password}",
                                 ("You are now identified",), timeout, "IDENTIFY")
            reply = self._services_reply(client, "NickServ", "CERT ADD",
                                         ("Added fingerprint", "already on your"), timeout,
                                         "CERT ADD")
            client.quit("certificate added", timeout=2)
        finally:
            client.close()
        words = reply.text.replace("\x02", "").split()
        return next((w for w in words if len(w) >= 32 and all(
            c in "0123456789abcdef" for c in w.lower())), "")

    def logged_in_account(self, nick: str, timeout: float = 10) -> str | None:
        """The services account ``nick`` is logged in to (WHOIS 330), or None.

        Asks through one kept-open client: inspircd completes a registration only on its
        once-a-second background tick, so a fresh client per question costs a second.
        """
        for attempt in (1, 2):
            client = self._whois_client
            try:
                if client is None or client.closed:
                    client = self._whois_client = self.client(
                        "whois" + secrets.token_hex(3), timeout)
                start = len(client.history)
                client.send(f"WHOIS {nick}")
                client.wait_for(lambda m: m.command in {"318", "401"}, timeout=timeout,
                                start=start)
            except (OSError, ConnectionError):
                self._close_whois_client()
                if attempt == 2:
                    raise
                continue
            accounts = [m.params[2] for m in client.history[start:]
                        if m.command == "330" and len(m.params) >= 3]
            return accounts[0] if accounts else None
        return None

    def _close_whois_client(self) -> None:
        client, self._whois_client = self._whois_client, None
        if client is not None:
            client.close()
