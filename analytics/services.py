"""Writes of demand history: hourly buckets, the trending windows built on them, and their pruning.

`demand_buckets_add` is called by the stream worker inside its apply transaction. The stored windows
(`DemandWindow`) leave out the open hour h0, so the worker's events of the current hour only touch
buckets; a late event (an hour before h0) also moves the windows, in that same transaction. Once an
hour, `demand_windows_roll` moves the windows on by the hours that closed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from analytics.definitions import (
    TIMEFRAME_HOURS,
    WINDOW_EDGE_OFFSETS,
    WINDOW_SPAN_HOURS,
    hour_floor,
    stored_window_sums_sql,
)
from analytics.demo import HistoryEntity, demand_history
from analytics.models import DemandBucket
from entities.models import Entity
from mandate_wizard.databases import pg_array_literal
from mandate_wizard.iterables import batched

# Writers of buckets hold it shared, a roll holds it exclusive: a roll never misses a bucket in flight.
DEMAND_WINDOWS_LOCK = 0x4D57_4457  # "MWDW"
WINDOW_COLUMNS = [f"{period}_{timeframe}" for timeframe in TIMEFRAME_HOURS for period in ("current", "previous")]
_COLUMNS = ", ".join(WINDOW_COLUMNS)

_ADDED_SUMS = ", ".join(stored_window_sums_sql(amount="added.amount", hour="added.hour", h0="state.hour"))


def demand_add_ctes(*, source: str) -> str:
    """Common table expressions that add `source`'s rows to the hourly buckets and the stored windows.

    `source` names a relation of (entity_id, hour, amount), one row per entity and UTC hour start. Rows of
    a closed hour (before h0) also move the windows. For the WITH list of one statement, so a caller can
    count and record demand in a single round trip; call `demand_windows_lock_shared` first.
    """
    return f"""
demand_buckets AS (
    INSERT INTO analytics_demandbucket (entity_id, hour, count)
    SELECT entity_id, hour, amount FROM {source} ORDER BY 1, 2
    ON CONFLICT (entity_id, hour) DO UPDATE SET count = analytics_demandbucket.count + EXCLUDED.count
), demand_windows AS (
    INSERT INTO analytics_demandwindow AS w (entity_id, {_COLUMNS})
    SELECT added.entity_id, {_ADDED_SUMS}
    FROM {source} AS added CROSS JOIN analytics_demandwindowstate AS state
    WHERE state.id = 1 AND added.hour < state.hour
        AND added.hour > state.hour - interval '{WINDOW_SPAN_HOURS} hours'
    GROUP BY added.entity_id
    ORDER BY added.entity_id
    ON CONFLICT (entity_id) DO UPDATE SET {", ".join(f"{c} = w.{c} + EXCLUDED.{c}" for c in WINDOW_COLUMNS)}
)"""  # noqa: S608 - built from constants only


_ADD_SQL = f"""
WITH added AS (
    SELECT entity_id, date_trunc('hour', hour, 'UTC') AS hour, sum(amount)::bigint AS amount
    FROM unnest(%s::uuid[], %s::timestamptz[], %s::bigint[]) AS b(entity_id, hour, amount)
    GROUP BY 1, 2
), {demand_add_ctes(source="added")}
SELECT NULL
"""  # noqa: S608 - built from constants only

_REBUILD_SQL = f"""
INSERT INTO analytics_demandwindow (entity_id, {_COLUMNS})
SELECT entity_id, {", ".join(stored_window_sums_sql(amount="count", hour="hour", h0="%(h0)s::timestamptz"))}
FROM analytics_demandbucket
WHERE hour < %(h0)s AND hour > %(h0)s::timestamptz - interval '{WINDOW_SPAN_HOURS} hours'
GROUP BY entity_id
"""  # noqa: S608 - built from constants only

# Only the buckets of hours that enter or leave a stored window between the two h0 are read.
_EDGES_SQL = " OR ".join(
    f"(hour > %(lo)s::timestamptz - interval '{k} hours' AND hour <= %(hi)s::timestamptz - interval '{k} hours')"
    for k in WINDOW_EDGE_OFFSETS
)
_NEW_SUMS = stored_window_sums_sql(amount="count", hour="hour", h0="%(new)s::timestamptz")
_OLD_SUMS = stored_window_sums_sql(amount="count", hour="hour", h0="%(old)s::timestamptz")
_DELTAS = ", ".join(f"{new} - {old} AS {c}" for new, old, c in zip(_NEW_SUMS, _OLD_SUMS, WINDOW_COLUMNS, strict=True))
_ROLL_SQL = f"""
MERGE INTO analytics_demandwindow AS w
USING (
    SELECT entity_id, {_DELTAS}
    FROM analytics_demandbucket
    WHERE {_EDGES_SQL}
    GROUP BY entity_id
) AS d ON w.entity_id = d.entity_id
WHEN MATCHED AND {" AND ".join(f"w.{c} + d.{c} = 0" for c in WINDOW_COLUMNS)} THEN DELETE
WHEN MATCHED THEN UPDATE SET {", ".join(f"{c} = w.{c} + d.{c}" for c in WINDOW_COLUMNS)}
WHEN NOT MATCHED AND ({" OR ".join(f"d.{c} <> 0" for c in WINDOW_COLUMNS)}) THEN
    INSERT (entity_id, {_COLUMNS}) VALUES (d.entity_id, {", ".join(f"d.{c}" for c in WINDOW_COLUMNS)})
