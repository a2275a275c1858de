"""Admin rooms end to end: every command in a real admin room, against the real Synapse and
IRC daemon of one devstack (the bridge runs as `ircbridge run`).

The stack's config gets a [permissions] section that lists the test users one by one (and a
domain that is not ours), so `stranger` is outside it; a key file for stored secrets; and a
static mapping `rooms = #static = !room` made before the bridge starts.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from bridge import __version__
from bridge.admin.vault import generate_key_file
from bridge.devstack.clients import MatrixClient, RawIrcClient
from bridge.devstack.ports import wait_until
from bridge.devstack.stack import Stack
from bridge.web.context import bridge_of
from tests.stacks import as_token, replace_in_config, running_stack, user

BOT = "@ircbot:localhost"
ADMIN = "admin"
USERS = ("alice", "joiner", "nicky", "namer", "passy", "sasly", "certy", "autoy", "quitter",
         "kicky", "leaver", "lister", "roomowner", "dirlooker", "writer")
TIMEOUT = 30


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    def prepare(s: Stack) -> None:
        room = user(s, "roomowner").create_room(preset="public_chat", name="static room")
        s.static_room = room  # type: ignore[attr-defined]
        generate_key_file(s.config_path.parent / "secrets.key")
        people = "".join(f"@{u}:localhost = user\n" for u in USERS)
        replace_in_config(s, "connect_timeout = 5\n",
                          f"connect_timeout = 5\nrooms = #static = {room}\n")
        replace_in_config(s, "[permissions]\n* = user\n",
                          f"[permissions]\n@{ADMIN}:localhost = admin\n{people}"
                          "example.org = user\n\n"
                          "[provisioning]\nkey_file = secrets.key\n")

    with running_stack(tmp_path_factory.mktemp("admin"), before_bridge=prepare,
                       channels="#matrix") as stack:
        yield stack


def bot_notices(client: MatrixClient, room: str, after: str | None = None) -> list[str]:
    events = client.messages(room, limit=200)
    ids = [e["event_id"] for e in events]
    if after is not None:
        if after not in ids:
            return []
        events = events[ids.index(after) + 1:]
    return [e["content"].get("body", "") for e in events
            if e["sender"] == BOT and e["type"] == "m.room.message"]


def wait_notice(client: MatrixClient, room: str, after: str | None,
                check: Callable[[str], bool] = lambda body: True,
                timeout: float = TIMEOUT) -> str:
    def find() -> str | None:
        return next((b for b in bot_notices(client, room, after) if check(b)), None)

    try:
        return wait_until(find, timeout, 0.1, what="a notice from the bot")
    except TimeoutError:
        raise AssertionError(f"no matching notice; the bot said: "
                             f"{bot_notices(client, room, after)}") from None


def admin_room(client: MatrixClient) -> str:
    room = client.create_room(invite=[BOT], is_direct=True, preset="trusted_private_chat")
    wait_notice(client, room, None)  # the welcome (or the refusal)
    return room


def ask(client: MatrixClient, room: str, text: str, contains: str | None = None,
        timeout: float = TIMEOUT) -> str:
    """Send a command; return the bot's first reply after it (containing `contains`)."""
    event_id = client.send_text(room, text)
    return wait_notice(client, room, event_id,
                       (lambda b: contains in b) if contains else (lambda b: True), timeout)


def irc_in(stack: Stack, nick: str, channel: str | None = None) -> RawIrcClient:
    client = stack.irc_user(nick)
    if channel:
        client.join(channel)
    return client


def db_bytes(stack: Stack) -> bytes:
    """Everything the bridge's database holds: the SQLite files' bytes, or on PostgreSQL
    the text of every row of every table."""
    if stack.database_url.startswith("sqlite:///"):
        folder = Path(stack.database_url[len("sqlite:///"):]).parent
        return b"".join(p.read_bytes() for p in folder.glob("bridge.db*") if p.is_file())
    from bridge.store.models import open_database

    db = open_database(stack.database_url)
    try:
        tables = db.get_tables()
        rows = [str(row) for table in tables
                for row in db.execute_sql(f'SELECT t::text FROM "{table}" t').fetchall()]
    finally:
        db.close()
    assert "inbox_event" in tables and "user_secret" in tables
    return "\n".join(rows).encode()


