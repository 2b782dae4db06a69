"""The pipeline on a real Redis Cluster of three primaries (REDIS_CLUSTER=true).

Answers published through the web and counted by a real worker; a worker SIGKILLed mid-stream and a
primary stopped and started again with its data (its AOF), counts exact; dead letters copied once
although the dead-letter stream and the source streams live in different slots; replays across
slots; /readyz with a primary down.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter

import pytest
from django.conf import settings
from django.core.cache import cache
from django.test import Client
from redis.cluster import RedisCluster

from entities.models import AnswerRecord, Entity, EntityDemand, RefreshRequest
from mandate_wizard.devservers import EmbeddedRedisCluster
from mandate_wizard.settings import redis_cache
from streams.events import QuerySignal
from streams.models import OutboxEvent, ProcessedEvent
from streams.partitions import partition_lease_key, stream_key_route, stream_keys
from streams.publisher import redis_circuit, update_requests_publish
from streams.redis import redis_client
from streams.selectors import streams_info
from streams.services import dead_letter_sources_key, dead_letters_add, dead_letters_replay
from streams.worker import StreamWorker
from tests.entities.catalog import catalog_create
from tests.streams.pipeline import (
    drained,
    entities_make,
    signals_make,
    signals_xadd,
    totals_assert,
    wait_until,
    worker_drain,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

QS = settings.STREAM_QUERY_SIGNALS
UR = settings.STREAM_UPDATE_REQUESTS
DEAD = settings.STREAM_DEAD_LETTER
GROUP = settings.STREAM_CONSUMER_GROUP
# What a worker subprocess needs besides REDIS_URL (WorkerProcess passes the settings' URL, the cluster's).
CLUSTER_ENV = {"REDIS_CLUSTER": "true"}


def primaries_up(redis_cluster: EmbeddedRedisCluster) -> None:
    """Start every primary a test left stopped, then wait until the cluster serves every slot."""
    for node in redis_cluster.nodes:
        if not node.running:
            node.start()
    redis_cluster.wait_ready()


@pytest.fixture
def cluster(settings, redis_cluster: EmbeddedRedisCluster) -> RedisCluster:
    """Settings pointed at the cluster (streams, cache), every primary up and empty; the cluster client."""
    primaries_up(redis_cluster)
    settings.REDIS_CLUSTER = True
    settings.REDIS_URL = redis_cluster.url
    settings.CACHES = {"default": redis_cache(url=redis_cluster.url, cluster=True)}
    client = redis_client()
    client.flushall()
    redis_circuit.reset()
    yield client
    redis_circuit.reset()
    primaries_up(redis_cluster)
    client.flushall()


def cluster_worker(consumer: str) -> StreamWorker:
    worker = StreamWorker(consumer=consumer, batch_size=500, block_ms=20, claim_idle_ms=3_600_000)
    worker.groups_ensure()
    return worker


def test_the_pipeline_keys_live_in_different_slots_of_the_cluster(cluster):
    """What the slot-safety rules are for: no multi-key command or MULTI may span these keys."""
    slots = {key: cluster.keyslot(key) for key in (QS, UR, DEAD)}
    assert len(set(slots.values())) == 3, slots
    assert cluster.keyslot(dead_letter_sources_key()) == slots[DEAD]


def test_answers_on_the_cluster_are_counted_exactly_by_a_real_worker(cluster, user_client, start_worker):
    catalog_create()
    questions = ["Who is Chris Mansolillo?", "Tell me about Silver Harbor Studios", "who is chris mansolillo"]
    for question in questions * 5:
        response = user_client.post("/api/answer", json.dumps({"question": question}), content_type="application/json")
        assert response.status_code == 200, response.content
    expected = dict(Counter(entity_id for record in AnswerRecord.objects.all() for entity_id in record.entity_ids))
    assert sum(expected.values()) == cluster.xlen(QS) > 0  # published to the cluster, none to the outbox
    # The answer throttle's counter is in the cluster cache.
    assert any(cluster.scan_iter(match="*throttle_answer_user_*"))

    worker = start_worker("cluster-web", env=CLUSTER_ENV)
    wait_until(
        lambda: (
            dict(EntityDemand.objects.filter(query_count__gt=0).values_list("entity_id", "query_count")) == expected
        ),
        timeout=60,
        what="every answer's signals counted",
    )
    wait_until(lambda: drained(cluster), timeout=30, what="the stream acknowledged")
    info = streams_info()
    assert [w["consumer"] for w in info["workers"]] == ["cluster-web"]  # its heartbeat, found by SCAN on each primary
    assert info["totals"]["pending"] == 0
    assert worker.stop() == 0

    response = Client().get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["redis"] == "ok"


@pytest.mark.parametrize("partitions", [1, 4])
def test_a_killed_worker_and_a_restarted_primary_leave_counts_exact(
    cluster, redis_cluster, start_worker, settings, partitions
):
    settings.STREAM_PARTITIONS = partitions
    keys = stream_keys(QS)
    if partitions > 1:
        # The hash tags spread the partitions over the three primaries.
        assert len({redis_cluster.node_of(key).port for key in keys}) == 3
    env = {**CLUSTER_ENV, "STREAM_PARTITIONS": str(partitions)}
    entities = entities_make(40)
    signals = signals_make(entities, 16_000)
    signals_xadd(cluster, signals[:8000])
    bad = ({"event_id": "not-a-uuid"}, {"entity_id": str(uuid.uuid4())})
    # (stream, id) pairs: with partitions the two may land on two keys under one millisecond's id.
    bad_ids = set()
    for fields in bad:
        key = stream_key_route(QS, fields)
        bad_ids.add((key, cluster.xadd(key, fields)))
    common = ("--batch-size", "500", "--claim-idle-ms", "300")

    victim = start_worker("victim", *common, env=env)
    wait_until(lambda: ProcessedEvent.objects.count() >= 2000, timeout=120, what="2000 events")
    victim.kill()  # SIGKILL mid-stream: its read-ahead batch and its current batch stay pending (and its leases)
    heir = start_worker("heir", *common, env=env)
    # The victim's last batches can reach the count alone: wait for the heir itself to be counting.
    wait_until(lambda: "batch:" in heir.log(), timeout=120, what="the heir to count a batch")
    wait_until(lambda: ProcessedEvent.objects.count() >= 4000, timeout=120, what="4000 events")

    # Stop the primary that serves (the first partition of) the QuerySignals under the running worker,
    # then start it again with its data (clean shutdown: its AOF holds the entries, the group, the
    # pending list and the leases).
    primary = redis_cluster.node_of(keys[0])
    redis_cluster.primary_stop(primary)
    wait_until(lambda: "ConnectionError" in heir.log(), timeout=60, what="the worker to notice the stopped primary")
    redis_cluster.primary_start(primary)

    signals_xadd(cluster, signals[8000:])
    signals_xadd(cluster, signals[:1000])  # published twice: counted once
    wait_until(
        lambda: drained(cluster) and ProcessedEvent.objects.count() == len(signals),
        timeout=120,
        what="the stream to drain",
        state=lambda: ProcessedEvent.objects.count(),
    )
    # Every command the worker sent was one a cluster takes (a cross-slot one raises RedisClusterException),
    # and it kept every lease through the restart (renewals are scripts, one call per lease key).
    assert "RedisClusterException" not in heir.log()
    if partitions > 1:
        assert {cluster.get(partition_lease_key(p)) for p in range(partitions)} == {"heir"}
    assert heir.stop() == 0
    totals_assert(signals)
    # Each bad entry dead-lettered once, through a kill, a claim and a primary restart.
    assert sorted((fields["source_stream"], fields["source_id"]) for _id, fields in cluster.xrange(DEAD)) == sorted(
        bad_ids
    )


def test_dead_letters_are_copied_once_when_the_worker_dies_before_acknowledging(cluster):
    worker = cluster_worker("dead-letters")
    ids = [cluster.xadd(QS, {"event_id": "nope", "n": str(n)}) for n in range(3)]
    batch = worker.entries_parse(worker.entries_read())
    assert len(batch.dead) == 3
    # The copy is written, then the worker dies before its XACK: the entries stay pending.
    assert dead_letters_add(client=cluster, dead=batch.dead) == 3
    assert cluster.xpending(QS, GROUP)["pending"] == 3

    restarted = cluster_worker("dead-letters")  # same name: its pending entries are read first
    worker_drain(restarted)
    assert cluster.xpending(QS, GROUP)["pending"] == 0
    assert [fields["source_id"] for _id, fields in cluster.xrange(DEAD)] == ids
    assert restarted.stats.dead_lettered == 3  # settled again, copied nothing twice


def test_replay_and_update_requests_work_across_slots(cluster):
    worker = cluster_worker("replay")
    missing = uuid.uuid4()
    cluster.xadd(QS, QuerySignal.new(entity_id=missing, entity_type="person", query="who").to_fields())
    worker_drain(worker)
    [(_dead_id, fields)] = cluster.xrange(DEAD)
    assert fields["dead_reason"].startswith("unknown entity_id")

    entity = Entity.objects.create(id=missing, name="Nora Vance", entity_type="person")
    outcome = dead_letters_replay()
    assert (outcome.replayed, outcome.already_counted) == (1, 0)
    assert cluster.xlen(DEAD) == 0
    published = update_requests_publish(entity_ids=[entity.id], operation="refresh", source="cluster test")
    assert (published.requests, published.outboxed) == (1, 0)
    worker_drain(worker)
    assert EntityDemand.objects.get(entity=entity).query_count == 1
    assert RefreshRequest.objects.filter(entity=entity).count() == 1
    assert dead_letters_replay().replayed == 0


def test_readyz_fails_while_a_primary_is_down_and_recovers(cluster, redis_cluster):
    assert Client().get("/readyz").status_code == 200
    primary = redis_cluster.nodes[1]
    redis_cluster.primary_stop(primary)
    response = Client().get("/readyz")
    assert response.status_code == 503
    assert response.json()["failing"] == ["redis"]
    redis_cluster.primary_start(primary)
    wait_until(lambda: Client().get("/readyz").status_code == 200, timeout=30, what="/readyz to recover")
    cache.clear()


def test_answers_while_the_whole_cluster_is_down_go_to_the_outbox_and_are_counted_once_back(
    cluster, redis_cluster, user_client
):
    catalog_create()
    worker = cluster_worker("outage")
    for node in redis_cluster.nodes:
        node.stop()
    # The throttle's cache fails open and the signals go to the outbox: answers still succeed.
    for question in ["Who is Chris Mansolillo?", "Tell me about Silver Harbor Studios"] * 2:
        response = user_client.post("/api/answer", json.dumps({"question": question}), content_type="application/json")
        assert response.status_code == 200, response.content
    assert OutboxEvent.objects.exists()
    response = Client().get("/readyz")
    assert (response.status_code, response.json()["failing"]) == (503, ["redis"])

    primaries_up(redis_cluster)
    redis_circuit.reset()
    worker.groups_ensure()
    wait_until(lambda: worker.run_once() == 0 and not OutboxEvent.objects.exists(), timeout=30, what="the relay")
    worker_drain(worker)
    expected = Counter(entity_id for record in AnswerRecord.objects.all() for entity_id in record.entity_ids)
    assert dict(EntityDemand.objects.filter(query_count__gt=0).values_list("entity_id", "query_count")) == expected
