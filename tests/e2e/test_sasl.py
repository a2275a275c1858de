"""Logging in on IRC: SASL PLAIN/EXTERNAL, server PASS and autocmds, against real services.

The login code (CAP negotiation, AUTHENTICATE, 903/904, PASS, autocmds) can only be trusted
against a real server and real services, so every test drives the real IRC side against
InspIRCd linked to Atheme (:class:`SaslIrcd`) and asks the server with WHOIS (330) which
account the puppet really ended up logged in to. One server serves the whole module.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bridge.config.ini import NetworkConfig
from bridge.devstack.ircd import self_signed_certificate
from bridge.devstack.ports import wait_until
from bridge.devstack.services import SaslIrcd, missing_binaries
from bridge.irc import IrcSide
from bridge.irc.connection import IrcConnection, State
from tests.irc_listener import RecordingListener
from tests.irc_side import network

log = logging.getLogger(__name__)

if missing_binaries():
    pytest.skip(
        f"real SASL needs Debian's {' and '.join(missing_binaries())} "
        f"(apt-get install -y inspircd atheme-services)",
        allow_module_level=True,
    )

ACCOUNT = "alice"
PASSWORD = "correct-horse-7"
SERVER_PASSWORD = "let-me-in-42"


Listener = RecordingListener


@dataclass
class Services:
    server: SaslIrcd
    cert_pem: str
    key_pem: str
    stranger_cert_pem: str
    stranger_key_pem: str


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """One InspIRCd+Atheme for the module, with the account and its certificate set up."""
    workdir = tmp_path_factory.mktemp("sasl-ircd")
    server = SaslIrcd(workdir, tls=True, server_password=SERVER_PASSWORD)
    server.start()
    try:
        certs = workdir / "client-cert"
        certs.mkdir()
        cert, key = self_signed_certificate(certs, ACCOUNT)
        cert_pem, key_pem = cert.read_text(), key.read_text()
        stranger = workdir / "stranger-cert"
        stranger.mkdir()
        other_cert, other_key = self_signed_certificate(stranger, "stranger")
        server.register_account(ACCOUNT, PASSWORD)
        fingerprint = server.add_certfp(ACCOUNT, PASSWORD, cert_pem, key_pem)
        log.info("certificate %s added to %s", fingerprint, ACCOUNT)
        yield Services(server, cert_pem, key_pem, other_cert.read_text(),
                       other_key.read_text())
    finally:
        server.stop()




@contextmanager
def puppet_with(config: NetworkConfig, user_id: str,
                settings: dict[str, Any]) -> Iterator[tuple[IrcSide, IrcConnection, Listener]]:
    """A started IrcSide (no bot) whose only connection is ``user_id``'s puppet, made with
    ``settings`` as the user's stored login settings."""
    listener = Listener()
    side = IrcSide((config,), listener, lambda n: n.bot_nick)
    side.start([])  # the IRC thread only: the bot is not what is tested here
    try:
        net = side.network("t")
        assert net is not None
        net.settings_for = lambda network_name, user: dict(settings)
        conn = side.call_sync(net.puppet, user_id)
        yield side, conn, listener
    finally:
        side.stop()


def wait_connected(side: IrcSide, conn: IrcConnection, listener: Listener,
                   timeout: float = 15) -> str:
    """Wait until the puppet got 001; return its nick (fails early on a lost connection)."""
    def connected() -> str | None:
        lost = listener.connection_events("lost")
        assert not lost, f"the connection was lost: {lost}"
        return side.call_sync(lambda: conn.nick if conn.state is State.CONNECTED else None)

    return wait_until(connected, timeout, what=f"{conn} to register")


