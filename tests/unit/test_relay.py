"""Relay mode: who the bot relays, the lines it sends (RELAYMSG or `<alice> text`), the
config key, the room override, the admin command's grammar, and the lines on a connection
against the scripted server (relayed lines of ours are never relayed back)."""

from __future__ import annotations

from pathlib import Path

import peewee as pw
import pytest

from bridge.admin import grammar
from bridge.config import ini as config_module
from bridge.core.relay import decide, relay_nick
from bridge.devstack.ports import wait_until
from bridge.irc import relaymsg
from bridge.irc.events import IrcMessage
from bridge.irc.receipt import Receipt
from bridge.store.room_options import RoomOptions
from tests.conftest import write_config
from tests.scripted_irc import ScriptedIrcServer
from tests.unit.test_irc_wire import bridge_side, connected, network, registered


def test_who_is_relayed_room_first_then_the_network_then_the_user() -> None:
    assert not decide("off", None, "on")
    assert decide("always", None, None)
    assert decide("optional", None, "on")
    assert not decide("optional", None, "off") and not decide("optional", None, None)
    assert decide("off", True, None)  # a plumbed room: the bot relays everyone
    assert not decide("always", False, None)  # a room where people have connections


def test_the_relayed_name_is_a_nick_with_room_for_the_suffix() -> None:
    assert relay_nick("@alice:example.org", 30) == "alice"
    long = relay_nick("@averylonglocalpart:example.org", 9)
    assert long == "averylo" and len(long + "/m") == 9  # NICKLEN 9 with the suffix


def test_relaymsg_lines_where_offered_else_nick_prefixed_lines_from_the_bot() -> None:
    caps = {"draft/relaymsg": "/"}
    assert relaymsg.wire_lines(caps, "#c", "alice", ["hi", "there"], "m.text") == [
        "RELAYMSG #c alice/m :hi", "RELAYMSG #c alice/m :there"]
    assert relaymsg.wire_lines({"draft/relaymsg": ""}, "#c", "alice", ["x"], "m.emote") == [
        "RELAYMSG #c alice/m :\x01ACTION x\x01"]
    assert relaymsg.wire_lines({"draft/relaymsg": "|"}, "#c", "a", ["x"], "m.text") == [
        "RELAYMSG #c a|m :x"]
    assert relaymsg.wire_lines({}, "#c", "alice", ["hi", "there"], "m.text") == [
        "PRIVMSG #c :<alice> hi", "PRIVMSG #c :<alice> there"]
    assert relaymsg.wire_lines({}, "#c", "alice", ["waves"], "m.emote") == [
        "PRIVMSG #c :* alice waves"]
    assert relaymsg.wire_lines({}, "#c", "alice", ["n"], "m.notice") == ["NOTICE #c :<alice> n"]


def test_a_line_relayed_for_one_of_our_nicks_is_ours() -> None:
    ours = {"tbot"}.__contains__
    assert relaymsg.relayed_by_us({"draft/relaymsg": "tbot"}, ours)
    assert not relaymsg.relayed_by_us({"draft/relaymsg": "otherbot"}, ours)
    assert not relaymsg.relayed_by_us({}, ours)


