"""Writes of the transport: batch transactions, the inbox, settling stream entries, the outbox, replays.

Exactly-once effects: a batch's event ids go into the inbox table (ProcessedEvent) in the same
transaction as the effects the handlers apply, and only ids that were not there yet move anything. An
entry is acknowledged in Redis only after that transaction commits, so a crash at any instant either
redelivers an entry (whose id the inbox then skips) or has already applied and acknowledged it.
Handlers take their locks in a fixed order (streams.handlers), so parallel workers never deadlock.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import redis
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from kernel.databases import pg_array_literal
from streams.events import dead_letter_decode, dead_letter_fields
from streams.handlers import ApplyResult, BatchHandler
from streams.models import OutboxEvent, ProcessedEvent
from streams.partitions import partition_lease_key, partition_members_key, stream_key_route, stream_logical
from streams.redis import REDIS_ERRORS, key_in_slot_of, redis_client, script_calls

logger = logging.getLogger(__name__)

# The dead-letter stream is for people to read; keep about this many of the most recent entries.
DEAD_LETTER_MAXLEN = 100_000
OUTBOX_RELAY_CHUNK = 500
INBOX_PRUNE_CHUNK = 10_000


@dataclass(frozen=True)
class DeadEntry:
    """A stream entry that can never be processed, on its way to the dead-letter stream."""

    stream: str
    entry_id: str
    fields: Mapping[str, str]
    reason: str
    deliveries: int = 1


def commit_durably(cursor) -> None:
    """Make this transaction's COMMIT wait for its WAL flush, whatever the server's default.

    The worker acknowledges entries once COMMIT returns; with synchronous_commit off a server crash
    could then forget a batch that Redis no longer holds.
    """
    cursor.execute("SET LOCAL synchronous_commit TO on")


def inbox_insert_sql(*, source: str) -> str:
    """The inbox as a data-modifying CTE body: record `source`'s event ids, RETURNING those new to it.

    `source` names a relation with an `event_id` column, distinct per id. A handler puts this in the
    WITH list of its own statement, so recording and counting a batch stay one round trip; only the
    returned ids may move anything.
    """
    return f"""
    INSERT INTO streams_processedevent (event_id, processed_at)
    SELECT event_id, now() FROM {source} ORDER BY event_id
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id"""  # noqa: S608 - built from constants only


def inbox_record(cursor, event_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    """Insert `event_ids` into the inbox; return those that were not there (the ones to apply)."""
    if not event_ids:
        return set()
    cursor.execute(
        f"WITH batch AS (SELECT unnest(%s::uuid[]) AS event_id) {inbox_insert_sql(source='batch')}",
        [pg_array_literal(event_ids)],
    )
    return {row[0] for row in cursor.fetchall()}


def stream_batch_apply(
    *, handlers: Sequence[BatchHandler], events: Mapping[str, Sequence], prepared: Mapping[str, object]
) -> dict[str, ApplyResult]:
    """Apply a worker's batch in ONE transaction: each handler (in order) gets its stream's events.

    The handlers record their events in the inbox in that transaction, so a batch's effects commit
    exactly once, or not at all.
    """
    results: dict[str, ApplyResult] = {}
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        commit_durably(cursor)
        for handler in handlers:
            stream = handler.stream
            if events.get(stream):
                results[stream] = handler.apply(events[stream], prepared.get(stream))
    return results


# Dead-letter copies, once per source entry. KEYS[1] is the dead-letter stream, KEYS[2] a sorted set in
# its slot of the source entries already copied (member "<stream> <entry id>", score: ms when copied).
# ARGV: maxlen, now (ms), oldest score kept, markers kept at most, then per entry: member, field count
# n, n field-value pairs. Returns how many copies it added.
_DEAD_LETTERS_ADD_LUA = """
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[3])
local added = 0
local i = 5
while i <= #ARGV do
  local count = tonumber(ARGV[i + 1])
  if redis.call('ZADD', KEYS[2], 'NX', ARGV[2], ARGV[i]) == 1 then
    local command = {'XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*'}
    for j = i + 2, i + 1 + 2 * count do
      command[#command + 1] = ARGV[j]
    end
    redis.call(unpack(command))
    added = added + 1
  end
  i = i + 2 + 2 * count
end
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -1 - tonumber(ARGV[4]))
return added
"""
# Entries per script call: one call holds the server for its whole run.
DEAD_LETTER_ADD_CHUNK = 200


def dead_letter_sources_key() -> str:
    """The sorted set of source entries already copied to the dead-letter stream (same slot as it)."""
    return key_in_slot_of(settings.STREAM_DEAD_LETTER, "sources")


def dead_letters_add(*, client: redis.Redis, dead: Sequence[DeadEntry]) -> int:
    """Copy `dead` to the dead-letter stream, each source entry at most once; return how many were new.

    The copy and its marker (the source stream and entry id) are written by one script in the
    dead-letter stream's slot, so a worker that copied entries and died before acknowledging them
    finds the markers on redelivery and copies nothing twice. Markers are kept INBOX_RETENTION_DAYS
    (longer than any redelivery) and at most DEAD_LETTER_MAXLEN of them.
    """
    if not dead:
        return 0
    script = client.register_script(_DEAD_LETTERS_ADD_LUA)
    now = timezone.now()
    now_ms = int(now.timestamp() * 1000)
    oldest_ms = now_ms - settings.INBOX_RETENTION_DAYS * 86_400_000
    added = 0
    for start in range(0, len(dead), DEAD_LETTER_ADD_CHUNK):
        args: list[str | int] = [DEAD_LETTER_MAXLEN, now_ms, oldest_ms, DEAD_LETTER_MAXLEN]
        for entry in dead[start : start + DEAD_LETTER_ADD_CHUNK]:
            fields = dead_letter_fields(
                fields=entry.fields,
                reason=entry.reason,
                stream=entry.stream,
                entry_id=entry.entry_id,
                deliveries=entry.deliveries,
                dead_at=now,
            )
            args += [f"{entry.stream} {entry.entry_id}", len(fields)]
            for name, value in fields.items():
                args += [name, value]
        added += int(script(keys=[settings.STREAM_DEAD_LETTER, dead_letter_sources_key()], args=args))
    return added


def stream_entries_settle(
    *, client: redis.Redis, acks: Mapping[str, Sequence[str]], dead: Sequence[DeadEntry] = ()
) -> None:
    """Dead-letter `dead`, then acknowledge every id in `acks`.

    The dead-letter stream and the source streams are different keys, which a Redis Cluster puts in
    different slots, so no MULTI spans them. Copies first, then the XACKs: a worker that dies between
    the two leaves the entries pending, and on redelivery `dead_letters_add` finds them copied
    already. Either way each entry is dead-lettered once and acknowledged.
    """
    dead_letters_add(client=client, dead=dead)
    if not any(acks.values()):
        return
    # One XACK per stream (one key each); a cluster pipeline sends each node its own.
    pipe = client.pipeline(transaction=False)
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
    between XADD and the delete sends a row twice, which the inbox makes harmless. Raises one of
    streams.redis.REDIS_ERRORS (after counting the attempt) when Redis is unreachable.
    """
    relayed = 0
    while relayed < limit:
        failed: tuple[list[int], Exception] | None = None
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
                    pipe.xadd(stream_key_route(stream, fields), fields)
                pipe.execute()
            except REDIS_ERRORS as error:
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


