"""Prometheus metrics of one server process (or of all workers, in multiprocess mode)."""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connections = Gauge(
            "widget_connections",
            "Open visitor WebSocket connections.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.connections_total = Counter(
            "widget_connections_opened", "Visitor WebSocket connections accepted.", registry=r
        )
        self.messages = Counter(
            "widget_messages", "Client messages processed, by type.", ["type"], registry=r
        )
        self.errors = Counter(
            "widget_protocol_errors", "Error frames sent to clients, by code.", ["code"], registry=r
        )
        self.closes = Counter(
            "widget_closes",
            "Connections closed by the server, by close code.",
            ["code"],
            registry=r,
        )
        self.refused = Counter(
            "widget_connections_refused",
            "Visitor sockets refused by a connection limit (address, site, node), close 1013.",
            ["limit"],
            registry=r,
        )
        self.redis_errors = Counter(
            "widget_redis_errors", "Redis/Valkey commands that failed.", registry=r
        )
        self.pushes = Counter(
            "widget_pushes", "Server-initiated messages delivered to sockets.", registry=r
        )
        self.codes_unreplicated = Counter(
            "widget_codes_unreplicated",
            "Unique codes shown before a replica acknowledged them (a failover then could hand "
            "them out again).",
            registry=r,
        )
        self.offer_reports_refused = Counter(
            "widget_offer_reports_refused",
            "offer_shown reports that changed nothing, by why: forged (a claim this visitor was "
            "never given), replayed (already seen) or late (its reservation had run out).",
            ["why"],
            registry=r,
        )
        self.pool_available = Gauge(
            "widget_code_pool_available",
            "Unused codes left in a campaign's uploaded pool (alert when low).",
            ["site", "campaign"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.message_seconds = Histogram(
            "widget_message_seconds",
            "Time from receiving a client message to its ack (state durable in Redis).",
            registry=r,
            buckets=_LATENCY_BUCKETS,
        )
        self.store_restarts = Gauge(
            "widget_embedded_store_restarts",
            "Times the embedded Valkey was started again after it died (since the server start).",
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.store_up = Gauge(
            "widget_embedded_store_up",
            "1 while the embedded Valkey runs, 0 while it is being restarted or is down.",
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.decision_seconds = Histogram(
            "widget_decision_seconds",
            "Time spent deciding which offer to arm or show after a state change.",
            registry=r,
            buckets=_LATENCY_BUCKETS,
        )

    def render(self) -> bytes:
        """The exposition text; aggregates every worker when multiprocess mode is on."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
