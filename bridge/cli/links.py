"""`ircbridge link`, `unlink`, `links` and `generate-key`: room links and the secrets key.

Why two paths: a running bridge keeps its links in memory, so when `[provisioning] secret`
is set and the bridge answers on its bind address, these commands go through its
provisioning API (the change is live at once). Otherwise they work on the database and the
homeserver directly (the bot joins or leaves the room) and the running bridge picks the
change up at its next start.

Thread: the main thread of the CLI.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import requests

from ..config import ini as config_module
from ..core.provisioning import admin_token
from ..rules.ids import JsonDict
from ..rules.names import irc_lower, valid_channel

if TYPE_CHECKING:
    from ..matrix import Intent
    from ..store.models import Store

PREFIX = "/_ircbridge/provisioning/v1"
Loader = Callable[[str], config_module.Config]


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                load: Loader) -> None:
    """Add the subcommands to `ircbridge`'s parser (`sub` from add_subparsers)."""
    p = sub.add_parser("link", help="bridge an existing Matrix room to an IRC channel")
    p.add_argument("--network", required=True, help="a [network:NAME] of config.ini")
    p.add_argument("--channel", required=True, help="the IRC channel, e.g. '#python'")
    p.add_argument("--room", required=True, help="the Matrix room id (!...)")
    p.add_argument("--mirror-modes", action="store_true",
                   help="let IRC modes set the room's power levels and make it invite-only "
                        "(never public, never lowering levels set in Matrix); off by default")
    p.add_argument("--relay", choices=("on", "off"),
                   help="the room's relay mode: on, the bot says everyone's messages (no "
                        "connections of their own); off, everyone has their own; default: "
                        "the network's relay_mode")
    p.set_defaults(func=lambda args: cmd_link(args, load))
    p = sub.add_parser("unlink", help="stop bridging a Matrix room")
    p.add_argument("--room", required=True, help="the Matrix room id (!...)")
    p.add_argument("--network", help="only from this network (a room may be linked on "
                                     "several); default: from every network")
    p.set_defaults(func=lambda args: cmd_unlink(args, load))
    p = sub.add_parser("links", help="list the bridged rooms")
    p.add_argument("--room", help="only this room id")
    p.set_defaults(func=lambda args: cmd_links(args, load))
    p = sub.add_parser("generate-key",
                       help="write the key that encrypts stored IRC passwords ([provisioning] "
                            "key_file)")
    p.add_argument("-o", "--output", help="where (default: [provisioning] key_file, else "
                                          "ircbridge.key beside config.ini)")
    p.add_argument("--force", action="store_true",
                   help="replace an existing key (stored passwords become unreadable)")
    p.set_defaults(func=lambda args: cmd_generate_key(args, load))


# ---------------------------------------------------------------------------- the API
def _api_base(config: config_module.Config) -> str:
    host = config.appservice.bind_host
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config.appservice.bind_port}{PREFIX}"


def running_api(config: config_module.Config) -> _Api | None:
    """The running bridge's provisioning API, or None (no secret, or nobody answers)."""
    if not config.provisioning.secret:
        return None
    # The command line acts as the bridge's admin: it proves it with the token only a reader
    # of config.ini can make (not by naming the bot in the body).
    api = _Api(_api_base(config), admin_token(config.appservice.as_token))
    try:
        response = api.session.get(api.base + "/networks", timeout=3)
    except requests.RequestException:
        return None
    if response.status_code != 200:
        print(f"warning: the bridge at {api.base} answered {response.status_code}; "
              "working on the database instead", file=sys.stderr)
        return None
    return api


class _Api:
    def __init__(self, base: str, secret: str):
        self.base = base
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.headers["Authorization"] = f"Bearer {secret}"

    def call(self, method: str, path: str, *, json: JsonDict | None = None,
             params: dict[str, str] | None = None) -> tuple[bool, JsonDict]:
        response = self.session.request(method, self.base + path, timeout=60, json=json,
                                        params=params)
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = {"error": response.text[:200]}
        return response.status_code == 200, body


# ---------------------------------------------------------------------------- commands
def _room_options(store: Store, args: argparse.Namespace) -> None:
    """`--mirror-modes` and `--relay` of an offline link, in the room_option table."""
    from ..store.room_options import RoomOptions

    options = RoomOptions(store.db, store.bridge_id)
    options.load()
    if args.mirror_modes:
        options.set(args.room, mirror_modes=True)
    if args.relay:
        options.set_relay(args.room, args.relay == "on")


