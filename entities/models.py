"""The entity store: people, companies, platforms, projects and deals, with their demand counters."""

from __future__ import annotations

import uuid

import pgtrigger
from django.conf import settings
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVectorField
from django.db import models
from django.utils import timezone
from pgvector.django import HnswIndex, VectorField

from streams.events import SOURCE_MAX_LENGTH

# The demand order of Entity querysets, written once: the counters of the entity's demand row, then name.
# The default ordering, the entity API's, the admin's and analytics' rankings use it.
DEMAND_ORDER = ("-demand__demand_score", "-demand__query_count", "name")

EMBEDDING_DIMENSIONS = 1024


class EntityType(models.TextChoices):
    PERSON = "person", "Person"
    COMPANY = "company", "Company"
    PROJECT = "project", "Project"
    PRODUCTION_COMPANY = "production_company", "Production company"
    PLATFORM = "platform", "Platform"
    DEAL = "deal", "Deal"
    GENRE = "genre", "Genre"
    FORMAT = "format", "Format"


class EntitySearchDocument(models.Func):
    """The full-text document of an entity: its name (weight A) and every string value in `data` (B)."""

    # Two arguments in two places of one expression: the joiner closes the first and opens the second.
    template = "(setweight(to_tsvector('english'::regconfig, %(expressions)s, '[\"string\"]'::jsonb), 'B'))"
    arg_joiner = "), 'A') || setweight(jsonb_to_tsvector('english'::regconfig, "
    output_field = SearchVectorField()


class Entity(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.TextField()
    entity_type = models.CharField(max_length=32, choices=EntityType.choices, db_index=False)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    # When the record's *content* last changed. Demand counters (EntityDemand) never touch it.
    updated_at = models.DateTimeField(default=timezone.now)

    search_vector = models.GeneratedField(
        expression=EntitySearchDocument("name", "data"),
        output_field=SearchVectorField(),
        db_persist=True,
    )

    class Meta:
        verbose_name_plural = "entities"
        ordering = list(DEMAND_ORDER)
        # Gates the admin's "request refresh" and "reindex" actions (publishing UpdateRequests).
        permissions = [("request_entity_update", "Can request a refresh or reindex of entities")]
        constraints = [
            models.CheckConstraint(condition=~models.Q(name__regex=r"^\s*$"), name="entity_name_not_blank"),
            models.CheckConstraint(condition=models.Q(entity_type__in=EntityType.values), name="entity_type_known"),
        ]
        indexes = [
            models.Index(fields=["entity_type"], name="entity_type_idx"),
            models.Index(fields=["updated_at"], include=["id"], name="entity_updated_at_idx"),
            GinIndex(fields=["name"], opclasses=["gin_trgm_ops"], name="entity_name_trgm"),
            GinIndex(fields=["search_vector"], name="entity_search_vector"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.entity_type})"


class EntityDemand(models.Model):
    """An entity's demand counters, in a narrow row of their own (`entity.demand`).

    Not columns of Entity on purpose: the stream worker updates these all day, and on the wide, heavily
    indexed entity row every such update rewrote the row and every index (see docs/analytics.md).
    Every entity has exactly one: the database creates it when the entity is inserted.
    """

    entity = models.OneToOneField(Entity, on_delete=models.CASCADE, primary_key=True, related_name="demand")
    # A copy of entity.entity_type, kept by the database, so per-type rankings and totals read this table alone.
    entity_type = models.CharField(max_length=32, choices=EntityType.choices)
    demand_score = models.BigIntegerField(default=0)
    query_count = models.BigIntegerField(default=0)
    first_queried_at = models.DateTimeField(null=True, blank=True)
    last_queried_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(demand_score__gte=0), name="demand_score_gte_0"),
            models.CheckConstraint(condition=models.Q(query_count__gte=0), name="demand_query_count_gte_0"),
        ]
        # Few on purpose: the worker's every counter update inserts into each of them. The entity id is
        # included so a ranking reads ids in demand order from the index alone, then joins the page.
        indexes = [
            models.Index(fields=["-demand_score", "-query_count"], include=["entity"], name="demand_score_desc"),
            models.Index(
                fields=["entity_type", "-demand_score", "-query_count"],
                include=["entity"],
                name="demand_type_score_desc",
            ),
            # In the order of the API's ?ordering=-last_queried_at (DESC, never-queried first), so it can serve it.
            models.Index(models.F("last_queried_at").desc(), name="demand_last_queried_desc"),
        ]

    def __str__(self) -> str:
        return f"demand of {self.entity_id}: {self.demand_score}"


