"""The operators' endpoints under /api/events/: numbers against a known state, access rules, bad input."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

import pytest
from django.conf import settings

from entities.models import RefreshRequest
from streams.events import QuerySignal, UpdateRequest, dead_letter_fields, timestamp_encode
from streams.models import OutboxEvent
from streams.publisher import redis_circuit
from streams.worker import StreamWorker
from tests.entities.factories import EntityFactory
from tests.streams.pipeline import worker_drain

pytestmark = pytest.mark.django_db

INFO = "/api/events/streams/info"
UPDATE = "/api/events/update-request"
DEAD = "/api/events/dead-letter"
REPLAY = "/api/events/dead-letter/replay"


def _dead_letter_add(client, fields: dict[str, str], *, reason: str, source: str | None = None) -> str:
    """An entry as the worker writes it to the dead-letter stream."""
    return client.xadd(
        settings.STREAM_DEAD_LETTER,
        dead_letter_fields(
            fields=fields,
            reason=reason,
            stream=source or settings.STREAM_QUERY_SIGNALS,
            entry_id="1-0",
            deliveries=6,
            dead_at=datetime(2026, 11, 30, tzinfo=UTC),
        ),
    )


@pytest.fixture
def worker(redis_client) -> StreamWorker:
    worker = StreamWorker(consumer="test-worker", block_ms=50, claim_idle_ms=3_600_000)
    worker.groups_ensure()
    return worker


# -- access ------------------------------------------------------------------------------------------------

ENDPOINTS = [("get", INFO, None), ("post", UPDATE, {}), ("get", DEAD, None), ("post", REPLAY, {})]


@pytest.mark.parametrize(("method", "url", "body"), ENDPOINTS)
def test_anonymous_gets_401(api_client, redis_client, method, url, body):
    response = getattr(api_client, method)(url, body, format="json")
    assert response.status_code == 401
    assert "error" in response.json()


@pytest.mark.parametrize(("method", "url", "body"), ENDPOINTS)
def test_non_staff_gets_403_even_when_analytics_are_open(user_client, redis_client, settings, method, url, body):
    settings.ANALYTICS_STAFF_ONLY = False
    response = getattr(user_client, method)(url, body, format="json")
    assert response.status_code == 403
    assert response.json()["error"] == "Only staff users may operate the event pipeline."


def test_staff_with_a_session_login_is_allowed(client, staff_user, redis_client):
    client.force_login(staff_user)
    assert client.get(INFO).status_code == 200


def test_endpoints_are_linked_from_the_api_root(api_client):
    links = api_client.get("/api/").json()
    assert links["events-streams-info"].endswith(INFO)
    assert links["events-dead-letter-replay"].endswith(REPLAY)


# -- streams info ------------------------------------------------------------------------------------------


def test_streams_info_numbers_match_a_known_state(staff_client, redis_client, worker):
    entity = EntityFactory()
    signals = [QuerySignal.new(entity_id=entity.id, entity_type=entity.entity_type, query="q") for _ in range(5)]
    ids = [redis_client.xadd(settings.STREAM_QUERY_SIGNALS, s.to_fields()) for s in signals]
    redis_client.xadd(
        settings.STREAM_UPDATE_REQUESTS,
        UpdateRequest.new(entity_ids=[entity.id], operation="refresh", source="t").to_fields(),
    )
    # Consumer "reader" takes 3 of the 5 signals and acknowledges one: 2 pending, 2 never delivered.
    before_read = time.monotonic()
    redis_client.xreadgroup(settings.STREAM_CONSUMER_GROUP, "reader", {settings.STREAM_QUERY_SIGNALS: ">"}, count=3)
    redis_client.xack(settings.STREAM_QUERY_SIGNALS, settings.STREAM_CONSUMER_GROUP, ids[0])
    _dead_letter_add(redis_client, signals[0].to_fields(), reason="r1")
    _dead_letter_add(redis_client, signals[1].to_fields(), reason="r2")
    OutboxEvent.objects.bulk_create(
        [OutboxEvent(stream=settings.STREAM_QUERY_SIGNALS, fields={"event_id": str(uuid.uuid4())}) for _ in range(3)]
    )
    worker.heartbeat()

    body = staff_client.get(INFO).json()

    signals_info, requests_info = body["streams"]
    assert signals_info["name"] == settings.STREAM_QUERY_SIGNALS
    assert signals_info["length"] == 5
    assert signals_info["first_entry_id"] == ids[0]
    assert signals_info["last_entry_id"] == ids[-1]
    group = signals_info["group"]
    assert group["name"] == settings.STREAM_CONSUMER_GROUP
    assert group["pending"] == 2
    assert group["lag"] == 2
    assert group["last_delivered_id"] == ids[2]
    assert [(c["name"], c["pending"]) for c in group["consumers"]] == [("reader", 2)]
    # Redis' milliseconds since "reader" read: within the time since just before that read (+1 for rounding).
    assert 0 <= group["consumers"][0]["idle_ms"] <= (time.monotonic() - before_read) * 1000 + 1

    assert requests_info["length"] == 1
    assert requests_info["group"]["pending"] == 0
    assert requests_info["group"]["lag"] == 1
    assert requests_info["group"]["consumers"] == []

    assert body["totals"] == {"length": 6, "pending": 2, "lag": 3}
    assert body["dead_letter"]["length"] == 2
    assert body["outbox"]["backlog"] == 3
    assert body["outbox"]["by_stream"] == {settings.STREAM_QUERY_SIGNALS: 3}
    [live] = body["workers"]
    assert live["consumer"] == "test-worker"
    assert live["events_processed"] == 0
    assert live["started_at"].endswith("Z")


def test_streams_info_of_an_empty_redis(staff_client, redis_client):
    body = staff_client.get(INFO).json()
    assert [s["exists"] for s in body["streams"]] == [False, False]
    assert body["totals"] == {"length": 0, "pending": 0, "lag": 0}
    assert body["dead_letter"]["length"] == 0
    assert body["workers"] == []


def test_streams_info_is_503_json_when_redis_is_stopped(staff_client, private_redis):
    private_redis.stop()
    response = staff_client.get(INFO)
    assert response.status_code == 503
    assert "Redis is unreachable" in response.json()["error"]


# -- update requests ---------------------------------------------------------------------------------------


def test_update_request_publishes_and_the_worker_records_the_refresh(staff_client, redis_client, worker):
    entities = EntityFactory.create_batch(3)
    ids = [str(e.id) for e in entities]
    response = staff_client.post(UPDATE, {"entity_ids": [*ids, ids[0]], "operation": "refresh"}, format="json")
    assert response.status_code == 202
    body = response.json()
    assert body["entity_count"] == 3
    assert body["delivery"] == "stream"
    [(_, fields)] = redis_client.xrange(settings.STREAM_UPDATE_REQUESTS)
    assert fields["event_id"] == body["event_id"]
    assert json.loads(fields["entity_ids"]) == ids
    assert fields["source"].startswith("api:")

    worker_drain(worker)
    assert set(RefreshRequest.objects.values_list("entity_id", "event_id")) == {
        (e.id, uuid.UUID(body["event_id"])) for e in entities
    }


def test_update_request_goes_to_the_outbox_when_redis_is_stopped(staff_client, private_redis):
    entity = EntityFactory()
    private_redis.stop()
    try:
        response = staff_client.post(UPDATE, {"entity_ids": [str(entity.id)], "operation": "reindex"}, format="json")
    finally:
        redis_circuit.reset()
    assert response.status_code == 202
    assert response.json()["delivery"] == "outbox"
    assert OutboxEvent.objects.get().fields["event_id"] == response.json()["event_id"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "entity_ids"),
        ({"entity_ids": [], "operation": "refresh"}, "entity_ids"),
        ({"entity_ids": ["not-a-uuid"], "operation": "refresh"}, "entity_ids"),
        ({"entity_ids": "abc", "operation": "refresh"}, "entity_ids"),
        ({"entity_ids": [str(uuid.uuid4())] * 1001, "operation": "refresh"}, "entity_ids"),
        ({"entity_ids": ["{id}"], "operation": "delete"}, "operation"),
        ({"entity_ids": ["{id}"]}, "operation"),
        ({"entity_ids": ["{id}"], "operation": "refresh", "source": "x" * 201}, "source"),
        ({"entity_ids": ["{id}", "00000000-0000-0000-0000-000000000001"], "operation": "refresh"}, "No entity"),
    ],
)
def test_update_request_rejects_bad_input(staff_client, redis_client, body, message):
    entity = EntityFactory()
    if "entity_ids" in body and isinstance(body["entity_ids"], list):
        body = {**body, "entity_ids": [i.replace("{id}", str(entity.id)) for i in body["entity_ids"]]}
    response = staff_client.post(UPDATE, body, format="json")
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert redis_client.xlen(settings.STREAM_UPDATE_REQUESTS) == 0


def test_update_request_rejects_a_non_json_body(staff_client, redis_client):
    response = staff_client.post(UPDATE, "{not json", content_type="application/json")
    assert response.status_code == 400
    assert "JSON" in response.json()["error"]


def test_update_request_accepts_1000_ids(staff_client, redis_client):
    entities = EntityFactory.create_batch(1000)
    response = staff_client.post(
        UPDATE, {"entity_ids": [str(e.id) for e in entities], "operation": "refresh"}, format="json"
    )
    assert response.status_code == 202
    assert response.json()["entity_count"] == 1000


# -- dead letters ------------------------------------------------------------------------------------------


def test_dead_letter_list_shows_reason_and_original_fields(staff_client, redis_client):
    entity = EntityFactory()
    signal = QuerySignal.new(entity_id=entity.id, entity_type=entity.entity_type, query="who")
    first = _dead_letter_add(redis_client, signal.to_fields(), reason="unknown entity_id")
    for n in range(3):
        _dead_letter_add(redis_client, {"event_id": str(uuid.uuid4()), "junk": str(n)}, reason="missing field")

    body = staff_client.get(DEAD, {"limit": 2}).json()
    assert body["total"] == 4
    assert body["count"] == 2
    entry = body["entries"][0]
    assert entry["id"] == first
    assert entry["reason"] == "unknown entity_id"
    assert entry["source_stream"] == settings.STREAM_QUERY_SIGNALS
    assert entry["event_id"] == str(signal.event_id)
    assert entry["fields"] == signal.to_fields()


@pytest.mark.parametrize("limit", ["0", "-1", "1001", "abc", "1.5"])
def test_dead_letter_list_rejects_a_bad_limit(staff_client, redis_client, limit):
    response = staff_client.get(DEAD, {"limit": limit})
    assert response.status_code == 400
    assert "limit" in response.json()["error"]


@pytest.mark.parametrize(
    "body",
    [{}, {"all": False}, {"ids": []}, {"ids": ["1-0"], "all": True}, {"ids": ["abc"]}, {"ids": "1-0"}, {"all": "x"}],
)
def test_replay_rejects_bad_input(staff_client, redis_client, body):
    response = staff_client.post(REPLAY, body, format="json")
    assert response.status_code == 400
    assert response.json()["error"]


def test_replay_counts_each_event_once(staff_client, redis_client, worker):
    entity = EntityFactory()
    counted = QuerySignal.new(entity_id=entity.id, entity_type=entity.entity_type, query="a")
    redis_client.xadd(settings.STREAM_QUERY_SIGNALS, counted.to_fields())
    worker_drain(worker)
    entity.demand.refresh_from_db()
    assert entity.demand.query_count == 1

    # A second copy of the counted event and a never-counted event both sit in the dead-letter stream.
    fresh = QuerySignal.new(entity_id=entity.id, entity_type=entity.entity_type, query="b")
    _dead_letter_add(redis_client, counted.to_fields(), reason="delivered 6 times")
    fresh_id = _dead_letter_add(redis_client, fresh.to_fields(), reason="delivered 6 times")

    response = staff_client.post(REPLAY, {"all": True}, format="json")
    assert response.json() == {"replayed": 1, "already_counted": 1, "not_found": [], "unknown_source": 0}
    assert redis_client.xlen(settings.STREAM_DEAD_LETTER) == 0
    _last_id, replayed_fields = redis_client.xrevrange(settings.STREAM_QUERY_SIGNALS, count=1)[0]
    assert replayed_fields == fresh.to_fields()  # original fields, same event id

    worker_drain(worker)
    entity.demand.refresh_from_db()
    assert entity.demand.query_count == 2
    assert entity.demand.demand_score == 2

    # Replaying the same dead letter again (by id) finds nothing: nothing is counted twice.
    again = staff_client.post(REPLAY, {"ids": [fresh_id]}, format="json").json()
    assert again == {"replayed": 0, "already_counted": 0, "not_found": [fresh_id], "unknown_source": 0}


def test_replay_of_chosen_ids_leaves_the_others(staff_client, redis_client, worker):
    entity = EntityFactory()
    signals = [QuerySignal.new(entity_id=entity.id, entity_type=entity.entity_type, query=str(n)) for n in range(3)]
    dead_ids = [_dead_letter_add(redis_client, s.to_fields(), reason="boom") for s in signals]
    response = staff_client.post(REPLAY, {"ids": dead_ids[:2]}, format="json").json()
    assert response["replayed"] == 2
    assert [entry_id for entry_id, _ in redis_client.xrange(settings.STREAM_DEAD_LETTER)] == [dead_ids[2]]
    worker_drain(worker)
    entity.demand.refresh_from_db()
    assert entity.demand.query_count == 2


def test_replay_filters_by_reason_and_skips_unknown_sources(staff_client, redis_client):
    stale = {"event_id": str(uuid.uuid4()), "timestamp": timestamp_encode(datetime.now(UTC))}
    _dead_letter_add(redis_client, stale, reason="unknown entity_id 1")
    _dead_letter_add(redis_client, stale, reason="missing field 'query'")
    _dead_letter_add(redis_client, stale, reason="unknown entity_id 2", source="somewhere:else")
    body = staff_client.post(REPLAY, {"all": True, "reason_contains": "UNKNOWN ENTITY"}, format="json").json()
    assert body["replayed"] == 1
    assert body["unknown_source"] == 1
    reasons = [f["dead_reason"] for _, f in redis_client.xrange(settings.STREAM_DEAD_LETTER)]
    assert reasons == ["missing field 'query'", "unknown entity_id 2"]
