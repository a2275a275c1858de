"""Presence and typing (issue 14 items 4 and 9): the pure mappings, the +typing rate limit,
what the core hands to the IRC thread for Matrix ephemeral events, the registration flags
and the config key.

Thread: the test's own; the IRC side is a recording fake (no thread).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.config import ini as config_module
from bridge.config.registration import build
from bridge.core.presence import (
    AWAY_MAX,
    Ephemeral,
    TypingLimiter,
    away_line,
    presence_for_away,
    typing_changes,
    typing_users,
)
from bridge.irc.presence import send_typing, set_away, typing_state
from bridge.store.models import Link
from tests.conftest import write_config


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_irc_away_is_unavailable_with_its_text_and_back_is_online() -> None:
    assert presence_for_away("at lunch") == ("unavailable", "at lunch")
    assert presence_for_away(None) == ("online", "")
    assert presence_for_away("") == ("online", "")


@pytest.mark.parametrize(("presence", "status", "line"), [
    ("online", "whatever", "AWAY"),
    ("unavailable", "in a meeting", "AWAY :in a meeting"),
    ("unavailable", None, "AWAY :Away"),
    ("offline", "", "AWAY :Offline"),
    ("unavailable", "two\r\nlines\x00here", "AWAY :two lines here"),
    ("busy", "x", None),
    (None, None, None),
])
def test_matrix_presence_maps_to_one_safe_away_line(presence: object, status: object,
                                                    line: str | None) -> None:
    assert away_line(presence, status) == line


def test_a_long_status_message_is_cut() -> None:
    line = away_line("unavailable", "x" * 1000)
    assert line is not None and len(line) == len("AWAY :") + AWAY_MAX


def test_typing_changes_and_the_typing_event() -> None:
    assert typing_changes(["@a:x", "@b:x"], ["@b:x", "@c:x"]) == (["@c:x"], ["@a:x"])
    assert typing_users({"content": {"user_ids": ["@a:x", 3]}}) == ["@a:x"]
    assert typing_users({"content": {"user_ids": "@a:x"}}) is None
    assert typing_users({}) is None


def test_the_typing_tag_takes_only_the_three_states() -> None:
    assert [typing_state({"+typing": s}) for s in ("active", "paused", "done")] == [
        "active", "paused", "done"]
    assert typing_state({"+typing": "typing"}) is None
    assert typing_state({"typing": "active"}) is None  # a client tag has its +
    assert typing_state(None) is None


def test_one_typing_notice_per_three_seconds_per_user_and_target() -> None:
    clock = Clock()
    limit = TypingLimiter(3.0, clock)
    assert limit.allow("@a:x", "#c", "active")
    assert not limit.allow("@a:x", "#c", "active")  # at once again: dropped
    assert limit.allow("@b:x", "#c", "active")  # another user
    assert limit.allow("@a:x", "#d", "active")  # another target
    clock.now += 2.9
    assert not limit.allow("@a:x", "#c", "active")
    clock.now += 0.1
    assert limit.allow("@a:x", "#c", "active")


def test_done_ends_a_notice_at_once_but_only_one_that_was_sent() -> None:
    clock = Clock()
    limit = TypingLimiter(3.0, clock)
    assert not limit.allow("@a:x", "#c", "done")  # nothing to end
    assert limit.allow("@a:x", "#c", "active")
    assert limit.allow("@a:x", "#c", "done")  # not held back by the 3 s
    assert not limit.allow("@a:x", "#c", "done")  # never twice
    assert not limit.allow("@a:x", "#c", "active")  # a new notice still waits its 3 s
    clock.now += 3
    assert limit.allow("@a:x", "#c", "active")


# ---------------------------------------------------------------- the part, with fakes
class FakeIrc:
    def __init__(self) -> None:
        self.calls: list[tuple[Callable[..., object], tuple[Any, ...]]] = []

    def network(self, name: str) -> str | None:
        return f"net:{name}"

    def call(self, fn: Callable[..., object], *args: Any) -> None:
        self.calls.append((fn, args))


class FakeDirectory:
    def __init__(self, links: dict[str, list[Link]]) -> None:
        self.links = links

    def links_for_room(self, room_id: str) -> list[Link]:
        return self.links.get(room_id, [])

    def is_ours(self, user_id: str) -> bool:
        return user_id.startswith("@irc_")

    def is_foreign(self, user_id: str) -> bool:
        return user_id.startswith("@other_")


def _link(network: str, channel: str, room_id: str) -> Link:
    return Link(network, channel.lower(), channel, room_id, None, "portal")


def _part(tmp_path: Path, extra: str = "",
          clock: Callable[[], float] | None = None) -> tuple[Ephemeral, FakeIrc]:
    config = config_module.load(write_config(tmp_path, extra_network=extra))
    irc = FakeIrc()
    directory = FakeDirectory({"!r": [_link(config.networks[0].name, "#Chan", "!r")]})
    part = Ephemeral(config, None, None, irc, directory, None,  # type: ignore[arg-type]
                     clock=clock or Clock())
    return part, irc


def _typing(room_id: str, *users: str) -> dict[str, object]:
    return {"type": "m.typing", "room_id": room_id, "content": {"user_ids": list(users)}}


def test_matrix_typing_becomes_active_then_done_from_the_typists_puppet(tmp_path: Path) -> None:
    part, irc = _part(tmp_path)
    net = part.config.networks[0].name
    part.matrix_ephemeral([_typing("!r", "@alice:localhost", "@irc_local_bob:localhost",
                                   "@other_x:localhost")])
    assert irc.calls == [(send_typing, (f"net:{net}", "@alice:localhost", "#Chan", "active"))]
    part.matrix_ephemeral([_typing("!r", "@alice:localhost")])  # bob (ours) stopped: nothing
    part.matrix_ephemeral([_typing("!r")])
    assert irc.calls[1:] == [(send_typing, (f"net:{net}", "@alice:localhost", "#Chan", "done"))]
    part.matrix_ephemeral([_typing("!r", "@alice:localhost")])  # again within 3 s: held back
    part.matrix_ephemeral([_typing("!elsewhere", "@alice:localhost"),
                           {"type": "m.receipt", "room_id": "!r", "content": {}},
                           {"type": "m.typing", "room_id": "!r", "content": {}}])
    assert len(irc.calls) == 2


def test_matrix_presence_sets_away_only_where_the_network_asks(tmp_path: Path) -> None:
    part, irc = _part(tmp_path)
    presence = {"type": "m.presence", "sender": "@alice:localhost",
                "content": {"presence": "unavailable", "status_msg": "lunch"}}
    part.matrix_ephemeral([presence])
    assert irc.calls == []  # off by default
    part, irc = _part(tmp_path, "away_from_presence = true\n")
    net = part.config.networks[0].name
    part.matrix_ephemeral([presence, presence,
                           {"type": "m.presence", "sender": "@irc_local_bob:localhost",
                            "content": {"presence": "unavailable"}}])
    assert irc.calls == [(set_away, (f"net:{net}", "@alice:localhost", "AWAY :lunch"))]
    part.matrix_ephemeral([{"type": "m.presence", "sender": "@alice:localhost",
                            "content": {"presence": "online"}}])
    assert irc.calls[1:] == [(set_away, (f"net:{net}", "@alice:localhost", "AWAY"))]


def test_the_config_key_is_off_by_default(tmp_path: Path) -> None:
    config = config_module.load(write_config(tmp_path))
    assert config.networks[0].away_from_presence is False
    on = config_module.load(write_config(tmp_path, extra_network="away_from_presence = yes\n"))
    assert on.networks[0].away_from_presence is True
    assert not [w for w in on.warnings if "unknown key" in w]


def test_the_registration_asks_for_ephemeral_events(tmp_path: Path) -> None:
    registration = build(config_module.load(write_config(tmp_path)))
    assert registration["receive_ephemeral"] is True
    assert registration["de.sorunome.msc2409.push_ephemeral"] is True


def test_a_failing_ephemeral_part_never_stops_the_worker(tmp_path: Path) -> None:
    from bridge.irc.presence import IrcAway

    part, _irc = _part(tmp_path)
    part.irc_ephemeral(IrcAway("n", "bob", "x"))  # the fake directory has no names: raises
    part.irc_ephemeral(IrcAway("elsewhere", "bob", "x"))
    part.start()
    part.stop(timeout=5)
    assert part._thread is None and part._queue.empty()


# ---------------------------------------------------------------- IRC side, with fakes
class _Thread:
    def in_thread(self) -> bool:
        return True


class _Caps:
    enabled = frozenset({"message-tags"})


class _Conn:
    def __init__(self, owner: str, connected: bool = True) -> None:
        from bridge.irc.connection import State

        self.owner = owner
        self.state = State.CONNECTED if connected else State.IDLE
        self.caps = _Caps()
        self.channels = {"#chan"}
        self.sent: list[str] = []

    def send_now(self, line: str) -> bool:
        self.sent.append(line)
        return True


class _Network:
    thread = _Thread()

    def __init__(self) -> None:
        self.puppets: dict[str, Any] = {}
        self.away_lines: dict[str, str] = {}

    def fold(self, name: str) -> str:
        return name.lower()


def test_a_puppet_is_away_again_after_it_reconnects_or_is_made_later() -> None:
    from bridge.irc.presence import registered

    network = _Network()
    assert not set_away(network, "@alice:x", "AWAY :lunch")  # type: ignore[arg-type]
    conn = _Conn("@alice:x")
    network.puppets["@alice:x"] = conn
    registered(network, conn)  # type: ignore[arg-type]
    assert conn.sent == ["AWAY :lunch"]
    assert set_away(network, "@alice:x", "AWAY")  # type: ignore[arg-type]
    registered(network, conn)  # type: ignore[arg-type]
    assert conn.sent == ["AWAY :lunch", "AWAY"]


def test_typing_goes_only_from_a_connected_puppet_in_the_channel_with_message_tags() -> None:
    network = _Network()
    conn = _Conn("@alice:x")
    network.puppets["@alice:x"] = conn
    assert send_typing(network, "@alice:x", "#Chan", "active")  # type: ignore[arg-type]
    assert conn.sent == ["@+typing=active TAGMSG #Chan"]
    assert not send_typing(network, "@alice:x", "#other", "active")  # type: ignore[arg-type]
    assert not send_typing(network, "@alice:x", "#Chan", "bogus")  # type: ignore[arg-type]
    assert not send_typing(network, "@bob:x", "#Chan", "active")  # type: ignore[arg-type]
    conn.caps.enabled = frozenset()  # type: ignore[misc]
    assert not send_typing(network, "@alice:x", "#Chan", "active")  # type: ignore[arg-type]
    network.puppets["@carol:x"] = _Conn("@carol:x", connected=False)
    assert not send_typing(network, "@carol:x", "#Chan", "active")  # type: ignore[arg-type]
    assert conn.sent == ["@+typing=active TAGMSG #Chan"]


def test_a_matrix_typist_is_renewed_every_three_seconds_until_done(tmp_path: Path) -> None:
    clock = Clock()
    part, irc = _part(tmp_path, clock=clock)
    net = part.config.networks[0].name
    active = (send_typing, (f"net:{net}", "@alice:localhost", "#Chan", "active"))
    part.matrix_ephemeral([_typing("!r", "@alice:localhost")])
    part.renew()
    clock.now += 1
    part.renew()
    assert irc.calls == [active]  # IRC clients keep it for 6 s: no renewal yet
    clock.now += 2
    part.renew()
    clock.now += 3
    part.renew()
    assert irc.calls == [active] * 3
    part.matrix_ephemeral([_typing("!r")])
    clock.now += 3
    part.renew()
    assert irc.calls[3:] == [(send_typing, (f"net:{net}", "@alice:localhost", "#Chan", "done"))]


def test_a_typist_whose_end_never_came_is_let_go_after_a_minute(tmp_path: Path) -> None:
    clock = Clock()
    part, irc = _part(tmp_path, clock=clock)
    part.matrix_ephemeral([_typing("!r", "@alice:localhost")])
    for _ in range(30):
        clock.now += 3
        part.renew()
    assert len(irc.calls) == 1 + 20  # renewed up to 60 s, then no more


class _WhoNetwork(_Network):
    """A network whose relaying connection is `relay`; it keeps what it tells the core."""

    name = "t"

    def __init__(self, relay: Any) -> None:
        super().__init__()
        self.relay = relay
        self.told: list[Any] = []
        self.listener = self

    def irc_ephemeral(self, event: Any) -> None:
        self.told.append(event)

    def forwarder(self, channel: str) -> Any:
        return self.relay

    def _ours(self, nick: str) -> bool:
        return nick.endswith("[m]") or nick == "ircbot"


def _who(channel: str, nick: str, flags: str) -> Any:
    import irc.client

    return irc.client.Event("whoreply", "server", "ircbot",
                            [channel, "u", "h", "server", nick, flags, "0 Real Name"])


def test_who_on_joining_tells_who_went_away_before_we_came() -> None:
    from bridge.irc.presence import AWAY_BEFORE_US, IrcAway, ask_who_is_away, on_whoreply

    relay = _Conn("bot")
    relay.caps.enabled = frozenset({"away-notify"})  # type: ignore[misc]
    relay.send = relay.sent.append  # type: ignore[attr-defined]
    network = _WhoNetwork(relay)
    ask_who_is_away(network, relay, "#chan")  # type: ignore[arg-type]
    assert relay.sent == ["WHO #chan"]
    for nick, flags in [("gina", "G"), ("opal", "G*@"), ("bob", "H"), ("hal", "H@"),
                        ("alice[m]", "G"), ("", "G")]:
        on_whoreply(network, relay, _who("#chan", nick, flags))  # type: ignore[arg-type]
    assert network.told == [IrcAway("t", "gina", AWAY_BEFORE_US),
                            IrcAway("t", "opal", AWAY_BEFORE_US)]
    other = _Conn("@alice:x")
    on_whoreply(network, other, _who("#chan", "gina", "G"))  # type: ignore[arg-type]
    assert len(network.told) == 2, "only the relaying connection speaks for the network"


def test_no_who_without_away_notify_which_alone_would_tell_of_the_return() -> None:
    from bridge.irc.presence import ask_who_is_away

    relay = _Conn("bot")
    relay.caps.enabled = frozenset({"message-tags"})  # type: ignore[misc]
    relay.send = relay.sent.append  # type: ignore[attr-defined]
    ask_who_is_away(_WhoNetwork(relay), relay, "#chan")  # type: ignore[arg-type]
    assert relay.sent == []
