"""The demo's simulated demand history: deterministic, counted by the worker's function, a past every report shows."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db.models import F, Sum

from analytics.demo import GAP_ANSWERS, GAP_QUESTIONS, HISTORY_DAYS, HistoryEntity, demand_history
from analytics.models import DemandBucket
from analytics.selectors import (
    demand_counters_audit,
    demand_stale,
    demand_stats,
    demand_trending,
    questions_gaps,
    questions_top,
)
from entities.models import AnswerRecord, Entity, EntityDemand
from entities.questions import question_normalize
from entities.services import answer_signals_reconcile
from streams.models import ProcessedEvent

NOW = datetime(2026, 11, 20, 14, 37, tzinfo=UTC)


def _entities(count: int) -> list[HistoryEntity]:
    return [
        HistoryEntity(uuid.UUID(int=n + 1), f"Entity {n}", "person", NOW - timedelta(days=n % 200))
        for n in range(count)
    ]


def test_history_has_the_same_ids_whenever_it_is_generated_and_lies_in_the_last_30_days():
    entities = _entities(300)
    first = list(demand_history(entities=entities, now=NOW, signals=2000))
    later = list(demand_history(entities=entities, now=NOW + timedelta(days=3), signals=2000))
    assert [a.id for a in first] == [a.id for a in later]
    assert len({a.id for a in first}) == len(first) > 2000 + GAP_ANSWERS  # tail, spikes, stale demand, gaps
    assert all(NOW - timedelta(days=HISTORY_DAYS) < a.asked_at <= NOW for a in first)
    assert {a.entity_id for a in first} - {None} <= {e.id for e in entities}
    assert sum(a.entity_id is None for a in first) == GAP_ANSWERS


def test_history_is_a_long_tail_with_recent_spikes():
    signals = [a for a in demand_history(entities=_entities(1000), now=NOW, signals=5000) if a.entity_id]
    per_entity: dict[uuid.UUID, int] = {}
    for signal in signals:
        per_entity[signal.entity_id] = per_entity.get(signal.entity_id, 0) + 1
    counts = sorted(per_entity.values(), reverse=True)
    assert counts[0] > 20 * counts[len(counts) // 2]  # a head far above the median
    assert len(per_entity) < 1000  # and entities nobody asked about
    last_day = {s.entity_id for s in signals if NOW - s.asked_at < timedelta(days=1)}
    assert last_day


@pytest.mark.django_db
def test_seed_demo_loads_a_past_every_report_shows_and_a_second_run_adds_nothing():
    out = StringIO()
    call_command("seed_demo", entities=800, seed=2, verbosity=0, stdout=out)
    assert "Demand history:" in out.getvalue()

    stats = demand_stats()
    assert stats["trending_entities"] > 0
    assert stats["needs_update"] > 0
    for timeframe in ("1d", "7d", "30d"):
        assert demand_trending(timeframe=timeframe, limit=5), timeframe
    assert demand_stale(limit=5)
    audit = demand_counters_audit()
    assert audit.differences == [] and audit.checked > 0
    counted = ProcessedEvent.objects.count()
    score = EntityDemand.objects.aggregate(total=Sum("demand_score"))["total"]
    assert score == counted == DemandBucket.objects.aggregate(total=Sum("count"))["total"]
    answers = AnswerRecord.objects.count()
    assert answers == counted + GAP_ANSWERS
    reconciled = answer_signals_reconcile(limit=answers)
    # All counted; the answers that found nothing sent nothing to check.
    assert (reconciled.checked, reconciled.resent, reconciled.settled) == (counted, 0, counted)
    top = questions_top(timeframe="30d", limit=3)
    assert top and questions_gaps(timeframe="30d", limit=3)
    assert all(question["users"] > 1 for question in top)  # asked by several demo askers
    assert questions_gaps(timeframe="30d", limit=10)[0]["question"] in {question_normalize(q) for q in GAP_QUESTIONS}

    out = StringIO()
    call_command("seed_demo", entities=800, seed=2, verbosity=0, stdout=out)
    assert "Demand history not loaded" in out.getvalue()
    assert ProcessedEvent.objects.count() == counted
    assert EntityDemand.objects.aggregate(total=Sum("demand_score"))["total"] == score
    assert AnswerRecord.objects.count() == answers


@pytest.mark.django_db
def test_recompute_demand_check_passes_after_the_seed():
    call_command("seed_demo", entities=400, verbosity=0, stdout=StringIO())
    out = StringIO()
    call_command("recompute_demand", check=True, stdout=out)  # exits 1 on any difference
    assert "0 entities differ" in out.getvalue()


@pytest.mark.django_db
def test_seed_demo_no_demand_loads_entities_only():
    call_command("seed_demo", entities=100, no_demand=True, verbosity=0, stdout=StringIO())
    assert Entity.objects.count() == 100
    assert not DemandBucket.objects.exists()
    assert not EntityDemand.objects.filter(query_count__gt=0).exists()


@pytest.mark.django_db
def test_seed_demo_creates_the_requested_count_embedded_and_is_idempotent():
    out = StringIO()
    call_command("seed_demo", entities=300, seed=3, no_demand=True, verbosity=0, stdout=out)
    assert Entity.objects.count() == 300
    assert not Entity.objects.filter(embedding__isnull=True).exists()
    mansolillo = Entity.objects.get(name="Chris Mansolillo")
    EntityDemand.objects.filter(entity=mansolillo).update(demand_score=F("demand_score") + 4)

    call_command("seed_demo", entities=300, seed=3, no_demand=True, verbosity=0, stdout=out)
    assert Entity.objects.count() == 300
    assert EntityDemand.objects.get(entity=mansolillo).demand_score == 4  # existing records are kept as they are
    assert "0 created, 300 already present" in out.getvalue()


@pytest.mark.django_db
def test_seed_demo_if_empty_does_nothing_when_entities_exist():
    call_command("seed_demo", entities=20, verbosity=0, stdout=StringIO())
    out = StringIO()
    call_command("seed_demo", entities=50, if_empty=True, verbosity=0, stdout=out)
    assert Entity.objects.count() == 20
    assert "not loaded" in out.getvalue()
