"""The refresh queue (analytics.selectors.refresh_queue) against its written definition, on fixed data.

The expected priorities are computed here from the formula in docs/analytics.md (not by the code under
test): demand = min(1, ln(1 + recent) / ln(1 + 100)), freshness = min(1, max(0, age - 30) / 90),
trending = min(1, max(0, trend_7d) / 5), priority = 0.5 demand + 0.3 freshness + 0.2 trending; critical:
recent >= 10 and age >= 30 days.
"""

from __future__ import annotations

import csv
import io
import math
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from analytics.definitions import hour_floor
from analytics.demand import demand_windows_roll
from analytics.models import RefreshQueueEntry
from analytics.selectors import REFRESH_QUEUE_PAGE_MAX, refresh_queue
from analytics.services import refresh_queue_snapshot_build
from entities.models import Entity, EntityDemand, EntityType, RefreshRequest
from streams.handlers import chores
from tests.analytics.helpers import NOW, hours_ago, queries_add
from tests.analytics.test_exports import csv_text
from tests.entities.factories import EntityFactory

pytestmark = pytest.mark.django_db


def expected_priority(*, recent: int, age_days: float, current_7d: int, previous_7d: int) -> float:
    trend = (current_7d - previous_7d) / math.sqrt(previous_7d + 1)
    demand = min(1.0, math.log(1 + recent) / math.log(1 + 100))
    freshness = min(1.0, max(0.0, age_days - 30) / 90)
    trending = min(1.0, max(0.0, trend) / 5)
    return 0.5 * demand + 0.3 * freshness + 0.2 * trending


# name: (age in days, [(hours ago, queries)], extra all-time demand_score beyond the buckets, entity_type)
QUEUE_DATA = {
    # Hot and stale: 40 recent queries, 25 of them this week (rising), 100 days old. Critical.
    "hot": (100.0, [(2, 15), (50, 10), (200, 10), (400, 5)], 0, EntityType.PERSON),
    # Very old, little recent demand, a long history: freshness dominates. Not critical (recent 3).
    "ancient": (400.0, [(300, 3)], 50, EntityType.COMPANY),
    # Just past the threshold, 12 recent queries all this week: critical (recent >= 10, age >= 30).
    "fresh_critical": (31.5, [(1, 6), (30, 6)], 0, EntityType.PERSON),
    # Rising fast but with 9 recent queries: not critical.
    "riser": (60.0, [(3, 9)], 0, EntityType.PROJECT),
    # Old demand only (outside 30 days): recent 0, trend 0.
    "faded": (90.0, [(24 * 45, 20)], 0, EntityType.PERSON),
    # Not in the queue: too recent (20 days), or too little demand (score 4).
    "recent_content": (20.0, [(2, 30)], 0, EntityType.PERSON),
    "little_demand": (200.0, [(2, 4)], 0, EntityType.PERSON),
}


def _window(buckets, first: int, last: int) -> int:
    """Queries in the buckets of hours h0 - last .. h0 - first (hours ago, inclusive)."""
    return sum(count for ago, count in buckets if first <= ago <= last)


@pytest.fixture
def queue_data():
    entities = {}
    for name, (age, buckets, extra, kind) in QUEUE_DATA.items():
        entity = EntityFactory(name=name, entity_type=kind, updated_at=NOW - timedelta(days=age))
        for ago, count in buckets:
            queries_add(entity, hours_ago(ago), count)
        if extra:
            EntityDemand.objects.filter(pk=entity.pk).update(demand_score=extra + sum(c for _a, c in buckets))
        entities[name] = entity
    return entities


def expected_rows(entities: dict) -> list[dict]:
    rows = []
    for name, (age, buckets, extra, kind) in QUEUE_DATA.items():
        score = extra + sum(count for _ago, count in buckets)
        if age <= 30 or score < 5:
            continue
        recent = _window(buckets, 0, 719)
        rows.append(
            {
                "id": entities[name].pk,
                "name": name,
                "entity_type": kind,
                "priority": expected_priority(
                    recent=recent,
                    age_days=age,
                    current_7d=_window(buckets, 0, 167),
                    previous_7d=_window(buckets, 168, 335),
                ),
                "critical": recent >= 10 and age >= 30,
                "recent_demand": recent,
                "demand_score": score,
                "days_since_update": math.floor(age),
            }
        )
    return sorted(rows, key=lambda row: (not row["critical"], -row["priority"], -row["demand_score"], row["id"]))


def test_queue_order_follows_the_written_definition(queue_data):
    queue = refresh_queue(limit=None, now=NOW)
    expected = expected_rows(queue_data)
    assert [row["name"] for row in queue["entities"]] == [row["name"] for row in expected]
    assert [row["name"] for row in expected][:2] == ["hot", "fresh_critical"]  # the data exercises the tier
    for got, want in zip(queue["entities"], expected, strict=True):
        assert got["priority"] == pytest.approx(want["priority"], abs=1e-9), want["name"]
        for key in ("critical", "recent_demand", "demand_score", "days_since_update", "entity_type"):
            assert got[key] == want[key], (want["name"], key)
        assert got["refresh_requested_at"] is None
    assert queue["total"] == len(expected) == 5
    assert queue["definition"]["weight_demand"] == 0.5
    assert queue["definition"]["critical_min_demand"] == 10


