"""echo-message, labels and client tags on what we send (bridge.irc.echo, bridge.irc.tags)."""

from __future__ import annotations

from collections.abc import Callable

import irc.client
import pytest

from bridge.core.msgids import reply_tags
from bridge.irc import tags
from bridge.irc.echo import EchoWaits, MessageSend
from bridge.irc.reactor import BridgeServerConnection, SelectorReactor
from bridge.irc.receipt import Receipt


def test_tag_values_are_escaped_per_the_spec() -> None:
    assert tags.escape_value("a b;c\\d\re\nf\0g") == "a\\sb\\:c\\\\d\\re\\nf" + "g"
    prefix = tags.tag_prefix({"+draft/reply": "id 1;x\r\n", "+draft/react": "👍"})
    assert prefix == "@+draft/reply=id\\s1\\:x\\r\\n;+draft/react=👍 "
    for bad in ("\r", "\n", ";x"):
        assert bad not in prefix[1:-1].replace("\\:", "")
    assert " " not in prefix[:-1]


def test_bad_keys_are_dropped_and_oversized_tags_are_not_sent() -> None:
    assert tags.tag_prefix({"+ok": "1", "bad key": "x", "@x": "y", "a;b": "c"}) == "@+ok=1 "
    assert tags.tag_prefix({}) == "" and tags.tag_prefix(None) == ""
    assert tags.tag_prefix({"+draft/reply": "x" * 5000}) == ""
    assert tags.with_tags("PRIVMSG #a :hi", {"+typing": ""}) == "@+typing PRIVMSG #a :hi"
    assert tags.split_tags("@a=b PRIVMSG #a :x") == ("@a=b ", "PRIVMSG #a :x")
    assert tags.split_tags("PRIVMSG #a :x") == ("", "PRIVMSG #a :x")


def test_the_512_byte_limit_counts_no_tags() -> None:
    conn = BridgeServerConnection(SelectorReactor())
    body = "PRIVMSG #a :" + "x" * 490
    data = conn._prep_message("@+draft/reply=" + "m" * 600 + " " + body)
    assert data.endswith(body.encode() + b"\r\n")
    with pytest.raises(irc.client.MessageTooLong):
        conn._prep_message("@a=b " + body + "y" * 20)
    with pytest.raises(irc.client.MessageTooLong):
        conn._prep_message("@a=" + "v" * 4100 + " PRIVMSG #a :x")


class Heard:
    def __init__(self) -> None:
        self.finished: list[tuple[bool, str | None]] = []
        self.msgids: list[tuple[str, int]] = []

    def receipt(self) -> Receipt:
        return Receipt(lambda ok, error: self.finished.append((ok, error)),
                       echoed=lambda msgid, ts: self.msgids.append((msgid, ts)))


class Timers:
    def __init__(self) -> None:
        self.due: list[Callable[[], None]] = []

    def call_later(self, delay: float, fn: Callable[[], None]) -> Timers.Handle:
        self.due.append(fn)
        return Timers.Handle()

    class Handle:
        def cancel(self) -> None:
            pass


ECHO = {"echo-message": "", "message-tags": ""}


def test_without_echo_message_a_message_is_done_once_its_lines_left() -> None:
    heard = Heard()
    send = MessageSend({}, EchoWaits(), 2, heard.receipt())
    line, done = send.line("PRIVMSG", "#a", "#a", "hi", "hi", {"+draft/reply": "m1"})
    assert line == "PRIVMSG #a :hi"  # no message-tags: no client tags
    done(True, None)
    assert heard.finished == []
    send.line("PRIVMSG", "#a", "#a", "two", "two")[1](True, None)
    assert heard.finished == [(True, None)]


