"""Retry policies: chosen per call (or per Intent), bounded by a scope, honoured on the wire.

The homeserver is `FakeHomeserver` (a real HTTP server on 127.0.0.1 answering what the test
scripts, 429 and 500 included); `requests` is not mocked. The client's waits go through its
injectable `sleep`, so backoff is observed, not slept. The senders' test runs the real
`Bridge.deliver` in the real `Senders` loop against that server.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bridge.config import ini as config_module
from bridge.core.bridge import Bridge
from bridge.devstack.ports import wait_until
from bridge.matrix import (
    DEFAULT,
    ONCE,
    QUERY,
    HomeserverClient,
    HomeserverUnavailable,
    Intent,
    IntentCache,
    LimitExceeded,
    RetryPolicy,
    at_most,
)
from bridge.pipeline.outbox import Senders
from bridge.store.models import QueuedLine, Store
from tests.conftest import write_config
from tests.unit.queues import queue_rows
from tests.unit.test_matrix_client import GHOST, SERVER, TOKEN, FakeHomeserver, Recorded, err

ROOM = "!room:localhost"  # the senders' tests (the bridge's server is localhost)


@pytest.fixture
def hs() -> Iterator[FakeHomeserver]:
    server = FakeHomeserver()
    yield server
    server.stop()


# ---------------------------------------------------------------------- the senders


def test_senders_make_one_request_per_attempt_of_their_own_loop(
    hs: FakeHomeserver, tmp_path: Path, db_url: str
) -> None:
    """A homeserver answering 500 to everything: each try of the senders' loop is one HTTP
    request, never a burst of the client's own retries inside one try."""
    hs.handler = lambda rec: err(500, "M_UNKNOWN", "down")
    config = config_module.load(write_config(tmp_path, hs_url=hs.url, db_url=db_url))
    bridge = Bridge(config)
    bridge.store.open()
    client_waits: list[float] = []
    bridge.client.sleep = client_waits.append  # an inner retry would wait here: never slept
    tries: list[int] = []
    lock = threading.Lock()

    def deliver(line: QueuedLine, retrying: bool) -> str:
        with lock:
            before = len(hs.requests)
        try:
            return bridge.deliver(line, retrying)
        finally:
            with lock:
                tries.append(len(hs.requests) - before)

    senders = Senders(bridge.store, deliver, count=1, retry_cap=0.05)
    senders.start()
    try:
        senders.dispatch(queue_rows(bridge.store, [(ROOM, "hello")]))
        wait_until(lambda: len(tries) >= 3, 30, interval=0.01,
                   what="three tries of the senders' loop")
    finally:
        senders.stop(timeout=5.0)
        bridge.store.close()
        bridge.client.close()
    assert tries[:3] == [1, 1, 1], f"requests per try: {tries}"
    assert client_waits == []
    assert all(r.path.endswith("/register") for r in hs.requests)


class RecordingSenders(Senders):
    """The real loop; its pause between tries is noted, not slept."""

    def __init__(self, store: Store, deliver: Callable[[QueuedLine, bool], str]) -> None:
        super().__init__(store, deliver, count=1)
        self.waits: list[float] = []

    def _wait(self, seconds: float) -> None:
        self.waits.append(seconds)


def test_senders_wait_out_429_retry_after_between_their_tries(
    hs: FakeHomeserver, tmp_path: Path, db_url: str
) -> None:
    hs.handler = lambda rec: err(429, "M_LIMIT_EXCEEDED", "slow down", retry_after_ms=7000)
    config = config_module.load(write_config(tmp_path, hs_url=hs.url, db_url=db_url))
    bridge = Bridge(config)
    bridge.store.open()
    client_waits: list[float] = []
    bridge.client.sleep = client_waits.append
    senders = RecordingSenders(bridge.store, bridge.deliver)
    senders.start()
    try:
        senders.dispatch(queue_rows(bridge.store, [(ROOM, "hello")]))
        wait_until(lambda: len(senders.waits) >= 2, 30, interval=0.01,
                   what="two pauses of the senders' loop")
    finally:
        senders.stop(timeout=5.0)
        bridge.store.close()
        bridge.client.close()
    assert senders.waits[0] >= 7.0 and senders.waits[1] >= 7.0
    assert client_waits == []  # the client itself never waited: one request per try
    assert len(hs.requests) in (len(senders.waits), len(senders.waits) + 1)


def test_a_user_query_tries_the_query_budget_and_no_more(
    hs: FakeHomeserver, tmp_path: Path, db_url: str
) -> None:
    """The homeserver's user query, answered while it waits: 3 tries, short waits."""
    hs.handler = lambda rec: err(500, "M_UNKNOWN", "down")
    config = config_module.load(write_config(tmp_path, hs_url=hs.url, db_url=db_url))
    bridge = Bridge(config)
    client_waits: list[float] = []
    bridge.client.sleep = client_waits.append
    try:
        with pytest.raises(HomeserverUnavailable):
            bridge.query_user("@irc_local_bob:localhost")
    finally:
        bridge.store.close()
        bridge.client.close()
    assert len(hs.requests) == QUERY.attempts == 3
    assert len(client_waits) == 2 and max(client_waits) <= QUERY.backoff_cap


# ---------------------------------------------------------------------- the client


@pytest.fixture
def sleeps() -> list[float]:
    """The client's waits between attempts, noted instead of slept."""
    return []


@pytest.fixture
def client(hs: FakeHomeserver, sleeps: list[float]) -> Iterator[HomeserverClient]:
    c = HomeserverClient(hs.url, TOKEN, server_name=SERVER)  # its own policy: DEFAULT
    c.sleep = sleeps.append
    yield c
    c.close()


