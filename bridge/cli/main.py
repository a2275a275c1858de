"""The `ircbridge` command (also `python -m bridge`).

Thread: the main thread of the CLI (argparse, then the chosen command).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import ini as config_module
from ..version import __version__

if TYPE_CHECKING:
    from gunicorn.arbiter import Arbiter
    from gunicorn.workers.base import Worker

log = logging.getLogger(__name__)


def _load(path: str) -> config_module.Config:
    try:
        return config_module.load(path)
    except config_module.ConfigError as e:
        print(f"{path}: {len(e.problems)} problem(s):", file=sys.stderr)
        for problem in e.problems:
            print(f"  {problem}", file=sys.stderr)
        raise SystemExit(2) from None


def _start_problems(config: config_module.Config) -> list[str]:
    """What blocks serving: empty tokens, a key file that others may read."""
    from ..admin.vault import key_file_problem

    problems = config_module.require_tokens(config)
    key_file = config.provisioning.key_file
    problem = key_file_problem(key_file) if key_file is not None else None
    if problem:
        problems.append(f"[provisioning] key_file: {problem}")
    return problems


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args.config)
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    problems = _start_problems(config)
    if problems:
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    names = ", ".join(n.name for n in config.networks)
    print(f"{args.config}: valid ({len(config.networks)} network(s): {names})")
    if getattr(args, "online", False):
        from ..ops.checks import run_online

        results = run_online(config)
        for result in results:
            print(result.line())
        return 0 if all(r.ok for r in results) else 1
    return 0


def cmd_generate_registration(args: argparse.Namespace) -> int:
    from ..config import registration

    config, out, filled = registration.generate(
        _load(args.config), Path(args.output) if args.output else None)
    if filled:
        print(f"wrote new tokens into {config.path}")
    print(f"wrote {out}; add it to app_service_config_files in homeserver.yaml "
          "and restart the homeserver")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from ..config import registration
    from ..store.models import Store

    config = _load(args.config)
    store = Store(config.database.url, config.appservice.id)
    networks = [n.name for n in config.networks]
    try:
        before, after = store.migrate(networks)  # every table, the admin ones included
        registration.announce(store, config)
    except Exception as e:  # noqa: BLE001 - one clear line for the admin
        print(f"cannot migrate {_safe_url(config.database.url)}: {e}", file=sys.stderr)
        return 1
    finally:
        store.close()
    if before == after:
        print(f"database schema already at version {after}")
    else:
        print(f"database schema migrated from version {before or 0} to {after}")
    return 0


def _safe_url(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


def cmd_run(args: argparse.Namespace) -> int:
    from gunicorn.app.base import BaseApplication

    config = _load(args.config)
    problems = _start_problems(config)
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        return 2
    config_path = str(Path(args.config).resolve())

    class Application(BaseApplication):
        def load_config(self) -> None:
            for key, value in gunicorn_settings(config).items():
                self.cfg.set(key, value)

        def load(self) -> Any:  # a WSGI app; Flask does not match the stubs' callable type
            from .. import create_app

            return create_app(config_path)

    os.environ[config_module.ENV_CONFIG] = config_path
    Application().run()
    return 0


def gunicorn_settings(config: config_module.Config) -> dict[str, object]:
    """One gthread worker (IRC connections are per process), no preload, no recycling."""

    def worker_exit(server: Arbiter, worker: Worker) -> None:
        app = getattr(worker, "wsgi", None)
        bridge = getattr(app, "extensions", {}).get("bridge") if app is not None else None
        if bridge is not None:
            bridge.stop()

    return {
        "bind": [config.appservice.bind],
        "workers": 1,
        "worker_class": "gthread",
        "threads": config.appservice.threads,
        "timeout": 120,
        "graceful_timeout": 10,
        "keepalive": 75,
        "preload_app": False,
        "max_requests": 0,
        "accesslog": None,
        # Gunicorn's control socket could add workers at run time: one process only.
        "control_socket_disable": True,
        "worker_exit": worker_exit,
    }


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(keep=args.keep, verbose=args.verbose)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ircbridge", description="A Matrix application service bridging IRC networks."
    )
    parser.add_argument("-c", "--config", default=os.environ.get(config_module.ENV_CONFIG,
                                                                 "config.ini"),
                        help="path to config.ini (default: ./config.ini)")
    parser.add_argument("--version", action="version", version=f"ircbridge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("generate-registration",
                       help="write the registration file; fill empty tokens into config.ini")
    p.add_argument("-o", "--output", help="where to write it (default: [appservice] registration)")
    p.set_defaults(func=cmd_generate_registration)
    p = sub.add_parser("check-config", help="validate config.ini")
    p.add_argument("--online", action="store_true",
                   help="also run the startup checks once: homeserver, as_token, AS ping, "
                        "database, each IRC network (exit 1 if one fails)")
    p.set_defaults(func=cmd_check_config)
    sub.add_parser("run", help="serve the bridge with gunicorn").set_defaults(func=cmd_run)
    sub.add_parser("migrate", help="bring the database schema up to date").set_defaults(
        func=cmd_migrate)
    p = sub.add_parser("demo", help="play the founding story on a local homeserver and IRC server")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    p.add_argument("-v", "--verbose", action="store_true", help="show the bridge's log")
    p.set_defaults(func=cmd_demo)
    from .links import add_parsers  # link, unlink, links, generate-key

    add_parsers(sub, _load)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
