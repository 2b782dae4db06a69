"""Writes of the event pipeline: apply batches exactly once, settle stream entries, the outbox, the inbox.

Exactly-once effects: a batch's event ids go into the inbox table (ProcessedEvent) in the same
transaction as the counters they move, and only ids that were not there yet move anything. An entry is
acknowledged in Redis only after that transaction commits, so a crash at any instant either redelivers
an entry (whose id the inbox then skips) or has already counted and acknowledged it.

Lock order, so that parallel workers never deadlock: demand rows (sorted by entity id), then inbox ids
(sorted), then demand buckets (sorted by entity, hour), windows (by entity) and refresh requests (sorted
by entity, event).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import NamedTuple

import redis
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from analytics.services import demand_add_ctes, demand_windows_lock_shared
from entities.services import entities_reindex
from kernel.databases import pg_array_literal
from streams.events import QuerySignal, UpdateRequest, dead_letter_decode, dead_letter_fields
from streams.models import OutboxEvent, ProcessedEvent
from streams.redis import redis_client

logger = logging.getLogger(__name__)

# The dead-letter stream is for people to read; keep about this many of the most recent entries.
DEAD_LETTER_MAXLEN = 100_000
OUTBOX_RELAY_CHUNK = 500
INBOX_PRUNE_CHUNK = 10_000


@dataclass
class ApplyResult:
    """What one apply did: `applied` new events, `duplicates` already counted, `rejected` by input index."""

    applied: int = 0
    duplicates: int = 0
    rejected: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DeadEntry:
    """A stream entry that can never be processed, on its way to the dead-letter stream."""

    stream: str
    entry_id: str
    fields: Mapping[str, str]
    reason: str
    deliveries: int = 1


def _commit_durably(cursor) -> None:
    """Make this transaction's COMMIT wait for its WAL flush, whatever the server's default.

    The worker acknowledges entries once COMMIT returns; with synchronous_commit off a server crash
    could then forget a batch that Redis no longer holds.
    """
    cursor.execute("SET LOCAL synchronous_commit TO on")


def _entities_lock(cursor, entity_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
    """Lock the demand rows of the existing entities among `entity_ids` in id order; return the ids that exist."""
    ids = sorted(set(map(str, entity_ids)))  # text order is uuid order
    if not ids:
        return set()
    cursor.execute(
        "SELECT entity_id FROM entities_entitydemand WHERE entity_id = ANY(%s::uuid[])"
        " ORDER BY entity_id FOR NO KEY UPDATE",
        [pg_array_literal(ids)],
    )
    return {row[0] for row in cursor.fetchall()}


def _inbox_record(cursor, event_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    """Insert `event_ids` into the inbox; return those that were not there (the ones to count)."""
    if not event_ids:
        return set()
    cursor.execute(
        """
        INSERT INTO streams_processedevent (event_id, processed_at)
        SELECT event_id, now() FROM unnest(%s::uuid[]) AS batch(event_id) ORDER BY event_id
        ON CONFLICT (event_id) DO NOTHING
        RETURNING event_id
        """,
        [pg_array_literal(event_ids)],
    )
    return {row[0] for row in cursor.fetchall()}


def _first_per_event(items: Sequence, known: set[uuid.UUID], key) -> tuple[list[int], int]:
    """Indexes of the first item per event id among items whose entities all exist; count repeats."""
    seen: set[uuid.UUID] = set()
    keep: list[int] = []
    repeats = 0
    for index, item in enumerate(items):
        if not key(item) <= known:
            continue
        if item.event_id in seen:
            repeats += 1
            continue
        seen.add(item.event_id)
        keep.append(index)
    return keep, repeats


class SignalColumns(NamedTuple):
    """A batch of QuerySignals as one PostgreSQL array literal per column, in the batch's order."""

    event_ids: str
    entity_ids: str
    timestamps: str


def signal_columns(signals: Sequence[QuerySignal]) -> SignalColumns:
    """The columns `query_signals_apply` sends; the worker builds them while the previous batch commits."""
    return SignalColumns(
        pg_array_literal([signal.event_id for signal in signals]),
        pg_array_literal([signal.entity_id for signal in signals]),
        pg_array_literal([signal.timestamp for signal in signals]),
    )


