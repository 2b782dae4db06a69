"""Reads of the entity store."""

from __future__ import annotations

import uuid
from datetime import datetime

from django.db.models import Exists, OuterRef, Q, QuerySet
from rest_framework.exceptions import NotFound, ValidationError

from entities.models import AnswerReconcileMark, AnswerRecord, AnswerSignalsPending, Entity, EntityEmbedding

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


def answers_unsettled(*, before: datetime | None = None) -> int:
    """Answers with signals that reconciliation has not settled: pending ones (re-sent or held before
    `before`) and answers past the watermark (asked before `before`). None: whenever."""
    behind = AnswerRecord.objects.filter(result_count__gt=0)
    pending = AnswerSignalsPending.objects.all()
    if before is not None:
        behind, pending = behind.filter(asked_at__lt=before), pending.filter(signals_sent_at__lt=before)
    mark = AnswerReconcileMark.objects.filter(pk=1).first()
    if mark is not None:
        behind = behind.filter(Q(asked_at__gt=mark.asked_at) | Q(asked_at=mark.asked_at, id__gt=mark.answer_id))
    return pending.count() + behind.count()
