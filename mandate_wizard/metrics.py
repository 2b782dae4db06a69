"""Prometheus metrics: the worker's counters, and pipeline gauges read from Redis and PostgreSQL on scrape.

The web process serves them at `/metrics` (access set by METRICS_ACCESS / METRICS_TOKEN); the worker
serves its own registry on `run_stream_worker --metrics-port` through `worker_metrics_serve`.
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import Iterator

from django.conf import settings
from django.db import connection
from django.http import HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from rest_framework.exceptions import NotAuthenticated, NotFound, PermissionDenied
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

logger = logging.getLogger(__name__)

METRICS_ACCESS_CHOICES = ("off", "staff", "any")


class PipelineCollector(Collector):
    """Stream length, lag and pending, dead letters, outbox backlog and live workers, read at scrape time."""

    def collect(self) -> Iterator[Metric]:
        from streams.selectors import streams_info  # late: selectors import Django models

        try:
            info = streams_info()
        except Exception:  # a scrape must still return the other metrics
            logger.exception("pipeline metrics unavailable")
            up = GaugeMetricFamily("mandate_wizard_pipeline_up", "1 when Redis and PostgreSQL answered the scrape")
            up.add_metric([], 0)
            yield up
            return
        finally:
            # The scrape may run in a thread of its own: never leave its database connection open.
            if threading.current_thread() is not threading.main_thread():
                connection.close()
        up = GaugeMetricFamily("mandate_wizard_pipeline_up", "1 when Redis and PostgreSQL answered the scrape")
        up.add_metric([], 1)
        yield up
        length = GaugeMetricFamily("mandate_wizard_stream_length", "Entries in the stream", labels=["stream"])
        lag = GaugeMetricFamily(
            "mandate_wizard_stream_lag", "Entries not yet delivered to the consumer group", labels=["stream"]
        )
        pending = GaugeMetricFamily(
            "mandate_wizard_stream_pending", "Entries delivered but not yet acknowledged", labels=["stream"]
        )
        for stream in info["streams"]:
            length.add_metric([stream["name"]], stream["length"])
            lag.add_metric([stream["name"]], stream["group"]["lag"] or 0)
            pending.add_metric([stream["name"]], stream["group"]["pending"])
        yield length
        yield lag
        yield pending
        dead = GaugeMetricFamily("mandate_wizard_dead_letter_length", "Entries in the dead-letter stream")
        dead.add_metric([], info["dead_letter"]["length"])
        yield dead
        outbox = GaugeMetricFamily("mandate_wizard_outbox_backlog", "Events waiting in the outbox for Redis")
        outbox.add_metric([], info["outbox"]["backlog"])
        yield outbox
        workers = GaugeMetricFamily("mandate_wizard_workers_live", "Workers with a live heartbeat")
        workers.add_metric([], len(info["workers"]))
        yield workers


# The worker's own registry: counters it increments once per batch.
WORKER_REGISTRY = CollectorRegistry()
WORKER_EVENTS_PROCESSED = Counter(
    "mandate_wizard_worker_events_processed",
    "Valid events whose effects were committed",
    ["stream"],
    registry=WORKER_REGISTRY,
)
WORKER_DUPLICATES_SKIPPED = Counter(
    "mandate_wizard_worker_duplicates_skipped",
    "Events skipped because their event_id was already counted",
    registry=WORKER_REGISTRY,
)
WORKER_DEAD_LETTERED = Counter(
    "mandate_wizard_worker_dead_lettered", "Entries moved to the dead-letter stream", registry=WORKER_REGISTRY
)
WORKER_BATCH_SIZE = Histogram(
    "mandate_wizard_worker_batch_size",
    "Entries per batch",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10_000),
    registry=WORKER_REGISTRY,
)
WORKER_BATCH_DURATION = Histogram(
    "mandate_wizard_worker_batch_duration_seconds",
    "Seconds from read to acknowledge, per batch",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=WORKER_REGISTRY,
)
WORKER_REGISTRY.register(PipelineCollector())


def worker_batch_observe(
    *, stream: str, processed: int, duplicates: int, dead_lettered: int, size: int, duration: float
) -> None:
    """Record one finished batch in the worker's metrics."""
    if processed:
        WORKER_EVENTS_PROCESSED.labels(stream=stream).inc(processed)
    if duplicates:
        WORKER_DUPLICATES_SKIPPED.inc(duplicates)
    if dead_lettered:
        WORKER_DEAD_LETTERED.inc(dead_lettered)
    WORKER_BATCH_SIZE.observe(size)
    WORKER_BATCH_DURATION.observe(duration)


def worker_metrics_serve(*, port: int, addr: str = "0.0.0.0") -> None:  # scraped from outside
    """Serve the worker registry on http://addr:port/metrics from a daemon thread."""
    start_http_server(port, addr=addr, registry=WORKER_REGISTRY)
    logger.info("worker metrics on port %s", port)


def _web_registry() -> CollectorRegistry:
    from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR

    registry = CollectorRegistry()
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR, PipelineCollector()):
        registry.register(collector)
    return registry


WEB_REGISTRY = _web_registry()


class MetricsAccess(BasePermission):
    """METRICS_ACCESS: off (404), staff (staff users or the METRICS_TOKEN bearer), any (public)."""

    def has_permission(self, request: Request, view) -> bool:
        access = settings.METRICS_ACCESS
        if access == "any":
            return True
        if access != "staff":
            raise NotFound("Metrics are turned off (METRICS_ACCESS=off).")
        token = settings.METRICS_TOKEN
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if token and header.startswith("Bearer ") and hmac.compare_digest(header[7:].strip(), token):
            return True
        if not request.user or not request.user.is_authenticated:
            raise NotAuthenticated("Metrics need a staff login or the metrics token.")
        if not request.user.is_staff:
            raise PermissionDenied("Only staff users may read metrics.")
        return True


class MetricsView(APIView):
    """Prometheus text exposition of the web process."""

    permission_classes = [MetricsAccess]
    schema = None

    def perform_authentication(self, request: Request) -> None:
        # A bearer METRICS_TOKEN is not a JWT: authenticate lazily, only when the permission asks.
        pass

    def get(self, request: Request) -> HttpResponse:
        return HttpResponse(generate_latest(WEB_REGISTRY), content_type=CONTENT_TYPE_LATEST)
