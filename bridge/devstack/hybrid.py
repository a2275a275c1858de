"""ircd-hybrid (the family OFTC runs) for the devstack: its config and how to start it.

Debian's ``ircd-hybrid`` cannot be installed beside ``ngircd`` (ngircd's package declares
``Conflicts: ircd-hybrid``: apt removes one to install the other), so the tests use its
files unpacked from the package (``apt-get download ircd-hybrid`` and ``dpkg-deb`` into
``/``, which puts ``/usr/sbin/ircd-hybrid`` and ``/usr/lib/ircd-hybrid/modules`` where the
binary looks for them; docs/testing.md has the lines).

Three things about it shape this module, all measured here:
- it refuses to run as root, so as root it runs as ``nobody`` (``setpriv``) and every file
  it reads or writes is in a folder of its own that ``nobody`` owns;
- it always looks up the client's reverse DNS (no setting turns that off), through
  ``/etc/resolv.conf``: as root it runs in a private mount namespace whose
  ``resolv.conf`` names a loopback :class:`~bridge.devstack.nxdomain.NxdomainServer`,
  so registration is immediate and no query leaves loopback;
- per-IP limits, the connection throttle and flood limits are all on by default; the
  ``auth`` block's ``can_flood``/``exceed_limit`` and the ``general`` settings below lift
  them for 127.0.0.1, where every test client and every puppet comes from.

Called from the thread that starts the daemon (a test's or ``ircbridge demo``'s).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from bridge.devstack.ports import LOOPBACK

HYBRID_FALLBACK_PATH = Path("/usr/sbin/ircd-hybrid")
MODULES = Path("/usr/lib/ircd-hybrid/modules")


def hybrid_path() -> str | None:
    """Where the ircd-hybrid binary is (with its modules), or None."""
    found = shutil.which("ircd-hybrid") or (
        str(HYBRID_FALLBACK_PATH) if HYBRID_FALLBACK_PATH.exists() else None)
    return found if found and MODULES.is_dir() else None


def hybrid_config(*, server_name: str, port: int, folder: Path, flood_control: bool,
                  oper_name: str, oper_password: str) -> str:
    """ircd.conf for one test server on ``LOOPBACK:port``; logs and databases in ``folder``."""
    flags = "exceed_limit, no_tilde, kline_exempt, xline_exempt, resv_exempt"
    if not flood_control:
        flags += ", can_flood"
    return f"""/* written by the ircbridge devstack */
serverinfo {{
	name = "{server_name}";
	sid = "0DS";
	description = "ircbridge devstack IRC server";
	network_name = "devstack";
	hub = no;
	default_max_clients = 10000;
	max_nick_length = 30;
	max_topic_length = 390;
}};
admin {{
	name = "devstack";
	description = "loopback only";
	email = "<root@localhost>";
}};
class {{
	name = "users";
	ping_time = 120 seconds;
	number_per_ip_local = 100000;
	number_per_ip_global = 100000;
	cidr_bitlen_ipv4 = 32;
	cidr_bitlen_ipv6 = 128;
	number_per_cidr = 100000;
	max_number = 100000;
	max_channels = 1000;
	sendq = 4 megabytes;
	recvq = 8000 bytes;
}};
listen {{
	host = "{LOOPBACK}";
	port = {port};
}};
auth {{
	user = "*@*";
	class = "users";
	flags = {flags};
}};
exempt {{
	ip = "{LOOPBACK}";
}};
operator {{
	name = "{oper_name}";
	user = "*@*";
	password = "{oper_password}";
	encrypted = no;
	class = "users";
	flags = admin, connect, connect:remote, die, dline, globops, kill, kill:remote,
		kline, locops, module, opme, rehash, remoteban, restart, set, squit,
		squit:remote, undline, unkline, unresv, unxline, wallops, xline, resv;
}};
channel {{
	disable_fake_channels = no;
	max_channels = 1000;
	max_invites = 1000;
	invite_client_count = 1000;
	knock_client_count = 1000;
	default_join_flood_count = 0;
	default_join_flood_time = 0 seconds;
}};
general {{
	disable_auth = yes;
	specials_in_ident = 30;
	invisible_on_connect = no;
	throttle_count = 100000;
	throttle_time = 0 seconds;
	default_floodcount = {10 if flood_control else 0};
	default_floodtime = 1 second;
	anti_nick_flood = no;
	anti_spam_exit_message_time = 0 seconds;
	max_targets = 999;
	max_monitor = 1000;
	ping_cookie = no;
	away_count = 1000;
	away_time = 1 second;
	caller_id_wait = 1 second;
	pace_wait = 0 seconds;
	pace_wait_simple = 0 seconds;
	short_motd = yes;
}};
modules {{
	path = "{MODULES}";
	path = "{MODULES}/autoload";
}};
log {{
	use_logging = yes;
	file {{ type = user; name = "{folder / 'user.log'}"; size = unlimited; }};
	file {{ type = oper; name = "{folder / 'oper.log'}"; size = unlimited; }};
	file {{ type = kill; name = "{folder / 'kill.log'}"; size = unlimited; }};
	file {{ type = debug; name = "{folder / 'debug.log'}"; size = unlimited; }};
}};
"""


def hybrid_command(config: Path, folder: Path, nameserver: str | None) -> list[str]:
    """The command line; as root: a private ``resolv.conf`` naming ``nameserver`` and
    ``nobody``'s uid (the binary refuses root)."""
    binary = hybrid_path()
    assert binary is not None
    run = [binary, "-foreground", "-configfile", str(config),
           "-pidfile", str(folder / "ircd.pid"),
           "-klinefile", str(folder / "kline.db"), "-dlinefile", str(folder / "dline.db"),
           "-xlinefile", str(folder / "xline.db"), "-resvfile", str(folder / "resv.db")]
    if os.geteuid() != 0:
        return run
    setpriv = ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups"]
    if nameserver is None:
        return [*setpriv, *run]
    resolv = folder / "resolv.conf"
    resolv.write_text(f"nameserver {nameserver}\n")
    # unshare execs the shell in place (no fork): the daemon keeps the pid we started.
    script = 'mount --bind "$1" /etc/resolv.conf && shift && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script,
            "devstack", str(resolv), *setpriv, *run]
