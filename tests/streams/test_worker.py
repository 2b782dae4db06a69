"""The worker's unit of work, called directly against the suite's real PostgreSQL and Redis."""

from __future__ import annotations

import json
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

import pytest
from django.conf import settings
from django.db import connection

from analytics.models import DemandBucket
from entities.models import Entity, EntityDemand, EntityEmbedding, RefreshRequest
from mandate_wizard.devservers import EmbeddedRedis
from streams.events import QuerySignal, UpdateRequest, heartbeat_key, timestamp_encode
from streams.models import ProcessedEvent
from streams.services import inbox_prune
from streams.worker import HEARTBEAT_TTL_SECONDS, Entry, StreamWorker
from tests.streams.pipeline import entities_make, signals_make, signals_xadd, totals_assert, wait_until, worker_drain

QS = settings.STREAM_QUERY_SIGNALS
UR = settings.STREAM_UPDATE_REQUESTS
DL = settings.STREAM_DEAD_LETTER
GROUP = settings.STREAM_CONSUMER_GROUP


@pytest.fixture
def worker(redis_client) -> StreamWorker:
    return StreamWorker(consumer="test-worker", batch_size=100, block_ms=10)


def dead_letters(client) -> list[dict[str, str]]:
    return [fields for _id, fields in client.xrange(DL)]


def test_entries_written_with_raw_xadd_in_the_documented_format_are_counted(db, redis_client, worker):
    entity = entities_make(1)[0]
    cli = Path(EmbeddedRedis.executable()).with_name("valkey-cli")
    url = urlparse(settings.REDIS_URL)
    # The suite's server and database number (CI's second run uses database 15 of a standard Redis).
    address = ["-h", url.hostname or "127.0.0.1", "-p", str(url.port or 6379), "-n", url.path.strip("/") or "0"]
    event_ids = [str(uuid.uuid4()) for _ in range(3)]
    for event_id, timestamp in zip(
        event_ids, ["2026-11-29T10:15:00Z", "2026-11-29T12:00:00+02:00", "2026-11-29T11:59:59.5Z"], strict=True
    ):
        subprocess.run(
            [str(cli), *address, "XADD", QS, "*", "event_id", event_id, "entity_id", str(entity.id),
             "entity_type", "person", "query", "who runs drama at Netflix", "user_id", "", "timestamp", timestamp],
            check=True, capture_output=True,
        )  # fmt: skip
    worker.groups_ensure()
    worker_drain(worker)

    demand = EntityDemand.objects.get(entity=entity)
    assert demand.query_count == demand.demand_score == 3
    assert demand.first_queried_at == datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
    assert demand.last_queried_at == datetime(2026, 11, 29, 11, 59, 59, 500000, tzinfo=UTC)
    assert dict(DemandBucket.objects.values_list("hour", "count")) == {
        datetime(2026, 11, 29, 10, tzinfo=UTC): 2,
        datetime(2026, 11, 29, 11, tzinfo=UTC): 1,
    }
    assert set(ProcessedEvent.objects.values_list("event_id", flat=True)) == {uuid.UUID(e) for e in event_ids}
    assert redis_client.xpending(QS, GROUP)["pending"] == 0


def test_entries_published_before_the_group_existed_are_counted(db, redis_client, worker):
    entities = entities_make(20)
    signals = signals_make(entities, 500)
    signals_xadd(redis_client, signals)
    assert not redis_client.xinfo_groups(QS)
    worker.groups_ensure()
    worker_drain(worker)
    totals_assert(signals)
    assert worker.stats.events_processed == 500


def test_read_ahead_counts_each_batch_once_and_a_stopping_worker_applies_the_batch_it_read(db, redis_client):
    signals = signals_make(entities_make(5), 250)
    signals_xadd(redis_client, signals)
    worker = StreamWorker(consumer="reader", batch_size=100, block_ms=10, read_ahead=True)
    worker.groups_ensure()

    assert worker.run_once() == 100
    assert ProcessedEvent.objects.count() == 100
    # The next batch was read while the first one's transaction ran: pending, not yet counted.
    wait_until(lambda: redis_client.xpending(QS, GROUP)["pending"] == 100, timeout=10, what="the read-ahead")
    assert ProcessedEvent.objects.count() == 100

    assert worker.run_once() == 100  # the batch read ahead, applied once
    assert ProcessedEvent.objects.count() == 200
    assert worker.read_ahead_finish() == 50  # what a stopping worker does with the batch in hand
    assert worker.read_ahead_finish() == 0
    assert redis_client.xpending(QS, GROUP)["pending"] == 0
    totals_assert(signals)