def cmd_link(args: argparse.Namespace, load: Loader) -> int:
    config = load(args.config)
    api = running_api(config)
    if api is not None:
        ok, body = api.call("POST", "/link", json={
            "room_id": args.room, "network": args.network, "channel": args.channel,
            "user_id": config.bot_user_id, "mirror_modes": bool(args.mirror_modes),
            **({"relay": args.relay == "on"} if args.relay else {}),
        })
        if not ok:
            print(f"cannot link: {body.get('error')} ({body.get('errcode')})", file=sys.stderr)
            return 1
        print(f"linked {args.room} to {args.channel} on {args.network} (live)")
        return 0
    problem = _offline_problem(config)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    if config.network(args.network) is None:
        names = ", ".join(n.name for n in config.networks)
        print(f"cannot link: network {args.network!r} is not configured ({names})",
              file=sys.stderr)
        return 1
    if not valid_channel(args.channel) or not args.room.startswith("!"):
        print("cannot link: give an IRC channel like '#python' and a room id like '!abc'",
              file=sys.stderr)
        return 1
    store, bot = _offline(config)
    try:
        folded = irc_lower(args.channel)
        taken = store.link_for_channel(args.network, folded)
        if taken is not None and taken.room_id != args.room:
            print(f"cannot link: {args.channel} on {args.network} is already linked to "
                  f"{taken.room_id}", file=sys.stderr)
            return 1
        # One channel per network: a room may be linked on several networks.
        other = next((lk for lk in store.links_for_room(args.room)
                      if lk.network == args.network), None)
        if other is not None and other.channel != folded:
            print(f"cannot link: {args.room} is already linked to {other.channel_name} on "
                  f"{other.network}", file=sys.stderr)
            return 1
        from ..matrix import MatrixError

        try:
            bot.ensure_registered()
            bot.join(args.room)
        except MatrixError as e:
            print(f"cannot link: the bot cannot join {args.room} ({e}); make the room public "
                  f"or invite {config.bot_user_id}", file=sys.stderr)
            return 1
        store.add_link(args.network, folded, args.channel, args.room, None, kind="plumbed")
        if args.mirror_modes or args.relay:
            _room_options(store, args)
    finally:
        store.close()
        bot.client.close()
    print(f"linked {args.room} to {args.channel} on {args.network} in the database; a "
          "running bridge picks it up at its next start (or set [provisioning] secret so that "
          "this command tells the running bridge)")
    return 0


def cmd_unlink(args: argparse.Namespace, load: Loader) -> int:
    config = load(args.config)
    api = running_api(config)
    if api is not None:
        request = {"room_id": args.room, "user_id": config.bot_user_id}
        if args.network:
            request["network"] = args.network
        ok, body = api.call("POST", "/unlink", json=request)
        if not ok:
            print(f"cannot unlink: {body.get('error')} ({body.get('errcode')})", file=sys.stderr)
            return 1
        print(f"unlinked {args.room} from {body.get('channel')} on {body.get('network')} (live)")
        return 0
    problem = _offline_problem(config)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    store, bot = _offline(config)
    try:
        links = [lk for lk in store.links_for_room(args.room)
                 if args.network in (None, lk.network)]
        if not links:
            print(f"cannot unlink: {args.room} is not linked"
                  + (f" on {args.network}" if args.network else ""), file=sys.stderr)
            return 1
        link = links[0]
        if any(lk.kind == "static" for lk in links):
            print(f"cannot unlink: {args.room} is linked by [network:{link.network}] rooms in "
                  "config.ini; remove it there", file=sys.stderr)
            return 1
        store.remove_link(args.room, args.network)
        if link.kind == "plumbed" and not store.links_for_room(args.room):
            from ..matrix import MatrixError

            try:
                bot.leave(args.room)
            except MatrixError:
                pass
    finally:
        store.close()
        bot.client.close()
    print(f"unlinked {args.room} from {link.channel_name} on {link.network} in the database; a "
          "running bridge stops bridging it at its next start")
    return 0


def cmd_links(args: argparse.Namespace, load: Loader) -> int:
    config = load(args.config)
    api = running_api(config)
    rows: list[JsonDict]
    if api is not None:
        ok, body = api.call("GET", "/links", params={"room_id": args.room} if args.room else None)
        if not ok:
            print(f"cannot list: {body.get('error')}", file=sys.stderr)
            return 1
        found = body.get("links")
        rows = [row for row in found if isinstance(row, dict)] if isinstance(found, list) else []
    else:
        from ..store.models import Store

        store = Store(config.database.url, config.appservice.id)
        try:
            store.open(config.path.name, [n.name for n in config.networks])
            rows = [{"network": lk.network, "channel": lk.channel_name, "room_id": lk.room_id,
                     "kind": lk.kind, "alias": lk.alias}
                    for lk in store.all_links() if args.room in (None, lk.room_id)]
        finally:
            store.close()
    for row in rows:
        alias = f" {row['alias']}" if row.get("alias") else ""
        print(f"{row['network']}\t{row['channel']}\t{row['room_id']}\t{row['kind']}{alias}")
    if not rows:
        print("no links", file=sys.stderr)
    return 0


def cmd_generate_key(args: argparse.Namespace, load: Loader) -> int:
    from pathlib import Path

    from ..admin.vault import VaultError, generate_key_file

    config = load(args.config)
    if args.output:
        path = config_module.resolve_path(Path(args.config).resolve().parent, args.output)
    else:
        path = config.provisioning.key_file or config.path.parent / "ircbridge.key"
    try:
        generate_key_file(path, force=args.force)
    except VaultError as e:
        print(f"cannot write the key: {e}", file=sys.stderr)
        return 1
    print(f"wrote a new key to {path} (mode 600); keep a backup of it: without it the "
          "stored passwords are lost")
    if config.provisioning.key_file != path.resolve():
        print(f"set `key_file = {path}` under [provisioning] in {config.path.name} and restart "
              "the bridge")
    return 0


# ---------------------------------------------------------------------------- offline
def _offline_problem(config: config_module.Config) -> str | None:
    problems = config_module.require_tokens(config)
    return "\n".join(problems) if problems else None


def _offline(config: config_module.Config) -> tuple[Store, Intent]:
    from ..config.registration import announce
    from ..matrix import DEFAULT, HomeserverClient, Intent, IntentCache
    from ..store.models import Store

    store = Store(config.database.url, config.appservice.id)
    store.open(config.path.name, [n.name for n in config.networks])
    announce(store, config)  # before the bot joins a room the other bridges are in
    client = HomeserverClient(config.homeserver.url, config.appservice.as_token,
                              server_name=config.homeserver.domain,
                              policy=dataclasses.replace(DEFAULT, attempts=3))
    bot = Intent(client, config.bot_user_id, is_bot=True, cache=IntentCache())
    return store, bot