# ------------------------------------------------------------------ the room itself
def test_inviting_the_bot_makes_an_admin_room(stack: Stack) -> None:
    alice = user(stack, "alice")
    room = alice.create_room(invite=[BOT], is_direct=True, preset="trusted_private_chat")
    welcome = wait_notice(alice, room, None)
    assert "admin room" in welcome and "!help" in welcome
    assert BOT in alice.joined_members(room)


def test_help_version_and_unknown_commands(stack: Stack) -> None:
    alice = user(stack, "alice")
    room = admin_room(alice)
    listing = ask(alice, room, "!help")
    for name in ("!join", "!part", "!nick", "!whois", "!storepass", "!removepass", "!certfp",
                 "!autocmd", "!reconnect", "!quit", "!listrooms", "!bridgeversion", "!status"):
        assert name in listing
    assert "!cmd" not in listing  # admins only
    assert ask(alice, room, "!help join").startswith("!join [network] #channel [key]")
    assert ask(alice, room, "!bridgeversion") == f"ircbridge {__version__}"
    assert "Did you mean !join?" in ask(alice, room, "!jion #x")
    assert "Say !help" in ask(alice, room, "!frobnicate")
    assert "Commands start with !" in ask(alice, room, "hello bot")


def test_bad_arguments_are_explained(stack: Stack) -> None:
    alice = user(stack, "alice")
    room = admin_room(alice)
    assert "not an IRC channel" in ask(alice, room, "!join nochannel")
    assert "Usage: !whois [network] NICK" in ask(alice, room, "!whois")
    assert "not a valid IRC nick" in ask(alice, room, "!nick 1abc")
    assert "Unknown network 'efnet'" in ask(alice, room, "!reconnect efnet")
    assert "Too many arguments" in ask(alice, room, "!bridgeversion please")
    assert "use !quit" in ask(alice, room, "!autocmd add QUIT :bye")
    assert "1 to 10" in ask(alice, room, "!username far_too_long_name")


def test_a_user_outside_permissions_gets_told_and_no_admin_room(stack: Stack) -> None:
    stranger = stack.matrix_user("stranger")
    room = stranger.create_room(invite=[BOT], is_direct=True, preset="trusted_private_chat")

    def answer() -> dict | None:
        member = stranger.state(room, "m.room.member", BOT)
        return member if member.get("membership") != "invite" else None

    declined = wait_until(answer, TIMEOUT, 0.1, what="the bot to answer the invite")
    assert declined["membership"] == "leave"  # never joined: the invite was declined
    assert "not allowed to use this bridge" in declined["reason"]


def test_a_room_with_other_members_is_not_an_admin_room(stack: Stack) -> None:
    alice, joiner = user(stack, "alice"), user(stack, "joiner")
    room = alice.create_room(preset="public_chat", is_direct=True)
    joiner.join(room)
    # An invite that says "direct chat", as clients send for a DM (createRoom's is_direct
    # only marks the invites it sends itself).
    alice.send_state(room, "m.room.member", {"membership": "invite", "is_direct": True}, BOT)
    assert "must be private" in wait_notice(alice, room, None)


# ------------------------------------------------------------------ IRC queries
def test_whois(stack: Stack) -> None:
    alice = user(stack, "alice")
    room = admin_room(alice)
    wally = irc_in(stack, "wally", "#matrix")
    try:
        answer = ask(alice, room, "!whois wally")
        assert answer.startswith("wally is ") and "#matrix" in answer
        assert ask(alice, room, "!whois local nobodyhere") == "No such nick: nobodyhere"
    finally:
        wally.quit()


