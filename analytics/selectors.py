"""Reads of demand: stats, top, trending, stale, the refresh queue and its lifecycle, one entity's demand and its
timeseries. They only read.

The stored windows are relative to the hour the worker last rolled them to; a reader whose hour differs
(the worker stopped, an hour just closed, a pinned `now`) computes the difference on the fly from the
buckets (`demand_windows_sql`) and never rolls them itself.

Each definition (windows, trending, stale / needs_update, query frequency, growth) is implemented once
here; the API, the admin, the dashboard and the benchmark call these functions. Every function takes
`now` (default: the current time) so callers and tests can pin the clock. Results are plain data.

Raw SQL runs on `kernel.replica.read_connection()`, so inside `replica_reads()` (the report views) every
read of a selector, ORM or raw, goes to the replica when one is configured.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import BooleanField, Count, ExpressionWrapper, F, Max, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.expressions import RawSQL
from django.db.models.functions import Coalesce
from django.db.models.lookups import GreaterThan, GreaterThanOrEqual
from django.utils import timezone

from analytics.definitions import (
    QUESTION_MEASURES,
    TIMEFRAME_HOURS,
    WINDOW_COLUMNS,
    WINDOW_SPAN_HOURS,
    RefreshPriority,
    hour_floor,
    question_window_first_hour,
    refresh_priority,
    stale_criteria,
    trend_score_sql,
    trending_sql,
    window_deltas_sql,
    window_sums_sql,
)
from analytics.models import (
    AlertEvaluation,
    AlertKind,
    AlertRule,
    DemandBucket,
    DemandTotal,
    DemandWindowState,
    QuestionWindowState,
    RefreshQueueState,
)
from entities.models import (
    DEMAND_ORDER,
    Entity,
    EntityDemand,
    EntityType,
    RefreshRequest,
)
from entities.selectors import answers_unsettled
from kernel.iterables import batched
from kernel.replica import read_connection
from streams.events import ROLE_SUBJECT
from streams.selectors import dead_letter_length, outbox_backlog, pipeline_streams, stream_waiting, workers_live

TIMEFRAMES = tuple(TIMEFRAME_HOURS)
INTERVALS = ("day", "hour")
ENTITY_TYPES = tuple(EntityType.values)
_COUNTERS = {
    "demand_score": F("demand__demand_score"),
    "query_count": F("demand__query_count"),
    "last_queried_at": F("demand__last_queried_at"),
}


@dataclass(frozen=True)
class WindowBounds:
    """The first and last bucket hour (inclusive) of a timeframe's current and previous windows."""

    timeframe: str
    current_first: datetime
    current_last: datetime
    previous_first: datetime
    previous_last: datetime


def demand_window_bounds(*, timeframe: str, now: datetime | None = None) -> WindowBounds:
    """h0 = start of the current UTC hour; current = [h0 - (H-1)h, h0], previous = [h0 - (2H-1)h, h0 - Hh]."""
    hours = TIMEFRAME_HOURS[timeframe]
    h0 = hour_floor(now or timezone.now())
    return WindowBounds(
        timeframe=timeframe,
        current_first=h0 - timedelta(hours=hours - 1),
        current_last=h0,
        previous_first=h0 - timedelta(hours=2 * hours - 1),
        previous_last=h0 - timedelta(hours=hours),
    )


def demand_query_frequency(query_count: int) -> str:
    """0 never, 1-10 low, 11-50 medium, 51-100 high, over 100 very_high."""
    if query_count <= 0:
        return "never"
    if query_count <= 10:
        return "low"
    if query_count <= 50:
        return "medium"
    if query_count <= 100:
        return "high"
    return "very_high"


def demand_growth_rate(*, current: int, previous: int) -> float | None:
    """(current - previous) / previous; None when there was nothing in the previous window."""
    if previous == 0:
        return None
    return (current - previous) / previous


def _live_window_sql(timeframe: str, *, stored: str = "w", open_hour: str = "o") -> tuple[str, str]:
    """SQL for a timeframe's (current, previous) counts: the stored window plus the open hour's bucket."""
    if timeframe not in TIMEFRAME_HOURS:
        raise ValueError(f"unknown timeframe {timeframe!r}")
    return (
        f"(coalesce({stored}.current_{timeframe}, 0) + coalesce({open_hour}.count, 0))",
        f"coalesce({stored}.previous_{timeframe}, 0)",
    )


def _open_hour_sql(timeframe: str, windows: str) -> str:
    """CTEs `open_hour` and `live_open`: the entities with events in the open hour h0, with their stored
    (stored_cur, stored_prev) and live (cur, prev) counts for `timeframe`. The open hour holds a small
    share of the entities: their window rows are fetched by id in one index scan."""
    current, previous = _live_window_sql(timeframe)
    return f"""
        open_hour AS MATERIALIZED (SELECT entity_id, count FROM analytics_demandbucket WHERE hour = %(h0)s),
        open_windows AS MATERIALIZED (
            SELECT entity_id, current_{timeframe}, previous_{timeframe} FROM {windows} AS stored
            WHERE entity_id = ANY(ARRAY(SELECT entity_id FROM open_hour))
        ),
        live_open AS (
            SELECT o.entity_id, coalesce(w.current_{timeframe}, 0) AS stored_cur,
                   coalesce(w.previous_{timeframe}, 0) AS stored_prev, {current} AS cur, {previous} AS prev
            FROM open_hour AS o LEFT JOIN open_windows AS w ON w.entity_id = o.entity_id
        )"""  # noqa: S608 - column names come from TIMEFRAME_HOURS only


# A stored window row whose entity has no events in the open hour (probed in the bucket's unique index).
_NOT_OPEN = "NOT EXISTS (SELECT 1 FROM analytics_demandbucket AS b WHERE b.entity_id = w.entity_id AND b.hour = %(h0)s)"


def demand_trending_condition(*, timeframe: str, now: datetime | None = None, prefix: str = "demand_window__") -> Q:
    """Trending over `timeframe` as a condition on Entity querysets (for admin filters and annotations).

    The ORM form of `analytics.definitions.trending_sql` over the live window (stored + open hour);
    tests hold it equal to `demand_trending`. `prefix` is the path from Entity to its DemandWindow.
    When the stored windows are not as of `now`'s hour, the condition reads them through
    `demand_windows_sql` instead (an id subquery).
    """
    if timeframe not in TIMEFRAME_HOURS:
        raise ValueError(f"unknown timeframe {timeframe!r}")
    h0 = hour_floor(now or timezone.now())
    windows = demand_windows_sql(h0=h0)
    if windows != "analytics_demandwindow":
        current_sql, previous_sql = _live_window_sql(timeframe)
        trending = trending_sql(current=current_sql, previous=previous_sql, minimum="%s")
        return Q(
            pk__in=RawSQL(
                f"""
                SELECT coalesce(w.entity_id, o.entity_id) FROM {windows} AS w
                FULL JOIN (SELECT entity_id, count FROM analytics_demandbucket WHERE hour = %s) AS o
                    ON o.entity_id = w.entity_id
                WHERE {trending}
                """,  # noqa: S608 - built from constants only
                [h0, settings.TRENDING_MIN_QUERIES],
            )
        )
    open_hour = DemandBucket.objects.filter(entity_id=OuterRef("pk"), hour=h0).values("count")[:1]
    current = Coalesce(F(f"{prefix}current_{timeframe}"), 0) + Coalesce(Subquery(open_hour), 0)
    previous = Coalesce(F(f"{prefix}previous_{timeframe}"), 0)
    return Q(GreaterThanOrEqual(current, settings.TRENDING_MIN_QUERIES)) & Q(GreaterThan(current, previous))


