"""Prometheus metrics: one CollectorRegistry per app, given to the parts that count.

Why a registry per app: tests build several apps in one process, and prometheus_client's
default registry is process-wide. `Metrics` is the app's `Meter` (bridge.pipeline.meter):
`bridge.ops.collector.setup` hands it to the bridge (`Bridge.attach`), which gives it to the
inbox, the senders and the two directions, and sets `hs_request` as the homeserver client's
observer. A bridge without an app counts nothing (NO_METER). What is computed at scrape time
(connections, queue depths) lives in `bridge.ops.collector`.

Thread: any thread: request threads, the IRC thread, the inbox thread, the recorder and the
homeserver senders count (prometheus_client's counters are thread-safe).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from wsgiref.simple_server import WSGIServer

import requests
from prometheus_client import CollectorRegistry, Counter, Histogram

log = logging.getLogger(__name__)

DIRECTIONS = ("matrix_to_irc", "irc_to_matrix")
MSGTYPES = ("m.text", "m.notice", "m.emote", "m.image", "m.file", "m.video", "m.audio")
HTTP_METHODS = ("GET", "PUT", "POST", "DELETE")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def msgtype_label(msgtype: object) -> str | None:
    """Keep the label's values bounded: an unknown m.* type is `other`; None for what is
    not a message (the outbox's state rows have no msgtype)."""
    if msgtype in MSGTYPES:
        return str(msgtype)
    if isinstance(msgtype, str) and msgtype.startswith("m."):
        return "other"
    return None


class Metrics:
    """The counters and histograms of one app, in that app's own registry."""

    def __init__(self, networks: Iterable[str] = ()):
        self.registry = CollectorRegistry(auto_describe=True)
        # (server, thread) when [metrics] bind has its own port
        self.server: tuple[WSGIServer, threading.Thread] | None = None
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
        self.inbox_events = Counter(
            "ircbridge_inbox_events_handled",
            "Inbox events handled, by result (done or failed).", ["result"], registry=r)
        self.outbox_retries = Counter(
            "ircbridge_outbox_retries", "Outbox deliveries to the homeserver tried again.",
            registry=r)
        self.outbox_given_up = Counter(
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
            self.inbox_events.labels(result)

    # ------------------------------------------------------------ the Meter (any thread)
    def relayed(self, direction: str, msgtype: object) -> None:
        """A message went across: `irc_to_matrix` (senders) or `matrix_to_irc`."""
        label = msgtype_label(msgtype)
        if label is not None:
            self.messages_relayed.labels(direction, label).inc()

    def transaction(self, seen: bool, new: int) -> None:
        """A transaction was stored: `seen` it before, `new` events queued."""
        self.transactions_received.inc()
        if seen and not new:
            self.transactions_deduplicated.inc()
        if new:
            self.events_received.inc(new)

    def inbox_handled(self, done: int, failed: int) -> None:
        if done:
            self.inbox_events.labels("done").inc(done)
        if failed:
            self.inbox_events.labels("failed").inc(failed)

    def outbox_retry(self) -> None:
        self.outbox_retries.inc()

    def outbox_failed(self) -> None:
        self.outbox_given_up.inc()

    def irc_reconnect(self, network: str) -> None:
        self.irc_reconnects.labels(network).inc()

    def hs_request(self, method: str, seconds: float, status: int, errcode: str | None = None,
                   *, response: requests.Response | None = None) -> None:
        """One attempt of a homeserver request (the client's observer): its latency and, if
        it failed, its errcode. `status` 0 means no HTTP answer (then `errcode` names the
        exception). With `response` and no `errcode`, the errcode is read from a non-2xx
        JSON body."""
        try:
            self.hs_request_seconds.labels(method.upper()).observe(max(0.0, seconds))
            if status >= 400 or status == 0:
                if errcode is None and response is not None:
                    errcode = _errcode_of(response)
                self.hs_request_errors.labels(_bounded_errcode(errcode, status)).inc()
        except Exception:  # noqa: BLE001 - metrics must never break a request
            log.debug("could not record a homeserver request", exc_info=True)

    def close(self) -> None:
        """Stop this app's own metrics port, if any."""
        if self.server is not None:
            server, thread = self.server
            self.server = None
            server.shutdown()
            server.server_close()
            thread.join(5)


def _errcode_of(response: requests.Response) -> str | None:
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

