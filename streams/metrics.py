"""The transport's Prometheus metrics: the worker's counters and the pipeline gauges read on scrape.

The worker serves WORKER_REGISTRY on `run_stream_worker --metrics-port` (worker_metrics_serve); the
web process's `/metrics` (mandate_wizard.metrics) registers PipelineCollector in its own registry.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping

from django.db import connection
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
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
        # Per stream (a partitioned stream's partitions summed), and per partition key when partitioned.
        totals: dict[str, list[int]] = {}
        partition_length = GaugeMetricFamily(
            "mandate_wizard_stream_partition_length", "Entries in a stream partition", labels=["stream", "partition"]
        )
        partition_lag = GaugeMetricFamily(
            "mandate_wizard_stream_partition_lag",
            "Entries of a stream partition not yet delivered to the consumer group",
            labels=["stream", "partition"],
        )
        partition_pending = GaugeMetricFamily(
            "mandate_wizard_stream_partition_pending",
            "Entries of a stream partition delivered but not yet acknowledged",
            labels=["stream", "partition"],
        )
        for stream in info["streams"]:
            numbers = (stream["length"], stream["group"]["lag"] or 0, stream["group"]["pending"])
            total = totals.setdefault(stream["stream"], [0, 0, 0])
            for index, number in enumerate(numbers):
                total[index] += number
            if stream["partition"] is not None:
                labels = [stream["stream"], str(stream["partition"])]
                partition_length.add_metric(labels, numbers[0])
                partition_lag.add_metric(labels, numbers[1])
                partition_pending.add_metric(labels, numbers[2])
        for name, (stream_length, stream_lag, stream_pending) in totals.items():
            length.add_metric([name], stream_length)
            lag.add_metric([name], stream_lag)
            pending.add_metric([name], stream_pending)
        yield length
        yield lag
        yield pending
        if info["partitions"]["count"] > 1:
            yield partition_length
            yield partition_lag
            yield partition_pending
            held = GaugeMetricFamily(
                "mandate_wizard_stream_partitions_held", "Partitions whose lease a live worker holds"
            )
            held.add_metric([], sum(1 for lease in info["partitions"]["leases"] if lease["owner"]))
            yield held
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
WORKER_PARTITION_EVENTS_PROCESSED = Counter(
    "mandate_wizard_worker_partition_events_processed",
    "Valid events whose effects were committed, per stream partition (STREAM_PARTITIONS > 1)",
    ["partition"],
    registry=WORKER_REGISTRY,
)
WORKER_PARTITIONS_HELD = Gauge(
    "mandate_wizard_worker_partitions_held", "Partitions this worker holds the lease of", registry=WORKER_REGISTRY
)
WORKER_REGISTRY.register(PipelineCollector())


def worker_batch_observe(
    *,
    processed: Mapping[str, int],
    duplicates: int,
    dead_lettered: int,
    size: int,
    duration: float,
    partition: int | None = None,
) -> None:
    """Record one finished batch in the worker's metrics (`processed`: events applied per stream;
    `partition`: the partition the batch was read from, if any)."""
    for stream, count in processed.items():
        if count:
            WORKER_EVENTS_PROCESSED.labels(stream=stream).inc(count)
            if partition is not None:
                WORKER_PARTITION_EVENTS_PROCESSED.labels(partition=str(partition)).inc(count)
    if duplicates:
        WORKER_DUPLICATES_SKIPPED.inc(duplicates)
    if dead_lettered:
        WORKER_DEAD_LETTERED.inc(dead_lettered)
    WORKER_BATCH_SIZE.observe(size)
    WORKER_BATCH_DURATION.observe(duration)


def worker_partitions_observe(*, held: int) -> None:
    WORKER_PARTITIONS_HELD.set(held)


def worker_metrics_serve(*, port: int, addr: str = "0.0.0.0") -> None:  # scraped from outside
    """Serve the worker registry on http://addr:port/metrics from a daemon thread."""
    start_http_server(port, addr=addr, registry=WORKER_REGISTRY)
    logger.info("worker metrics on port %s", port)
