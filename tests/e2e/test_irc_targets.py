"""Lines queue per target: a channel that refuses our JOIN holds up nothing else.

Against a real ngircd (403 for a channel name it refuses) and, for the numerics ngircd never
sends (405, 470, 477, 489), the scripted loopback server: the refused channel's lines fail
with the server's reason while the puppet's PMs and lines to other channels leave at once.
"""

from __future__ import annotations

import pytest

from bridge.devstack.ircd import IrcDaemon, ngircd_path
from bridge.devstack.ports import wait_until
from bridge.irc import IrcSide
from bridge.irc.events import IrcFailure
from bridge.irc.receipt import Receipt
from tests.irc_listener import RecordingListener
from tests.irc_side import network
from tests.scripted_irc import ScriptedIrcServer

if not ngircd_path():
    pytest.skip("the refusing channel modes are ngircd's: apt-get install ngircd",
                allow_module_level=True)


Listener = RecordingListener


def say_three(side: IrcSide, refused_channel: str, results: dict[str, tuple[bool, str | None]],
              peer: str, open_channel: str) -> None:
    """alice says a line in the refused channel, then a PM to `peer`, then a line in the open
    channel; each message's receipt lands in `results`."""
    net = side.network("t")
    assert net is not None

    def receipt(name: str) -> Receipt:
        return Receipt(lambda ok, error: results.__setitem__(name, (ok, error)))

    user = "@alice:localhost"
    side.call_sync(lambda: net.say(user, None, refused_channel, ["held"], "m.text",
                                   receipt("shut")))
    side.call_sync(lambda: net.say_private(user, peer, ["a private line"], "m.text",
                                           receipt("pm")))
    side.call_sync(lambda: net.say(user, None, open_channel, ["an open line"], "m.text",
                                   receipt("open")))


def check_results(results: dict[str, tuple[bool, str | None]], listener: Listener,
                  channel: str) -> None:
    wait_until(lambda: len(results) == 3, 15, what="every receipt")
    assert results["pm"] == (True, None) and results["open"] == (True, None)
    ok, error = results["shut"]
    assert not ok and error and "refused" in error, results
    failures = [e for e in listener.of("irc_failure") if isinstance(e, IrcFailure)]
    assert [(f.owner, f.target.lower()) for f in failures] == [("@alice:localhost", channel)], \
        failures


def test_a_join_refused_with_403_holds_up_no_other_line(ngircd: IrcDaemon) -> None:
    watcher = ngircd.client("watcher")
    watcher.join("#open")
    listener = Listener()
    side = IrcSide((network(ngircd.port),), listener, lambda n: n.bot_nick)
    side.start([])
    results: dict[str, tuple[bool, str | None]] = {}
    try:
        # ngircd answers 403 No such channel to a name it does not accept.
        say_three(side, "#bad\x07name", results, "watcher", "#open")
        # give_up_after is 600 s: before, both waited behind the refused channel's line.
        watcher.wait_for_privmsg("a private line", target="watcher", timeout=15)
        watcher.wait_for_privmsg("an open line", target="#open", timeout=15)
        check_results(results, listener, "#bad\x07name")
    finally:
        side.stop()
        watcher.close()


@pytest.mark.parametrize("refusal", [
    "405 {nick} #shut :You have joined too many channels",
    "470 {nick} #shut #overflow :Forwarding to another channel",
    "477 {nick} #shut :Cannot join channel (+r) - you need to be identified",
    "489 {nick} #shut :Cannot join channel (+S) - TLS only",
])
def test_every_join_refusal_fails_that_channels_lines_only(refusal: str) -> None:
    # ngircd cannot be made to send these; the scripted server sends them as the networks do.
    listener = Listener()
    with ScriptedIrcServer(refuse={"#shut": refusal}) as server:
        side = IrcSide((network(server.port),), listener, lambda n: n.bot_nick)
        side.start([])
        results: dict[str, tuple[bool, str | None]] = {}
        try:
            say_three(side, "#shut", results, "bob", "#open")
            check_results(results, listener, "#shut")
            client = server.client("alice[m]")
            assert client is not None
            wanted = {"PRIVMSG bob :a private line", "PRIVMSG #open :an open line"}
            sent = wait_until(lambda: wanted <= set(client.lines()) and client.lines(), 10,
                              what="the two lines at the server")
            assert not any(line.startswith("PRIVMSG #shut") for line in sent)
        finally:
            side.stop()
