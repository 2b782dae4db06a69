"""The demand definitions, each written once: hour buckets, trending windows, trend_score, trending and the
refresh queue's priority.

Windows are whole UTC hours. With h0 the start of the current hour and H the timeframe in hours, the
current window is the buckets of hours [h0 - (H-1)h, h0] and the previous one [h0 - (2H-1)h, h0 - Hh].
`DemandWindow` stores them without the still-open hour h0 (so a worker writing this hour's events
never touches it); readers add h0's bucket (`analytics.selectors`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

# Trending timeframes: name -> window length in hours. DemandWindow's field suffixes follow the names.
TIMEFRAME_HOURS = {"1d": 24, "7d": 168, "30d": 720}
# The oldest hour any window holds is h0 - (WINDOW_SPAN_HOURS - 1)h.
WINDOW_SPAN_HOURS = 2 * max(TIMEFRAME_HOURS.values())


def stale_criteria() -> tuple[int, int]:
    """The default stale criteria: (STALE_MIN_DEMAND_SCORE, STALE_DAYS_SINCE_UPDATE)."""
    return settings.STALE_MIN_DEMAND_SCORE, settings.STALE_DAYS_SINCE_UPDATE


def hour_floor(moment: datetime) -> datetime:
    """The start of the UTC hour that contains `moment`: the bucket of an event at `moment`."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def trend_score_sql(*, current: str, previous: str) -> str:
    """trend_score = (current - previous) / sqrt(previous + 1), as SQL over two column expressions."""
    return f"(({current} - {previous})::float8 / sqrt(({previous})::float8 + 1.0))"


def trending_sql(*, current: str, previous: str, minimum: str) -> str:
    """Trending: current >= minimum (TRENDING_MIN_QUERIES) and current > previous, as a SQL condition."""
    return f"({current} >= {minimum} AND {current} > {previous})"


def stored_window_sums_sql(*, amount: str, hour: str, h0: str) -> list[str]:
    """SQL aggregates, in DemandWindow's column order, summing `amount` over each stored window.

    Stored current window: hours (h0 - H, h0 - 1h] (the open hour h0 is left out); previous:
    (h0 - 2H, h0 - H]. Arguments are SQL expressions.
    """
    sums = []
    for hours in TIMEFRAME_HOURS.values():
        for newest, oldest in ((1, hours), (hours, 2 * hours)):
            sums.append(
                f"coalesce(sum({amount}) FILTER (WHERE {hour} > {h0} - interval '{oldest} hours'"
                f" AND {hour} <= {h0} - interval '{newest} hours'), 0)"
            )
    return sums


# For every hour offset k here, a stored window gains or loses the bucket of hour h0 - k when h0 moves.
WINDOW_EDGE_OFFSETS = sorted({1} | set(TIMEFRAME_HOURS.values()) | {2 * h for h in TIMEFRAME_HOURS.values()})
# DemandWindow's counter columns, in stored_window_sums_sql's order.
WINDOW_COLUMNS = [f"{period}_{timeframe}" for timeframe in TIMEFRAME_HOURS for period in ("current", "previous")]


def window_sums_sql(*, h0: str) -> str:
    """A SELECT of (entity_id, WINDOW_COLUMNS...): every entity's stored windows relative to `h0`, from
    the buckets alone (the windows' full build). `h0` is a SQL timestamptz expression."""
    sums = stored_window_sums_sql(amount="count", hour="hour", h0=h0)
    return f"""
    SELECT entity_id, {", ".join(f"{total} AS {column}" for total, column in zip(sums, WINDOW_COLUMNS, strict=True))}
    FROM analytics_demandbucket
    WHERE hour < {h0} AND hour > {h0} - interval '{WINDOW_SPAN_HOURS} hours'
    GROUP BY entity_id"""  # noqa: S608 - built from constants only


def window_deltas_sql(*, old: str, new: str) -> str:
    """A SELECT of (entity_id, WINDOW_COLUMNS...): what moves windows stored relative to `old` to `new`.

    Reads only the buckets of the hours that enter or leave a window between the two (SQL timestamptz
    expressions, less than WINDOW_SPAN_HOURS apart).
    """
    lo, hi = f"LEAST({old}, {new})", f"GREATEST({old}, {new})"
    edges = " OR ".join(
        f"(hour > {lo} - interval '{k} hours' AND hour <= {hi} - interval '{k} hours')" for k in WINDOW_EDGE_OFFSETS
    )
    new_sums = stored_window_sums_sql(amount="count", hour="hour", h0=new)
    old_sums = stored_window_sums_sql(amount="count", hour="hour", h0=old)
    deltas = ", ".join(f"{n} - {o} AS {c}" for n, o, c in zip(new_sums, old_sums, WINDOW_COLUMNS, strict=True))
    return f"""
    SELECT entity_id, {deltas}
    FROM analytics_demandbucket
    WHERE {edges}
    GROUP BY entity_id"""  # noqa: S608 - built from constants only


