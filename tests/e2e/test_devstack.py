"""The devstack harness starts a real Synapse and a real IRC daemon that work.

Everything else in the test suite builds on these fixtures' building blocks, so
here they are exercised end to end: users exchange messages through Synapse,
IRC clients through the IRC daemon, and restarts keep the port.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bridge.devstack.clients import IrcError, IrcMessage, MatrixClient, MatrixError, RawIrcClient
from bridge.devstack.ircd import IrcDaemon, default_kind, ngircd_path
from bridge.devstack.ports import StartupError, free_port, port_open, wait_until
from bridge.devstack.synapse import SynapseServer

log = logging.getLogger(__name__)

AS_TOKEN = "as-" + secrets.token_hex(16)
HS_TOKEN = "hs-" + secrets.token_hex(16)


def write_registration(path: Path, server_name: str = "localhost") -> Path:
    """A dummy appservice registration (nothing listens on its URL)."""
    registration = {
        "id": "devstack-test",
        "url": "http://127.0.0.1:1",
        "as_token": AS_TOKEN,
        "hs_token": HS_TOKEN,
        "sender_localpart": "ircbridge",
        "namespaces": {
            "users": [{"exclusive": True, "regex": f"@irc_.*:{server_name}"}],
            "aliases": [{"exclusive": True, "regex": f"#irc_.*:{server_name}"}],
            "rooms": [],
        },
        "rate_limited": False,
    }
    path.write_text(yaml.safe_dump(registration))
    return path


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it has exited all the same.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SynapseServer]:
    workdir = tmp_path_factory.mktemp("synapse")
    registration = write_registration(workdir / "registration.yaml")
    server = SynapseServer(workdir, registration_files=[registration])
    with server:
        yield server
    assert not server.running


# --- ports -------------------------------------------------------------------


def test_free_port_is_bindable_on_loopback() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
    assert not port_open("127.0.0.1", port)


def test_wait_until_returns_value_and_times_out() -> None:
    calls = iter([0, 0, "ready"])
    assert wait_until(lambda: next(calls), timeout=5, interval=0.001) == "ready"
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="timed out waiting for the moon"):
        wait_until(lambda: False, timeout=0.2, what="the moon")
    assert 0.2 <= time.monotonic() - start < 2


# --- Synapse -----------------------------------------------------------------


def test_synapse_users_exchange_messages(synapse: SynapseServer) -> None:
    assert synapse.running
    assert synapse.url == f"http://127.0.0.1:{synapse.port}"
    alice = synapse.register_user("alice")
    bob = synapse.register_user("bob")
    assert alice.user_id == "@alice:localhost"
    assert alice.whoami() == alice.user_id

    room_id = alice.create_room(
        preset="public_chat", room_alias_name="devstack", name="Devstack", visibility="public"
    )
    assert bob.resolve_alias("#devstack:localhost") == room_id
    assert bob.join("#devstack:localhost") == room_id
    assert set(alice.joined_members(room_id)) == {alice.user_id, bob.user_id}
    assert alice.state(room_id, "m.room.name")["name"] == "Devstack"
    assert any(e["type"] == "m.room.create" for e in bob.room_state(room_id))

    event_id = alice.send_text(room_id, "hello bob", html="<b>hello</b> bob")
    event = bob.wait_for_message(
        room_id, lambda e: e.get("content", {}).get("body") == "hello bob", timeout=10
    )
    assert event["event_id"] == event_id
    assert event["sender"] == alice.user_id
    assert event["content"]["formatted_body"] == "<b>hello</b> bob"

    bob.send_text(room_id, "waves back", msgtype="m.emote")
    reply = alice.wait_for_text(room_id, "waves back", timeout=10)
    assert reply["content"]["msgtype"] == "m.emote"

    # /messages comes back in chronological order, paging past one request.
    for i in range(5):
        alice.send_text(room_id, f"n{i}")
    bodies = [e["content"].get("body") for e in alice.messages(room_id, limit=7)]
    assert bodies[-5:] == [f"n{i}" for i in range(5)]
    assert bodies[0] == "hello bob"

    bob.set_displayname("Bobby")
    assert alice.profile(bob.user_id)["displayname"] == "Bobby"

    carol = synapse.register_user("carol")
    alice.invite(room_id, carol.user_id)
    carol.join(room_id)
    carol.leave(room_id)
    assert carol.user_id not in alice.joined_members(room_id)


def test_synapse_errors_are_clear(synapse: SynapseServer) -> None:
    alice = synapse.login("alice") if _exists(synapse, "alice") else synapse.register_user("alice")
    with pytest.raises(MatrixError) as info:
        alice.resolve_alias("#nowhere:localhost")
    assert info.value.status == 404
    assert info.value.errcode == "M_NOT_FOUND"
    assert "404" in str(info.value)
    with pytest.raises(TimeoutError, match="latest events"):
        room_id = alice.create_room()
        alice.wait_for_message(room_id, lambda e: False, timeout=0.3)


def _exists(synapse: SynapseServer, localpart: str) -> bool:
    try:
        synapse.login(localpart)
    except MatrixError:
        return False
    return True


def test_synapse_loads_appservice_registration(synapse: SynapseServer) -> None:
    # The as_token from the registration file is accepted ...
    appservice = MatrixClient(synapse.url, AS_TOKEN, "@ircbridge:localhost")
    resp = appservice.request(
        "POST",
        "/_matrix/client/v3/register",
        json={"type": "m.login.application_service", "username": "irc_ghost"},
    )
    assert resp["user_id"] == "@irc_ghost:localhost"
    # ... and the namespace is exclusive for everyone else.
    with pytest.raises(MatrixError) as info:
        synapse.register_user("irc_squatter")
    assert info.value.errcode == "M_EXCLUSIVE"


def test_synapse_rate_limits_are_lifted(synapse: SynapseServer) -> None:
    user = synapse.register_user("chatty")
    room_id = user.create_room()
    for i in range(15):  # default rc_message: burst 10, 0.2/s
        user.send_text(room_id, f"burst {i}")
    for _ in range(12):  # default rc_room_creation: burst 10
        user.create_room()
    config = yaml.safe_load((synapse.workdir / "homeserver.yaml").read_text())
    assert config["rc_joins_per_room"] == {"per_second": 10000, "burst_count": 100000}
    assert config["rc_login"]["failed_attempts"]["burst_count"] == 100000


def test_synapse_logs_to_file(synapse: SynapseServer) -> None:
    wait_until(
        lambda: "Synapse now listening" in synapse.log_path.read_text(),
        timeout=5,
        what="the startup line in homeserver.log",
    )


def test_synapse_restart_keeps_port_and_data(synapse: SynapseServer) -> None:
    user = synapse.register_user("survivor")
    room_id = user.create_room()
    user.send_text(room_id, "before restart")
    port, pid = synapse.port, synapse.pid
    assert pid is not None

    synapse.restart()

    assert synapse.running and synapse.port == port and synapse.pid != pid
    assert not pid_alive(pid)
    assert user.whoami() == user.user_id  # the access token survived
    user.wait_for_text(room_id, "before restart", timeout=5)


def test_two_synapses_side_by_side(synapse: SynapseServer, tmp_path: Path) -> None:
    registration = write_registration(tmp_path / "registration.yaml", "other.localhost")
    with SynapseServer(
        tmp_path / "hs", server_name="other.localhost", registration_files=[registration]
    ) as other:
        assert other.port != synapse.port
        a = synapse.register_user("side1")
        b = other.register_user("side1")
        assert a.user_id == "@side1:localhost"
        assert b.user_id == "@side1:other.localhost"
        room = b.create_room()
        b.send_text(room, "on the other server")
        b.wait_for_text(room, "on the other server", timeout=5)
        pid = other.pid
    assert pid is not None and not other.running
    assert not pid_alive(pid)
    assert synapse.running


def test_synapse_startup_failure_shows_log(tmp_path: Path) -> None:
    bad = tmp_path / "bad-registration.yaml"
    bad.write_text("id: broken\n")  # no url, tokens or namespaces
    server = SynapseServer(tmp_path / "hs", registration_files=[bad])
    with pytest.raises(StartupError, match="exited with code"):
        server.start(timeout=30)
    assert not server.running


# --- IRC ---------------------------------------------------------------------

KINDS = ["ngircd", "miniircd"] if ngircd_path() else ["miniircd"]


@pytest.fixture(params=KINDS)
def ircd(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[IrcDaemon]:
    with IrcDaemon(tmp_path / "ircd", kind=request.param) as daemon:
        yield daemon


def test_default_kind_prefers_ngircd() -> None:
    assert default_kind() == (os.environ.get("IRCBRIDGE_TEST_IRCD")
                              or os.environ.get("IRCBRIDGE_IRCD")
                              or ("ngircd" if ngircd_path() else "miniircd"))
    with pytest.raises(ValueError):
        IrcDaemon(Path("/nonexistent"), kind="irc.server")


def test_irc_clients_talk_in_a_channel(ircd: IrcDaemon) -> None:
    assert ircd.host == "127.0.0.1" and ircd.port != 6667
    with ircd.client("alice_with_a_long_nick") as alice, ircd.client("bob") as bob:
        alice.join("#devstack")
        bob.join("#devstack")
        alice.wait_for(lambda m: m.command == "JOIN" and m.nick == "bob")
        assert alice.names("#devstack") == {"alice_with_a_long_nick", "bob"}

        alice.privmsg("#devstack", "hello bob ünïcödé")
        msg = bob.wait_for_privmsg("hello bob ünïcödé", target="#devstack")
        assert msg.nick == "alice_with_a_long_nick"

        bob.privmsg("#devstack", "hi alice")
        assert alice.wait_for_privmsg("hi alice", sender="bob").target == "#devstack"

        alice.notice("bob", "psst")
        notice = bob.wait_for(lambda m: m.command == "NOTICE" and m.text == "psst")
        assert notice.target == "bob"

        bob.action("#devstack", "waves")
        assert alice.wait_for(lambda m: m.action is not None).action == "waves"

        # A burst crosses without flood control getting in the way.
        start = time.monotonic()
        for i in range(300):
            alice.privmsg("#devstack", f"line {i}")
        bob.wait_for_privmsg("line 299", timeout=10)
        assert time.monotonic() - start < 5
        assert len([m for m in bob.messages("PRIVMSG") if m.text.startswith("line ")]) == 300

        with pytest.raises(IrcError):
            ircd.client("bob")  # nick in use
        alice.quit()
        bob.wait_for(lambda m: m.command == "QUIT" and m.nick == "alice_with_a_long_nick")


def test_irc_wait_for_semantics(ircd: IrcDaemon) -> None:
    with ircd.client("sender") as sender, ircd.client("receiver") as receiver:
        sender.privmsg("receiver", "same")
        sender.privmsg("receiver", "same")
        first = receiver.wait_for_privmsg("same")
        second = receiver.wait_for_privmsg("same")
        assert first is not second  # each wait_for consumes its match
        with pytest.raises(TimeoutError, match="last lines"):
            receiver.wait_for_privmsg("same", timeout=0.2)
        receiver.reset_cursor()
        assert receiver.wait_for(lambda m: m.command == "001", consume=False).command == "001"
        receiver.mark()
        with pytest.raises(TimeoutError):
            receiver.wait_for(lambda m: m.command == "001", timeout=0.1)


def test_irc_restart_keeps_port(ircd: IrcDaemon) -> None:
    port, pid = ircd.port, ircd.pid
    assert pid is not None
    client = ircd.client("victim")
    ircd.restart()
    assert ircd.running and ircd.port == port and ircd.pid != pid
    assert not pid_alive(pid)
    with pytest.raises(ConnectionError):
        client.wait_for(lambda m: False, timeout=5)
    with ircd.client("victim") as again:  # the old nick is free on the new server
        again.join("#after")


def test_irc_stop_frees_the_port(tmp_path: Path) -> None:
    daemon = IrcDaemon(tmp_path / "ircd").start()
    port, pid = daemon.port, daemon.pid
    assert pid is not None
    daemon.stop()
    assert not daemon.running
    assert not pid_alive(pid)
    assert not port_open("127.0.0.1", port)


def test_irc_message_parsing() -> None:
    msg = IrcMessage.parse(
        r"@time=2024-01-01T00:00:00Z;msgid=a\sb\:c :nick!user@host PRIVMSG #chan :hello :world"
    )
    assert msg.tags == {"time": "2024-01-01T00:00:00Z", "msgid": "a b;c"}
    assert msg.prefix == "nick!user@host"
    assert msg.nick == "nick"
    assert msg.command == "PRIVMSG"
    assert msg.params == ["#chan", "hello :world"]
    assert IrcMessage.parse("PING :token").params == ["token"]
    assert IrcMessage.parse(":srv 001 me :Welcome").nick == "srv"
    assert IrcMessage.parse(":srv MODE #c +o x").params == ["#c", "+o", "x"]
    assert IrcMessage.parse(":n!u@h PRIVMSG #c :\x01ACTION hops\x01").action == "hops"


def test_raw_client_rejects_line_breaks(ircd: IrcDaemon) -> None:
    with RawIrcClient().connect(ircd.host, ircd.port, "careful") as client:
        with pytest.raises(ValueError):
            client.privmsg("#x", "two\r\nQUIT")
