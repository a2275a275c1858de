"""The founding document's story, step by step, against a real Synapse and a real IRC daemon.

Each step is checked from the outside: what a Matrix client sees through the client-server
API and what a raw IRC client receives. The steps share one stack and run in file order.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from bridge.devstack.clients import MatrixClient, RawIrcClient
from bridge.devstack.ports import wait_until
from bridge.devstack.stack import Stack
from bridge.store.models import Store
from tests.e2e.test_ircv3_caps import cap_ls
from tests.figures import record
from tests.stacks import running_stack

CHANNEL = "#matrix"
TOPIC = "Talk about Matrix"


class Story:
    """What the steps share: the stack, Bob on IRC, Alice on Matrix, and what they saw."""

    stack: Stack
    bob: RawIrcClient
    alice: MatrixClient
    room_id: str = ""
    hello_ms: int = 0


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    s = Story()

    def bob_arrives_first(stack: Stack) -> None:
        # Bob is on IRC before the bridge: he opens the channel and sets its topic.
        s.bob = stack.irc_user("Bob")
        s.bob.join(CHANNEL)
        s.bob.send(f"TOPIC {CHANNEL} :{TOPIC}")
        s.bob.wait_for(lambda m: m.command == "TOPIC")

    try:
        with running_stack(tmp_path_factory.mktemp("story"), before_bridge=bob_arrives_first,
                           channels=CHANNEL, log_level="DEBUG", log_lines=200) as s.stack:
            yield s
    finally:
        if getattr(s, "bob", None):
            s.bob.close()


def body_is(text: str):  # noqa: ANN201 - a predicate factory
    return lambda e: e.get("type") == "m.room.message" and e["content"].get("body") == text


def test_step1_registration_is_accepted_by_synapse(story: Story) -> None:
    health = wait_until(lambda: (h := story.stack.bridge.health())["ping"] == "ok" and h,
                        20, what="the AS ping")
    assert health["homeserver"] == "ok"
    reg = yaml.safe_load(story.stack.registration.read_text())
    who = requests.get(f"{story.stack.synapse.url}/_matrix/client/v3/account/whoami",
                       headers={"Authorization": f"Bearer {reg['as_token']}"}, timeout=10).json()
    assert who["user_id"] == "@ircbot:localhost"
    # The homeserver's own ping of the bridge succeeds through the registration's url.
    r = requests.post(
        f"{story.stack.synapse.url}/_matrix/client/v1/appservice/ircbridge/ping",
        headers={"Authorization": f"Bearer {reg['as_token']}"}, json={}, timeout=10)
    assert r.status_code == 200, r.text
    record("AS ping duration_ms (Synapse -> bridge)", r.json()["duration_ms"])


def test_step2_what_bob_says_to_nobody_is_kept_as_scrollback(story: Story) -> None:
    bot_present = wait_until(lambda: "ircbot" in story.bob.names(CHANNEL), 20, what="the bot")
    assert bot_present
    story.hello_ms = int(time.time() * 1000)
    story.bob.privmsg(CHANNEL, "hello?")
    story.bob.privmsg(CHANNEL, "anyone here?")
    store = Store(story.stack.database_url)
    try:
        rows = wait_until(lambda: len(r := store.scrollback("local", CHANNEL)) == 2 and r, 10,
                          what="scrollback rows")
        assert [(r.nick, r.body) for r in rows] == [("Bob", "hello?"), ("Bob", "anyone here?")]
        assert abs(rows[0].ts - story.hello_ms) < 5000
        assert store.all_links() == []  # no room yet: nothing happened on Matrix
    finally:
        store.close()


def test_step3_alice_joins_the_alias_and_finds_the_room_with_its_history(story: Story) -> None:
    story.alice = story.stack.matrix_user("alice")
    alias = story.stack.alias(CHANNEL)
    assert alias == "#irc_local_#matrix:localhost"
    started = time.monotonic()
    story.room_id = story.alice.join(alias)
    joined_s = time.monotonic() - started
    assert joined_s < 10
    assert story.alice.resolve_alias(alias) == story.room_id
    assert story.alice.state(story.room_id, "m.room.name")["name"] == CHANNEL
    assert story.alice.state(story.room_id, "m.room.topic")["topic"] == TOPIC
    assert story.alice.state(story.room_id, "m.room.join_rules")["join_rule"] == "public"
    hello = story.alice.wait_for_message(story.room_id, body_is("hello?"), timeout=20)
    record("Alice's join request -> in the room (s)", round(joined_s, 3))
    record("Alice's join request -> scrollback visible (s)",
           round(time.monotonic() - started, 3))
    bob_id = story.stack.ghost("Bob")
    assert bob_id == "@irc_local__bob:localhost"
    assert hello["sender"] == bob_id
    assert abs(hello["origin_server_ts"] - story.hello_ms) < 5000
    history = [e for e in story.alice.messages(story.room_id) if e["type"] == "m.room.message"]
    assert [e["content"]["body"] for e in history] == ["hello?", "anyone here?"]
    assert history[0]["origin_server_ts"] <= history[1]["origin_server_ts"]
    assert story.alice.profile(bob_id)["displayname"] == "Bob"


def test_step4_alice_says_hi_and_it_appears_on_irc_from_her_nick(story: Story) -> None:
    story.bob.mark()
    sent = time.monotonic()
    story.alice.send_text(story.room_id, "hi!")
    msg = story.bob.wait_for_privmsg("hi!", target=CHANNEL, timeout=20)
    record("Matrix -> IRC, first message of a new puppet (s)", round(time.monotonic() - sent, 3))
    assert msg.nick == "alice[m]"


def test_step5_bob_answers_and_alice_sees_it_from_bob_with_bobs_time(story: Story) -> None:
    said = int(time.time() * 1000)
    story.bob.privmsg(CHANNEL, "what's up?")
    event = story.alice.wait_for_message(story.room_id, body_is("what's up?"), timeout=20)
    assert event["sender"] == "@irc_local__bob:localhost"
    assert said - 1000 <= event["origin_server_ts"] <= said + 5000


def test_relay_latency_each_way(story: Story) -> None:
    """Median time for a line to cross the bridge in each direction (printed in the summary)."""
    to_irc, to_matrix = [], []
    for i in range(10):
        story.bob.mark()
        t = time.monotonic()
        story.alice.send_text(story.room_id, f"m2i {i}")
        story.bob.wait_for_privmsg(f"m2i {i}", timeout=20)
        to_irc.append(time.monotonic() - t)
        t = time.monotonic()
        story.bob.privmsg(CHANNEL, f"i2m {i}")
        story.alice.wait_for_message(story.room_id, body_is(f"i2m {i}"), timeout=20)
        to_matrix.append(time.monotonic() - t)
    record("median relay Matrix -> IRC (ms)", round(sorted(to_irc)[5] * 1000, 1))
    record("median relay IRC -> Matrix (ms, incl. /messages polling)",
           round(sorted(to_matrix)[5] * 1000, 1))
    assert max(to_irc) < 20 and max(to_matrix) < 20


def test_nothing_is_relayed_twice_or_echoed_back(story: Story) -> None:
    story.bob.mark()
    story.alice.send_text(story.room_id, "echo test")
    story.bob.wait_for_privmsg("echo test", timeout=20)
    story.bob.privmsg(CHANNEL, "marker after echo")
    story.alice.wait_for_message(story.room_id, body_is("marker after echo"), timeout=20)
    bodies = [e["content"].get("body") for e in story.alice.messages(story.room_id, limit=200)
              if e["type"] == "m.room.message"]
    assert bodies.count("echo test") == 1  # Alice's own message was not bridged back
    assert bodies.count("what's up?") == 1
    story.alice.send_text(story.room_id, "marker two")
    story.bob.wait_for_privmsg("marker two", timeout=20)
    seen = [m.text for m in story.bob.messages("PRIVMSG")]
    assert seen.count("echo test") == 1


def test_emotes_and_notices_cross_both_ways(story: Story) -> None:
    story.bob.mark()
    story.alice.send_text(story.room_id, "waves", msgtype="m.emote")
    msg = story.bob.wait_for(lambda m: m.command == "PRIVMSG" and "waves" in m.text, timeout=20)
    assert msg.text == "\x01ACTION waves\x01"
    story.alice.send_text(story.room_id, "a notice", msgtype="m.notice")
    msg = story.bob.wait_for(lambda m: m.command == "NOTICE" and m.text == "a notice",
                             timeout=20)
    assert msg.nick == "alice[m]"
    story.bob.action(CHANNEL, "nods")
    event = story.alice.wait_for_message(story.room_id, body_is("nods"), timeout=20)
    assert event["content"]["msgtype"] == "m.emote"
    story.bob.notice(CHANNEL, "bob's notice")
    event = story.alice.wait_for_message(story.room_id, body_is("bob's notice"), timeout=20)
    assert event["content"]["msgtype"] == "m.notice"


def test_line_breaks_become_lines_and_never_commands(story: Story) -> None:
    story.bob.mark()
    story.alice.send_text(story.room_id, "line one\r\nQUIT :injected\rJOIN #evil")
    texts = []
    for _ in range(3):
        msg = story.bob.wait_for(lambda m: m.command == "PRIVMSG" and m.nick == "alice[m]",
                                 timeout=20)
        texts.append(msg.text)
    assert texts == ["line one", "QUIT :injected", "JOIN #evil"]
    assert "alice[m]" in story.bob.names(CHANNEL)  # she did not quit
    assert not [m for m in story.bob.messages() if m.command == "JOIN" and m.target == "#evil"]


def test_a_long_message_reaches_irc_as_its_first_line_and_a_link(story: Story) -> None:
    batched = "draft/multiline" in cap_ls(story.bob)  # one batch, every line (Ergo)
    story.bob.mark()
    text = "\n".join(f"paragraph {i} of a long message" for i in range(1, 8))
    story.alice.send_text(story.room_id, text)
    msg = story.bob.wait_for(lambda m: m.command == "PRIVMSG" and "paragraph 1" in m.text,
                             timeout=20)
    if batched:  # see test_ircv3_multiline
        assert msg.text == "paragraph 1 of a long message"
        for i in range(2, 8):
            story.bob.wait_for(lambda m, i=i: m.command == "PRIVMSG"
                               and m.text == f"paragraph {i} of a long message", timeout=20)
        return
    assert msg.text.startswith("paragraph 1 of a long message")
    url = msg.text.split("(full message: ", 1)[1].rstrip(")")
    fetched = requests.get(url, timeout=10)
    assert fetched.status_code == 200
    assert fetched.content.decode() == text


def test_formatting_from_irc_arrives_as_html_and_escaped(story: Story) -> None:
    story.bob.privmsg(CHANNEL, "\x02bold\x02 <script>x</script>")
    event = story.alice.wait_for_message(
        story.room_id, lambda e: "bold" in e.get("content", {}).get("body", ""), timeout=20)
    assert event["content"]["body"] == "bold <script>x</script>"
    assert "<b>bold</b>" in event["content"]["formatted_body"] or \
        "<strong>bold</strong>" in event["content"]["formatted_body"]
    assert "<script>" not in event["content"]["formatted_body"]


def test_two_queries_for_one_alias_make_one_room(story: Story) -> None:
    carol = story.stack.matrix_user("carol")
    dave = story.stack.matrix_user("dave")
    alias = story.stack.alias("#concurrent")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        rooms = list(pool.map(lambda c: c.join(alias), [carol, dave]))
    assert rooms[0] == rooms[1]
    # The alias is the room's own (made after the room, see tests/unit/test_portal_alias.py).
    assert carol.state(rooms[0], "m.room.canonical_alias")["alias"] == alias


def test_an_alias_for_a_bad_channel_is_not_found(story: Story) -> None:
    from bridge.devstack.clients import MatrixError

    with pytest.raises(MatrixError) as err:
        story.alice.join("#irc_local_nochannel:localhost")
    assert err.value.status == 404


def test_inviting_an_unknown_virtual_user_registers_it_through_the_user_query(story: Story) -> None:
    ghost = story.stack.ghost("Zed")
    own_room = story.alice.create_room(preset="private_chat")
    story.alice.invite(own_room, ghost)
    profile = wait_until(lambda: (p := _profile(story.alice, ghost)) and
                         p.get("displayname") == "Zed" and p, 20, what="Zed's display name")
    assert profile["displayname"] == "Zed"


def _profile(client: MatrixClient, user_id: str) -> dict | None:
    try:
        return client.profile(user_id)
    except Exception:  # noqa: BLE001 - not there yet
        return None


def test_the_bridge_log_never_shows_a_token(story: Story) -> None:
    reg = yaml.safe_load(story.stack.registration.read_text())
    text = Path(story.stack.bridge.log_path).read_text(errors="replace")
    assert reg["as_token"] not in text and reg["hs_token"] not in text


def test_the_user_query_registers_then_answers_and_is_repeatable(story: Story) -> None:
    reg = yaml.safe_load(story.stack.registration.read_text())
    auth = {"Authorization": f"Bearer {reg['hs_token']}"}
    base = f"{story.stack.bridge.url}/_matrix/app/v1/users/"
    ghost = story.stack.ghost("Quentin")
    for _ in range(2):  # the second time Synapse says M_USER_IN_USE: still 200
        r = requests.get(base + requests.utils.quote(ghost, safe=""), headers=auth, timeout=30)
        assert (r.status_code, r.json()) == (200, {})
    assert story.alice.profile(ghost)["displayname"] == "Quentin"
    r = requests.get(base + "%40outsider%3Alocalhost", headers=auth, timeout=30)
    assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND")
    from bridge.devstack.clients import MatrixError

    with pytest.raises(MatrixError):
        story.alice.profile("@outsider:localhost")
