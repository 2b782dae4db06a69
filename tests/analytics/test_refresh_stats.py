"""Refresh lifecycle numbers (analytics.selectors.refresh_stats and its endpoint), exact on fixed data, and
the refresh queue's admin page and dashboard section."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from django.utils import timezone

from analytics.selectors import refresh_stats
from entities.models import Entity, EntityDemand, RefreshRequest
from entities.retrieval import SearchHit
from entities.services import answer_record_create
from tests.analytics.helpers import NOW
from tests.analytics.test_exports import csv_text
from tests.entities.factories import EntityFactory

pytestmark = pytest.mark.django_db


def _request(entity: Entity, *, requested_hours_ago: float, done_hours_after: float | None) -> RefreshRequest:
    """A request made at NOW - requested_hours_ago; done when the entity's content changes that many hours later."""
    requested_at = NOW - timedelta(hours=requested_hours_ago)
    request = RefreshRequest.objects.create(entity=entity, event_id=uuid.uuid4(), requested_at=requested_at)
    if done_hours_after is not None:
        Entity.objects.filter(pk=entity.pk).update(updated_at=requested_at + timedelta(hours=done_hours_after))
    return request


def _answer(asked_at, *hits: tuple[Entity, str]) -> None:
    answer_record_create(
        question="who?",
        hits=[
            SearchHit(id=e.pk, name=e.name, entity_type=e.entity_type, data={}, score=1.0, role=role, rank=rank)
            for rank, (e, role) in enumerate(hits, start=1)
        ],
        user_id=None,
        latency_ms=1.0,
        composer="extractive",
        asked_at=asked_at,
    )


@pytest.fixture
def lifecycle():
    old = timedelta(days=200)
    entities = [EntityFactory(name=f"e{i}", updated_at=NOW - old) for i in range(6)]
    # Done in the last 7 days after 1 h, 2 h and 10 h; done 10 days ago (outside 7d, inside 30d) after 4 h.
    _request(entities[0], requested_hours_ago=20, done_hours_after=1)
    _request(entities[1], requested_hours_ago=30, done_hours_after=2)
    _request(entities[2], requested_hours_ago=40, done_hours_after=10)
    _request(entities[3], requested_hours_ago=240, done_hours_after=4)
    # Open: one recent, one older than REFRESH_REQUEST_REPEAT_HOURS (168 h).
    _request(entities[4], requested_hours_ago=5, done_hours_after=None)
    _request(entities[5], requested_hours_ago=200, done_hours_after=None)
    return entities


def test_open_done_and_time_to_refresh_are_exact(lifecycle):
    week = refresh_stats(timeframe="7d", now=NOW)
    assert (week["open"], week["open_overdue"], week["done"]) == (2, 1, 3)
    # percentile_cont over [3600, 7200, 36000]: the median is the middle one; p90 at 0.9 * 2 = 1.8 positions.
    assert week["time_to_refresh_median_seconds"] == 7200
    assert week["time_to_refresh_p90_seconds"] == pytest.approx(7200 + 0.8 * (36000 - 7200))
    month = refresh_stats(timeframe="30d", now=NOW)
    assert month["done"] == 4
    assert month["time_to_refresh_median_seconds"] == pytest.approx((7200 + 14400) / 2)
    day = refresh_stats(timeframe="1d", now=NOW)  # done at NOW-19h only
    assert (day["done"], day["time_to_refresh_median_seconds"]) == (1, 3600)


def test_nothing_done_gives_null_times(db):
    stats = refresh_stats(timeframe="7d", now=NOW)
    assert (stats["done"], stats["time_to_refresh_median_seconds"], stats["time_to_refresh_p90_seconds"]) == (
        0,
        None,
        None,
    )
    assert (stats["answers"], stats["stale_answer_rate"]) == (0, None)


@pytest.fixture
def answers():
    """Stale (40 days old content) and fresh (5 days) entities, answered in various ways."""
    stale = EntityFactory(name="stale", updated_at=NOW - timedelta(days=40))
    fresh = EntityFactory(name="fresh", updated_at=NOW - timedelta(days=5))
    refreshed = EntityFactory(name="refreshed", updated_at=NOW - timedelta(days=50))
    hour = timedelta(hours=1)
    _answer(NOW - hour, (stale, "subject"))  # stale
    _answer(NOW - hour, (fresh, "subject"), (stale, "related"))  # a related stale entity does not count
    _answer(NOW - hour)  # nothing found
    _answer(NOW - hour, (stale, "subject"), (fresh, "subject"))  # stale, counted once
    ancient = EntityFactory(name="ancient", updated_at=NOW - timedelta(days=100))
    _answer(NOW - timedelta(days=10), (ancient, "subject"))  # stale (90 days old then), outside 7d
    # Served while 50 days old, refreshed since: it was a stale answer.
    _answer(NOW - 2 * hour, (refreshed, "subject"))
    Entity.objects.filter(pk=refreshed.pk).update(updated_at=NOW - hour)
    # Exactly at the threshold (30 days old when answered) is not stale, as in demand_stale_condition.
    edge = EntityFactory(name="edge", updated_at=NOW - 3 * hour - timedelta(days=30))
    _answer(NOW - 3 * hour, (edge, "subject"))


