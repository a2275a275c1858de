"""draft/multiline: limits, a Matrix message as one batch's chunks, the wire lines of the
batch, a received batch as one line (pure parts), and both directions through a real
connection against the scripted server."""

from __future__ import annotations

import irc.client
import pytest

from bridge.devstack.ports import wait_until
from bridge.irc import multiline as wire
from bridge.irc.events import IrcMessage
from bridge.irc.receipt import Receipt
from bridge.rules import formatting, translate
from bridge.rules.multiline import (
    Continued,
    Limits,
    content_bytes,
    fits,
    joined,
    limits,
    plan,
    split_line,
)
from tests.scripted_irc import ScriptedIrcServer
from tests.unit.test_irc_wire import bridge_side, connected, network, registered

ERGO = {"batch": "", "draft/multiline": "max-bytes=4096,max-lines=100"}


def test_limits_come_from_the_cap_value_and_need_batch_too() -> None:
    assert limits(ERGO) == Limits(4096, 100)
    assert limits({"batch": "", "draft/multiline": "max-bytes=200"}) == Limits(200, 0)
    assert limits({"draft/multiline": "max-bytes=4096"}) is None  # no batch cap
    assert limits({"batch": ""}) is None
    assert limits({"batch": "", "draft/multiline": ""}) is None  # max-bytes is required
    assert limits({"batch": "", "draft/multiline": "max-bytes=x"}) is None
    assert limits({"batch": "", "draft/multiline": "max-bytes=0"}) is None


def test_a_long_line_splits_into_chunks_that_join_back_exactly() -> None:
    line = " ".join(f"word{i}" for i in range(200))
    chunks = split_line(line, 100)
    assert "".join(chunks) == line  # the dropped spaces are back
    assert all(len(c.encode()) <= 100 for c in chunks)
    assert not isinstance(chunks[0], Continued)
    assert all(isinstance(c, Continued) for c in chunks[1:])
    assert split_line("short", 100) == ["short"]
    bold = "\x02" + "é" * 300 + "\x02"  # no formatting reopened: the join is the line
    assert "".join(split_line(bold, 60)) == bold


def test_content_bytes_count_newlines_between_lines_but_not_before_a_continuation() -> None:
    assert content_bytes(["ab", "cd"]) == 5
    assert content_bytes(["ab", Continued("cd")]) == 4
    assert fits(["a"] * 100, Limits(4096, 100))
    assert not fits(["a"] * 101, Limits(4096, 100))
    assert not fits(["x" * 300] * 2, Limits(600, 0))  # 601 bytes with the newline


def test_plan_batches_a_multi_line_message_within_the_limits_only() -> None:
    ten = "\n".join(f"line {i}" for i in range(10))
    assert plan(ten, None, 400, Limits(4096, 100)) == [f"line {i}" for i in range(10)]
    assert plan("one line", None, 400, Limits(4096, 100)) is None  # nothing to batch
    assert plan(ten, None, 400, Limits(4096, 5)) is None  # more lines than max-lines
    assert plan(ten, None, 400, Limits(40, 100)) is None  # more bytes than max-bytes
    long = "y" * 900
    chunks = plan(long, None, 400, Limits(4096, 100))
    assert chunks is not None and "".join(chunks) == long and len(chunks) == 3


def _ctx(limit: Limits | None) -> translate.Context:
    class Paste:
        def link(self, mxc: str, filename: str | None) -> str:
            return "https://x/m"

        def paste(self, text: str, filename: str = "message.txt") -> str:
            return "https://x/paste"

    return translate.Context(budget=formatting.payload_budget("PRIVMSG", "#c"), max_lines=3,
                             find_message=lambda e: None, nick_for_user=lambda u: u,
                             media=Paste(), multiline=limit)


