"""Nick <-> localpart and channel <-> alias rules (design.md, spec appendix mapping)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.rules.names import (
    NetworkNames,
    collision_nick,
    escape_nick,
    fold_channel,
    puppet_nick,
    unescape_nick,
    valid_nick,
)

LOCALPART = re.compile(r"^[a-z0-9._=\-/+]+$")


@pytest.mark.parametrize(
    ("nick", "localpart"),
    [
        ("bob", "bob"),
        ("Bob", "_bob"),
        ("bob_", "bob__"),
        ("[m]x", "=5bm=5dx"),
        ("a|b^c", "a=7cb=5ec"),
        ("Zoë", "_zo=c3=ab"),
        ("x=y", "x=3dy"),
    ],
)
def test_nick_maps_to_a_valid_reversible_localpart(nick: str, localpart: str) -> None:
    assert escape_nick(nick) == localpart
    assert LOCALPART.match(localpart)
    assert unescape_nick(localpart) == nick


@pytest.mark.parametrize("text", ["_", "_1", "=zz", "=5", "A", "x y", "_B"])
def test_text_that_no_nick_maps_to_is_rejected(text: str) -> None:
    assert unescape_nick(text) is None


@given(st.text(min_size=1, max_size=40))
def test_any_nick_round_trips(nick: str) -> None:
    escaped = escape_nick(nick)
    assert LOCALPART.match(escaped)
    assert unescape_nick(escaped) == nick


def test_default_template_user_ids() -> None:
    names = NetworkNames("irc_libera_{nick}", "irc_libera_{channel}", "example.org")
    assert names.user_id_for_nick("Bob") == "@irc_libera__bob:example.org"
    assert names.nick_for_user_id("@irc_libera__bob:example.org") == "Bob"
    assert names.nick_for_user_id("@irc_libera__bob:other.org") is None
    assert names.nick_for_user_id("@someone:example.org") is None
    assert names.alias_for_channel("#Matrix") == "#irc_libera_#matrix:example.org"
    assert names.channel_for_alias("#irc_libera_#matrix:example.org") == "#matrix"
    assert names.channel_for_alias("#irc_libera_nochannel:example.org") is None
    assert names.channel_for_alias("#elsewhere:example.org") is None


def test_the_founding_documents_names_work_as_templates() -> None:
    names = NetworkNames("irc.freenode.net/{nick}", "irc.freenode.net/{channel}", "hsdomain.com")
    assert names.user_id_for_nick("bob") == "@irc.freenode.net/bob:hsdomain.com"
    assert names.nick_for_user_id("@irc.freenode.net/_bob:hsdomain.com") == "Bob"
    assert names.alias_for_channel("#matrix") == "#irc.freenode.net/#matrix:hsdomain.com"
    assert names.channel_for_alias("#irc.freenode.net/#matrix:hsdomain.com") == "#matrix"


def test_puppet_nicks_are_valid_and_keep_the_suffix() -> None:
    assert puppet_nick("{localpart}[m]", "@alice:example.org", None, 30) == "alice[m]"
    long = puppet_nick("{localpart}[m]", "@" + "a" * 40 + ":example.org", None, 16)
    assert long.endswith("[m]") and len(long) == 16
    odd = puppet_nick("{localpart}[m]", "@9.x/y:example.org", None, 30)
    assert valid_nick(odd)


def test_collision_nicks_are_predictable() -> None:
    assert [collision_nick("alice[m]", i, 30) for i in (1, 2, 3, 4)] == [
        "alice[m]_", "alice[m]__", "alice[m]1", "alice[m]2"
    ]
    assert len(collision_nick("a" * 9, 3, 9)) == 9


@pytest.mark.parametrize(("casemapping", "channel", "key"), [
    (None, "#A[b]\\~", "#a{b}|^"),  # before 005: rfc1459
    ("rfc1459", "#A[b]\\~", "#a{b}|^"),
    ("RFC1459", "#A[b", "#a{b"),
    ("strict-rfc1459", "#A[b]\\~", "#a{b}|~"),
    ("ascii", "#A[b]\\~", "#a[b]\\~"),
    ("unknown-mapping", "#A[b", "#a{b"),
])
def test_fold_channel_follows_the_casemapping(casemapping: str | None, channel: str,
                                              key: str) -> None:
    assert fold_channel(casemapping, channel) == key


def test_channels_that_differ_in_brackets_are_one_key_only_under_rfc1459() -> None:
    assert fold_channel("rfc1459", "#a[b") == fold_channel("rfc1459", "#a{b")
    assert fold_channel("strict-rfc1459", "#a[b") == fold_channel("strict-rfc1459", "#a{b")
    assert fold_channel("strict-rfc1459", "#a~b") != fold_channel("strict-rfc1459", "#a^b")
    assert fold_channel("ascii", "#a[b") != fold_channel("ascii", "#a{b")
    assert fold_channel("ascii", "#A[B") == fold_channel("ascii", "#a[b")


def test_a_channel_alias_follows_the_casemapping() -> None:
    names = NetworkNames("irc_{nick}", "irc_{channel}", "example.org")
    assert names.alias_for_channel("#A[b") == "#irc_#a{b:example.org"
    assert names.alias_for_channel("#A[b", "ascii") == "#irc_#a[b:example.org"


@given(st.text(alphabet="#abcXYZ[]\\~{}|^", min_size=1, max_size=12))
def test_rfc1459_keys_are_the_keys_older_versions_stored(channel: str) -> None:
    from bridge.rules.names import irc_lower

    assert fold_channel("rfc1459", channel) == fold_channel(None, channel) == irc_lower(channel)