def test_duplicate_entries_with_the_same_event_id_count_once(db, redis_client, worker):
    entities = entities_make(10)
    signals = signals_make(entities, 300)
    # Same batch, later batches, and after the originals were acknowledged.
    signals_xadd(redis_client, signals + signals[:50] + signals[:10])
    worker.groups_ensure()
    worker_drain(worker)
    signals_xadd(redis_client, signals[100:200])
    worker_drain(worker)

    totals_assert(signals)
    assert worker.stats.events_processed == 300
    assert worker.stats.duplicates_skipped == 160


def test_malformed_entries_are_dead_lettered_with_a_reason_while_batch_mates_count(db, redis_client, worker):
    entity = entities_make(1)[0]
    good = signals_make([entity], 5)
    future = timestamp_encode(datetime.now(UTC) + timedelta(minutes=10))
    base = good[0].to_fields() | {"event_id": str(uuid.uuid4())}
    bad_signals = {
        "missing field 'entity_id'": {k: v for k, v in base.items() if k != "entity_id"},
        "'event_id' is not a UUID": base | {"event_id": "nope"},
        "unknown entity_type 'planet'": base | {"entity_type": "planet"},
        "more than 5 minutes in the future": base | {"timestamp": future},
        "unknown entity_id": base | {"entity_id": str(uuid.uuid4())},
        "unsupported schema version": base | {"v": "9"},
    }
    refresh = UpdateRequest.new(entity_ids=[entity.id], operation="refresh", source="test").to_fields()
    bad_requests = {
        "unknown operation 'explode'": refresh | {"event_id": str(uuid.uuid4()), "operation": "explode"},
        "unknown entity_ids": refresh | {"event_id": str(uuid.uuid4()), "entity_ids": json.dumps([str(uuid.uuid4())])},
        "not a JSON array": refresh | {"event_id": str(uuid.uuid4()), "entity_ids": "x"},
    }
    ids = {}
    for index, item in enumerate(good):
        redis_client.xadd(QS, item.to_fields())
        reason, fields = list(bad_signals.items())[index]
        ids[reason] = (QS, redis_client.xadd(QS, fields), fields)
    for reason, fields in list(bad_signals.items())[len(good) :]:
        ids[reason] = (QS, redis_client.xadd(QS, fields), fields)
    redis_client.xadd(UR, refresh)
    for reason, fields in bad_requests.items():
        ids[reason] = (UR, redis_client.xadd(UR, fields), fields)

    worker.groups_ensure()
    worker_drain(worker)
    # A second pass (as after a crash) must not dead-letter anything again.
    worker_drain(worker)

    assert EntityDemand.objects.get(entity=entity).query_count == 5
    assert RefreshRequest.objects.filter(entity=entity).count() == 1
    letters = dead_letters(redis_client)
    assert len(letters) == len(ids) == worker.stats.dead_lettered
    by_source = {(letter["source_stream"], letter["source_id"]): letter for letter in letters}
    for reason, (stream, entry_id, fields) in ids.items():
        letter = by_source[(stream, entry_id)]
        assert reason in letter["dead_reason"]
        assert letter["deliveries"] == "1"
        assert datetime.fromisoformat(letter["dead_at"]).tzinfo is not None
        assert {name: letter[name] for name in fields} == fields
    assert redis_client.xpending(QS, GROUP)["pending"] == 0
    assert redis_client.xpending(UR, GROUP)["pending"] == 0