def test_sasl_plain_with_the_right_password_logs_in(services: Services) -> None:
    config = network(services.server.port)
    settings = {"password": PASSWORD, "password_kind": "sasl", "sasl_username": ACCOUNT}
    with puppet_with(config, "@plain:localhost", settings) as (side, conn, listener):
        nick = wait_connected(side, conn, listener)
        assert services.server.logged_in_account(nick) == ACCOUNT
        assert listener.connection_events("sasl_failed") == []


def test_sasl_plain_with_a_wrong_password_reports_and_still_connects(
    services: Services,
) -> None:
    config = network(services.server.port)
    settings = {"password": "wrong-password", "password_kind": "sasl", "sasl_username": ACCOUNT}
    with puppet_with(config, "@wrongpass:localhost", settings) as (side, conn, listener):
        nick = wait_connected(side, conn, listener)
        failed = listener.connection_events("sasl_failed")
        assert len(failed) == 1, listener.events
        assert "fail" in failed[0].reason.lower(), failed
        assert services.server.logged_in_account(nick) is None


def test_sasl_external_with_a_registered_certificate_logs_in(services: Services) -> None:
    assert services.server.tls_port is not None
    config = network(services.server.tls_port, tls=True, tls_verify=False)
    settings = {"certificate": {"certificate": services.cert_pem, "key": services.key_pem}}
    with puppet_with(config, "@external:localhost", settings) as (side, conn, listener):
        nick = wait_connected(side, conn, listener)
        assert services.server.logged_in_account(nick) == ACCOUNT
        assert listener.connection_events("sasl_failed") == []


def test_sasl_external_with_an_unknown_certificate_fails_and_still_connects(
    services: Services,
) -> None:
    assert services.server.tls_port is not None
    config = network(services.server.tls_port, tls=True, tls_verify=False)
    settings = {"certificate": {"certificate": services.stranger_cert_pem,
                                "key": services.stranger_key_pem}}
    with puppet_with(config, "@stranger:localhost", settings) as (side, conn, listener):
        nick = wait_connected(side, conn, listener)
        assert len(listener.connection_events("sasl_failed")) == 1, listener.events
        assert services.server.logged_in_account(nick) is None


def test_the_right_server_password_is_let_in(services: Services) -> None:
    assert services.server.password_port is not None
    config = network(services.server.password_port)
    settings = {"password": SERVER_PASSWORD, "password_kind": "server"}
    with puppet_with(config, "@pass:localhost", settings) as (side, conn, listener):
        wait_connected(side, conn, listener)
        assert listener.connection_events("password_refused") == []


@contextmanager
def wrong_server_password(services: Services) -> Iterator[tuple[IrcSide, IrcConnection,
                                                                Listener]]:
    """A puppet sending a wrong PASS, once InspIRCd has turned it away at least once."""
    assert services.server.password_port is not None
    config = network(services.server.password_port)
    settings = {"password": "not-the-password", "password_kind": "server"}
    with puppet_with(config, "@badpass:localhost", settings) as (side, conn, listener):
        wait_until(lambda: (listener.connection_events("password_refused")
                            or listener.connection_events("lost")), 15,
                   what="the refused server password")
        yield side, conn, listener


def test_a_wrong_server_password_is_refused(services: Services) -> None:
    # InspIRCd (like ngircd) sends no 464: a PASS that matches no <connect> class gets
    # "ERROR :Closing link: ... [Access denied by configuration]" and the socket closes.
    with wrong_server_password(services) as (side, conn, listener):
        assert side.call_sync(lambda: conn.state) is not State.CONNECTED
        assert listener.connection_events("connected") == []
        refused = (listener.connection_events("password_refused")
                   or listener.connection_events("lost"))
        assert refused[0].reason, listener.events


def test_a_wrong_server_password_is_reported_with_the_servers_reason(
    services: Services,
) -> None:
    with wrong_server_password(services) as (side, conn, listener):
        refused = (listener.connection_events("password_refused")
                   or listener.connection_events("lost"))
        assert "access denied" in refused[0].reason.lower(), listener.events