class EntityEmbedding(models.Model):
    """An entity's vector for semantic search (`entity.embedding.vector`), kept beside the entity row.

    Not a column of Entity on purpose: the worker updates demand counters on entity rows all day, and
    every such update would insert a new node into the HNSW graph of a vector stored in that row
    (measured: 570 ms instead of 29 ms to update 400 rows).
    """

    entity = models.OneToOneField(Entity, on_delete=models.CASCADE, primary_key=True, related_name="embedding")
    vector = VectorField(dimensions=EMBEDDING_DIMENSIONS)

    class Meta:
        indexes = [
            HnswIndex(
                name="entity_embedding_hnsw",
                fields=["vector"],
                m=16,
                ef_construction=64,
                opclasses=["vector_cosine_ops"],
            ),
        ]

    def __str__(self) -> str:
        return f"embedding of {self.entity_id}"


# The refresh lifecycle, written once, in the database: a refresh request is *open* until the entity's
# content changes (updated_at moves, which imports and admin edits do only for a real content change)
# after the request; then it is *done*, done_at = the new updated_at. Two triggers, so every
# writer of entities (import, admin, any future one) closes requests the same way, in its own
# transaction: one on entity updates, and one for a request recorded after the content already changed
# (the worker records a request when it processes it, which may be after an edit that answered it).
_REFRESH_DONE_ON_ENTITY_UPDATE = """
    UPDATE entities_refreshrequest AS r SET done_at = n.updated_at
    FROM new_rows AS n JOIN old_rows AS o ON o.id = n.id
    WHERE r.entity_id = n.id AND r.done_at IS NULL
      AND n.updated_at IS DISTINCT FROM o.updated_at AND n.updated_at > r.requested_at;
    RETURN NULL;"""
_REFRESH_DONE_ON_INSERT = """
    IF NEW.done_at IS NULL THEN
        SELECT e.updated_at INTO NEW.done_at FROM entities_entity AS e
        WHERE e.id = NEW.entity_id AND e.updated_at > NEW.requested_at;
    END IF;
    RETURN NEW;"""


class RefreshRequest(models.Model):
    """One `refresh` UpdateRequest for one entity: the data team's to-do list, driven by demand.

    Open (done_at null) until the entity's content changes after requested_at; then done, and
    done_at - requested_at is its time to refresh. The database sets done_at (the triggers above).
    """

    entity = models.ForeignKey(Entity, on_delete=models.CASCADE, related_name="refresh_requests")
    event_id = models.UUIDField()
    source = models.CharField(max_length=SOURCE_MAX_LENGTH, blank=True)
    requested_at = models.DateTimeField(default=timezone.now)
    done_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-requested_at"]
        constraints = [
            models.UniqueConstraint(fields=["event_id", "entity"], name="refresh_request_once_per_event"),
        ]
        indexes = [
            models.Index(fields=["entity", "-requested_at"], name="refresh_request_entity_recent"),
            # The open requests (few): the queue's "requested" lookup and the open count.
            models.Index(
                fields=["entity", "-requested_at"],
                condition=models.Q(done_at__isnull=True),
                name="refresh_request_open",
            ),
            models.Index(fields=["done_at"], condition=models.Q(done_at__isnull=False), name="refresh_request_done"),
        ]
        triggers = [
            pgtrigger.Trigger(
                name="refresh_request_done_if_changed",
                level=pgtrigger.Row,
                when=pgtrigger.Before,
                operation=pgtrigger.Insert,
                func=_REFRESH_DONE_ON_INSERT,
            ),
        ]

    def __str__(self) -> str:
        return f"refresh {self.entity_id} at {self.requested_at:%Y-%m-%d %H:%M}"

    @property
    def time_to_refresh(self):
        return None if self.done_at is None else self.done_at - self.requested_at


pgtrigger.register(
    pgtrigger.Trigger(
        name="refresh_requests_done_on_change",
        level=pgtrigger.Statement,
        when=pgtrigger.After,
        operation=pgtrigger.Update,
        referencing=pgtrigger.Referencing(old="old_rows", new="new_rows"),
        func=_REFRESH_DONE_ON_ENTITY_UPDATE,
    )
)(Entity)


# Every writer of answer records (the answer path, the demo's past answers, the benchmark) gets the subject
# content time here, in one place: the oldest updated_at, not after the answer, of the entities the record's
# `entities` list as subjects (an entity changed since the answer has an unknown content time and is left out).
_ANSWER_SUBJECT_CONTENT = """
    IF NEW.subject_content_at IS NULL THEN
        SELECT min(e.updated_at) INTO NEW.subject_content_at
        FROM jsonb_array_elements(NEW.entities) AS item
        JOIN entities_entity AS e ON e.id = (item->>'id')::uuid
        WHERE item->>'role' = 'subject' AND e.updated_at <= NEW.asked_at;
    END IF;
    RETURN NEW;"""


