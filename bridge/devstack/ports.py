"""Loopback ports, deadline polling and child-process bookkeeping for the devstack.

The devstack starts real daemons (Synapse, an IRC server) for tests and for
``ircbridge demo``. Everything here exists so that those daemons get a free port
on 127.0.0.1, so that every "wait until it is ready" is a poll with a deadline
(never a fixed sleep), and so that no child process outlives the interpreter.

Thread: any thread of a test or the demo (a lock guards the children list).
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

LOOPBACK = "127.0.0.1"


class StartupError(RuntimeError):
    """A devstack daemon did not come up (it died, or a deadline passed)."""


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago, and never one this process
    was given before (the kernel may offer the same port again until someone binds it, and
    two servers of one stack would then share it)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    Raises ``TimeoutError(f"timed out waiting for {what}")`` once ``timeout``
    seconds have passed. The predicate is always tried at least once, and once
    more right at the deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(min(interval, remaining))


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when a TCP connect to host:port succeeds right now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a text file ('' when it does not exist)."""
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


# --- child processes ---------------------------------------------------------

_children: set[subprocess.Popen[bytes]] = set()
_children_lock = threading.Lock()


def track(proc: subprocess.Popen[bytes]) -> None:
    """Remember a child so that it is ended at interpreter exit."""
    with _children_lock:
        _children.add(proc)


def terminate(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> int | None:
    """SIGTERM ``proc``, wait up to ``timeout`` s, then SIGKILL; return its exit code.

    Only the given process (and, since every devstack child is started in its own
    session, its own process group) is signalled.
    """
    with _children_lock:
        _children.discard(proc)
    if proc.poll() is None:
        _signal(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("pid %d ignored SIGTERM for %.1f s; killing it", proc.pid, timeout)
            _signal(proc, signal.SIGKILL)
            proc.wait(timeout=10)
    return proc.returncode


def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # Children run in their own session (start_new_session=True), so their pid is
    # also their process-group id: signalling the group reaches any helper they
    # forked, and nothing else.
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass


@atexit.register
def _cleanup_children() -> None:
    with _children_lock:
        procs = list(_children)
    for proc in procs:
        try:
            terminate(proc, timeout=5)
        except Exception:  # pragma: no cover - best effort at exit
            log.exception("could not stop pid %d at exit", proc.pid)
