"""What /metrics shows that is computed at scrape time, and the wiring of one app's metrics.

Counters live in `bridge.ops.metrics` (incremented where things happen); gauges that describe the
present (connection states, queue depths, rooms) are read when Prometheus asks, by a custom
collector, so they are never stale and cost nothing between scrapes.

Thread: the one serving a /metrics scrape (a request thread, or a thread of the separate
metrics port); IRC state is asked of the IRC thread through `IrcSide.call`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Protocol

from prometheus_client import ProcessCollector, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric

from ..config.ini import Config
from ..irc import IrcSide, State
from ..pipeline.inbox import InboxWorker
from ..pipeline.outbox import Senders
from ..store.models import Store
from ..version import __version__
from . import queries as ops_queries
from .metrics import Metrics

log = logging.getLogger(__name__)

STATES = tuple(s.value for s in State)
KINDS = ("bot", "puppet")


def _families() -> dict[str, GaugeMetricFamily]:
    g = GaugeMetricFamily
    return {
        "connections": g("ircbridge_irc_connections",
                         "IRC connections of the bridge, by network, kind (bot or puppet) and "
                         "state.", labels=["network", "kind", "state"]),
        "bot_connected": g("ircbridge_irc_bot_connected",
                           "1 when the network's bot connection is registered and usable.",
                           labels=["network"]),
        "irc_up": g("ircbridge_irc_thread_responding",
                    "1 when the IRC thread answered the status question at this scrape."),
        "depth": g("ircbridge_queue_depth",
                   "Pending rows of a durable queue (inbox: homeserver events not yet handled; "
                   "outbox: IRC lines not yet accepted by the homeserver).", labels=["queue"]),
        "age": g("ircbridge_queue_oldest_age_seconds",
                 "Age of the oldest pending row of a durable queue (0 when empty).",
                 labels=["queue"]),
        "failed": g("ircbridge_queue_failed_rows",
                    "Rows of a durable queue marked failed (kept until pruned).",
                    labels=["queue"]),
        "rooms": g("ircbridge_rooms_bridged", "Matrix rooms linked to an IRC channel.",
                   labels=["network"]),
        "db_up": g("ircbridge_database_up", "1 when the database answered a trivial query."),
        "hs_up": g("ircbridge_homeserver_up",
                   "1 when the startup checks reached the homeserver with a valid as_token."),
        "ping": g("ircbridge_as_ping_ok",
                  "1 when the homeserver's AS ping reached the bridge (it can push events)."),
        "in_flight": g("ircbridge_inbox_in_flight",
                       "Inbox events handed to IRC whose sending has not finished."),
        "senders": g("ircbridge_senders_pending",
                     "Outbox rows handed to the homeserver senders, not yet delivered."),
        "info": g("ircbridge_build_info", "Always 1; the version is a label.",
                  labels=["version"]),
    }


class ScrapedBridge(Protocol):
    """What a scrape reads of the bridge (the core's `Bridge` is one)."""

    @property
    def config(self) -> Config: ...
    @property
    def irc(self) -> IrcSide: ...
    @property
    def store(self) -> Store: ...
    @property
    def inbox(self) -> InboxWorker | None: ...
    @property
    def senders(self) -> Senders | None: ...


class BridgeCollector:
    """Reads the bridge's present state at each scrape."""

    def __init__(self, bridge: ScrapedBridge):
        self.bridge = bridge

    def describe(self) -> Iterator[Metric]:
        # Declared without samples, so registering does not query the database.
        return iter(_families().values())

    def collect(self) -> Iterator[Metric]:
        b = self.bridge
        f = _families()
        networks = [n.name for n in b.config.networks]
        status, irc_error = ops_queries.safe(b.irc.status, default={})
        f["irc_up"].add_metric([], 0.0 if irc_error else 1.0)
        for name in networks:
            net = status.get(name) or {}
            counts = {(kind, state): 0 for kind in KINDS for state in STATES}
            bot = net.get("bot", "idle")
            if bot in STATES:
                counts[("bot", bot)] += 1
            for state in (net.get("puppets") or {}).values():
                if state in STATES:
                    counts[("puppet", state)] += 1
            for (kind, state), count in counts.items():
                f["connections"].add_metric([name, kind, state], count)
            f["bot_connected"].add_metric([name], 1.0 if bot == State.CONNECTED.value else 0.0)

        self._collect_database(f, networks)
        health = getattr(b, "health", {}) or {}
        f["hs_up"].add_metric([], 1.0 if health.get("homeserver") == "ok" else 0.0)
        f["ping"].add_metric([], 1.0 if health.get("ping") == "ok" else 0.0)
        f["in_flight"].add_metric([], b.inbox.in_flight if b.inbox is not None else 0)
        f["senders"].add_metric([], b.senders.depth if b.senders is not None else 0)
        f["info"].add_metric([__version__], 1.0)
        return iter(f.values())


    def _collect_database(self, f: dict[str, GaugeMetricFamily], networks: list[str]) -> None:
        db = self.bridge.store.db
        try:
            with ops_queries.connection(db):  # one connection for the whole scrape
                _, db_error = ops_queries.safe(ops_queries.ping, db)
                f["db_up"].add_metric([], 0.0 if db_error else 1.0)
                if db_error:
                    return
                mine = self.bridge.store.bridge_id
                queues, _ = ops_queries.safe(ops_queries.queue_stats, db, mine, default={})
                rooms, _ = ops_queries.safe(ops_queries.rooms_by_network, db, mine, default={})
        except Exception:  # noqa: BLE001 - closing a broken connection; the scrape goes on
            log.debug("closing the scrape's database connection failed", exc_info=True)
            return
        for queue, stats in queues.items():
            f["depth"].add_metric([queue], stats.pending)
            f["age"].add_metric([queue], stats.oldest_age_seconds)
            f["failed"].add_metric([queue], stats.failed)
        for name in sorted(set(networks) | set(rooms)):
            f["rooms"].add_metric([name], rooms.get(name, 0))


def setup(bridge: ScrapedBridge) -> Metrics:
    """The app's Metrics: registry, scrape-time collectors, and its own port if set (the
    caller hands it to the bridge: `Bridge.attach(meter=...)`)."""
    metrics = Metrics(networks=[n.name for n in bridge.config.networks])
    metrics.registry.register(BridgeCollector(bridge))
    ProcessCollector(namespace="ircbridge", registry=metrics.registry)
    bind = bridge.config.metrics.bind
    if bind:
        host, _, port = bind.rpartition(":")
        try:
            metrics.server = start_http_server(int(port), addr=host.strip("[]"),
                                               registry=metrics.registry)
            log.info("metrics served on http://%s/metrics", bind)
        except OSError as e:
            log.error("cannot serve metrics on [metrics] bind = %s (%s); /metrics is off",
                      bind, e)
    return metrics

