"""Helpers for analytics tests: buckets go through the real write path, counters through F() updates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.db.models import F

from analytics.demand import demand_buckets_add
from entities.models import Entity, EntityDemand

# A pinned clock: h0 (start of the current hour) is 2026-11-20 14:00 UTC.
NOW = datetime(2026, 11, 20, 14, 37, 12, tzinfo=UTC)
H0 = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)


def hours_ago(n: int, *, h0: datetime = H0) -> datetime:
    return h0 - timedelta(hours=n)


def queries_add(entity: Entity, hour: datetime, count: int) -> None:
    """Record `count` queries of `entity` in the bucket of `hour`, and bump its counters like the worker."""
    demand_buckets_add(counts={(entity.pk, hour): count})
    EntityDemand.objects.filter(pk=entity.pk).update(
        query_count=F("query_count") + count, demand_score=F("demand_score") + count
    )