def stream_batch_apply(
    *,
    signals: Sequence[QuerySignal],
    requests: Sequence[UpdateRequest],
    columns: SignalColumns | None = None,
) -> tuple[ApplyResult, ApplyResult]:
    """Apply a worker's batch in ONE transaction; every entity it names is locked first, in id order.

    `columns`: `signal_columns(signals)`, when the caller has it already.
    """
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        known = None
        if requests:
            # Signals alone lock their entities in their own statement; with requests, every entity of the
            # batch is locked in one ordered pass first (the signals' statement then holds its locks already).
            _commit_durably(cursor)
            entity_ids = [signal.entity_id for signal in signals]
            entity_ids += [entity_id for request in requests for entity_id in request.entity_ids]
            known = _entities_lock(cursor, entity_ids)
        return (
            query_signals_apply(signals=signals, columns=columns),
            update_requests_apply(requests=requests, locked_entity_ids=known),
        )


# One statement counts a batch: lock the named entities' demand rows (entity id order), keep the first
# event per event id among those naming an existing entity, record the ids in the inbox, and move
# counters, buckets and windows by the events the inbox did not hold yet. It returns the existing
# entity ids and how many events were counted.
_SIGNALS_APPLY_SQL = f"""
WITH named AS (
    SELECT * FROM unnest(%(event_ids)s::uuid[], %(entity_ids)s::uuid[], %(timestamps)s::timestamptz[])
        WITH ORDINALITY AS named(event_id, entity_id, at, position)
), known AS (
    SELECT entity_id AS id FROM entities_entitydemand WHERE entity_id IN (SELECT entity_id FROM named)
    ORDER BY entity_id FOR NO KEY UPDATE
), batch AS (
    SELECT DISTINCT ON (event_id) event_id, entity_id, at
    FROM named WHERE entity_id IN (SELECT id FROM known)
    ORDER BY event_id, position
), fresh AS (
    INSERT INTO streams_processedevent (event_id, processed_at)
    SELECT event_id, now() FROM batch ORDER BY event_id
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
), counted AS (
    SELECT batch.entity_id, batch.at FROM batch JOIN fresh USING (event_id)
), per_entity AS (
    SELECT entity_id, count(*) AS amount, min(at) AS first_at, max(at) AS last_at FROM counted GROUP BY entity_id
), counters AS (
    UPDATE entities_entitydemand AS demand SET
        demand_score = demand.demand_score + per_entity.amount,
        query_count = demand.query_count + per_entity.amount,
        first_queried_at = LEAST(demand.first_queried_at, per_entity.first_at),
        last_queried_at = GREATEST(demand.last_queried_at, per_entity.last_at)
    FROM per_entity WHERE demand.entity_id = per_entity.entity_id
), per_hour AS (
    SELECT entity_id, date_trunc('hour', at, 'UTC') AS hour, count(*) AS amount FROM counted GROUP BY 1, 2
), {demand_add_ctes(source="per_hour")}
SELECT (SELECT array_agg(id) FROM known), (SELECT count(*) FROM fresh)
"""  # noqa: S608 - built from constants only


def query_signals_apply(*, signals: Sequence[QuerySignal], columns: SignalColumns | None = None) -> ApplyResult:
    """Count `signals` exactly once: inbox, entity counters, hourly buckets and windows in one statement.

    Signals naming an entity that does not exist are rejected (not counted). Counters move only by
    database-side arithmetic; `first_queried_at`/`last_queried_at` take LEAST/GREATEST, so late and
    out-of-order events land correctly; `updated_at` (content changes) is never touched. Runs in the
    caller's transaction when there is one. `columns`: `signal_columns(signals)`, when the caller has it.
    """
    result = ApplyResult()
    if not signals:
        return result
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        _commit_durably(cursor)
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


