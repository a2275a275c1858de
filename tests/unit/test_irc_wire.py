"""What reaches the socket: whole lines, never blocking, never CR/LF/NUL, never a logged secret.

Against a scripted loopback IRC server (tests/scripted_irc.py): a real TCP peer that can stop
reading, and that records the exact bytes the bridge wrote.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bridge.config.ini import LoggingConfig, NetworkConfig
from bridge.devstack.ports import wait_until
from bridge.irc import IrcSide
from bridge.irc.connection import IrcConnection, State
from tests import irc_side
from tests.irc_listener import RecordingListener
from tests.scripted_irc import Client, ScriptedIrcServer

Listener = RecordingListener


def network(port: int, **overrides: Any) -> NetworkConfig:
    return irc_side.network(port, **{"max_concurrent_connects": 4, **overrides})


@contextmanager
def bridge_side(config: NetworkConfig, *, bot: bool = True,
                settings: dict[str, Any] | None = None) -> Iterator[tuple[IrcSide, Listener]]:
    listener = Listener()
    side = IrcSide((config,), listener, lambda n: n.bot_nick)
    side.start(None if bot else [])
    net = side.network("t")
    assert net is not None
    net.settings_for = lambda network_name, user: dict(settings or {})
    try:
        yield side, listener
    finally:
        side.stop()


def registered(server: ScriptedIrcServer, nick: str, timeout: float = 10) -> Client:
    return wait_until(lambda: server.client(nick), timeout, what=f"{nick} to register")


def connected(side: IrcSide, conn: IrcConnection, timeout: float = 10) -> None:
    wait_until(lambda: side.call_sync(lambda: conn.state is State.CONNECTED), timeout,
               what=f"{conn} to get 001")


LINE = "PRIVMSG #stuck :{:06d} " + "x" * 400


def test_a_server_that_stops_reading_cuts_no_line_and_stalls_no_other_connection() -> None:
    with ScriptedIrcServer(receive_buffer=4096) as server, \
            bridge_side(network(server.port, send_buffer_limit=64 * 1024 * 1024)) as (side, _):
        net = side.network("t")
        assert net is not None
        stuck = registered(server, "tbot")
        bot = side.call_sync(lambda: net.bot)
        connected(side, bot)
        other = side.call_sync(net.puppet, "@other:localhost")
        healthy = registered(server, "other[m]")
        connected(side, other)

        stuck.reading.clear()  # the server stops reading the bot
        count = 12000  # ~5 MB: more than the kernel buffers of both ends hold
        side.call(lambda: [bot.send_now(LINE.format(i)) for i in range(count)])
        side.call(lambda: other.send_now("PRIVMSG #fine :still flowing"))
        # The other connection's line leaves while the stuck server still reads nothing
        # (before the fix, the IRC thread sat in a blocking send for 5 s first).
        wait_until(lambda: "PRIVMSG #fine :still flowing" in healthy.lines(), 4,
                   interval=0.05, what="the other connection's line")

        stuck.reading.set()
        expected = [LINE.format(i) for i in range(count)]
        wait_until(lambda: len(stuck.lines()) >= count + 2, 30, what="the whole backlog")
        sent = [line for line in stuck.lines() if line.startswith("PRIVMSG #stuck")]
        assert sent == expected  # every line whole, none lost, none out of order
        assert side.call_sync(lambda: bot.state) is State.CONNECTED


def test_a_connection_that_does_not_drain_is_dropped_and_reconnected() -> None:
    with ScriptedIrcServer(receive_buffer=4096) as server, \
            bridge_side(network(server.port, send_buffer_limit=64 * 1024)) as (side, listener):
        net = side.network("t")
        assert net is not None
        first = registered(server, "tbot")
        bot = side.call_sync(lambda: net.bot)
        connected(side, bot)
        first.reading.clear()
        side.call(lambda: [bot.send_now(LINE.format(i)) for i in range(12000)])
        lost = wait_until(lambda: listener.connection_events("lost"), 10, what="the drop")
        assert "stopped reading" in lost[0].reason
        first.reading.set()
        wait_until(first.closed.is_set, 10, what="the stuck socket to be closed")
        wait_until(lambda: server.client("tbot") not in (None, first), 15,
                   what="the reconnect")
        connected(side, bot, timeout=15)


def test_control_characters_from_a_user_id_never_reach_the_socket(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with ScriptedIrcServer() as server, \
            bridge_side(network(server.port), bot=False) as (side, _):
        net = side.network("t")
        assert net is not None
        # A federated user id may hold a bare CR or a NUL: as realname and ident they would
        # end the USER line early on many servers and inject what follows as a command.
        user_id = "@ev\ril\x00\x07:example.org\rQUIT :injected"
        conn = side.call_sync(net.puppet, user_id)
        client = wait_until(lambda: next((c for c in server.clients if c.registered.is_set()),
                                         None), 10, what="the puppet to register")
        connected(side, conn)
        with caplog.at_level(logging.ERROR, logger="bridge.irc.reactor"):
            assert side.call_sync(lambda: conn.send_now("PRIVMSG bob :a\rb")) is False
            assert side.call_sync(lambda: conn.send_now("PRIVMSG bob :a\x00b")) is False
        side.call_sync(conn.send_now, "PRIVMSG bob :after")
        wait_until(lambda: "PRIVMSG bob :after" in client.lines(), 10, what="the next line")
        with client.lock:
            raw = bytes(client.raw)
        assert b"\0" not in raw and b"\x07" not in raw
        assert b"\r" not in raw.replace(b"\r\n", b"")
        user = next(line for line in client.lines() if line.startswith("USER "))
        assert user.endswith(":@evil:example.orgQUIT :injected")
        refused = [r.getMessage() for r in caplog.records if "refused to send" in r.getMessage()]
        assert len(refused) == 2, refused
        assert all("test_irc_wire:<lambda>" in message for message in refused), refused


# ---------------------------------------------------------------- secrets in DEBUG logs
SECRETS = {
    "server": "pw1",  # short: a length threshold must not let it through
    "sasl": "s3",
    "identify": "id9",
    "oper": "op7",
    "login": "lg5",
}


def test_no_login_secret_reaches_a_debug_log(tmp_path: Path) -> None:
    from bridge.ops import logs

    log_file = tmp_path / "debug.log"
    root = logging.getLogger()
    saved = (list(root.handlers), root.level,
             {n: logging.getLogger(n).level for n in ("bridge", "irc.client")})
    logs.setup(LoggingConfig(level="DEBUG", format="text", file=str(log_file),
                             levels=(("irc.client", "DEBUG"), ("bridge", "DEBUG"))))
    try:
        server = ScriptedIrcServer(cap_ls=["CAP * LS :sasl"])
        with server, bridge_side(network(server.port, password=SECRETS["server"])) as (side, _):
            net = side.network("t")
            assert net is not None
            registered(server, "tbot")
            net.settings_for = lambda network_name, user: {
                "password": SECRETS["sasl"], "password_kind": "sasl", "sasl_username": "acct",
                "autocmds": [f"PRIVMSG NickServ :IDENTIFY acct {SECRETS['identify']}",
                             f"OPER admin {SECRETS['oper']}"],
            }
            conn = side.call_sync(net.puppet, "@alice:localhost")
            client = registered(server, "alice[m]")
            connected(side, conn)
            side.call_sync(conn.send,
                           f"PRIVMSG Q@CServe.quakenet.org :LOGIN acct {SECRETS['login']}")
            side.call_sync(conn.send, "NICKSERV GHOST alice[m] ghostpw")
            side.call_sync(conn.send, "PRIVMSG #chan :an ordinary line")
            wait_until(lambda: "PRIVMSG #chan :an ordinary line" in client.lines(), 10,
                       what="the last line")
            assert client.sasl_payload == b"acct\0acct\0" + SECRETS["sasl"].encode()
            assert any(line.startswith("OPER admin") for line in client.lines())
    finally:
        for handler in list(root.handlers):
            if handler not in saved[0]:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(saved[1])
        for name, level in saved[2].items():
            logging.getLogger(name).setLevel(level)
    text = log_file.read_text()
    assert "PRIVMSG #chan :an ordinary line" in text  # the log does show the lines sent
    for kind, secret in [*SECRETS.items(), ("ghost", "ghostpw")]:
        leaked = [line for line in text.splitlines() if secret in line]
        assert not leaked, f"the {kind} secret is in the log: {leaked}"
    assert "PASS [redacted]" in text
    assert "AUTHENTICATE [redacted]" in text
    assert "IDENTIFY [redacted]" in text


# ---------------------------------------------------------------- CAP LS 302 and SASL framing
def test_sasl_offered_on_an_earlier_line_of_a_multiline_cap_ls_is_used() -> None:
    # CAP 302: every line but the last says `CAP * LS * :...` (capability-negotiation.md).
    lines = ["CAP * LS * :multi-prefix sasl=PLAIN,EXTERNAL server-time",
             "CAP * LS :away-notify account-notify"]
    settings = {"password": "pw", "password_kind": "sasl", "sasl_username": "acct"}
    with ScriptedIrcServer(cap_ls=lines) as server, \
            bridge_side(network(server.port), bot=False, settings=settings) as (side, listener):
        net = side.network("t")
        assert net is not None
        conn = side.call_sync(net.puppet, "@multi:localhost")
        client = registered(server, "multi[m]")
        connected(side, conn)
        assert client.sasl_payload == b"acct\0acct\0pw"
        assert listener.connection_events("sasl_failed") == []
        # One REQ for what the bridge wants of both LS lines (bridge.irc.cap.WANTED).
        assert "CAP REQ :server-time multi-prefix account-notify away-notify sasl" \
            in client.lines()


@pytest.mark.parametrize("password_length, chunks", [
    (590, [400, 400, 0]),  # 600 bytes encode to exactly 800: a final `AUTHENTICATE +`
    (700, [400, 400, 148]),
    (280, [388]),
])
def test_long_sasl_plain_responses_go_in_400_byte_chunks(
    password_length: int, chunks: list[int],
) -> None:
    password = "p" * password_length
    settings = {"password": password, "password_kind": "sasl", "sasl_username": "acct"}
    with ScriptedIrcServer(cap_ls=["CAP * LS :sasl"]) as server, \
            bridge_side(network(server.port), bot=False, settings=settings) as (side, listener):
        net = side.network("t")
        assert net is not None
        conn = side.call_sync(net.puppet, "@long:localhost")
        client = registered(server, "long[m]")
        connected(side, conn)
        sent = client.authenticate[1:]
        assert [0 if c == "+" else len(c) for c in sent] == chunks
        assert client.sasl_payload == b"acct\0acct\0" + password.encode()
        assert listener.connection_events("sasl_failed") == []


def test_a_connection_whose_output_makes_no_progress_is_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bridge.irc import connection as connection_module

    monkeypatch.setattr(connection_module, "STALLED_AFTER", 0.2)
    with ScriptedIrcServer(receive_buffer=4096) as server:
        config = network(server.port, send_buffer_limit=64 * 1024 * 1024, give_up_after=2.0)
        with bridge_side(config) as (side, listener):
            net = side.network("t")
            assert net is not None
            stuck = registered(server, "tbot")
            bot = side.call_sync(lambda: net.bot)
            connected(side, bot)
            stuck.reading.clear()
            # Far below the byte limit, but the server reads none of it.
            side.call(lambda: [bot.send_now(LINE.format(i)) for i in range(12000)])
            lost = wait_until(lambda: listener.connection_events("lost"), 15,
                              what="the drop of the stalled connection")
            assert "stopped reading" in lost[0].reason
            stuck.reading.set()