def test_translate_sends_a_long_message_as_a_batch_not_a_paste_where_the_server_batches() -> None:
    content = {"msgtype": "m.text", "body": "\n".join(f"l{i}" for i in range(10))}
    lines, _ = translate.to_irc(content, _ctx(Limits(4096, 100)))
    assert lines == [f"l{i}" for i in range(10)]
    pasted, _ = translate.to_irc(content, _ctx(None))  # today's behaviour: a paste link
    assert len(pasted) == 1 and "https://x/paste" in pasted[0]
    beyond, _ = translate.to_irc(content, _ctx(Limits(4096, 5)))  # beyond max-lines
    assert len(beyond) == 1 and "https://x/paste" in beyond[0]
    emote, _ = translate.to_irc({**content, "msgtype": "m.emote"}, _ctx(Limits(4096, 100)))
    assert len(emote) == 1  # CTCP ACTION is never batched


def test_batch_lines_tag_every_line_and_concat_the_continuations() -> None:
    out = wire.batch_lines(ERGO, "PRIVMSG", "#c", ["a", "b", Continued("c")])
    assert out is not None
    ref = out[0].split()[1][1:]
    assert out == [f"BATCH +{ref} draft/multiline #c", f"@batch={ref} PRIVMSG #c :a",
                   f"@batch={ref} PRIVMSG #c :b",
                   f"@batch={ref};draft/multiline-concat PRIVMSG #c :c", f"BATCH -{ref}"]
    assert wire.batch_lines({}, "PRIVMSG", "#c", ["a", "b"]) is None  # no capability
    assert wire.batch_lines(ERGO, "PRIVMSG", "#c", ["a"]) is None  # one line
    assert wire.batch_lines(ERGO, "PRIVMSG", "#c", ["a"] * 101) is None  # past max-lines
    other = wire.batch_lines(ERGO, "NOTICE", "#c", ["a", "b"])
    assert other is not None and other[0].split()[1] != out[0].split()[1]  # a new ref


def _event(kind: str, target: str, args: list[str], tags: dict[str, str] | None = None
           ) -> irc.client.Event:
    return irc.client.Event(kind, irc.client.NickMask("bob!b@h"), target, args,
                            [{"key": k, "value": v} for k, v in (tags or {}).items()])


def test_a_received_batch_is_one_line_with_the_first_lines_tags() -> None:
    batches = wire.IncomingBatches()
    assert batches.batch(_event("batch", "+r1", ["draft/multiline", "#c"],
                                {"msgid": "m1", "time": "B"})) is None
    assert batches.take(_event("pubmsg", "#c", ["one"], {"batch": "r1", "time": "T"}), "one")
    assert batches.take(_event("pubmsg", "#c", ["two"], {"batch": "r1"}), "two")
    assert batches.take(_event("pubmsg", "#c", [" more"],
                               {"batch": "r1", "draft/multiline-concat": ""}), " more")
    assert not batches.take(_event("pubmsg", "#c", ["x"], {"batch": "other"}), "x")
    assert not batches.take(_event("pubmsg", "#c", ["y"]), "y")
    line = batches.batch(_event("batch", "-r1", []))
    assert line is not None and line.type == "pubmsg" and line.target == "#c"
    assert line.arguments == ["one\ntwo more"]
    assert line.tags == [{"key": "msgid", "value": "m1"}, {"key": "time", "value": "B"}]
    assert batches.batch(_event("batch", "-r1", [])) is None  # closed once
    assert joined([("a", False), ("b", True), ("c", False)]) == "ab\nc"


def test_other_batch_types_and_oversized_batches_are_not_kept(
        monkeypatch: pytest.MonkeyPatch) -> None:
    batches = wire.IncomingBatches()
    batches.batch(_event("batch", "+n1", ["netsplit", "a.b", "c.d"]))
    assert not batches.take(_event("pubmsg", "#c", ["x"], {"batch": "n1"}), "x")
    monkeypatch.setattr(wire, "MAX_LINES", 2)
    batches.batch(_event("batch", "+r2", ["draft/multiline", "#c"]))
    taken = [batches.take(_event("pubmsg", "#c", [t], {"batch": "r2"}), t) for t in "abc"]
    assert taken == [True, True, False]  # the rest is relayed line by line
    line = batches.batch(_event("batch", "-r2", []))
    assert line is not None and line.arguments == ["a\nb"]


