"""Writes to the entity store: import, demo data, derived search data, and the answer records."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from entities.demo import DEFAULT_DEMO_COUNT, demo_entities
from entities.embeddings import embedder, vectors_copy_binary
from entities.imports import EntityRow, RowError, entity_rows_read
from entities.models import (
    AnswerRecord,
    AnswerRecordEntity,
    AnswerSignalsPending,
    Entity,
    EntityEmbedding,
)
from entities.questions import answer_signal_event_id, question_normalize
from entities.retrieval import SearchHit
from entities.selectors import answer_reconcile_mark, answers_missing_signals, answers_page_missing
from kernel.databases import pg_array_literal
from kernel.iterables import batched
from streams.events import ROLE_SUBJECT, QuerySignal, UpdateRequest
from streams.handlers import ApplyResult
from streams.publisher import PublishOutcome, query_signals_publish
from streams.selectors import inbox_counted, outbox_waiting
from streams.services import inbox_record

# Content columns: a change to any of them moves updated_at. Demand counters are never written here: a
# new entity's demand row comes from the database's insert trigger, and a type change is copied to it by
# a row trigger. Rows go in id order, the order the worker locks demand rows in, so a batch of type
# changes and a worker batch cannot deadlock over demand rows.
_UPSERT_SQL = """
    INSERT INTO entities_entity (id, name, entity_type, data, created_at, updated_at)
    SELECT r.id, r.name, r.entity_type, r.data, %(now)s, %(now)s
    FROM unnest(%(ids)s::uuid[], %(names)s::text[], %(types)s::text[], %(data)s::jsonb[])
         AS r(id, name, entity_type, data)
    ORDER BY r.id
    ON CONFLICT (id) DO UPDATE SET
        name = EXCLUDED.name,
        entity_type = EXCLUDED.entity_type,
        data = EXCLUDED.data,
        updated_at = EXCLUDED.updated_at
    WHERE (entities_entity.name, entities_entity.entity_type, entities_entity.data)
          IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.entity_type, EXCLUDED.data)
    RETURNING id, (xmax = 0) AS inserted
"""


@dataclass
class UpsertResult:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    ids_to_embed: list[uuid.UUID] = field(default_factory=list)


def entities_upsert(*, rows: Sequence[EntityRow], now: datetime | None = None) -> UpsertResult:
    """Insert or update rows by id in one statement; unchanged rows are left alone (updated_at kept).

    Rows without an id get a new one. Vectors a row brings are stored as they are; the new or changed
    rows without one are returned in `ids_to_embed`, for `entities_reindex`.
    """
    now = now or timezone.now()
    ids = [row.id or uuid.uuid4() for row in rows]
    params = {
        "now": now,
        "ids": ids,
        "names": [row.name for row in rows],
        "types": [row.entity_type for row in rows],
        "data": [json.dumps(row.data) for row in rows],
    }
    with connection.cursor() as cursor:
        cursor.execute(_UPSERT_SQL, params)
        written = cursor.fetchall()
    brought = [(row_id, row.embedding) for row_id, row in zip(ids, rows, strict=True) if row.embedding]
    if brought:
        entity_vectors_store(
            ids=[row_id for row_id, _vector in brought],
            vectors=np.asarray([vector for _row_id, vector in brought], dtype=np.float32),
        )
    result = UpsertResult(created=sum(1 for _id, inserted in written if inserted))
    result.updated = len(written) - result.created
    result.unchanged = len(rows) - len(written)
    brought_ids = {row_id for row_id, _vector in brought}
    result.ids_to_embed = [row_id for row_id, _inserted in written if row_id not in brought_ids]
    return result


@dataclass
class ImportReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    embedded: int = 0
    errors: list[RowError] = field(default_factory=list)

    @property
    def valid(self) -> int:
        return self.created + self.updated + self.unchanged


def entity_import(
    *,
    path: Path,
    dry_run: bool = False,
    batch_size: int = 1000,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Import a JSONL or CSV file: good rows are upserted batch by batch, bad rows reported, not fatal."""
    report = ImportReport()

    def good_rows() -> Iterable[EntityRow]:
        for item in entity_rows_read(path):
            if progress:
                progress(1)
            if isinstance(item, RowError):
                report.errors.append(item)
            else:
                yield item

    for batch in batched(good_rows(), batch_size):
        if dry_run:
            report.created += len(batch)
            continue
        with transaction.atomic():
            result = entities_upsert(rows=batch)
            report.embedded += entities_reindex(entity_ids=result.ids_to_embed)
        report.created += result.created
        report.updated += result.updated
        report.unchanged += result.unchanged
    return report