def demand_stale_condition(
    *, now: datetime | None = None, min_demand_score: int | None = None, days_since_update: int | None = None
) -> Q:
    """Stale (needs_update): demand_score >= min_demand_score and updated_at older than days_since_update days.

    A condition on Entity querysets: the counters are on the entity's demand row (`demand__`), the
    content time on the entity.
    """
    default_score, default_days = stale_criteria()
    if min_demand_score is None:
        min_demand_score = default_score
    if days_since_update is None:
        days_since_update = default_days
    return Q(
        demand__demand_score__gte=min_demand_score,
        updated_at__lt=demand_stale_cutoff(now=now, days=days_since_update),
    )


def demand_stale_cutoff(*, now: datetime | None = None, days: int) -> datetime:
    """Content updated before this moment is older than `days` days."""
    return (now or timezone.now()) - timedelta(days=days)


def _timestamp_sql(moment: datetime) -> str:
    return f"'{moment.isoformat()}'::timestamptz"


def demand_windows_sql(*, h0: datetime) -> str:
    """A relation of (entity_id, WINDOW_COLUMNS..., trend_score_<timeframe>...): the stored windows as of `h0`.

    The stored table when the worker has rolled it to `h0` (the usual case); otherwise the stored rows
    plus the buckets that enter or leave a window between their hour and `h0`, or, when they are 60
    days or more apart (or never built), the windows computed from the buckets alone. Read-only, so a
    reader answers correctly while the worker is not running, only more slowly.
    """
    stored = DemandWindowState.objects.filter(pk=1).values_list("hour", flat=True).first()
    if stored == h0:
        return "analytics_demandwindow"
    if stored is None or abs(h0 - stored) >= timedelta(hours=WINDOW_SPAN_HOURS):
        windows = window_sums_sql(h0=_timestamp_sql(h0))
    else:
        deltas = window_deltas_sql(old=_timestamp_sql(stored), new=_timestamp_sql(h0))
        moved = ", ".join(f"coalesce(s.{c}, 0) + coalesce(d.{c}, 0) AS {c}" for c in WINDOW_COLUMNS)
        windows = f"""
            SELECT coalesce(s.entity_id, d.entity_id) AS entity_id, {moved}
            FROM analytics_demandwindow AS s FULL JOIN ({deltas}) AS d ON d.entity_id = s.entity_id"""  # noqa: S608
    scores = ", ".join(
        f"{trend_score_sql(current=f'current_{t}', previous=f'previous_{t}')} AS trend_score_{t}" for t in TIMEFRAMES
    )
    return f"(SELECT windows.*, {scores} FROM ({windows}) AS windows)"  # noqa: S608 - built from constants only


def _recent_candidates_count(*, minimum: int, cutoff: datetime, most_are_candidates: bool) -> int:
    """How many entities updated at or after `cutoff` have demand_score >= minimum.

    Stale = candidates (kept in the totals) minus these. The score and the content time are in two
    tables, so this is a join of the recently updated entities with the smaller side of the demand rows:
    the candidates, or, when most entities are candidates, the rest (recent entities minus those).
    """
    recent = Entity.objects.filter(updated_at__gte=cutoff)
    if most_are_candidates:
        return recent.count() - recent.filter(demand__demand_score__lt=minimum).count()
    return recent.filter(demand__demand_score__gte=minimum).count()


def demand_stats(*, now: datetime | None = None) -> dict:
    """Totals over all entities, the 7d trending count and the default-criteria stale count."""
    now = now or timezone.now()
    minimum, days = stale_criteria()
    built_for = DemandWindowState.objects.filter(pk=1).values_list("stale_min_demand_score", flat=True).first()
    per_type = list(
        DemandTotal.objects.order_by()
        .values("entity_type")
        .annotate(
            entities=Sum("entities"),
            queries=Sum("queries"),
            with_demand=Sum("with_demand"),
            score_sum=Sum("score_sum"),
            stale_candidates=Sum("stale_candidates"),
        )
    )
    if built_for == minimum:
        candidates = sum(row["stale_candidates"] for row in per_type)
    else:
        # The totals count candidates at another threshold until the worker rebuilds them
        # (analytics.demand.demand_totals_sync): count them here, from the demand_score index.
        candidates = EntityDemand.objects.filter(demand_score__gte=minimum).count()
    entities = sum(row["entities"] for row in per_type)
    with_demand = sum(row["with_demand"] for row in per_type)
    score_sum = sum(row["score_sum"] for row in per_type)
    top_types = sorted(
        (
            {
                "type": row["entity_type"],
                "count": row["with_demand"],
                "avg_score": round(row["score_sum"] / row["with_demand"], 1),
            }
            for row in per_type
            if row["with_demand"]
        ),
        key=lambda item: (-item["count"], item["type"]),
    )
    return {
        "total_entities": entities,
        "total_queries": sum(row["queries"] for row in per_type),
        "entities_with_demand": with_demand,
        "avg_demand_score": round(score_sum / with_demand, 1) if with_demand else 0,
        "trending_entities": demand_trending_count(timeframe="7d", now=now),
        "needs_update": candidates
        - _recent_candidates_count(
            minimum=minimum,
            cutoff=demand_stale_cutoff(now=now, days=days),
            most_are_candidates=2 * candidates > entities,
        ),
        "top_entity_types": top_types,
    }


def demand_top(
    *,
    limit: int = 10,
    offset: int = 0,
    entity_type: str | None = None,
    min_score: int = 0,
    now: datetime | None = None,
) -> list[dict]:
    """Entities by demand_score desc, then query_count desc, then name, with their needs_update flag."""
    # Filtered and ordered on the demand row (its copy of entity_type included), so the page is read
    # from the demand table's indexes; only the page's entity rows are fetched.
    entities = Entity.objects.filter(demand__demand_score__gte=min_score)
    if entity_type:
        entities = entities.filter(demand__entity_type=entity_type)
    rows = (
        entities.order_by(*DEMAND_ORDER)
        .annotate(needs_update=ExpressionWrapper(demand_stale_condition(now=now), output_field=BooleanField()))
        .values(
            "id",
            "name",
            "entity_type",
            "needs_update",
            last_updated_at=F("updated_at"),
            **_COUNTERS,
        )[offset : offset + limit]
    )
    return list(rows)


