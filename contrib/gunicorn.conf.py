"""gunicorn settings for hosting ircbridge as a plain WSGI app.

    export IRCBRIDGE_CONFIG=/etc/ircbridge/config.ini
    gunicorn -c contrib/gunicorn.conf.py 'bridge:create_app()'

`ircbridge -c config.ini run` applies the same settings by itself; this file is for hosts that
want to start gunicorn themselves. Why these values: the bridge holds stateful IRC connections
(one per Matrix user and network), so exactly ONE worker may exist, it must be threaded
(gthread) and it must never be recycled (no max_requests) or forked from a preloaded parent
(no preload_app: the IRC and sender threads would not survive the fork). A second worker would
be refused by the per-network lock anyway. On exit the worker stops the bridge cleanly (QUIT
on IRC, queues settled, locks released).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from bridge.config import ini as _config_module

_path = Path(os.environ.get(_config_module.ENV_CONFIG, "config.ini")).resolve()
try:
    _config = _config_module.load(_path)
except _config_module.ConfigError as _e:
    sys.stderr.write(f"{_path}: {len(_e.problems)} problem(s):\n")
    sys.stderr.writelines(f"  {p}\n" for p in _e.problems)
    sys.stderr.write(f"set {_config_module.ENV_CONFIG} to the bridge's config.ini\n")
    raise SystemExit(2) from None
_problems = _config_module.require_tokens(_config)
if _problems:
    sys.stderr.writelines(f"{p}\n" for p in _problems)
    raise SystemExit(2)
# The worker's create_app() reads the same file, wherever gunicorn's working directory is.
os.environ[_config_module.ENV_CONFIG] = str(_path)

wsgi_app = "bridge:create_app()"
proc_name = "ircbridge"
bind = [_config.appservice.bind]  # [appservice] bind
workers = 1  # never more: IRC connections live in this one process
worker_class = "gthread"
threads = _config.appservice.threads  # [appservice] threads
preload_app = False  # the bridge's threads start in the worker, not in the master
max_requests = 0  # never recycle the worker (it would drop every IRC connection)
max_requests_jitter = 0
timeout = 120  # the homeserver's room/user queries may wait on room creation
graceful_timeout = 10  # time for bridge.stop(): QUIT on IRC, queues settled
keepalive = 75  # the homeserver keeps its connection to the bridge open
accesslog = None  # request lines may carry ?access_token=; the bridge logs what matters
errorlog = "-"
# gunicornc could add workers at run time; the single-worker model forbids that.
control_socket_disable = True


def worker_exit(server: Any, worker: Any) -> None:
    """Stop the bridge (and its own metrics port) when the worker exits."""
    app = getattr(worker, "wsgi", None)
    if app is not None and hasattr(app, "extensions"):
        from bridge.web import shutdown

        shutdown(app)
