"""LinkRegistry (bridge/core/links.py): links, alias locks, waiters and topics have one owner,
and every access of that state takes the registry's lock.

The topic is written on the IRC thread (`irc_topic`) and read by request threads (an alias
query creating a room): the tests run a writer thread against reader threads, with the
registry's dicts replaced by ones that fail any access made without the lock held.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from bridge.config import ini as config_module
from bridge.core.bridge import Bridge
from bridge.core.links import LinkRegistry
from bridge.irc.events import IrcTopic
from bridge.store.models import Link

K = TypeVar("K")
V = TypeVar("V")


class OwnedLock:
    """A lock that knows which thread holds it and counts its acquisitions."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.owner: int | None = None
        self.acquired = 0

    def __enter__(self) -> OwnedLock:
        self._lock.acquire()
        self.owner = threading.get_ident()
        self.acquired += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.owner = None
        self._lock.release()

    def held(self) -> bool:
        return self.owner == threading.get_ident()


class Guarded(dict[K, V]):
    """A dict whose every access asserts that the registry's lock is held by this thread."""

    def __init__(self, lock: OwnedLock, items: dict[K, V], misses: list[str]) -> None:
        super().__init__(items)
        self._guard = lock
        self._misses = misses

    def _check(self, what: str) -> None:
        if not self._guard.held():
            self._misses.append(f"{what} on {threading.current_thread().name}")


def _guarded(name: str) -> Callable[..., object]:
    def method(self: Guarded[object, object], *args: object, **kwargs: object) -> object:
        self._check(name)
        return getattr(dict, name)(self, *args, **kwargs)
    return method


for _name in ("__getitem__", "__setitem__", "__delitem__", "__contains__", "__iter__",
              "__len__", "get", "setdefault", "pop", "values", "items", "keys"):
    setattr(Guarded, _name, _guarded(_name))


def guard(registry: LinkRegistry) -> tuple[OwnedLock, list[str]]:
    """Swap the registry's lock and dicts for checking ones; returns the lock and the list
    of accesses made without it."""
    lock = OwnedLock()
    misses: list[str] = []
    registry._lock = lock  # type: ignore[assignment]
    for attr in ("_by_room", "_by_channel", "_alias_locks", "_waiters", "_topics"):
        setattr(registry, attr, Guarded(lock, getattr(registry, attr), misses))
    return lock, misses


def link(channel: str, room_id: str, network: str = "local") -> Link:
    return Link(network=network, channel=channel, channel_name=channel, room_id=room_id,
                alias=None, kind="portal")


def run_threads(writer: Callable[[], None], reader: Callable[[], None],
                readers: int = 3) -> None:
    stop = threading.Event()
    errors: list[BaseException] = []

    def read_loop() -> None:
        try:
            while not stop.is_set():
                reader()
        except BaseException as e:  # noqa: BLE001 - reported by the test thread
            errors.append(e)

    threads = [threading.Thread(target=read_loop, name=f"reader-{i}") for i in range(readers)]
    for t in threads:
        t.start()
    try:
        writer()
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert not errors, errors


# ---------------------------------------------------------------------- the registry alone


def test_topics_written_by_one_thread_read_by_others_under_the_lock() -> None:
    registry = LinkRegistry()
    lock, misses = guard(registry)
    seen: set[str] = set()

    def write() -> None:
        for i in range(2000):
            registry.set_topic("local", f"#c{i % 7}", f"topic {i}")

    run_threads(write, lambda: seen.add(registry.topic("local", "#c3")))
    assert misses == []
    assert registry.topic("local", "#c4") == "topic 1999"
    assert registry.topic("local", "#nowhere") == ""
    assert seen <= {""} | {f"topic {i}" for i in range(3, 2000, 7)}
    assert lock.acquired >= 2000


