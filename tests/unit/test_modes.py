"""The pure mode rules: ISUPPORT-driven parsing, prefix levels, join rules, case mapping."""

from __future__ import annotations

from bridge.irc.modes import ChannelModes, ChannelState, ModeChange, ModeSyntax, parse_modes
from bridge.rules.names import casefolder, irc_lower

NGIRCD = ModeSyntax.from_isupport({"~": "q", "&": "a", "@": "o", "%": "h", "+": "v"},
                                  ["beI", "k", "l", "imMnOPQRstVz"])


def test_isupport_decides_which_modes_take_an_argument() -> None:
    assert parse_modes(NGIRCD, ["+aeo", "Dan", "Dan!*@*", "Eve"]) == [
        ModeChange("+", "a", "Dan"), ModeChange("+", "e", "Dan!*@*"),
        ModeChange("+", "o", "Eve")]
    # A limit takes its argument only when set; a key both ways.
    assert parse_modes(NGIRCD, ["-l+o-k", "Eve", "sesame"]) == [
        ModeChange("-", "l", None), ModeChange("+", "o", "Eve"), ModeChange("-", "k", "sesame")]


def test_without_isupport_the_rfc1459_defaults_hold() -> None:
    plain = ModeSyntax.from_isupport(None, None)
    assert parse_modes(plain, ["+ov", "a", "b"]) == [ModeChange("+", "o", "a"),
                                                     ModeChange("+", "v", "b")]


def test_levels_follow_the_highest_remaining_prefix() -> None:
    state = ChannelModes()
    state.names(NGIRCD, ["@+eve", "%dan", "bob"], str.lower)
    assert (state.level("eve"), state.level("dan"), state.level("bob")) == (50, 0, 0)
    state.apply(NGIRCD, parse_modes(NGIRCD, ["-o", "Eve"]), str.lower)
    assert state.level("eve") == 1  # still +v
    state.apply(NGIRCD, parse_modes(NGIRCD, ["+q", "Eve"]), str.lower)
    assert state.level("eve") <= 50


def test_the_join_rule_follows_the_whole_mode_set() -> None:
    state = ChannelModes()
    state.reset(NGIRCD, parse_modes(NGIRCD, ["+nt"]))
    assert state.snapshot().join_rule == "public"
    state.apply(NGIRCD, parse_modes(NGIRCD, ["+ik", "sesame"]), str.lower)
    state.apply(NGIRCD, parse_modes(NGIRCD, ["-k", "sesame"]), str.lower)
    assert state.snapshot().join_rule == "invite"  # +i still holds
    state.apply(NGIRCD, parse_modes(NGIRCD, ["-i"]), str.lower)
    assert state.snapshot().join_rule == "public"
    assert ChannelState(bot_refused="Cannot join channel (+k)").private


def test_casemapping_folds_as_the_server_says() -> None:
    assert casefolder("ascii")("alice[m]") != casefolder("ascii")("alice{m}")
    assert casefolder("rfc1459")("alice[m]") == casefolder("rfc1459")("ALICE{M}")
    assert casefolder("strict-rfc1459")("a~") != casefolder("strict-rfc1459")("a^")
    assert casefolder(None) is irc_lower


def test_a_names_entry_with_one_symbol_may_hide_a_lower_prefix() -> None:
    state = ChannelModes()
    state.names(NGIRCD, ["@jay", "@+kim"], str.lower)
    minus_o = parse_modes(NGIRCD, ["-o", "Jay"])
    state.apply(NGIRCD, minus_o, str.lower)
    assert state.needs_names("jay", minus_o, str.lower)  # NAMES again: +v may remain
    assert not state.needs_names("kim", parse_modes(NGIRCD, ["-o", "Kim"]), str.lower)
