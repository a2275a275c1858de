"""Bad input from every side, against real processes: each gets a clear error and nothing is lost.

One stack serves the module: ngircd (network `local`), Synapse, the bridge, and a second
network `fake` whose "IRC server" is a socket server in this file that sends garbage and
closes mid-line. Checked from the outside: the AS API over HTTP, what a raw IRC client
receives (every line), what /messages shows.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import uuid
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from bridge.config.ini import load
from bridge.devstack.clients import RawIrcClient
from bridge.devstack.ports import LOOPBACK, wait_until
from bridge.devstack.stack import Stack
from tests.stacks import World as StackWorld
from tests.stacks import observer_world
from tests.traffic import IrcObserver, Report, Tally, eventually, matrix_texts, seqs_in

CHANNEL = "#bad"
FAKE_CHANNEL = "#fake"
PUPPET = "alice[m]"


# ------------------------------------------------------------------------ a fake IRC server
class FakeIrcServer:
    """Just enough IRC to register a client and let it join; then says what a test pushes.

    Every accepted connection gets its own thread. `push` writes raw bytes to the newest
    connection of a nick; `drop` closes it (the test decides where a line is cut).
    """

    def __init__(self) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((LOOPBACK, 0))
        self.listener.listen(16)
        self.port = int(self.listener.getsockname()[1])
        self.by_nick: dict[str, socket.socket] = {}
        self.joins: list[tuple[str, str]] = []  # (nick, channel), in order
        self.received: list[bytes] = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        threading.Thread(target=self._accept, name="fake-ircd", daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buffer, state = b"", {"nick": "*"}
        while not self._stop.is_set():
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            try:
                for raw in lines:
                    self._answer(conn, raw, state)
            except OSError:
                return

    def _answer(self, conn: socket.socket, raw: bytes, state: dict[str, str]) -> None:
        """Registration (001), JOIN (echo + names) and PING; everything else is only kept."""
        with self.lock:
            self.received.append(raw)
        words = raw.rstrip(b"\r").decode("utf-8", "replace").split()
        command = words[0].upper() if words else ""
        nick = state["nick"]
        if command == "NICK" and len(words) > 1:
            state["nick"] = words[1].lstrip(":")
        elif command == "USER":
            conn.sendall(f":fake.server 001 {nick} :Welcome\r\n"
                         f":fake.server 376 {nick} :End of MOTD\r\n".encode())
            with self.lock:
                self.by_nick[nick] = conn
        elif command == "JOIN" and len(words) > 1:
            channel = words[1].split(",")[0]
            conn.sendall(f":{nick}!u@fake JOIN {channel}\r\n"
                         f":fake.server 353 {nick} = {channel} :{nick} carol\r\n"
                         f":fake.server 366 {nick} {channel} :End\r\n".encode())
            with self.lock:
                self.joins.append((nick, channel))
        elif command == "PING":
            conn.sendall(f"PONG {' '.join(words[1:])}\r\n".encode())

    def push(self, nick: str, data: bytes) -> None:
        with self.lock:
            conn = self.by_nick[nick]
        conn.sendall(data)

    def drop(self, nick: str) -> None:
        with self.lock:
            conn = self.by_nick.pop(nick)
        try:
            conn.shutdown(socket.SHUT_RDWR)
        finally:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        with self.lock:
            for conn in self.by_nick.values():
                conn.close()


class FakeNetStack(Stack):
    """The devstack plus a `[network:fake]` that points at the fake IRC server."""

    def __init__(self, workdir: Path, fake_port: int, **kwargs: Any):
        super().__init__(workdir, **kwargs)
        self.fake_port = fake_port

    def write_config(self) -> None:
        super().write_config()
        text = self.config_path.read_text(encoding="utf-8")
        section = f"""[network:fake]
host = {LOOPBACK}
port = {self.fake_port}
tls = false
user_template = irc_fake_{{nick}}
alias_template = irc_fake_{{channel}}
puppet_nick_template = {{localpart}}[m]
bot_nick = ircbot
channels = {FAKE_CHANNEL}
scrollback_lines = 50
flood_rate = 0
flood_burst = 5
connect_timeout = 5