def test_demand_counting_never_moves_updated_at_and_handles_late_events(db, redis_client, worker):
    entity = entities_make(1)[0]
    updated_at = datetime(2026, 1, 1, tzinfo=UTC)
    Entity.objects.filter(id=entity.id).update(updated_at=updated_at)
    noon = datetime(2026, 11, 20, 12, tzinfo=UTC)

    def signal(at: datetime) -> QuerySignal:
        return QuerySignal.new(entity_id=entity.id, entity_type=entity.entity_type, query="q", timestamp=at)

    worker.groups_ensure()
    signals_xadd(redis_client, [signal(noon), signal(noon + timedelta(hours=1))])
    worker_drain(worker)
    # Late and out of order: one older than everything, one in between, one newer.
    signals_xadd(redis_client, [signal(noon - timedelta(days=3)), signal(noon + timedelta(minutes=30))])
    worker_drain(worker)
    signals_xadd(redis_client, [signal(noon + timedelta(days=2))])
    worker_drain(worker)

    entity.refresh_from_db()
    assert entity.updated_at == updated_at
    assert entity.demand.query_count == 5
    assert entity.demand.first_queried_at == noon - timedelta(days=3)
    assert entity.demand.last_queried_at == noon + timedelta(days=2)
    assert DemandBucket.objects.get(entity=entity, hour=noon).count == 2


def test_refresh_and_reindex_requests_apply_once(db, redis_client, worker):
    entities = entities_make(3)
    refresh = UpdateRequest.new(entity_ids=[e.id for e in entities[:2]], operation="refresh", source="data-team")
    reindex = UpdateRequest.new(entity_ids=[entities[2].id], operation="reindex", source="admin")
    for request in (refresh, reindex, refresh, reindex):
        redis_client.xadd(UR, request.to_fields())
    worker.groups_ensure()
    worker_drain(worker)

    rows = RefreshRequest.objects.order_by("entity_id")
    assert sorted((row.entity_id, row.event_id, row.source) for row in rows) == sorted(
        (e.id, refresh.event_id, "data-team") for e in entities[:2]
    )
    assert rows[0].requested_at == refresh.timestamp
    assert EntityEmbedding.objects.filter(entity_id=entities[2].id).exists()
    assert worker.stats.events_processed == 2
    assert worker.stats.duplicates_skipped == 2


def test_entries_delivered_more_than_max_deliveries_are_dead_lettered(db, redis_client):
    entities = entities_make(2)
    signals = signals_make(entities, 3)
    signals_xadd(redis_client, signals)
    worker = StreamWorker(consumer="unlucky", batch_size=100, block_ms=10, max_deliveries=1)
    worker.groups_ensure()
    # Delivered to this consumer once already (a crash before the apply, say): the next read is the second.
    redis_client.xreadgroup(GROUP, "unlucky", {QS: ">"})
    worker_drain(worker)

    letters = dead_letters(redis_client)
    assert len(letters) == 3
    assert all("delivered 2 times" in letter["dead_reason"] and letter["deliveries"] == "2" for letter in letters)
    assert not ProcessedEvent.objects.exists()
    assert redis_client.xpending(QS, GROUP)["pending"] == 0


def test_idle_entries_of_a_dead_consumer_are_claimed_and_the_consumer_removed(db, redis_client):
    entities = entities_make(5)
    signals = signals_make(entities, 250)
    signals_xadd(redis_client, signals)
    StreamWorker(consumer="x").groups_ensure()
    redis_client.xreadgroup(GROUP, "crashed", {QS: ">"}, count=250)  # read, never acknowledged
    assert redis_client.xpending(QS, GROUP)["consumers"] == [{"name": "crashed", "pending": 250}]

    rescuer = StreamWorker(consumer="rescuer", batch_size=100, block_ms=10, claim_idle_ms=0)
    for _ in range(10):
        rescuer._due.pop("claim", None)  # claim on every round for the test
        rescuer.run_once()
    totals_assert(signals)
    assert rescuer.stats.entries_claimed == 250
    assert rescuer.consumers_prune() == 1
    assert [c["name"] for c in redis_client.xinfo_consumers(QS, GROUP)] == ["rescuer"]


def test_trimming_never_drops_an_unacknowledged_entry(db, redis_client, worker):
    entities = entities_make(5)
    signals = signals_make(entities, 300)
    signals_xadd(redis_client, signals)
    worker.groups_ensure()
    # Another consumer holds entries 100..149 unacknowledged; 150.. are not delivered yet.
    all_ids = [entry_id for entry_id, _ in redis_client.xrange(QS)]
    redis_client.xreadgroup(GROUP, "slow", {QS: ">"}, count=100)
    redis_client.xack(QS, GROUP, *all_ids[:100])
    redis_client.xreadgroup(GROUP, "slow", {QS: ">"}, count=50)
    worker.streams_trim()
    remaining = {entry_id for entry_id, _ in redis_client.xrange(QS)}
    assert set(all_ids[100:]) <= remaining

    worker._due["claim"] = float("inf")
    worker.run_once()  # reads 100 of the undelivered ones
    worker.streams_trim()
    assert set(all_ids[100:]) <= {entry_id for entry_id, _ in redis_client.xrange(QS)}

    worker.claim_idle_ms = 0
    worker._due.pop("claim")
    worker_drain(worker)
    worker.streams_trim()
    totals_assert(signals[100:])
    assert redis_client.xlen(QS) < 300