def test_critical_filter_limit_and_type(queue_data):
    critical = refresh_queue(critical=True, now=NOW)
    assert [row["name"] for row in critical["entities"]] == ["hot", "fresh_critical"]
    assert critical["total"] == 2
    rest = refresh_queue(critical=False, limit=2, now=NOW)
    assert [row["name"] for row in rest["entities"]] == [row["name"] for row in expected_rows(queue_data)][2:4]
    assert rest["total"] == 3 and rest["limit"] == 2
    people = refresh_queue(entity_type="person", now=NOW)
    assert {row["name"] for row in people["entities"]} == {"hot", "fresh_critical", "faded"}


def test_settings_move_the_weights_and_the_tier(queue_data, settings):
    settings.REFRESH_WEIGHT_DEMAND, settings.REFRESH_WEIGHT_TREND = 0.0, 0.0
    settings.REFRESH_CRITICAL_MIN_DEMAND = 1_000
    names = [row["name"] for row in refresh_queue(now=NOW)["entities"]]
    # Freshness alone: oldest first (faded and hot tie on neither: 90 vs 100 days).
    assert names == ["ancient", "hot", "faded", "riser", "fresh_critical"]


def test_an_open_recent_request_marks_the_entity_requested(queue_data, settings):
    hot, riser, faded = queue_data["hot"], queue_data["riser"], queue_data["faded"]
    RefreshRequest.objects.create(entity=hot, event_id=uuid.uuid4(), requested_at=NOW - timedelta(hours=5))
    # Older than REFRESH_REQUEST_REPEAT_HOURS (168): new work again.
    RefreshRequest.objects.create(entity=riser, event_id=uuid.uuid4(), requested_at=NOW - timedelta(hours=200))
    # Done (the content changed after it): not open. It is dated before the entity's updated_at, so the
    # database closes it as it is recorded.
    RefreshRequest.objects.create(entity=faded, event_id=uuid.uuid4(), requested_at=NOW - timedelta(days=91))
    assert RefreshRequest.objects.get(entity=faded).done_at == faded.updated_at
    rows = {row["name"]: row for row in refresh_queue(limit=None, now=NOW)["entities"]}
    assert rows["hot"]["refresh_requested_at"] == NOW - timedelta(hours=5)
    assert rows["riser"]["refresh_requested_at"] is None
    assert rows["faded"]["refresh_requested_at"] is None


def test_same_queue_from_the_rolled_windows(queue_data):
    """The worker's rolled windows (the usual, fast path) give the queue computed from the buckets."""
    from_buckets = refresh_queue(limit=None, now=NOW)
    demand_windows_roll(now=NOW)
    assert refresh_queue(limit=None, now=NOW) == from_buckets


# -- the HTTP API -------------------------------------------------------------------------------------------

QUEUE_URL = "/api/analytics/demand/refresh-queue/"


@pytest.fixture
def live_queue():
    """The queue's data relative to the real clock (the API has no pinned `now`)."""
    now = timezone.now()
    entities = {}
    for name, (age, buckets, extra, kind) in QUEUE_DATA.items():
        entity = EntityFactory(name=name, entity_type=kind, updated_at=now - timedelta(days=age))
        for ago, count in buckets:
            queries_add(entity, hour_floor(now) - timedelta(hours=ago), count)
        if extra:
            EntityDemand.objects.filter(pk=entity.pk).update(demand_score=extra + sum(c for _a, c in buckets))
        entities[name] = entity
    return entities


def test_api_answers_the_selectors_queue(staff_client, live_queue):
    response = staff_client.get(QUEUE_URL, {"limit": 3})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"entities", "total", "limit", "definition", "as_of"}
    assert (body["total"], body["limit"]) == (5, 3)
    assert [row["name"] for row in body["entities"]] == [row["name"] for row in expected_rows(live_queue)][:3]
    assert list(body["entities"][0]) == [
        "id", "name", "entity_type", "priority", "critical", "demand_score", "recent_demand", "days_since_update",
        "trend_score", "last_updated_at", "refresh_requested_at",
    ]  # fmt: skip
    assert body["definition"]["weight_freshness"] == 0.3
    assert body["definition"]["requested_hours"] == 168
    critical = staff_client.get(QUEUE_URL, {"critical": "true"}).json()
    assert [row["name"] for row in critical["entities"]] == ["hot", "fresh_critical"]
    rest = staff_client.get(QUEUE_URL, {"critical": "false", "entity_type": "person"}).json()
    assert [row["name"] for row in rest["entities"]] == ["faded"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"entity_type": "wizard"}, "entity_type"),
        ({"critical": "maybe"}, "critical"),
        ({"format": "xml"}, "format"),
    ],
)
def test_api_bad_parameters_are_400_json(staff_client, params, field):
    response = staff_client.get(QUEUE_URL, params)
    assert response.status_code == 400
    assert field in response.json()["error"]