[permissions]"""
        self.config_path.write_text(text.replace("[permissions]", section), encoding="utf-8")


class World(StackWorld[IrcObserver]):
    stack: FakeNetStack
    fake: FakeIrcServer
    hs_token: str
    fake_room: str = ""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World()
    w.fake = FakeIrcServer()

    def fake_net(folder: Path, **options: Any) -> FakeNetStack:
        return FakeNetStack(folder, w.fake.port, **options)

    def read_hs_token(world: World) -> None:
        world.hs_token = load(world.stack.config_path).appservice.hs_token

    try:
        with observer_world(tmp_path_factory.mktemp("bad"), CHANNEL, world=w,
                            then=read_hs_token, stack_class=fake_net, log_level="DEBUG"):
            yield w
    finally:
        w.fake.close()


def bridge_alive(world: World) -> None:
    """The bridge process still runs and answers."""
    assert world.stack.bridge.proc is not None and world.stack.bridge.proc.poll() is None
    assert requests.get(f"{world.stack.bridge.url}/health", timeout=10).status_code in (200, 503)


def relay_check(world: World, tag: str) -> None:
    """A fresh message each way still crosses (the bridge kept working)."""
    world.alice.send_text(world.room, f"{tag} 0")
    world.bob.c.privmsg(CHANNEL, f"{tag} 1")
    eventually(lambda: f"{tag} 0" in world.bob.channel_texts(), 30, f"{tag} on IRC")
    eventually(lambda: f"{tag} 1" in matrix_texts(world.alice, world.room, 300), 30,
               f"{tag} in Matrix", interval=0.3)


# ------------------------------------------------------------------------ AS API over HTTP
def as_call(world: World, method: str, path: str, *, body: bytes | None = None,
            token: str | None = "default", headers: dict[str, str] | None = None,
            timeout: float = 60) -> requests.Response:
    all_headers = dict(headers or {})
    if token == "default":
        token = world.hs_token
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    return requests.request(method, world.stack.bridge.url + path, data=body,
                            headers=all_headers, timeout=timeout)


def txn_path() -> str:
    return f"/_matrix/app/v1/transactions/bad-{uuid.uuid4().hex}"


BAD_REQUESTS: list[tuple[str, str, dict[str, Any], int, str]] = [
    # (id, method, kwargs for as_call, status, errcode); a None path means a fresh txn path
    ("not-json", "PUT", {"body": b"this is not json"}, 400, "M_NOT_JSON"),
    ("empty", "PUT", {"body": b""}, 400, "M_NOT_JSON"),
    ("invalid-utf8", "PUT", {"body": b'{"events": ["\xff\xfe"]}'}, 400, "M_NOT_JSON"),
    ("utf16", "PUT", {"body": '{"events": []}'.encode("utf-16")}, 400, "M_NOT_JSON"),
    ("array", "PUT", {"body": b"[]"}, 400, "M_BAD_JSON"),
    ("number", "PUT", {"body": b"42"}, 400, "M_BAD_JSON"),
    ("null", "PUT", {"body": b"null"}, 400, "M_BAD_JSON"),
    ("events-object", "PUT", {"body": b'{"events": {"a": 1}}'}, 400, "M_BAD_JSON"),
    ("events-string", "PUT", {"body": b'{"events": "x"}'}, 400, "M_BAD_JSON"),
    ("events-null", "PUT", {"body": b'{"events": null}'}, 400, "M_BAD_JSON"),
    ("missing-events", "PUT", {"body": b'{"ephemeral": []}'}, 400, "M_BAD_JSON"),
    ("deep", "PUT", {"body": b'{"events": ' + b"[" * 50000 + b"]" * 50000 + b"}"}, 400,
     "M_NOT_JSON"),
    ("missing-token", "PUT", {"body": b'{"events": []}', "token": None}, 401,
     "M_MISSING_TOKEN"),
    ("wrong-token", "PUT", {"body": b'{"events": []}', "token": "wrong"}, 403, "M_FORBIDDEN"),
    ("empty-bearer", "PUT", {"body": b'{"events": []}', "token": None,
                             "headers": {"Authorization": "Bearer "}}, 401, "M_MISSING_TOKEN"),
    ("basic-auth", "PUT", {"body": b'{"events": []}', "token": None,
                           "headers": {"Authorization": "Basic eDp5"}}, 401, "M_MISSING_TOKEN"),
    ("latin1-token", "PUT", {"body": b'{"events": []}', "token": "caf\xe9"}, 403, "M_FORBIDDEN"),
    ("huge", "PUT", {"body": b'{"events": ["' + b"x" * 11_000_000 + b'"]}'}, 413,
     "M_TOO_LARGE"),
    ("wrong-method", "GET", {}, 405, "M_UNRECOGNIZED"),
]


@pytest.mark.parametrize(("name", "method", "kwargs", "status", "errcode"), BAD_REQUESTS,
                         ids=[r[0] for r in BAD_REQUESTS])
def test_bad_transactions_over_http_get_a_clear_matrix_error(
    world: World, name: str, method: str, kwargs: dict[str, Any], status: int, errcode: str
) -> None:
    try:
        r = as_call(world, method, txn_path(), **kwargs)
    except requests.ConnectionError as e:  # the bridge hung up instead of answering
        pytest.fail(f"{name}: no answer, the connection was dropped: {e}")
    assert r.status_code == status, (name, r.status_code, r.text[:300])
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
    assert r.json().get("errcode") == errcode, r.text[:300]
    assert r.json().get("error"), r.text[:300]


ODD_USERS = [
    "@outsider:localhost", "@irc_local_bob:elsewhere", "@irc_local_:localhost",
    "@irc_local__:localhost", "@irc_local_=zz:localhost", "@irc_local_=ff=fe:localhost",
    "@irc_local_=00:localhost", "@irc_local_UPPER:localhost", "@irc_local_a b:localhost",
    "@irc_local_" + "x" * 300 + ":localhost", "@irc_local_\u00e9:localhost", "irc_local_x",
    "@irc_local_=2d:localhost", "@:localhost", "@irc_local_x:localhost:8448", "@@@",
    "@irc_local_%00:localhost", "@irc_local_=0d=0aQUIT:localhost",
]
ODD_ALIASES = [
    "#outsider:localhost", "#irc_local_#x:elsewhere", "#irc_local_:localhost",
    "#irc_local_nochannel:localhost", "#irc_local_#a b:localhost", "#irc_local_#a,b:localhost",
    "#irc_local_#\x07bell:localhost", "#irc_local_#" + "x" * 300 + ":localhost",
    "#irc_local_#a\r\nJOIN #b:localhost", "#irc_local_#\x00:localhost", "#:localhost",
    "irc_local_#x", "###",
]


def test_user_and_alias_queries_outside_the_namespace_or_odd_are_404(world: World) -> None:
    report = Report()
    for user_id in ODD_USERS:
        r = as_call(world, "GET", "/_matrix/app/v1/users/" + quote(user_id, safe=""))
        report.add(f"user {user_id[:40]!r}: {r.status_code}")
        assert (r.status_code, r.json().get("errcode")) == (404, "M_NOT_FOUND"), str(report)
    for alias in ODD_ALIASES:
        r = as_call(world, "GET", "/_matrix/app/v1/rooms/" + quote(alias, safe=""))
        report.add(f"alias {alias[:40]!r}: {r.status_code}")
        assert r.status_code == 404 and r.json().get("errcode") in (
            "M_NOT_FOUND", "M_UNRECOGNIZED"), str(report)  # a NUL in a path matches no route
    # No IRC command leaked from an alias or user id.
    world.bob.pump()
    assert not [m for m in world.bob.history() if m.command in ("JOIN", "QUIT")
                and m.target.lower() in ("#b", "#bell")]
    bridge_alive(world)


def test_valid_odd_user_ids_register_the_nick_they_name(world: World) -> None:
    """Every special nick character survives the user query and the way back."""
    for nick in ["[]\\`_^{|}-", "{h}", "a|b"]:
        user_id = world.stack.ghost(nick)
        r = as_call(world, "GET", "/_matrix/app/v1/users/" + quote(user_id, safe=""))
        assert (r.status_code, r.json()) == (200, {}), (nick, r.text)
        assert world.alice.profile(user_id)["displayname"] == nick


def odd_events(room: str, sender: str) -> list[dict[str, Any]]:
    """Events a confused or hostile homeserver could push; none may stop the queue."""
    def ev(**fields: Any) -> dict[str, Any]:
        base = {"event_id": f"$odd-{uuid.uuid4().hex}", "room_id": room, "sender": sender,
                "type": "m.room.message", "origin_server_ts": 1}
        base.update(fields)
        return {k: v for k, v in base.items() if v is not ...}

    return [
        ev(content=...), ev(content=None), ev(content=[]), ev(content="text"),
        ev(content={}), ev(content={"body": 5}), ev(content={"body": None}),
        ev(content={"body": ["list"]}), ev(content={"msgtype": 7, "body": "odd msgtype 7"}),
        ev(content={"msgtype": "m.text", "body": "html int", "format":
                    "org.matrix.custom.html", "formatted_body": 5}),
        ev(content={"msgtype": "m.text", "body": "bad relates", "m.relates_to": "x"}),
        ev(content={"msgtype": "m.text", "body": "* edit", "m.new_content": "x",
                    "m.relates_to": {"rel_type": "m.replace", "event_id": 5}}),
        ev(content={"msgtype": "m.text", "body": "* edit2", "m.new_content": {"body": 5},
                    "m.relates_to": {"rel_type": "m.replace", "event_id": "$nowhere"}}),
        ev(content={"msgtype": "m.text", "body": "reply", "m.relates_to":
                    {"m.in_reply_to": {"event_id": ["x"]}}}),
        ev(content={"msgtype": "m.image", "body": "img", "url": 5}),
        ev(content={"msgtype": "m.file", "body": "file", "url": "mxc://"}),
        ev(type="m.room.member", state_key=5, content={"membership": "join"}),
        ev(type="m.room.member", state_key=sender, content={"membership": 5}),
        ev(type="m.room.member", state_key=None, content={"membership": "leave"}),
        ev(type="m.room.member", state_key="@irc_local_=zz:localhost",
           content={"membership": "ban"}),
        ev(type="m.room.name", state_key="", content={"name": "renamed"}),
        ev(type="m.room.power_levels", state_key="", content={"users": "x"}),
        ev(type="org.example.unknown", content={"body": "unknown type"}),
        ev(type=None, content={"body": "no type"}), ev(type=5, content={"body": "int type"}),
        ev(type="m.room.message", state_key="", content={"msgtype": "m.notice",
                                                          "body": "a message as state"}),
        ev(sender=5, content={"body": "int sender"}), ev(sender=None, content={"body": "x"}),
        ev(room_id=5, content={"body": "int room"}), ev(room_id=None, content={"body": "x"}),
        ev(room_id="!unknown:localhost", content={"msgtype": "m.text", "body": "elsewhere"}),
        ev(content={"msgtype": "m.text", "body": "deep", "x": json.loads("[" * 400 + "]" * 400)}),
        ev(content={"msgtype": "m.text", "body": ""}),
        ev(content={"msgtype": "m.text", "body": "\r\n\x00\x01"}),
        {"no_event_id": True}, 5, "string", None, [],
    ]


def test_odd_events_are_skipped_and_the_valid_one_among_them_is_relayed_once(
    world: World
) -> None:
    report = Report()
    alice = world.alice.user_id
    tag = "oddtxn"
    valid = {"event_id": f"$valid-{uuid.uuid4().hex}", "room_id": world.room, "sender": alice,
             "type": "m.room.message", "origin_server_ts": 1,
             "content": {"msgtype": "m.text", "body": f"{tag} 0"}}
    events = [*odd_events(world.room, alice), valid, *odd_events(world.room, alice)]
    path = txn_path()
    for _ in range(2):  # a retried transaction is not relayed twice
        r = as_call(world, "PUT", path, body=json.dumps({"events": events})
                    .encode())
        assert (r.status_code, r.json()) == (200, {}), r.text[:300]
    # The same event in another transaction (a homeserver that restarted its counter).
    r = as_call(world, "PUT", txn_path(), body=json.dumps({"events": [valid]}).encode())
    assert r.status_code == 200
    eventually(lambda: f"{tag} 0" in world.bob.channel_texts(), 30, "the valid event")
    relay_check(world, "oddtxn-after")  # the inbox is not stuck behind the odd events
    tally = Tally("valid event among odd ones", [0], seqs_in(world.bob.channel_texts(), tag))
    report.add(str(tally))
    assert tally.clean, str(report)
    texts = world.bob.channel_texts(PUPPET)
    for leaked in ("unknown type", "no type", "int type", "int sender", "int room",
                   "elsewhere", "renamed"):
        assert leaked not in texts, (leaked, texts[-20:])
    bridge_alive(world)


@pytest.mark.parametrize("field", ["event_id", "room_id", "txn_id"])
def test_overlong_ids_get_an_answer_and_do_not_block_later_transactions(
    world: World, field: str
) -> None:
    """Matrix ids are at most 255 bytes; a longer one must not make every retry fail (a
    transaction answered 500 is retried forever and blocks all later events)."""
    long = "$" + "x" * 400 if field == "event_id" else "!" + "y" * 400 + ":localhost"
    event = {"event_id": f"$long-{uuid.uuid4().hex}", "room_id": world.room,
             "sender": world.alice.user_id, "type": "m.room.message",
             "content": {"msgtype": "m.text", "body": f"overlong-{field} 0"}}
    path = txn_path()
    if field == "txn_id":
        path = "/_matrix/app/v1/transactions/" + "t" * 400
    else:
        event[field] = long
    r = as_call(world, "PUT", path, body=json.dumps({"events": [event]}).encode())
    assert r.status_code in (200, 400), (r.status_code, r.text[:300])
    assert r.json() == {} or r.json().get("errcode"), r.text[:300]
    relay_check(world, f"overlong-{field}-after")


# ------------------------------------------------------------------------ IRC input (ngircd)
def matrix_events(world: World, limit: int = 300) -> list[dict[str, Any]]:
    return [e for e in world.alice.messages(world.room, limit=limit)
            if e.get("type") == "m.room.message"]


def test_invalid_utf8_nul_and_overlong_irc_lines_do_not_stop_the_bridge(world: World) -> None:
    report = Report()
    sock = world.bob.c.sock
    assert sock is not None
    sock.sendall(b"PRIVMSG " + CHANNEL.encode() + b" :latin1 caf\xe9 \xff\xfe end\r\n")
    sock.sendall(b"PRIVMSG " + CHANNEL.encode() + b" :\xc3\x28 broken utf8 seq\r\n")
    # ngircd stops reading a client after a NUL byte, so a throw-away client sends it (the
    # fake server below hands NULs to the bridge directly).
    nul_client = world.stack.irc_user("Nully")
    try:
        nul_client.join(CHANNEL)
        assert nul_client.sock is not None
        nul_client.sock.sendall(b"PRIVMSG " + CHANNEL.encode() + b" :nul\x00byte\r\n")
    finally:
        nul_client.close()
    long_client = world.stack.irc_user("Longy")
    try:
        long_client.join(CHANNEL)
        assert long_client.sock is not None
        long_client.sock.sendall(b"PRIVMSG " + CHANNEL.encode() + b" :long " + b"z" * 1500
                                 + b"\r\n")
        long_client.pump()
    except OSError:
        pass  # the daemon may drop a client that sends an overlong line
    finally:
        long_client.close()
    relay_check(world, "after-bad-irc")
    events = matrix_events(world)
    bodies = [e["content"].get("body", "") for e in events]
    latin = [b for b in bodies if b.startswith("latin1 caf")]
    report.add(f"latin-1 line arrived as {latin!r}")
    assert len(latin) == 1 and latin[0].endswith("end"), str(report)
    assert all("\x00" not in b for b in bodies), [b for b in bodies if "\x00" in b]
    assert any("broken utf8 seq" in b for b in bodies)
    for e in events:  # nothing from IRC becomes raw HTML
        html = e["content"].get("formatted_body")
        if isinstance(html, str):
            assert_safe_html(html)
    bridge_alive(world)


SPECIAL_NICKS = ["[]\\`_^{|}-", "a[b]", "c\\d", "`e", "_f_", "^g", "{h}", "i|j", "k-l",
                 "Zz[]", "x-9"]


def test_nicks_with_every_special_character_map_to_virtual_users_and_back(world: World) -> None:
    clients = []
    try:
        for nick in SPECIAL_NICKS:
            client = RawIrcClient().connect(world.stack.ircd.host, world.stack.ircd.port,
                                            nick, username="odd")
            clients.append(client)
            client.join(CHANNEL)
            client.privmsg(CHANNEL, f"nick {nick}")
        for nick in SPECIAL_NICKS:
            event = world.alice.wait_for_message(
                world.room, lambda e, n=nick: e.get("content", {}).get("body") == f"nick {n}",
                timeout=30, limit=300)
            ghost = world.stack.ghost(nick)
            assert event["sender"] == ghost, (nick, event["sender"])
            assert world.alice.profile(ghost)["displayname"] == nick
        # And back: a DM with the ghost of the oddest nick reaches that nick.
        odd = clients[0]
        ghost = world.stack.ghost(SPECIAL_NICKS[0])
        dm = world.alice.create_room(preset="trusted_private_chat", invite=[ghost],
                                     is_direct=True)
        wait_until(lambda: ghost in world.alice.joined_members(dm), 30, what="the ghost joins")
        world.alice.send_text(dm, "hello odd nick")
        msg = odd.wait_for_privmsg("hello odd nick", timeout=30)
        assert msg.target == SPECIAL_NICKS[0] and msg.nick == PUPPET
    finally:
        for client in clients:
            client.close()


# ------------------------------------------------------------------------ Matrix -> IRC safety
INJECTIONS: list[dict[str, Any]] = [
    {"msgtype": "m.text", "body": "inj 0 a\rQUIT :injected"},
    {"msgtype": "m.text", "body": "inj 1 b\nPRIVMSG #other :injected"},
    {"msgtype": "m.text", "body": "inj 2 c\x00JOIN #evil"},
    {"msgtype": "m.text", "body": "\x01VERSION\x01"},
    {"msgtype": "m.text", "body": "inj 4 d \x01ACTION fake\x01"},
    {"msgtype": "m.text", "body": "inj 5 \x03\x02 codes \x16\x0f"},
    {"msgtype": "m.emote", "body": "waves\x01\r\nQUIT :emote injection"},
    {"msgtype": "m.notice", "body": "inj 7 notice\r\nNOTICE #other :x"},
    {"msgtype": "m.text", "body": "inj 8 html",
     "format": "org.matrix.custom.html",
     "formatted_body": "<p>inj 8</p>\r\nQUIT :x<br>JOIN #evil\x00<script>alert(1)</script>"},
    {"msgtype": "m.text", "body": "\x01PING 123\x01"},
    {"msgtype": "m.text", "body": "inj 10 \u2028KICK #bad Bob\u2029MODE #bad +o x\x85y"},
    {"msgtype": "m.text", "body": "\r\n\r\n"},
]


def test_matrix_text_never_becomes_an_irc_command_or_an_unmeant_ctcp(world: World) -> None:
    bob = world.bob
    bob.c.mark()
    start = len(bob.c.history)
    for content in INJECTIONS:
        world.alice.send_event(world.room, "m.room.message", content)
    world.alice.send_text(world.room, "inj-done")
    eventually(lambda: "inj-done" in bob.channel_texts(), 30, "the end marker")
    lines = [m for m in bob.c.history[start:] if (m.nick or "").lower() == PUPPET]
    report = Report()
    for m in lines:
        report.add(repr(m.raw))
    for m in lines:
        assert m.command in ("PRIVMSG", "NOTICE"), str(report)
        assert m.target.lower() == CHANNEL, str(report)
        assert not any(c in m.raw for c in "\r\n\x00"), str(report)
        if "\x01" in m.text:  # the only CTCP is the ACTION of the m.emote, whole
            assert m.command == "PRIVMSG" and re.fullmatch(r"\x01ACTION [^\x01]*\x01", m.text), \
                str(report)
    # Only the m.emote became ACTIONs (one per line of it), never the \x01 in other texts.
    actions = [m.text for m in lines if "\x01" in m.text]
    assert actions == ["\x01ACTION waves\x01", "\x01ACTION QUIT :emote injection\x01"], \
        str(report)
    assert not any("<script" in m.text for m in lines), str(report)
    # Her puppet is still here, in #bad only, and joined nothing else.
    assert PUPPET in bob.c.names(CHANNEL)
    bob.c.send(f"WHOIS {PUPPET}")
    whois = bob.c.wait_for(lambda m: m.command in ("319", "318"), timeout=10)
    channels = whois.text.split() if whois.command == "319" else []
    assert [c.lstrip("@+") for c in channels] == [CHANNEL], whois.raw


class _TagCheck(HTMLParser):
    ALLOWED = {"b", "i", "u", "del", "code", "font", "a", "strong", "em", "s", "br", "span"}
    ATTRS = {"data-mx-color", "data-mx-bg-color", "href", "color"}

    def __init__(self) -> None:
        super().__init__()
        self.bad: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.ALLOWED:
            self.bad.append(tag)
        self.bad.extend(f"{tag}[{k}]" for k, _ in attrs if k not in self.ATTRS)
        for key, value in attrs:
            if key == "href" and value and not value.startswith(("https://", "http://")):
                self.bad.append(f"href={value}")


def assert_safe_html(html: str) -> None:
    checker = _TagCheck()
    checker.feed(html)
    assert not checker.bad, (checker.bad, html)


def test_irc_text_with_markup_reaches_matrix_escaped(world: World) -> None:
    hostile = ("\x02markup\x02 <script>alert(1)</script> <img src=x onerror=alert(2)> "
               "\x0304red</font><a href=javascript:x>y</a> &amp; \x1d<b>i</b>")
    world.bob.c.privmsg(CHANNEL, hostile)
    event = world.alice.wait_for_message(
        world.room, lambda e: "markup" in e.get("content", {}).get("body", ""), timeout=30,
        limit=300)
    content = event["content"]
    assert "<script>" in content["body"]  # the text as IRC said it, in the plain body
    assert_safe_html(content["formatted_body"])
    assert "<script" not in content["formatted_body"]
    assert "&lt;script&gt;" in content["formatted_body"]


# ------------------------------------------------------------------------ a hostile IRC server
GARBAGE: list[bytes] = [
    b"\xff\xfe\xfd\xfc", b"", b"   ", b":", b": ", b":onlyprefix", b"PRIVMSG",
    b":carol!c@h PRIVMSG", b":carol!c@h PRIVMSG #fake", b":carol!c@h PRIVMSG #fake :",
    b":fake.server 353", b":fake.server 353 ircbot", b":fake.server 366",
    b":fake.server 332 ircbot", b":fake.server 005 ircbot NICKLEN=abc CASEMAPPING= :ok",
    b":fake.server 005 ircbot NICKLEN=-5 :ok",
    b":carol!c@h MODE #fake +o", b":carol!c@h MODE #fake +k", b":carol!c@h MODE #fake",
    b":carol!c@h MODE #fake +ov carol", b":carol!c@h KICK #fake", b":carol!c@h KICK",
    b":carol!c@h NICK", b":carol!c@h JOIN", b":carol!c@h PART", b":carol!c@h TOPIC #fake",
    b":carol!c@h QUIT", b":carol!c@h NOTICE", b":fake.server 433 * ircbot :in use",
    b":fake.server 404 ircbot", b":fake.server 474", b":fake.server 001",
    b"@time=garbage :carol!c@h PRIVMSG #fake :badtime",
    b"@=;;=x;\\ :carol!c@h PRIVMSG #fake :badtags",
    b":carol!c@h PRIVMSG #fake :\x01", b":carol!c@h PRIVMSG #fake :\x01ACTION",
    b":carol!c@h PRIVMSG #fake :\x01\x01\x01", b":carol!c@h PRIVMSG #fake :" + b"\x03" * 50,
    b":!@ PRIVMSG #fake :no nick", b":carol!c@h PRIVMSG ircbot :a pm to the bot",
    b"x" * 10000, b"\x00\x00\x00", b":carol!c@h PRIVMSG #fake :nul\x00inside",
    b":carol!c@h PRIVMSG #fake :latin1 caf\xe9",
    b":carol!c@h PRIVMSG #fake :long " + b"y" * 5000,
    b"ERROR :not really",
]


def fake_room(world: World) -> str:
    """The portal room of #fake on the fake network (made on first use)."""
    if not getattr(world, "fake_room", None):
        world.fake_room = world.alice.join("#irc_fake_#fake:localhost")
    return world.fake_room