def test_autocmds_run_after_connect_and_identify_without_sasl(services: Services) -> None:
    config = network(services.server.port)
    settings = {"autocmds": [f"PRIVMSG NickServ :IDENTIFY {ACCOUNT} {PASSWORD}"]}
    with puppet_with(config, "@autocmd:localhost", settings) as (side, conn, listener):
        nick = wait_connected(side, conn, listener)
        assert side.call_sync(lambda: conn.sasl) is None
        wait_until(lambda: services.server.logged_in_account(nick) == ACCOUNT, 10,
                   what=f"{nick} to be identified to {ACCOUNT} by its autocmd")


@pytest.mark.parametrize("account, password_length", [
    # Atheme 7.2 takes SASL PLAIN parts of up to 255 bytes and account names of up to 32:
    # 22+1+22+1+255 = 301 bytes, 404 of base64, chunks of 400 and 4. (The exactly-400 case,
    # closed by `AUTHENTICATE +`, is refused by Atheme 7.2.12 itself although InspIRCd
    # relays it as the spec says; tests/unit/test_irc_wire.py checks that case.)
    ("twochunksofbase64chars", 255),
])
def test_sasl_plain_longer_than_one_authenticate_line_logs_in(
    services: Services, account: str, password_length: int,
) -> None:
    password = "L" * password_length
    services.server.register_account(account, password)
    config = network(services.server.port)
    settings = {"password": password, "password_kind": "sasl", "sasl_username": account}
    with puppet_with(config, f"@{account[:12]}:localhost", settings) as (side, conn, listener):
        nick = wait_connected(side, conn, listener)
        assert listener.connection_events("sasl_failed") == []
        assert services.server.logged_in_account(nick) == account


# ---------------------------------------------------------------- the bot's own login
@contextmanager
def bot_with(config: NetworkConfig) -> Iterator[tuple[IrcSide, IrcConnection, Listener]]:
    """A started IrcSide whose bot logs in as `config` says."""
    listener = Listener()
    side = IrcSide((config,), listener, lambda n: n.bot_nick)
    side.start()
    try:
        net = side.network("t")
        assert net is not None
        bot = wait_until(lambda: side.call_sync(lambda: net.bot), 10, what="the bot")
        yield side, bot, listener
    finally:
        side.stop()


def test_the_bot_logs_in_with_sasl_plain_from_its_network_keys(services: Services) -> None:
    config = network(services.server.port, bot_nick="plainbot", sasl_username=ACCOUNT,
                     sasl_password=PASSWORD)
    with bot_with(config) as (side, bot, listener):
        nick = wait_connected(side, bot, listener)
        assert services.server.logged_in_account(nick) == ACCOUNT
        assert listener.connection_events("sasl_failed") == []


def test_the_bot_logs_in_with_sasl_external_from_its_certificate_file(
    services: Services, tmp_path: Path,
) -> None:
    assert services.server.tls_port is not None
    pem = tmp_path / "bot.pem"
    pem.write_text(services.cert_pem.strip() + "\n" + services.key_pem.strip() + "\n")
    config = network(services.server.tls_port, tls=True, tls_verify=False,
                     bot_nick="certbot", client_cert=pem)
    with bot_with(config) as (side, bot, listener):
        nick = wait_connected(side, bot, listener)
        assert services.server.logged_in_account(nick) == ACCOUNT
        assert listener.connection_events("sasl_failed") == []


def test_the_bots_autocmds_run_after_connect(services: Services) -> None:
    config = network(services.server.port, bot_nick="cmdbot",
                     autocmds=(f"PRIVMSG NickServ :IDENTIFY {ACCOUNT} {PASSWORD}",))
    with bot_with(config) as (side, bot, listener):
        nick = wait_connected(side, bot, listener)
        wait_until(lambda: services.server.logged_in_account(nick) == ACCOUNT, 10,
                   what=f"the bot {nick} to be identified by its autocmd")