# -- partition leases ------------------------------------------------------------------------------------
# One key per command (the lease key, or the members key), so each is slot-safe on a Redis Cluster.
PARTITION_LEASE_TTL_MS = 10_000
# Compare-and-renew / compare-and-delete: only the holder named in the value moves its lease.
_LEASE_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0"""
_LEASE_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0"""
# A worker's beat in the members set, on Redis's clock (so the hosts' clocks need not agree); members
# silent for a lease TTL are dropped. Returns how many workers share the partitions.
_MEMBERS_BEAT = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZADD', KEYS[1], ms, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], 3 * tonumber(ARGV[2]))
return redis.call('ZCARD', KEYS[1])"""


def partition_leases_renew(*, client: redis.Redis, consumer: str, partitions: Sequence[int]) -> set[int]:
    """Renew `consumer`'s leases of `partitions` (one pipelined round trip); return those still its own."""
    if not partitions:
        return set()
    renew = client.register_script(_LEASE_RENEW)
    calls = [([partition_lease_key(partition)], [consumer, PARTITION_LEASE_TTL_MS]) for partition in partitions]
    replies = script_calls(client, renew, calls)
    return {partition for partition, ok in zip(partitions, replies, strict=True) if ok}


def partition_leases_acquire(*, client: redis.Redis, consumer: str, candidates: Sequence[int], want: int) -> list[int]:
    """Take up to `want` of the `candidates` nobody holds (`SET NX PX`), in the candidates' order.

    A lease already in `consumer`'s name (its previous life under the same name) is renewed and counts.
    """
    if want <= 0 or not candidates:
        return []
    pipe = client.pipeline(transaction=False)
    for partition in candidates:
        pipe.get(partition_lease_key(partition))
    holders = pipe.execute()
    free = [p for p, holder in zip(candidates, holders, strict=True) if holder is None or holder == consumer]
    if not free:
        return []
    free = free[:want]
    pipe = client.pipeline(transaction=False)
    for partition in free:
        pipe.set(partition_lease_key(partition), consumer, nx=True, px=PARTITION_LEASE_TTL_MS)
    taken = [partition for partition, ok in zip(free, pipe.execute(), strict=True) if ok]
    return taken + sorted(
        partition_leases_renew(client=client, consumer=consumer, partitions=sorted(set(free) - set(taken)))
    )


