"""Ergo 2.11.1, the IRCv3 reference server, for the devstack: its config and database.

Ergo is in neither Debian nor PyPI; a build is kept beside the project at
``../shared/tools/ergo/`` (its README says how it was made). The config is its own
``default.yaml``, read and changed in memory, written to the test's folder: one plaintext
listener on loopback, no TLS, no STS, no per-IP limits, no fakelag, no account throttling,
no cloaking, the datastore and lock file in the folder; history (CHATHISTORY), multiline and
RELAYMSG stay as ``default.yaml`` has them (on; history kept in memory only). ``initdb``
makes the datastore before the first start.

Called from the thread that starts the daemon (a test's or ``ircbridge demo``'s).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

from bridge.devstack.ports import LOOPBACK

ERGO_ENV = "IRCBRIDGE_ERGO"  # another build of Ergo to use instead
PROJECT_ROOT = Path(__file__).resolve().parents[2]
# ../shared beside the project's root (a clone, CI); one level up for a git worktree kept in
# a folder of worktrees beside the main clone.
ERGO_FOLDERS = (PROJECT_ROOT.parent / "shared" / "tools" / "ergo",
                PROJECT_ROOT.parent.parent / "shared" / "tools" / "ergo")


def ergo_folder() -> Path:
    """The folder of the Ergo build: ``$IRCBRIDGE_ERGO``'s, else ``../shared/tools/ergo``."""
    override = os.environ.get(ERGO_ENV)
    if override:
        return Path(override).resolve().parent
    return next((f for f in ERGO_FOLDERS if (f / "ergo").is_file()), ERGO_FOLDERS[0])


def ergo_path() -> str | None:
    """The Ergo binary, or None when it is not there (its default.yaml must be beside it)."""
    folder = ergo_folder()
    binary = Path(os.environ.get(ERGO_ENV) or folder / "ergo")
    if binary.is_file() and os.access(binary, os.X_OK) and (folder / "default.yaml").is_file():
        return str(binary)
    return None


def ergo_config(*, server_name: str, port: int, folder: Path, flood_control: bool,
                oper_name: str, oper_password_hash: str | None) -> str:
    """ircd.yaml: ``default.yaml`` with the changes this module's docstring lists."""
    source = ergo_folder()
    conf = yaml.safe_load((source / "default.yaml").read_text(encoding="utf-8"))
    conf["network"]["name"] = "devstack"
    server = conf["server"]
    server["name"] = server_name
    server["listeners"] = {f"{LOOPBACK}:{port}": None}
    server["sts"]["enabled"] = False
    server["lookup-hostnames"] = False
    server["check-ident"] = False
    server["motd"] = str(folder / "ergo.motd")
    server["max-sendq"] = "4M"
    server["ip-limits"]["count"] = False
    server["ip-limits"]["throttle"] = False
    server["ip-cloaking"]["enabled"] = False
    accounts = conf["accounts"]
    accounts["registration"]["throttling"]["enabled"] = False
    accounts["login-throttling"]["enabled"] = False
    # +C (no CTCP) is Ergo's own default; the other servers create channels +nt.
    conf["channels"]["default-modes"] = "+nt"
    conf["channels"]["max-channels-per-client"] = 1000
    conf["fakelag"]["enabled"] = flood_control
    conf["lock-file"] = str(folder / "ircd.lock")
    conf["datastore"]["path"] = str(folder / "ircd.db")
    conf["languages"]["path"] = str(source / "languages")
    conf["allow-environment-overrides"] = False  # ERGO__* variables must not change a test
    if oper_password_hash:
        conf["opers"] = {oper_name: {"class": "server-admin", "hidden": True,
                                     "password": oper_password_hash}}
    else:
        conf["opers"] = {}
    (folder / "ergo.motd").write_text("ircbridge devstack (ergo)\n", encoding="utf-8")
    return yaml.safe_dump(conf, sort_keys=False)


def ergo_password_hash(password: str, timeout: float = 20) -> str | None:
    """A bcrypt hash from ``ergo genpasswd`` (it reads the password twice from stdin)."""
    binary = ergo_path()
    if binary is None:
        return None
    done = subprocess.run([binary, "genpasswd", "--quiet"], input=f"{password}\n{password}\n",
                          capture_output=True, text=True, timeout=timeout, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("$2")]
    return lines[-1] if lines else None


def ergo_initdb(config: Path, timeout: float = 30) -> None:
    """Create the datastore (once, before the first ``run``)."""
    binary = ergo_path()
    assert binary is not None
    done = subprocess.run([binary, "initdb", "--conf", str(config), "--quiet"],
                          capture_output=True, text=True, timeout=timeout, check=False,
                          cwd=config.parent)
    if done.returncode != 0:
        raise RuntimeError(f"ergo initdb failed ({done.returncode}): "
                           f"{(done.stdout + done.stderr).strip()[-2000:]}")


def ergo_command(config: Path) -> list[str]:
    binary = ergo_path()
    assert binary is not None
    return [binary, "run", "--conf", str(config)]