class AnswerRecord(models.Model):
    """One `/api/answer`: what was asked, what came back, and the durable source of its QuerySignals.

    `entities` holds one {"id", "entity_type", "role", "rank", "score"} per returned entity, in rank
    order; AnswerRecordEntity repeats them one row each, for "the questions that returned this entity".
    The record is written once and never updated: reconciliation keeps its progress elsewhere
    (AnswerReconcileMark, AnswerSignalsPending). The user is a reference only: deleting the user keeps the
    record, anonymised.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    asked_at = models.DateTimeField(default=timezone.now)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="answer_records"
    )
    question = models.TextField()
    question_normalized = models.TextField()
    entities = models.JSONField(default=list, blank=True)
    result_count = models.PositiveSmallIntegerField(default=0)
    subject_count = models.PositiveSmallIntegerField(default=0)
    latency_ms = models.FloatField()
    composer = models.CharField(max_length=32)
    # The oldest content (updated_at) among the subject entities as the answer served them, set by the
    # database as the record is written; null when there is none or it is unknown (a past answer recorded
    # after its entities changed). The stale-answer rate compares it with asked_at.
    subject_content_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        indexes = [
            models.Index(
                fields=["asked_at"],
                include=["question_normalized", "result_count", "subject_count", "user"],
                name="answer_record_asked_questions",
            ),
            # One question's answers in a timeframe: users and an example for the top questions.
            models.Index(
                fields=["question_normalized", "asked_at"],
                include=["user", "question", "subject_count"],
                name="answer_record_question_asked",
            ),
            # The stale-answer rate of a timeframe, from the index alone.
            models.Index(fields=["asked_at"], include=["subject_content_at"], name="answer_record_asked_content"),
        ]
        triggers = [
            pgtrigger.Trigger(
                name="answer_record_subject_content",
                level=pgtrigger.Row,
                when=pgtrigger.Before,
                operation=pgtrigger.Insert,
                func=_ANSWER_SUBJECT_CONTENT,
            ),
        ]

    def __str__(self) -> str:
        return f"{self.asked_at:%Y-%m-%d %H:%M} {self.question[:60]}"

    @property
    def entity_ids(self) -> list[uuid.UUID]:
        return [uuid.UUID(item["id"]) for item in self.entities]


class AnswerRecordEntity(models.Model):
    """One entity an answer returned, with the answer's time and normalized question copied in, and the event
    id of the QuerySignal the answer sent for it (entities.questions.answer_signal_event_id).

    Written with its AnswerRecord in one statement and pruned with it by asked_at. No foreign keys: the
    prune deletes in set-based chunks, and a deleted entity leaves its answers' history intact.
    The indexes serve an entity's top questions, and reconciliation's check of the answers in (asked_at,
    answer id) order against the inbox, from the index alone.
    """

    id = models.BigAutoField(primary_key=True)
    answer_id = models.UUIDField()
    entity_id = models.UUIDField()
    asked_at = models.DateTimeField()
    question_normalized = models.TextField()
    role = models.CharField(max_length=16)
    rank = models.PositiveSmallIntegerField()
    # Null on rows written before entities 0014 (and by the release before during its deploy):
    # reconciliation checks those by deriving the ids in Python.
    event_id = models.UUIDField(null=True)

    class Meta:
        indexes = [
            models.Index(fields=["entity_id", "asked_at"], include=["question_normalized"], name="answer_entity_asked"),
            models.Index(fields=["asked_at", "answer_id"], include=["event_id"], name="answer_entity_asked_event"),
        ]

    def __str__(self) -> str:
        return f"{self.entity_id} in answer {self.answer_id}"


class AnswerReconcileMark(models.Model):
    """Reconciliation's watermark (one row): every answer up to (asked_at, answer_id), in that order, is settled.

    Settled means every signal of the answer was seen counted in the inbox, given up on, or the answer is in
    AnswerSignalsPending. The chore advances it over answers older than ANSWER_RECONCILE_AFTER_SECONDS
    without writing the answer records, so settling costs one row per page, not one per answer.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    asked_at = models.DateTimeField()
    answer_id = models.UUIDField()

    def __str__(self) -> str:
        return f"answers settled up to {self.asked_at:%Y-%m-%d %H:%M:%S}"


class AnswerSignalsPending(models.Model):
    """An answer behind the watermark with signals not seen counted: re-sent at `signals_sent_at` (or held).

    Only the few answers whose signals Redis lost have a row; the chore checks it again one bound after the
    send and deletes it once every signal is counted or given up on.
    """

    answer_id = models.UUIDField(primary_key=True)
    signals_sent_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["signals_sent_at", "answer_id"], name="answer_pending_sent")]

    def __str__(self) -> str:
        return f"answer {self.answer_id} re-sent at {self.signals_sent_at:%Y-%m-%d %H:%M:%S}"