def test_with_echo_message_it_is_done_when_the_echoes_came_and_keeps_their_msgids() -> None:
    heard, waits = Heard(), EchoWaits()
    send = MessageSend(ECHO, waits, 2, heard.receipt())
    first, done1 = send.line("PRIVMSG", "#A", "#a", "one", "one", {"+draft/reply": "m0"})
    assert first == "@+draft/reply=m0 PRIVMSG #A :one"
    _, done2 = send.line("PRIVMSG", "#A", "#a", "two", "two")
    done1(True, None)
    done2(True, None)
    assert heard.finished == [] and len(waits) == 2
    assert not waits.echo("#a", "three", None, "x", 5)  # not ours
    assert waits.echo("#a", "one", None, "id1", 10)
    assert heard.finished == []
    assert waits.echo("#a", "two", None, "id2", 11)
    assert heard.finished == [(True, None)]
    assert heard.msgids == [("id1", 10), ("id2", 11)]


def test_same_text_twice_is_matched_in_order() -> None:
    a, b, waits = Heard(), Heard(), EchoWaits()
    for heard in (a, b):
        send = MessageSend(ECHO, waits, 1, heard.receipt())
        send.line("PRIVMSG", "#a", "#a", "same", "same")[1](True, None)
    waits.echo("#a", "same", None, "first", 1)
    assert a.msgids == [("first", 1)] and b.msgids == []
    waits.echo("#a", "same", None, "second", 2)
    assert b.msgids == [("second", 2)]


def test_with_labeled_response_the_label_decides() -> None:
    heard, waits = Heard(), EchoWaits()
    send = MessageSend({**ECHO, "labeled-response": ""}, waits, 1, heard.receipt())
    line, done = send.line("PRIVMSG", "#a", "#a", "hi", "hi")
    assert line == "@label=ib1 PRIVMSG #a :hi"
    done(True, None)
    assert not waits.echo("#a", "hi", "ib9", "x", 1)  # another label: not this line
    assert waits.echo("#a", "changed by the server", "ib1", "m", 1)
    assert heard.finished == [(True, None)]


def test_a_refused_line_is_not_delivered() -> None:
    heard, waits = Heard(), EchoWaits()
    send = MessageSend(ECHO, waits, 2, heard.receipt())
    send.line("PRIVMSG", "#a", "#a", "one", "one")[1](True, None)
    send.line("PRIVMSG", "#a", "#a", "two", "two")[1](True, None)
    assert waits.refused("#b", None, "nope") is None
    assert waits.refused("#a", None, "refused: +m") == "#a"
    waits.echo("#a", "two", None, "m2", 1)
    assert heard.finished == [(False, "refused: +m")]
    # FAIL without a label: the oldest line waiting anywhere
    other = Heard()
    MessageSend(ECHO, waits, 1, other.receipt()).line("NOTICE", "bob", "bob", "x", "x")[1](
        True, None)
    assert waits.refused(None, None, "FAIL") == "bob"
    assert other.finished == [(False, "FAIL")]


def test_no_echo_in_time_or_a_lost_link_counts_as_delivered() -> None:
    timers = Timers()
    heard, waits = Heard(), EchoWaits(timers.call_later, timeout=1)
    MessageSend(ECHO, waits, 1, heard.receipt()).line("PRIVMSG", "#a", "#a", "x", "x")[1](
        True, None)
    timers.due.pop()()
    assert heard.finished == [(True, None)] and len(waits) == 0
    lost = Heard()
    MessageSend(ECHO, waits, 1, lost.receipt()).line("PRIVMSG", "#a", "#a", "y", "y")[1](
        True, None)
    waits.lost()
    assert lost.finished == [(True, None)]
    failed = Heard()
    MessageSend(ECHO, waits, 1, failed.receipt()).line("PRIVMSG", "#a", "#a", "z", "z")[1](
        False, "not sent: the connection is down")
    assert failed.finished == [(False, "not sent: the connection is down")] and not len(waits)


class FakeStore:
    def msgid_of_event(self, network: str, event_id: str) -> str | None:
        return {"$known": "msg-1"}.get(event_id)


