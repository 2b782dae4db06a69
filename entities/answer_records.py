"""Writes of answer records: record an answer, send its signals, reconcile the uncounted, prune.

Kept apart from entities.services because it publishes (streams.publisher), and streams.services
still imports entities.services.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Q
from django.utils import timezone

from entities.models import AnswerRecord, Entity
from entities.questions import answer_signal_event_id, question_normalize
from entities.retrieval import SearchHit
from kernel.databases import pg_array_literal
from streams.events import ROLE_SUBJECT, QuerySignal
from streams.publisher import PublishOutcome, query_signals_publish
from streams.selectors import inbox_counted, outbox_waiting

logger = logging.getLogger(__name__)

RECONCILE_CHUNK = 500
PRUNE_CHUNK = 10_000


# The record and one row per returned entity, in one statement (one round trip, atomic).
_RECORD_INSERT_SQL = """
WITH record AS (
    INSERT INTO entities_answerrecord (id, asked_at, user_id, question, question_normalized, entities,
        result_count, subject_count, latency_ms, composer, signals_settled, signals_sent_at)
    VALUES (%(id)s, %(asked_at)s, %(user_id)s, %(question)s, %(normalized)s, %(entities)s, %(result_count)s,
        %(subject_count)s, %(latency_ms)s, %(composer)s, %(settled)s, %(asked_at)s)
    RETURNING id
), returned AS (
    INSERT INTO entities_answerrecordentity (answer_id, entity_id, asked_at, question_normalized, role, rank)
    SELECT %(id)s, e.entity_id, %(asked_at)s, %(normalized)s, e.role, e.rank
    FROM unnest(%(entity_ids)s::uuid[], %(roles)s::text[], %(ranks)s::int[]) AS e(entity_id, role, rank)
)
SELECT count(*) FROM record
"""


def answer_record_create(
    *,
    question: str,
    hits: Sequence[SearchHit],
    user_id: int | None,
    latency_ms: float,
    composer: str,
    asked_at: datetime | None = None,
) -> AnswerRecord:
    """Record one answer (one statement); an answer that returned nothing has no signals, so it is settled."""
    record = AnswerRecord(
        asked_at=asked_at or timezone.now(),
        user_id=user_id,
        question=question,
        question_normalized=question_normalize(question),
        entities=[
            {
                "id": str(hit.id),
                "entity_type": hit.entity_type,
                "role": hit.role,
                "rank": hit.rank,
                "score": round(hit.score, 6),
            }
            for hit in hits
        ],
        result_count=len(hits),
        subject_count=sum(hit.role == ROLE_SUBJECT for hit in hits),
        latency_ms=latency_ms,
        composer=composer,
        signals_settled=not hits,
    )
    record.signals_sent_at = record.asked_at
    with connection.cursor() as cursor:
        cursor.execute(
            _RECORD_INSERT_SQL,
            {
                "id": record.id,
                "asked_at": record.asked_at,
                "user_id": user_id,
                "question": record.question,
                "normalized": record.question_normalized,
                "entities": json.dumps(record.entities),
                "result_count": record.result_count,
                "subject_count": record.subject_count,
                "latency_ms": latency_ms,
                "composer": composer,
                "settled": record.signals_settled,
                "entity_ids": pg_array_literal([str(hit.id) for hit in hits]),
                "roles": pg_array_literal([hit.role for hit in hits]),
                "ranks": pg_array_literal([str(hit.rank) for hit in hits]),
            },
        )
    record._state.adding = False  # saved: the INSERT above is its save()
    record._state.db = connection.alias
    return record


def answer_record_signals(record: AnswerRecord) -> list[QuerySignal]:
    """The record's QuerySignals, the same every time: derived event ids, the answer's time and wording."""
    user_id = "" if record.user_id is None else str(record.user_id)
    signals = []
    for item in record.entities:
        entity_id = uuid.UUID(item["id"])
        signals.append(
            QuerySignal(
                event_id=answer_signal_event_id(answer_id=record.id, entity_id=entity_id),
                entity_id=entity_id,
                entity_type=item["entity_type"],
                query=record.question,
                user_id=user_id,
                timestamp=record.asked_at,
                role=item["role"],
                rank=item["rank"],
            )
        )
    return signals


def answer_signals_publish(*, record: AnswerRecord) -> PublishOutcome:
    """Send an answer's signals (never raises: see streams.publisher)."""
    return query_signals_publish(signals=answer_record_signals(record))


@dataclass
class ReconcileOutcome:
    """What one reconciliation did: records checked and settled, signals re-sent, held back, given up."""

    checked: int = 0
    settled: int = 0
    resent: int = 0
    held: int = 0
    given_up: int = 0


