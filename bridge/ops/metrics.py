"""Prometheus metrics: one CollectorRegistry per app, and the hooks the I/O modules call.

Why a registry per app: tests build several apps in one process, and prometheus_client's
default registry is process-wide. Why module-level hooks: the homeserver client, the senders
and the inbox worker hold no handle on the app, so they pass themselves (`owner`) and the
hook finds the live `Metrics` whose bridge owns that object (one in production). A hook with
no matching `Metrics` (a CLI command, a unit test) does nothing, cheaply.

Of the project this module imports only `bridge.matrix.hooks`, where it adds its observer of
homeserver requests (the client imports no ops, so ops and matrix form no cycle); every layer
but matrix may call it. What is computed at scrape time (connections, queue depths) lives in
`bridge.ops.collector`.

Thread: any thread: the hooks are called from request threads, the IRC thread, the inbox
thread, the recorder and the homeserver senders (prometheus_client's counters are thread-safe).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from ..matrix import hooks

log = logging.getLogger(__name__)

DIRECTIONS = ("matrix_to_irc", "irc_to_matrix")
MSGTYPES = ("m.text", "m.notice", "m.emote", "m.image", "m.file", "m.video", "m.audio")
HTTP_METHODS = ("GET", "PUT", "POST", "DELETE")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def msgtype_label(msgtype: Any) -> str | None:
    """Keep the label's values bounded: an unknown m.* type is `other`; None for what is
    not a message (the outbox also carries the bridge's own `x.*` rows, e.g. joins)."""
    if msgtype in MSGTYPES:
        return str(msgtype)
    if isinstance(msgtype, str) and msgtype.startswith("m."):
        return "other"
    return None


class Metrics:
    """The counters and histograms of one app, in that app's own registry."""

    def __init__(self, owned: Callable[[], Iterable[object]] = tuple,
                 networks: Iterable[str] = ()):
        self.registry = CollectorRegistry(auto_describe=True)
        self._owned = owned
        self.server: Any = None  # (server, thread) when [metrics] bind has its own port
        r = self.registry
        self.messages_relayed = Counter(
            "ircbridge_messages_relayed", "Messages relayed, by direction and Matrix msgtype.",
            ["direction", "msgtype"], registry=r)
        self.hs_request_seconds = Histogram(
            "ircbridge_hs_request_seconds",
            "Latency of the bridge's requests to the homeserver (each attempt), by method.",
            ["method"], buckets=LATENCY_BUCKETS, registry=r)
        self.hs_request_errors = Counter(
            "ircbridge_hs_request_errors",
            "Failed homeserver requests (each attempt), by Matrix errcode; connection "
            "failures count under the exception's name.", ["errcode"], registry=r)
        self.irc_reconnects = Counter(
            "ircbridge_irc_reconnects",
            "IRC connections lost (each schedules a reconnect), by network.", ["network"],
            registry=r)
        self.transactions_received = Counter(
            "ircbridge_transactions_received", "Transactions the homeserver pushed.",
            registry=r)
        self.transactions_deduplicated = Counter(
            "ircbridge_transactions_deduplicated",
            "Transactions that were retries of one already stored (nothing new queued).",
            registry=r)
        self.events_received = Counter(
            "ircbridge_events_received", "New events stored in the inbox from transactions.",
            registry=r)
        self.inbox_handled = Counter(
            "ircbridge_inbox_events_handled",
            "Inbox events handled, by result (done or failed).", ["result"], registry=r)
        self.outbox_retries = Counter(
            "ircbridge_outbox_retries", "Outbox deliveries to the homeserver tried again.",
            registry=r)
        self.outbox_failed = Counter(
            "ircbridge_outbox_failed", "Outbox rows given up on (marked failed).", registry=r)
        # Series that exist from the start, so dashboards and rate() see zeros, not gaps.
        for direction in DIRECTIONS:
            for msgtype in ("m.text", "m.notice", "m.emote"):
                self.messages_relayed.labels(direction, msgtype)
        for method in HTTP_METHODS:
            self.hs_request_seconds.labels(method)
        for network in networks:
            self.irc_reconnects.labels(network)
        for result in ("done", "failed"):
            self.inbox_handled.labels(result)
        with _live_lock:
            _live.add(self)

    def owns(self, owner: object) -> bool:
        try:
            return any(owner is part for part in self._owned())
        except Exception:  # noqa: BLE001 - never let metrics break the caller
            return False

    def relayed(self, direction: str, msgtype: Any) -> None:
        label = msgtype_label(msgtype)
        if label is not None:
            self.messages_relayed.labels(direction, label).inc()

    def close(self) -> None:
        """Forget this app (hooks stop reaching it) and stop its own metrics port, if any."""
        with _live_lock:
            _live.discard(self)
        if self.server is not None:
            server, thread = self.server
            self.server = None
            server.shutdown()
            server.server_close()
            thread.join(5)


_live: weakref.WeakSet[Metrics] = weakref.WeakSet()
_live_lock = threading.Lock()


def for_owner(owner: object) -> Metrics | None:
    """The live Metrics whose app owns `owner` (a Bridge, client, Senders, InboxWorker)."""
    with _live_lock:
        candidates = list(_live)
    for metrics in candidates:
        if metrics.owns(owner):
            return metrics
    return None


# ---------------------------------------------------------------- hooks (any thread)
def observe_hs_request(method: str, seconds: float, status: int, errcode: str | None = None,
                       *, client: object = None, response: Any = None) -> None:
    """One attempt of a homeserver request: its latency and, if it failed, its errcode.

    `status` 0 means no HTTP answer (then `errcode` names the exception). With `response`
    and no `errcode`, the errcode is read from a non-2xx JSON body.
    """
    metrics = for_owner(client)
    if metrics is None:
        return
    try:
        metrics.hs_request_seconds.labels(method.upper()).observe(max(0.0, seconds))
        if status >= 400 or status == 0:
            if errcode is None and response is not None:
                errcode = _errcode_of(response)
            metrics.hs_request_errors.labels(_bounded_errcode(errcode, status)).inc()
    except Exception:  # noqa: BLE001 - metrics must never break a request
        log.debug("could not record a homeserver request", exc_info=True)


def relayed(owner: object, direction: str, msgtype: Any) -> None:
    """A message went across: `irc_to_matrix` (senders) or `matrix_to_irc`."""
    metrics = for_owner(owner)
    if metrics is not None:
        metrics.relayed(direction, msgtype)


def transaction(owner: object, seen: bool, new: int) -> None:
    """A transaction was stored: `seen` it before, `new` events queued."""
    metrics = for_owner(owner)
    if metrics is None:
        return
    metrics.transactions_received.inc()
    if seen and not new:
        metrics.transactions_deduplicated.inc()
    if new:
        metrics.events_received.inc(new)


def inbox_handled(owner: object, done: int, failed: int) -> None:
    if not done and not failed:
        return
    metrics = for_owner(owner)
    if metrics is None:
        return
    if done:
        metrics.inbox_handled.labels("done").inc(done)
    if failed:
        metrics.inbox_handled.labels("failed").inc(failed)


def outbox_retry(owner: object) -> None:
    metrics = for_owner(owner)
    if metrics is not None:
        metrics.outbox_retries.inc()


def outbox_failed(owner: object) -> None:
    metrics = for_owner(owner)
    if metrics is not None:
        metrics.outbox_failed.inc()


def irc_reconnect(owner: object, network: str) -> None:
    metrics = for_owner(owner)
    if metrics is not None:
        metrics.irc_reconnects.labels(network).inc()


def _errcode_of(response: Any) -> str | None:
    try:
        body = response.json()
    except Exception:  # noqa: BLE001 - an HTML error page, a closed stream
        return None
    errcode = body.get("errcode") if isinstance(body, dict) else None
    return errcode if isinstance(errcode, str) else None


def _bounded_errcode(errcode: str | None, status: int) -> str:
    """Matrix errcodes (M_*, or a namespaced one), exception names, else the status class."""
    if errcode and len(errcode) <= 64 and errcode.replace("_", "").replace(".", "").isalnum():
        return errcode
    return f"HTTP_{status // 100}XX" if status else "CONNECTION_ERROR"


# The homeserver client reports each attempt through bridge.matrix.hooks (it imports no ops).
hooks.add_request_observer(observe_hs_request)