def demand_trending_count(*, timeframe: str = "7d", now: datetime | None = None) -> int:
    """How many entities trend over `timeframe`."""
    h0 = hour_floor(now or timezone.now())
    windows = demand_windows_sql(h0=h0)
    stored = trending_sql(current=f"current_{timeframe}", previous=f"previous_{timeframe}", minimum="%(min)s")
    # All stored rows that trend (from the partial index alone), corrected for the open hour's entities.
    sql = f"""
        WITH {_open_hour_sql(timeframe, windows)}
        SELECT (SELECT count(*) FROM {windows} AS stored WHERE {stored})
             - (SELECT count(*) FROM live_open
                WHERE {trending_sql(current="stored_cur", previous="stored_prev", minimum="%(min)s")})
             + (SELECT count(*) FROM live_open WHERE {trending_sql(current="cur", previous="prev", minimum="%(min)s")})
    """  # noqa: S608 - column names come from TIMEFRAME_HOURS only
    with read_connection().cursor() as cursor:
        cursor.execute(sql, {"h0": h0, "min": settings.TRENDING_MIN_QUERIES})
        return cursor.fetchone()[0]


def demand_trending(
    *, timeframe: str = "7d", limit: int = 10, now: datetime | None = None, trend_score_above: float | None = None
) -> list[dict]:
    """Trending entities by trend_score desc, then current-window queries desc, then name.

    `trend_score_above`: only those whose trend_score is above it (the demand spike alert).
    """
    h0 = hour_floor(now or timezone.now())
    windows = demand_windows_sql(h0=h0)
    stored_current, stored_previous = f"w.current_{timeframe}", f"w.previous_{timeframe}"
    # The open hour's entities are scored on their live counts; the others come in stored-trend order
    # from the partial index. WITH TIES keeps every row that ties on (score, current), so the final
    # order by name is exact; names are read for those few rows only.
    sql = f"""
        WITH {_open_hour_sql(timeframe, windows)},
        candidates AS (
            SELECT entity_id, cur, prev FROM live_open
            WHERE {trending_sql(current="cur", previous="prev", minimum="%(min)s")}
              AND {trend_score_sql(current="cur", previous="prev")} > %(above)s
            UNION ALL
            (
                SELECT w.entity_id, {stored_current}, {stored_previous}
                FROM {windows} AS w
                WHERE {trending_sql(current=stored_current, previous=stored_previous, minimum="%(min)s")}
                  AND w.trend_score_{timeframe} > %(above)s AND {_NOT_OPEN}
                ORDER BY w.trend_score_{timeframe} DESC, {stored_current} DESC
                FETCH FIRST %(limit)s ROWS WITH TIES
            )
        ),
        best AS (
            SELECT entity_id, cur, prev, {trend_score_sql(current="cur", previous="prev")} AS score
            FROM candidates
            ORDER BY score DESC, cur DESC
            FETCH FIRST %(limit)s ROWS WITH TIES
        )
        SELECT best.entity_id, best.cur, best.prev, best.score,
               e.name, e.entity_type, d.demand_score, d.last_queried_at
        FROM best JOIN entities_entity AS e ON e.id = best.entity_id
        JOIN entities_entitydemand AS d ON d.entity_id = best.entity_id
        ORDER BY best.score DESC, best.cur DESC, e.name
        LIMIT %(limit)s
    """  # noqa: S608 - column names come from TIMEFRAME_HOURS only
    with read_connection().cursor() as cursor:
        # Without a bound every trending entity qualifies (a trending one is rising: its score is > 0).
        above = float("-inf") if trend_score_above is None else trend_score_above
        cursor.execute(sql, {"h0": h0, "min": settings.TRENDING_MIN_QUERIES, "limit": limit, "above": above})
        rows = cursor.fetchall()
    return [
        {
            "id": entity_id,
            "name": name,
            "entity_type": entity_type,
            "current_period_queries": cur,
            "previous_period_queries": prev,
            "growth_rate": demand_growth_rate(current=cur, previous=prev),
            "trend_score": score,
            "demand_score": demand_score,
            "last_queried_at": last_queried_at,
        }
        for entity_id, cur, prev, score, name, entity_type, demand_score, last_queried_at in rows
    ]


def demand_stale(
    *,
    limit: int = 10,
    min_demand_score: int | None = None,
    days_since_update: int | None = None,
    now: datetime | None = None,
) -> list[dict]:
    """Stale entities by demand_score desc (then query_count desc, name), with their last refresh request."""
    now = now or timezone.now()
    stale = demand_stale_condition(now=now, min_demand_score=min_demand_score, days_since_update=days_since_update)
    # One query: candidates come in demand order from the demand table's index (or, for a rare old
    # cutoff, from the entity's updated_at index), and PostgreSQL looks up the latest refresh request
    # only for the rows of the page (the subquery is evaluated after the sort and limit).
    latest_refresh = RefreshRequest.objects.filter(entity=OuterRef("pk")).order_by("-requested_at")
    rows = (
        Entity.objects.filter(stale)
        .order_by(*DEMAND_ORDER)
        .annotate(refresh_requested_at=Subquery(latest_refresh.values("requested_at")[:1]))
        .values("id", "name", "entity_type", "updated_at", "refresh_requested_at", **_COUNTERS)[:limit]
    )
    return [
        {**row, "last_updated_at": row["updated_at"], "days_since_update": (now - row.pop("updated_at")).days}
        for row in rows
    ]


def refresh_requests_open(*, definition: RefreshPriority, now: datetime) -> QuerySet[RefreshRequest]:
    """The open refresh requests that mark their entity as requested: done_at null, made within requested_hours."""
    return RefreshRequest.objects.filter(done_at__isnull=True, requested_at__gte=definition.requested_since(now))


# The queue scored in one statement: the stale entities (the ORM's `demand_stale_condition`, compiled;
# narrow columns only, so wide entity rows are read for a page alone), their live windows (stored + open
# hour), priority and tier. All arithmetic is float8 (numeric made it several times slower at 100,000
# entities), and the order ends on the entity id so a page is a top-N sort or an index range.
_REFRESH_RANKED_SQL = """
WITH candidates AS ({candidates}),
scored AS (
    SELECT c.id, c.entity_type, c.demand_score, {recent} AS recent, {trend} AS trend,
           date_part('epoch', %s::timestamptz - c.updated_at) / 86400.0::float8 AS age_days
    FROM candidates AS c(id, updated_at, demand_score, entity_type)
    LEFT JOIN {windows} AS w ON w.entity_id = c.id
    LEFT JOIN analytics_demandbucket AS o ON o.entity_id = c.id AND o.hour = %s
)
SELECT id, entity_type, demand_score, recent, trend, age_days, {priority} AS priority, {critical} AS critical
FROM scored
"""
REFRESH_QUEUE_ORDER = "critical DESC, priority DESC, demand_score DESC, id"
# The longest page the snapshot serves (the API's maximum limit); longer ones are scored live.
REFRESH_QUEUE_PAGE_MAX = 500

