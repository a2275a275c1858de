"""Property tests (hypothesis) of the pure parts and of the AS API: no crash, no 500, and
nothing that reaches IRC can carry a line break, a NUL or a CTCP marker.

The pure parts: formatting both ways and splitting, the nick/alias mapping, the admin
command parser and raw-line check, the Matrix -> IRC translation of any event content. The
AS API runs as the real Flask app on a temp database, with requests hypothesis makes up.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bridge.admin.grammar import CommandError, parse, validate_raw
from bridge.config.ini import load
from bridge.matrix import ONCE, HomeserverClient
from bridge.rules import formatting, translate
from bridge.rules.names import (
    NetworkNames,
    collision_nick,
    escape_nick,
    irc_lower,
    puppet_nick,
    valid_channel,
    valid_nick,
)
from bridge.web.context import bridge_of
from tests.conftest import built_app, write_config

UNSAFE = ("\r", "\n", "\0", "\x01")
CODES = "\x02\x03\x04\x0f\x11\x16\x1d\x1e\x1f"
HS = "hs-token-for-tests-9876543210"
AUTH = {"Authorization": f"Bearer {HS}"}
LOCALPART = re.compile(r"^[a-z0-9._=\-/]+$")

irc_text = st.lists(st.one_of(st.characters(), st.sampled_from([*CODES, "12", ",4", "<", "&"])),
                    max_size=40).map("".join)
nick_first = st.sampled_from("abcXYZ[]\\`_^{|}")
nick_rest = st.text(alphabet="abcXYZ019[]\\`_^{|}-", max_size=25)
nicks = st.builds(lambda a, b: a + b, nick_first, nick_rest)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                         st.text(max_size=40))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=20)


# ------------------------------------------------------------------------ formatting
class _Tags(HTMLParser):
    """Collects tags; `balanced` says whether every tag closed in order."""

    VOID = {"br", "img", "hr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: set[str] = set()
        self.balanced = True

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            self.balanced = False


@given(irc_text)
def test_irc_to_matrix_never_lets_irc_users_write_html(text: str) -> None:
    body, html = formatting.irc_to_matrix(text)
    assert body == formatting.strip_irc_formatting(text)
    if html is not None:
        parser = _Tags()
        parser.feed(html)
        parser.close()
        assert parser.balanced and not parser.stack, html
        assert parser.tags <= {"b", "i", "u", "del", "code", "font"}, html


words = st.text(alphabet="abcdefgh<>&\"'", min_size=1, max_size=6)
styled = st.lists(st.tuples(st.sampled_from(["", "\x02", "\x1d", "\x1f", "\x0304", "\x0f"]),
                            words), min_size=1, max_size=8)


@given(styled)
def test_irc_formatting_survives_the_round_trip_through_matrix_html(
    parts: list[tuple[str, str]],
) -> None:
    """IRC -> Matrix HTML -> IRC keeps the visible text exactly."""
    text = " ".join(code + word for code, word in parts)
    body, html = formatting.irc_to_matrix(text)
    back = formatting.html_to_irc(html) if html is not None else body
    assert formatting.strip_irc_formatting(back) == body


@given(st.text(), st.one_of(st.none(), st.text()), st.integers(min_value=4, max_value=450))
def test_matrix_to_irc_lines_are_safe_and_fit(body: str, html: str | None, budget: int) -> None:
    for line in formatting.matrix_body_to_irc_lines(body, html, budget):
        assert not any(c in line for c in UNSAFE), repr(line)
        assert len(line.encode("utf-8")) <= budget
        assert formatting.strip_irc_formatting(line).strip()


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",))),
       st.integers(min_value=4, max_value=100))
def test_split_keeps_every_non_space_character_in_order(text: str, budget: int) -> None:
    text = formatting.sanitize_line(text)
    chunks = formatting.split_for_irc(text, budget)
    assert all(len(c.encode()) <= budget for c in chunks)
    assert "".join(chunks).replace(" ", "") == text.replace(" ", "")


# ------------------------------------------------------------------------ translation
def _context(budget: int, max_lines: int) -> translate.Context:
    def find(event_id: str) -> translate.Origin | None:
        return translate.Origin("irc", "Bob", "an earlier message", 0) if event_id else None

    return translate.Context(budget=budget, max_lines=max_lines, find_message=find,
                             nick_for_user=lambda user_id: "someone[m]", media=None)


contents = st.one_of(
    st.dictionaries(st.sampled_from(["msgtype", "body", "format", "formatted_body", "url",
                                     "m.relates_to", "m.new_content", "info"]),
                    json_values, max_size=6),
    st.fixed_dictionaries({
        "msgtype": st.sampled_from(["m.text", "m.emote", "m.notice", "m.image", "m.file",
                                    "x.odd"]),
        "body": st.text(),
        "format": st.just("org.matrix.custom.html"),
        "formatted_body": st.text(),
    }, optional={
        "m.relates_to": st.one_of(json_values, st.fixed_dictionaries({
            "rel_type": st.sampled_from(["m.replace", "m.thread", "x"]),
            "event_id": st.one_of(st.text(max_size=10), json_scalars),
            "m.in_reply_to": st.one_of(json_values,
                                       st.fixed_dictionaries({"event_id": st.text()}))})),
        "m.new_content": st.one_of(json_values, st.fixed_dictionaries({"body": st.text()})),
        "url": st.one_of(json_scalars, st.just("mxc://localhost/abc")),
    }),
)


@given(contents, st.integers(min_value=64, max_value=450), st.integers(min_value=1, max_value=5))
def test_any_event_content_becomes_safe_irc_lines(content: dict[str, Any], budget: int,
                                                  max_lines: int) -> None:
    lines, kind = translate.to_irc(content, _context(budget, max_lines))
    assert kind in ("m.text", "m.notice", "m.emote")
    for line in lines:
        assert not any(c in line for c in UNSAFE), repr(line)
        assert len(line.encode("utf-8")) <= budget, (len(line.encode()), budget, line)


# ------------------------------------------------------------------------ names
NAMES = NetworkNames("irc_local_{nick}", "irc_local_{channel}", "localhost")
SLASHED = NetworkNames("irc.example.net/{nick}", "irc.example.net/{channel}", "hs.example")


@given(nicks)
def test_every_valid_nick_maps_to_a_valid_user_id_and_back(nick: str) -> None:
    for names in (NAMES, SLASHED):
        user_id = names.user_id_for_nick(nick)
        localpart = user_id[1:].rsplit(":", 1)[0]
        assert LOCALPART.match(localpart), user_id
        assert len(user_id.encode()) <= 255
        assert names.nick_for_user_id(user_id) == nick


@given(st.text(max_size=60))
def test_any_user_id_text_parses_to_a_valid_nick_or_none(text: str) -> None:
    for candidate in (text, f"@irc_local_{text}:localhost", f"@{text}:localhost"):
        nick = NAMES.nick_for_user_id(candidate)
        assert nick is None or (valid_nick(nick) and
                                NAMES.user_id_for_nick(nick) == candidate)


@given(st.text(min_size=1, max_size=60))
def test_channels_round_trip_through_aliases(name: str) -> None:
    channel = "#" + name
    assume(valid_channel(channel))
    alias = NAMES.alias_for_channel(channel)
    assert NAMES.channel_for_alias(alias) == irc_lower(channel)


@given(st.text(min_size=1, max_size=60), st.one_of(st.none(), st.text(max_size=60)),
       st.integers(min_value=9, max_value=64),
       st.sampled_from(["{localpart}[m]", "{displayname}|m", "M-{localpart}", "{localpart}"]))
def test_puppet_nicks_are_always_valid_and_short_enough(localpart: str, displayname: str | None,
                                                       max_length: int, template: str) -> None:
    nick = puppet_nick(template, f"@{localpart}:localhost", displayname, max_length)
    assert valid_nick(nick, max_length), nick
    for attempt in range(1, 5):
        assert valid_nick(collision_nick(nick, attempt, max_length), max_length)


@given(nicks)
def test_escaped_nicks_never_collide_case_insensitively(nick: str) -> None:
    assert escape_nick(nick) != escape_nick(nick.swapcase()) or nick == nick.swapcase()


# ------------------------------------------------------------------------ commands
@given(st.text(max_size=600))
def test_raw_lines_are_refused_or_safe(line: str) -> None:
    try:
        checked = validate_raw("cmd", line)
    except CommandError:
        return
    assert not any(c in checked for c in "\r\n\0")
    assert len(checked.encode("utf-8")) <= 510


@given(st.text(alphabet=st.characters(), max_size=80).map(lambda t: "!" + t))
def test_commands_parse_or_raise_their_own_errors(body: str) -> None:
    try:
        parse(body, ["local", "other"])
    except CommandError:
        pass


# ------------------------------------------------------------------------ AS API
@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    """The real app on a temp SQLite; the homeserver URL points at a closed port."""
    folder: Path = tmp_path_factory.mktemp("fuzz")
    path = write_config(folder, hs_url="http://127.0.0.1:9",
                        db_url=f"sqlite:///{folder / 'bridge.db'}")
    config = load(path)
    client = HomeserverClient(config.homeserver.url, config.appservice.as_token,
                              server_name=config.homeserver.domain, policy=ONCE)
    client.sleep = lambda _s: None  # no backoff waits against the closed port
    with built_app(config, client=client) as app:
        yield app


def _assert_matrix_answer(response: Any) -> None:
    assert response.status_code != 500, (response.status_code, response.get_data()[:300])
    assert response.is_json and isinstance(response.json, dict), response.get_data()[:300]
    if response.status_code >= 400:
        assert isinstance(response.json.get("errcode"), str), response.json


PATHS = ["/_matrix/app/v1/transactions/", "/transactions/", "/_matrix/app/v1/users/",
         "/users/", "/_matrix/app/v1/rooms/", "/rooms/", "/_matrix/app/v1/ping",
         "/_matrix/app/v1/thirdparty/protocol/", "/_matrix/app/v1/thirdparty/location/",
         "/_matrix/app/v1/thirdparty/user/", "/_matrix/app/v1/thirdparty/location",
         "/_matrix/app/v1/thirdparty/user", "/_matrix/app/unstable/thirdparty/protocol/",
         "/health", "/", "/_ircbridge/provisioning/link", "/_matrix/app/v1/"]
segments = st.one_of(st.text(max_size=30), st.sampled_from([
    "irc", "@outsider:localhost", "%23irc_local_x%3Alocalhost", "..", "%00", "%ff",
    "@irc_local_=zz:localhost", "#irc_local_#a b:localhost", "1"]))
headers = st.one_of(st.just(AUTH), st.just({}), st.just({"Authorization": "Bearer wrong"}),
                    st.builds(lambda t: {"Authorization": t},
                              st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126),
                                      max_size=40)))
bodies = st.one_of(st.none(), st.binary(max_size=200), json_values.map(
    lambda v: json.dumps(v).encode()), st.builds(
    lambda events: json.dumps({"events": events}).encode(), st.lists(json_values, max_size=4)))
queries = st.dictionaries(st.sampled_from(["access_token", "network", "channel", "nickname",
                                           "userid", "alias", "x"]),
                          st.text(max_size=20), max_size=3)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS"]),
       st.sampled_from(PATHS), segments, headers, bodies, queries)
def test_no_request_gets_a_500(app: Flask, method: str, path: str, segment: str,
                               header: dict[str, str], body: bytes | None,
                               query: dict[str, str]) -> None:
    from urllib.parse import quote

    client = app.test_client()
    target = path + (quote(segment, safe="@:%!$") if path.endswith("/") else "")
    response = client.open(target, method=method, headers=header, data=body,
                           query_string=query)
    assert response.status_code != 500, (response.status_code, response.get_data()[:300])
    if method in ("HEAD", "OPTIONS") or not path.startswith(("/_matrix", "/transactions",
                                                              "/users", "/rooms")):
        return  # Flask's automatic answers and the ops pages are not Matrix APIs
    _assert_matrix_answer(response)


events = st.fixed_dictionaries(
    {"event_id": st.builds(lambda n: f"$fz{n}", st.integers(0, 10**9))},
    optional={"type": st.one_of(json_scalars, st.sampled_from([
        "m.room.message", "m.room.member", "m.room.topic", "m.room.name"])),
        "room_id": st.one_of(json_scalars, st.just("!room:localhost")),
        "sender": st.one_of(json_scalars, st.sampled_from(["@alice:localhost",
                                                            "@irc_local__bob:localhost"])),
        "state_key": json_values, "content": st.one_of(json_values, contents)})


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(events, max_size=5),
       st.text(alphabet="abcXYZ0123456789-_.~", min_size=1, max_size=20))
def test_any_transaction_is_stored_or_refused_and_its_events_handled(
    app: Flask, batch: list[dict[str, Any]], txn: str
) -> None:
    """Transactions of made-up events are answered (never 500), and the core handles every
    stored event without raising (the inbox would otherwise mark it failed)."""
    from urllib.parse import quote

    client = app.test_client()
    response = client.put("/_matrix/app/v1/transactions/" + quote(txn, safe=""),
                          data=json.dumps({"events": batch}), headers=AUTH)
    _assert_matrix_answer(response)
    bridge = bridge_of(app)
    for event in batch:
        outcome = _Outcome()
        bridge.on_matrix_event(json.loads(json.dumps(event)), outcome)  # type: ignore[arg-type]
        assert outcome.results in ([True], []), outcome.results


class _Outcome:
    """Stands in for the inbox's Completion: records what the core reports."""

    stopping = False

    def __init__(self) -> None:
        self.results: list[bool] = []

    def started(self) -> None:
        pass

    def finished(self, ok: bool = True) -> None:
        self.results.append(ok)


@pytest.mark.parametrize("path", ["/_matrix/app/v1/users/%40irc_local__bob%3Alocalhost",
                                  "/_matrix/app/v1/rooms/%23irc_local_%23chan%3Alocalhost"])
def test_a_query_while_the_homeserver_is_unreachable_is_a_clear_error_not_a_500(
    app: Flask, path: str
) -> None:
    response = app.test_client().get(path, headers=AUTH)
    _assert_matrix_answer(response)
    assert response.status_code in (502, 503, 504), response.status_code