def test_one_client_tries_as_each_call_says(
    hs: FakeHomeserver, client: HomeserverClient, sleeps: list[float]
) -> None:
    hs.handler = lambda rec: err(500, "M_UNKNOWN", "down")
    for policy, expected in ((ONCE, 1), (QUERY, 3), (None, DEFAULT.attempts)):
        hs.requests.clear()
        sleeps.clear()
        with pytest.raises(HomeserverUnavailable):
            client.join(ROOM, GHOST, policy=policy)
        assert len(hs.requests) == expected, policy
        assert len(sleeps) == expected - 1
    hs.requests.clear()
    sleeps.clear()
    with pytest.raises(HomeserverUnavailable):
        client.whoami(policy=QUERY)
    assert len(hs.requests) == 3
    assert all(w <= QUERY.backoff_cap for w in sleeps)


def test_the_client_default_is_its_own_policy(hs: FakeHomeserver) -> None:
    hs.handler = lambda rec: err(502, "M_UNKNOWN", "bad gateway")
    c = HomeserverClient(hs.url, TOKEN, server_name=SERVER,
                         policy=RetryPolicy(attempts=2, backoff_cap=1.0, timeout=5.0))
    c.sleep = lambda s: None
    try:
        with pytest.raises(HomeserverUnavailable):
            c.versions()
    finally:
        c.close()
    assert len(hs.requests) == 2


def test_429_retry_after_is_honoured_within_the_policy(
    hs: FakeHomeserver, client: HomeserverClient, sleeps: list[float]
) -> None:
    limited = err(429, "M_LIMIT_EXCEEDED", retry_after_ms=5000)
    hs.queue(limited, limited)
    assert client.join(ROOM, GHOST, policy=QUERY) == ROOM
    assert len(hs.requests) == 3
    assert len({r.raw_path for r in hs.requests}) == 1
    # The server's number wins over the policy's backoff cap (2 s).
    assert len(sleeps) == 2 and all(w >= 5.0 for w in sleeps)

    hs.requests.clear()
    sleeps.clear()
    hs.queue(limited)
    with pytest.raises(LimitExceeded) as info:
        client.join(ROOM, GHOST, policy=ONCE)
    assert info.value.retry_after == 5.0  # for the caller's own loop to wait out
    assert len(hs.requests) == 1 and sleeps == []


def test_a_scope_bounds_every_call_inside_in_its_thread_only(
    hs: FakeHomeserver, client: HomeserverClient
) -> None:
    hs.handler = lambda rec: err(500, "M_UNKNOWN", "down")
    other: list[int] = []

    def elsewhere() -> None:
        before = len(hs.requests)
        with pytest.raises(HomeserverUnavailable):
            client.whoami(policy=QUERY)
        other.append(len(hs.requests) - before)

    with at_most(ONCE):
        with pytest.raises(HomeserverUnavailable):
            client.join(ROOM, GHOST, policy=DEFAULT)  # asked for 8: the scope allows 1
        assert len(hs.requests) == 1
        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join(30)
    assert other == [3]  # another thread is not bounded by this one's scope
    hs.requests.clear()
    with pytest.raises(HomeserverUnavailable):
        client.whoami(policy=QUERY)  # the scope ended
    assert len(hs.requests) == 3


def test_an_intent_makes_every_call_with_its_policy(
    hs: FakeHomeserver, client: HomeserverClient
) -> None:
    hs.handler = lambda rec: err(500, "M_UNKNOWN", "down")
    cache = IntentCache()
    with pytest.raises(HomeserverUnavailable):
        Intent(client, GHOST, cache=cache, policy=ONCE).send_message(ROOM, {"body": "x"})
    assert [r.path for r in hs.requests] == ["/_matrix/client/v3/register"]
    hs.handler = None
    hs.queue(err(500, "M_UNKNOWN", "down"), err(500, "M_UNKNOWN", "down"))
    Intent(client, GHOST, cache=cache, policy=QUERY).set_displayname("bob")
    # register: two 500s then answered (3 of QUERY's 3 tries); then the name, once
    assert len(hs.requests) == 1 + 3 + 1
    assert hs.requests[-1].path.endswith("/displayname")


def test_the_policy_timeout_bounds_each_attempt(
    hs: FakeHomeserver, client: HomeserverClient
) -> None:
    release = threading.Event()

    def slow(rec: Recorded) -> tuple[int, dict[str, str]]:
        release.wait(10)
        return 200, {}

    hs.handler = slow
    try:
        with pytest.raises(HomeserverUnavailable) as info:
            client.whoami(policy=RetryPolicy(attempts=1, backoff_cap=0.0, timeout=0.2))
    finally:
        release.set()
    assert info.value.status == 0  # a read timeout, not an answer
    assert len(hs.requests) == 1


def test_policies_are_frozen_checked_and_bounded_field_by_field() -> None:
    assert QUERY.within(ONCE) == RetryPolicy(attempts=1, backoff_cap=0.0, timeout=15.0)
    assert DEFAULT.within(QUERY) == QUERY
    assert ONCE.within(ONCE) is ONCE
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT.attempts = 1  # type: ignore[misc]
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0, backoff_cap=1.0, timeout=1.0)
    with pytest.raises(ValueError):
        RetryPolicy(attempts=1, backoff_cap=1.0, timeout=0.0)
    # The answer to a query must come back before the homeserver gives up on it (60 s):
    # every attempt's timeout and every wait between them fit, with room to spare.
    worst = QUERY.attempts * QUERY.timeout + (QUERY.attempts - 1) * QUERY.backoff_cap
    assert worst < 60
