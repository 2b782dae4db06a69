"""Each analytics definition against hand-computed expectations, with the clock pinned (tests/analytics/helpers)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.db.models import F

from analytics.demand import demand_buckets_prune, demand_windows_roll
from analytics.models import DemandBucket, DemandWindow
from analytics.selectors import (
    demand_entity,
    demand_growth_rate,
    demand_query_frequency,
    demand_stale,
    demand_stats,
    demand_timeseries,
    demand_top,
    demand_trending,
    demand_trending_condition,
    demand_trending_count,
    demand_window_bounds,
    demand_windows,
)
from entities.models import Entity, EntityDemand, EntityType, RefreshRequest
from tests.analytics.helpers import H0, NOW, hours_ago, queries_add
from tests.entities.factories import EntityFactory

pytestmark = pytest.mark.django_db


def window(entity, timeframe, *, now=NOW):
    data = demand_windows(entity_id=entity.pk, now=now)[timeframe]
    return data["current_period_queries"], data["previous_period_queries"]


def test_window_bounds_are_whole_hours_ending_with_the_current_one():
    bounds = demand_window_bounds(timeframe="1d", now=NOW)
    assert bounds.current_last == H0  # 14:00, the hour NOW (14:37) is in
    assert bounds.current_first == H0 - timedelta(hours=23)  # 2026-11-19 15:00
    assert bounds.previous_last == H0 - timedelta(hours=24)  # 2026-11-19 14:00
    assert bounds.previous_first == H0 - timedelta(hours=47)  # 2026-11-18 15:00
    month = demand_window_bounds(timeframe="30d", now=NOW)
    assert (month.current_first, month.previous_last, month.previous_first) == (
        H0 - timedelta(hours=719),
        H0 - timedelta(hours=720),
        H0 - timedelta(hours=1439),
    )


@pytest.mark.parametrize(("timeframe", "hours"), [("1d", 24), ("7d", 168), ("30d", 720)])
def test_window_edges_first_and_last_hour_of_each_window(timeframe, hours):
    entity = EntityFactory()
    queries_add(entity, H0, 1)  # last hour of current
    queries_add(entity, hours_ago(hours - 1), 2)  # first hour of current
    queries_add(entity, hours_ago(hours), 4)  # last hour of previous
    queries_add(entity, hours_ago(2 * hours - 1), 8)  # first hour of previous
    queries_add(entity, hours_ago(2 * hours), 16)  # one hour before the previous window: outside
    queries_add(entity, H0 + timedelta(hours=1), 32)  # next hour: not yet in any window
    assert window(entity, timeframe) == (1 + 2, 4 + 8)


def test_windows_move_with_the_clock_hour_by_hour_and_by_jumps():
    entity = EntityFactory()
    queries_add(entity, hours_ago(23), 5)
    assert window(entity, "1d") == (5, 0)
    # One hour later the 5 queries are in the previous day's window.
    assert window(entity, "1d", now=NOW + timedelta(hours=1)) == (0, 5)
    # 24 hours after that they have left both 1d windows; the 7d window still holds them.
    later = NOW + timedelta(hours=25)
    assert window(entity, "1d", now=later) == (0, 0)
    assert window(entity, "7d", now=later) == (5, 0)
    # 60 days on nothing is left: the row is gone.
    assert window(entity, "30d", now=NOW + timedelta(days=60)) == (0, 0)
    assert not DemandWindow.objects.filter(pk=entity.pk).exists()
    # ...and back again (a roll in either direction is exact).
    assert window(entity, "1d", now=NOW) == (5, 0)


def test_late_and_out_of_order_events_count_in_the_window_of_their_own_hour():
    entity = EntityFactory()
    queries_add(entity, H0, 1)
    assert window(entity, "1d") == (1, 0)  # windows are now built for H0
    queries_add(entity, hours_ago(30), 3)  # late: an older hour, previous 1d window
    queries_add(entity, hours_ago(2), 2)  # out of order: earlier than the event before it
    queries_add(entity, hours_ago(200), 7)  # very late: previous 7d window only
    assert window(entity, "1d") == (3, 3)
    assert window(entity, "7d") == (6, 7)
    assert DemandBucket.objects.get(entity=entity, hour=H0).count == 1
    queries_add(entity, H0, 4)  # same hour again: the bucket adds up
    assert DemandBucket.objects.get(entity=entity, hour=H0).count == 5
    assert window(entity, "1d") == (7, 3)


def test_windows_equal_a_recount_from_the_buckets_through_many_rolls():
    """The rolled windows are exactly the hour-aligned definition, recounted here from a plain list."""
    entities = EntityFactory.create_batch(3)
    events = []  # (entity, hour, count)
    for step in range(60):
        entity = entities[step % 3]
        hour = hours_ago((step * 37) % 1500)
        queries_add(entity, hour, step % 4 + 1)
        events.append((entity, hour, step % 4 + 1))
        if step % 7 == 0:
            demand_windows(entity_id=entity.pk, now=NOW + timedelta(hours=step))  # roll between writes
    for offset_hours in (0, 1, 5, 23, 24, 25, 167, 168, 700, 719, 720, 1439, 1440, 3, 0):
        now = NOW + timedelta(hours=offset_hours)
        h0 = H0 + timedelta(hours=offset_hours)
        for entity in entities:
            for timeframe, hours in (("1d", 24), ("7d", 168), ("30d", 720)):
                span = [(h0 - hour) / timedelta(hours=1) for e, hour, _ in events if e == entity]
                counts = [count for e, _, count in events if e == entity]
                current = sum(c for age, c in zip(span, counts, strict=True) if 0 <= age < hours)
                previous = sum(c for age, c in zip(span, counts, strict=True) if hours <= age < 2 * hours)
                assert window(entity, timeframe, now=now) == (current, previous), (offset_hours, timeframe)


def test_trending_definition_growth_and_trend_score():
    rising = EntityFactory(name="Rising")  # 6 now, 3 before: growth 1.0, score 3/sqrt(4) = 1.5
    new = EntityFactory(name="New")  # 4 now, 0 before: growth null, score 4/sqrt(1) = 4.0
    flat = EntityFactory(name="Flat")  # 5 and 5: not rising
    few = EntityFactory(name="Few")  # 2 and 0: below TRENDING_MIN_QUERIES (3)
    just = EntityFactory(name="Just")  # 3 and 2: exactly the minimum, rising: score 1/sqrt(3)
    for entity, current, previous in ((rising, 6, 3), (new, 4, 0), (flat, 5, 5), (few, 2, 0), (just, 3, 2)):
        queries_add(entity, hours_ago(1), current)
        if previous:
            queries_add(entity, hours_ago(30), previous)
    rows = demand_trending(timeframe="1d", limit=10, now=NOW)
    assert [row["name"] for row in rows] == ["New", "Rising", "Just"]
    assert rows[0]["growth_rate"] is None
    assert rows[0]["trend_score"] == 4.0
    assert rows[1]["growth_rate"] == 1.0
    assert rows[1]["trend_score"] == 1.5
    assert rows[2]["trend_score"] == pytest.approx(1 / 3**0.5)
    assert (rows[2]["current_period_queries"], rows[2]["previous_period_queries"]) == (3, 2)
    assert demand_trending_count(timeframe="1d", now=NOW) == 3
    assert demand_trending(timeframe="1d", limit=2, now=NOW)[-1]["name"] == "Rising"
    assert demand_growth_rate(current=1, previous=4) == -0.75


def test_trending_ties_with_previous_counts():
    small = EntityFactory(name="Aardvark")
    big = EntityFactory(name="Zebra")
    delta = EntityFactory(name="Delta")
    charlie = EntityFactory(name="Charlie")
    for entity, current, previous in ((small, 4, 0), (big, 11, 3), (delta, 5, 1), (charlie, 5, 1)):
        queries_add(entity, H0, current)
        if previous:
            queries_add(entity, hours_ago(24), previous)
    rows = demand_trending(timeframe="1d", now=NOW)
    # Zebra 8/2 = 4.0 and Aardvark 4/1 = 4.0 tie on score: current 11 > 4. Charlie and Delta: 4/sqrt(2).
    assert [row["name"] for row in rows] == ["Zebra", "Aardvark", "Charlie", "Delta"]
    assert [row["trend_score"] for row in rows[:2]] == [4.0, 4.0]


@pytest.mark.parametrize(
    ("count", "frequency"),
    [
        (0, "never"),
        (1, "low"),
        (10, "low"),
        (11, "medium"),
        (50, "medium"),
        (51, "high"),
        (100, "high"),
        (101, "very_high"),
        (5000, "very_high"),
    ],
)
def test_query_frequency_boundaries(count, frequency):
    assert demand_query_frequency(count) == frequency
    entity = EntityFactory()
    EntityDemand.objects.filter(pk=entity.pk).update(query_count=F("query_count") + count)
    assert demand_entity(entity=entity, now=NOW)["query_frequency"] == frequency


def test_stale_boundaries_exactly_30_days_and_exactly_score_5():
    def make(name, score, age):
        entity = EntityFactory(name=name, updated_at=NOW - age)
        EntityDemand.objects.filter(pk=entity.pk).update(demand_score=F("demand_score") + score)
        return entity

    day30 = timedelta(days=30)
    make("score5-older", 5, day30 + timedelta(seconds=1))  # stale
    make("score4-older", 4, day30 + timedelta(days=10))  # score too low
    make("score9-exactly30", 9, day30)  # exactly 30 days: not older than 30 days
    make("score7-older", 7, timedelta(days=45))  # stale, more demand
    rows = demand_stale(now=NOW)
    assert [row["name"] for row in rows] == ["score7-older", "score5-older"]
    assert [row["days_since_update"] for row in rows] == [45, 30]
    assert rows[0]["refresh_requested_at"] is None
    assert demand_stats(now=NOW)["needs_update"] == 2
    flags = {row["name"]: row["needs_update"] for row in demand_top(now=NOW)}
    assert flags == {"score9-exactly30": False, "score7-older": True, "score5-older": True, "score4-older": False}
    # Other criteria move the boundaries.
    assert [row["name"] for row in demand_stale(now=NOW, min_demand_score=4, days_since_update=40)] == ["score7-older"]
    assert len(demand_stale(now=NOW, min_demand_score=0, days_since_update=0)) == 4


def test_stale_shows_the_latest_refresh_request():
    entity = EntityFactory(updated_at=NOW - timedelta(days=90))
    EntityDemand.objects.filter(pk=entity.pk).update(demand_score=F("demand_score") + 10)
    for when in (NOW - timedelta(days=2), NOW - timedelta(hours=3), NOW - timedelta(days=9)):
        RefreshRequest.objects.create(entity=entity, event_id=uuid.uuid4(), source="test", requested_at=when)
    (row,) = demand_stale(now=NOW)
    assert row["refresh_requested_at"] == NOW - timedelta(hours=3)


def test_top_orders_by_score_then_query_count_then_name_and_filters():
    specs = [("b", 10, 3, EntityType.PERSON), ("a", 10, 3, EntityType.COMPANY), ("c", 10, 7, EntityType.PERSON)]
    specs += [("d", 20, 1, EntityType.PERSON), ("e", 0, 0, EntityType.PERSON)]
    for name, score, count, kind in specs:
        entity = EntityFactory(name=name, entity_type=kind)
        EntityDemand.objects.filter(pk=entity.pk).update(
            demand_score=F("demand_score") + score, query_count=F("query_count") + count
        )
    assert [row["name"] for row in demand_top(now=NOW)] == ["d", "c", "a", "b", "e"]
    assert [row["name"] for row in demand_top(limit=2, offset=1, now=NOW)] == ["c", "a"]
    assert [row["name"] for row in demand_top(entity_type="person", min_score=10, now=NOW)] == ["d", "c", "b"]


def test_stats_totals():
    people = EntityFactory.create_batch(2, entity_type=EntityType.PERSON)
    company = EntityFactory(entity_type=EntityType.COMPANY)
    EntityFactory(entity_type=EntityType.DEAL)  # no demand
    queries_add(people[0], H0, 4)
    queries_add(people[1], hours_ago(30), 3)
    queries_add(company, H0, 4)
    stats = demand_stats(now=NOW)
    assert stats["total_entities"] == 4
    assert stats["total_queries"] == 11
    assert stats["entities_with_demand"] == 3
    assert stats["avg_demand_score"] == 3.7  # 11 / 3
    assert stats["trending_entities"] == 3  # 7d windows: all three have >= 3 now and nothing before
    assert stats["top_entity_types"] == [
        {"type": "person", "count": 2, "avg_score": 3.5},
        {"type": "company", "count": 1, "avg_score": 4.0},
    ]


def test_stats_when_nothing_has_demand():
    EntityFactory()
    stats = demand_stats(now=NOW)
    assert (stats["entities_with_demand"], stats["avg_demand_score"], stats["top_entity_types"]) == (0, 0, [])


def test_entity_demand_shows_counters_and_7d_windows():
    entity = EntityFactory(updated_at=NOW - timedelta(days=31))
    queries_add(entity, hours_ago(2), 6)
    queries_add(entity, hours_ago(170), 2)
    first = NOW - timedelta(days=7, hours=3)
    EntityDemand.objects.filter(pk=entity.pk).update(first_queried_at=first, last_queried_at=NOW)
    data = demand_entity(entity=entity, now=NOW)
    assert data["first_queried_at"] == first
    assert (data["current_period_queries"], data["previous_period_queries"]) == (6, 2)
    assert data["growth_rate"] == 2.0
    assert data["trending"] is True
    assert data["needs_update"] is True  # score 8 >= 5 and 31 days old
    assert data["query_frequency"] == "low"
    assert data["windows"]["1d"]["current_period_queries"] == 6
    assert data["windows"]["30d"] == {
        "current_period_queries": 8,
        "previous_period_queries": 0,
        "growth_rate": None,
        "trend_score": 8.0,
        "trending": True,
    }


def test_entity_without_any_demand():
    entity = EntityFactory()
    data = demand_entity(entity=entity, now=NOW)
    assert data["query_frequency"] == "never"
    assert (data["trending"], data["needs_update"], data["growth_rate"], data["trend_score"]) == (
        False,
        False,
        None,
        0.0,
    )


def test_timeseries_by_day_includes_zero_days():
    entity = EntityFactory()
    queries_add(entity, H0, 2)  # today
    queries_add(entity, H0.replace(hour=0), 1)  # today, first hour
    queries_add(entity, H0 - timedelta(days=2, hours=14), 5)  # 2026-11-18 00:00
    queries_add(entity, H0 - timedelta(days=2, hours=15), 7)  # 2026-11-17 23:00: before the 3-day range
    series = demand_timeseries(entity_id=entity.pk, days=3, interval="day", now=NOW)
    day0 = H0.replace(hour=0)
    assert series["timeseries"] == [
        {"start": day0 - timedelta(days=2), "count": 5},
        {"start": day0 - timedelta(days=1), "count": 0},
        {"start": day0, "count": 3},
    ]
    assert (series["start"], series["end"], series["total_queries"]) == (
        day0 - timedelta(days=2),
        day0 + timedelta(days=1),
        8,
    )


def test_timeseries_by_hour_includes_zero_hours():
    entity = EntityFactory()
    queries_add(entity, H0, 2)
    queries_add(entity, hours_ago(23), 4)  # first hour of the 1-day series
    queries_add(entity, hours_ago(24), 9)  # just before it
    series = demand_timeseries(entity_id=entity.pk, days=1, interval="hour", now=NOW)
    points = series["timeseries"]
    assert len(points) == 24
    assert points[0] == {"start": hours_ago(23), "count": 4}
    assert points[-1] == {"start": H0, "count": 2}
    assert all(point["count"] == 0 for point in points[1:-1])
    assert [p["start"] for p in points] == [hours_ago(23 - i) for i in range(24)]


def test_prune_deletes_buckets_past_retention_and_keeps_the_windows(settings):
    entity = EntityFactory()
    for days in (1, 59, 61, 89, 91, 200):
        queries_add(entity, H0 - timedelta(days=days), 1)
    before = demand_windows(entity_id=entity.pk, now=NOW)
    settings.DEMAND_BUCKET_RETENTION_DAYS = 90
    assert demand_buckets_prune(now=NOW) == 2  # 91 and 200 days old
    # A retention shorter than the windows never removes a bucket a window still holds (60 days).
    settings.DEMAND_BUCKET_RETENTION_DAYS = 10
    assert demand_buckets_prune(now=NOW) == 2  # 61 and 89 days old
    left = sorted(DemandBucket.objects.filter(entity=entity).values_list("hour", flat=True))
    assert left == [H0 - timedelta(days=59), H0 - timedelta(days=1)]
    assert demand_windows(entity_id=entity.pk, now=NOW) == before
    # Rolled forward later, the windows still match the buckets that are left.
    later = NOW + timedelta(days=2)
    assert window(entity, "30d", now=later) == (1, 0)  # day 1 is now 3 days old; day 59 is now 61: gone


def test_trending_ties_across_the_open_hour_and_the_stored_windows():
    # Every entity has (current 5, previous 1); some counted in the open hour h0, some in closed hours.
    for name, hour in (("Bravo", hours_ago(1)), ("Alpha", H0), ("Zed", hours_ago(5)), ("Able", hours_ago(3))):
        entity = EntityFactory(name=name)
        queries_add(entity, hour, 5)
        queries_add(entity, hours_ago(30), 1)
    assert [row["name"] for row in demand_trending(timeframe="1d", now=NOW)] == ["Able", "Alpha", "Bravo", "Zed"]
    assert [row["name"] for row in demand_trending(timeframe="1d", limit=1, now=NOW)] == ["Able"]
    assert [row["name"] for row in demand_trending(timeframe="1d", limit=2, now=NOW)] == ["Able", "Alpha"]
    assert demand_trending_count(timeframe="1d", now=NOW) == 4


def test_events_of_the_open_hour_touch_only_buckets_until_the_hour_closes():
    entity = EntityFactory()
    demand_windows_roll(now=NOW)  # windows relative to H0
    queries_add(entity, H0, 3)
    assert not DemandWindow.objects.filter(pk=entity.pk).exists()  # the worker's common case: buckets only
    assert window(entity, "1d") == (3, 0)
    assert demand_trending_count(timeframe="1d", now=NOW) == 1
    queries_add(entity, H0 + timedelta(hours=2), 4)  # ahead of the stored windows' hour
    assert window(entity, "1d") == (3, 0)
    # Two hours on, before any roll: the reader computes the closed hours itself and writes nothing.
    assert window(entity, "1d", now=NOW + timedelta(hours=2)) == (7, 0)
    assert demand_trending_count(timeframe="1d", now=NOW + timedelta(hours=2)) == 1
    assert not DemandWindow.objects.filter(pk=entity.pk).exists()
    demand_windows_roll(now=NOW + timedelta(hours=2))  # the worker's chore
    assert DemandWindow.objects.get(pk=entity.pk).current_1d == 3  # H0 closed; H0+2h is the open hour
    assert window(entity, "1d", now=NOW + timedelta(hours=2)) == (7, 0)


def test_the_orm_trending_condition_agrees_with_demand_trending():
    from django.db.models import BooleanField, ExpressionWrapper

    specs = [(6, 3, H0), (4, 0, hours_ago(2)), (5, 5, H0), (2, 0, H0), (3, 2, hours_ago(1)), (9, 1, H0)]
    for index, (current, previous, hour) in enumerate(specs):
        entity = EntityFactory(name=f"e{index}")
        queries_add(entity, hour, current)
        if previous:
            queries_add(entity, hours_ago(40), previous)
    # Windows stored as of another hour (the worker not running), then rolled to NOW's: the same answer.
    demand_windows_roll(now=NOW - timedelta(hours=3))
    for rolled in (False, True):
        if rolled:
            demand_windows_roll(now=NOW)
        condition = demand_trending_condition(timeframe="1d", now=NOW)
        expected = {row["name"] for row in demand_trending(timeframe="1d", limit=50, now=NOW)}
        assert expected == {"e0", "e1", "e4", "e5"}
        assert set(Entity.objects.filter(condition).values_list("name", flat=True)) == expected
        flags = Entity.objects.annotate(trending=ExpressionWrapper(condition, output_field=BooleanField()))
        assert {e.name for e in flags if e.trending} == expected


def test_stats_totals_follow_inserts_updates_type_changes_and_deletes(settings):
    def expected_stats():
        rows = list(
            Entity.objects.values(
                "entity_type",
                "updated_at",
                demand_score=F("demand__demand_score"),
                query_count=F("demand__query_count"),
            )
        )
        with_demand = [row for row in rows if row["demand_score"] > 0]
        cutoff = NOW - timedelta(days=settings.STALE_DAYS_SINCE_UPDATE)
        return (
            len(rows),
            sum(row["query_count"] for row in rows),
            len(with_demand),
            sum(1 for r in rows if r["demand_score"] >= settings.STALE_MIN_DEMAND_SCORE and r["updated_at"] < cutoff),
        )

    def actual_stats():
        stats = demand_stats(now=NOW)
        return stats["total_entities"], stats["total_queries"], stats["entities_with_demand"], stats["needs_update"]

    entities = EntityFactory.create_batch(5, updated_at=NOW - timedelta(days=40))
    assert actual_stats() == expected_stats() == (5, 0, 0, 0)
    EntityDemand.objects.filter(pk__in=[e.pk for e in entities[:3]]).update(
        demand_score=F("demand_score") + 7, query_count=F("query_count") + 7
    )
    queries_add(entities[3], H0, 2)
    assert actual_stats() == expected_stats() == (5, 23, 4, 3)
    Entity.objects.filter(pk=entities[0].pk).update(entity_type=EntityType.COMPANY, updated_at=NOW)
    Entity.objects.filter(pk=entities[1].pk).delete()
    EntityFactory(entity_type=EntityType.DEAL)
    assert actual_stats() == expected_stats() == (5, 16, 3, 1)
    assert {row["type"]: row["count"] for row in demand_stats(now=NOW)["top_entity_types"]} == {
        "person": 2,
        "company": 1,
    }
    settings.STALE_MIN_DEMAND_SCORE = 2  # the totals are rebuilt for the new threshold
    assert actual_stats() == expected_stats() == (5, 16, 3, 2)


def test_totals_and_per_type_top_follow_every_insert_path_type_changes_and_deletes():
    """Per-type numbers read the demand row's copy of entity_type: every way an entity appears, changes
    type or goes away must reach it (and the totals the triggers keep)."""
    created = EntityFactory(name="Created", entity_type=EntityType.FORMAT)
    bulk = Entity.objects.bulk_create(
        [Entity(name=f"Bulk {n}", entity_type=EntityType.FORMAT, data={}) for n in range(2)]
    )
    raw_id = uuid.uuid4()
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO entities_entity (id, name, entity_type, data, created_at, updated_at)"
            " VALUES (%s, 'Raw', 'platform', '{}', now(), now())",
            [raw_id],
        )
    for entity_id, score in ((created.pk, 6), (bulk[0].pk, 2), (bulk[1].pk, 4), (raw_id, 5)):
        EntityDemand.objects.filter(pk=entity_id).update(demand_score=score, query_count=score)

    def per_type():
        return {row["type"]: (row["count"], row["avg_score"]) for row in demand_stats(now=NOW)["top_entity_types"]}

    def top_names(entity_type):
        return [row["name"] for row in demand_top(entity_type=entity_type, now=NOW)]

    assert demand_stats(now=NOW)["total_entities"] == 4
    assert per_type() == {"format": (3, 4.0), "platform": (1, 5.0)}
    assert (top_names("format"), top_names("platform")) == (["Created", "Bulk 1", "Bulk 0"], ["Raw"])

    created.entity_type = EntityType.GENRE  # through the ORM's save()
    created.save()
    with connection.cursor() as cursor:  # and through raw SQL
        cursor.execute("UPDATE entities_entity SET entity_type = 'format' WHERE id = %s", [raw_id])
    assert per_type() == {"format": (3, 3.7), "genre": (1, 6.0)}
    assert (top_names("format"), top_names("genre"), top_names("platform")) == (
        ["Raw", "Bulk 1", "Bulk 0"],
        ["Created"],
        [],
    )

    Entity.objects.filter(pk__in=[bulk[1].pk, created.pk]).delete()
    stats = demand_stats(now=NOW)
    assert (stats["total_entities"], stats["total_queries"], stats["entities_with_demand"]) == (2, 7, 2)
    assert per_type() == {"format": (2, 3.5)}
    assert top_names("format") == ["Raw", "Bulk 0"]


def test_stats_needs_update_whether_few_or_most_entities_are_candidates():
    """stats counts the recently updated candidates from the smaller side of the demand rows: the
    candidates when they are few, the others when most entities are candidates. Both give the
    definition's count."""
    old, recent = NOW - timedelta(days=45), NOW - timedelta(days=3)
    specs = [("old-9", old, 9), ("recent-9", recent, 9), ("recent-6", recent, 6), ("recent-1", recent, 1)]
    specs += [("old-0", old, 0), ("old-2", old, 2), ("old-4", old, 4)]
    entities = {}
    for name, updated_at, score in specs:
        entities[name] = EntityFactory(name=name, updated_at=updated_at)
        EntityDemand.objects.filter(pk=entities[name].pk).update(demand_score=score, query_count=score)

    def stale_names():
        return {row["name"] for row in demand_stale(limit=100, now=NOW)}

    # 3 candidates of 7 entities (few): only old-9 is stale.
    assert stale_names() == {"old-9"}
    assert demand_stats(now=NOW)["needs_update"] == 1
    # 6 of 7 are candidates (most): old-0, old-2 and old-4 join old-9; recent-1 stays below the score.
    EntityDemand.objects.filter(pk__in=[entities[n].pk for n in ("old-0", "old-2", "old-4")]).update(demand_score=5)
    EntityDemand.objects.filter(pk=entities["recent-1"].pk).update(demand_score=1)
    assert stale_names() == {"old-9", "old-0", "old-2", "old-4"}
    assert demand_stats(now=NOW)["needs_update"] == 4
    # Every entity a candidate; a recent one is not stale.
    EntityDemand.objects.filter(pk=entities["recent-1"].pk).update(demand_score=50)
    assert demand_stats(now=NOW)["needs_update"] == 4
