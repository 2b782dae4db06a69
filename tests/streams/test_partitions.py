"""Stream partitions (STREAM_PARTITIONS > 1): the rule, routing, leases, and real workers owning partitions."""

from __future__ import annotations

import time
import uuid
from collections import Counter

import pytest
import redis
from django.conf import settings

from entities.models import AnswerRecord, EntityDemand
from entities.services import answer_signals_reconcile
from streams.metrics import PipelineCollector
from streams.models import ProcessedEvent
from streams.partitions import partition_lease_key, partition_of, stream_key_route, stream_keys
from streams.publisher import query_signals_publish, redis_circuit
from streams.selectors import stream_waiting, streams_info
from streams.services import dead_letters_replay, outbox_events_add, outbox_relay
from streams.worker import StreamWorker
from tests.entities.catalog import catalog_create
from tests.entities.test_answer_reconcile import QUESTIONS, ask_all, later
from tests.streams.pipeline import (
    WorkerProcess,
    command_run,
    drained,
    entities_make,
    signals_make,
    totals_assert,
    wait_until,
    worker_drain,
)

P = 8
QS = settings.STREAM_QUERY_SIGNALS
GROUP = settings.STREAM_CONSUMER_GROUP


@pytest.fixture
def partitioned(settings):
    settings.STREAM_PARTITIONS = P
    redis_circuit.reset()
    return [f"{QS}:{{{p}}}" for p in range(P)]


def partition_counts(signals) -> Counter:
    """Distinct events per partition, by the rule written in docs/events.md."""
    return Counter(partition_of(str(s.entity_id), P) for s in {s.event_id: s for s in signals}.values())


def publish(signals, chunk: int = 500) -> None:
    for start in range(0, len(signals), chunk):
        assert query_signals_publish(signals=signals[start : start + chunk]).published == len(
            signals[start : start + chunk]
        )


# -- the rule and routing ----------------------------------------------------------------------------------


def test_the_partition_rule_is_crc32_of_the_canonical_lowercase_uuid_mod_p(partitioned):
    # Fixed values, so a producer in another language can check its own implementation against them.
    assert partition_of("0b7c6d5e-4f3a-4b2c-8d1e-0f9a8b7c6d5e", 8) == 0
    assert partition_of("6f1d2c3e-8a4b-4f7e-9c0d-1a2b3c4d5e6f", 8) == 2
    assert partition_of("6f1d2c3e-8a4b-4f7e-9c0d-1a2b3c4d5e6f", 5) == 2976324146 % 5
    upper = {"entity_id": "6F1D2C3E-8A4B-4F7E-9C0D-1A2B3C4D5E6F"}
    assert stream_key_route(QS, upper) == f"{QS}:{{2}}"
    assert stream_key_route(settings.STREAM_UPDATE_REQUESTS, upper) == settings.STREAM_UPDATE_REQUESTS
    assert stream_keys(QS) == partitioned


def test_one_partition_keeps_the_one_key(settings):
    assert settings.STREAM_PARTITIONS == 1
    assert stream_keys(QS) == [QS]
    assert stream_key_route(QS, {"entity_id": str(uuid.uuid4())}) == QS


def test_publisher_outbox_relay_and_dead_letter_replay_land_on_the_entitys_partition(db, redis_client, partitioned):
    entities = entities_make(30)
    signals = signals_make(entities, 600)
    publish(signals[:400])
    outbox_events_add(entries=[(QS, s.to_fields()) for s in signals[400:500]])
    assert outbox_relay() == 100
    # A dead letter read from partition 3 (under an older setting it might have been another) goes back
    # to the partition of its entity today.
    for s in signals[500:]:
        redis_client.xadd(
            settings.STREAM_DEAD_LETTER, {**s.to_fields(), "dead_reason": "r", "source_stream": f"{QS}:{{3}}"}
        )
    assert dead_letters_replay().replayed == 100
    expected = Counter(partition_of(str(s.entity_id), P) for s in signals)
    assert {p: redis_client.xlen(key) for p, key in enumerate(partitioned)} == {p: expected[p] for p in range(P)}
    assert not redis_client.exists(QS)  # nothing on the unpartitioned key
    for p, key in enumerate(partitioned):
        for _entry_id, fields in redis_client.xrange(key):
            assert partition_of(fields["entity_id"], P) == p


def test_reconciliation_resends_lost_signals_to_their_partitions(db, user_client, private_redis, settings):
    settings.STREAM_PARTITIONS = 4
    redis_circuit.reset()
    catalog_create()
    worker = StreamWorker(consumer="reconcile-partitions", batch_size=100, block_ms=10)
    worker.groups_ensure()
    ask_all(user_client, QUESTIONS * 2)
    private_redis.kill()  # Redis restarts empty after accepting the signals, before the worker read them
    private_redis.start()
    worker.groups_ensure()
    assert answer_signals_reconcile(now=later()).resent > 0
    client = redis.Redis.from_url(settings.REDIS_URL, decode_responses=True)
    for p, key in enumerate(stream_keys(QS)):
        for _entry_id, fields in client.xrange(key):
            assert partition_of(fields["entity_id"], 4) == p
    worker_drain(worker)
    expected = Counter(entity_id for record in AnswerRecord.objects.all() for entity_id in record.entity_ids)
    assert dict(EntityDemand.objects.filter(query_count__gt=0).values_list("entity_id", "query_count")) == dict(
        expected
    )


