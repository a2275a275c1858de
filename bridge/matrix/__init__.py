"""The homeserver side of the bridge: the AS's client-server API calls.

`client.HomeserverClient` is the raw, retrying HTTP client (one per bridge);
`intent.Intent` acts as one user with the register/join preconditions handled;
`errors` holds the typed `MatrixError` tree; `retry` the `RetryPolicy` a call is made
with. Nothing here imports core or web.

Thread: request threads, the inbox thread, the homeserver senders and the admin lanes call the
homeserver; never the IRC thread.
"""

from __future__ import annotations

from .client import HomeserverClient
from .errors import (
    BadJson,
    Exclusive,
    Forbidden,
    HomeserverUnavailable,
    LimitExceeded,
    MatrixError,
    MissingToken,
    NotFound,
    NotJson,
    RoomInUse,
    TooLarge,
    UnknownToken,
    UserInUse,
    error_from_response,
)
from .intent import Intent, IntentCache
from .retry import DEFAULT, ONCE, QUERY, RetryPolicy, at_most

__all__ = [
    "DEFAULT",
    "ONCE",
    "QUERY",
    "BadJson",
    "Exclusive",
    "Forbidden",
    "HomeserverClient",
    "HomeserverUnavailable",
    "Intent",
    "IntentCache",
    "LimitExceeded",
    "MatrixError",
    "MissingToken",
    "NotFound",
    "NotJson",
    "RetryPolicy",
    "RoomInUse",
    "TooLarge",
    "UnknownToken",
    "UserInUse",
    "at_most",
    "error_from_response",
]
