"""Every statement that moves demand: counters, hourly buckets, trending windows and their totals.

Analytics owns demand. The stream consumer (streams.worker) runs `query_signals_apply`, registered as
the QuerySignal batch handler by `analytics.apps.AnalyticsConfig.ready()`, inside the batch's
transaction with the inbox (streams.services.inbox_insert_sql), so a batch stays ONE statement. The
stored windows (`DemandWindow`) leave out the open hour h0, so the events of the current hour only
touch buckets; a late event (an hour before h0) also moves the windows, in that same statement.
`demand_windows_roll`, a periodic chore of the worker, moves the windows on by the hours that closed.
The totals (`DemandTotal`) follow the counters through the triggers declared on the models.

Lock order, so that parallel writers never deadlock: demand rows (sorted by entity id), then inbox
ids (sorted), then demand buckets (sorted by entity, hour) and windows (by entity).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from analytics.definitions import (
    WINDOW_COLUMNS,
    WINDOW_SPAN_HOURS,
    hour_floor,
    stored_window_sums_sql,
    window_deltas_sql,
    window_sums_sql,
)
from analytics.models import DemandBucket, DemandWindowState
from kernel.databases import pg_array_literal
from streams.events import ROLE_SUBJECT, QuerySignal
from streams.handlers import ApplyResult
from streams.services import inbox_insert_sql

# Writers of buckets hold it shared, a roll holds it exclusive: a roll never misses a bucket in flight.
DEMAND_WINDOWS_LOCK = 0x4D57_4457  # "MWDW"
_COLUMNS = ", ".join(WINDOW_COLUMNS)

_ADDED_SUMS = ", ".join(stored_window_sums_sql(amount="added.amount", hour="added.hour", h0="state.hour"))


def demand_add_ctes(*, source: str) -> str:
    """Common table expressions that add `source`'s rows to the hourly buckets and the stored windows.

    `source` names a relation of (entity_id, hour, amount, returned), one row per entity and UTC hour start:
    `amount` the subject signals (demand: buckets' `count`, the windows), `returned` every signal (subject or
    related: buckets' `returned`, query_count's history). Rows of a closed hour (before h0) also move the
    windows. For the WITH list of one statement, so a caller can count and record demand in a single round
    trip; call `demand_windows_lock_shared` first.
    """
    return f"""
