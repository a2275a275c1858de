"""Test helper: the end-to-end tests' stacks (IRC daemon + Synapse + `ircbridge run`).

`running_stack` starts a devstack on the test database (a temp-file SQLite, or the PostgreSQL
of IRCBRIDGE_TEST_DATABASE_URL, cleaned before and after), prints the bridge's log at the end
with IRCBRIDGE_SHOW_LOG set, and stops everything. `irc_world` and `observer_world` are the
two shapes most modules share: Bob on IRC in a channel before the bridge starts, Alice on
Matrix in its room, and the bridge seen to carry her into the channel. `add_to_config` and
`ircv3_stack` is a stack whose IRC server offers the caps a test needs (or the test is
skipped), with Bob asking for them. `add_to_config` and
`replace_in_config` edit the stack's config.ini in a `before_bridge` hook; `user` gives each
localpart one logged-in Matrix client per stack; `invited_room` finds a new invite by /sync.

Runs on the test's own thread.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Generic, TypeVar

import pytest

from bridge.devstack.clients import MatrixClient, RawIrcClient
from bridge.devstack.ports import wait_until
from bridge.devstack.stack import Stack
from tests.admin_db import clean
from tests.conftest import TEST_DB_ENV
from tests.traffic import IrcObserver, eventually

S = TypeVar("S", bound=Stack)
B = TypeVar("B", RawIrcClient, IrcObserver)


def database_url() -> str | None:
    """The PostgreSQL test database, or None for the stack's own temp-file SQLite."""
    return os.environ.get(TEST_DB_ENV)


@contextmanager
def running_stack(folder: Path, *, before_bridge: Callable[[Stack], None] | None = None,
                  before_start: Callable[[S], None] | None = None,
                  stack_class: Callable[..., S] = Stack,  # type: ignore[assignment]
                  log_lines: int = 400, **options: Any) -> Iterator[S]:
    """A started stack in `folder` (`options` go to the Stack), stopped at the end.
    `before_start(stack)` runs on the stack made but not started (it may skip the test);
    `before_bridge(stack)` once the daemons run, before the bridge starts."""
    url = database_url()
    clean(url)
    stack = stack_class(folder, database_url=url, **options)
    try:
        if before_start is not None:
            before_start(stack)
        stack.start(before_bridge=before_bridge)
        yield stack
    finally:
        if os.environ.get("IRCBRIDGE_SHOW_LOG"):
            print(stack.bridge.log(log_lines))
        stack.stop()
        clean(url)


def as_token(stack: Stack) -> str:
    """The bridge's as_token, from the stack's config.ini (to act as one of its users)."""
    for line in stack.config_path.read_text(encoding="utf-8").splitlines():
        if line.startswith("as_token"):
            return line.split("=", 1)[1].strip()
    raise AssertionError("no as_token in config.ini")


def add_to_config(stack: Stack, text: str) -> None:
    """Append `text` to the stack's config.ini (a `before_bridge` hook's edit)."""
    old = stack.config_path.read_text(encoding="utf-8")
    stack.config_path.write_text(old + text, encoding="utf-8")


def replace_in_config(stack: Stack, old: str, new: str) -> None:
    """Replace `old` (which must be there) by `new` in the stack's config.ini."""
    text = stack.config_path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} is not in {stack.config_path}"
    stack.config_path.write_text(text.replace(old, new), encoding="utf-8")


def user(stack: Stack, localpart: str) -> MatrixClient:
    """`localpart`'s Matrix client on `stack`, registered and logged in on first use."""
    users: dict[str, MatrixClient] = stack.__dict__.setdefault("users", {})
    if localpart not in users:
        users[localpart] = stack.matrix_user(localpart)
    return users[localpart]


class World(Generic[B]):
    """What a module's tests share: the stack, Bob on IRC, Alice on Matrix, and the room."""

    stack: Stack
    bob: B
    alice: MatrixClient
    room: str
    url: str | None


W = TypeVar("W", bound=World[IrcObserver])