"""  # noqa: S608 - built from constants only


def demand_buckets_add(*, counts: Mapping[tuple[uuid.UUID, datetime], int]) -> None:
    """Add `counts[(entity_id, hour)]` to the hourly demand buckets (and, for closed hours, the windows).

    `hour` is the UTC start of the hour (other moments are truncated to their hour). Runs inside the
    caller's transaction, so buckets and windows commit or roll back with the counters and the inbox.
    Two statements: a shared lock, then one set-based upsert of the buckets and the windows.
    """
    if not counts:
        return
    keys = list(counts)
    arrays = [
        pg_array_literal(entity_id for entity_id, _hour in keys),
        pg_array_literal(hour for _entity_id, hour in keys),
        pg_array_literal(int(counts[key]) for key in keys),
    ]
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        demand_windows_lock_shared(cursor)
        cursor.execute(_ADD_SQL, arrays)


def demand_windows_lock_shared(cursor) -> None:
    """Hold the windows lock shared for the rest of the transaction: no roll runs until it ends.

    Its own statement, before the writes: in READ COMMITTED the next statement's snapshot then
    includes any roll that committed while this one waited.
    """
    cursor.execute("SELECT pg_advisory_xact_lock_shared(%s)", [DEMAND_WINDOWS_LOCK])


def demand_windows_roll(*, now: datetime | None = None) -> datetime:
    """Make the stored windows relative to the hour of `now` (default: the current hour); return that hour.

    Reads only the buckets of the hours that enter or leave a window, so a roll by one hour touches a
    few hours of buckets. The first build, or a jump of 60 days or more, recomputes every window.
    """
    target = hour_floor(now or timezone.now())
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [DEMAND_WINDOWS_LOCK])
        cursor.execute("SELECT hour FROM analytics_demandwindowstate WHERE id = 1")
        row = cursor.fetchone()
        current = row[0] if row else None
        if current == target:
            return target
        if current is None or abs(target - current) >= timedelta(hours=WINDOW_SPAN_HOURS):
            cursor.execute("DELETE FROM analytics_demandwindow")
            cursor.execute(_REBUILD_SQL, {"h0": target})
        else:
            lo, hi = min(current, target), max(current, target)
            cursor.execute(_ROLL_SQL, {"old": current, "new": target, "lo": lo, "hi": hi})
        cursor.execute(
            "INSERT INTO analytics_demandwindowstate (id, hour) VALUES (1, %s)"
            " ON CONFLICT (id) DO UPDATE SET hour = EXCLUDED.hour",
            [target],
        )
    return target


def demand_totals_rebuild(*, stale_min_demand_score: int) -> None:
    """Recompute DemandTotal from the demand table, counting stale candidates at this demand_score.

    Called when the setting differs from the one the totals were built with (and on first use). Holds the
    totals table exclusively: writers' triggers wait, then add their differences to the rebuilt totals.
    """
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("LOCK TABLE analytics_demandtotal IN EXCLUSIVE MODE")
        cursor.execute(
            "INSERT INTO analytics_demandwindowstate (id, stale_min_demand_score) VALUES (1, %s)"
            " ON CONFLICT (id) DO UPDATE SET stale_min_demand_score = EXCLUDED.stale_min_demand_score",
            [stale_min_demand_score],
        )
        cursor.execute("DELETE FROM analytics_demandtotal")
        cursor.execute(
            """
            INSERT INTO analytics_demandtotal
                (entity_type, shard, entities, queries, with_demand, score_sum, stale_candidates)
            SELECT entity_type, 0, count(*), sum(query_count), count(*) FILTER (WHERE demand_score > 0),
                   sum(demand_score), count(*) FILTER (WHERE demand_score >= %s)
            FROM entities_entitydemand
            GROUP BY entity_type
            """,
            [stale_min_demand_score],
        )


def demand_buckets_prune(*, now: datetime | None = None) -> int:
    """Delete buckets older than DEMAND_BUCKET_RETENTION_DAYS; return how many were deleted.

    Buckets still inside a trending window (the last 60 days) are kept whatever the setting says.
    """
    now = now or timezone.now()
    with transaction.atomic():
        h0 = demand_windows_roll(now=now)
        oldest_in_windows = h0 - timedelta(hours=WINDOW_SPAN_HOURS - 1)
        cutoff = min(now - timedelta(days=settings.DEMAND_BUCKET_RETENTION_DAYS), oldest_in_windows)
        deleted, _ = DemandBucket.objects.filter(hour__lt=cutoff).delete()
    return deleted


DEMAND_REBUILD_CHUNK = 1000


def demand_counters_rebuild(*, now: datetime | None = None) -> int:
    """Set query_count and demand_score to the bucket totals where they differ; return how many entities.

    Only entities the audit can judge (whole history still in the buckets) are rebuilt. Each chunk first
    locks its demand rows in entity id order, as the worker does before it writes buckets, so no batch
    can commit buckets for them between the sum and the update.
    """
    from analytics.selectors import demand_audit_from, demand_counters_audit

    audit_from = demand_audit_from(now=now)
    ids = sorted(row["id"] for row in demand_counters_audit(now=now).differences)
    fixed = 0
    for start in range(0, len(ids), DEMAND_REBUILD_CHUNK):
        chunk = ids[start : start + DEMAND_REBUILD_CHUNK]
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT entity_id FROM entities_entitydemand WHERE entity_id = ANY(%s::uuid[])"
                " ORDER BY entity_id FOR NO KEY UPDATE",
                [chunk],
            )
            cursor.execute(
                """
                UPDATE entities_entitydemand AS d SET query_count = t.total, demand_score = t.total
                FROM (
                    SELECT ids.id, coalesce(sum(b.count), 0) AS total
                    FROM unnest(%s::uuid[]) AS ids(id)
                    LEFT JOIN analytics_demandbucket AS b ON b.entity_id = ids.id
                    GROUP BY ids.id
                ) AS t
                WHERE d.entity_id = t.id AND d.entity_id = ANY(%s::uuid[])
                  AND (d.first_queried_at IS NULL OR d.first_queried_at >= %s)
                  AND (d.query_count <> t.total OR d.demand_score <> t.total)
                """,
                # The redundant ANY lets the planner look the rows up by primary key (as in the worker).
                [chunk, chunk, audit_from],
            )
            fixed += cursor.rowcount
    return fixed


def refresh_claim_key(entity_id: uuid.UUID) -> str:
    """One refresh request per entity per day: this key (24 h TTL) is claimed before publishing."""
    return f"{settings.STREAM_KEY_PREFIX}:refresh_claimed:{entity_id}"


REFRESH_CLAIM_SECONDS = 24 * 3600
STALE_REFRESH_SOURCE = "request_stale_updates"


@dataclass
class StaleRefreshOutcome:
    """What `stale_entities_refresh_request` did, or for a dry run would do."""

    requested: list[uuid.UUID] = field(default_factory=list)
    skipped_recent: int = 0
    event_ids: list[uuid.UUID] = field(default_factory=list)
    outboxed: int = 0


def stale_entities_refresh_request(
    *,
    min_demand_score: int | None = None,
    days_since_update: int | None = None,
    limit: int | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
) -> StaleRefreshOutcome:
    """Publish `refresh` UpdateRequests for stale entities, most demanded first, at most once per entity per day.

    "Once per day" has two guards: a RefreshRequest row of the last 24 h (durable, but written only when
    the worker has processed the request) and a Redis key set with NX and a 24 h TTL (immediate, so two
    runs a minute apart cannot both request an entity whose first request is still in the stream).
    """
    # Late imports: the publisher's module imports the worker's services, which import this module.
    from analytics.selectors import DEMAND_ORDER, demand_stale_condition
    from entities.models import Entity
    from streams.events import MAX_ENTITY_IDS, UpdateRequest
    from streams.publisher import update_request_publish
    from streams.redis import redis_client

    now = now or timezone.now()
    stale = Entity.objects.filter(
        demand_stale_condition(now=now, min_demand_score=min_demand_score, days_since_update=days_since_update)
    ).order_by(*DEMAND_ORDER)
    recent = stale.filter(refresh_requests__requested_at__gte=now - timedelta(seconds=REFRESH_CLAIM_SECONDS))
    outcome = StaleRefreshOutcome(skipped_recent=recent.distinct().count())
    candidates = stale.exclude(pk__in=recent.values("pk")).values_list("pk", flat=True)
    client = redis_client()
    wanted = limit if limit is not None else None
    for start in range(0, candidates.count(), MAX_ENTITY_IDS):
        if wanted is not None and len(outcome.requested) >= wanted:
            break
        page = list(candidates[start : start + MAX_ENTITY_IDS])
        pipe = client.pipeline(transaction=False)
        for entity_id in page:
            key = refresh_claim_key(entity_id)
            if dry_run:
                pipe.exists(key)
            else:
                pipe.set(key, now.isoformat(), nx=True, ex=REFRESH_CLAIM_SECONDS)
        replies = pipe.execute()
        # A dry run asks EXISTS (1 = claimed already); a real run asks SET NX (True = claimed now).
        claimed = [eid for eid, reply in zip(page, replies, strict=True) if bool(reply) != dry_run]
        outcome.skipped_recent += len(page) - len(claimed)
        if wanted is not None:
            room = wanted - len(outcome.requested)
            if not dry_run and len(claimed) > room:
                client.delete(*(refresh_claim_key(eid) for eid in claimed[room:]))
            claimed = claimed[:room]
        if not claimed:
            continue
        outcome.requested.extend(claimed)
        if dry_run:
            continue
        request = UpdateRequest.new(entity_ids=claimed, operation="refresh", source=STALE_REFRESH_SOURCE)
        published = update_request_publish(request=request)
        if published.lost:
            client.delete(*(refresh_claim_key(eid) for eid in claimed))
            raise RuntimeError(f"Neither Redis nor the outbox took the refresh request for {len(claimed)} entities")
        outcome.event_ids.append(request.event_id)
        outcome.outboxed += published.outboxed
    return outcome


HISTORY_BATCH = 5000


@dataclass
class HistoryReport:
    """What `demand_history_seed` did."""

    signals: int = 0
    counted: int = 0
    skipped: str = ""


def demand_history_seed(
    *, seed: int = 1, now: datetime | None = None, progress: Callable[[int], None] | None = None
) -> HistoryReport:
    """Count the demo's simulated demand history (`analytics.demo`) through the worker's counting function.

    Nothing happens when any demand is recorded already: the history is a demo's past, never laid over
    real demand. Its event ids are deterministic, so even a second run racing the first counts nothing twice.
    """
    from streams.services import query_signals_apply  # WIP: until the layering refactor lands

    if DemandBucket.objects.exists():
        return HistoryReport(skipped="demand is recorded already")
    entities = [HistoryEntity(*row) for row in Entity.objects.values_list("id", "name", "entity_type", "updated_at")]
    report = HistoryReport()
    for batch in batched(demand_history(entities=entities, now=now or timezone.now(), seed=seed), HISTORY_BATCH):
        report.signals += len(batch)
        report.counted += query_signals_apply(signals=batch).applied
        if progress:
            progress(len(batch))
    return report