def test_join_and_part_a_channel(stack: Stack) -> None:
    joiner = user(stack, "joiner")
    room = admin_room(joiner)
    watcher = irc_in(stack, "joinwatch", "#adminjoin")
    try:
        reply = ask(joiner, room, "!join #adminjoin")
        assert "I invited you" in reply and "#irc_local_#adminjoin:localhost" in reply
        watcher.wait_for(lambda m: m.command == "JOIN" and m.nick == "joiner[m]", TIMEOUT)
        portal = joiner.join("#irc_local_#adminjoin:localhost")
        assert "#adminjoin" in ask(joiner, room, "!listrooms")
        assert "already in its room" in ask(joiner, room, "!join #adminjoin")
        reply = ask(joiner, room, "!part #adminjoin")
        assert "Left #adminjoin" in reply and "You left its room" in reply
        watcher.wait_for(lambda m: m.command == "PART" and m.nick == "joiner[m]", TIMEOUT)
        wait_until(lambda: portal not in joiner.joined_rooms(), TIMEOUT, what="kicked")
        assert "You were not in #adminjoin" in ask(joiner, room, "!part #adminjoin")
    finally:
        watcher.quit()


def test_join_with_a_key_and_a_refusal(stack: Stack) -> None:
    joiner = user(stack, "joiner")
    room = admin_room(joiner)
    op = irc_in(stack, "keyholder", "#keyed")
    try:
        op.send("MODE #keyed +k sesame")
        op.wait_for(lambda m: m.command == "MODE" and "+k" in m.params, TIMEOUT)
        assert "Could not join #keyed on local" in ask(joiner, room, "!join #keyed")
        assert "Joined #keyed" in ask(joiner, room, "!join #keyed sesame")
        op.wait_for(lambda m: m.command == "JOIN" and m.nick == "joiner[m]", TIMEOUT)
    finally:
        op.quit()


def test_nick_is_checked_changed_and_remembered(stack: Stack) -> None:
    nicky = user(stack, "nicky")
    room = admin_room(nicky)
    taken = irc_in(stack, "takennick", "#nicks")
    try:
        assert "Joined #nicks" in ask(nicky, room, "!join #nicks")
        taken.wait_for(lambda m: m.command == "JOIN" and m.nick == "nicky[m]", TIMEOUT)
        assert "is in use on local" in ask(nicky, room, "!nick takennick")
        assert "You are now NickyNew" in ask(nicky, room, "!nick NickyNew")
        changed = taken.wait_for(lambda m: m.command == "NICK" and m.nick == "nicky[m]", TIMEOUT)
        assert changed.target == "NickyNew"
        assert "stored: nick NickyNew" in ask(nicky, room, "!status")
        # A fresh connection keeps the nick.
        assert "Disconnected" in ask(nicky, room, "!quit")
        marker = nicky.send_text(room, "!reconnect")
        wait_notice(nicky, room, marker, lambda b: b == "Connected to local as NickyNew.")
    finally:
        taken.quit()


def test_username_is_used_on_the_next_connection(stack: Stack) -> None:
    namer = user(stack, "namer")
    room = admin_room(namer)
    assert "no username set" in ask(namer, room, "!username")
    assert "is now ident7" in ask(namer, room, "!username ident7")
    assert "ident7" in ask(namer, room, "!username")
    marker = namer.send_text(room, "!reconnect")
    wait_notice(namer, room, marker, lambda b: b.startswith("Connected to local as namer[m]"))
    assert "ident7@" in ask(namer, room, "!whois namer[m]")


