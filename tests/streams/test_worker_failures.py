"""Real `run_stream_worker` subprocesses against real servers that are killed, stopped and restarted."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import psycopg
import pytest
import redis
from django.conf import settings

from streams.models import ProcessedEvent
from tests.streams.pipeline import (
    MANAGE,
    counts_expected,
    drained,
    entities_make,
    signals_make,
    signals_xadd,
    totals_assert,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

QS = settings.STREAM_QUERY_SIGNALS
GROUP = settings.STREAM_CONSUMER_GROUP


def test_sigkill_at_several_points_then_restart_counts_exactly(redis_client, start_worker):
    entities = entities_make(40)
    signals = signals_make(entities, 20_000)
    signals_xadd(redis_client, signals)
    signals_xadd(redis_client, signals[:2000])  # and some published twice

    consumer = "victim"
    for kill_after, next_consumer in ((2000, "victim"), (7000, "heir"), (12_000, "heir")):
        worker = start_worker(consumer, "--batch-size", "500", "--claim-idle-ms", "300")
        wait_until(lambda n=kill_after: ProcessedEvent.objects.count() >= n, timeout=60, what=f"{kill_after} events")
        worker.kill()  # SIGKILL: no cleanup, whatever it was doing
        consumer = next_consumer
    start_worker(consumer, "--batch-size", "500", "--claim-idle-ms", "300")
    wait_until(lambda: drained(redis_client), timeout=90, what="the stream to drain")

    totals_assert(signals)


def test_sigterm_during_a_batch_exits_0_with_nothing_pending_for_it(redis_client, start_worker):
    entities = entities_make(30)
    signals_xadd(redis_client, signals_make(entities, 30_000))
    worker = start_worker("graceful", "--batch-size", "1000")
    wait_until(lambda: ProcessedEvent.objects.exists(), timeout=30, what="the first batch")

    assert worker.stop(timeout=10) == 0
    pending = redis_client.xpending(QS, GROUP)
    assert pending["pending"] == 0, pending
    read = redis_client.xinfo_groups(QS)[0]["entries-read"]
    assert 0 < read < 30_000
    assert ProcessedEvent.objects.count() == read  # every entry it read was counted and acknowledged
    assert not redis_client.exists("mandate_wizard:workers:graceful")


def test_three_workers_in_parallel_count_exactly(redis_client, start_worker):
    entities = entities_make(25)  # few entities: the workers fight over the same rows
    signals = signals_make(entities, 15_000)
    signals_xadd(redis_client, signals + signals[::7])
    workers = [start_worker(f"parallel-{n}", "--batch-size", "300") for n in range(3)]
    wait_until(lambda: drained(redis_client), timeout=90, what="the stream to drain")

    totals_assert(signals)
    consumers = {c["name"]: c for c in redis_client.xinfo_consumers(QS, GROUP)}
    assert {"parallel-0", "parallel-1", "parallel-2"} <= consumers.keys()
    assert all(worker.stop() == 0 for worker in workers)


def test_backlog_over_50000_entries_is_fully_counted_when_a_worker_starts(redis_client, start_worker):
    entities = entities_make(500)
    signals = signals_make(entities, 50_500, seed=3)
    signals_xadd(redis_client, signals, chunk=5000)
    assert redis_client.xlen(QS) == 50_500
    start_worker("late")
    wait_until(lambda: drained(redis_client), timeout=120, what="the backlog to drain", interval=0.5)

    totals_assert(signals)


def test_redis_restarted_empty_while_the_worker_runs(private_redis, start_worker):
    client = redis.Redis.from_url(private_redis.url, decode_responses=True)
    entities = entities_make(20)
    first, second = signals_make(entities, 3000, seed=1), signals_make(entities, 3000, seed=2)
    worker = start_worker("survivor", redis_url=private_redis.url)
    signals_xadd(client, first)
    wait_until(lambda: ProcessedEvent.objects.count() == 3000, timeout=60, what="the first 3000 events")

    private_redis.kill()
    time.sleep(1)
    private_redis.start()  # same port, no data: no streams, no group
    client = redis.Redis.from_url(private_redis.url, decode_responses=True)
    signals_xadd(client, second)
    wait_until(lambda: ProcessedEvent.objects.count() == 6000, timeout=60, what="events after the restart")

    totals_assert(first + second)
    assert worker.process.poll() is None
    assert client.xinfo_groups(QS)[0]["name"] == GROUP
    assert worker.stop() == 0


def test_postgres_stopped_and_restarted_while_the_worker_runs(redis_client, private_postgres_factory, start_worker):
    server = private_postgres_factory("pg-outage")
    env = {**os.environ, "DATABASE_URL": server.url}
    subprocess.run([sys.executable, str(MANAGE), "migrate", "--noinput", "-v0"], env=env, check=True, timeout=180)
    entity_ids = [uuid.uuid4() for _ in range(20)]
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO entities_entity (id, name, entity_type, data, created_at, updated_at)"
            " SELECT id, 'Outage ' || id, 'person', '{}', now(), now() FROM unnest(%s::uuid[]) id",
            [entity_ids],
        )

    class Row:  # what signals_make needs of an entity
        def __init__(self, entity_id):
            self.id, self.entity_type = entity_id, "person"

    rows = [Row(entity_id) for entity_id in entity_ids]
    first, second = signals_make(rows, 4000, seed=1), signals_make(rows, 4000, seed=2)

    def counted() -> int:
        try:
            with psycopg.connect(server.url, connect_timeout=2) as conn:
                return conn.execute("SELECT count(*) FROM streams_processedevent").fetchone()[0]
        except psycopg.OperationalError:
            return -1

    worker = start_worker("steadfast", "--batch-size", "200", database=server.url)
    signals_xadd(redis_client, first)
    wait_until(lambda: counted() >= 1000, timeout=60, what="some events counted")
    server.stop(mode="immediate")
    signals_xadd(redis_client, second)
    # The worker notices the outage, keeps its batch in hand (pending, not dead-lettered) and retries.
    wait_until(lambda: "PostgreSQL unavailable" in worker.log(), timeout=30, what="the worker to see the outage")
    wait_until(lambda: worker.log().count("retrying the batch") >= 3, timeout=30, what="three retries")
    assert worker.process.poll() is None
    assert redis_client.xpending(QS, GROUP)["pending"] > 0
    assert redis_client.xlen(settings.STREAM_DEAD_LETTER) == 0
    server.start()
    wait_until(
        lambda: counted() == 8000 and drained(redis_client),
        timeout=90,
        what="the stream to drain",
        state=lambda: (counted(), redis_client.xinfo_groups(QS), redis_client.xinfo_stream(QS)),
    )

    with psycopg.connect(server.url) as conn:
        actual = dict(
            conn.execute("SELECT entity_id, query_count FROM entities_entitydemand WHERE query_count > 0").fetchall()
        )
        buckets = conn.execute("SELECT sum(count) FROM analytics_demandbucket").fetchone()[0]
    assert actual == counts_expected(first + second)
    assert buckets == 8000
    assert redis_client.xlen(settings.STREAM_DEAD_LETTER) == 0  # an outage is transient: nothing dead-lettered
    assert worker.stop() == 0
