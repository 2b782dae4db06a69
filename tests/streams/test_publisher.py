"""The publisher: one round trip to Redis, or the outbox when Redis is down, hung or recently failed."""

from __future__ import annotations

import json
import os
import signal
import uuid

import pytest
import redis
from django.conf import settings
from django.core.management import CommandError, call_command

from streams.events import MAX_ENTITY_IDS, QuerySignal, UpdateRequest
from streams.models import OutboxEvent
from streams.publisher import (
    PublishOutcome,
    query_signals_publish,
    redis_circuit,
    update_request_publish,
    update_requests_publish,
)
from streams.redis import redis_client
from streams.services import outbox_events_add, outbox_relay
from streams.worker import StreamWorker
from tests.streams.pipeline import entities_make, signals_make, totals_assert, worker_drain

QS = settings.STREAM_QUERY_SIGNALS


@pytest.fixture(autouse=True)
def circuit_closed():
    redis_circuit.reset()
    yield
    redis_circuit.reset()


def test_signals_are_published_in_the_wire_format(db, redis_client):
    entity = entities_make(1)[0]
    signals = [QuerySignal.new(entity_id=entity.id, entity_type="person", query=f"q{i}", user_id="7") for i in range(3)]
    assert query_signals_publish(signals=signals) == PublishOutcome(published=3, outboxed=0)
    request = UpdateRequest.new(entity_ids=[entity.id], operation="refresh", source="admin")
    assert update_request_publish(request=request) == PublishOutcome(published=1, outboxed=0)

    assert [fields for _id, fields in redis_client.xrange(QS)] == [signal.to_fields() for signal in signals]
    assert [fields for _id, fields in redis_client.xrange(settings.STREAM_UPDATE_REQUESTS)] == [request.to_fields()]
    assert not OutboxEvent.objects.exists()


def test_redis_stopped_during_publishing_outbox_relayed_later_and_counted_once(db, private_redis, settings):
    settings.REDIS_PUBLISH_RETRY_SECONDS = 0
    entities = entities_make(10)
    signals = signals_make(entities, 60)
    before, during = signals[:20], signals[20:]
    for start in range(0, 20, 5):
        assert query_signals_publish(signals=before[start : start + 5]).published == 5

    private_redis.kill()
    outcomes = [query_signals_publish(signals=during[start : start + 5]) for start in range(0, 40, 5)]
    assert all(outcome == PublishOutcome(published=0, outboxed=5) for outcome in outcomes)
    # An answer whose publish timed out after Redis took it sends the same events to the outbox too.
    outbox_events_add(entries=[(QS, signal.to_fields()) for signal in before[:10]])
    assert sorted(OutboxEvent.objects.values_list("fields__event_id", flat=True)) == sorted(
        str(signal.event_id) for signal in during + before[:10]
    )

    worker = StreamWorker(consumer="w", batch_size=25, block_ms=10)
    with pytest.raises(redis.ConnectionError):
        worker.run_once()
    assert OutboxEvent.objects.count() == 50  # nothing lost while Redis is away

    private_redis.start()  # back, and empty: the 20 published before the crash are gone from Redis
    worker.groups_ensure()
    # Those 20 are published again (as a replay would); the outbox holds 10 of them a second time.
    assert query_signals_publish(signals=before).published == 20
    worker_drain(worker)
    assert not OutboxEvent.objects.exists()
    assert worker.stats.outbox_relayed == 50
    totals_assert(signals)
    assert worker.stats.duplicates_skipped == 10


def test_a_hung_redis_costs_at_most_the_timeout_then_is_skipped_for_a_while(db, private_redis, settings):
    settings.REDIS_PUBLISH_TIMEOUT = 0.2
    settings.REDIS_PUBLISH_RETRY_SECONDS = 60
    entity = entities_make(1)[0]

    def publish() -> PublishOutcome:
        return query_signals_publish(signals=[QuerySignal.new(entity_id=entity.id, entity_type="person", query="q")])

    assert publish().published == 1
    os.kill(private_redis.process.pid, signal.SIGSTOP)
    try:
        assert publish() == PublishOutcome(published=0, outboxed=1)  # returns after the socket timeout
    finally:
        os.kill(private_redis.process.pid, signal.SIGCONT)
    # Redis answers again, but the circuit stays open: no request waits on it until the retry time.
    assert publish() == PublishOutcome(published=0, outboxed=1)
    redis_circuit.reset()
    assert publish().published == 1
    assert OutboxEvent.objects.count() == 2


def test_relay_outbox_command(db, redis_client):
    entity = entities_make(1)[0]
    signals = [QuerySignal.new(entity_id=entity.id, entity_type="person", query="q") for _ in range(3)]
    outbox_events_add(entries=[(QS, signal.to_fields()) for signal in signals])
    call_command("relay_outbox")
    assert [fields["event_id"] for _id, fields in redis_client.xrange(QS)] == [str(s.event_id) for s in signals]
    assert not OutboxEvent.objects.exists()
    assert outbox_relay() == 0


def test_relay_outbox_keeps_the_rows_and_counts_attempts_when_redis_is_down(db, private_redis):
    entity = entities_make(1)[0]
    outbox_events_add(entries=[(QS, QuerySignal.new(entity_id=entity.id, entity_type="person", query="q").to_fields())])
    private_redis.kill()
    redis_client().connection_pool.disconnect()
    with pytest.raises(CommandError, match="outbox is kept"):
        call_command("relay_outbox")
    assert OutboxEvent.objects.get().attempts == 1


def test_update_requests_are_published_in_chunks_of_max_entity_ids_in_order(db, redis_client):
    entity_ids = [uuid.uuid4() for _ in range(2 * MAX_ENTITY_IDS + 5)]
    outcome = update_requests_publish(entity_ids=entity_ids, operation="reindex", source="test")
    assert (outcome.requests, outcome.outboxed, outcome.lost) == (3, 0, False)
    entries = redis_client.xrange(settings.STREAM_UPDATE_REQUESTS)
    assert [entry["event_id"] for _id, entry in entries] == [str(event_id) for event_id in outcome.event_ids]
    published = [uuid.UUID(value) for _id, entry in entries for value in json.loads(entry["entity_ids"])]
    assert published == entity_ids
    assert {entry["operation"] for _id, entry in entries} == {"reindex"}