# A page of the live queue, with the total, from the ranked rows materialized once.
_REFRESH_PAGE_SQL = """
WITH ranked AS MATERIALIZED (SELECT * FROM ({ranked}) AS r {where}),
page AS (SELECT * FROM ranked ORDER BY {order} LIMIT %s)
SELECT p.id, e.name, e.entity_type, e.updated_at, p.demand_score, p.recent, p.trend, p.age_days, p.priority,
       p.critical, (SELECT count(*) FROM ranked) AS total
FROM page AS p JOIN entities_entity AS e ON e.id = p.id
ORDER BY {order}
"""
# A page of the scored snapshot (analytics_refreshqueueentry), from its order index; the total comes from
# the counts stored with it.
_REFRESH_SNAPSHOT_PAGE_SQL = """
WITH page AS (
    SELECT entity_id AS id, demand_score, recent_demand AS recent, trend_score AS trend, age_days, priority, critical
    FROM analytics_refreshqueueentry {where}
    ORDER BY {order} LIMIT %s
)
SELECT p.id, e.name, e.entity_type, e.updated_at, p.demand_score, p.recent, p.trend, p.age_days, p.priority,
       p.critical, %s AS total
FROM page AS p JOIN entities_entity AS e ON e.id = p.id
ORDER BY {order}
"""


def refresh_queue_ranked_sql(
    *, definition: RefreshPriority, now: datetime, entity_type: str | None = None
) -> tuple[str, list]:
    """The queue's statement: (SQL, params) of every queued entity, scored as of `now`, unordered.

    Columns: id, entity_type, demand_score, recent, trend, age_days, priority, critical. The live queue
    and the snapshot (`analytics.services.refresh_queue_snapshot_build`) both run it.
    """
    stale = demand_stale_condition(
        now=now,
        min_demand_score=definition.stale_min_demand_score,
        days_since_update=definition.stale_days_since_update,
    )
    candidates = Entity.objects.filter(stale)
    if entity_type is not None:
        # The demand row's copy of the type: the candidates then need only narrow columns.
        candidates = candidates.filter(demand__entity_type=entity_type)
    candidates_sql, candidates_params = (
        candidates.order_by().values_list("id", "updated_at", "demand__demand_score", "demand__entity_type")
    ).query.sql_with_params()
    h0 = hour_floor(now)
    recent, _previous = _live_window_sql(definition.demand_timeframe)
    trend_current, trend_previous = _live_window_sql(definition.trend_timeframe)
    sql = _REFRESH_RANKED_SQL.format(
        candidates=candidates_sql,
        recent=recent,
        trend=trend_score_sql(current=trend_current, previous=trend_previous),
        windows=demand_windows_sql(h0=h0),
        priority=definition.priority_sql(recent="recent", age_days="age_days", trend="trend"),
        critical=definition.critical_sql(recent="recent", age_days="age_days"),
    )
    return sql, [*candidates_params, now, h0]


def _refresh_snapshot(definition: RefreshPriority, now: datetime) -> tuple[datetime, list] | None:
    """(scored at, counts) of the snapshot if it may answer for `now`: scored with this definition, recently."""
    if settings.REFRESH_QUEUE_SNAPSHOT_SECONDS <= 0:
        return None
    state = RefreshQueueState.objects.filter(pk=1).values_list("computed_at", "definition", "counts").first()
    if state is None:
        return None
    computed_at, scored_with, counts = state
    # Two intervals: one chore may be late by a batch; after that the worker is not running.
    fresh = now - computed_at <= timedelta(seconds=2 * settings.REFRESH_QUEUE_SNAPSHOT_SECONDS)
    return (computed_at, counts) if fresh and computed_at <= now and scored_with == definition.as_dict() else None


def refresh_queue(
    *,
    limit: int | None = 50,
    entity_type: str | None = None,
    critical: bool | None = None,
    min_demand_score: int | None = None,
    days_since_update: int | None = None,
    now: datetime | None = None,
) -> dict:
    """The refresh queue: stale entities by the priority of `analytics.definitions.RefreshPriority`.

    `critical` True/False keeps only the critical tier or only the rest; `limit` None gives the whole
    queue (request_stale_updates). Returns {"entities", "total" (the whole queue with these filters),
    "limit", "definition" (the weights and thresholds in force), "as_of" (when the priorities were scored)}.

    Without a pinned `now`, a page comes from the snapshot the worker scores every
    REFRESH_QUEUE_SNAPSHOT_SECONDS with the same statement (at most two intervals old; `as_of` says when);
    otherwise, and for the whole queue or other stale criteria, it is scored now. Requested flags
    (refresh_requested_at) are always read now.
    """
    pinned = now is not None
    now = now or timezone.now()
    definition = refresh_priority(min_demand_score=min_demand_score, days_since_update=days_since_update)
    conditions, condition_params = [], []
    if critical is not None:
        conditions.append("critical = %s")
        condition_params.append(critical)
    snapshot = None
    if (
        not pinned
        and limit is not None
        and limit <= REFRESH_QUEUE_PAGE_MAX
        and min_demand_score is None
        and days_since_update is None
    ):
        snapshot = _refresh_snapshot(definition, now)
    if snapshot is not None:
        as_of, counts = snapshot
        if entity_type is not None:
            conditions.append("entity_type = %s")
            condition_params.append(entity_type)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        total = sum(
            count
            for kind, is_critical, count in counts
            if entity_type in (None, kind) and critical in (None, is_critical)
        )
        sql = _REFRESH_SNAPSHOT_PAGE_SQL.format(where=where, order=REFRESH_QUEUE_ORDER)
        params = [*condition_params, limit, total]
    else:
        as_of = now
        ranked, ranked_params = refresh_queue_ranked_sql(definition=definition, now=now, entity_type=entity_type)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        sql = _REFRESH_PAGE_SQL.format(ranked=ranked, where=where, order=REFRESH_QUEUE_ORDER)
        params = [*ranked_params, *condition_params, limit]
    with read_connection().cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    requested: dict[uuid.UUID, datetime] = {}
    open_requests = refresh_requests_open(definition=definition, now=now)
    for ids in batched([row[0] for row in rows], 10_000):
        requested.update(
            open_requests.filter(entity_id__in=ids)
            .values("entity_id")
            .annotate(latest=Max("requested_at"))
            .values_list("entity_id", "latest")
        )
    entities = [
        {
            "id": entity_id,
            "name": name,
            "entity_type": kind,
            "priority": priority,
            "critical": is_critical,
            "demand_score": demand_score,
            "recent_demand": recent_queries,
            "days_since_update": int(age_days),
            "trend_score": trend,
            "last_updated_at": updated_at,
            "refresh_requested_at": requested.get(entity_id),
        }
        for (entity_id, name, kind, updated_at, demand_score, recent_queries, trend, age_days, priority, is_critical,
             _total) in rows
    ]  # fmt: skip
    return {
        "entities": entities,
        "total": rows[0][-1] if rows else 0,
        "limit": limit,
        "definition": definition.as_dict(),
        "as_of": as_of,
    }


# Time to refresh of the requests done in [since, now], in seconds: count, median and p90 (percentile_cont,
# linear interpolation), served by the partial index of done requests.
_REFRESH_DONE_SQL = """
SELECT count(*),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM (done_at - requested_at))),
       percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM (done_at - requested_at)))
FROM entities_refreshrequest
WHERE done_at IS NOT NULL AND done_at >= %(since)s AND done_at <= %(now)s
"""
# The stale-answer rate's counts over the answers asked in [since, now]: all of them, and those whose oldest
# subject content, as served (subject_content_at), was older than the stale threshold (null: no subject, or
# its content time unknown: not stale). One index-only scan of (asked_at) INCLUDE (subject_content_at).
_STALE_ANSWERS_SQL = """
SELECT count(*), count(*) FILTER (WHERE subject_content_at < asked_at - %(days)s * interval '1 day')
FROM entities_answerrecord
WHERE asked_at >= %(since)s AND asked_at <= %(now)s
"""