def test_stale_answer_rate_is_exact(answers):
    week = refresh_stats(timeframe="7d", now=NOW)
    assert (week["answers"], week["stale_answers"]) == (6, 3)
    assert week["stale_answer_rate"] == 0.5
    month = refresh_stats(timeframe="30d", now=NOW)
    assert (month["answers"], month["stale_answers"], month["stale_answer_rate"]) == (7, 4, 4 / 7)


def test_stale_threshold_follows_the_setting(answers, settings):
    settings.STALE_DAYS_SINCE_UPDATE = 45  # only "refreshed" (50 days old when answered) is stale now
    week = refresh_stats(timeframe="7d", now=NOW)
    assert (week["stale_answers"], week["stale_days_since_update"]) == (1, 45)


def test_refresh_stats_endpoint_and_its_one_row_csv(staff_client, user_client, lifecycle, answers):
    url = "/api/analytics/demand/refresh-stats/"
    body = staff_client.get(url, {"timeframe": "30d"}).json()
    assert body["timeframe"] == "30d"
    assert set(body) == {
        "timeframe", "open", "open_overdue", "done", "time_to_refresh_median_seconds", "time_to_refresh_p90_seconds",
        "answers", "stale_answers", "stale_answer_rate", "stale_days_since_update",
    }  # fmt: skip
    response = staff_client.get(url, {"timeframe": "30d", "format": "csv"})
    assert response["Content-Type"].startswith("text/csv")
    header, *rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert header == list(body)
    assert rows == [[csv_text(body[key]) for key in header]]
    bad = staff_client.get(url, {"timeframe": "2d"})
    assert bad.status_code == 400 and "timeframe" in bad.json()["error"]
    assert user_client.get(url).status_code == 403


# -- admin: the queue page and the dashboard ----------------------------------------------------------------

QUEUE_PAGE = "/admin/refresh-queue/"


@pytest.fixture
def queue_entities():
    now = timezone.now()
    entities = {
        name: EntityFactory(name=name, updated_at=now - timedelta(days=age))
        for name, age in (("older", 90), ("old", 60), ("requested", 70))
    }
    for entity in entities.values():
        EntityDemand.objects.filter(pk=entity.pk).update(demand_score=8, query_count=8)
    RefreshRequest.objects.create(
        entity=entities["requested"], event_id=uuid.uuid4(), requested_at=now - timedelta(hours=1)
    )
    return entities


def _staff_client(client, user, *, perm: bool):
    user.groups.add(Group.objects.get(name="Demand analysts"))
    if not perm:
        group = Group.objects.create(name="Readers")
        user.groups.clear()
        user.groups.add(group)
    client.force_login(user)
    return client


def test_queue_page_lists_the_queue_and_requests_in_bulk(client, staff_user, queue_entities, redis_client):
    client = _staff_client(client, staff_user, perm=True)
    response = client.get(QUEUE_PAGE)
    assert response.status_code == 200
    assert [row["name"] for row in response.context["queue"]["entities"]] == ["older", "requested", "old"]
    content = response.content.decode()
    assert "Request refresh of the selected entities" in content
    assert "?format=csv" in content

    ids = [str(queue_entities[name].pk) for name in ("older", "requested")]
    response = client.post(QUEUE_PAGE, {"entity_id": ids}, follow=True)
    assert response.status_code == 200
    messages = [str(m) for m in response.context["messages"]]
    assert messages == ["Requested a refresh of 1 entities; 1 skipped (requested already)."]
    published = [json.loads(f["entity_ids"]) for _, f in redis_client.xrange(settings.STREAM_UPDATE_REQUESTS)]
    assert published == [[ids[0]]]
    # The same selection again: "older" is claimed now, nothing more is published.
    client.post(QUEUE_PAGE, {"entity_id": ids})
    assert redis_client.xlen(settings.STREAM_UPDATE_REQUESTS) == 1


def test_queue_page_needs_the_request_permission_to_request(client, staff_user, queue_entities, redis_client):
    client = _staff_client(client, staff_user, perm=False)
    response = client.get(QUEUE_PAGE)
    assert response.status_code == 200
    assert "Request refresh of the selected entities" not in response.content.decode()
    assert client.post(QUEUE_PAGE, {"entity_id": [str(queue_entities["old"].pk)]}).status_code == 403
    assert redis_client.xlen(settings.STREAM_UPDATE_REQUESTS) == 0


def test_dashboard_shows_the_stale_answer_rate_and_links_the_queue(client, staff_user, queue_entities):
    stale = queue_entities["old"]
    _answer(timezone.now() - timedelta(hours=1), (stale, "subject"))
    _answer(timezone.now() - timedelta(hours=1))
    client.force_login(staff_user)
    content = client.get("/admin/demand-dashboard/").content.decode()
    assert 'id="refresh-stale-answer-rate">50%<' in content
    assert 'id="refresh-open">1<' in content
    assert f'href="{QUEUE_PAGE}"' in content
    assert "/api/analytics/demand/refresh-queue/?format=csv" in content
    assert f'href="{QUEUE_PAGE}"' in client.get("/admin/").content.decode()
