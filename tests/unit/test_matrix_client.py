"""Homeserver client and intent against a small scripted HTTP server on 127.0.0.1.

A real Synapse cannot be made to answer 429, 500 or "connection refused" on demand, so
these faults are served by `FakeHomeserver` (http.server in a thread) which records every
request; the assertions are on what actually went over the wire. `requests` is not mocked.
Waits are observed through the client's injectable `sleep`.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from bridge.matrix import (
    BadJson,
    Exclusive,
    Forbidden,
    HomeserverClient,
    HomeserverUnavailable,
    Intent,
    IntentCache,
    LimitExceeded,
    MatrixError,
    MissingToken,
    NotFound,
    NotJson,
    RetryPolicy,
    RoomInUse,
    TooLarge,
    UnknownToken,
    UserInUse,
    error_from_response,
)

TOKEN = "as_token_S3CR3T_never_in_urls_or_logs"
SERVER = "example.org"
GHOST = "@_irc_test_bob:example.org"
ROOM = "!room:example.org"

Response = tuple  # (status, body[, headers]) or a callable(rec) returning one


# ---------------------------------------------------------------------- fake homeserver


@dataclass
class Recorded:
    """One request as the server saw it."""

    method: str
    raw_path: str  # path + query exactly as sent (percent-encoded)
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.raw_path).path

    @property
    def query_string(self) -> str:
        return urlsplit(self.raw_path).query

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(self.query_string, keep_blank_values=True)

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class FakeHomeserver:
    """ThreadingHTTPServer that answers from a script, then from `default_response`."""

    port: int = 0
    requests: list[Recorded] = field(default_factory=list)
    script: deque = field(default_factory=deque)
    handler: Callable[[Recorded], Response] | None = None

    def __post_init__(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                rec = Recorded(self.command, self.path, dict(self.headers), self.rfile.read(length))
                fake.requests.append(rec)
                status, body, headers = fake.respond(rec)
                payload = body if isinstance(body, bytes) else json.dumps(body).encode()
                head = [f"HTTP/1.1 {status} X", f"Content-Length: {len(payload)}"]
                if not isinstance(body, bytes):
                    head.append("Content-Type: application/json")
                head += [f"{k}: {v}" for k, v in headers.items()]
                self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)

            do_GET = do_PUT = do_POST = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def queue(self, *responses: Response) -> None:
        self.script.extend(responses)

    def respond(self, rec: Recorded) -> tuple[int, Any, dict[str, str]]:
        if self.script:
            answer = self.script.popleft()
        elif self.handler is not None:
            answer = self.handler
        else:
            answer = default_response
        if callable(answer):
            answer = answer(rec)
        status, body, *rest = answer
        return status, body, (rest[0] if rest else {})

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def default_response(rec: Recorded) -> Response:
    """What a cooperative homeserver answers, enough for the intent tests."""
    path = unquote(rec.path)
    if path.endswith("/register"):
        return 200, {"user_id": f"@{rec.json['username']}:{SERVER}"}
    if "/join/" in path:
        return 200, {"room_id": path.rsplit("/join/", 1)[1]}
    if rec.method == "PUT" and ("/send/" in path or "/state/" in path):
        return 200, {"event_id": f"$ev{len(path)}"}
    if path.endswith("/media/v3/upload"):
        return 200, {"content_uri": f"mxc://{SERVER}/upload{len(rec.body)}"}
    if path.endswith("/createRoom"):
        return 200, {"room_id": "!new:example.org"}
    return 200, {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def hs() -> Iterator[FakeHomeserver]:
    server = FakeHomeserver()
    yield server
    server.stop()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(hs: FakeHomeserver, sleeps: list[float]) -> Iterator[HomeserverClient]:
    c = HomeserverClient(hs.url, TOKEN, server_name=SERVER,
                         policy=RetryPolicy(attempts=5, backoff_cap=30.0, timeout=5.0))
    c.sleep = sleeps.append
    yield c
    c.close()


def err(status: int, errcode: str, error: str = "", headers: dict | None = None, **extra: Any):
    return status, {"errcode": errcode, "error": error, **extra}, headers or {}


# ---------------------------------------------------------------------- auth and params


def test_token_only_in_authorization_header(hs: FakeHomeserver, client: HomeserverClient) -> None:
    client.whoami()
    client.register("_irc_test_bob")
    client.send(ROOM, "m.room.message", {"body": "hi"}, "t1", user_id=GHOST, ts=5)
    client.upload(b"\x89PNG", "image/png", "a.png")
    client.set_displayname(GHOST, "bob")

    assert len(hs.requests) == 5
    for rec in hs.requests:
        assert rec.headers["Authorization"] == f"Bearer {TOKEN}"
        assert "access_token" not in rec.query
        assert TOKEN not in rec.raw_path


def test_access_token_param_is_refused(hs: FakeHomeserver, client: HomeserverClient) -> None:
    with pytest.raises(ValueError):
        client.request("GET", "/_matrix/client/v3/account/whoami", params={"access_token": "x"})
    assert hs.requests == []


def test_user_id_and_ts_params_and_path_quoting(
    hs: FakeHomeserver, client: HomeserverClient
) -> None:
    event_id = client.send(ROOM, "m.room.message", {"body": "hi"}, "abc.1", user_id=GHOST,
                           ts=1421416883133)

    (rec,) = hs.requests
    assert event_id.startswith("$ev")
    assert rec.method == "PUT"
    assert rec.path == "/_matrix/client/v3/rooms/%21room%3Aexample.org/send/m.room.message/abc.1"
    assert rec.query == {"user_id": [GHOST], "ts": ["1421416883133"]}
    assert "user_id=%40_irc_test_bob%3Aexample.org" in rec.query_string
    assert rec.json == {"body": "hi"}


def test_ts_allowed_on_state(hs: FakeHomeserver, client: HomeserverClient) -> None:
    client.send_state(ROOM, "m.room.power_levels", "", {"users": {}}, user_id=GHOST, ts=7)
    (rec,) = hs.requests
    assert rec.path == "/_matrix/client/v3/rooms/%21room%3Aexample.org/state/m.room.power_levels/"
    assert rec.query["ts"] == ["7"]


@pytest.mark.parametrize(
    ("method", "path", "ts"),
    [
        ("POST", "/_matrix/client/v3/join/%21r", 5),
        ("POST", "/_matrix/client/v3/rooms/%21r/kick", 5),
        ("PUT", "/_matrix/client/v3/rooms/%21r/send/m.room.message/t", -1),
        ("PUT", "/_matrix/client/v3/rooms/%21r/send/m.room.message/t", 1.5),
        ("PUT", "/_matrix/client/v3/rooms/%21r/send/m.room.message/t", True),
    ],
)
def test_ts_rejected_where_not_allowed(
    hs: FakeHomeserver, client: HomeserverClient, method: str, path: str, ts: Any
) -> None:
    with pytest.raises(ValueError):
        client.request(method, path, json={}, ts=ts)
    assert hs.requests == []


def test_bot_intent_sends_no_user_id(hs: FakeHomeserver, client: HomeserverClient) -> None:
    bot = Intent(client, "@ircbot:example.org", is_bot=True, cache=IntentCache())
    bot.send_message(ROOM, {"msgtype": "m.notice", "body": "x"})
    assert [p.split("/")[4] for p in paths(hs)] == ["register", "join", "rooms"]
    assert hs.requests[0].json["username"] == "ircbot"
    assert all("user_id" not in r.query for r in hs.requests)


# ---------------------------------------------------------------------- 429 and retries


def test_429_waits_retry_after_header_and_repeats_identical_request(
    hs: FakeHomeserver, client: HomeserverClient, sleeps: list[float]
) -> None:
    hs.queue(err(429, "M_LIMIT_EXCEEDED", "slow down", {"Retry-After": "2"}))
    event_id = client.send(ROOM, "m.room.message", {"body": "hi"}, "txn-42", user_id=GHOST, ts=9)

    assert event_id.startswith("$ev")
    assert len(sleeps) == 1 and 2.0 <= sleeps[0] <= 2.2
    first, second = hs.requests
    assert first.raw_path == second.raw_path
    assert first.path.endswith("/send/m.room.message/txn-42")
    assert first.body == second.body


def test_429_waits_retry_after_ms(
    hs: FakeHomeserver, client: HomeserverClient, sleeps: list[float]
) -> None:
    hs.queue(err(429, "M_LIMIT_EXCEEDED", retry_after_ms=1500))
    client.invite(ROOM, GHOST)
    assert len(hs.requests) == 2
    assert len(sleeps) == 1 and 1.5 <= sleeps[0] <= 1.65


def test_intent_reuses_txn_id_across_429(
    hs: FakeHomeserver, client: HomeserverClient, sleeps: list[float]
) -> None:
    cache = IntentCache()
    cache.mark_registered(GHOST)
    cache.mark_joined(ROOM, GHOST)
    limited = err(429, "M_LIMIT_EXCEEDED", retry_after_ms=10)
    hs.queue(limited, limited)
    Intent(client, GHOST, cache=cache).send_message(ROOM, {"body": "x"})

    assert len(hs.requests) == 3
    assert len({r.raw_path for r in hs.requests}) == 1
    assert len(sleeps) == 2


def test_429_exhausted_raises_limit_exceeded(
    hs: FakeHomeserver, client: HomeserverClient, sleeps: list[float]
) -> None:
    hs.handler = lambda rec: err(429, "M_LIMIT_EXCEEDED", headers={"Retry-After": "3"})
    with pytest.raises(LimitExceeded) as info:
        client.join(ROOM, GHOST)
    assert info.value.retry_after == 3.0
    assert len(hs.requests) == client.policy.attempts == 5
    assert len(sleeps) == 4


def test_500_then_200(hs: FakeHomeserver, client: HomeserverClient, sleeps: list[float]) -> None:
    hs.queue(err(500, "M_UNKNOWN", "internal"))
    assert client.join(ROOM, GHOST) == ROOM
    assert len(hs.requests) == 2
    assert len(sleeps) == 1 and 0.25 <= sleeps[0] <= 0.5


def test_5xx_backoff_is_exponential_capped_and_exhausts(
    hs: FakeHomeserver, sleeps: list[float]
) -> None:
    hs.handler = lambda rec: (502, b"<html>bad gateway</html>")
    c = HomeserverClient(hs.url, TOKEN, server_name=SERVER,
                         policy=RetryPolicy(attempts=7, backoff_cap=2.0, timeout=30.0))
    c.sleep = sleeps.append
    try:
        with pytest.raises(HomeserverUnavailable) as info:
            c.whoami()
    finally:
        c.close()
    assert info.value.status == 502
    assert len(hs.requests) == 7
    bands = [(0.25, 0.5), (0.5, 1.0), (1.0, 2.0), (1.0, 2.0), (1.0, 2.0), (1.0, 2.0)]
    assert len(sleeps) == len(bands)
    for wait, (low, high) in zip(sleeps, bands, strict=True):
        assert low <= wait <= high


def test_deadline_stops_retrying(
    hs: FakeHomeserver, client: HomeserverClient, sleeps: list[float]
) -> None:
    hs.handler = lambda rec: err(503, "M_UNKNOWN")
    with pytest.raises(HomeserverUnavailable):
        # The first backoff (>= 0.25 s) would already overrun the deadline.
        client.request("GET", "/_matrix/client/v3/account/whoami",
                       deadline=time.monotonic() + 0.2)
    assert len(hs.requests) == 1
    assert sleeps == []


def test_ping_makes_one_attempt(
    hs: FakeHomeserver, client: HomeserverClient, sleeps: list[float]
) -> None:
    hs.queue(err(502, "M_CONNECTION_FAILED", "could not reach the AS"))
    with pytest.raises(HomeserverUnavailable) as info:
        client.ping("ircbridge", "ping-1")
    assert info.value.errcode == "M_CONNECTION_FAILED"
    (rec,) = hs.requests
    assert rec.method == "POST"
    assert rec.path == "/_matrix/client/v1/appservice/ircbridge/ping"
    assert rec.json == {"transaction_id": "ping-1"}
    assert sleeps == []


def test_connection_refused_then_success(sleeps: list[float]) -> None:
    port = free_port()
    servers: list[FakeHomeserver] = []

    def sleep_and_start(seconds: float) -> None:
        sleeps.append(seconds)
        if not servers:
            servers.append(FakeHomeserver(port=port))

    c = HomeserverClient(f"http://127.0.0.1:{port}", TOKEN, server_name=SERVER)
    c.sleep = sleep_and_start
    try:
        assert c.whoami() == {}
    finally:
        c.close()
        for s in servers:
            s.stop()
    assert len(sleeps) == 1 and 0.25 <= sleeps[0] <= 0.5
    assert [r.path for r in servers[0].requests] == ["/_matrix/client/v3/account/whoami"]


def test_connection_refused_exhausted(sleeps: list[float]) -> None:
    c = HomeserverClient(f"http://127.0.0.1:{free_port()}", TOKEN, server_name=SERVER,
                         policy=RetryPolicy(attempts=3, backoff_cap=30.0, timeout=30.0))
    c.sleep = sleeps.append
    try:
        with pytest.raises(HomeserverUnavailable) as info:
            c.versions()
    finally:
        c.close()
    assert info.value.status == 0
    assert len(sleeps) == 2


def test_read_timeout_is_retried(hs: FakeHomeserver, sleeps: list[float]) -> None:
    def slow(rec: Recorded) -> Response:
        time.sleep(1.0)
        return 200, {"late": True}

    hs.queue(slow)
    c = HomeserverClient(hs.url, TOKEN, server_name=SERVER,
                         policy=RetryPolicy(attempts=8, backoff_cap=30.0, timeout=0.2))
    c.sleep = sleeps.append
    try:
        assert c.request("GET", "/_matrix/client/v3/account/whoami") == {}
    finally:
        c.close()
    assert len(hs.requests) == 2
    assert len(sleeps) == 1


# ---------------------------------------------------------------------- error mapping


@pytest.mark.parametrize(
    ("status", "errcode", "cls"),
    [
        (400, "M_USER_IN_USE", UserInUse),
        (400, "M_ROOM_IN_USE", RoomInUse),
        (403, "M_FORBIDDEN", Forbidden),
        (404, "M_NOT_FOUND", NotFound),
        (401, "M_UNKNOWN_TOKEN", UnknownToken),
        (401, "M_MISSING_TOKEN", MissingToken),
        (400, "M_EXCLUSIVE", Exclusive),
        (413, "M_TOO_LARGE", TooLarge),
        (400, "M_BAD_JSON", BadJson),
        (400, "M_NOT_JSON", NotJson),
        (404, "M_UNRECOGNIZED", NotFound),
        (409, "M_UNKNOWN", MatrixError),
        (400, "IO.ELEMENT.MSC4190.M_APPSERVICE_LOGIN_UNSUPPORTED", MatrixError),
    ],
)
def test_4xx_maps_to_exception_without_retry(
    hs: FakeHomeserver, client: HomeserverClient, sleeps: list[float],
    status: int, errcode: str, cls: type[MatrixError],
) -> None:
    hs.queue(err(status, errcode, "nope"))
    with pytest.raises(MatrixError) as info:
        client.request("POST", "/_matrix/client/v3/createRoom", json={})
    assert type(info.value) is cls
    assert (info.value.status, info.value.errcode, info.value.error) == (status, errcode, "nope")
    assert info.value.body["errcode"] == errcode
    assert len(hs.requests) == 1
    assert sleeps == []


def test_error_from_response_directly() -> None:
    e = error_from_response(429, {"errcode": "M_LIMIT_EXCEEDED", "retry_after_ms": 250},
                            {"retry-after": "4"})
    assert isinstance(e, LimitExceeded) and e.retry_after == 4.0  # the header wins
    e = error_from_response(429, {"errcode": "M_LIMIT_EXCEEDED", "retry_after_ms": 250}, {})
    assert e.retry_after == 0.25
    assert isinstance(error_from_response(403, {}, {}), Forbidden)
    assert isinstance(error_from_response(503, None, None), MatrixError)


def test_non_json_2xx_is_empty_dict(hs: FakeHomeserver, client: HomeserverClient) -> None:
    hs.queue((200, b"OK"), (200, [1, 2]))
    assert client.request("GET", "/_matrix/client/versions") == {}
    assert client.request("GET", "/_matrix/client/versions") == {}


def test_token_never_in_error_str_or_logs(
    hs: FakeHomeserver, client: HomeserverClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # A hostile or buggy server echoing the token back in its error text.
    hs.queue(err(403, "M_FORBIDDEN", f"bad token {TOKEN}"), err(500, "M_UNKNOWN", TOKEN),
             err(500, "M_UNKNOWN", TOKEN))
    errors: list[MatrixError] = []
    with pytest.raises(Forbidden) as info:
        client.send(ROOM, "m.room.message", {"body": "x"}, "t", user_id=GHOST)
    errors.append(info.value)
    client.policy = RetryPolicy(attempts=2, backoff_cap=30.0, timeout=5.0)
    with pytest.raises(HomeserverUnavailable) as info2:
        client.whoami()
    errors.append(info2.value)
    dead = HomeserverClient(f"http://127.0.0.1:{free_port()}", TOKEN, server_name=SERVER,
                            policy=RetryPolicy(attempts=2, backoff_cap=30.0, timeout=30.0))
    dead.sleep = lambda s: None
    with pytest.raises(HomeserverUnavailable) as info3:
        dead.whoami()
    dead.close()
    errors.append(info3.value)

    for e in errors:
        assert TOKEN not in str(e) and TOKEN not in repr(e)
    assert "<redacted>" in str(errors[0])
    assert TOKEN not in repr(client)
    assert TOKEN not in repr(Intent(client, GHOST, cache=IntentCache()))
    assert caplog.records, "expected DEBUG log lines from the client"
    assert TOKEN not in caplog.text
    for record in caplog.records:
        assert TOKEN not in record.getMessage()


# ---------------------------------------------------------------------- txn ids


def test_txn_ids_unique_across_threads_and_instances(hs: FakeHomeserver) -> None:
    clients = [HomeserverClient(hs.url, TOKEN, server_name=SERVER) for _ in range(3)]
    seen: list[str] = []
    lock = threading.Lock()

    def worker(c: HomeserverClient) -> None:
        ids = [c.new_txn_id() for _ in range(2000)]
        with lock:
            seen.extend(ids)

    threads = [threading.Thread(target=worker, args=(c,)) for c in clients for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 3 * 6 * 2000
    assert len(set(seen)) == len(seen)
    prefixes = {s.rsplit(".", 1)[0] for s in seen}
    assert len(prefixes) == 3
    assert all(s.rsplit(".", 1)[1].isdigit() for s in seen)


# ---------------------------------------------------------------------- helpers


def test_register_body_and_user_in_use(hs: FakeHomeserver, client: HomeserverClient) -> None:
    assert client.register("_irc_test_bob") == GHOST
    assert hs.requests[0].path == "/_matrix/client/v3/register"
    assert hs.requests[0].json == {
        "type": "m.login.application_service", "username": "_irc_test_bob", "inhibit_login": True,
    }
    assert "user_id" not in hs.requests[0].query
    hs.queue(err(400, "M_USER_IN_USE", "taken"))
    with pytest.raises(UserInUse):
        client.register("_irc_test_bob")


def test_directory_and_state_lookups(hs: FakeHomeserver, client: HomeserverClient) -> None:
    hs.queue((200, {"room_id": ROOM, "servers": [SERVER]}), err(404, "M_NOT_FOUND"),
             err(404, "M_NOT_FOUND"), (200, {"users": {}}))
    assert client.resolve_alias("#_irc_test_#chan:example.org") == ROOM
    assert client.resolve_alias("#nope:example.org") is None
    assert client.get_state(ROOM, "m.room.topic") is None
    assert client.get_state(ROOM, "m.room.power_levels", user_id=GHOST) == {"users": {}}
    assert hs.requests[0].path == (
        "/_matrix/client/v3/directory/room/%23_irc_test_%23chan%3Aexample.org"
    )
    assert hs.requests[2].path.endswith("/state/m.room.topic/")
    assert hs.requests[3].query == {"user_id": [GHOST]}


def test_profile_media_and_directory_paths(hs: FakeHomeserver, client: HomeserverClient) -> None:
    hs.queue((200, {}), (200, {"content_uri": "mxc://example.org/abc"}), (200, {}),
             (200, b"file-bytes", {"Content-Type": "text/plain"}), (200, {"room_id": ROOM}))
    client.set_displayname(GHOST, "x" * 300)
    assert client.upload(b"hello", "text/plain", "a b.txt") == "mxc://example.org/abc"
    client.publish_appservice_room("libera", ROOM, "ircbridge")
    with client.download("example.org", "abc") as response:
        assert response.content == b"file-bytes"
    assert client.join("#chan:example.org", GHOST, via=["example.org", "other.org"]) == ROOM

    name, up, pub, down, join = hs.requests
    assert name.method == "PUT"
    assert name.path == "/_matrix/client/v3/profile/%40_irc_test_bob%3Aexample.org/displayname"
    assert name.query == {"user_id": [GHOST]}
    assert name.json == {"displayname": "x" * 256}
    assert (up.method, up.path, up.query) == ("POST", "/_matrix/media/v3/upload",
                                              {"filename": ["a b.txt"]})
    assert up.headers["Content-Type"] == "text/plain" and up.body == b"hello"
    assert pub.path == (
        "/_matrix/client/v3/directory/list/appservice/libera/%21room%3Aexample.org"
    )
    assert pub.json == {"visibility": "public"}
    assert down.path == "/_matrix/client/v1/media/download/example.org/abc"
    assert down.headers["Authorization"] == f"Bearer {TOKEN}"
    assert join.query == {"server_name": ["example.org", "other.org"], "user_id": [GHOST]}


# ---------------------------------------------------------------------- intent


def paths(hs: FakeHomeserver) -> list[str]:
    return [f"{r.method} {unquote(r.path)}" for r in hs.requests]


def test_intent_registers_and_joins_once(hs: FakeHomeserver, client: HomeserverClient) -> None:
    intent = Intent(client, GHOST, cache=IntentCache())
    hs.queue(err(400, "M_USER_IN_USE"))
    intent.send_message(ROOM, {"body": "1"})
    intent.send_message(ROOM, {"body": "2"})
    sends = [r for r in hs.requests if "/send/" in r.path]
    assert paths(hs)[:2] == [
        "POST /_matrix/client/v3/register", f"POST /_matrix/client/v3/join/{ROOM}"
    ]
    assert len(hs.requests) == 4 and len(sends) == 2
    assert sends[0].path != sends[1].path  # a fresh txn id per message
    assert all(r.query["user_id"] == [GHOST] for r in hs.requests[1:])


def test_intent_reregisters_on_unregistered_403(
    hs: FakeHomeserver, client: HomeserverClient
) -> None:
    cache = IntentCache()
    cache.mark_registered(GHOST)
    cache.mark_joined(ROOM, GHOST)
    hs.queue(err(403, "M_FORBIDDEN", f"Application service has not registered this user ({GHOST})"))
    Intent(client, GHOST, cache=cache).send_message(ROOM, {"body": "x"}, txn_id="durable-7")
    assert [p.split("/")[-1] for p in paths(hs)] == ["durable-7", "register", "durable-7"]


def test_intent_rejoins_on_not_in_room_403(hs: FakeHomeserver, client: HomeserverClient) -> None:
    cache = IntentCache()
    cache.mark_registered(GHOST)
    cache.mark_joined(ROOM, GHOST)
    hs.queue(err(403, "M_FORBIDDEN", f"User {GHOST} not in room {ROOM} (None)"))
    Intent(client, GHOST, cache=cache).send_message(ROOM, {"body": "x"}, txn_id="t9")
    assert paths(hs) == [
        f"PUT /_matrix/client/v3/rooms/{ROOM}/send/m.room.message/t9",
        f"POST /_matrix/client/v3/join/{ROOM}",
        f"PUT /_matrix/client/v3/rooms/{ROOM}/send/m.room.message/t9",
    ]


def test_intent_other_403_is_raised(hs: FakeHomeserver, client: HomeserverClient) -> None:
    cache = IntentCache()
    cache.mark_registered(GHOST)
    cache.mark_joined(ROOM, GHOST)
    hs.handler = lambda rec: err(403, "M_FORBIDDEN", "user_level (0) < send_level (50)")
    with pytest.raises(Forbidden):
        Intent(client, GHOST, cache=cache).send_message(ROOM, {"body": "x"})
    assert len(hs.requests) == 1


def test_intent_join_forbidden_raises(hs: FakeHomeserver, client: HomeserverClient) -> None:
    cache = IntentCache()
    cache.mark_registered(GHOST)
    hs.handler = lambda rec: err(403, "M_FORBIDDEN", "You are not invited to this room.")
    with pytest.raises(Forbidden):
        Intent(client, GHOST, cache=cache).ensure_joined(ROOM)
    assert not cache.is_joined(ROOM, GHOST)


def test_intent_displayname_only_when_changed(
    hs: FakeHomeserver, client: HomeserverClient
) -> None:
    intent = Intent(client, GHOST, cache=IntentCache())
    intent.set_displayname("bob")
    intent.set_displayname("bob")
    intent.set_displayname("bob2")
    assert paths(hs) == ["POST /_matrix/client/v3/register"] + [
        f"PUT /_matrix/client/v3/profile/{GHOST}/displayname"
    ] * 2
    assert [r.json for r in hs.requests[1:]] == [{"displayname": "bob"}, {"displayname": "bob2"}]


def test_intent_create_room_body(hs: FakeHomeserver, client: HomeserverClient) -> None:
    bot = Intent(client, "@ircbot:example.org", is_bot=True, cache=IntentCache())
    room_id = bot.create_room(
        alias_localpart="_irc_libera_#chan", name="#chan", topic="hello",
        invite=[GHOST], extra_state=[{"type": "m.room.history_visibility",
                                      "content": {"history_visibility": "joined"}}],
    )
    assert room_id == "!new:example.org"
    create = hs.requests[-1]
    assert "user_id" not in create.query
    assert create.json == {
        "preset": "public_chat", "room_alias_name": "_irc_libera_#chan", "name": "#chan",
        "topic": "hello", "invite": [GHOST],
        "initial_state": [{"type": "m.room.history_visibility", "state_key": "",
                           "content": {"history_visibility": "joined"}}],
    }
    assert bot.cache.is_joined(room_id, bot.user_id)
    with pytest.raises(ValueError):
        bot.create_room(alias_localpart="bad:server", name=None, topic=None)


def test_intent_create_room_in_use_resolves_alias(
    hs: FakeHomeserver, client: HomeserverClient
) -> None:
    bot = Intent(client, "@ircbot:example.org", is_bot=True, cache=IntentCache())
    bot.cache.mark_registered(bot.user_id)
    hs.queue(err(400, "M_ROOM_IN_USE", "Room alias already taken"), (200, {"room_id": ROOM}))
    assert bot.create_room(alias_localpart="_irc_libera_#chan", name="#chan", topic=None) == ROOM
    assert paths(hs) == [
        "POST /_matrix/client/v3/createRoom",
        "GET /_matrix/client/v3/directory/room/#_irc_libera_#chan:example.org",
        f"POST /_matrix/client/v3/join/{ROOM}",
    ]