def refresh_stats(*, timeframe: str = "7d", now: datetime | None = None) -> dict:
    """The refresh lifecycle over the timeframe: open requests, requests done and their time to refresh, and
    the stale-answer rate (the share of answers that served a stale subject entity)."""
    if timeframe not in TIMEFRAME_HOURS:
        raise ValueError(f"unknown timeframe {timeframe!r}")
    now = now or timezone.now()
    since = now - timedelta(hours=TIMEFRAME_HOURS[timeframe])
    definition = refresh_priority()
    _score, days = stale_criteria()
    open_requests = RefreshRequest.objects.filter(done_at__isnull=True).aggregate(
        open=Count("pk"), overdue=Count("pk", filter=Q(requested_at__lt=definition.requested_since(now)))
    )
    with read_connection().cursor() as cursor:
        cursor.execute(_REFRESH_DONE_SQL, {"since": since, "now": now})
        done, median, p90 = cursor.fetchone()
        cursor.execute(_STALE_ANSWERS_SQL, {"since": since, "now": now, "days": days})
        answers, stale_answers = cursor.fetchone()
    return {
        "timeframe": timeframe,
        "open": open_requests["open"],
        "open_overdue": open_requests["overdue"],
        "done": done,
        "time_to_refresh_median_seconds": median,
        "time_to_refresh_p90_seconds": p90,
        "answers": answers,
        "stale_answers": stale_answers,
        "stale_answer_rate": stale_answers / answers if answers else None,
        "stale_days_since_update": days,
    }


def demand_windows(*, entity_id: uuid.UUID, now: datetime | None = None) -> dict[str, dict]:
    """One entity's current and previous window counts, growth, trend_score and trending flag per timeframe."""
    h0 = hour_floor(now or timezone.now())
    windows = demand_windows_sql(h0=h0)
    columns = []
    for timeframe in TIMEFRAMES:
        current, previous = _live_window_sql(timeframe)
        columns += [
            current,
            previous,
            trend_score_sql(current=current, previous=previous),
            trending_sql(current=current, previous=previous, minimum="%(min)s"),
        ]
    sql = f"""
        SELECT {", ".join(columns)}
        FROM (
            SELECT sum(count) AS count FROM analytics_demandbucket WHERE entity_id = %(id)s AND hour = %(h0)s
        ) AS o
        LEFT JOIN {windows} AS w ON w.entity_id = %(id)s
    """  # noqa: S608 - column names come from TIMEFRAME_HOURS only
    with read_connection().cursor() as cursor:
        cursor.execute(sql, {"id": entity_id, "h0": h0, "min": settings.TRENDING_MIN_QUERIES})
        row = cursor.fetchone()
    windows = {}
    for index, timeframe in enumerate(TIMEFRAMES):
        current, previous, score, trending = row[4 * index : 4 * index + 4]
        windows[timeframe] = {
            "current_period_queries": current,
            "previous_period_queries": previous,
            "growth_rate": demand_growth_rate(current=current, previous=previous),
            "trend_score": score,
            "trending": trending,
        }
    return windows


def demand_entity(*, entity: Entity, now: datetime | None = None) -> dict:
    """An entity's demand: counters, query_frequency, needs_update and its windows (7d at the top level)."""
    now = now or timezone.now()
    windows = demand_windows(entity_id=entity.pk, now=now)
    # The counters as of now (not as of when `entity` was loaded), with the stale flag, in one query.
    demand = (
        Entity.objects.filter(pk=entity.pk)
        .values(
            first_queried_at=F("demand__first_queried_at"),
            needs_update=ExpressionWrapper(demand_stale_condition(now=now), output_field=BooleanField()),
            **_COUNTERS,
        )
        .get()
    )
    week = windows["7d"]
    return {
        "id": entity.pk,
        "name": entity.name,
        "entity_type": entity.entity_type,
        "demand_score": demand["demand_score"],
        "query_count": demand["query_count"],
        "first_queried_at": demand["first_queried_at"],
        "last_queried_at": demand["last_queried_at"],
        "query_frequency": demand_query_frequency(demand["query_count"]),
        "trending": week["trending"],
        "last_updated_at": entity.updated_at,
        "needs_update": demand["needs_update"],
        "current_period_queries": week["current_period_queries"],
        "previous_period_queries": week["previous_period_queries"],
        "growth_rate": week["growth_rate"],
        "trend_score": week["trend_score"],
        "windows": windows,
        "top_questions": questions_for_entity(entity_id=entity.pk, now=now),
    }


def demand_timeseries(
    *, entity_id: uuid.UUID | None, days: int = 30, interval: str = "day", now: datetime | None = None
) -> dict:
    """Counts per UTC day or hour over the last `days` days (ending with the current one), zeros included.

    `entity_id=None` gives the totals over all entities (the admin dashboard's chart).
    """
    h0 = hour_floor(now or timezone.now())
    if interval == "hour":
        step, last = timedelta(hours=1), h0
        first = h0 - timedelta(hours=24 * days - 1)
    else:
        step, last = timedelta(days=1), h0.replace(hour=0)
        first = last - timedelta(days=days - 1)
    counts: dict[datetime, int] = {}
    buckets = DemandBucket.objects.filter(hour__gte=first, hour__lt=last + step)
    if entity_id is not None:
        buckets = buckets.filter(entity_id=entity_id)
    for hour, count in buckets.values("hour").annotate(total=Sum("count")).order_by().values_list("hour", "total"):
        key = hour if interval == "hour" else hour.replace(hour=0)
        counts[key] = counts.get(key, 0) + count
    points = []
    moment = first
    while moment <= last:
        points.append({"start": moment, "count": counts.get(moment, 0)})
        moment += step
    return {
        "entity_id": entity_id,
        "interval": interval,
        "days": days,
        "start": first,
        "end": last + step,
        "total_queries": sum(point["count"] for point in points),
        "timeseries": points,
    }


@dataclass(frozen=True)
class DemandAudit:
    """Entities whose counters disagree with their hourly buckets.

    Only entities whose whole history is still in the buckets are compared: those never queried or
    first queried at or after `audit_from` (pruning deletes buckets older than the retention, so an
    older entity's buckets no longer add up to its counters, correctly). The rest are counted as
    `skipped_history_pruned`.
    """

    audit_from: datetime
    checked: int
    skipped_history_pruned: int
    differences: list[dict]


def demand_audit_from(*, now: datetime | None = None) -> datetime:
    """The earliest first_queried_at whose buckets no prune can have touched yet."""
    retention = timedelta(days=settings.DEMAND_BUCKET_RETENTION_DAYS)
    return hour_floor((now or timezone.now()) - retention) + timedelta(hours=1)