@dataclass
class SeedReport:
    created: int
    existing: int
    embedded: int


def demo_entities_seed(
    *,
    count: int = DEFAULT_DEMO_COUNT,
    seed: int = 1,
    batch_size: int = 2000,
    progress: Callable[[int], None] | None = None,
) -> SeedReport:
    """Load the deterministic demo data set; records already present (same ids) are left untouched.

    Embeddings are computed once at the end for every entity still without one (one HNSW build, and
    a seed interrupted earlier is completed by the next run).
    """
    created = 0
    for batch in batched(demo_entities(count=count, seed=seed), batch_size):
        existing = set(Entity.objects.filter(pk__in=[e.id for e in batch]).values_list("pk", flat=True))
        new = [
            Entity(id=e.id, name=e.name, entity_type=e.entity_type, data=e.data, updated_at=e.updated_at)
            for e in batch
            if e.id not in existing
        ]
        # ignore_conflicts: a concurrent seed may insert the same ids; the first one wins.
        Entity.objects.bulk_create(new, ignore_conflicts=True)
        created += len(new)
        if progress:
            progress(len(batch))
    embedded = entity_embeddings_compute(only_missing=True)
    return SeedReport(created=created, existing=count - created, embedded=embedded)


EMBED_BATCH_SIZE = 1000
HNSW_REBUILD_MIN_ROWS = 2000
HNSW_BUILD_MEMORY = "256MB"
EMBEDDING_INDEX_NAME = "entity_embedding_hnsw"


