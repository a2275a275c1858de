"""What the homeserver client tells an observer of each request attempt (the app's metrics).

Why apart: the client must not import ops (ops imports the client for its checks), so it
declares here the callable it is given (`HomeserverClient.observer`, set by Bridge.attach).
Observers are called on the requesting thread (request threads, the inbox thread, the
senders, the admin lanes) and must be cheap; one that raises is logged at debug and skipped.
"""

from __future__ import annotations

from typing import Protocol

import requests


class RequestObserver(Protocol):
    def __call__(self, method: str, seconds: float, status: int, errcode: str | None = None,
                 *, response: requests.Response | None = None) -> None: ...