def demand_counters_audit(*, now: datetime | None = None, limit: int | None = None) -> DemandAudit:
    """Compare demand_score and query_count with each entity's summed bucket count and returned (one snapshot)."""
    audit_from = demand_audit_from(now=now)
    auditable = Q(first_queried_at__isnull=True) | Q(first_queried_at__gte=audit_from)
    counts = EntityDemand.objects.aggregate(
        checked=Count("pk", filter=auditable), skipped=Count("pk", filter=~auditable)
    )
    with read_connection().cursor() as cursor:
        cursor.execute(
            """
            SELECT d.entity_id, e.name, d.query_count, d.demand_score, coalesce(t.total, 0) AS bucket_total,
                   coalesce(t.returned, 0) AS bucket_returned
            FROM entities_entitydemand AS d
            JOIN entities_entity AS e ON e.id = d.entity_id
            LEFT JOIN (
                SELECT entity_id, sum(count) AS total, sum(returned) AS returned
                FROM analytics_demandbucket GROUP BY entity_id
            ) AS t ON t.entity_id = d.entity_id
            WHERE (d.first_queried_at IS NULL OR d.first_queried_at >= %s)
              AND (d.query_count <> coalesce(t.returned, 0) OR d.demand_score <> coalesce(t.total, 0))
            ORDER BY abs(d.demand_score - coalesce(t.total, 0)) + abs(d.query_count - coalesce(t.returned, 0)) DESC,
                     d.entity_id
            LIMIT %s
            """,
            [audit_from, limit],
        )
        columns = ("id", "name", "query_count", "demand_score", "bucket_total", "bucket_returned")
        differences = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    return DemandAudit(
        audit_from=audit_from,
        checked=counts["checked"],
        skipped_history_pruned=counts["skipped"],
        differences=differences,
    )


@dataclass(frozen=True)
class AnswerBucketAudit:
    """Entities whose buckets of the hours [audit_from, audit_to) disagree with the answers of those hours.

    The hours are the whole ones in both the answer and the bucket retention, and end two reconcile bounds
    ago (every answer before is counted, or re-sent and counted by then). `checked` is how many entities
    the answers or the buckets of those hours name.
    """

    audit_from: datetime
    audit_to: datetime
    checked: int
    differences: list[dict]


# Per entity: the answers of the hours that returned it (and as the subject) beside its buckets of the hours.
_ANSWER_BUCKET_AUDIT_SQL = """
WITH answers AS (
    SELECT entity_id, count(DISTINCT answer_id) AS returned,
           count(DISTINCT answer_id) FILTER (WHERE role = %(subject)s) AS subject
    FROM entities_answerrecordentity WHERE asked_at >= %(start)s AND asked_at < %(end)s GROUP BY entity_id
), buckets AS (
    SELECT entity_id, sum(returned) AS returned, sum(count) AS subject
    FROM analytics_demandbucket WHERE hour >= %(start)s AND hour < %(end)s GROUP BY entity_id
), compared AS (
    SELECT e.id, e.name, coalesce(a.returned, 0) AS answers_returned, coalesce(a.subject, 0) AS answers_subject,
           coalesce(b.returned, 0) AS bucket_returned, coalesce(b.subject, 0) AS bucket_total
    FROM answers AS a FULL JOIN buckets AS b ON b.entity_id = a.entity_id
    JOIN entities_entity AS e ON e.id = coalesce(a.entity_id, b.entity_id)
)
SELECT count(*), coalesce(jsonb_agg(to_jsonb(c) ORDER BY abs(answers_returned - bucket_returned)
           + abs(answers_subject - bucket_total) DESC, id) FILTER (WHERE answers_returned <> bucket_returned
           OR answers_subject <> bucket_total), '[]'::jsonb)
FROM compared AS c
"""


def demand_answers_audit(*, now: datetime | None = None) -> AnswerBucketAudit:
    """Compare each entity's buckets with the answer records of the same hours: answers that returned it with
    `returned`, answers with it as the subject with `count` (one snapshot; entities deleted since are left out).
    """
    now = now or timezone.now()
    retention = timedelta(days=min(settings.ANSWER_RETENTION_DAYS, settings.DEMAND_BUCKET_RETENTION_DAYS))
    audit_from = hour_floor(now - retention) + timedelta(hours=1)
    audit_to = hour_floor(now - timedelta(seconds=2 * settings.ANSWER_RECONCILE_AFTER_SECONDS))
    with read_connection().cursor() as cursor:
        cursor.execute(_ANSWER_BUCKET_AUDIT_SQL, {"subject": ROLE_SUBJECT, "start": audit_from, "end": audit_to})
        checked, differences = cursor.fetchone()
    if isinstance(differences, str):
        differences = json.loads(differences)
    return AnswerBucketAudit(audit_from=audit_from, audit_to=audit_to, checked=checked, differences=differences)


# -- questions (answer records) ---------------------------------------------------------------------------

TOP_QUESTIONS_PER_ENTITY = 5
ENTITY_QUESTIONS_DAYS = 30

# A question report's rows: the `limit` questions with the most answers (top) or gaps (gaps) in the timeframe
# [first, now] (first = h0 - (H-1)h, the demand windows' definition), ties by question. `candidates` gives
# each question's sums (QUESTION_MEASURES); one of two ways (below). Then, for the winners only: `users` and
# the latest answer (its wording is the example, its time last_asked_at), one index probe each.
_QUESTION_REPORT_SQL = """
WITH {candidates},
ranked AS (
    SELECT question, {count} AS count, {results} AS results, {empty} AS empty FROM candidates
    WHERE {count} > 0 ORDER BY {count} DESC, question LIMIT %(limit)s
)
SELECT ranked.question, ranked.count, asked.users, latest.question AS example,
       (ranked.results::float / ranked.count) AS avg_results, latest.asked_at AS last_asked_at,
       ranked.empty = 0 AS low_confidence
FROM ranked
CROSS JOIN LATERAL ({users}) AS asked
CROSS JOIN LATERAL (
    SELECT question, asked_at FROM entities_answerrecord
    WHERE question_normalized = ranked.question AND asked_at <= %(now)s {gap}
    ORDER BY asked_at DESC, question DESC LIMIT 1
) AS latest
ORDER BY ranked.count DESC, ranked.question
"""
_MEASURES = ", ".join(f"sum({expression}) AS {name}" for name, expression in QUESTION_MEASURES.items())
# The plain way: every record of the timeframe (the baseline; used while the windows are not near h0).
_RECORDS_CANDIDATES = f"""candidates AS (
    SELECT question_normalized AS question, {_MEASURES} FROM entities_answerrecord
    WHERE asked_at >= %(first)s AND asked_at <= %(now)s {{gap}}
    GROUP BY question_normalized
)"""  # noqa: S608 - built from constants only
_RECORDS_USERS = """
    SELECT count(DISTINCT user_id) AS users FROM entities_answerrecord
    WHERE question_normalized = ranked.question AND asked_at >= %(first)s AND asked_at <= %(now)s {gap}"""