def test_links_by_room_and_by_channel() -> None:
    registry = LinkRegistry()
    _, misses = guard(registry)
    a, b = link("#a", "!r:hs"), link("#b", "!r:hs", network="other")
    registry.add_all([a, b])
    assert registry.link_for_room("!r:hs") == a
    assert registry.links_for_room("!r:hs") == [a, b]
    assert registry.link_for_channel("other", "#b") == b
    assert registry.has_channel("local", "#a") and not registry.has_channel("local", "#b")
    assert registry.room_count() == 1 and registry.links_on("other") == [b]
    a2 = link("#a2", "!r:hs")  # one channel per network and room: it replaces #a
    registry.add(a2)
    assert registry.links_for_room("!r:hs") == [b, a2]
    assert registry.claims("other", "#b", "!r:hs") == (b, b)
    assert registry.claims("local", "#x", "!r:hs") == (None, a2)
    registry.remove("!r:hs", [b])
    assert registry.links() == [a2] and registry.link_for_channel("other", "#b") is None
    new = link("#a3", "!r:hs")
    registry.rekey(a2, new)
    assert registry.link_for_channel("local", "#a2") is None
    assert registry.link_for_channel("local", "#a3") == new
    registry.remove("!r:hs", [new])
    assert registry.links() == [] and registry.link_for_room("!r:hs") is None
    assert misses == []


def test_alias_lock_is_one_per_channel_and_waiters_wake() -> None:
    registry = LinkRegistry()
    _, misses = guard(registry)
    assert registry.alias_lock("local", "#a") is registry.alias_lock("local", "#a")
    assert registry.alias_lock("local", "#a") is not registry.alias_lock("local", "#b")
    ready = registry.add_waiter("local", "#a")
    other = registry.add_waiter("local", "#b")
    threading.Thread(target=registry.wake, args=("local", "#a"), name="irc").start()
    assert ready.wait(10)
    assert not other.is_set()
    registry.remove_waiter("local", "#a", ready)
    registry.remove_waiter("local", "#a", ready)  # twice is harmless
    assert misses == []


# ---------------------------------------------------------------------- through the Bridge


@pytest.fixture
def bridge(config: config_module.Config) -> Iterator[Bridge]:
    made = Bridge(config)
    yield made
    made.client.close()


def test_bridge_topics_go_through_the_registry_lock(bridge: Bridge) -> None:
    """The IRC thread's `irc_topic` against request threads reading the topic a new room
    gets: the Bridge keeps no topic of its own, and every access takes the registry's lock."""
    assert not hasattr(bridge, "_topics")
    lock, misses = guard(bridge.registry)
    bridge.registry.add(link("#linked", "!linked:localhost"))
    topics: set[str] = set()

    def irc_thread() -> None:
        for i in range(500):
            bridge.irc_topic(IrcTopic("local", "#matrix", f"topic {i}", None))

    def request() -> None:
        topics.add(bridge.registry.topic("local", bridge.fold_channel("local", "#matrix")))
        assert bridge.link_for_room("!linked:localhost") is not None
        assert bridge.status()["rooms"] == 1

    run_threads(irc_thread, request)
    assert misses == []
    assert bridge.registry.topic("local", "#matrix") == "topic 499"
    assert topics <= {""} | {f"topic {i}" for i in range(500)}
    assert lock.acquired >= 500


def test_bridge_keeps_no_link_state_of_its_own(bridge: Bridge) -> None:
    for attr in ("_links_by_room", "_links_by_channel", "_alias_locks", "_alias_locks_guard",
                 "_channel_waiters", "_topics", "_links_lock"):
        assert not hasattr(bridge, attr), attr


def test_casemapping_rekeys_links_in_the_registry_and_the_store(bridge: Bridge) -> None:
    """A network announcing CASEMAPPING=ascii: a link stored under the rfc1459 folding moves
    to its new key, in the store and in the registry; a taken key is left alone."""
    bridge.store.open()
    try:
        moved = bridge.store.add_link("local", "#foo{1}", "#Foo[1]", "!a:localhost", None)
        bridge.store.add_link("local", "#bar{2}", "#Bar[2]", "!b:localhost", None)
        bridge.store.add_link("local", "#bar[2]", "#bar[2]", "!c:localhost", None)
        bridge.load_links()
        _, misses = guard(bridge.registry)
        bridge.portals.rekey_links("local", "ascii")
        assert misses == []
        assert bridge.registry.link_for_channel("local", "#foo{1}") is None
        new = bridge.registry.link_for_channel("local", "#foo[1]")
        assert new is not None and new.room_id == moved.room_id
        assert bridge.link_for_room("!a:localhost") == new
        kept = bridge.registry.link_for_channel("local", "#bar{2}")  # #bar[2] is taken
        assert kept is not None and kept.room_id == "!b:localhost"
        assert {(lk.channel, lk.room_id) for lk in bridge.store.all_links()} == {
            ("#foo[1]", "!a:localhost"), ("#bar{2}", "!b:localhost"),
            ("#bar[2]", "!c:localhost")}
    finally:
        bridge.store.close()
