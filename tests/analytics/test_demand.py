"""analytics.demand on the suite's PostgreSQL: `query_signals_apply` (the worker's one-statement count),
the counters rebuild, and the chores and handler analytics registers with the stream consumer."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Sum
from django.utils import timezone

from analytics.definitions import hour_floor
from analytics.demand import (
    demand_counters_rebuild,
    demand_totals_sync,
    demand_windows_roll,
    query_signal_batch_apply,
    query_signals_apply,
    signal_columns,
)
from analytics.models import DEMAND_TOTALS_TRIGGERS, DemandBucket, DemandTotal, DemandWindow, DemandWindowState
from entities.models import EntityDemand
from streams.handlers import batch_handlers, chores
from streams.models import ProcessedEvent
from streams.worker import StreamWorker
from tests.streams.pipeline import entities_make, signals_make, totals_assert

H0 = datetime(2026, 11, 30, 12, tzinfo=UTC)


def _demand(entity) -> tuple[int, int, datetime | None, datetime | None]:
    row = EntityDemand.objects.get(entity=entity)
    return row.query_count, row.demand_score, row.first_queried_at, row.last_queried_at


def test_one_batch_counts_first_per_event_id_rejects_unknown_entities_and_skips_counted_ids(db):
    known, other = entities_make(2)
    first, second, late = (signals_make([known], 3, seed=seed)[0] for seed in (1, 2, 3))
    first = replace(first, timestamp=H0 + timedelta(minutes=5))
    second = replace(second, timestamp=H0 + timedelta(minutes=50))
    late = replace(late, timestamp=H0 - timedelta(hours=30))
    assert query_signals_apply(signals=[first]).applied == 1

    unknown = replace(second, event_id=uuid.uuid4(), entity_id=uuid.uuid4())
    # The same event id naming an unknown entity, then two existing ones: the first existing one counts.
    shadowed = replace(second, entity_id=unknown.entity_id)
    repeat_elsewhere = replace(second, entity_id=other.id)
    batch = [first, unknown, shadowed, second, repeat_elsewhere, late, late]

    result = query_signals_apply(signals=batch)

    assert result.rejected == {1: f"unknown entity_id {unknown.entity_id}", 2: f"unknown entity_id {unknown.entity_id}"}
    assert result.applied == 2  # second and late
    assert result.duplicates == 3  # first (counted before), repeat_elsewhere (same id as second), late again
    assert _demand(known) == (3, 3, late.timestamp, second.timestamp)
    assert _demand(other) == (0, 0, None, None)
    assert sorted(DemandBucket.objects.values_list("hour", "count")) == [(H0 - timedelta(hours=30), 1), (H0, 2)]
    assert ProcessedEvent.objects.count() == 3


def test_demand_score_counts_subject_signals_and_query_count_every_returned_signal(db):
    asked, named = entities_make(2)
    subject = replace(signals_make([asked], 1, seed=11)[0], timestamp=H0 + timedelta(minutes=5))
    related = replace(signals_make([named], 1, seed=12)[0], timestamp=H0 + timedelta(minutes=5), role="related", rank=2)
    related_earlier = replace(related, event_id=uuid.uuid4(), timestamp=H0 - timedelta(hours=3))
    legacy = replace(subject, event_id=uuid.uuid4())  # no role on the wire: a subject at rank 1

    result = query_signals_apply(signals=[subject, related, related_earlier, legacy])
    query_signals_apply(signals=[related])  # delivered again: counted once

    assert result.applied == 4
    assert _demand(asked)[:2] == (2, 2)
    assert _demand(named)[:2] == (2, 0)  # returned twice, never the subject: no demand
    buckets = DemandBucket.objects.filter(entity=named).order_by("hour").values_list("hour", "count", "returned")
    assert list(buckets) == [(H0 - timedelta(hours=3), 0, 1), (H0, 0, 1)]
    assert not DemandWindow.objects.filter(entity_id=named.id).exists()  # related signals move no window
    audit_from = H0 - timedelta(days=1)
    EntityDemand.objects.filter(entity=named).update(query_count=9, demand_score=4)
    assert demand_counters_rebuild(entity_ids=[named.id], audit_from=audit_from) == 1
    assert _demand(named)[:2] == (2, 0)  # rebuilt from returned and count


def test_columns_built_ahead_give_the_same_counts_as_the_signals_alone(db):
    entities = entities_make(20)
    signals = signals_make(entities, 500, seed=7)
    half = len(signals) // 2
    query_signals_apply(signals=signals[:half], columns=signal_columns(signals[:half]))
    query_signals_apply(signals=signals[half:])
    query_signals_apply(signals=signals, columns=signal_columns(signals))  # all again: nothing moves
    totals_assert(signals)


def test_late_events_move_the_stored_windows_in_the_same_statement(db):
    (entity,) = entities_make(1)
    demand_windows_roll(now=H0)
    signals = [
        replace(signal, timestamp=H0 - timedelta(hours=hours_ago))
        for signal, hours_ago in zip(signals_make([entity], 3, seed=4), (2, 30, 0), strict=True)
    ]
    assert query_signals_apply(signals=signals).applied == 3
    window = DemandWindow.objects.get(entity=entity)
    # The open hour h0 stays out of the stored windows; 2 h ago is in the current day, 30 h ago the previous.
    assert (window.current_1d, window.previous_1d, window.current_7d) == (1, 1, 2)


def test_analytics_registers_the_signal_handler_and_its_chores(db):
    handlers = {handler.stream: handler for handler in batch_handlers()}
    assert handlers[settings.STREAM_QUERY_SIGNALS].apply is query_signal_batch_apply
    assert {"demand_windows_roll", "demand_totals_sync"} <= {chore.name for chore in chores()}


def test_the_worker_housekeeping_rolls_the_trending_windows_when_an_hour_closes(db, redis_client):
    demand_windows_roll(now=timezone.now() - timedelta(hours=5))
    worker = StreamWorker(consumer="chores-worker", block_ms=50)
    worker.groups_ensure()
    worker.housekeeping()
    assert DemandWindowState.objects.get(id=1).hour == hour_floor(timezone.now())


def test_totals_sync_rebuilds_only_when_the_stale_threshold_changed(db, settings):
    entities = entities_make(4)
    for entity, score in zip(entities, (0, 3, 7, 9), strict=True):
        EntityDemand.objects.filter(entity=entity).update(demand_score=score, query_count=score)
    settings.STALE_MIN_DEMAND_SCORE = 5
    assert demand_totals_sync() is True
    assert DemandTotal.objects.aggregate(n=Sum("stale_candidates"))["n"] == 2
    assert demand_totals_sync() is False  # built for this threshold already
    settings.STALE_MIN_DEMAND_SCORE = 2
    assert demand_totals_sync() is True
    assert DemandTotal.objects.aggregate(n=Sum("stale_candidates"))["n"] == 3


def test_counters_rebuild_moves_only_the_entities_that_differ_from_their_buckets(db):
    drifted, exact = entities_make(2)
    signals = [replace(signal, timestamp=H0) for signal in signals_make([drifted, exact], 40, seed=4)]
    query_signals_apply(signals=signals)
    exact_before = _demand(exact)
    EntityDemand.objects.filter(entity=drifted).update(query_count=1000, demand_score=3)
    fixed = demand_counters_rebuild(entity_ids=[drifted.id, exact.id], audit_from=H0 - timedelta(days=1))
    assert fixed == 1
    buckets = DemandBucket.objects.filter(entity_id=drifted.id).aggregate(n=Sum("count"))["n"]
    assert _demand(drifted)[:2] == (buckets, buckets)
    assert _demand(exact) == exact_before


def test_the_totals_triggers_are_the_declared_ones_and_only_those(db):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = 'entities_entitydemand'::regclass AND NOT tgisinternal"
        )
        installed = {row[0] for row in cursor.fetchall()}
    declared = {trigger.get_pgid(EntityDemand) for trigger in DEMAND_TOTALS_TRIGGERS}
    assert len(declared) == 4
    assert installed == declared  # the hand-written analytics_demand_totals_* triggers are gone