# With the windows (relative to R, read in this statement so windows and R are one snapshot): a question's
# sums are its stored ones plus the records of [R, now] minus those of [R - (H-1)h, first) (nothing when R =
# h0): `tail`, an hour's worth (for gaps, only the gaps move). The first `limit` + QUESTION_STORED_SLACK
# stored questions in the window index's order (`stored_top`) get their live sums exactly (`known`). Any
# other question has at most the last of those stored (`floor`) and gains at most its `gained` tail
# records, so it can only reach the top `limit` when floor + gained >= the `limit`-th best known live count
# (`needed`): only those few are looked up in the windows (`others`). Exact, and a handful of lookups.
_SIGNED_MEASURES = ", ".join(f"sum(sign * {expression}) AS {name}" for name, expression in QUESTION_MEASURES.items())
QUESTION_STORED_SLACK = 100
_WINDOW_CANDIDATES = f"""state AS MATERIALIZED (
    SELECT hour AS r FROM analytics_questionwindowstate WHERE id = 1
), moved AS (
    SELECT question_normalized AS question, 1 AS sign, result_count, subject_count
    FROM entities_answerrecord, state WHERE asked_at >= state.r AND asked_at <= %(now)s {{gap}}
    UNION ALL
    SELECT question_normalized, -1, result_count, subject_count
    FROM entities_answerrecord, state
    WHERE asked_at >= state.r - %(stored_hours)s * interval '1 hour' AND asked_at < %(first)s {{gap}}
), tail AS MATERIALIZED (
    SELECT question, {_SIGNED_MEASURES}, count(*) FILTER (WHERE sign > 0) AS gained FROM moved GROUP BY question
), stored_top AS MATERIALIZED (
    SELECT question, {{stored}} FROM analytics_questionwindow
    WHERE {{rank}} > 0 ORDER BY {{rank}} DESC, question LIMIT %(limit)s + {QUESTION_STORED_SLACK}
), known AS MATERIALIZED (
    SELECT s.question, {{known_sums}} FROM stored_top AS s LEFT JOIN tail AS t ON t.question = s.question
), bounds AS MATERIALIZED (
    SELECT (SELECT count(*) FROM stored_top) = %(limit)s + {QUESTION_STORED_SLACK} AS full,
           (SELECT min({{measure}}) FROM stored_top) AS floor,
           (SELECT {{measure}} FROM known ORDER BY {{measure}} DESC LIMIT 1 OFFSET %(limit)s - 1) AS needed
), others AS (
    -- When stored_top is not full it holds every question stored in this timeframe: the others have none.
    SELECT t.question, {{other_sums}}
    FROM tail AS t CROSS JOIN bounds AS b
    LEFT JOIN analytics_questionwindow AS w ON b.full AND w.question = t.question
    WHERE t.question NOT IN (SELECT question FROM stored_top)
      AND (NOT b.full OR b.needed IS NULL OR b.floor + t.gained >= b.needed)
), candidates AS (
    SELECT * FROM known UNION ALL SELECT * FROM others
)"""  # noqa: S608 - built from constants only
_WINDOW_USERS = """
    SELECT count(*) AS users FROM (
        SELECT user_id FROM analytics_questionasker
        WHERE question = ranked.question AND {last} >= %(first)s
        UNION
        SELECT user_id FROM entities_answerrecord, state
        WHERE question_normalized = ranked.question AND asked_at >= state.r AND asked_at <= %(now)s
          AND user_id IS NOT NULL {gap}
    ) AS askers"""
# Windows stored for an hour this far before h0 still answer (the difference is read from the records);
# further back (the worker stopped), or after h0 (a pinned clock), the records alone answer.
QUESTION_WINDOWS_MAX_LAG = timedelta(hours=12)


def question_report_sql(*, timeframe: str, gaps: bool, windows: bool) -> str:
    """The statement of one question report (top or gaps), from the windows or from the records alone."""
    if timeframe not in TIMEFRAME_HOURS:
        raise ValueError(f"unknown timeframe {timeframe!r}")
    gap = "AND subject_count = 0" if gaps else ""
    if windows:
        pairs = [(measure, f"{measure}_{timeframe}") for measure in QUESTION_MEASURES]
        candidates = _WINDOW_CANDIDATES.format(
            gap=gap,
            stored=", ".join(f"{column} AS {measure}" for measure, column in pairs),
            rank=f"{'gaps' if gaps else 'asked'}_{timeframe}",
            measure="gaps" if gaps else "asked",
            known_sums=", ".join(f"s.{measure} + coalesce(t.{measure}, 0) AS {measure}" for measure, _ in pairs),
            other_sums=", ".join(f"coalesce(w.{column}, 0) + t.{measure} AS {measure}" for measure, column in pairs),
        )
        users = _WINDOW_USERS.format(last="last_gap_asked_at" if gaps else "last_asked_at", gap=gap)
    else:
        candidates, users = _RECORDS_CANDIDATES.format(gap=gap), _RECORDS_USERS.format(gap=gap)
    count, results = ("gaps", "gap_results") if gaps else ("asked", "results")
    return _QUESTION_REPORT_SQL.format(
        candidates=candidates, count=count, results=results, empty="gap_empty", users=users, gap=gap
    )


def question_windows_usable(*, h0: datetime) -> bool:
    """Whether the stored question windows can answer a report for the hour h0 (see QUESTION_WINDOWS_MAX_LAG)."""
    stored = QuestionWindowState.objects.filter(pk=1).values_list("hour", flat=True).first()
    return stored is not None and h0 - QUESTION_WINDOWS_MAX_LAG <= stored <= h0


def _questions(
    *, timeframe: str, limit: int, now: datetime | None, gaps: bool, windows: bool | None = None
) -> list[dict]:
    now = now or timezone.now()
    h0 = hour_floor(now)
    if windows is None:
        windows = question_windows_usable(h0=h0)
    params = {
        "first": question_window_first_hour(timeframe=timeframe, h0=h0),
        "now": now,
        "limit": limit,
        "stored_hours": TIMEFRAME_HOURS[timeframe] - 1,
    }
    with read_connection().cursor() as cursor:
        cursor.execute(question_report_sql(timeframe=timeframe, gaps=gaps, windows=windows), params)
        columns = [column.name for column in cursor.description]
        rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    for row in rows:
        row["avg_results"] = round(row["avg_results"], 2)
        if not gaps:
            del row["low_confidence"]
    return rows


def questions_top(
    *, timeframe: str = "7d", limit: int = 10, now: datetime | None = None, windows: bool | None = None
) -> list[dict]:
    """The most asked normalized questions in the timeframe, by count (ties by question).

    `windows`: read the stored question windows (True) or the records alone (False); default: the windows
    when they are recent enough (`question_windows_usable`). Both give the same answer.
    """
    return _questions(timeframe=timeframe, limit=limit, now=now, gaps=False, windows=windows)


def questions_gaps(
    *, timeframe: str = "7d", limit: int = 10, now: datetime | None = None, windows: bool | None = None
) -> list[dict]:
    """Content gaps: the most asked questions whose answer had no subject (nothing, or only related)."""
    return _questions(timeframe=timeframe, limit=limit, now=now, gaps=True, windows=windows)