@dataclass(frozen=True)
class RefreshPriority:
    """The refresh queue's definition: which entities are in it, their priority and the critical tier.

    In the queue: the stale entities (`demand_stale_condition`: demand_score >= stale_min_demand_score and
    updated_at older than stale_days_since_update days). For each, with
      recent = queries in the current `demand_timeframe` window (subject count, as every demand report),
      age    = days since updated_at (fractional),
      trend  = trend_score over `trend_timeframe`:
    demand    = min(1, ln(1 + recent) / ln(1 + demand_saturation))
    freshness = min(1, max(0, age - stale_days_since_update) / freshness_saturation_days)
    trending  = min(1, max(0, trend) / trend_saturation)
    priority  = weight_demand * demand + weight_freshness * freshness + weight_trend * trending
    critical  = recent >= critical_min_demand and age >= critical_days_since_update.
    Order: critical first, then priority desc, demand_score desc, entity id. An entity with an open refresh
    request (done_at null) younger than requested_hours is listed as requested and not requested again.
    """

    weight_demand: float
    weight_freshness: float
    weight_trend: float
    demand_timeframe: str
    demand_saturation: int
    freshness_saturation_days: float
    trend_timeframe: str
    trend_saturation: float
    stale_min_demand_score: int
    stale_days_since_update: int
    critical_min_demand: int
    critical_days_since_update: int
    requested_hours: int

    def as_dict(self) -> dict:
        return asdict(self)

    def requested_since(self, now: datetime) -> datetime:
        """Open refresh requests made at or after this moment count as "requested"."""
        return now - timedelta(hours=self.requested_hours)

    def priority_sql(self, *, recent: str, age_days: str, trend: str) -> str:
        """The priority as SQL over three column expressions (recent queries, age in days, trend_score).

        All float8: numeric arithmetic (what ln(1.0 + bigint) would be) is ten times slower over a queue of
        tens of thousands of entities.
        """

        def num(value: float) -> str:
            return f"{float(value)!r}::float8"

        demand = f"least(1.0::float8, ln(1.0::float8 + {recent}) / ln({num(1 + self.demand_saturation)}))"
        beyond = f"greatest(0.0::float8, {age_days} - {num(self.stale_days_since_update)})"
        freshness = f"least(1.0::float8, {beyond} / {num(self.freshness_saturation_days)})"
        trending = f"least(1.0::float8, greatest(0.0::float8, {trend}) / {num(self.trend_saturation)})"
        return (
            f"({num(self.weight_demand)} * {demand} + {num(self.weight_freshness)} * {freshness}"
            f" + {num(self.weight_trend)} * {trending})"
        )

    def critical_sql(self, *, recent: str, age_days: str) -> str:
        """The critical tier as a SQL condition over the same expressions."""
        return f"({recent} >= {int(self.critical_min_demand)} AND {age_days} >= {int(self.critical_days_since_update)})"


def refresh_priority(*, min_demand_score: int | None = None, days_since_update: int | None = None) -> RefreshPriority:
    """The refresh queue's definition in force (settings); the stale criteria may be overridden."""
    default_score, default_days = stale_criteria()
    definition = RefreshPriority(
        weight_demand=settings.REFRESH_WEIGHT_DEMAND,
        weight_freshness=settings.REFRESH_WEIGHT_FRESHNESS,
        weight_trend=settings.REFRESH_WEIGHT_TREND,
        demand_timeframe=settings.REFRESH_DEMAND_TIMEFRAME,
        demand_saturation=settings.REFRESH_DEMAND_SATURATION,
        freshness_saturation_days=settings.REFRESH_FRESHNESS_SATURATION_DAYS,
        trend_timeframe=settings.REFRESH_TREND_TIMEFRAME,
        trend_saturation=settings.REFRESH_TREND_SATURATION,
        stale_min_demand_score=default_score if min_demand_score is None else min_demand_score,
        stale_days_since_update=default_days if days_since_update is None else days_since_update,
        critical_min_demand=settings.REFRESH_CRITICAL_MIN_DEMAND,
        critical_days_since_update=settings.REFRESH_CRITICAL_DAYS_SINCE_UPDATE,
        requested_hours=settings.REFRESH_REQUEST_REPEAT_HOURS,
    )
    for name in ("demand_timeframe", "trend_timeframe"):
        if getattr(definition, name) not in TIMEFRAME_HOURS:
            raise ImproperlyConfigured(f"REFRESH_{name.upper()} must be one of {', '.join(TIMEFRAME_HOURS)}")
    for name in ("demand_saturation", "freshness_saturation_days", "trend_saturation"):
        if getattr(definition, name) <= 0:
            raise ImproperlyConfigured(f"REFRESH_{name.upper()} must be positive")
    if min(definition.weight_demand, definition.weight_freshness, definition.weight_trend) < 0:
        raise ImproperlyConfigured("REFRESH_WEIGHT_* must not be negative")
    return definition