def test_group_is_recreated_when_redis_lost_its_data(db, redis_client, worker):
    entities = entities_make(5)
    first, second = signals_make(entities, 100, seed=1), signals_make(entities, 100, seed=2)
    signals_xadd(redis_client, first)
    worker.groups_ensure()
    worker_drain(worker)
    redis_client.flushdb()  # what a restarted Redis without persistence looks like
    signals_xadd(redis_client, second)
    worker_drain(worker)
    totals_assert(first + second)


def test_heartbeat_describes_the_worker_and_expires(db, redis_client, worker):
    entities = entities_make(2)
    signals_xadd(redis_client, signals_make(entities, 10))
    worker.groups_ensure()
    worker_drain(worker)
    worker.heartbeat()
    beat = redis_client.hgetall(heartbeat_key("test-worker"))
    assert beat["consumer"] == "test-worker"
    assert beat["events_processed"] == "10"
    assert int(beat["pid"]) > 0 and beat["host"]
    assert datetime.fromisoformat(beat["started_at"]) <= datetime.fromisoformat(beat["last_batch_at"])
    assert 0 < redis_client.ttl(heartbeat_key("test-worker")) <= HEARTBEAT_TTL_SECONDS


def test_inbox_prune_deletes_only_ids_older_than_the_retention(db, settings):
    settings.INBOX_RETENTION_DAYS = 7
    now = datetime.now(UTC)
    old = [ProcessedEvent(event_id=uuid.uuid4(), processed_at=now - timedelta(days=8)) for _ in range(3)]
    recent = [ProcessedEvent(event_id=uuid.uuid4(), processed_at=now - timedelta(days=6)) for _ in range(2)]
    ProcessedEvent.objects.bulk_create(old + recent)
    assert inbox_prune() == 3
    assert set(ProcessedEvent.objects.values_list("event_id", flat=True)) == {e.event_id for e in recent}


@pytest.mark.django_db(transaction=True)
def test_an_entry_the_database_rejects_is_isolated_and_dead_lettered_while_the_rest_counts(redis_client, worker):
    good_entities, poisoned = entities_make(3)[:2], entities_make(1)[0]
    good = signals_make(good_entities, 40)
    bad = signals_make([poisoned], 3, seed=9)
    signals_xadd(redis_client, good[:20] + bad + good[20:])
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            CREATE FUNCTION test_poison() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.entity_id = '{poisoned.id}' THEN RAISE EXCEPTION 'entity % is poisoned', NEW.entity_id; END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER test_poison BEFORE UPDATE ON entities_entitydemand
                FOR EACH ROW EXECUTE FUNCTION test_poison();
            """
        )
    try:
        worker.groups_ensure()
        worker_drain(worker)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER test_poison ON entities_entitydemand; DROP FUNCTION test_poison();")

    totals_assert(good)
    letters = dead_letters(redis_client)
    assert sorted(letter["event_id"] for letter in letters) == sorted(str(signal.event_id) for signal in bad)
    assert all("rejected by the database: entity" in letter["dead_reason"] for letter in letters)
    assert redis_client.xpending(QS, GROUP)["pending"] == 0


def test_a_valid_entry_of_a_stream_without_a_handler_is_dead_lettered_not_dropped(redis_client):
    worker = StreamWorker(consumer="no-handler-worker", block_ms=50)
    worker.handlers = [handler for handler in worker.handlers if handler.stream != QS]
    signal = QuerySignal.new(entity_id=uuid.uuid4(), entity_type="person", query="q")
    batch = worker.entries_parse([Entry(QS, "1-0", signal.to_fields())])
    assert batch.items == {}
    assert [dead.reason for dead in batch.dead] == [f"no handler is registered for stream {QS!r}"]
