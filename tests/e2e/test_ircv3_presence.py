"""away-notify, chghost/account-notify and +typing end to end (issue 14 items 9 and 4).

A real Synapse (pushing ephemeral events: the registration's receive_ephemeral), the bridge
under gunicorn and the IRC server IRCBRIDGE_TEST_IRCD names. Bob is a raw IRC client in the
channel before the bridge starts; Alice is a Matrix user in the portal room. Each test
skips, saying why, where the server lacks what it needs: away-notify (ergo, inspircd,
hybrid), a way for a test to change a host (inspircd: an oper's CHGHOST; ergo: HostServ SET
after NickServ REGISTER, which is an ACCOUNT too; hybrid has neither), message-tags for
+typing (ergo, inspircd). The network has `away_from_presence` on, for the last test.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from bridge.devstack.clients import IrcMessage, MatrixClient, MatrixError, RawIrcClient
from bridge.devstack.ports import wait_until
from bridge.devstack.stack import Stack
from bridge.irc.presence import AWAY_BEFORE_US
from tests.e2e.test_ircv3_caps import cap_ls, request_caps
from tests.stacks import as_token, running_stack

CHANNEL = "#presence"


class Run:
    stack: Stack
    bob: RawIrcClient
    alice: MatrixClient
    offered: dict[str, str]
    room_id: str = ""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    r = Run()

    def offers(stack: Stack) -> None:
        stack.prepare()
        with stack.irc_user("prober") as prober:
            r.offered = cap_ls(prober)
        if not {"away-notify", "chghost", "message-tags"} & set(r.offered):
            pytest.skip(f"{stack.ircd.kind} offers none of away-notify, chghost, message-tags")

    def bob_arrives(stack: Stack) -> None:
        r.bob = stack.irc_user("Bob")
        wanted = [c for c in ("message-tags", "away-notify", "chghost") if c in r.offered]
        request_caps(r.bob, " ".join(wanted))
        r.bob.join(CHANNEL)

    try:
        with running_stack(tmp_path_factory.mktemp("presence"), channels=CHANNEL,
                           network_extra="away_from_presence = true",
                           before_start=offers, before_bridge=bob_arrives) as r.stack:
            r.alice = r.stack.matrix_user("alice")
            r.room_id = r.alice.join(r.stack.alias(CHANNEL))
            wait_until(lambda: "ircbot" in r.bob.names(CHANNEL), 30, what="the bot in there")
            r.bob.privmsg(CHANNEL, "Bob is here")  # his virtual user joins to say it
            r.alice.wait_for_text(r.room_id, "Bob is here", timeout=60)
            yield r
    finally:
        if getattr(r, "bob", None):
            r.bob.close()


def needs(run: Run, cap: str) -> None:
    if cap not in run.offered:
        pytest.skip(f"{run.stack.ircd.kind} offers no {cap}")


def presence_of(client: MatrixClient, user_id: str) -> dict[str, Any]:
    found: dict[str, Any] = client.request(
        "GET", f"/_matrix/client/v3/presence/{quote(user_id, safe='')}/status")
    return found


def test_away_makes_the_virtual_user_unavailable_with_the_message(run: Run) -> None:
    needs(run, "away-notify")
    ghost = run.stack.ghost("Bob")
    run.bob.send("AWAY :gone fishing")
    found = wait_until(
        lambda: (p := presence_of(run.alice, ghost)).get("presence") == "unavailable" and p,
        30, what="Bob's virtual user unavailable")
    assert found.get("status_msg") == "gone fishing", found
    run.bob.send("AWAY")
    wait_until(lambda: presence_of(run.alice, ghost).get("presence") == "online", 30,
               what="Bob's virtual user online again")


def _own_presence(run: Run, user_id: str) -> dict[str, Any]:
    """A virtual user's presence as it sees it (acting as it with the as_token): nobody
    else may see it before it shares a room with them. {} while it is not registered."""
    client = MatrixClient(run.stack.synapse.url, as_token(run.stack), user_id)
    try:
        found: dict[str, Any] = client.request(
            "GET", f"/_matrix/client/v3/presence/{quote(user_id, safe='')}/status",
            params={"user_id": user_id})
    except MatrixError:
        return {}
    return found


def test_someone_away_before_the_bot_came_is_unavailable(run: Run) -> None:
    """away-notify tells only changes: the bot asks WHO when it joins a channel, and a `G`
    (gone) there makes the virtual user unavailable; AWAY-back makes it online as usual."""
    needs(run, "away-notify")
    channel = "#awaylater"
    with run.stack.irc_user("Gina") as gina:
        gina.join(channel)
        gina.send("AWAY :out since before the bridge came")
        gina.wait_for(lambda m: m.command == "306", timeout=10)  # RPL_NOWAWAY
        ghost = run.stack.ghost("Gina")
        run.alice.join(run.stack.alias(channel))  # the bot joins #awaylater only now
        found = wait_until(
            lambda: (p := _own_presence(run, ghost)).get("presence") == "unavailable" and p,
            30, what="Gina's virtual user unavailable")
        assert found.get("status_msg") == AWAY_BEFORE_US, found  # WHO gives no away text
        gina.send("AWAY")
        wait_until(lambda: _own_presence(run, ghost).get("presence") == "online", 30,
                   what="Gina's virtual user online again")


def _change_host(run: Run) -> str:
    """Bob's host changes; the new host. Skips where the test cannot do that."""
    kind = run.stack.ircd.kind
    ircd = run.stack.ircd
    if kind not in ("inspircd", "ergo"):
        pytest.skip(f"{kind}: no host change a test can make without services")
    host = "changed.example"
    with run.stack.irc_user("Opal") as oper:
        oper.send(f"OPER {ircd.oper_name} {ircd.oper_password}")
        oper.wait_for(lambda m: m.command in ("381", "491", "464"), timeout=10)
        if kind == "inspircd":
            oper.send(f"CHGHOST Bob {host}")
        else:  # Ergo: a vhost needs an account (its ACCOUNT is no churn either)
            run.bob.send("PRIVMSG NickServ :REGISTER bobs-secret-pass")
            run.bob.wait_for(lambda m: m.command == "900" or "now logged in" in m.text,
                             timeout=20)
            oper.send(f"PRIVMSG HostServ :SET Bob {host}")
        run.bob.wait_for(lambda m: (m.command == "CHGHOST" and m.nick == "Bob")
                         or (m.command == "396"), timeout=20)
    return host