# -- questions (answer records) -----------------------------------------------------------------------------
# A question report's timeframe is the demand windows' current window: the UTC hours [h0 - (H-1)h, h0], the
# open hour included. QuestionWindow stores, per normalized question, the answers of the closed hours
# [R - (H-1)h, R) relative to its hour R (`QuestionWindowState.hour`); readers add the records since R.

# What a window sums per answer record, as SQL over entities_answerrecord's columns. A content gap is an
# answer with no subject (nothing found, or only related entities); `gap_empty` counts the gaps that found
# nothing at all, so "only related entities every time" (low confidence) is gap_empty = 0.
QUESTION_MEASURES = {
    "asked": "1",
    "results": "result_count",
    "gaps": "(subject_count = 0)::int",
    "gap_results": "CASE WHEN subject_count = 0 THEN result_count ELSE 0 END",
    "gap_empty": "(subject_count = 0 AND result_count = 0)::int",
}
# QuestionWindow's counter columns, measure by measure within each timeframe.
QUESTION_WINDOW_COLUMNS = [f"{measure}_{t}" for t in TIMEFRAME_HOURS for measure in QUESTION_MEASURES]
QUESTION_WINDOW_SPAN_HOURS = max(TIMEFRAME_HOURS.values())


def question_window_first_hour(*, timeframe: str, h0: datetime) -> datetime:
    """The first hour of a question report's timeframe: h0 - (H-1)h (the window is [it, h0], open hour included)."""
    return h0 - timedelta(hours=TIMEFRAME_HOURS[timeframe] - 1)


def question_window_deltas_sql(*, old: str | None, new: str) -> str:
    """A SELECT of (question, QUESTION_WINDOW_COLUMNS...): what moves windows stored relative to hour `old`
    to hour `new` (SQL timestamptz expressions); `old=None`: from nothing (the full build).

    A record moves timeframe H's window by (in [new - (H-1)h, new)) - (in [old - (H-1)h, old)); only the
    records of [old, new) and [old - (H-1)h, new - (H-1)h) (either order) can, so only they are read,
    through the records' asked_at index.
    """

    def inside(hour: str | None, hours: int) -> str:
        if hour is None:
            return "false"
        return f"(asked_at >= {hour} - interval '{hours - 1} hours' AND asked_at < {hour})"

    sums = []
    for hours in TIMEFRAME_HOURS.values():
        for expression in QUESTION_MEASURES.values():
            sums.append(
                f"coalesce(sum({expression}) FILTER (WHERE {inside(new, hours)}), 0)"
                f" - coalesce(sum({expression}) FILTER (WHERE {inside(old, hours)}), 0)"
            )
    if old is None:
        where = inside(new, QUESTION_WINDOW_SPAN_HOURS)
    else:
        lo, hi = f"LEAST({old}, {new})", f"GREATEST({old}, {new})"
        edges = [f"(asked_at >= {lo} AND asked_at < {hi})"] + [
            f"(asked_at >= {lo} - interval '{h - 1} hours' AND asked_at < {hi} - interval '{h - 1} hours')"
            for h in TIMEFRAME_HOURS.values()
        ]
        where = " OR ".join(edges)
    columns = ", ".join(f"{total} AS {column}" for total, column in zip(sums, QUESTION_WINDOW_COLUMNS, strict=True))
    return f"""
    SELECT question_normalized AS question, {columns}
    FROM entities_answerrecord
    WHERE {where}
    GROUP BY question_normalized"""  # noqa: S608 - built from constants only