demand_buckets AS (
    INSERT INTO analytics_demandbucket (entity_id, hour, count, returned)
    SELECT entity_id, hour, amount, returned FROM {source} ORDER BY 1, 2
    ON CONFLICT (entity_id, hour) DO UPDATE SET
        count = analytics_demandbucket.count + EXCLUDED.count,
        returned = analytics_demandbucket.returned + EXCLUDED.returned
), demand_windows AS (
    INSERT INTO analytics_demandwindow AS w (entity_id, {_COLUMNS})
    SELECT added.entity_id, {_ADDED_SUMS}
    FROM {source} AS added CROSS JOIN analytics_demandwindowstate AS state
    WHERE state.id = 1 AND added.amount > 0 AND added.hour < state.hour
        AND added.hour > state.hour - interval '{WINDOW_SPAN_HOURS} hours'
    GROUP BY added.entity_id
    ORDER BY added.entity_id
    ON CONFLICT (entity_id) DO UPDATE SET {", ".join(f"{c} = w.{c} + EXCLUDED.{c}" for c in WINDOW_COLUMNS)}
)"""  # noqa: S608 - built from constants only


_ADD_SQL = f"""
WITH added AS (
    SELECT entity_id, date_trunc('hour', hour, 'UTC') AS hour, sum(amount)::bigint AS amount,
           sum(amount)::bigint AS returned
    FROM unnest(%s::uuid[], %s::timestamptz[], %s::bigint[]) AS b(entity_id, hour, amount)
    GROUP BY 1, 2
), {demand_add_ctes(source="added")}
SELECT NULL
"""  # noqa: S608 - built from constants only

_REBUILD_SQL = f"""
INSERT INTO analytics_demandwindow (entity_id, {_COLUMNS}) {window_sums_sql(h0="%(h0)s::timestamptz")}
"""

_ROLL_SQL = f"""
MERGE INTO analytics_demandwindow AS w
USING ({window_deltas_sql(old="%(old)s::timestamptz", new="%(new)s::timestamptz")}
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
            cursor.execute(_ROLL_SQL, {"old": current, "new": target})
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


def demand_totals_sync() -> bool:
    """Rebuild the totals when STALE_MIN_DEMAND_SCORE differs from the one they were built with; return
    whether it did. A periodic chore of the worker (readers count the stale candidates themselves until then).
    """
    minimum = settings.STALE_MIN_DEMAND_SCORE
    if DemandWindowState.objects.filter(pk=1).values_list("stale_min_demand_score", flat=True).first() == minimum:
        return False
    demand_totals_rebuild(stale_min_demand_score=minimum)
    return True


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


def demand_counters_add_sql(*, source: str) -> str:
    """The one counter arithmetic, as the UPDATE of a WITH list: add `source`'s amounts to the demand rows.

    `source` names a relation of (entity_id, score_amount, count_amount, first_at, last_at), one row per
    entity; first/last take LEAST/GREATEST (a NULL leaves them as they are), so late and out-of-order
    events land correctly. The caller holds the rows' locks (entity id order).
    """
    return f"""
    UPDATE entities_entitydemand AS demand SET
        demand_score = demand.demand_score + {source}.score_amount,
        query_count = demand.query_count + {source}.count_amount,
        first_queried_at = LEAST(demand.first_queried_at, {source}.first_at),
        last_queried_at = GREATEST(demand.last_queried_at, {source}.last_at)
    FROM {source} WHERE demand.entity_id = {source}.entity_id"""  # noqa: S608 - built from constants only


class SignalColumns(NamedTuple):
    """A batch of QuerySignals as one PostgreSQL array literal per column, in the batch's order."""

    event_ids: str
    entity_ids: str
    timestamps: str
    subjects: str


def signal_columns(signals: Sequence[QuerySignal]) -> SignalColumns:
    """The columns `query_signals_apply` sends; the worker builds them while the previous batch commits."""
    return SignalColumns(
        pg_array_literal([signal.event_id for signal in signals]),
        pg_array_literal([signal.entity_id for signal in signals]),
        pg_array_literal([signal.timestamp for signal in signals]),
        pg_array_literal([signal.role == ROLE_SUBJECT for signal in signals]),
    )


# One statement counts a batch: lock the named entities' demand rows (entity id order), keep the first
# event per event id among those naming an existing entity, record the ids in the inbox, and move
# counters, buckets and windows by the events the inbox did not hold yet. Every signal moves query_count
# and buckets' `returned`; only subject signals move demand_score, buckets' `count` and the windows. It
# returns the existing entity ids and how many events were counted.
_SIGNALS_APPLY_SQL = f"""
WITH named AS (
    SELECT * FROM unnest(
        %(event_ids)s::uuid[], %(entity_ids)s::uuid[], %(timestamps)s::timestamptz[], %(subjects)s::bool[]
    ) WITH ORDINALITY AS named(event_id, entity_id, at, subject, position)
), known AS (
    SELECT entity_id AS id FROM entities_entitydemand WHERE entity_id IN (SELECT entity_id FROM named)
    ORDER BY entity_id FOR NO KEY UPDATE
), batch AS (
    SELECT DISTINCT ON (event_id) event_id, entity_id, at, subject
    FROM named WHERE entity_id IN (SELECT id FROM known)
    ORDER BY event_id, position
), fresh AS ({inbox_insert_sql(source="batch")}
), counted AS (
    SELECT batch.entity_id, batch.at, batch.subject FROM batch JOIN fresh USING (event_id)
), per_entity AS (
    SELECT entity_id, count(*) FILTER (WHERE subject) AS score_amount, count(*) AS count_amount,
           min(at) AS first_at, max(at) AS last_at
    FROM counted GROUP BY entity_id
), counters AS ({demand_counters_add_sql(source="per_entity")}
), per_hour AS (
    SELECT entity_id, date_trunc('hour', at, 'UTC') AS hour, count(*) FILTER (WHERE subject) AS amount,
           count(*) AS returned
    FROM counted GROUP BY 1, 2
), {demand_add_ctes(source="per_hour")}
SELECT (SELECT array_agg(id) FROM known), (SELECT count(*) FROM fresh)
"""  # noqa: S608 - built from constants only


def query_signals_apply(*, signals: Sequence[QuerySignal], columns: SignalColumns | None = None) -> ApplyResult:
    """Count `signals` exactly once: inbox, entity counters, hourly buckets and windows in one statement.

    The QuerySignal batch handler. Signals naming an entity that does not exist are rejected (not
    counted). Counters move only by database-side arithmetic; `updated_at` (content changes) is never
    touched. Runs in the caller's transaction when there is one. `columns`: `signal_columns(signals)`,
    when the caller has it.
    """
    result = ApplyResult()
    if not signals:
        return result
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        demand_windows_lock_shared(cursor)
        cursor.execute(_SIGNALS_APPLY_SQL, (columns or signal_columns(signals))._asdict())
        known_ids, counted = cursor.fetchone()
    known = set(known_ids or ())
    valid = 0
    for index, signal in enumerate(signals):
        if signal.entity_id in known:
            valid += 1
        else:
            result.rejected[index] = f"unknown entity_id {signal.entity_id}"
    result.applied = counted
    result.duplicates = valid - counted
    return result


def query_signal_batch_apply(events: Sequence[QuerySignal], prepared: SignalColumns | None) -> ApplyResult:
    """The consumer's entry point (streams.handlers.BatchHandler.apply)."""
    return query_signals_apply(signals=events, columns=prepared)


def query_signal_batch_prepare(events: Sequence[QuerySignal]) -> SignalColumns:
    """Built in the worker's read-ahead thread, while the previous batch commits."""
    return signal_columns(events)


DEMAND_REBUILD_CHUNK = 1000


def demand_counters_rebuild(*, entity_ids: Sequence[uuid.UUID], audit_from: datetime) -> int:
    """Set query_count and demand_score of `entity_ids` to their bucket totals where they differ; return how many.

    The caller picks the entities (analytics.selectors.demand_counters_audit). Only entities whose whole
    history is still in the buckets (first queried at or after `audit_from`, or never) move, through the
    same counter arithmetic as the worker's (an addition of the difference). Each chunk first locks its
    demand rows in entity id order, as the worker does, so no batch can commit buckets for them between
    the sum and the update.
    """
    ids = sorted(set(entity_ids))
    fixed = 0
    for start in range(0, len(ids), DEMAND_REBUILD_CHUNK):
        chunk = ids[start : start + DEMAND_REBUILD_CHUNK]
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_REBUILD_COUNTERS_SQL, {"ids": pg_array_literal(chunk), "audit_from": audit_from})
            fixed += cursor.fetchone()[0]
    return fixed


_REBUILD_COUNTERS_SQL = f"""
WITH locked AS (
    SELECT entity_id, query_count, demand_score FROM entities_entitydemand
    WHERE entity_id = ANY(%(ids)s::uuid[])
      AND (first_queried_at IS NULL OR first_queried_at >= %(audit_from)s)
    ORDER BY entity_id FOR NO KEY UPDATE
), totals AS (
    SELECT locked.entity_id, coalesce(sum(b.count), 0) AS score_total, coalesce(sum(b.returned), 0) AS count_total,
           locked.query_count, locked.demand_score
    FROM locked LEFT JOIN analytics_demandbucket AS b ON b.entity_id = locked.entity_id
    GROUP BY locked.entity_id, locked.query_count, locked.demand_score
), differences AS (
    SELECT entity_id, score_total - demand_score AS score_amount, count_total - query_count AS count_amount,
           NULL::timestamptz AS first_at, NULL::timestamptz AS last_at
    FROM totals WHERE query_count <> count_total OR demand_score <> score_total
), moved AS ({demand_counters_add_sql(source="differences")}
    RETURNING 1
)
SELECT count(*) FROM moved
"""  # noqa: S608 - built from constants only
