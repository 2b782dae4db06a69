"""Reads of the entity store."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import NamedTuple

from django.db import connection
from django.db.models import Exists, OuterRef, Q, QuerySet
from rest_framework.exceptions import NotFound, ValidationError

from entities.models import AnswerReconcileMark, AnswerRecord, AnswerSignalsPending, Entity, EntityEmbedding
from streams.selectors import inbox_contains_sql

# The counters of an entity's demand row (`entity.demand`), as the entity API names them.
DEMAND_COUNTERS = ("demand_score", "query_count", "first_queried_at", "last_queried_at")
# Always true (the database gives every entity a demand row), but it makes Django join the demand row
# with an INNER JOIN instead of a LEFT JOIN, so PostgreSQL can read a demand ordering from the demand
# table's index and fetch only the page's entities (measured at 100,000 entities: 1 ms instead of
# 190 ms for joining every row and sorting).
HAS_DEMAND_ROW = Q(demand__isnull=False)


def entity_list() -> QuerySet[Entity]:
    """All entities, with their demand row and without their full-text document; `has_embedding` says
    whether each has a vector."""
    return (
        Entity.objects.filter(HAS_DEMAND_ROW)
        .defer("search_vector")
        .select_related("demand")
        .annotate(has_embedding=Exists(EntityEmbedding.objects.filter(entity=OuterRef("pk"))))
    )


def entity_id_parse(raw: str, *, name: str = "id") -> uuid.UUID:
    """Parse an entity id from a URL or parameter; a malformed one is a 400 that says so."""
    try:
        return uuid.UUID(str(raw))
    except (TypeError, ValueError, AttributeError):
        raise ValidationError({name: f"'{raw}' is not a valid entity id: expected a UUID."}) from None


def entity_get(raw_id: str) -> Entity:
    """The entity with this id: 400 when the id is malformed, 404 when no entity has it."""
    entity_id = entity_id_parse(raw_id)
    entity = entity_list().filter(pk=entity_id).first()
    if entity is None:
        raise NotFound(f"No entity has the id {entity_id}.")
    return entity


# Where reconciliation starts when it has no watermark yet: before every answer.
_BEFORE_EVERY_ANSWER = (datetime(1, 1, 1, tzinfo=UTC), uuid.UUID(int=0))

# The next page of answers after a (asked_at, answer id) key and asked before a time, from the entity rows'
# (asked_at, answer_id) index, which holds their event ids: up to `rows` rows, the last answer's taken whole
# (looked up again by its key), so no answer is split between pages. For the page: its last key, its row
# count (fewer than `rows`: the last page), its answers, and the answers with a signal the inbox does not hold
# or with a row without its event id (written before entities 0014: the caller checks those itself). The
# inbox is probed in event id order, so consecutive probes walk its primary key's leaves in order (8 % less).
_PAGE_MISSING_SQL = f"""
WITH page AS MATERIALIZED (
    SELECT asked_at, answer_id, event_id FROM entities_answerrecordentity
    WHERE (asked_at, answer_id) > (%(after_at)s, %(after_id)s) AND asked_at < %(before)s
    ORDER BY asked_at, answer_id LIMIT %(rows)s
), last AS MATERIALIZED (
    SELECT asked_at, answer_id FROM page ORDER BY asked_at DESC, answer_id DESC LIMIT 1
), sent AS MATERIALIZED (
    SELECT page.answer_id, page.event_id FROM page, last
    WHERE (page.asked_at, page.answer_id) < (last.asked_at, last.answer_id)
    UNION ALL
    SELECT e.answer_id, e.event_id FROM entities_answerrecordentity AS e, last
    WHERE e.asked_at = last.asked_at AND e.answer_id = last.answer_id
)
SELECT last.asked_at, last.answer_id, (SELECT count(*) FROM page), (SELECT count(DISTINCT answer_id) FROM sent),
       ARRAY(SELECT DISTINCT sent.answer_id FROM (SELECT * FROM sent ORDER BY event_id) AS sent
             WHERE sent.event_id IS NULL OR NOT {inbox_contains_sql(event_id="sent.event_id")})