def update_requests_apply(
    *, requests: Sequence[UpdateRequest], locked_entity_ids: set[uuid.UUID] | None = None
) -> ApplyResult:
    """Apply UpdateRequests exactly once: `refresh` records RefreshRequest rows, `reindex` recomputes.

    A request naming any entity that does not exist is rejected whole.
    """
    result = ApplyResult()
    if not requests:
        return result
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        known = locked_entity_ids
        if known is None:
            _commit_durably(cursor)
            known = _entities_lock(cursor, (entity_id for request in requests for entity_id in request.entity_ids))
        for index, request in enumerate(requests):
            missing = [str(entity_id) for entity_id in request.entity_ids if entity_id not in known]
            if missing:
                result.rejected[index] = f"unknown entity_ids {', '.join(missing[:5])}" + (
                    f" and {len(missing) - 5} more" if len(missing) > 5 else ""
                )
        keep, repeats = _first_per_event(requests, known, lambda request: set(request.entity_ids))
        new_ids = _inbox_record(cursor, [requests[index].event_id for index in keep])
        fresh = [requests[index] for index in keep if requests[index].event_id in new_ids]
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


def stream_entries_settle(
    *, client: redis.Redis, acks: Mapping[str, Sequence[str]], dead: Sequence[DeadEntry] = ()
) -> None:
    """Dead-letter `dead` and acknowledge every id in `acks` in ONE MULTI/EXEC.

    Because the copy and the acknowledgement commit together, an entry is dead-lettered exactly once
    even if the worker dies at any instant around this call.
    """
    if not any(acks.values()) and not dead:
        return
    now = timezone.now()
    pipe = client.pipeline(transaction=True)
    for entry in dead:
        fields = dead_letter_fields(
            fields=entry.fields,
            reason=entry.reason,
            stream=entry.stream,
            entry_id=entry.entry_id,
            deliveries=entry.deliveries,
            dead_at=now,
        )
        pipe.xadd(settings.STREAM_DEAD_LETTER, fields, maxlen=DEAD_LETTER_MAXLEN, approximate=True)
    for stream, ids in acks.items():
        if ids:
            pipe.xack(stream, settings.STREAM_CONSUMER_GROUP, *ids)
    pipe.execute()


def outbox_events_add(*, entries: Sequence[tuple[str, Mapping[str, str]]]) -> None:
    """Keep entries that could not be published, to be relayed when Redis is reachable."""
    OutboxEvent.objects.bulk_create([OutboxEvent(stream=stream, fields=dict(fields)) for stream, fields in entries])


def outbox_relay(*, limit: int = 10_000) -> int:
    """Publish up to `limit` outbox entries to Redis (oldest first) and delete them; return how many.

    Rows are locked with SKIP LOCKED so that parallel relays do not send the same rows; a crash
    between XADD and the delete sends a row twice, which the inbox makes harmless. Raises
    redis.RedisError (after counting the attempt) when Redis is unreachable.
    """
    relayed = 0
    while relayed < limit:
        failed: tuple[list[int], redis.RedisError] | None = None
        with transaction.atomic():
            rows = list(
                OutboxEvent.objects.select_for_update(skip_locked=True)
                .order_by("id")
                .values_list("id", "stream", "fields")[: min(OUTBOX_RELAY_CHUNK, limit - relayed)]
            )
            if not rows:
                break
            ids = [row_id for row_id, _stream, _fields in rows]
            try:
                pipe = redis_client().pipeline(transaction=False)
                for _row_id, stream, fields in rows:
                    pipe.xadd(stream, fields)
                pipe.execute()
            except redis.RedisError as error:
                failed = (ids, error)
            else:
                OutboxEvent.objects.filter(id__in=ids).delete()
                relayed += len(rows)
        if failed:
            OutboxEvent.objects.filter(id__in=failed[0]).update(attempts=F("attempts") + 1)
            raise failed[1]
    if relayed:
        logger.info("outbox: relayed %d events to Redis", relayed)
    return relayed


