"""The demand definitions, each written once: hour buckets, trending windows, trend_score and trending.

Windows are whole UTC hours. With h0 the start of the current hour and H the timeframe in hours, the
current window is the buckets of hours [h0 - (H-1)h, h0] and the previous one [h0 - (2H-1)h, h0 - Hh].
`DemandWindow` stores them without the still-open hour h0 (so a worker writing this hour's events
never touches it); readers add h0's bucket (`analytics.selectors`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.conf import settings

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
