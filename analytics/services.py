"""Writes of analytics that are not demand arithmetic: refresh requests (the refresh queue's), the demo's demand
history, the question windows' roll.

The statements that move demand (counters, buckets, windows, totals) are in analytics.demand.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils import timezone

from analytics.definitions import (
    QUESTION_WINDOW_COLUMNS,
    QUESTION_WINDOW_SPAN_HOURS,
    hour_floor,
    question_window_deltas_sql,
    refresh_priority,
)
from analytics.demand import query_signals_apply
from analytics.demo import DEMO_ASKERS, HistoryEntity, demand_history
from analytics.models import DemandBucket, QuestionWindowState, RefreshQueueState
from analytics.selectors import (
    REFRESH_QUEUE_ORDER,
    REFRESH_QUEUE_PAGE_MAX,
    refresh_queue,
    refresh_queue_ranked_sql,
    refresh_requests_open,
)
from entities.models import Entity
from entities.questions import answer_signal_event_id
from entities.services import past_answers_record
from kernel.iterables import batched
from streams.events import MAX_ENTITY_IDS, QuerySignal
from streams.publisher import update_requests_publish
from streams.redis import redis_client

logger = logging.getLogger(__name__)


def refresh_claim_key(entity_id: uuid.UUID) -> str:
    """A refresh request claims this key (TTL: REFRESH_REQUEST_REPEAT_HOURS) before it is published."""
    return f"{settings.STREAM_KEY_PREFIX}:refresh_claimed:{entity_id}"


STALE_REFRESH_SOURCE = "request_stale_updates"


@dataclass
class StaleRefreshOutcome:
    """What `refresh_requests_publish` (or `stale_entities_refresh_request`) did, or for a dry run would do."""

    requested: list[uuid.UUID] = field(default_factory=list)
    skipped_recent: int = 0
    event_ids: list[uuid.UUID] = field(default_factory=list)
    outboxed: int = 0
    # Entities whose request neither Redis nor the outbox took (their claims were released); then it stopped.
    lost: int = 0


def refresh_requests_publish(
    *,
    entity_ids: Sequence[uuid.UUID],
    source: str,
    limit: int | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
) -> StaleRefreshOutcome:
    """Publish `refresh` UpdateRequests for these entities, in this order, skipping those requested already.

    "Requested" has two guards of the same age, REFRESH_REQUEST_REPEAT_HOURS: an open RefreshRequest row
    made in that time (durable, but written only when the worker has processed the request) and a Redis
    key set with NX and that TTL (immediate, so two runs a minute apart cannot both request an entity
    whose first request is still in the stream). The queue, the admin's queue page and
    request_stale_updates all request through here.
    """
    now = now or timezone.now()
    definition = refresh_priority()
    claim_seconds = definition.requested_hours * 3600
    open_requests = refresh_requests_open(definition=definition, now=now)
    outcome = StaleRefreshOutcome()
    client = redis_client()
    for chunk in batched(entity_ids, MAX_ENTITY_IDS):
        if limit is not None and len(outcome.requested) >= limit:
            break
        requested = set(open_requests.filter(entity_id__in=chunk).values_list("entity_id", flat=True))
        page = [entity_id for entity_id in chunk if entity_id not in requested]
        outcome.skipped_recent += len(chunk) - len(page)
        if not page:
            continue
        pipe = client.pipeline(transaction=False)
        for entity_id in page:
            key = refresh_claim_key(entity_id)
            if dry_run:
                pipe.exists(key)
            else:
                pipe.set(key, now.isoformat(), nx=True, ex=claim_seconds)
        replies = pipe.execute()
        # A dry run asks EXISTS (1 = claimed already); a real run asks SET NX (True = claimed now).
        claimed = [eid for eid, reply in zip(page, replies, strict=True) if bool(reply) != dry_run]
        outcome.skipped_recent += len(page) - len(claimed)
        if limit is not None:
            room = limit - len(outcome.requested)
            if not dry_run and len(claimed) > room:
                client.delete(*(refresh_claim_key(eid) for eid in claimed[room:]))
            claimed = claimed[:room]
        if not claimed:
            continue
        outcome.requested.extend(claimed)
        if dry_run:
            continue
        published = update_requests_publish(entity_ids=claimed, operation="refresh", source=source)
        if published.lost:
            client.delete(*(refresh_claim_key(eid) for eid in claimed))
            outcome.requested = outcome.requested[: -len(claimed)]
            outcome.lost = len(claimed)
            return outcome
        outcome.event_ids.extend(published.event_ids)
        outcome.outboxed += published.outboxed
    return outcome


def stale_entities_refresh_request(
    *,
    min_demand_score: int | None = None,
    days_since_update: int | None = None,
    limit: int | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
) -> StaleRefreshOutcome:
    """Request refreshes of the refresh queue's entities in the queue's order (critical tier first, then
    priority), skipping the requested ones; `request_stale_updates`."""
    now = now or timezone.now()
    queue = refresh_queue(limit=None, min_demand_score=min_demand_score, days_since_update=days_since_update, now=now)
    new_work = [row["id"] for row in queue["entities"] if row["refresh_requested_at"] is None]
    outcome = refresh_requests_publish(
        entity_ids=new_work, source=STALE_REFRESH_SOURCE, limit=limit, dry_run=dry_run, now=now
    )
    outcome.skipped_recent += len(queue["entities"]) - len(new_work)
    return outcome


# The snapshot keeps the first REFRESH_QUEUE_PAGE_MAX entities of each (entity_type, critical) part of the
# queue: every page the API and admin can ask for (any filter, limit <= that) is among them, at a tenth of
# the rows to write (measured at 100,000 entities: 75,000 queued). The counts are over the whole queue.
_SNAPSHOT_BUILD_SQL = """
WITH ranked AS MATERIALIZED (SELECT * FROM ({ranked}) AS r),
kept AS (
    INSERT INTO analytics_refreshqueueentry
        (entity_id, entity_type, critical, priority, demand_score, recent_demand, trend_score, age_days)
    SELECT id, entity_type, critical, priority, demand_score, recent, trend, age_days
    FROM (
        SELECT ranked.*, row_number() OVER (PARTITION BY entity_type, critical ORDER BY {order}) AS place
        FROM ranked
    ) AS placed
    WHERE place <= %s
)
SELECT entity_type, critical, count(*) FROM ranked GROUP BY 1, 2 ORDER BY 1, 2
"""


def refresh_queue_snapshot_build(*, now: datetime | None = None) -> int:
    """Score the whole refresh queue into analytics_refreshqueueentry (the worker's chore); return its size.

    The queue's own statement (`refresh_queue_ranked_sql`), replaced in one transaction: readers see the
    previous snapshot until it commits. Concurrent builders (several workers) take turns on the lock.
    """
    now = now or timezone.now()
    definition = refresh_priority()
    ranked, params = refresh_queue_ranked_sql(definition=definition, now=now)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("LOCK TABLE analytics_refreshqueueentry IN EXCLUSIVE MODE")
        cursor.execute("DELETE FROM analytics_refreshqueueentry")
        cursor.execute(
            _SNAPSHOT_BUILD_SQL.format(ranked=ranked, order=REFRESH_QUEUE_ORDER), [*params, REFRESH_QUEUE_PAGE_MAX]
        )
        counts = [list(row) for row in cursor.fetchall()]
        RefreshQueueState.objects.update_or_create(
            pk=1, defaults={"computed_at": now, "definition": definition.as_dict(), "counts": counts}
        )
    return sum(count for _kind, _critical, count in counts)


def refresh_queue_snapshot_chore() -> None:
    """The worker's chore: rebuild the snapshot (REFRESH_QUEUE_SNAPSHOT_SECONDS; 0 turns it off)."""
    if settings.REFRESH_QUEUE_SNAPSHOT_SECONDS > 0:
        started = timezone.now()
        size = refresh_queue_snapshot_build(now=started)
        logger.info(
            "refresh queue: scored %d entities in %.0f ms", size, (timezone.now() - started).total_seconds() * 1000
        )


HISTORY_BATCH = 5000


@dataclass
class HistoryReport:
    """What `demand_history_seed` did."""

    answers: int = 0
    signals: int = 0
    counted: int = 0
    skipped: str = ""


def demand_history_seed(
    *, seed: int = 1, now: datetime | None = None, progress: Callable[[int], None] | None = None
) -> HistoryReport:
    """Record the demo's simulated past answers (`analytics.demo`) and count their signals like the worker.

    Each answer's QuerySignal carries the event id derived from the answer (as on the answer path) and is
    counted by the worker's own function, so counters, buckets, windows, totals and the answer records
    agree. Nothing happens when any demand is recorded already: the history is a demo's past, never laid
    over real demand; and its ids are deterministic, so a second run racing the first counts nothing twice.
    """
    if DemandBucket.objects.exists():
        return HistoryReport(skipped="demand is recorded already")
    entities = [HistoryEntity(*row) for row in Entity.objects.values_list("id", "name", "entity_type", "updated_at")]
    askers = [_demo_asker(number) for number in range(1, DEMO_ASKERS + 1)]
    history = demand_history(entities=entities, now=now or timezone.now(), seed=seed, user_ids=askers)
    report = HistoryReport()
    for batch in batched(history, HISTORY_BATCH):
        signals = [
            QuerySignal(
                event_id=answer_signal_event_id(answer_id=answer.id, entity_id=answer.entity_id),
                entity_id=answer.entity_id,
                entity_type=answer.entity_type,
                query=answer.question,
                user_id=str(answer.user_id),
                timestamp=answer.asked_at,
            )
            for answer in batch
            if answer.entity_id is not None
        ]
        with transaction.atomic():
            report.counted += query_signals_apply(signals=signals).applied
            report.answers += past_answers_record(answers=batch)
        report.signals += len(signals)
        if progress:
            progress(len(batch))
    # The history lies in closed hours the question windows may hold already: build them again.
    question_windows_roll(now=now, rebuild=True)
    return report


def _demo_asker(number: int) -> int:
    """The id of demo asker `number`, created without a usable password when missing."""
    user, created = get_user_model().objects.get_or_create(
        email=f"demo-asker-{number:02d}@mandatewizard.local",
        defaults={"username": f"demo-asker-{number:02d}@mandatewizard.local"},
    )
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user.pk


# -- question windows ---------------------------------------------------------------------------------------

# Rolls never run concurrently (two workers' chores): the second waits, then finds the windows rolled.
QUESTION_WINDOWS_LOCK = 0x4D57_5157  # "MWQW"
# An hour's answer records are rolled once it closed this long ago. An answer's record is written with its
# asked_at and commits a few milliseconds later (one autocommitted INSERT), so no record of a rolled hour
# can still be in flight.
QUESTION_ROLL_SETTLE = timedelta(seconds=60)

_QUESTION_COLUMNS = ", ".join(QUESTION_WINDOW_COLUMNS)
_QUESTION_ROLL_SQL = f"""
MERGE INTO analytics_questionwindow AS w
USING ({question_window_deltas_sql(old="%(old)s::timestamptz", new="%(new)s::timestamptz")}
) AS d ON w.question = d.question
WHEN MATCHED AND w.asked_30d + d.asked_30d = 0 THEN DELETE
WHEN MATCHED THEN UPDATE SET {", ".join(f"{c} = w.{c} + d.{c}" for c in QUESTION_WINDOW_COLUMNS)}
WHEN NOT MATCHED AND d.asked_30d <> 0 THEN
    INSERT (question, {_QUESTION_COLUMNS}) VALUES (d.question, {", ".join(f"d.{c}" for c in QUESTION_WINDOW_COLUMNS)})
"""  # noqa: S608 - built from constants only
_QUESTION_BUILD_SQL = f"""
INSERT INTO analytics_questionwindow (question, {_QUESTION_COLUMNS})
{question_window_deltas_sql(old=None, new="%(new)s::timestamptz")}
"""
# Each asker's last ask (and last gap) per question among the records of [old, new); GREATEST skips NULLs.
_ASKERS_ADD_SQL = """
INSERT INTO analytics_questionasker AS a (question, user_id, last_asked_at, last_gap_asked_at)
SELECT r.question_normalized, r.user_id, max(r.asked_at), max(r.asked_at) FILTER (WHERE r.subject_count = 0)
FROM entities_answerrecord AS r
WHERE r.asked_at >= %(old)s AND r.asked_at < %(new)s AND r.user_id IS NOT NULL
GROUP BY 1, 2
ORDER BY 1, 2
ON CONFLICT (question, user_id) DO UPDATE SET
    last_asked_at = GREATEST(a.last_asked_at, EXCLUDED.last_asked_at),
    last_gap_asked_at = GREATEST(a.last_gap_asked_at, EXCLUDED.last_gap_asked_at)
"""


def question_windows_roll(*, now: datetime | None = None, rebuild: bool = False) -> datetime:
    """Make the question windows and askers relative to the hour R that closed QUESTION_ROLL_SETTLE before
    `now` (default: the current time); return R.

    Set-based: a roll by one hour reads the records of the hour that enters and of the three that leave a
    window (1d, 7d, 30d) through the asked_at index, and moves each question's sums by the difference.
    The first build, a jump of 30 days or more, a move backwards (a pinned clock) or `rebuild` (records
    were added to closed hours, as the demo's history does) recompute them from the last 30 days of records.
    Readers never roll; they add the records since R themselves (analytics.selectors.questions_top).
    """
    target = hour_floor((now or timezone.now()) - QUESTION_ROLL_SETTLE)
    span = timedelta(hours=QUESTION_WINDOW_SPAN_HOURS)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [QUESTION_WINDOWS_LOCK])
        current = QuestionWindowState.objects.filter(pk=1).values_list("hour", flat=True).first()
        if current == target and not rebuild:
            return target
        params = {"old": current, "new": target}
        if rebuild or current is None or target < current or target - current >= span:
            cursor.execute("DELETE FROM analytics_questionwindow")
            cursor.execute(_QUESTION_BUILD_SQL, params)
            cursor.execute("DELETE FROM analytics_questionasker")
            cursor.execute(_ASKERS_ADD_SQL, {"old": target - span + timedelta(hours=1), "new": target})
        else:
            cursor.execute(_QUESTION_ROLL_SQL, params)
            cursor.execute(_ASKERS_ADD_SQL, params)
            # Askers whose last ask left the 30-day window count in no timeframe any more.
            cursor.execute(
                "DELETE FROM analytics_questionasker WHERE last_asked_at < %s", [target - span + timedelta(hours=1)]
            )
        QuestionWindowState.objects.update_or_create(pk=1, defaults={"hour": target})
    return target


def question_windows_oldest(*, now: datetime | None = None) -> datetime:
    """The oldest answer record the question windows may still need: a roll subtracts the records that leave
    the 30-day window, so they must outlive it (prune_demand_data keeps every record from here on)."""
    target = hour_floor((now or timezone.now()) - QUESTION_ROLL_SETTLE)
    stored = QuestionWindowState.objects.filter(pk=1).values_list("hour", flat=True).first()
    return min(stored or target, target) - timedelta(hours=QUESTION_WINDOW_SPAN_HOURS)
