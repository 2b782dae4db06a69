"""Helpers for the pipeline tests: entities, workloads, raw publishing, worker subprocesses, totals."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path

import redis
from django.conf import settings
from django.core.management import call_command
from django.db.models import Sum

from analytics.models import DemandBucket
from entities.models import Entity, EntityDemand, EntityType
from kernel.databases import database_url
from streams.events import QuerySignal
from streams.models import ProcessedEvent
from streams.partitions import stream_key_route
from streams.selectors import stream_waiting
from streams.worker import StreamWorker

MANAGE = Path(settings.BASE_DIR) / "manage.py"


def entities_make(count: int) -> list[Entity]:
    types = EntityType.values
    return Entity.objects.bulk_create(
        [Entity(name=f"Pipeline entity {index}", entity_type=types[index % len(types)]) for index in range(count)]
    )


def signals_make(entities: Sequence[Entity], count: int, *, seed: int = 1, days: int = 30) -> list[QuerySignal]:
    """`count` QuerySignals over `entities`, skewed (a few entities get most), spread over `days`."""
    rng = random.Random(seed)
    weights = [1 / rank for rank in range(1, len(entities) + 1)]
    now = datetime.now(UTC)
    return [
        QuerySignal(
            event_id=uuid.UUID(int=rng.getrandbits(128), version=4),
            entity_id=entity.id,
            entity_type=entity.entity_type,
            query="who greenlit it",
            user_id="",
            timestamp=now - timedelta(seconds=rng.random() * days * 86400),
        )
        for entity in rng.choices(entities, weights=weights, k=count)
    ]


def signals_xadd(client: redis.Redis, signals: Sequence[QuerySignal], *, chunk: int = 2000) -> None:
    """XADD signals in the wire format to their partitions' keys, pipelined (the publisher has its own tests)."""
    for start in range(0, len(signals), chunk):
        pipe = client.pipeline(transaction=False)
        for item in signals[start : start + chunk]:
            fields = item.to_fields()
            pipe.xadd(stream_key_route(settings.STREAM_QUERY_SIGNALS, fields), fields)
        pipe.execute()


def counts_expected(signals: Sequence[QuerySignal]) -> dict[uuid.UUID, int]:
    return dict(Counter(item.entity_id for item in {item.event_id: item for item in signals}.values()))


def counts_actual() -> dict[uuid.UUID, int]:
    return dict(EntityDemand.objects.filter(query_count__gt=0).values_list("entity_id", "query_count"))


def totals_assert(signals: Sequence[QuerySignal]) -> None:
    """Every entity counts each distinct event id once: counters, demand score, buckets and inbox."""
    expected = counts_expected(signals)
    assert counts_actual() == expected
    distinct = sum(expected.values())
    assert EntityDemand.objects.aggregate(total=Sum("demand_score"))["total"] == distinct
    assert DemandBucket.objects.aggregate(total=Sum("count"))["total"] == distinct
    assert ProcessedEvent.objects.count() == distinct


def drained(client: redis.Redis) -> bool:
    """Everything published as QuerySignals (every partition) was delivered to the group and acknowledged."""
    return stream_waiting(stream=settings.STREAM_QUERY_SIGNALS, client=client)["waiting"] == 0


def worker_drain(worker: StreamWorker, *, rounds: int = 1000) -> None:
    """Run the unit of work until a read returns nothing."""
    for _ in range(rounds):
        if not worker.run_once():
            return
    raise AssertionError("the worker did not drain")


def wait_until(
    predicate: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    interval: float = 0.1,
    state: Callable[[], object] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    detail = f" (state: {state()})" if state else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")


class WorkerProcess:
    """A real `manage.py run_stream_worker` subprocess, its output kept in a log file."""

    def __init__(
        self,
        *,
        log_dir: Path,
        consumer: str,
        database: str | None = None,
        redis_url: str | None = None,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.log_path = log_dir / f"worker-{consumer}-{uuid.uuid4().hex[:6]}.log"
        env = {
            **os.environ,
            "DATABASE_URL": database or database_url(),
            "REDIS_URL": redis_url or settings.REDIS_URL,
            **(env or {}),
        }
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(MANAGE), "run_stream_worker", "--consumer", consumer, "--block-ms", "200", *args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self, timeout: float = 10) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def ensure_ended(self) -> None:
        if self.process.poll() is None:
            self.kill()


def command_run(*args: str) -> str:
    """Run a management command; return what it wrote to stdout."""
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()