def fake_say(world: World, text: str) -> bytes:
    return f":carol!c@h PRIVMSG {FAKE_CHANNEL} :{text}\r\n".encode()


def fake_arrivals(world: World, tag: str) -> list[int]:
    return seqs_in(matrix_texts(world.alice, fake_room(world), 400), tag)


def test_garbage_from_the_irc_server_loses_no_valid_line(world: World) -> None:
    """The server sends garbage, then a valid line in the same write, then another one: the
    bridge keeps running and relays both valid lines once, in order."""
    report = Report()
    tag = "garbage"
    room = fake_room(world)
    world.fake.push("ircbot", fake_say(world, f"{tag} 0"))
    eventually(lambda: 0 in fake_arrivals(world, tag), 30, "the first valid line", interval=0.3)
    world.fake.push("ircbot", b"".join(line + b"\r\n" for line in GARBAGE)
                    + fake_say(world, f"{tag} 1"))
    world.fake.push("ircbot", fake_say(world, f"{tag} 2"))
    try:
        eventually(lambda: {1, 2} <= set(fake_arrivals(world, tag)), 30,
                   "the valid lines after the garbage", interval=0.3)
    except TimeoutError:
        pass
    bridge_alive(world)
    texts = matrix_texts(world.alice, room, 400)
    tally = Tally("fake server -> Matrix", [0, 1, 2], seqs_in(texts, tag))
    report.add(str(tally))
    report.add(f"other texts: {[t[:40] for t in texts if not t.startswith(tag)]}")
    assert tally.clean and tally.in_order, str(report)
    assert all("\x00" not in t for t in texts), str(report)
    assert any(t.startswith("latin1 caf") for t in texts), str(report)
    for e in world.alice.messages(room, limit=400):
        html = e.get("content", {}).get("formatted_body")
        if isinstance(html, str):
            assert_safe_html(html)
    # Nothing the server sent made the bridge say something on IRC it should not.
    sent = b"\n".join(world.fake.received)
    assert b"QUIT" not in sent and b"PRIVMSG carol" not in sent, sent[-2000:]
    relay_check(world, "after-garbage")  # the other network never noticed