def test_relay_mode_is_a_checked_network_key(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    assert config_module.load(path).networks[0].relay_mode == "off"
    text = path.read_text()
    path.write_text(text.replace("[network:", "[network:", 1).replace(
        "channels = #matrix", "channels = #matrix\nrelay_mode = optional", 1))
    assert config_module.load(path).networks[0].relay_mode == "optional"
    path.write_text(text.replace("channels = #matrix", "channels = #matrix\nrelay_mode = yes", 1))
    with pytest.raises(config_module.ConfigError, match="relay_mode"):
        config_module.load(path)


def test_a_room_overrides_the_relay_mode_and_it_survives_a_reload(tmp_path: Path) -> None:
    db = pw.SqliteDatabase(str(tmp_path / "o.db"))
    options = RoomOptions(db)
    options.load()
    assert options.relay("!r:x") is None
    options.set(room_id="!r:x", mirror_modes=True)
    options.set_relay("!r:x", True)
    options.set_relay("!s:x", False)
    again = RoomOptions(db)
    again.load()
    assert again.relay("!r:x") is True and again.relay("!s:x") is False
    assert again.mirror_modes("!r:x")  # the other options are kept
    again.set_relay("!r:x", None)
    assert again.relay("!r:x") is None


def test_the_admin_command_takes_on_or_off() -> None:
    command = grammar.parse("!relay on", ["net"])
    assert command is not None and command.args == ("on",)
    command = grammar.parse("!relay", ["net"])
    assert command is not None and command.args == ()
    with pytest.raises(grammar.CommandError):
        grammar.parse("!relay maybe", ["net"])


@pytest.mark.parametrize("offered", [True, False], ids=["relaymsg", "plain"])
def test_the_bot_relays_a_users_lines_and_ignores_its_own_relayed_lines(offered: bool) -> None:
    caps = "CAP * LS :message-tags" + (" draft/relaymsg=/" if offered else "")
    with ScriptedIrcServer(cap_ls=[caps]) as server, \
            bridge_side(network(server.port)) as (side, listener):
        net = side.network("t")
        assert net is not None
        client = registered(server, "tbot")
        bot = side.call_sync(lambda: net.bot)
        assert bot is not None
        connected(side, bot)
        side.call_sync(net.join_bot, "#c")
        wait_until(lambda: side.call_sync(lambda: "#c" in bot.channels), 5, what="bot in #c")
        results: list[tuple[bool, str | None]] = []
        side.call_sync(net.relay_say, "#c", "alice", ["hello", "world"], "m.text",
                       Receipt(lambda ok, error: results.append((ok, error))))
        wait_until(lambda: results, 5, what="the relayed lines to be sent")
        assert results == [(True, None)]
        expected = ["RELAYMSG #c alice/m :hello", "RELAYMSG #c alice/m :world"] if offered \
            else ["PRIVMSG #c :<alice> hello", "PRIVMSG #c :<alice> world"]
        wait_until(lambda: all(line in client.lines() for line in expected), 5,
                   what="the lines at the server")
        client.send("@draft/relaymsg=tbot :alice/m!relay@h PRIVMSG #c :hello")
        client.send(":bob!b@h PRIVMSG #c :a real line")
        wait_until(lambda: [e for _, e in listener.events if isinstance(e, IrcMessage)], 5,
                   what="bob's line")
        texts = [e.text for _, e in listener.events if isinstance(e, IrcMessage)]
        assert texts == ["a real line"]  # our own relayed line did not come back
        assert not server.client("alice[m]")  # no connection of Alice's was made


def test_a_refused_relaymsg_is_said_again_as_nick_text_and_the_channel_keeps_that_form() -> None:
    with ScriptedIrcServer(cap_ls=["CAP * LS :message-tags draft/relaymsg=/"]) as server, \
            bridge_side(network(server.port)) as (side, _listener):
        net = side.network("t")
        assert net is not None
        client = registered(server, "tbot")
        bot = side.call_sync(lambda: net.bot)
        assert bot is not None
        connected(side, bot)
        side.call_sync(net.join_bot, "#c")
        wait_until(lambda: side.call_sync(lambda: "#c" in bot.channels), 5, what="bot in #c")
        results: list[bool] = []
        receipt = Receipt(lambda ok, error: results.append(ok))
        side.call_sync(net.relay_say, "#c", "alice", ["shown"], "m.text", receipt)
        side.call_sync(net.relay_say, "#c", "alice", ["refused"], "m.text", receipt)
        wait_until(lambda: "RELAYMSG #c alice/m :refused" in client.lines(), 5,
                   what="the RELAYMSG lines")
        client.send("@draft/relaymsg=tbot :alice/m!r@h PRIVMSG #c :shown")  # shown back
        client.send(":scripted FAIL RELAYMSG PRIVS_NEEDED :You cannot relay messages here")
        wait_until(lambda: "PRIVMSG #c :<alice> refused" in client.lines(), 5,
                   what="the refused line said again")
        assert "PRIVMSG #c :<alice> shown" not in client.lines()  # only the refused one
        side.call_sync(net.relay_say, "#c", "alice", ["later"], "m.text", receipt)
        wait_until(lambda: "PRIVMSG #c :<alice> later" in client.lines(), 5,
                   what="the channel's later lines in the plain form")
        assert results == [True, True, True]
