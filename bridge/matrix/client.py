"""Synchronous client-server API client for the application service (AS -> homeserver).

Why it looks like this:

* The as_token travels **only** in `Authorization: Bearer` (spec 5.H.53; Synapse rejects
  header + `?access_token=` together, and MSC4127 removes the query form). It is never
  put in a URL and never logged: log lines carry the method and path, never the query.
* One `requests.Session` per thread (requests never promised Session thread safety), so
  every sender thread keeps its own keep-alive connections.
* Identity assertion is the `user_id` query parameter; `ts` (origin_server_ts massaging)
  is accepted only on `PUT .../send/...` and `PUT .../state/...`, the two endpoints the
  spec allows it on (5.H.60).
* How hard a call tries is its `RetryPolicy` (bridge/matrix/retry.py), passed per call
  (`policy=`; the client's own default otherwise) and bounded by any enclosing
  `retry.at_most` scope -- one client serves every caller. Within the policy's attempts,
  429 is waited out for `Retry-After` / `retry_after_ms` and the *identical* request is
  repeated (same path, so the same txnId: 5.H.65); 5xx, connection errors and timeouts get
  capped exponential backoff with jitter, until the attempts or the caller's deadline run
  out, then `HomeserverUnavailable` (or `LimitExceeded`). Other 4xx raise their mapped
  `MatrixError` at once.
* Transaction ids are unique across every virtual user of the AS (Synapse keys AS
  idempotency on the path and the AS, not the user: 5.H.59), see `new_txn_id`.

Thread: any. The client holds no per-request state; sessions are thread-local.
"""

from __future__ import annotations

import itertools
import logging
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from urllib.parse import quote

import requests

from ..rules.ids import EventId, RoomId, UserId
from .errors import (
    HomeserverUnavailable,
    LimitExceeded,
    MatrixError,
    NotFound,
    error_from_response,
    scrub,
)
from .hooks import RequestObserver
from .retry import DEFAULT, ONCE, RetryPolicy, effective
from .wire import JsonBody, JsonObject, QueryParams

log = logging.getLogger(__name__)

CLIENT_V3 = "/_matrix/client/v3"
CLIENT_V1 = "/_matrix/client/v1"
MEDIA_V3 = "/_matrix/media/v3"

CONNECT_TIMEOUT = 10.0
BACKOFF_BASE = 0.5  # seconds before the first retry of a 5xx / connection error (+ jitter)
MIN_ATTEMPT_TIMEOUT = 0.5  # a request close to its deadline still gets this long
MAX_DISPLAYNAME_LEN = 256  # Synapse's limit, in characters

_RETRYABLE_EXCEPTIONS: tuple[type[BaseException], ...] = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
)
# The only two endpoints on which the spec (v1.3) lets an AS set `ts`.
_TS_ALLOWED = re.compile(r"^/_matrix/client/v3/rooms/[^/]+/(?:send|state)/")


def q(segment: str) -> str:
    """Quote one path segment completely (`/`, `#`, `:`, `@`, `!` included)."""
    return quote(segment, safe="")