# -- in-process workers ------------------------------------------------------------------------------------


def rounds_until(workers, predicate, *, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for worker in workers:
            worker.run_once()
        if predicate():
            return
    raise AssertionError(f"not reached: {[w.partitions_held for w in workers]}")


def test_two_workers_split_the_partitions_count_exactly_and_report_per_partition(
    db, redis_client, partitioned, staff_client
):
    entities = entities_make(60)
    signals = signals_make(entities, 4000)
    first = StreamWorker(consumer="first", batch_size=300, block_ms=10, claim_idle_ms=3_600_000)
    second = StreamWorker(consumer="second", batch_size=300, block_ms=10, claim_idle_ms=3_600_000)
    first.groups_ensure()
    rounds_until([first], lambda: first.partitions_held == list(range(P)))  # alone, it takes them all
    rounds_until(
        [first, second], lambda: len(first.partitions_held) == len(second.partitions_held) == P // 2, timeout=30
    )
    assert set(first.partitions_held).isdisjoint(second.partitions_held)
    for p in range(P):
        owner = "first" if p in first.partitions_held else "second"
        assert redis_client.get(partition_lease_key(p)) == owner

    publish(signals)
    assert stream_waiting(stream=QS)["waiting"] == len(signals)
    before = {w.consumer: w.stats.events_processed for w in (first, second)}
    rounds_until([first, second], lambda: stream_waiting(stream=QS)["waiting"] == 0)
    totals_assert(signals)
    per_partition = partition_counts(signals)
    for worker in (first, second):
        own = sum(per_partition[p] for p in worker.partitions_held)
        assert worker.stats.events_processed - before[worker.consumer] == own

    first.heartbeat()
    second.heartbeat()
    body = staff_client.get("/api/events/streams/info").json()
    keys = [s["name"] for s in body["streams"] if s["stream"] == QS]
    assert keys == partitioned
    assert [s["partition"] for s in body["streams"] if s["stream"] == QS] == list(range(P))
    assert body["totals"]["length"] == sum(s["length"] for s in body["streams"])
    assert body["partitions"]["count"] == P
    assert {lease["partition"]: lease["owner"] for lease in body["partitions"]["leases"]} == {
        p: ("first" if p in first.partitions_held else "second") for p in range(P)
    }
    assert {w["consumer"]: w["partitions"] for w in body["workers"]} == {
        "first": first.partitions_held,
        "second": second.partitions_held,
    }
    status = command_run("stream_status")
    assert "Partitions (8" in status
    assert "first" in status and "second" in status

    second.partitions_leave()  # a clean stop gives the partitions up at once
    rounds_until([first], lambda: first.partitions_held == list(range(P)))


def test_a_worker_that_lost_its_lease_drops_the_batch_and_the_new_holder_counts_it(db, redis_client, partitioned):
    entities = entities_make(20)
    signals = signals_make(entities, 500)
    old = StreamWorker(consumer="old", batch_size=1000, block_ms=10, partitions=range(P))
    old.groups_ensure()
    old.run_once()  # takes the pinned leases
    assert old.partitions_held == list(range(P))
    publish(signals)
    batch = old.entries_parse(old.entries_read())
    assert batch.entries
    # Its leases end (a long pause, say) and another worker takes them before the old one commits.
    for p in range(P):
        redis_client.delete(partition_lease_key(p))
    heir = StreamWorker(consumer="heir", batch_size=1000, block_ms=10)
    rounds_until([heir], lambda: heir.partitions_held == list(range(P)))
    old.heartbeat()  # the renewal finds the leases in another's name
    assert old.partitions_held == []
    old.batch_apply(batch)  # checked before the transaction: nothing applied, nothing acknowledged
    assert (old.stats.events_processed, old.stats.entries_acked) == (0, 0)
    worker_drain(heir)
    totals_assert(signals)
    assert redis_client.xpending(batch.entries[0].stream, GROUP)["pending"] == 0


# -- real worker processes -----------------------------------------------------------------------------------


@pytest.fixture
def start_worker(start_worker):
    """The stream tests' worker subprocesses, partitioned."""

    def start(consumer: str, *args: str) -> WorkerProcess:
        return start_worker(consumer, *args, env={"STREAM_PARTITIONS": str(P)})

    return start


def holders(client: redis.Redis) -> dict[int, str | None]:
    return {p: client.get(partition_lease_key(p)) for p in range(P)}


def heartbeat_partitions(client: redis.Redis) -> dict[str, list[int]]:
    return {w["consumer"]: w["partitions"] for w in streams_info(client=client)["workers"]}


def processed_by(client: redis.Redis) -> dict[str, int]:
    return {w["consumer"]: w["events_processed"] for w in streams_info(client=client)["workers"]}


def split_evenly(client: redis.Redis, consumers: set[str]) -> bool:
    owners = holders(client)
    return set(owners.values()) == consumers and all(
        list(owners.values()).count(c) == P // len(consumers) for c in consumers
    )


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_two_real_workers_split_evenly_never_share_a_partition_and_a_killed_ones_go_to_the_other(
    redis_client, partitioned, start_worker
):
    entities = entities_make(80)
    signals = signals_make(entities, 30_000)
    first = start_worker("first", "--batch-size", "500", "--claim-idle-ms", "3600000")
    second = start_worker("second", "--batch-size", "500", "--claim-idle-ms", "3600000")
    wait_until(lambda: split_evenly(redis_client, {"first", "second"}), timeout=60, what="4 partitions each")
    split = holders(redis_client)

    # Round one, ownership steady: each worker counts exactly the events of its own partitions.
    publish(signals[:10_000])
    wait_until(lambda: drained(redis_client), timeout=90, what="round one to drain")
    totals_assert(signals[:10_000])
    assert holders(redis_client) == split
    per_partition = partition_counts(signals[:10_000])
    own = {c: sum(n for p, n in per_partition.items() if split[p] == c) for c in ("first", "second")}
    # The heartbeats (refreshed each second) catch up with the last batches.
    wait_until(
        lambda: processed_by(redis_client) == own,
        timeout=15,
        what="counts per worker",
        state=lambda: processed_by(redis_client),
    )

    # Round two: SIGKILL one mid-way; the other takes its partitions and the entries pending on it.
    publish(signals[10_000:])
    wait_until(lambda: ProcessedEvent.objects.count() >= 13_000, timeout=60, what="round two under way")
    second.kill()
    pending_on_dead = sum(
        next((c["pending"] for c in redis_client.xinfo_consumers(key, GROUP) if c["name"] == "second"), 0)
        for key in partitioned
    )
    wait_until(lambda: set(holders(redis_client).values()) == {"first"}, timeout=60, what="the survivor to hold all 8")
    wait_until(lambda: drained(redis_client), timeout=120, what="round two to drain")
    totals_assert(signals)
    wait_until(
        lambda: heartbeat_partitions(redis_client).get("first") == list(range(P)), timeout=15, what="its heartbeat"
    )
    if pending_on_dead:  # taken over without waiting for --claim-idle-ms (an hour here)
        assert "took over" in first.log()
    assert first.process.poll() is None


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_partitions_pinned_by_hand_are_held_only_by_their_worker(redis_client, partitioned, start_worker):
    entities = entities_make(50)
    signals = signals_make(entities, 8000)
    pinned = start_worker("pinned", "--partitions", "0,3,5")
    wait_until(lambda: heartbeat_partitions(redis_client).get("pinned") == [0, 3, 5], timeout=60, what="pinning")
    start_worker("auto")
    wait_until(lambda: heartbeat_partitions(redis_client).get("auto") == [1, 2, 4, 6, 7], timeout=60, what="the rest")
    publish(signals)
    wait_until(lambda: drained(redis_client), timeout=90, what="the streams to drain")
    totals_assert(signals)
    per_partition = partition_counts(signals)
    own = per_partition[0] + per_partition[3] + per_partition[5]
    wait_until(lambda: processed_by(redis_client)["pinned"] == own, timeout=15, what="the pinned worker's count")
    assert pinned.stop() == 0
    assert holders(redis_client)[3] in (None, "auto")  # given up on a clean stop (the other may take it)


def test_worker_rejects_partitions_without_partitioning(db, settings):
    with pytest.raises(ValueError):
        StreamWorker(consumer="x", partitions=[0])


def test_pipeline_metrics_sum_the_partitions_and_show_each(db, redis_client, partitioned):
    entities = entities_make(10)
    signals = signals_make(entities, 300)
    publish(signals)
    worker = StreamWorker(consumer="metrics", batch_size=1000, block_ms=10)
    worker.groups_ensure()
    worker.heartbeat()
    worker.partitions_balance()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for metric in PipelineCollector().collect()
        for sample in metric.samples
    }
    assert samples[("mandate_wizard_stream_length", (("stream", QS),))] == len(signals)
    per_partition = Counter(partition_of(str(s.entity_id), P) for s in signals)
    for p in range(P):
        labels = (("partition", str(p)), ("stream", QS))
        assert samples[("mandate_wizard_stream_partition_length", labels)] == per_partition[p]
        assert samples[("mandate_wizard_stream_partition_lag", labels)] == per_partition[p]
    assert samples[("mandate_wizard_stream_partitions_held", ())] == P