def _member_events_between(run: Run, user_id: str, first: str, last: str) -> list[Any]:
    """The user's m.room.member events in the timeline between two messages (by id)."""
    events = run.alice.messages(run.room_id, limit=200)  # oldest first
    ids = [e.get("event_id") for e in events]
    start, end = ids.index(first), ids.index(last)
    return [e for e in events[start:end] if e.get("type") == "m.room.member"
            and e.get("state_key") == user_id]


def test_a_host_change_leaves_the_membership_alone(run: Run) -> None:
    needs(run, "chghost")
    ghost = run.stack.ghost("Bob")
    run.bob.privmsg(CHANNEL, "before my host changes")
    first = run.alice.wait_for_text(run.room_id, "before my host changes", timeout=30)
    _change_host(run)
    run.bob.privmsg(CHANNEL, "after my host changed")
    last = run.alice.wait_for_text(run.room_id, "after my host changed", timeout=30)
    assert last["sender"] == ghost
    assert _member_events_between(run, ghost, first["event_id"], last["event_id"]) == []
    assert ghost in run.alice.joined_members(run.room_id)


def _typing_now(run: Run, since: str | None) -> tuple[set[str] | None, str]:
    """Who types in the room by the next sync's m.typing (None: the sync had none)."""
    params: dict[str, Any] = {"timeout": 2000}
    if since:
        params["since"] = since
    sync = run.alice.request("GET", "/_matrix/client/v3/sync", params=params)
    room = sync.get("rooms", {}).get("join", {}).get(run.room_id, {})
    users: set[str] | None = None
    for event in room.get("ephemeral", {}).get("events", []):
        if event.get("type") == "m.typing":
            users = set(event.get("content", {}).get("user_ids", []))
    return users, str(sync["next_batch"])


def _wait_typing(run: Run, since: str, typing: bool, what: str) -> str:
    ghost = run.stack.ghost("Bob")
    deadline = time.monotonic() + 30
    while True:
        users, since = _typing_now(run, since)
        if users is not None and (ghost in users) == typing:
            return since
        assert time.monotonic() < deadline, what


def test_bobs_typing_is_his_virtual_users_typing(run: Run) -> None:
    needs(run, "message-tags")
    _, since = _typing_now(run, None)
    run.bob.send(f"@+typing=active TAGMSG {CHANNEL}")
    since = _wait_typing(run, since, True, "Bob's virtual user never typed")
    run.bob.send(f"@+typing=done TAGMSG {CHANNEL}")
    _wait_typing(run, since, False, "Bob's virtual user never stopped typing")


def _typing_tag(nick: str, state: str) -> Any:
    def match(m: IrcMessage) -> bool:
        return (m.command == "TAGMSG" and m.nick == nick and m.target.lower() == CHANNEL
                and m.tags.get("+typing") == state)
    return match


def test_alices_typing_reaches_irc_as_a_typing_tagmsg(run: Run) -> None:
    needs(run, "message-tags")
    start = run.bob.mark()
    run.alice.send_text(run.room_id, "hello from alice")  # her puppet connects and joins
    said = run.bob.wait_for(lambda m: m.command == "PRIVMSG" and m.text == "hello from alice",
                            timeout=60, start=start)
    puppet = said.nick or ""
    assert puppet and puppet != "ircbot"
    path = f"/_matrix/client/v3/rooms/{quote(run.room_id)}/typing/{quote(run.alice.user_id)}"
    mark = run.bob.mark()
    run.alice.request("PUT", path, json={"typing": True, "timeout": 20000})
    run.bob.wait_for(_typing_tag(puppet, "active"), timeout=30, start=mark)
    renewed = time.monotonic()
    run.bob.wait_for(_typing_tag(puppet, "active"), timeout=10)  # she still types: renewed
    assert time.monotonic() - renewed < 6, "renewed after IRC clients forgot it"
    run.alice.request("PUT", path, json={"typing": False})
    run.bob.wait_for(_typing_tag(puppet, "done"), timeout=30, start=mark)


def test_alices_matrix_presence_is_her_puppets_away(run: Run) -> None:
    """Last: Alice's own /sync calls elsewhere would make her online again."""
    needs(run, "away-notify")
    start = run.bob.mark()
    run.alice.send_text(run.room_id, "alice is here")  # her puppet is in the channel
    said = run.bob.wait_for(lambda m: m.command == "PRIVMSG" and m.text == "alice is here",
                            timeout=60, start=start)
    puppet = said.nick
    path = f"/_matrix/client/v3/presence/{quote(run.alice.user_id, safe='')}/status"
    mark = run.bob.mark()
    run.alice.request("PUT", path, json={"presence": "unavailable", "status_msg": "afk a bit"})
    run.bob.wait_for(lambda m: m.command == "AWAY" and m.nick == puppet
                     and m.text == "afk a bit", timeout=30, start=mark)
    run.alice.request("PUT", path, json={"presence": "online"})
    run.bob.wait_for(lambda m: m.command == "AWAY" and m.nick == puppet and not m.params,
                     timeout=30, start=mark)