# ------------------------------------------------------------------ secrets
def test_storepass_is_encrypted_redacted_and_sent(stack: Stack) -> None:
    passy = user(stack, "passy")
    room = admin_room(passy)
    password = "hunter2-" + secrets.token_hex(8)
    event_id = passy.send_text(room, f"!storepass {password}")
    reply = wait_notice(passy, room, event_id)
    assert "Stored your server password for local, encrypted" in reply
    assert password not in "".join(bot_notices(passy, room))

    def redacted() -> bool:
        event = passy.request("GET", f"/_matrix/client/v3/rooms/{quote(room)}/event/"
                                     f"{quote(event_id)}")
        return event.get("content") == {}

    wait_until(redacted, TIMEOUT, what="the !storepass message redacted")
    wait_until(lambda: password.encode() not in db_bytes(stack), TIMEOUT,
               what="the password gone from the database files")
    assert b"hunter2-" not in db_bytes(stack)
    assert password not in stack.bridge.log(2000)
    assert "password: stored (server)" in ask(passy, room, "!status")
    # The password really goes to the server: this ngircd has none, so it refuses any.
    marker = passy.send_text(room, "!reconnect")
    refused = wait_notice(passy, room, marker, lambda b: "refused your password" in b)
    assert password not in refused
    assert "Removed your stored password" in ask(passy, room, "!removepass")
    assert "had no stored password" in ask(passy, room, "!removepass")
    marker = passy.send_text(room, "!reconnect")
    wait_notice(passy, room, marker, lambda b: b.startswith("Connected to local as passy[m]"))