def test_an_irc_server_closing_mid_line_is_reconnected_and_nothing_is_injected(
    world: World
) -> None:
    """The connection closes in the middle of a line: that half line is not relayed, the bot
    reconnects and rejoins, and the next valid line arrives."""
    report = Report()
    tag = "midline"
    world.fake.push("ircbot", fake_say(world, f"{tag} 0"))
    eventually(lambda: 0 in fake_arrivals(world, tag), 30, "a valid line", interval=0.3)
    joins_before = len(world.fake.joins)
    world.fake.push("ircbot", fake_say(world, f"{tag} 99").rstrip(b"\r\n"))
    world.fake.drop("ircbot")  # closed mid-line: that line never ended
    eventually(lambda: any(n == "ircbot" and c == FAKE_CHANNEL
                           for n, c in world.fake.joins[joins_before:]), 60,
               "the bot to reconnect and rejoin", interval=0.1)
    world.fake.push("ircbot", fake_say(world, f"{tag} 1"))
    eventually(lambda: 1 in fake_arrivals(world, tag), 30, "the line after the reconnect",
               interval=0.3)
    tally = Tally("fake server -> Matrix", [0, 1], fake_arrivals(world, tag))
    report.add(str(tally))
    assert tally.clean and tally.in_order, str(report)
    bridge_alive(world)