def test_a_matrix_reply_names_the_msgid_of_what_it_replies_to() -> None:
    store = FakeStore()
    reply = {"body": "x", "m.relates_to": {"m.in_reply_to": {"event_id": "$known"}}}
    assert reply_tags(store, "n", reply) == {"+draft/reply": "msg-1"}  # type: ignore[arg-type]
    unknown = {"body": "x", "m.relates_to": {"m.in_reply_to": {"event_id": "$other"}}}
    assert reply_tags(store, "n", unknown) == {}  # type: ignore[arg-type]
    assert reply_tags(store, "n", {"body": "plain"}) == {}  # type: ignore[arg-type]


def test_our_own_echo_is_parsed_on_a_connection_that_does_not_relay_the_channel() -> None:
    conn = BridgeServerConnection.__new__(BridgeServerConnection)
    conn.relays = lambda channel: False
    conn.real_nickname = "alice[m]"
    assert conn._someone_elses(":bob!u@h PRIVMSG #other :someone else's copy")
    assert not conn._someone_elses("@msgid=x :alice[m]!u@h PRIVMSG #other :our echo")


class ReplyStore:
    def event_of_msgid(self, network: str, msgid: str) -> tuple[str, str] | None:
        return {"m-here": ("!room", "$orig"), "m-pm": ("!other", "$pm")}.get(msgid)


def test_an_irc_line_with_draft_reply_becomes_an_in_reply_to_of_this_room_only() -> None:
    from bridge.core.msgids import in_reply_to
    from bridge.store.models import QueuedLine

    def line(reply_to: str | None) -> QueuedLine:
        return QueuedLine(id=1, room_id="!room", network="n", sender="@g:x", nick="bob",  # type: ignore[arg-type]
                          msgtype="m.text", body="b", html=None, ts=1, reply_to=reply_to)

    content: dict[str, object] = {"body": "b"}
    in_reply_to(ReplyStore(), line("m-here"), "!room", content)  # type: ignore[arg-type]
    assert content["m.relates_to"] == {"m.in_reply_to": {"event_id": "$orig"}}
    for other in ("m-pm", "unknown", None):
        plain: dict[str, object] = {"body": "b"}
        in_reply_to(ReplyStore(), line(other), "!room", plain)  # type: ignore[arg-type]
        assert "m.relates_to" not in plain


def test_a_matrix_reaction_and_its_short_line() -> None:
    from bridge.core import reactions

    content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": "$e", "key": "👍\r\n"}}
    found = reactions.reaction_of(content)  # type: ignore[arg-type]
    assert found is not None and found.event_id == "$e" and found.key == "👍"
    assert reactions.reaction_of({"m.relates_to": {"rel_type": "m.reference"}}) is None
    assert reactions.fallback_line("👍", "first words of a much longer message here") == \
        'reacted 👍 to "first words of a much longer..."'
    assert reactions.fallback_line("ok", "short") == 'reacted ok to "short"'
    assert tags.tag_prefix(reactions.react_tags("a b", "m;1")) == \
        "@+draft/react=a\\sb;+draft/reply=m\\:1 "


def test_an_irc_react_tagmsg_and_its_matrix_reaction() -> None:
    from bridge.core import reactions
    from bridge.irc.reactions import reaction_from_tags
    from bridge.store import kinds

    assert reaction_from_tags({"+draft/react": "🎉", "+draft/reply": "m1"}) == ("🎉", "m1")
    assert reaction_from_tags({"+draft/react": "🎉"}) is None  # reacting to nothing
    assert reaction_from_tags({"+typing": "active"}) is None
    payload = kinds.Reaction("🎉", "m-here")
    assert kinds.decode(kinds.LineKind.REACTION, kinds.encode(payload)) == payload
    content = reactions.reaction_content(ReplyStore(), "n", "!room", payload)  # type: ignore[arg-type]
    assert content == {"m.relates_to": {"rel_type": "m.annotation", "event_id": "$orig",
                                        "key": "🎉"}}
    assert reactions.reaction_content(ReplyStore(), "n", "!room",  # type: ignore[arg-type]
                                      kinds.Reaction("x", "m-pm")) is None