FROM last
"""  # noqa: S608 - built from constants only

# Of some answers, given by (answer id, asked_at), those with a signal the inbox does not hold (or without its id).
_MISSING_SQL = f"""
SELECT DISTINCT e.answer_id
FROM unnest(%(ids)s::uuid[], %(asked)s::timestamptz[]) AS answer(id, asked_at)
JOIN entities_answerrecordentity AS e ON e.asked_at = answer.asked_at AND e.answer_id = answer.id
WHERE e.event_id IS NULL OR NOT {inbox_contains_sql(event_id="e.event_id")}
"""  # noqa: S608 - built from constants only

ANSWER_PAGE_ROWS = 10_000


class AnswersPage(NamedTuple):
    """A page of answers in reconciliation's order: its last (asked_at, answer id), how many entity rows its
    first pass read (fewer than asked for: the last page), its answers, and those with a signal not counted."""

    last: tuple[datetime, uuid.UUID]
    rows: int
    answers: int
    missing: list[uuid.UUID]


def answer_reconcile_mark() -> tuple[datetime, uuid.UUID] | None:
    """Reconciliation's watermark (AnswerReconcileMark) as (asked_at, answer id); None before its first pass."""
    mark = AnswerReconcileMark.objects.filter(pk=1).values_list("asked_at", "answer_id").first()
    return None if mark is None else (mark[0], mark[1])


def answers_page_missing(
    *, after: tuple[datetime, uuid.UUID] | None, before: datetime, rows: int = ANSWER_PAGE_ROWS
) -> AnswersPage | None:
    """The next page of answers with signals after the key `after` (None: from the first) asked before
    `before`, checked against the inbox in one statement over the entity rows' stored event ids; None when
    there is none. Answers that returned nothing sent no signal and are not in any page."""
    after_at, after_id = after or _BEFORE_EVERY_ANSWER
    with connection.cursor() as cursor:
        cursor.execute(_PAGE_MISSING_SQL, {"after_at": after_at, "after_id": after_id, "before": before, "rows": rows})
        row = cursor.fetchone()
    if row is None:
        return None
    last_at, last_id, read, answers, missing = row
    return AnswersPage(last=(last_at, last_id), rows=read, answers=answers, missing=missing)


def answers_missing_signals(keys: Sequence[tuple[uuid.UUID, datetime]]) -> set[uuid.UUID]:
    """Of the answers given by (answer id, asked_at), the ids of those with a signal the inbox does not hold."""
    if not keys:
        return set()
    with connection.cursor() as cursor:
        cursor.execute(_MISSING_SQL, {"ids": [key[0] for key in keys], "asked": [key[1] for key in keys]})
        return {row[0] for row in cursor.fetchall()}


def answers_past_watermark() -> QuerySet[AnswerRecord]:
    """The answers reconciliation has not passed yet (after AnswerReconcileMark), in its (asked_at, id) order."""
    answers = AnswerRecord.objects.order_by("asked_at", "id")
    mark = answer_reconcile_mark()
    if mark is None:
        return answers
    return answers.filter(Q(asked_at__gt=mark[0]) | Q(asked_at=mark[0], id__gt=mark[1]))


def answers_unsettled(*, before: datetime) -> int:
    """Answers with signals not seen counted: pending ones re-sent (or held) before `before`, and answers past
    the watermark asked before `before` with a signal the inbox does not hold (checked in pages)."""
    unsettled = AnswerSignalsPending.objects.filter(signals_sent_at__lt=before).count()
    after = answer_reconcile_mark()
    while page := answers_page_missing(after=after, before=before):
        unsettled += len(page.missing)
        if page.rows < ANSWER_PAGE_ROWS:
            break
        after = page.last
    return unsettled