def test_a_nul_byte_from_irc_is_dropped_and_blocks_nothing(world: World) -> None:
    """IRC forbids NUL, yet a server may pass one on. The line arrives without it, and the
    lines after it still arrive (PostgreSQL text cannot hold a NUL: storing it must not fail
    for ever)."""
    world.fake.push("ircbot", fake_say(world, "nulbyte\x00inside"))
    world.fake.push("ircbot", fake_say(world, "nul-after 1"))
    room = fake_room(world)
    eventually(lambda: "nul-after 1" in matrix_texts(world.alice, room, 400), 30,
               "the line after the NUL", interval=0.3)
    texts = [t for t in matrix_texts(world.alice, room, 400) if t.startswith("nulbyte")]
    assert texts == ["nulbyteinside"], texts


def test_after_a_channel_key_is_set_new_irc_speakers_still_reach_matrix(world: World) -> None:
    """An IRC operator sets +k: the bridge may make the room invite-only, but the virtual
    users of IRC people who speak later must still get in, so their lines are not dropped."""
    bob = world.bob.c
    bob.send(f"MODE {CHANNEL} +k sekrit")
    bob.wait_for(lambda m: m.command == "MODE" and "+k" in m.raw, timeout=10)
    dora = RawIrcClient().connect(world.stack.ircd.host, world.stack.ircd.port, "Dora")
    try:
        dora.join(CHANNEL, key="sekrit")
        dora.privmsg(CHANNEL, "keyed 0")
        world.alice.wait_for_text(world.room, "keyed 0", timeout=30)
    finally:
        dora.close()
        bob.send(f"MODE {CHANNEL} -k sekrit")
