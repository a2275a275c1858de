"""Observers of homeserver requests: how the metrics hear of each attempt.

Why apart: the client must not import ops (ops imports the client for its checks), so the
client only calls `request_done` here, and `bridge.ops.metrics` adds its observer when it is
imported. Any thread: the request threads, the inbox thread, the senders and the admin lanes
all make requests; observers are called on the requesting thread and must be cheap and never
raise (a failing observer is logged at debug and skipped).
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

import requests

log = logging.getLogger(__name__)


class RequestObserver(Protocol):
    def __call__(self, method: str, seconds: float, status: int, errcode: str | None = None,
                 *, client: object = None,
                 response: requests.Response | None = None) -> None: ...


_observers: list[RequestObserver] = []
_lock = threading.Lock()


def add_request_observer(observer: RequestObserver) -> None:
    """Call `observer` after every attempt of every homeserver request (once per observer)."""
    with _lock:
        if observer not in _observers:
            _observers.append(observer)


def remove_request_observer(observer: RequestObserver) -> None:
    with _lock:
        if observer in _observers:
            _observers.remove(observer)


def request_done(method: str, seconds: float, status: int, errcode: str | None = None, *,
                 client: object = None, response: requests.Response | None = None) -> None:
    """One attempt ended: `status` 0 means no HTTP answer (`errcode` names the exception)."""
    with _lock:
        observers = list(_observers)
    for observer in observers:
        try:
            observer(method, seconds, status, errcode, client=client, response=response)
        except Exception:  # noqa: BLE001 - an observer must never break a request
            log.debug("request observer failed", exc_info=True)