class HomeserverClient:
    """The application service's client-server API connection to its homeserver."""

    def __init__(
        self,
        base_url: str,
        as_token: str,
        *,
        server_name: str,
        policy: RetryPolicy = DEFAULT,
    ) -> None:
        if not as_token:
            raise ValueError("as_token is required")
        self.base_url = base_url.rstrip("/")
        self._as_token = as_token
        self.server_name = server_name
        # For calls that name no policy of their own.
        self.policy = policy
        # Injectable so tests can observe (and skip) waits.
        self.sleep: Callable[[float], None] = time.sleep
        # Told of every attempt (the app's metrics, set by Bridge.attach); None: nobody.
        self.observer: RequestObserver | None = None
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()
        # Time-based + random, so ids never repeat across restarts or between two clients.
        self._txn_prefix = f"{time.time_ns() // 1_000_000:x}{uuid.uuid4().hex[:8]}"
        self._txn_counter = itertools.count()
        self._txn_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<HomeserverClient {self.base_url} server_name={self.server_name!r}>"

    # ------------------------------------------------------------------ plumbing

    @property
    def session(self) -> requests.Session:
        """This thread's keep-alive session, created on first use."""
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            # No proxy/.netrc from the environment: a .netrc entry would silently replace
            # our Authorization header, and the homeserver is normally reached directly.
            session.trust_env = False
            session.headers["Authorization"] = f"Bearer {self._as_token}"
            session.headers["User-Agent"] = "ircbridge"
            session.headers["Accept"] = "application/json"
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        """Close every thread's session (their pooled connections)."""
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()
        self._local = threading.local()

    def new_txn_id(self) -> str:
        """A client-server transaction id unique across all users, threads and restarts."""
        with self._txn_lock:
            n = next(self._txn_counter)
        return f"{self._txn_prefix}.{n}"

    def request(
        self,
        method: str,
        path: str,
        *,
        json: JsonBody | None = None,
        params: QueryParams | None = None,
        user_id: UserId | None = None,
        ts: int | None = None,
        data: bytes | None = None,
        content_type: str | None = None,
        deadline: float | None = None,
        policy: RetryPolicy | None = None,
    ) -> JsonObject:
        """Make one API call and return its JSON object (`{}` for a non-JSON 2xx).

        `path` must already be quoted (the helpers do it). `user_id` asserts a virtual
        user; `ts` (ms) only on send/state. `deadline` is a `time.monotonic()` value past
        which no retry is started; `policy` how hard to try (the client's own if None).
        Raises `MatrixError` subclasses.
        """
        response = self._perform(
            method, path, json=json, params=params, user_id=user_id, ts=ts, data=data,
            content_type=content_type, deadline=deadline, policy=policy, stream=False,
        )
        try:
            body = response.json()
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}

    def _perform(
        self,
        method: str,
        path: str,
        *,
        json: JsonBody | None,
        params: QueryParams | None,
        user_id: UserId | None,
        ts: int | None,
        data: bytes | None,
        content_type: str | None,
        deadline: float | None,
        policy: RetryPolicy | None,
        stream: bool,
    ) -> requests.Response:
        """Send, retrying as the policy allows; return the 2xx response or raise."""
        method = method.upper()
        query = self._query(method, path, params, user_id, ts)
        headers = {"Content-Type": content_type} if content_type else None
        url = self.base_url + path
        chosen = effective(policy or self.policy)
        attempts = chosen.attempts
        attempt = 0
        while True:
            attempt += 1
            started = time.monotonic()
            cause: BaseException | None = None
            try:
                response = self.session.request(
                    method, url, params=query, json=json, data=data, headers=headers,
                    timeout=self._timeouts(chosen, deadline), stream=stream,
                )
            except _RETRYABLE_EXCEPTIONS as exc:
                cause = exc
                error: MatrixError = HomeserverUnavailable(
                    0, "M_UNKNOWN", scrub(f"{type(exc).__name__}: {exc}", [self._as_token])
                )
                log.debug("%s %s -> %s", method, path, type(exc).__name__)
                self._observe(method, time.monotonic() - started, 0, type(exc).__name__)
            else:
                elapsed_ms = (time.monotonic() - started) * 1000
                log.debug("%s %s -> %d (%.0f ms)", method, path, response.status_code, elapsed_ms)
                self._observe(method, elapsed_ms / 1000, response.status_code,
                              response=response)
                if response.status_code < 300:
                    return response
                error = self._error(response)
                if not isinstance(error, (HomeserverUnavailable, LimitExceeded)):
                    raise error
            wait = self._retry_wait(error, attempt, chosen)
            if attempt >= attempts or (deadline is not None and time.monotonic() + wait > deadline):
                raise error from cause
            log.warning(
                "%s %s failed (%s), retry %d/%d in %.2fs",
                method, path, error, attempt, attempts - 1, wait,
            )
            self.sleep(wait)

    def _query(
        self,
        method: str,
        path: str,
        params: QueryParams | None,
        user_id: UserId | None,
        ts: int | None,
    ) -> dict[str, str | Sequence[str]]:
        if not path.startswith("/"):
            raise ValueError("path must start with '/'")
        query = dict(params or {})
        if "access_token" in query:
            raise ValueError("the token goes in the Authorization header, never the query")
        if user_id is not None:
            query["user_id"] = user_id
        if ts is not None:
            if method != "PUT" or not _TS_ALLOWED.match(path):
                raise ValueError("ts is only allowed on PUT .../send/... and .../state/...")
            if isinstance(ts, bool) or not isinstance(ts, int) or ts < 0:
                raise ValueError("ts must be a non-negative integer of milliseconds")
            query["ts"] = str(ts)
        return query

    def _observe(self, method: str, seconds: float, status: int, errcode: str | None = None,
                 *, response: requests.Response | None = None) -> None:
        """One attempt ended: tell the observer; a failing observer never breaks a request."""
        observer = self.observer
        if observer is None:
            return
        try:
            observer(method, seconds, status, errcode, response=response)
        except Exception:  # noqa: BLE001
            log.debug("request observer failed", exc_info=True)

    @staticmethod
    def _timeouts(policy: RetryPolicy, deadline: float | None) -> tuple[float, float]:
        connect, read = min(CONNECT_TIMEOUT, policy.timeout), policy.timeout
        if deadline is not None:
            remaining = max(deadline - time.monotonic(), MIN_ATTEMPT_TIMEOUT)
            connect, read = min(connect, remaining), min(read, remaining)
        return connect, read

    def _error(self, response: requests.Response) -> MatrixError:
        """Map a non-2xx response; 429 -> LimitExceeded, 5xx -> HomeserverUnavailable."""
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
        finally:
            response.close()
        if not isinstance(body, dict):
            # e.g. an HTML page from a reverse proxy: keep its status, not its contents.
            body = {"errcode": "M_UNKNOWN", "error": f"{status} {response.reason} (non-JSON)"}
        return error_from_response(
            status, body, response.headers, secrets=[self._as_token], unavailable=status >= 500
        )

    @staticmethod
    def _retry_wait(error: MatrixError, attempt: int, policy: RetryPolicy) -> float:
        """Seconds to wait before the next attempt."""
        if isinstance(error, LimitExceeded) and error.retry_after is not None:
            # Honour the server's number; a little jitter spreads the threads waiting on it.
            return error.retry_after * (1.0 + random.uniform(0.0, 0.1))
        delay = min(policy.backoff_cap, BACKOFF_BASE * 2 ** (attempt - 1))
        wait = delay / 2 + random.uniform(0.0, delay / 2)
        if error.retry_after is not None:  # e.g. 503 with Retry-After
            wait = max(wait, error.retry_after)
        return wait

    @staticmethod
    def _field(body: Mapping[str, object], key: str, what: str) -> str:
        value = body.get(key)
        if not isinstance(value, str) or not value:
            raise MatrixError(200, "M_UNKNOWN", f"{what} answer lacks {key!r}", body)
        return value

    # ------------------------------------------------------------------ server

    def versions(self, *, policy: RetryPolicy | None = None) -> JsonObject:
        """`GET /_matrix/client/versions`: reachability and supported spec versions."""
        return self.request("GET", "/_matrix/client/versions", policy=policy)

    def whoami(self, user_id: UserId | None = None, *,
               policy: RetryPolicy | None = None) -> JsonObject:
        """`GET /account/whoami`: checks the as_token (UnknownToken if not installed)."""
        return self.request("GET", f"{CLIENT_V3}/account/whoami", user_id=user_id,
                            policy=policy)

    def ping(self, appservice_id: str, transaction_id: str | None = None) -> JsonObject:
        """Ask the homeserver to ping us back (spec v1.7); no retries, errors are the answer."""
        body = {"transaction_id": transaction_id} if transaction_id is not None else {}
        path = f"{CLIENT_V1}/appservice/{q(appservice_id)}/ping"
        return self.request("POST", path, json=body, policy=ONCE)

    # ------------------------------------------------------------------ users

    def register(self, localpart: str, *, policy: RetryPolicy | None = None) -> str:
        """Register a namespace user; returns its user id. Raises UserInUse if it exists."""
        body = {
            "type": "m.login.application_service",
            "username": localpart,
            "inhibit_login": True,
        }
        answer = self.request("POST", f"{CLIENT_V3}/register", json=body, policy=policy)
        user_id = answer.get("user_id")
        if isinstance(user_id, str) and user_id:
            return user_id
        return f"@{localpart}:{self.server_name}"

    def set_displayname(self, user_id: UserId, name: str, *,
                        policy: RetryPolicy | None = None) -> None:
        """Set `user_id`'s display name (path user == asserted user; 256 chars max)."""
        path = f"{CLIENT_V3}/profile/{q(user_id)}/displayname"
        body = {"displayname": name[:MAX_DISPLAYNAME_LEN]}
        self.request("PUT", path, json=body, user_id=user_id, policy=policy)

    def set_avatar_url(self, user_id: UserId, mxc_uri: str, *,
                       policy: RetryPolicy | None = None) -> None:
        """Set `user_id`'s avatar to an `mxc://` URI."""
        path = f"{CLIENT_V3}/profile/{q(user_id)}/avatar_url"
        self.request("PUT", path, json={"avatar_url": mxc_uri}, user_id=user_id, policy=policy)

    def set_presence(self, user_id: UserId, presence: str, status_msg: str = "", *,
                     policy: RetryPolicy | None = None) -> None:
        """`PUT /presence/{userId}/status` as `user_id` (online, unavailable, offline)."""
        body: dict[str, object] = {"presence": presence}
        if status_msg:
            body["status_msg"] = status_msg
        self.request("PUT", f"{CLIENT_V3}/presence/{q(user_id)}/status", json=body,
                     user_id=user_id, policy=policy)

    def set_typing(self, room_id: RoomId, user_id: UserId, typing: bool, timeout_ms: int = 30000, *,
                   policy: RetryPolicy | None = None) -> None:
        """`PUT /rooms/{roomId}/typing/{userId}` as `user_id` (who must be joined)."""
        body: dict[str, object] = {"typing": typing}
        if typing:
            body["timeout"] = timeout_ms
        self.request("PUT", f"{CLIENT_V3}/rooms/{q(room_id)}/typing/{q(user_id)}", json=body,
                     user_id=user_id, policy=policy)

    def get_profile(self, user_id: UserId, *, policy: RetryPolicy | None = None) -> JsonObject:
        """`GET /profile/{userId}`; raises NotFound for an unknown user."""
        return self.request("GET", f"{CLIENT_V3}/profile/{q(user_id)}", policy=policy)

    # ------------------------------------------------------------------ rooms

    def create_room(self, body: JsonBody, user_id: UserId | None = None, *,
                    policy: RetryPolicy | None = None) -> RoomId:
        """`POST /createRoom`; returns the room id. Raises RoomInUse, Exclusive."""
        answer = self.request("POST", f"{CLIENT_V3}/createRoom", json=dict(body), user_id=user_id,
                              policy=policy)
        return RoomId(self._field(answer, "room_id", "createRoom"))

    def resolve_alias(self, alias: str, *, policy: RetryPolicy | None = None) -> RoomId | None:
        """Room id for `#alias:server`, or None if the alias does not exist."""
        try:
            answer = self.request("GET", f"{CLIENT_V3}/directory/room/{q(alias)}", policy=policy)
        except NotFound:
            return None
        room_id = answer.get("room_id")
        return RoomId(room_id) if isinstance(room_id, str) and room_id else None

    def put_alias(self, alias: str, room_id: RoomId, *, policy: RetryPolicy | None = None) -> None:
        """Point `alias` at `room_id` (409 MatrixError if it already exists)."""
        path = f"{CLIENT_V3}/directory/room/{q(alias)}"
        self.request("PUT", path, json={"room_id": room_id}, policy=policy)

    def join(
        self, room_id_or_alias: str, user_id: UserId | None = None, *, via: Iterable[str] = (),
        policy: RetryPolicy | None = None,
    ) -> RoomId:
        """`POST /join/{roomIdOrAlias}`; returns the room id joined."""
        params = {"server_name": list(via)} if via else None
        answer = self.request(
            "POST", f"{CLIENT_V3}/join/{q(room_id_or_alias)}", json={}, params=params,
            user_id=user_id, policy=policy,
        )
        return RoomId(self._field(answer, "room_id", "join"))

    def leave(self, room_id: RoomId, user_id: UserId | None = None, reason: str = "", *,
              policy: RetryPolicy | None = None) -> None:
        """`POST /rooms/{roomId}/leave` (from an invite: declines it, with the reason)."""
        self.request("POST", f"{CLIENT_V3}/rooms/{q(room_id)}/leave",
                     json={"reason": reason} if reason else {}, user_id=user_id, policy=policy)

    def invite(self, room_id: RoomId, target: str, user_id: UserId | None = None, *,
               policy: RetryPolicy | None = None) -> None:
        """Invite `target` into `room_id` (the inviter must be joined with enough power)."""
        path = f"{CLIENT_V3}/rooms/{q(room_id)}/invite"
        self.request("POST", path, json={"user_id": target}, user_id=user_id, policy=policy)

    def kick(self, room_id: RoomId, target: str, reason: str, user_id: UserId | None = None, *,
             policy: RetryPolicy | None = None) -> None:
        """Kick `target` from `room_id` with `reason`."""
        path = f"{CLIENT_V3}/rooms/{q(room_id)}/kick"
        body = {"user_id": target, "reason": reason} if reason else {"user_id": target}
        self.request("POST", path, json=body, user_id=user_id, policy=policy)

    def send(
        self,
        room_id: RoomId,
        event_type: str,
        content: JsonBody,
        txn_id: str,
        *,
        user_id: UserId | None = None,
        ts: int | None = None,
        deadline: float | None = None,
        policy: RetryPolicy | None = None,
    ) -> EventId:
        """`PUT /rooms/{roomId}/send/{type}/{txnId}`; returns the event id.

        Retries (429, 5xx) reuse the same txn_id, so the homeserver deduplicates them.
        """
        path = f"{CLIENT_V3}/rooms/{q(room_id)}/send/{q(event_type)}/{q(txn_id)}"
        answer = self.request(
            "PUT", path, json=dict(content), user_id=user_id, ts=ts, deadline=deadline,
            policy=policy,
        )
        return EventId(self._field(answer, "event_id", "send"))

    def send_state(
        self,
        room_id: RoomId,
        event_type: str,
        state_key: str,
        content: JsonBody,
        *,
        user_id: UserId | None = None,
        ts: int | None = None,
        policy: RetryPolicy | None = None,
    ) -> EventId:
        """`PUT /rooms/{roomId}/state/{type}/{stateKey}`; returns the event id."""
        path = f"{CLIENT_V3}/rooms/{q(room_id)}/state/{q(event_type)}/{q(state_key)}"
        answer = self.request("PUT", path, json=dict(content), user_id=user_id, ts=ts,
                              policy=policy)
        return EventId(self._field(answer, "event_id", "state"))

    def get_state(
        self, room_id: RoomId, event_type: str, state_key: str = "", user_id: UserId | None = None,
        *, policy: RetryPolicy | None = None,
    ) -> JsonObject | None:
        """Content of one state event, or None if it does not exist."""
        path = f"{CLIENT_V3}/rooms/{q(room_id)}/state/{q(event_type)}/{q(state_key)}"
        try:
            return self.request("GET", path, user_id=user_id, policy=policy)
        except NotFound:
            return None

    def joined_members(self, room_id: RoomId, user_id: UserId | None = None, *,
                       policy: RetryPolicy | None = None) -> JsonObject:
        """`{user_id: {"display_name":..., "avatar_url":...}}` of the room's joined members."""
        path = f"{CLIENT_V3}/rooms/{q(room_id)}/joined_members"
        joined = self.request("GET", path, user_id=user_id, policy=policy).get("joined")
        return joined if isinstance(joined, dict) else {}

    def publish_appservice_room(
        self, network_id: str, room_id: RoomId, appservice_id: str, visible: bool = True, *,
        policy: RetryPolicy | None = None,
    ) -> None:
        """List (or unlist) a room in the AS's own room directory for `network_id`.

        Unlike `visibility: public` on createRoom, this is not subject to Synapse's
        `room_list_publication_rules` (deny-all by default since 1.126). Clients find it
        with `third_party_instance_id = "<appservice_id>|<network_id>"`.
        """
        path = f"{CLIENT_V3}/directory/list/appservice/{q(network_id)}/{q(room_id)}"
        body = {"visibility": "public" if visible else "private"}
        self.request("PUT", path, json=body, policy=policy)
        log.debug("room %s %s in %s|%s", room_id, body["visibility"], appservice_id, network_id)

    # ------------------------------------------------------------------ media

    def upload(self, data: bytes, content_type: str, filename: str | None, *,
               policy: RetryPolicy | None = None) -> str:
        """`POST /_matrix/media/v3/upload`; returns the `mxc://` URI. Raises TooLarge."""
        params = {"filename": filename} if filename else None
        answer = self.request(
            "POST", f"{MEDIA_V3}/upload", data=data, content_type=content_type, params=params,
            policy=policy,
        )
        return self._field(answer, "content_uri", "upload")

    def download(
        self, server_name: str, media_id: str, *, deadline: float | None = None,
        policy: RetryPolicy | None = None,
    ) -> requests.Response:
        """Authenticated media download; returns a *streamed* response the caller closes."""
        path = f"{CLIENT_V1}/media/download/{q(server_name)}/{q(media_id)}"
        return self._perform(
            "GET", path, json=None, params=None, user_id=None, ts=None, data=None,
            content_type=None, deadline=deadline, policy=policy, stream=True,
        )