def inbox_prune(*, retention: timedelta | None = None) -> int:
    """Delete inbox ids older than settings.INBOX_RETENTION_DAYS (in chunks); return how many."""
    retention = retention if retention is not None else timedelta(days=settings.INBOX_RETENTION_DAYS)
    cutoff = timezone.now() - retention
    deleted = 0
    while True:
        with connection.cursor() as cursor:
            cursor.execute(
                """
                DELETE FROM streams_processedevent WHERE event_id IN (
                    SELECT event_id FROM streams_processedevent WHERE processed_at < %s LIMIT %s
                )
                """,
                [cutoff, INBOX_PRUNE_CHUNK],
            )
            count = cursor.rowcount
        deleted += count
        if count < INBOX_PRUNE_CHUNK:
            return deleted


@dataclass
class ReplayOutcome:
    """What a dead-letter replay did (or, for a dry run, would do)."""

    replayed: int = 0
    already_counted: int = 0
    not_found: list[str] = field(default_factory=list)
    unknown_source: int = 0
    replayed_ids: list[str] = field(default_factory=list)


DEAD_LETTER_REPLAY_CHUNK = 500


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        return False
    return True


def dead_letters_replay(
    *, ids: Sequence[str] | None = None, reason_contains: str | None = None, dry_run: bool = False
) -> ReplayOutcome:
    """Re-publish dead-letter entries to their source stream and delete them from the dead-letter stream.

    `ids` picks entries (all when None); `reason_contains` keeps only entries whose reason contains it.
    Each entry goes back with its original fields, so its event_id is unchanged and the worker's inbox
    counts it at most once. Entries whose event_id the inbox already holds were counted: they are only
    deleted. Each chunk's XADDs and XDELs run in one MULTI, so an entry is never both replayed and kept.
    """
    client = redis_client()
    dead_stream = settings.STREAM_DEAD_LETTER
    sources = {settings.STREAM_QUERY_SIGNALS, settings.STREAM_UPDATE_REQUESTS}
    outcome = ReplayOutcome()

    def chunks():
        if ids is not None:
            wanted = list(dict.fromkeys(ids))
            for start in range(0, len(wanted), DEAD_LETTER_REPLAY_CHUNK):
                part = wanted[start : start + DEAD_LETTER_REPLAY_CHUNK]
                pipe = client.pipeline(transaction=False)
                for entry_id in part:
                    pipe.xrange(dead_stream, min=entry_id, max=entry_id)
                found = []
                for entry_id, reply in zip(part, pipe.execute(), strict=True):
                    if reply:
                        found.append(reply[0])
                    else:
                        outcome.not_found.append(entry_id)
                yield found
            return
        after = "-"
        while True:
            page = client.xrange(dead_stream, min=after, max="+", count=DEAD_LETTER_REPLAY_CHUNK)
            if not page:
                return
            yield page
            after = f"({page[-1][0]}"

    for page in chunks():
        entries = [dead_letter_decode(entry_id, fields) for entry_id, fields in page]
        if reason_contains:
            entries = [entry for entry in entries if reason_contains.lower() in entry["reason"].lower()]
        known = [entry for entry in entries if entry["source_stream"] in sources]
        outcome.unknown_source += len(entries) - len(known)
        event_ids = [entry["event_id"] for entry in known if _is_uuid(entry["event_id"])]
        counted = {
            str(event_id)
            for event_id in ProcessedEvent.objects.filter(event_id__in=event_ids).values_list("event_id", flat=True)
        }
        if dry_run:
            outcome.already_counted += sum(1 for entry in known if entry["event_id"] in counted)
            outcome.replayed += sum(1 for entry in known if entry["event_id"] not in counted)
            continue
        if not known:
            continue
        pipe = client.pipeline(transaction=True)
        for entry in known:
            if entry["event_id"] in counted:
                outcome.already_counted += 1
            else:
                pipe.xadd(entry["source_stream"], entry["fields"])
                outcome.replayed += 1
                outcome.replayed_ids.append(entry["id"])
            pipe.xdel(dead_stream, entry["id"])
        pipe.execute()
    if outcome.replayed or outcome.already_counted:
        logger.info(
            "dead letters: %d replayed, %d already counted (removed)%s",
            outcome.replayed,
            outcome.already_counted,
            " [dry run]" if dry_run else "",
        )
    return outcome