def answer_signals_reconcile(*, now: datetime | None = None, limit: int = 10_000) -> ReconcileOutcome:
    """Re-send the signals of answers still not counted ANSWER_RECONCILE_AFTER_SECONDS after they were sent.

    For up to `limit` unsettled records last sent before the bound: a record whose every event id is in
    the inbox is marked settled; the missing signals of the others are published again with the same
    event ids (so the inbox counts each at most once) and the record's send time moves to `now`, so it is
    checked again one bound later. Gives up (settles, logs) on signals of entities that no longer exist
    and on records older than INBOX_RETENTION_DAYS, whose counted ids the inbox may have forgotten.
    While the outbox holds events (Redis was unreachable) nothing is re-sent: the missing signals may be
    waiting there, and re-sending each minute of an outage would pile copies into the outbox.
    """
    now = now or timezone.now()
    bound = now - timedelta(seconds=settings.ANSWER_RECONCILE_AFTER_SECONDS)
    inbox_horizon = now - timedelta(days=settings.INBOX_RETENTION_DAYS)
    outcome = ReconcileOutcome()
    hold = outbox_waiting()
    due = AnswerRecord.objects.filter(signals_settled=False, signals_sent_at__lt=bound).order_by(
        "signals_sent_at", "id"
    )
    after = Q()
    while outcome.checked < limit:
        # Keyset pagination: held-back records keep their send time, so they must not come round again.
        records = list(
            due.filter(after).only("id", "asked_at", "user_id", "question", "entities", "signals_sent_at")[
                : min(RECONCILE_CHUNK, limit - outcome.checked)
            ]
        )
        if not records:
            break
        last = records[-1]
        after = Q(signals_sent_at__gt=last.signals_sent_at) | Q(signals_sent_at=last.signals_sent_at, id__gt=last.id)
        outcome.checked += len(records)
        settled, resend_records, resend = _reconcile_chunk(records, inbox_horizon=inbox_horizon, outcome=outcome)
        if resend and hold:
            outcome.held += len(resend)
        elif resend:
            query_signals_publish(signals=resend)
            outcome.resent += len(resend)
            AnswerRecord.objects.filter(id__in=resend_records).update(signals_sent_at=now)
        if settled:
            AnswerRecord.objects.filter(id__in=settled).update(signals_settled=True)
            outcome.settled += len(settled)
        if len(records) < RECONCILE_CHUNK:
            break
    if outcome.given_up:
        logger.warning(
            "answer reconciliation gave up on %d signals (entity gone or past inbox retention)", outcome.given_up
        )
    if outcome.checked:
        logger.info(
            "answer reconciliation: %d records checked, %d settled, %d signals re-sent, %d held (outbox not empty)",
            outcome.checked,
            outcome.settled,
            outcome.resent,
            outcome.held,
        )
    return outcome


def _reconcile_chunk(
    records: Sequence[AnswerRecord], *, inbox_horizon: datetime, outcome: ReconcileOutcome
) -> tuple[list[uuid.UUID], list[uuid.UUID], list[QuerySignal]]:
    signals = {record.id: answer_record_signals(record) for record in records}
    counted = inbox_counted(event_ids=[signal.event_id for items in signals.values() for signal in items])
    missing = {record_id: [s for s in items if s.event_id not in counted] for record_id, items in signals.items()}
    missing_entities = {signal.entity_id for items in missing.values() for signal in items}
    existing = set(Entity.objects.filter(id__in=missing_entities).values_list("id", flat=True))
    settled, resend_records, resend = [], [], []
    for record in records:
        if record.asked_at < inbox_horizon:
            outcome.given_up += len(missing[record.id])
            settled.append(record.id)
            continue
        alive = [signal for signal in missing[record.id] if signal.entity_id in existing]
        outcome.given_up += len(missing[record.id]) - len(alive)
        if alive:
            resend_records.append(record.id)
            resend.extend(alive)
        else:
            settled.append(record.id)
    return settled, resend_records, resend


def answer_records_prune(*, now: datetime | None = None) -> int:
    """Delete answer records (and their entity rows) older than ANSWER_RETENTION_DAYS, in chunks; return how many."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.ANSWER_RETENTION_DAYS)
    deleted = 0
    for table, key in (("entities_answerrecordentity", "id"), ("entities_answerrecord", "id")):
        while True:
            with connection.cursor() as cursor:
                cursor.execute(
                    f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} WHERE asked_at < %s LIMIT %s)",  # noqa: S608 - constants only
                    [cutoff, PRUNE_CHUNK],
                )
                count = cursor.rowcount
            if table == "entities_answerrecord":
                deleted += count
            if count < PRUNE_CHUNK:
                break
    return deleted
