"""Each of the four IRC servers the bridge is tested on starts and serves what the tests need.

ngircd, InspIRCd 3 (with its IRCv3 modules and Atheme), ircd-hybrid and Ergo 2.11.1, each
through :class:`IrcDaemon` on a free loopback port: two clients register, meet in a
channel whose first joiner is its operator, exchange a PRIVMSG, and the server's CAP LS is
recorded as a figure. Then what the bridge's tests lean on: many connections from
127.0.0.1, a burst without flood kills, a channel operator's KICK and MODE +o, the
devstack's IRC operator (OPER, KILL), a restart on the same port. A server whose binary
is not here is skipped, saying what to install.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.devstack.ircd import TEST_SERVERS, IrcDaemon, default_kind, missing
from bridge.devstack.nxdomain import NxdomainServer, nxdomain_answer
from tests.e2e.test_ircv3_caps import cap_ls
from tests.figures import record

CHANNEL = "#servers"


@pytest.fixture(scope="module", params=TEST_SERVERS)
def daemon(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[IrcDaemon]:
    kind = request.param
    reason = missing(kind)
    if reason:
        pytest.skip(f"{kind}: {reason}")
    server = IrcDaemon(tmp_path_factory.mktemp(f"ircd-{kind}"), kind=kind)
    server.start(timeout=60)
    try:
        yield server
    finally:
        server.stop()


def test_two_clients_meet_in_a_channel_and_its_first_joiner_is_operator(
        daemon: IrcDaemon) -> None:
    assert daemon.host == "127.0.0.1" and daemon.port != 6667
    with daemon.client("Bob") as bob, daemon.client("alice_with_a_long_nick") as alice:
        bob.join(CHANNEL)
        start = bob.mark()
        bob.send(f"NAMES {CHANNEL}")
        names = bob.wait_for(lambda m: m.command == "353", start=start)
        assert "@Bob" in names.text.split()  # the first joiner is the channel's operator
        alice.join(CHANNEL)
        bob.wait_for(lambda m: m.command == "JOIN" and m.nick == "alice_with_a_long_nick")
        bob.privmsg(CHANNEL, "hello alice ünïcödé")
        msg = alice.wait_for_privmsg("hello alice ünïcödé", target=CHANNEL)
        assert msg.nick == "Bob"
        alice.privmsg("Bob", "hi bob, privately")
        assert bob.wait_for_privmsg("hi bob, privately").target == "Bob"
        caps = cap_ls(alice)
    record(f"CAP LS on {daemon.kind}", " ".join(
        f"{name}={value}" if value and len(value) < 40 else name
        for name, value in sorted(caps.items())))
    if daemon.kind in ("inspircd", "ergo"):
        assert {"server-time", "message-tags", "echo-message", "batch", "sasl"} <= set(caps)
    if daemon.kind == "ergo":
        assert {"draft/chathistory", "draft/multiline", "draft/relaymsg"} <= set(caps)


def test_many_clients_from_loopback_and_a_burst_without_flood_kills(daemon: IrcDaemon) -> None:
    clients = [daemon.client(f"puppet{i}") for i in range(40)]
    try:
        sender, receiver = clients[0], clients[1]
        sender.join("#burst")
        receiver.join("#burst")
        sender.wait_for(lambda m: m.command == "JOIN" and m.nick == "puppet1")
        for i in range(300):
            sender.privmsg("#burst", f"line {i}")
        receiver.wait_for_privmsg("line 299", timeout=30)
        got = [m.text for m in receiver.messages("PRIVMSG") if m.text.startswith("line ")]
        assert got == [f"line {i}" for i in range(300)]
        sender.privmsg("#burst", "still connected")
        receiver.wait_for_privmsg("still connected", timeout=10)
    finally:
        for client in clients:
            client.close()


def test_the_channel_operator_can_op_and_kick(daemon: IrcDaemon) -> None:
    with daemon.client("Opper") as op, daemon.client("Dan") as dan:
        op.join("#ops")
        dan.join("#ops")
        op.wait_for(lambda m: m.command == "JOIN" and m.nick == "Dan")
        op.send("MODE #ops +o Dan")
        mode = dan.wait_for(lambda m: m.command == "MODE" and m.target == "#ops")
        assert mode.params[1:] == ["+o", "Dan"]
        op.send("MODE #ops -o Dan")
        dan.wait_for(lambda m: m.command == "MODE" and m.params[1:] == ["-o", "Dan"])
        op.send("KICK #ops Dan :behave")
        kick = dan.wait_for(lambda m: m.command == "KICK")
        assert kick.params[:2] == ["#ops", "Dan"] and kick.text == "behave"


def test_the_devstack_operator_can_kill_a_connection(daemon: IrcDaemon) -> None:
    """Fault tests drop a bridge's link the way a network's operator would."""
    with daemon.client("Oper") as oper, daemon.client("target") as target:
        oper.send(f"OPER {daemon.oper_name} {daemon.oper_password}")
        assert oper.wait_for(lambda m: m.command in {"381", "464", "491"}).command == "381"
        oper.send("KILL target :devstack test")
        with pytest.raises(ConnectionError):
            target.wait_for(lambda m: False, timeout=10)


def test_a_restart_keeps_the_port_and_drops_everyone(daemon: IrcDaemon) -> None:
    port, pid = daemon.port, daemon.pid
    client = daemon.client("victim")
    daemon.restart(timeout=60)
    assert daemon.running and daemon.port == port and daemon.pid != pid
    with pytest.raises(ConnectionError):
        client.wait_for(lambda m: False, timeout=10)
    client.close()
    with daemon.client("victim") as again:  # the nick is free on the new server
        again.join("#after")


def test_the_test_server_is_chosen_by_environment(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    monkeypatch.delenv("IRCBRIDGE_IRCD", raising=False)
    for kind in TEST_SERVERS:
        monkeypatch.setenv("IRCBRIDGE_TEST_IRCD", kind)
        assert default_kind() == kind
    monkeypatch.setenv("IRCBRIDGE_TEST_IRCD", "unrealircd")
    with pytest.raises(ValueError, match="unknown IRC daemon kind"):
        IrcDaemon(tmp_path)
    monkeypatch.delenv("IRCBRIDGE_TEST_IRCD")
    monkeypatch.setenv("IRCBRIDGE_IRCD", "miniircd")  # the older name still works
    assert default_kind() == "miniircd"


def test_the_nxdomain_answer_echoes_the_question() -> None:
    # A PTR query for 1.0.0.127.in-addr.arpa, id 0x1234, recursion desired.
    name = b"".join(bytes([len(p)]) + p for p in b"1.0.0.127.in-addr.arpa".split(b".")) + b"\0"
    query = bytes.fromhex("123401000001000000000000") + name + bytes.fromhex("000c0001")
    answer = nxdomain_answer(query)
    assert answer is not None
    assert answer[:2] == b"\x12\x34"
    assert answer[2] & 0x80 and answer[3] & 0x0F == 3  # a response, NXDOMAIN
    assert answer[12:] == name + bytes.fromhex("000c0001")
    assert nxdomain_answer(answer) is None  # never answers an answer
    assert nxdomain_answer(b"\x00") is None


def test_the_nxdomain_server_answers_over_udp() -> None:
    import os
    import socket

    if os.geteuid() != 0:
        pytest.skip("binding UDP port 53 needs root")
    server = NxdomainServer().start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            ident = secrets.token_bytes(2)
            sock.sendto(ident + bytes.fromhex("0100000100000000000003666f6f0000010001"),
                        (server.address, 53))
            answer, _ = sock.recvfrom(512)
        assert answer[:2] == ident and answer[3] & 0x0F == 3
    finally:
        server.stop()