def test_api_access(api_client, user_client):
    assert api_client.get(QUEUE_URL).status_code == 401
    assert user_client.get(QUEUE_URL).status_code == 403


@pytest.mark.parametrize("params", [{}, {"limit": 2, "critical": "false"}, {"entity_type": "person"}])
def test_csv_rows_are_the_json_rows(staff_client, live_queue, params):
    expected = staff_client.get(QUEUE_URL, params).json()["entities"]
    response = staff_client.get(QUEUE_URL, {**params, "format": "csv"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"] == 'attachment; filename="analytics-demand-refresh-queue.csv"'
    header, *body = list(csv.reader(io.StringIO(response.content.decode())))
    assert expected
    assert header == list(expected[0])
    # The two requests are moments apart, and freshness grows with the clock: priority is compared to 1e-6.
    assert [float(row[header.index("priority")]) for row in body] == pytest.approx(
        [item["priority"] for item in expected], abs=1e-6
    )
    exact = [key for key in header if key != "priority"]
    assert [[row[header.index(key)] for key in exact] for row in body] == [
        [csv_text(item[key]) for key in exact] for item in expected
    ]


# -- the worker's snapshot ----------------------------------------------------------------------------------


def test_the_snapshot_pages_are_the_live_queue_at_its_time(live_queue):
    scored_at = timezone.now()
    assert refresh_queue_snapshot_build(now=scored_at) == 5
    RefreshRequest.objects.create(entity=live_queue["riser"], event_id=uuid.uuid4(), requested_at=scored_at)
    for params in ({}, {"limit": 2}, {"critical": True}, {"critical": False, "entity_type": "person"}):
        from_snapshot = refresh_queue(**params)
        assert from_snapshot["as_of"] == scored_at
        assert from_snapshot == refresh_queue(**params, now=scored_at), params
    # Requested flags are read now, not from the snapshot.
    rows = {row["name"]: row for row in refresh_queue()["entities"]}
    assert rows["riser"]["refresh_requested_at"] == scored_at


def test_the_snapshot_is_not_used_when_old_or_scored_otherwise(live_queue, settings):
    refresh_queue_snapshot_build(now=timezone.now() - timedelta(seconds=121))
    assert timezone.now() - refresh_queue()["as_of"] < timedelta(seconds=5)  # two 60 s intervals: too old
    scored_at = timezone.now()
    refresh_queue_snapshot_build(now=scored_at)
    assert refresh_queue()["as_of"] == scored_at
    settings.REFRESH_WEIGHT_TREND = 0.25
    assert refresh_queue()["as_of"] != scored_at  # another definition: scored now
    settings.REFRESH_WEIGHT_TREND = 0.2
    settings.REFRESH_QUEUE_SNAPSHOT_SECONDS = 0
    assert refresh_queue()["as_of"] != scored_at


def test_the_chore_is_registered_and_rebuilds(live_queue):
    chore = next(chore for chore in chores() if chore.name == "refresh_queue_snapshot")
    chore.run()
    assert RefreshQueueEntry.objects.count() == 5
    EntityFactory(name="new", updated_at=timezone.now() - timedelta(days=50))
    Entity.objects.filter(name="hot").update(updated_at=timezone.now())  # refreshed: leaves the queue
    chore.run()
    assert set(RefreshQueueEntry.objects.values_list("entity_id", flat=True)) == {
        live_queue[name].pk for name in ("ancient", "fresh_critical", "riser", "faded")
    }


def test_the_snapshot_keeps_the_first_500_of_each_part_and_counts_all(db):
    """510 queued people: 500 kept, the total counts 510, and the longest page equals the live one."""
    now = timezone.now()
    Entity.objects.bulk_create(
        [
            Entity(name=f"p{index:03d}", entity_type="person", updated_at=now - timedelta(days=31, hours=index))
            for index in range(510)
        ]
    )
    EntityDemand.objects.update(demand_score=7, query_count=7)
    assert refresh_queue_snapshot_build(now=now) == 510
    assert RefreshQueueEntry.objects.count() == REFRESH_QUEUE_PAGE_MAX == 500
    page = refresh_queue(limit=REFRESH_QUEUE_PAGE_MAX)
    assert (page["as_of"], page["total"], len(page["entities"])) == (now, 510, 500)
    assert page == refresh_queue(limit=REFRESH_QUEUE_PAGE_MAX, now=now)
    # The oldest content first (freshness alone differs); the 10 youngest are left out of the snapshot.
    assert page["entities"][0]["name"] == "p509" and page["entities"][-1]["name"] == "p010"