def questions_for_entity(
    *, entity_id: uuid.UUID, limit: int = TOP_QUESTIONS_PER_ENTITY, now: datetime | None = None
) -> list[dict]:
    """The normalized questions whose answers returned the entity most in the last 30 days, with counts."""
    now = now or timezone.now()
    with read_connection().cursor() as cursor:
        cursor.execute(
            """
            SELECT question_normalized, count(*) FROM entities_answerrecordentity
            WHERE entity_id = %(entity)s AND asked_at >= %(since)s AND asked_at <= %(now)s
            GROUP BY question_normalized ORDER BY count(*) DESC, question_normalized LIMIT %(limit)s
            """,
            {"entity": entity_id, "since": now - timedelta(days=ENTITY_QUESTIONS_DAYS), "now": now, "limit": limit},
        )
        return [{"question": question, "count": count} for question, count in cursor.fetchall()]


def answers_unreconciled(*, now: datetime | None = None) -> int:
    """Answers whose signals are still not all seen counted two reconcile bounds after they were sent.

    A reconciliation that runs every bound settles or re-sends every answer within two bounds, so any
    such answer means the reconciliation is not running or its re-sends are not being counted.
    """
    bound = timedelta(seconds=2 * settings.ANSWER_RECONCILE_AFTER_SECONDS)
    return answers_unsettled(before=(now or timezone.now()) - bound)


def analytics_status() -> dict:
    """How fresh the analytics are: the newest question counted and what the worker has not counted yet.

    `last_counted_event_at` is the newest `last_queried_at`: the time of the newest question the counters
    include (served by the demand_last_queried_desc index; the inbox's processed_at would need a scan of
    its BRIN-indexed rows and also holds UpdateRequests). Waiting entries are the QuerySignal stream's.
    `last_alert_evaluation` is when the alert rules were last evaluated (None: never). Reads Redis: a
    Redis outage raises.
    """
    waiting = stream_waiting(stream=settings.STREAM_QUERY_SIGNALS)
    return {
        "last_counted_event_at": EntityDemand.objects.aggregate(newest=Max("last_queried_at"))["newest"],
        "entries_waiting": waiting["waiting"],
        "entries_undelivered": waiting["lag"],
        "entries_pending": waiting["pending"],
        "oldest_waiting_age_seconds": waiting["oldest_waiting_age_seconds"],
        "live_workers": len(workers_live()),
        "last_alert_evaluation": AlertEvaluation.objects.filter(pk=1).values_list("evaluated_at", flat=True).first(),
    }


# -- alerts -----------------------------------------------------------------------------------------------

# At most this many entities are watched per per-entity rule and evaluation (the most spiking / the
# refresh queue's first critical ones).
ALERT_ENTITIES_MAX = 1000
# The critical stale rule watches a page of the queue's critical tier: the most a snapshot page holds.
ALERT_CRITICAL_MAX = REFRESH_QUEUE_PAGE_MAX


@dataclass(frozen=True)
class AlertObservation:
    """What a rule measured for one entity (per-entity rules) or as a whole (`entity_id` None).

    `active`: the rule's condition holds. `text` describes the measurement in one line.
    """

    entity_id: uuid.UUID | None
    value: float
    active: bool
    text: str


def _age_seconds(moment: datetime | None, now: datetime) -> float | None:
    return None if moment is None else max(0.0, (now - moment).total_seconds())


def _older_than(age: float | None, bound: int | None) -> bool:
    return age is not None and bound is not None and age > bound


def _age_text(age: float | None, bound: int | None) -> str:
    if age is None:
        return ""
    return f", oldest {age:.0f} s" + (f" (limit {bound} s)" if bound is not None else "")


def alert_rule_observe(
    *, rule: AlertRule, now: datetime | None = None, baseline: float | None = None
) -> list[AlertObservation]:
    """Measure `rule`'s condition as of `now` (default: the current time).

    Per-entity rules return the entities whose condition holds (any other entity's is clear); the
    others return one observation. `baseline`: the dead-letter count dead_letters_grew compares with
    (None: the current count). Pipeline, dead-letter and worker rules read Redis: an outage raises.
    Unpinned, critical stale reads the refresh queue's snapshot when it is fresh (the worker scores it
    every REFRESH_QUEUE_SNAPSHOT_SECONDS), as the queue's API does, instead of scoring the queue again.
    """
    kind, threshold = rule.kind, rule.threshold
    if kind == AlertKind.DEMAND_SPIKE:
        rows = demand_trending(timeframe=rule.timeframe, limit=ALERT_ENTITIES_MAX, now=now, trend_score_above=threshold)
        return [
            AlertObservation(
                entity_id=row["id"],
                value=row["trend_score"],
                active=True,
                text=f"{row['name']} ({row['entity_type']}): trend score {row['trend_score']:.1f} over"
                f" {rule.timeframe} (threshold {threshold:g}), {row['current_period_queries']} queries against"
                f" {row['previous_period_queries']} in the window before",
            )
            for row in rows
        ]
    if kind == AlertKind.CRITICAL_STALE:
        queue = refresh_queue(critical=True, limit=ALERT_CRITICAL_MAX, now=now)
        timeframe = queue["definition"]["demand_timeframe"]
        return [
            AlertObservation(
                entity_id=row["id"],
                value=float(row["recent_demand"]),
                active=True,
                text=f"{row['name']} ({row['entity_type']}) is critically stale: {row['recent_demand']:.0f} queries"
                f" in {timeframe}, last updated {row['days_since_update']} days ago, refresh priority"
                f" {row['priority']:.2f}",
            )
            for row in queue["entities"]
        ]
    if kind == AlertKind.PIPELINE_LAG:
        streams = [stream_waiting(stream=stream) for stream in pipeline_streams()]
        waiting = sum(stream["waiting"] for stream in streams)
        ages = [stream["oldest_waiting_age_seconds"] for stream in streams if stream["oldest_waiting_age_seconds"]]
        age = max(ages) if ages else None
        return [
            AlertObservation(
                entity_id=None,
                value=waiting,
                active=waiting > threshold or _older_than(age, rule.age_seconds),
                text=f"{waiting} stream entries not yet counted (threshold {threshold:g})"
                + _age_text(age, rule.age_seconds),
            )
        ]
    if kind == AlertKind.DEAD_LETTERS_GREW:
        length = dead_letter_length()
        since = length if baseline is None else baseline
        return [
            AlertObservation(
                entity_id=None,
                value=length,
                active=length - since > threshold,
                text=f"{length} dead letters, {length - since:g} more than the {since:g} when last clear"
                f" (threshold {threshold:g})",
            )
        ]
    if kind == AlertKind.NO_LIVE_WORKER:
        live = len(workers_live())
        return [AlertObservation(entity_id=None, value=live, active=live == 0, text=f"{live} live stream workers")]
    if kind == AlertKind.OUTBOX_BACKLOG:
        outbox = outbox_backlog()
        age = _age_seconds(outbox["oldest_created_at"], now or timezone.now())
        return [
            AlertObservation(
                entity_id=None,
                value=outbox["backlog"],
                active=outbox["backlog"] > threshold or _older_than(age, rule.age_seconds),
                text=f"{outbox['backlog']} events waiting in the outbox (threshold {threshold:g})"
                + _age_text(age, rule.age_seconds),
            )
        ]
    raise ValueError(f"unknown alert kind {kind!r}")
