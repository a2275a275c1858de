"""The admin-room command parser (bridge/admin/grammar.py): tables, and a property test that
whatever a user types, parsing ends in a Command, None, or one of its own errors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.admin.grammar import (
    SPECS,
    Command,
    CommandError,
    ForbiddenCommand,
    InvalidArgument,
    NetworkRequired,
    NotAllowed,
    UnknownCommand,
    UnknownNetwork,
    UsageError,
    check_autocmd,
    command_word,
    help_text,
    parse,
    validate_raw,
)

ONE = ["local"]
TWO = ["libera", "oftc"]


@pytest.mark.parametrize(("text", "networks", "expected"), [
    ("!help", ONE, Command("help", None)),
    ("!HELP join", ONE, Command("help", None, ("join",))),
    ("!help !nick", TWO, Command("help", None, ("nick",))),
    ("  !bridgeversion  ", TWO, Command("bridgeversion", None)),
    ("!join #chan", ONE, Command("join", "local", ("#chan",))),
    ("!join #chan key", ONE, Command("join", "local", ("#chan", "key"))),
    ("!join oftc #chan", TWO, Command("join", "oftc", ("#chan",))),
    ("!join OFTC #chan k3y", TWO, Command("join", "oftc", ("#chan", "k3y"))),
    ("!part local #chan", ONE, Command("part", "local", ("#chan",))),
    ("!nick Bob", ONE, Command("nick", "local", ("Bob",))),
    ("!nick libera Bob", TWO, Command("nick", "libera", ("Bob",))),
    ("!whois local", ONE, Command("whois", "local", ("local",))),  # a nick, not the network
    ("!whois local bob", ONE, Command("whois", "local", ("bob",))),
    ("!username", ONE, Command("username", "local")),
    ("!username alice", ONE, Command("username", "local", ("alice",))),
    ("!storepass hunter2", ONE, Command("storepass", "local", ("server", "hunter2"))),
    ("!storepass local", ONE, Command("storepass", "local", ("server", "local"))),
    ("!storepass sasl", ONE, Command("storepass", "local", ("server", "sasl"))),
    ("!storepass sasl pass word", ONE, Command("storepass", "local", ("sasl", "pass word"))),
    ("!storepass oftc server p:w", TWO, Command("storepass", "oftc", ("server", "p:w"))),
    ("!removepass", ONE, Command("removepass", "local")),
    ("!certfp", ONE, Command("certfp", "local", ("show",))),
    ("!certfp NEW", ONE, Command("certfp", "local", ("new",))),
    ("!autocmd", ONE, Command("autocmd", "local", ("list",))),
    ("!autocmd add privmsg NickServ :IDENTIFY  x", ONE,
     Command("autocmd", "local", ("add", "PRIVMSG NickServ :IDENTIFY  x"))),
    ("!autocmd remove 2", ONE, Command("autocmd", "local", ("remove", "2"))),
    ("!autocmd clear", ONE, Command("autocmd", "local", ("clear",))),
    ("!reconnect", ONE, Command("reconnect", "local")),
    ("!reconnect oftc", TWO, Command("reconnect", "oftc")),
    ("!quit", ONE, Command("quit", "local")),
    ("!listrooms", TWO, Command("listrooms", None)),
    ("!listrooms libera", TWO, Command("listrooms", "libera")),
    ("!status", TWO, Command("status", None)),
    ("!cmd MODE me +x", ONE, Command("cmd", "local", ("MODE me +x",))),
    ("!cmd oftc privmsg bob :hi  there", TWO, Command("cmd", "oftc", ("PRIVMSG bob :hi  there",))),
    ("hello", ONE, None),
    ("", ONE, None),
    ("not !help", ONE, None),
])
def test_parse(text: str, networks: list[str], expected: Command | None) -> None:
    assert parse(text, networks) == expected


@pytest.mark.parametrize(("text", "networks", "error", "says"), [
    ("!", ONE, UnknownCommand, "!help"),
    ("!jion #a", ONE, UnknownCommand, "Did you mean !join?"),
    ("!frobnicate", ONE, UnknownCommand, "Say !help"),
    ("!help frob", ONE, UnknownCommand, "Unknown command !frob"),
    ("!join", ONE, UsageError, "Usage: !join [network] #channel [key]"),
    ("!join chan", ONE, InvalidArgument, "not an IRC channel"),
    ("!join #a b c", ONE, UsageError, "Too many arguments"),
    ("!join #chan", TWO, NetworkRequired, "libera, oftc"),
    ("!join efnet #chan", TWO, UnknownNetwork, "'efnet'"),
    ("!reconnect efnet", ONE, UnknownNetwork, "configured: local"),
    ("!part #", ONE, InvalidArgument, "not an IRC channel"),
    ("!nick 1abc", ONE, InvalidArgument, "not a valid IRC nick"),
    ("!nick a b", ONE, UnknownNetwork, "'a'"),
    ("!whois", ONE, UsageError, "Missing argument"),
    ("!username bad/name", ONE, InvalidArgument, "username"),
    ("!username waytoolongname", ONE, InvalidArgument, "1 to 10"),
    ("!storepass", ONE, UsageError, "Missing argument"),
    ("!certfp burn", ONE, InvalidArgument, "Unknown action"),
    ("!autocmd add", ONE, UsageError, "Missing the IRC line"),
    ("!autocmd add QUIT :bye", ONE, ForbiddenCommand, "use !quit"),
    ("!autocmd remove x", ONE, UsageError, "by its number"),
    ("!autocmd frob", ONE, InvalidArgument, "Unknown action"),
    ("!cmd", ONE, UsageError, "Missing argument"),
    ("!cmd QUIT :bye", ONE, ForbiddenCommand, "QUIT cannot be sent"),
    ("!cmd pass secret", ONE, ForbiddenCommand, "PASS"),
    ("!cmd NICK other", ONE, ForbiddenCommand, "use !nick"),
    ("!cmd CAP REQ :sasl", ONE, ForbiddenCommand, "CAP"),
    ("!cmd 123abc x", ONE, InvalidArgument, "is not an IRC command"),
    ("!cmd PRIVMSG x :" + "y" * 600, ONE, InvalidArgument, "510 bytes"),
    ("!join #a\n!join #b", ONE, InvalidArgument, "one command per message"),
    ("!bridgeversion now", ONE, UsageError, "Too many arguments"),
    ("!help a b", ONE, UsageError, "Too many arguments"),
])
def test_parse_errors(text: str, networks: list[str], error: type[CommandError],
                      says: str) -> None:
    with pytest.raises(error) as caught:
        parse(text, networks)
    assert says in str(caught.value)


def test_a_stored_password_never_shows_in_repr_or_logs() -> None:
    command = parse("!storepass sasl hunter2hunter2", ONE)
    assert command is not None and command.args == ("sasl", "hunter2hunter2")
    assert "hunter2" not in repr(command) and "hunter2" not in str(command)
    autocmd = parse("!autocmd add PRIVMSG NickServ :IDENTIFY hunter2", ONE)
    assert "hunter2" not in repr(autocmd)


@pytest.mark.parametrize(("line", "expected"), [
    ("privmsg bob :hi", "PRIVMSG bob :hi"),
    ("MODE me +i", "MODE me +i"),
    ("AWAY", "AWAY"),
    ("001 x", "001 x"),
])
def test_validate_raw(line: str, expected: str) -> None:
    assert validate_raw("cmd", line) == expected


def test_autocmd_for_users_is_limited_to_services_and_modes() -> None:
    check_autocmd("PRIVMSG NickServ :IDENTIFY x", is_admin=False)
    check_autocmd("MODE me +x", is_admin=False)
    with pytest.raises(NotAllowed, match="Only bridge admins"):
        check_autocmd("KILL someone :bye", is_admin=False)
    check_autocmd("KILL someone :bye", is_admin=True)


def test_command_word() -> None:
    assert command_word("  !StorePass x") == "storepass"
    assert command_word("!") == ""
    assert command_word("hi") is None


def test_help_lists_every_command_and_hides_admin_ones_from_users() -> None:
    for_admins = help_text(is_admin=True)
    for_users = help_text(is_admin=False)
    for name, spec in SPECS.items():
        assert f"!{name}" in for_admins
        assert (f"!{name}" in for_users) is not spec.admin
    assert help_text("join").startswith("!join [network] #channel [key]")


words = st.sampled_from(["!", "!help", "!join", "!storepass", "!cmd", "!autocmd", "add",
                         "remove", "sasl", "local", "oftc", "#chan", "QUIT", "PASS", " ",
                         "\n", "\x00", "#", ":", "1", "!nick", "!whois", "!certfp"])


@settings(max_examples=400, deadline=None)
@given(text=st.one_of(st.text(), st.lists(words).map("".join),
                      st.lists(st.one_of(words, st.text(max_size=5))).map(" ".join)),
       networks=st.sampled_from([ONE, TWO, ["a"], ["A.b-c_d", "x"]]))
def test_parse_never_raises_anything_but_its_own_errors(text: str, networks: list[str]) -> None:
    try:
        result = parse(text, networks)
    except CommandError as e:
        assert str(e)  # always something to tell the user
        return
    assert result is None or (result.name in SPECS and isinstance(result.args, tuple))
    if result is not None and result.network is not None:
        assert result.network in networks


@pytest.mark.parametrize("body", [
    "!storepass hunter2",
    "!StorePass\u00a0hunter2",
    "!autocmd add PRIVMSG NickServ :IDENTIFY x",
    "!autocmd add\tPRIVMSG NickServ :IDENTIFY x",
    "!autocmd\u00a0add\u00a0PRIVMSG NickServ :IDENTIFY x",
    "!autocmd\u2003ADD PRIVMSG NickServ :IDENTIFY x",
    "!autocmd local add PRIVMSG NickServ :IDENTIFY x",
    " \u00a0!autocmd add PRIVMSG NickServ :IDENTIFY x",
    "!cmd PRIVMSG NickServ :IDENTIFY x",
    "!CMD\tPRIVMSG NickServ :IDENTIFY x",
    "!join #staff sekrit",
    "!join\u00a0local #staff sekrit",
])
def test_every_command_that_may_hold_a_secret_is_recognised(body: str) -> None:
    from bridge.admin.runner import secret_message

    assert secret_message(body)


@pytest.mark.parametrize("body", ["!autocmd list", "!autocmd", "!join #open", "!help",
                                  "!status", "hello add there"])
def test_commands_without_secrets_are_not_scrubbed(body: str) -> None:
    from bridge.admin.runner import secret_message

    assert not secret_message(body)


def test_parsing_and_the_secret_check_read_the_same_words() -> None:
    command = parse("!autocmd\u00a0add\tPRIVMSG NickServ :IDENTIFY x", ONE)
    assert command == Command("autocmd", "local", ("add", "PRIVMSG NickServ :IDENTIFY x"))
    assert "IDENTIFY" not in repr(command)
    assert "sekrit" not in repr(parse("!join #staff sekrit", ONE))