@contextmanager
def irc_world(folder: Path, channel: str, **options: Any) -> Iterator[World[RawIrcClient]]:
    """Bob opens `channel` before the bridge starts (so he is its operator); Alice joins its
    room, and her puppet is in the channel."""
    w: World[RawIrcClient] = World()
    w.url = database_url()

    def bob_first(stack: Stack) -> None:
        w.bob = stack.irc_user("Bob")
        w.bob.join(channel)  # Bob opened the channel: he is its operator

    with running_stack(folder, before_bridge=bob_first, channels=channel, **options) as stack:
        w.stack = stack
        try:
            w.alice = stack.matrix_user("alice")
            w.room = w.alice.join(stack.alias(channel))
            wait_until(lambda: "alice[m]" in w.bob.names(channel), 20, what="alice's puppet")
            yield w
        finally:
            if getattr(w, "bob", None):
                w.bob.close()


@contextmanager
def observer_world(folder: Path, channel: str, *, world: W | None = None,
                   then: Callable[[W], None] | None = None, **options: Any) -> Iterator[W]:
    """Bob (an IrcObserver, whose history survives reconnects) sits in `channel` before the
    bridge starts; Alice joins its room and says "warm-up", and Bob hears her puppet.
    `world` is filled in (a new World by default); `then(world)` runs once the stack is up,
    before Alice joins."""
    w: Any = World() if world is None else world
    w.url = database_url()

    def bob_first(stack: Stack) -> None:
        w.bob = IrcObserver(stack, "Bob", channel).connect()

    with running_stack(folder, before_bridge=bob_first, channels=channel, **options) as stack:
        w.stack = stack
        try:
            if then is not None:
                then(w)
            w.alice = stack.matrix_user("alice")
            w.room = w.alice.join(stack.alias(channel))
            w.alice.send_text(w.room, "warm-up")
            eventually(lambda: "warm-up" in w.bob.channel_texts(), 30,
                       "alice's puppet to speak")
            yield w
        finally:
            if getattr(w, "bob", None):
                w.bob.close()


@contextmanager
def ircv3_stack(folder: Path, channel: str, caps: str, *, needs: str | None = None,
                **options: Any) -> Iterator[tuple[Stack, RawIrcClient]]:
    """A started stack and Bob, a raw IRC client that asked for `caps` (space-separated) and
    joined `channel` before the bridge started. Skips the test, before the bridge starts,
    when the IRC server does not offer every cap of `needs` (by default all of `caps`)."""
    from tests.e2e.test_ircv3_caps import cap_ls, request_caps

    wanted = (caps if needs is None else needs).split()
    clients: list[RawIrcClient] = []

    def offers_them(stack: Stack) -> None:
        stack.prepare()  # the IRC server only, to ask what it offers
        with stack.irc_user("prober") as prober:
            offered = cap_ls(prober)
        if any(cap not in offered for cap in wanted):
            pytest.skip(f"{stack.ircd.kind} offers no {' with '.join(wanted)}")

    def bob_arrives(stack: Stack) -> None:
        clients.append(stack.irc_user("Bob"))
        request_caps(clients[0], caps)
        clients[0].join(channel)

    try:
        with running_stack(folder, before_start=offers_them, before_bridge=bob_arrives,
                           channels=channel, **options) as stack:
            yield stack, clients[0]
    finally:
        for client in clients:
            client.close()


_SYNCS = itertools.count(1)


def invited_room(client: MatrixClient, seen: Collection[str] = ()) -> str | None:
    """A room `client` is invited to and that is not in `seen`, or None."""
    # Synapse caches identical /sync answers for a while: a new filter each time.
    limit = next(_SYNCS)
    sync = client.request("GET", "/_matrix/client/v3/sync", params={
        "timeout": "0", "filter": f'{{"room": {{"timeline": {{"limit": {limit}}}}}}}'})
    for room in sync.get("rooms", {}).get("invite", {}):
        if room not in seen:
            return room
    return None
