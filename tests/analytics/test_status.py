"""`GET /api/analytics/status/`: a real backlog in the real Redis, drained by a real worker; Redis stopped -> 503."""

from __future__ import annotations

import pytest
from django.conf import settings

from streams.events import timestamp_encode
from streams.worker import StreamWorker
from tests.streams.pipeline import entities_make, signals_make, signals_xadd, worker_drain

pytestmark = pytest.mark.django_db

STATUS = "/api/analytics/status/"
OLD_ENTRY_SECONDS = 90


@pytest.fixture
def worker(redis_client) -> StreamWorker:
    worker = StreamWorker(consumer="status-worker", block_ms=50, claim_idle_ms=3_600_000)
    yield worker
    worker.heartbeat_clear()


def backlog_publish(redis_client, count: int) -> list:
    """`count` signals on the stream, the first with an id (Redis's clock) OLD_ENTRY_SECONDS in the past."""
    signals = signals_make(entities_make(3), count, days=2)
    seconds, _ = redis_client.time()
    redis_client.xadd(
        settings.STREAM_QUERY_SIGNALS, signals[0].to_fields(), id=f"{(seconds - OLD_ENTRY_SECONDS) * 1000}-0"
    )
    signals_xadd(redis_client, signals[1:])
    return signals


def test_status_of_an_empty_pipeline(staff_client, redis_client):
    assert staff_client.get(STATUS).json() == {
        "last_counted_event_at": None,
        "entries_waiting": 0,
        "entries_undelivered": 0,
        "entries_pending": 0,
        "oldest_waiting_age_seconds": None,
        "live_workers": 0,
        "last_alert_evaluation": None,
    }


def test_a_backlog_without_a_worker_then_drained(staff_client, redis_client, worker):
    signals = backlog_publish(redis_client, 7)
    body = staff_client.get(STATUS).json()
    assert (body["entries_waiting"], body["entries_undelivered"], body["entries_pending"]) == (7, 7, 0)
    assert OLD_ENTRY_SECONDS <= body["oldest_waiting_age_seconds"] < OLD_ENTRY_SECONDS + 600
    assert (body["last_counted_event_at"], body["live_workers"]) == (None, 0)

    worker.groups_ensure()
    assert staff_client.get(STATUS).json()["entries_undelivered"] == 7  # the group starts at the stream's start
    worker_drain(worker)
    worker.heartbeat()
    body = staff_client.get(STATUS).json()
    assert (body["entries_waiting"], body["entries_undelivered"], body["entries_pending"]) == (0, 0, 0)
    assert body["oldest_waiting_age_seconds"] is None
    assert body["last_counted_event_at"] == timestamp_encode(max(s.timestamp for s in signals))
    assert body["live_workers"] == 1
    assert body["last_alert_evaluation"] is not None  # the worker's housekeeping evaluated the alert rules


def test_delivered_but_unacknowledged_entries_are_pending(staff_client, redis_client, worker):
    backlog_publish(redis_client, 5)
    worker.groups_ensure()
    # A consumer that reads two entries and dies before acknowledging them.
    redis_client.xreadgroup(settings.STREAM_CONSUMER_GROUP, "crashed", {settings.STREAM_QUERY_SIGNALS: ">"}, count=2)
    body = staff_client.get(STATUS).json()
    assert (body["entries_waiting"], body["entries_undelivered"], body["entries_pending"]) == (5, 3, 2)
    assert body["oldest_waiting_age_seconds"] >= OLD_ENTRY_SECONDS  # the oldest is the pending old entry


def test_status_follows_the_demand_api_access_rules(api_client, user_client, redis_client, settings):
    assert api_client.get(STATUS).status_code == 401
    assert user_client.get(STATUS).status_code == 403
    settings.ANALYTICS_STAFF_ONLY = False
    assert user_client.get(STATUS).status_code == 200


def test_status_is_503_json_with_retry_after_when_redis_is_stopped(staff_client, private_redis):
    private_redis.stop()
    response = staff_client.get(STATUS)
    assert response.status_code == 503
    assert response["Retry-After"] == str(settings.SERVICE_RETRY_AFTER_SECONDS)
    assert "Redis is unreachable" in response.json()["error"]