def entity_vectors_store(*, ids: Sequence[uuid.UUID], vectors: np.ndarray) -> int:
    """Write these entities' vectors (one row each) in one binary COPY and one upsert; return how many.

    Derived data only: the entity rows, and so updated_at (content last changed), are not touched.
    """
    payload = vectors_copy_binary(ids=ids, vectors=vectors)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMP TABLE IF NOT EXISTS entity_embedding_load (id uuid, embedding vector) ON COMMIT DROP"
        )
        cursor.execute("TRUNCATE entity_embedding_load")
        with cursor.cursor.copy("COPY entity_embedding_load (id, embedding) FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(payload)
        cursor.execute(
            """
            INSERT INTO entities_entityembedding (entity_id, vector)
            SELECT l.id, l.embedding FROM entity_embedding_load AS l JOIN entities_entity AS e ON e.id = l.id
            ORDER BY l.id
            ON CONFLICT (entity_id) DO UPDATE SET vector = EXCLUDED.vector
            """
        )
        return cursor.rowcount


def _embeddings_store(*, ids: Sequence[uuid.UUID], rows: Sequence[tuple[str, dict]]) -> int:
    """Embed (name, data) rows with the configured embedder and store the vectors."""
    return entity_vectors_store(ids=ids, vectors=embedder().embed_entities(rows))


def entity_embeddings_compute(
    *,
    entity_ids: Iterable[uuid.UUID] | None = None,
    only_missing: bool = False,
    batch_size: int = EMBED_BATCH_SIZE,
    progress: Callable[[int], None] | None = None,
) -> int:
    """(Re)compute embeddings of these entities (all when None), batch by batch; returns how many were written.

    From HNSW_REBUILD_MIN_ROWS rows on, the HNSW index is dropped and rebuilt around the writes in one
    transaction (building it once is several times faster than inserting thousands of vectors into it);
    readers wait for that transaction, a few seconds for the demo data.
    """
    entities = Entity.objects.order_by("pk")
    if only_missing:
        entities = entities.filter(embedding__isnull=True)
    ids = list(entity_ids) if entity_ids is not None else None
    total = len(ids) if ids is not None else entities.count()
    if total < HNSW_REBUILD_MIN_ROWS:
        return _embeddings_compute_batches(entities=entities, ids=ids, batch_size=batch_size, progress=progress)
    index = next(index for index in EntityEmbedding._meta.indexes if index.name == EMBEDDING_INDEX_NAME)
    with transaction.atomic():
        with connection.schema_editor() as editor:
            editor.remove_index(EntityEmbedding, index)
        written = _embeddings_compute_batches(entities=entities, ids=ids, batch_size=batch_size, progress=progress)
        with connection.cursor() as cursor:
            # The build is fast only while the graph fits in maintenance_work_mem (PostgreSQL's default
            # is 64MB; the demo data's graph is ~50MB): raise it for this transaction, never lower it.
            cursor.execute(
                "SELECT set_config('maintenance_work_mem', greatest(pg_size_bytes(current_setting("
                "'maintenance_work_mem')), pg_size_bytes(%s)) / 1024 || 'kB', true)",
                [HNSW_BUILD_MEMORY],
            )
        with connection.cursor() as cursor:
            # The deferred foreign-key checks of the new rows must run before CREATE INDEX may.
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        with connection.schema_editor() as editor:
            editor.add_index(EntityEmbedding, index)
    return written


def _embeddings_compute_batches(
    *,
    entities: QuerySet[Entity],
    ids: list[uuid.UUID] | None,
    batch_size: int,
    progress: Callable[[int], None] | None,
) -> int:
    written = 0

    def store(batch: Sequence[tuple[uuid.UUID, str, dict]]) -> None:
        nonlocal written
        if batch:
            written += _embeddings_store(ids=[row[0] for row in batch], rows=[(row[1], row[2]) for row in batch])
        if progress:
            progress(len(batch))

    if ids is not None:
        for id_batch in batched(ids, batch_size):
            store(list(entities.filter(pk__in=id_batch).values_list("id", "name", "data")))
        return written
    last_id = None
    while True:
        page = entities.filter(pk__gt=last_id) if last_id else entities
        batch = list(page.values_list("id", "name", "data")[:batch_size])
        if not batch:
            return written
        store(batch)
        last_id = batch[-1][0]


def entities_reindex(*, entity_ids: Iterable[uuid.UUID]) -> int:
    """Recompute the derived search data (embeddings) of these entities; the worker's `reindex` operation."""
    return entity_embeddings_compute(entity_ids=entity_ids)


def _entities_lock(cursor, entity_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
    """Lock the existing entities among `entity_ids` against deletion (KEY SHARE, in id order); return their ids.

    KEY SHARE is what the refresh request's foreign key takes anyway; it lets edits of the entities and
    the demand counters go on.
    """
    ids = sorted(set(map(str, entity_ids)))  # text order is uuid order
    if not ids:
        return set()
    cursor.execute(
        "SELECT id FROM entities_entity WHERE id = ANY(%s::uuid[]) ORDER BY id FOR KEY SHARE",
        [pg_array_literal(ids)],
    )
    return {row[0] for row in cursor.fetchall()}


def update_requests_apply(*, requests: Sequence[UpdateRequest]) -> ApplyResult:
    """Apply UpdateRequests exactly once: `refresh` records RefreshRequest rows, `reindex` recomputes.

    The UpdateRequest batch handler (registered by EntitiesConfig.ready()). A request naming any entity
    that does not exist is rejected whole. Runs in the caller's transaction (the consumer's batch).
    """
    result = ApplyResult()
    if not requests:
        return result
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        known = _entities_lock(cursor, (entity_id for request in requests for entity_id in request.entity_ids))
        seen: set[uuid.UUID] = set()
        keep: list[UpdateRequest] = []
        repeats = 0
        for index, request in enumerate(requests):
            missing = [str(entity_id) for entity_id in request.entity_ids if entity_id not in known]
            if missing:
                result.rejected[index] = f"unknown entity_ids {', '.join(missing[:5])}" + (
                    f" and {len(missing) - 5} more" if len(missing) > 5 else ""
                )
            elif request.event_id in seen:
                repeats += 1
            else:
                seen.add(request.event_id)
                keep.append(request)
        new_ids = inbox_record(cursor, [request.event_id for request in keep])
        fresh = [request for request in keep if request.event_id in new_ids]
        result.applied = len(fresh)
        result.duplicates = repeats + len(keep) - len(fresh)

        refresh_rows = sorted(
            (entity_id, request.event_id, request.source, request.timestamp)
            for request in fresh
            if request.operation == "refresh"
            for entity_id in request.entity_ids
        )
        if refresh_rows:
            entity_ids, event_ids, sources, requested = (list(column) for column in zip(*refresh_rows, strict=True))
            cursor.execute(
                """
                INSERT INTO entities_refreshrequest (entity_id, event_id, source, requested_at)
                SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::text[], %s::timestamptz[])
                ON CONFLICT (event_id, entity_id) DO NOTHING
                """,
                [entity_ids, event_ids, sources, requested],
            )
        reindex_ids = {
            entity_id for request in fresh if request.operation == "reindex" for entity_id in request.entity_ids
        }
        if reindex_ids:
            entities_reindex(entity_ids=sorted(reindex_ids))
    return result


def update_request_batch_apply(events: Sequence[UpdateRequest], prepared: object) -> ApplyResult:
    """The consumer's entry point (streams.handlers.BatchHandler.apply)."""
    return update_requests_apply(requests=events)


# Answer records: record an answer, send its signals, reconcile the uncounted, prune.

logger = logging.getLogger(__name__)

RECONCILE_CHUNK = 10_000  # per page: entity rows (signals) of new answers, or pending answers
PRUNE_CHUNK = 10_000


# The record and one row per returned entity, in one statement (one round trip, atomic).
_RECORD_INSERT_SQL = """
WITH record AS (
    INSERT INTO entities_answerrecord (id, asked_at, user_id, question, question_normalized, entities,
        result_count, subject_count, latency_ms, composer)
    VALUES (%(id)s, %(asked_at)s, %(user_id)s, %(question)s, %(normalized)s, %(entities)s, %(result_count)s,
        %(subject_count)s, %(latency_ms)s, %(composer)s)
    RETURNING id
), returned AS (
    INSERT INTO entities_answerrecordentity (answer_id, entity_id, asked_at, question_normalized, role, rank,
        event_id)
    SELECT %(id)s, e.entity_id, %(asked_at)s, %(normalized)s, e.role, e.rank, e.event_id
    FROM unnest(%(entity_ids)s::uuid[], %(roles)s::text[], %(ranks)s::int[], %(event_ids)s::uuid[])
        AS e(entity_id, role, rank, event_id)
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
    """Record one answer (one statement, never updated after)."""
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
    )
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
                "entity_ids": pg_array_literal([str(hit.id) for hit in hits]),
                "roles": pg_array_literal([hit.role for hit in hits]),
                "ranks": pg_array_literal([str(hit.rank) for hit in hits]),
                "event_ids": pg_array_literal(
                    [str(answer_signal_event_id(answer_id=record.id, entity_id=hit.id)) for hit in hits]
                ),
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


# The watermark only moves forward: two workers' chores may pass the same pages at once.
_MARK_ADVANCE_SQL = """
INSERT INTO entities_answerreconcilemark AS mark (id, asked_at, answer_id) VALUES (1, %s, %s)
ON CONFLICT (id) DO UPDATE SET asked_at = EXCLUDED.asked_at, answer_id = EXCLUDED.answer_id
WHERE (mark.asked_at, mark.answer_id) < (EXCLUDED.asked_at, EXCLUDED.answer_id)
"""

_RECORD_FIELDS = ("id", "asked_at", "user_id", "question", "entities")


@dataclass
class ReconcileOutcome:
    """What one reconciliation did: answers checked and settled, signals re-sent, held back, given up."""

    checked: int = 0
    settled: int = 0
    resent: int = 0
    held: int = 0
    given_up: int = 0


def answer_signals_reconcile(*, now: datetime | None = None, limit: int = 10_000) -> ReconcileOutcome:
    """Re-send the signals of answers still not counted ANSWER_RECONCILE_AFTER_SECONDS after they were sent.

    Two set-based passes over up to `limit` answers, in pages. First the pending answers (AnswerSignalsPending)
    re-sent before the bound; then the answers past the watermark (AnswerReconcileMark) asked before the bound,
    in (asked_at, id) order, checked in SQL alone against the event ids their entity rows keep (answers that
    returned nothing sent nothing and are not counted as checked): an answer whose every event id is in the
    inbox is settled by the watermark moving past it, with nothing written for it; the missing signals of the
    others are published again with the same event ids (so the inbox counts each at most once) and the answer
    is pending, checked again one bound later. Gives up (settles, logs) on signals of entities that no longer
    exist and of answers older than INBOX_RETENTION_DAYS, whose counted ids the inbox may have forgotten.
    While the outbox holds events (Redis was unreachable) nothing is re-sent: the missing signals may be
    waiting there, and re-sending each minute of an outage would pile copies into the outbox; such answers
    stay pending, due at once.

    The watermark trusts that an answer's record commits within the bound after its asked_at (it is one
    INSERT right after the answer), so no answer appears behind it later.
    """
    now = now or timezone.now()
    bound = now - timedelta(seconds=settings.ANSWER_RECONCILE_AFTER_SECONDS)
    outcome = ReconcileOutcome()
    hold = outbox_waiting()
    check = _ReconcileCheck(now=now, hold=hold, outcome=outcome)
    _pending_reconcile(check=check, bound=bound, limit=limit)
    _new_answers_reconcile(check=check, bound=bound, limit=limit)
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


@dataclass
class _ReconcileCheck:
    now: datetime
    hold: bool
    outcome: ReconcileOutcome

    def missing(self, records: Sequence[AnswerRecord]) -> list[uuid.UUID]:
        """Re-send (unless held) the alive missing signals of `records`; return the ids of those left pending."""
        inbox_horizon = self.now - timedelta(days=settings.INBOX_RETENTION_DAYS)
        pending, resend = _reconcile_chunk(records, inbox_horizon=inbox_horizon, outcome=self.outcome)
        if resend and self.hold:
            self.outcome.held += len(resend)
        elif resend:
            query_signals_publish(signals=resend)
            self.outcome.resent += len(resend)
        return pending


def _pending_reconcile(*, check: _ReconcileCheck, bound: datetime, limit: int) -> None:
    """Check the pending answers re-sent (or held) before the bound, in keyset pages."""
    outcome = check.outcome
    due = AnswerSignalsPending.objects.filter(signals_sent_at__lt=bound).order_by("signals_sent_at", "answer_id")
    after = Q()
    while outcome.checked < limit:
        page = list(
            due.filter(after).values_list("answer_id", "signals_sent_at")[
                : min(RECONCILE_CHUNK, limit - outcome.checked)
            ]
        )
        if not page:
            return
        # Held answers keep their send time, so the keyset, not the filter, keeps them from coming round again.
        last_id, last_sent = page[-1]
        after = Q(signals_sent_at__gt=last_sent) | Q(signals_sent_at=last_sent, answer_id__gt=last_id)
        ids = [answer_id for answer_id, _sent in page]
        records = list(AnswerRecord.objects.filter(id__in=ids).only(*_RECORD_FIELDS))
        outcome.checked += len(page)
        missing = answers_missing_signals([(record.id, record.asked_at) for record in records])
        pending = check.missing([record for record in records if record.id in missing])
        done = set(ids) - set(pending)  # counted, given up, or the record was pruned
        with transaction.atomic():
            AnswerSignalsPending.objects.filter(answer_id__in=done).delete()
            if not check.hold:
                AnswerSignalsPending.objects.filter(answer_id__in=pending).update(signals_sent_at=check.now)
        outcome.settled += len(done)
        if len(page) < RECONCILE_CHUNK:
            return


def _new_answers_reconcile(*, check: _ReconcileCheck, bound: datetime, limit: int) -> None:
    """Check the answers past the watermark asked before the bound, in (asked_at, id) pages; advance it."""
    outcome = check.outcome
    after = answer_reconcile_mark()
    while outcome.checked < limit:
        rows = min(RECONCILE_CHUNK, limit - outcome.checked)  # a page holds at most as many answers as rows
        page = answers_page_missing(after=after, before=bound, rows=rows)
        if page is None:
            return
        outcome.checked += page.answers
        records = list(AnswerRecord.objects.filter(id__in=page.missing).only(*_RECORD_FIELDS)) if page.missing else []
        pending = check.missing(records)
        # Held answers are due at once (their asked_at is before the bound); re-sent ones one bound from now.
        sent_at = {record.id: record.asked_at if check.hold else check.now for record in records}
        with transaction.atomic():
            AnswerSignalsPending.objects.bulk_create(
                [
                    AnswerSignalsPending(answer_id=answer_id, signals_sent_at=sent_at[answer_id])
                    for answer_id in pending
                ],
                ignore_conflicts=True,
            )
            with connection.cursor() as cursor:
                cursor.execute(_MARK_ADVANCE_SQL, list(page.last))
        outcome.settled += page.answers - len(pending)
        if page.rows < rows:
            return
        after = page.last


def _reconcile_chunk(
    records: Sequence[AnswerRecord], *, inbox_horizon: datetime, outcome: ReconcileOutcome
) -> tuple[list[uuid.UUID], list[QuerySignal]]:
    """Of `records`, the ids with alive signals to re-send, and those signals; counts what is given up on."""
    signals = {record.id: answer_record_signals(record) for record in records}
    counted = inbox_counted(event_ids=[signal.event_id for items in signals.values() for signal in items])
    missing = {record_id: [s for s in items if s.event_id not in counted] for record_id, items in signals.items()}
    missing_entities = {signal.entity_id for items in missing.values() for signal in items}
    existing = set(Entity.objects.filter(id__in=missing_entities).values_list("id", flat=True))
    resend_records, resend = [], []
    for record in records:
        if record.asked_at < inbox_horizon:
            outcome.given_up += len(missing[record.id])
            continue
        alive = [signal for signal in missing[record.id] if signal.entity_id in existing]
        outcome.given_up += len(missing[record.id]) - len(alive)
        if alive:
            resend_records.append(record.id)
            resend.extend(alive)
    return resend_records, resend


def answer_records_prune(*, now: datetime | None = None, keep_from: datetime | None = None) -> int:
    """Delete answer records (and their entity rows) older than ANSWER_RETENTION_DAYS, in chunks; return how many.

    Records at or after `keep_from` are kept whatever the retention (a reader of them still needs them).
    """
    cutoff = (now or timezone.now()) - timedelta(days=settings.ANSWER_RETENTION_DAYS)
    if keep_from is not None:
        cutoff = min(cutoff, keep_from)
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


@dataclass(frozen=True, slots=True)
class PastAnswer:
    """An answer given in the past (the demo's simulated history): its id, time, question and subject."""

    id: uuid.UUID
    asked_at: datetime
    question: str
    entity_id: uuid.UUID | None
    entity_type: str = ""
    user_id: int | None = None


def past_answers_record(*, answers: Sequence[PastAnswer], composer: str = "extractive") -> int:
    """Record past answers whose signals are counted already (settled): one subject each, or none (a gap).

    Set-based (two bulk inserts), for loading a history; the answer path uses `answer_record_create`.
    Answers whose id is recorded already are left as they are; returns how many were recorded.
    """
    known = set(AnswerRecord.objects.filter(id__in=[answer.id for answer in answers]).values_list("id", flat=True))
    records, rows = [], []
    for answer in answers:
        if answer.id in known:
            continue
        entities = []
        if answer.entity_id is not None:
            entities = [{"id": str(answer.entity_id), "entity_type": answer.entity_type, "role": ROLE_SUBJECT,
                         "rank": 1, "score": 1.0}]  # fmt: skip
            rows.append(
                AnswerRecordEntity(
                    answer_id=answer.id,
                    entity_id=answer.entity_id,
                    asked_at=answer.asked_at,
                    question_normalized=question_normalize(answer.question),
                    role=ROLE_SUBJECT,
                    rank=1,
                    event_id=answer_signal_event_id(answer_id=answer.id, entity_id=answer.entity_id),
                )
            )
        records.append(
            AnswerRecord(
                id=answer.id,
                asked_at=answer.asked_at,
                user_id=answer.user_id,
                question=answer.question,
                question_normalized=question_normalize(answer.question),
                entities=entities,
                result_count=len(entities),
                subject_count=len(entities),
                latency_ms=0.0,
                composer=composer,
            )
        )
    with transaction.atomic():
        AnswerRecord.objects.bulk_create(records, batch_size=2000)
        AnswerRecordEntity.objects.bulk_create(rows, batch_size=2000)
    return len(records)