def test_a_puppet_sends_one_batch_and_a_received_batch_is_one_message() -> None:
    caps = "CAP * LS :batch message-tags draft/multiline=max-bytes=4096,max-lines=100"
    with ScriptedIrcServer(cap_ls=[caps]) as server, \
            bridge_side(network(server.port)) as (side, listener):
        net = side.network("t")
        assert net is not None
        bot_client = registered(server, "tbot")
        bot = side.call_sync(lambda: net.bot)
        assert bot is not None
        connected(side, bot)
        side.call_sync(net.join_bot, "#c")
        wait_until(lambda: side.call_sync(lambda: "#c" in bot.channels), 5, what="bot in #c")
        results: list[tuple[bool, str | None]] = []
        lines = [f"line {i}" for i in range(9)] + [Continued(" and more")]
        side.call_sync(net.say, "@p:localhost", None, "#c", lines, "m.text",
                       Receipt(lambda ok, error: results.append((ok, error))))
        puppet = registered(server, "p[m]")
        wait_until(lambda: results, 10, what="the batch to be sent")
        assert results == [(True, None)]

        def sent_batch() -> list[str] | None:
            found = [line for line in puppet.lines() if line.startswith(("BATCH", "@batch"))]
            return found if found and found[-1].startswith("BATCH -") else None

        sent = wait_until(sent_batch, 5, what="the whole batch at the server")
        ref = sent[0].split()[1][1:]
        assert sent[0] == f"BATCH +{ref} draft/multiline #c" and sent[-1] == f"BATCH -{ref}"
        assert sent[1:-1] == [f"@batch={ref} PRIVMSG #c :line {i}" for i in range(9)] + [
            f"@batch={ref};draft/multiline-concat PRIVMSG #c : and more"]
        bot_client.send(":bob!b@h BATCH +x draft/multiline #c")
        bot_client.send("@batch=x :bob!b@h PRIVMSG #c :first")
        bot_client.send("@batch=x;draft/multiline-concat :bob!b@h PRIVMSG #c : half")
        bot_client.send("@batch=x :bob!b@h PRIVMSG #c :second")
        bot_client.send(":bob!b@h BATCH -x")
        bot_client.send(":bob!b@h PRIVMSG #c :after")

        def heard() -> list[IrcMessage]:
            return [e for name, e in listener.events if isinstance(e, IrcMessage)]

        wait_until(lambda: len(heard()) >= 2, 5, what="the lines to reach the listener")
        assert [m.text for m in heard()] == ["first half\nsecond", "after"]


def test_a_batch_is_one_unit_of_the_queue_under_flood_control() -> None:
    """A batch leaves whole, in one step, for one flood token: a lost link cannot split it
    (the opening BATCH on one link, its lines on the next), and a 10-line message does not
    wait ten tokens. At 0.5 lines/s, line by line it would take over 20 s."""
    caps = "CAP * LS :batch message-tags draft/multiline=max-bytes=4096,max-lines=100"
    with ScriptedIrcServer(cap_ls=[caps]) as server, \
            bridge_side(network(server.port, flood_rate=0.5, flood_burst=1)) as (side, _):
        net = side.network("t")
        assert net is not None
        registered(server, "tbot")
        bot = side.call_sync(lambda: net.bot)
        assert bot is not None
        connected(side, bot)
        side.call_sync(net.join_bot, "#c")
        wait_until(lambda: side.call_sync(lambda: "#c" in bot.channels), 5, what="bot in #c")
        results: list[tuple[bool, str | None]] = []
        lines = [f"line {i}" for i in range(10)]
        side.call_sync(net.say, "@p:localhost", None, "#c", lines, "m.text",
                       Receipt(lambda ok, error: results.append((ok, error))))
        puppet = registered(server, "p[m]")

        def sent_batch() -> list[str] | None:
            found = [line for line in puppet.lines() if line.startswith(("BATCH", "@batch"))]
            return found if found and found[-1].startswith("BATCH -") else None

        sent = wait_until(sent_batch, 8, what="the whole batch at once")
        assert len(sent) == 12 and results == [(True, None)]
        queued = side.call_sync(lambda: [o for o in net.puppets["@p:localhost"].queue.take_all()])
        assert queued == []
