"""Typed homeserver errors, keyed by Matrix errcode.

Callers branch on *what* went wrong (the user already exists, the alias is taken, we
are rate limited, the homeserver is down), so every non-2xx answer becomes a subclass of
`MatrixError` chosen by its `errcode`, falling back to the HTTP status. The message
never carries the application-service token: tokens only ever travel in the
Authorization header, and `error_from_response` scrubs any secret it is given from the
server-supplied text as a second line of defence.

Thread: any thread: pure (exception classes and their mapping from an answer).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from email.utils import parsedate_to_datetime

log = logging.getLogger(__name__)

REDACTED = "<redacted>"


class MatrixError(Exception):
    """A homeserver answered with a Matrix error (or could not be reached at all)."""

    def __init__(
        self,
        status: int,
        errcode: str,
        error: str = "",
        body: Mapping[str, object] | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.errcode = errcode
        self.error = error
        self.body: dict[str, object] = dict(body or {})
        self.retry_after = retry_after
        # args holds only the scrubbed message, so repr() and tracebacks stay safe too.
        super().__init__(self._message())

    def _message(self) -> str:
        text = f"HTTP {self.status} {self.errcode}"
        if self.error:
            text += f": {self.error}"
        if self.retry_after is not None:
            text += f" (retry after {self.retry_after:.3f}s)"
        return text

    def __str__(self) -> str:
        return self._message()

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.status, self.errcode, self.error, self.body, self.retry_after))


class UserInUse(MatrixError):
    """M_USER_IN_USE: registering a user that exists; for an AS namespace, a success."""


class RoomInUse(MatrixError):
    """M_ROOM_IN_USE: createRoom with an alias that is already taken."""


class Forbidden(MatrixError):
    """M_FORBIDDEN: not allowed (not joined, not registered, not enough power...)."""


class NotFound(MatrixError):
    """M_NOT_FOUND: unknown alias, room, state event or profile."""


class LimitExceeded(MatrixError):
    """M_LIMIT_EXCEEDED (429) that could not be waited out within the retry budget."""


class UnknownToken(MatrixError):
    """M_UNKNOWN_TOKEN: the homeserver does not know our as_token (registration not loaded?)."""


class MissingToken(MatrixError):
    """M_MISSING_TOKEN: no token reached the homeserver (or header and query were mixed)."""


class Exclusive(MatrixError):
    """M_EXCLUSIVE: user or alias outside our namespace (or inside another AS's)."""


class TooLarge(MatrixError):
    """M_TOO_LARGE: request or upload above the homeserver's limit."""


class BadJson(MatrixError):
    """M_BAD_JSON: well-formed JSON the homeserver rejects (missing or wrong fields)."""


class NotJson(MatrixError):
    """M_NOT_JSON: the body we sent was not JSON."""


class HomeserverUnavailable(MatrixError):
    """Connection errors, timeouts or 5xx answers that outlasted the retries.

    `status` is 0 when no HTTP answer was received at all.
    """


ERRCODE_CLASSES: dict[str, type[MatrixError]] = {
    "M_USER_IN_USE": UserInUse,
    "M_ROOM_IN_USE": RoomInUse,
    "M_FORBIDDEN": Forbidden,
    "M_NOT_FOUND": NotFound,
    "M_LIMIT_EXCEEDED": LimitExceeded,
    "M_UNKNOWN_TOKEN": UnknownToken,
    "M_MISSING_TOKEN": MissingToken,
    "M_EXCLUSIVE": Exclusive,
    "M_TOO_LARGE": TooLarge,
    "M_BAD_JSON": BadJson,
    "M_NOT_JSON": NotJson,
}

# When the errcode says nothing we know (M_UNKNOWN, an unstable prefix, an HTML page from a
# proxy), the status still tells callers the important part.
STATUS_CLASSES: dict[int, type[MatrixError]] = {
    403: Forbidden,
    404: NotFound,
    413: TooLarge,
    429: LimitExceeded,
}


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """Replace every (non-empty) secret in `text` with a placeholder."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, REDACTED)
    return text


def parse_retry_after(
    headers: Mapping[str, str] | None, body: Mapping[str, object]
) -> float | None:
    """Seconds to wait, from the `Retry-After` header (preferred) or `retry_after_ms`.

    The header may be delta-seconds (Synapse sends whole seconds, rounded up) or an HTTP
    date; `retry_after_ms` is the deprecated body field (spec v1.10).
    """
    value = _header(headers, "Retry-After")
    if value:
        value = value.strip()
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError, IndexError, OverflowError):
            log.debug("unparseable Retry-After header %r", value)
    ms = body.get("retry_after_ms")
    if isinstance(ms, (int, float)) and not isinstance(ms, bool):
        return max(0.0, ms / 1000.0)
    return None


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    if not headers:
        return None
    value = headers.get(name)
    if value is None:  # plain dicts are case-sensitive; requests' are not
        lower = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lower), None)
    return value


def error_from_response(
    status: int,
    body: Mapping[str, object] | None,
    headers: Mapping[str, str] | None = None,
    *,
    secrets: Iterable[str] = (),
    unavailable: bool = False,
) -> MatrixError:
    """Build the right `MatrixError` subclass for a non-2xx answer.

    `unavailable=True` forces `HomeserverUnavailable` (5xx after the retries).
    Any of `secrets` appearing in the server's text is scrubbed.
    """
    body = dict(body or {}) if isinstance(body, Mapping) else {}
    errcode = body.get("errcode")
    if not isinstance(errcode, str) or not errcode:
        errcode = "M_UNKNOWN"
    error = body.get("error")
    error = scrub(error, secrets) if isinstance(error, str) else ""
    retry_after = parse_retry_after(headers, body)
    if unavailable:
        cls: type[MatrixError] = HomeserverUnavailable
    else:
        cls = ERRCODE_CLASSES.get(errcode) or STATUS_CLASSES.get(status, MatrixError)
    return cls(status, errcode, error, body, retry_after)