def test_every_command_that_may_hold_a_secret_is_scrubbed_however_it_is_spaced(
        stack: Stack) -> None:
    """A tab or a non-breaking space after the command word, and a raw !cmd IDENTIFY, are
    parsed like any command, so they are scrubbed from the inbox table like !storepass."""
    autoy = user(stack, "autoy")
    room = admin_room(autoy)
    admin = user(stack, ADMIN)
    admins = admin_room(admin)
    tab, nbsp, raw, key = (f"{kind}-{secrets.token_hex(8)}"
                           for kind in ("tabbed", "nbsp", "rawcmd", "chankey"))
    sent = [
        (autoy, room, f"!autocmd add\tPRIVMSG NickServ :IDENTIFY {tab}"),
        (autoy, room, f"!autocmd\u00a0add\u00a0PRIVMSG NickServ :IDENTIFY {nbsp}"),
        (admin, admins, f"!cmd PRIVMSG NickServ :IDENTIFY {raw}"),
        (autoy, room, f"!join #keyed {key}"),
    ]
    for client, where, text in sent:
        wait_notice(client, where, client.send_text(where, text))
    edited = f"edited-{secrets.token_hex(8)}"  # an edit brings the secret
    first = autoy.send_text(room, "!status")  # which never shows the channel key either
    assert key not in wait_notice(autoy, room, first)
    autoy.send_event(room, "m.room.message", {
        "msgtype": "m.text", "body": f"* !storepass {edited}",
        "m.new_content": {"msgtype": "m.text", "body": f"!storepass {edited}"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": first},
    })
    for secret in (tab, nbsp, raw, key, edited):
        wait_until(lambda secret=secret: secret.encode() not in db_bytes(stack), TIMEOUT,
                   what=f"{secret.split('-')[0]} gone from the database")
        assert secret not in stack.bridge.log(2000)
    ask(autoy, room, "!autocmd clear", "Cleared")


def test_storepass_sasl_uses_the_current_nick_as_account(stack: Stack) -> None:
    sasly = user(stack, "sasly")
    room = admin_room(sasly)
    ask(sasly, room, "!reconnect", "onnecting to local")
    wait_notice(sasly, room, None, lambda b: b.startswith("Connected to local as sasly[m]"))
    reply = ask(sasly, room, "!storepass sasl secret words here")
    assert "Stored your sasl password" in reply and "account sasly[m]" in reply
    assert "secret words" not in "".join(bot_notices(sasly, room))
    assert "password: stored (sasl)" in ask(sasly, room, "!status")


def test_without_a_key_file_secrets_are_refused(tmp_path: Path) -> None:
    from bridge.admin.rooms import AdminRooms
    from bridge.config.ini import load
    from tests.conftest import built_app, write_config

    with built_app(load(write_config(tmp_path))) as app:
        admin = bridge_of(app).admin
        assert isinstance(admin, AdminRooms)
        for command in ("!storepass hunter2", "!certfp", "!autocmd add AWAY :gone"):
            reply = admin.runner.run(command, "@alice:localhost", "!room:localhost")
            assert "ircbridge generate-key" in reply, (command, reply)


def test_certfp(stack: Stack) -> None:
    certy = user(stack, "certy")
    room = admin_room(certy)
    first = ask(certy, room, "!certfp")
    assert first.startswith("Made your client certificate for local")
    sha512 = first.split("SHA-512: ", 1)[1].split("\n", 1)[0]
    assert len(sha512) == 128 and int(sha512, 16) >= 0
    again = ask(certy, room, "!certfp show")
    assert again.startswith("Your client certificate") and sha512 in again
    renewed = ask(certy, room, "!certfp new")
    assert renewed.startswith("Made") and sha512 not in renewed
    assert b"PRIVATE KEY" not in db_bytes(stack)
    assert "Removed your client certificate" in ask(certy, room, "!certfp remove")
    assert "certificate: no" in ask(certy, room, "!status")


def test_autocmd_runs_after_connect(stack: Stack) -> None:
    autoy = user(stack, "autoy")
    room = admin_room(autoy)
    watcher = irc_in(stack, "autowatch")
    try:
        assert "No commands" in ask(autoy, room, "!autocmd")
        added = ask(autoy, room, "!autocmd add PRIVMSG autowatch :hello from autocmd")
        assert added.startswith("Added line 1: PRIVMSG autowatch …")
        assert "hello from autocmd" not in ask(autoy, room, "!autocmd list")
        assert "Only bridge admins" in ask(autoy, room, "!autocmd add KILL autowatch :x")
        ask(autoy, room, "!reconnect", "onnecting to local")
        watcher.wait_for_privmsg("hello from autocmd", sender="autoy[m]", timeout=TIMEOUT)
        assert "There is no line 5" in ask(autoy, room, "!autocmd remove 5")
        assert "Removed line 1" in ask(autoy, room, "!autocmd remove 1")
        assert "Cleared" in ask(autoy, room, "!autocmd clear")
    finally:
        watcher.quit()


# ------------------------------------------------------------------ connection
def test_quit_reconnect_and_status(stack: Stack) -> None:
    quitter = user(stack, "quitter")
    room = admin_room(quitter)
    watcher = irc_in(stack, "quitwatch", "#quitters")
    try:
        ask(quitter, room, "!join #quitters", "Joined #quitters")
        watcher.wait_for(lambda m: m.command == "JOIN" and m.nick == "quitter[m]", TIMEOUT)
        status = ask(quitter, room, "!status")
        assert "role: user" in status and "connected as quitter[m] in #quitters" in status
        assert "Disconnected from local" in ask(quitter, room, "!quit")
        watcher.wait_for(lambda m: m.command == "QUIT" and m.nick == "quitter[m]", TIMEOUT)
        assert "no connection" in ask(quitter, room, "!status")
        assert "You had no connection" in ask(quitter, room, "!quit")
        marker = quitter.send_text(room, "!reconnect")
        wait_notice(quitter, room, marker, lambda b: b == "Connected to local as quitter[m].")
        assert "You are in no IRC channels" in ask(quitter, room, "!listrooms")
    finally:
        watcher.quit()


def test_kick_is_reported(stack: Stack) -> None:
    kicky = user(stack, "kicky")
    room = admin_room(kicky)
    op = irc_in(stack, "kickop", "#kicking")
    try:
        ask(kicky, room, "!join #kicking", "Joined #kicking")
        op.wait_for(lambda m: m.command == "JOIN" and m.nick == "kicky[m]", TIMEOUT)
        marker = kicky.send_text(room, "!status")
        op.send("KICK #kicking kicky[m] :out")
        wait_notice(kicky, room, marker, lambda b: b == "You were kicked from #kicking on local.")
    finally:
        op.quit()


def test_cmd_is_for_admins_and_refuses_dangerous_commands(stack: Stack) -> None:
    alice = user(stack, "alice")
    assert "for bridge admins only" in ask(alice, admin_room(alice), "!cmd PRIVMSG x :y")
    admin = user(stack, ADMIN)
    room = admin_room(admin)
    assert "!cmd" in ask(admin, room, "!help")
    watcher = irc_in(stack, "rawwatch")
    try:
        assert ask(admin, room, "!cmd privmsg rawwatch :raw hello") == "Sent PRIVMSG on local."
        watcher.wait_for_privmsg("raw hello", sender="admin[m]", timeout=TIMEOUT)
        assert "QUIT cannot be sent" in ask(admin, room, "!cmd QUIT :bye")
        assert "PASS cannot be sent" in ask(admin, room, "!cmd PASS x")
    finally:
        watcher.quit()


def test_leaving_the_admin_room_makes_the_bot_leave(stack: Stack) -> None:
    leaver = user(stack, "leaver")
    room = admin_room(leaver)
    leaver.leave(room)
    bot = MatrixClient(stack.synapse.url, as_token(stack), BOT)
    wait_until(lambda: room not in bot.joined_rooms(), TIMEOUT, what="the bot to leave")


# ------------------------------------------------------------------ static rooms, directory
def test_static_mapping_is_linked_at_start(stack: Stack) -> None:
    owner = user(stack, "roomowner")
    room: str = stack.static_room  # type: ignore[attr-defined]
    out = subprocess.run([sys.executable, "-m", "bridge", "-c", str(stack.config_path), "links"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert f"local\t#static\t{room}\tstatic" in out
    speaker = irc_in(stack, "staticspeaker", "#static")
    try:
        wait_until(lambda: "ircbot" in speaker.names("#static"), TIMEOUT, what="the bot in #static")
        speaker.privmsg("#static", "hello static room")
        owner.wait_for_text(room, "hello static room", timeout=TIMEOUT)
    finally:
        speaker.quit()


def test_portal_rooms_are_listed_in_the_network_directory(stack: Stack) -> None:
    looker = user(stack, "dirlooker")
    # Without a `*` line alias queries answer 404 (they name nobody): !join makes the room.
    ask(looker, admin_room(looker), "!join #listed", "invited you")
    portal = looker.join("#irc_local_#listed:localhost")

    def listed() -> bool:
        found = looker.request("POST", "/_matrix/client/v3/publicRooms",
                               json={"third_party_instance_id": "ircbridge|local", "limit": 100})
        return any(r.get("room_id") == portal for r in found.get("chunk", []))

    wait_until(listed, TIMEOUT, interval=0.2, what="the portal in the room directory")


def test_longmessages_lines_sends_every_line_instead_of_a_link(stack: Stack) -> None:
    writer = user(stack, "writer")
    room = admin_room(writer)
    watcher = irc_in(stack, "longwatch", "#longmsg")
    try:
        assert "first line and a link" in ask(writer, room, "!longmessages")
        assert "every line" in ask(writer, room, "!longmessages lines")
        assert "Say link or lines" in ask(writer, room, "!longmessages sometimes")
        ask(writer, room, "!join #longmsg", "invited you")  # no `*` line: no alias queries
        portal = writer.join("#irc_local_#longmsg:localhost")
        text = "\n".join(f"part {i}" for i in range(1, 6))
        writer.send_text(portal, text)
        got = [watcher.wait_for(lambda m: m.command == "PRIVMSG" and m.nick == "writer[m]",
                                TIMEOUT).text for _ in range(5)]
        assert got == [f"part {i}" for i in range(1, 6)]
        assert "first line and a link" in ask(writer, room, "!longmessages link")
        writer.send_text(portal, text)
        msg = watcher.wait_for(lambda m: m.command == "PRIVMSG" and "full message" in m.text,
                               TIMEOUT)
        assert msg.text.startswith("part 1")
    finally:
        watcher.quit()
