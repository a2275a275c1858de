"""Asserting that IRC-only methods run on the IRC thread (a test and debugging aid).

`irc_thread_only` marks a method of an object with a `thread` (bridge.irc.reactor.IrcThread)
as IRC-thread-only. With checking on (IRCBRIDGE_CHECK_THREADS=1 in the environment, or
`enable()` from a test), a call from any other thread raises `WrongThread`; with it off the
check is one global read. Runs on whichever thread calls the method.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

_enabled = os.environ.get("IRCBRIDGE_CHECK_THREADS", "") not in ("", "0")

F = TypeVar("F", bound=Callable[..., Any])


class WrongThread(AssertionError):
    """An IRC-thread-only method was called from another thread."""


class _HasThread(Protocol):
    def in_thread(self) -> bool: ...


def enable(on: bool = True) -> None:
    """Turn the check on (tests) or off."""
    global _enabled
    _enabled = on


def enabled() -> bool:
    return _enabled


def irc_thread_only(method: F) -> F:
    """Raise WrongThread (when checking is on) unless called on the owner's IRC thread."""

    @functools.wraps(method)
    def checked(self: Any, *args: Any, **kwargs: Any) -> Any:
        if _enabled:
            thread: _HasThread = self.thread
            if not thread.in_thread():
                raise WrongThread(f"{type(self).__name__}.{method.__name__} called on "
                                  f"{threading.current_thread().name}, not the IRC thread")
        return method(self, *args, **kwargs)

    return checked  # type: ignore[return-value]