def partition_leases_release(*, client: redis.Redis, consumer: str, partitions: Sequence[int]) -> None:
    """Give up `consumer`'s leases of `partitions` (only those it still holds), so another takes them now."""
    if not partitions:
        return
    release = client.register_script(_LEASE_RELEASE)
    script_calls(client, release, [([partition_lease_key(partition)], [consumer]) for partition in partitions])


def partition_members_beat(*, client: redis.Redis, consumer: str) -> int:
    """Record that `consumer` shares the partitions out; return how many workers do (itself included)."""
    beat = client.register_script(_MEMBERS_BEAT)
    return int(beat(keys=[partition_members_key()], args=[consumer, PARTITION_LEASE_TTL_MS]))


def partition_members_leave(*, client: redis.Redis, consumer: str) -> None:
    client.zrem(partition_members_key(), consumer)


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
    deleted. Each chunk's XADDs are sent first and its XDELs only after they all succeeded (the source
    streams and the dead-letter stream live in different cluster slots, so no MULTI spans them): an entry
    is never deleted without having been replayed, and one replayed twice (a crash between the two
    steps, then a second replay) is counted once by the inbox.
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
        # A partition's entries go back through the partition rule (the setting may have changed since).
        known = [entry for entry in entries if stream_logical(entry["source_stream"]) in sources]
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
        replay = client.pipeline(transaction=False)
        for entry in known:
            if entry["event_id"] in counted:
                outcome.already_counted += 1
            else:
                replay.xadd(stream_key_route(entry["source_stream"], entry["fields"]), entry["fields"])
                outcome.replayed += 1
                outcome.replayed_ids.append(entry["id"])
        replay.execute()
        client.xdel(dead_stream, *(entry["id"] for entry in known))
    if outcome.replayed or outcome.already_counted:
        logger.info(
            "dead letters: %d replayed, %d already counted (removed)%s",
            outcome.replayed,
            outcome.already_counted,
            " [dry run]" if dry_run else "",
        )
    return outcome
