"""The transport's Prometheus metrics: the worker's counters and the pipeline gauges read on scrape.

The worker serves WORKER_REGISTRY on `run_stream_worker --metrics-port` (worker_metrics_serve); the
web process's `/metrics` (mandate_wizard.metrics) registers PipelineCollector in its own registry.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping

from django.db import connection
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streams.selectors import streams_info

logger = logging.getLogger(__name__)


class PipelineCollector(Collector):
    """Stream length, lag and pending, dead letters, outbox backlog and live workers, read at scrape time."""

    def collect(self) -> Iterator[Metric]:
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
    *, processed: Mapping[str, int], duplicates: int, dead_lettered: int, size: int, duration: float
) -> None:
    """Record one finished batch in the worker's metrics (`processed`: events applied per stream)."""
    for stream, count in processed.items():
        if count:
            WORKER_EVENTS_PROCESSED.labels(stream=stream).inc(count)
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
