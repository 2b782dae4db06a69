"""The generic stream consumer: read a batch, validate, apply in one transaction, acknowledge.

It knows no event's meaning: each stream's events go to the handler its owning app registered
(streams.handlers), all in one transaction with the inbox; the domain's periodic chores run between
batches. `manage.py run_stream_worker` is a thin loop around `StreamWorker.run_once()`; tests call the
same methods. See docs/events.md for the guarantees and docs/architecture.md for the registry.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import redis
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection, reset_queries

from streams.events import InvalidEvent, event_parse, heartbeat_fields, heartbeat_key
from streams.handlers import BatchHandler, batch_handlers, chores
from streams.metrics import worker_batch_observe
from streams.redis import REDIS_ERRORS, keys_by_slot, redis_client
from streams.selectors import pipeline_streams
from streams.services import DeadEntry, inbox_prune, outbox_relay, stream_batch_apply, stream_entries_settle

logger = logging.getLogger(__name__)

HEARTBEAT_TTL_SECONDS = 30
HEARTBEAT_INTERVAL = 1.0
TRIM_INTERVAL = 1.0
OUTBOX_INTERVAL = 1.0
CONSUMER_PRUNE_INTERVAL = 30.0
INBOX_PRUNE_INTERVAL = 600.0
MAX_BACKOFF = 5.0
# While the main thread waits on PostgreSQL, the read-ahead thread parses the next batch. With Python's
# default 5 ms switch interval every database reply then waited up to 5 ms for the GIL (measured: -10 %).
GIL_SWITCH_INTERVAL = 0.0005
# Entries per read under a backlog (an idle stream yields smaller batches at once). Per-entity work (the
# counters and windows of popular entities, their locks) and the commit shrink per event as batches
# grow: bench_pipeline measured 29,700 events/s at 2,000, 32,800 at 5,000 and 37,000-39,000 at 10,000,
# with worker memory bounded by two batches (the one applied and the one read ahead).
DEFAULT_BATCH_SIZE = 10_000

DB_TRANSIENT = (OperationalError, InterfaceError)


class StopRequested(Exception):
    """Raised inside a retry wait when the worker was asked to stop; the batch stays pending."""


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class WorkerStats:
    """The worker's running totals, for its log lines, its heartbeat and tests.

    Prometheus sees the same numbers through streams.metrics.worker_batch_observe.
    """

    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    events_processed: int = 0
    duplicates_skipped: int = 0
    dead_lettered: int = 0
    entries_acked: int = 0
    entries_claimed: int = 0
    outbox_relayed: int = 0
    batches: int = 0
    batch_seconds_total: float = 0.0
    last_batch_size: int = 0
    last_batch_seconds: float = 0.0
    last_batch_at: datetime | None = None
    transient_errors: int = 0

    def batch_record(self, *, size: int, seconds: float) -> None:
        self.batches += 1
        self.batch_seconds_total += seconds
        self.last_batch_size = size
        self.last_batch_seconds = seconds
        self.last_batch_at = datetime.now(UTC)


class Entry(NamedTuple):
    """A stream entry as read: `fields` is None when it was deleted while pending.

    A NamedTuple rather than a frozen dataclass: one is built per entry read, and a tuple is
    several times cheaper to build.
    """

    stream: str
    entry_id: str
    fields: dict[str, str] | None
    deliveries: int = 1


# Per stream, the validated events of a batch with the entry each came from.
StreamItems = dict[str, list[tuple[Any, Entry]]]


@dataclass
class ParsedBatch:
    """Entries read together, validated: each stream's events to apply and the entries to dead-letter.

    `prepared`: what each handler's `prepare` built from its events (in the read-ahead thread).
    """

    entries: Sequence[Entry]
    items: StreamItems = field(default_factory=dict)
    dead: list[DeadEntry] = field(default_factory=list)
    prepared: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class Applied:
    """What applying (part of) a batch did: events applied per stream, duplicates, entries to dead-letter."""

    processed: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    dead: list[DeadEntry] = field(default_factory=list)

    def add(self, other: Applied) -> None:
        for stream, count in other.processed.items():
            self.processed[stream] = self.processed.get(stream, 0) + count
        self.duplicates += other.duplicates
        self.dead.extend(other.dead)


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _id_after(entry_id: str) -> str:
    ms, seq = _id_key(entry_id)
    return f"{ms}-{seq + 1}"


class StreamWorker:
    """One consumer of the group. Not thread-safe; one per process."""

    def __init__(
        self,
        *,
        consumer: str | None = None,
        streams: Sequence[str] | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        block_ms: int = 1000,
        max_deliveries: int = 5,
        claim_idle_ms: int = 60_000,
        stop_requested: Callable[[], bool] = lambda: False,
        read_ahead: bool = False,
    ) -> None:
        self.consumer = consumer or default_consumer_name()
        # Registration order is lock order (streams.handlers); it is fixed for the worker's life.
        self.handlers: list[BatchHandler] = batch_handlers()
        self.streams = list(streams or pipeline_streams())
        self.group = settings.STREAM_CONSUMER_GROUP
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.max_deliveries = max_deliveries
        self.claim_idle_ms = claim_idle_ms
        self.stop_requested = stop_requested
        self.stats = WorkerStats()
        # A blocking read must not hit the socket timeout; a hung server must not hang us forever.
        self.client = redis_client(timeout=block_ms / 1000 + 10)
        # XREADGROUP names every stream; on a cluster one call may only name streams of one slot.
        self._read_groups = keys_by_slot(self.streams)
        self.host = socket.gethostname()
        self.pid = os.getpid()
        # Our own pending entries (after a restart under the same name, a failure or a claim) come first.
        self._history = True
        self._due: dict[str, float] = {}
        self._chore_keys: dict[str, object] = {}
        self._claim_cursor: dict[str, str] = {}
        # Read ahead: while one batch's transaction runs, a thread reads and validates the next one
        # (Redis and Python work overlap PostgreSQL's). Never touches the database.
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="stream-read-ahead") if read_ahead else None
        self._ahead: Future[ParsedBatch | None] | None = None

    # -- setup and housekeeping ---------------------------------------------------------------------------

    def groups_ensure(self) -> None:
        """Create the group on every stream (MKSTREAM, from the beginning) unless it exists."""
        for stream in self.streams:
            try:
                self.client.xgroup_create(stream, self.group, id="0", mkstream=True)
            except redis.ResponseError as error:
                if "BUSYGROUP" not in str(error):
                    raise

    def _due_now(self, what: str, interval: float) -> bool:
        now = time.monotonic()
        if now < self._due.get(what, 0.0):
            return False
        self._due[what] = now + interval
        return True

    def heartbeat(self) -> None:
        """Refresh this worker's heartbeat hash (expires on its own when the worker stops)."""
        key = heartbeat_key(self.consumer)
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(
            key,
            mapping=heartbeat_fields(
                consumer=self.consumer,
                started_at=self.stats.started_at,
                events_processed=self.stats.events_processed,
                last_batch_at=self.stats.last_batch_at,
                pid=self.pid,
                host=self.host,
            ),
        )
        pipe.expire(key, HEARTBEAT_TTL_SECONDS)
        pipe.execute()

    def heartbeat_clear(self) -> None:
        self.client.delete(heartbeat_key(self.consumer))

    def streams_trim(self) -> int:
        """Trim each stream below the oldest entry any group still needs; return entries removed.

        The bound is the smaller of each group's oldest pending id and the id just after its
        last-delivered id, so neither an unacknowledged nor an undelivered entry is ever dropped.
        """
        removed = 0
        for stream in self.streams:
            try:
                groups = self.client.xinfo_groups(stream)
            except redis.ResponseError:
                continue  # no such stream yet
            if not groups:
                continue  # nobody consumes it: keep everything
            bounds = []
            for group in groups:
                bounds.append(_id_after(group["last-delivered-id"]))
                oldest_pending = self.client.xpending(stream, group["name"])["min"] if group["pending"] else None
                if oldest_pending:  # may have been acknowledged since XINFO
                    bounds.append(oldest_pending)
            removed += self.client.xtrim(stream, minid=min(bounds, key=_id_key), approximate=True)
        return removed

    def consumers_prune(self) -> int:
        """Remove other consumers that own no pending entry, are idle and have no live heartbeat."""
        removed = 0
        for stream in self.streams:
            try:
                consumers = self.client.xinfo_consumers(stream, self.group)
            except redis.ResponseError:
                continue
            for consumer in consumers:
                name = consumer["name"]
                if name == self.consumer or consumer["pending"] or consumer["idle"] < self.claim_idle_ms:
                    continue
                if self.client.exists(heartbeat_key(name)):
                    continue
                self.client.xgroup_delconsumer(stream, self.group, name)
                removed += 1
        return removed

    def entries_claim(self) -> list[Entry]:
        """Take over up to batch_size entries idle on other consumers longer than claim_idle_ms.

        Each call continues where the last one stopped (XAUTOCLAIM's cursor), so a long pending list
        is walked over successive calls rather than rescanned from the start.
        """
        claimed: list[Entry] = []
        for stream in self.streams:
            cursor = self._claim_cursor.get(stream, "0-0")
            next_cursor, messages, *_deleted = self.client.xautoclaim(
                stream, self.group, self.consumer, self.claim_idle_ms, start_id=cursor, count=self.batch_size
            )
            self._claim_cursor[stream] = next_cursor
            claimed.extend(self._entries_from([(stream, messages)]))
        if not claimed:
            return []
        self.stats.entries_claimed += len(claimed)
        logger.info("claimed %d entries idle on other consumers", len(claimed))
        return self._with_deliveries(claimed)

    def housekeeping(self) -> None:
        """Periodic chores, each at its own interval: heartbeat, outbox relay, trimming, pruning, then the
        chores the apps registered (streams.handlers.chore_register)."""
        if self._due_now("heartbeat", HEARTBEAT_INTERVAL):
            self.heartbeat()
        if self._due_now("outbox", OUTBOX_INTERVAL):
            self.stats.outbox_relayed += outbox_relay()
        if self._due_now("trim", TRIM_INTERVAL):
            self.streams_trim()
        if self._due_now("consumers", CONSUMER_PRUNE_INTERVAL):
            self.consumers_prune()
        if self._due_now("inbox", INBOX_PRUNE_INTERVAL):
            pruned = inbox_prune()
            if pruned:
                logger.info("inbox: pruned %d old event ids", pruned)
        for chore in chores():
            if chore.key is not None:
                key = chore.key()
                if key == self._chore_keys.get(chore.name):
                    continue
                chore.run()
                self._chore_keys[chore.name] = key
            elif self._due_now(f"chore:{chore.name}", chore.interval):
                chore.run()

    # -- the unit of work ---------------------------------------------------------------------------------

    def entries_read(self) -> list[Entry]:
        """Read our own pending entries first (history), then new ones (blocking up to block_ms)."""
        if self._history:
            entries = self._entries_from(self._group_read("0"))
            if entries:
                return self._with_deliveries(entries)
            self._history = False
        return self._entries_from(self._group_read(">", block=self.block_ms))

    def _group_read(self, ids: str, *, block: int | None = None) -> list:
        """XREADGROUP of every stream from `ids`: one call on one Redis, one per slot on a cluster.

        Across slots only one call may block: the first group's (the QuerySignals), read last and only
        when the others found nothing. So on a cluster an idle worker sees a new entry of another slot's
        stream within `block` ms, and under a backlog nothing waits.
        """
        groups = self._read_groups[1:] + self._read_groups[:1]
        reply: list = []
        for index, streams in enumerate(groups):
            reply += (
                self.client.xreadgroup(
                    self.group,
                    self.consumer,
                    dict.fromkeys(streams, ids),
                    count=self.batch_size,
                    block=block if index == len(groups) - 1 and not reply else None,
                )
                or []
            )
        return reply

    @staticmethod
    def _entries_from(reply) -> list[Entry]:
        entries = []
        for stream, messages in reply or ():
            for entry_id, fields in messages:
                entries.append(Entry(stream, entry_id, fields or None))
        return entries

    def _with_deliveries(self, entries: list[Entry]) -> list[Entry]:
        """Attach each redelivered entry's delivery count (from XPENDING)."""
        counts: dict[str, int] = {}
        by_stream: dict[str, list[Entry]] = {}
        for entry in entries:
            by_stream.setdefault(entry.stream, []).append(entry)
        for stream, items in by_stream.items():
            ids = sorted((entry.entry_id for entry in items), key=_id_key)
            for pending in self.client.xpending_range(
                stream, self.group, min=ids[0], max=ids[-1], count=len(ids) + 100, consumername=self.consumer
            ):
                counts[pending["message_id"]] = pending["times_delivered"]
        return [Entry(e.stream, e.entry_id, e.fields, counts.get(e.entry_id, 1)) for e in entries]

    def run_once(self) -> int:
        """One iteration: housekeeping when due, then one batch. Returns the entries handled.

        A Redis that restarted empty has no group (NOGROUP): recreate it and go on.
        """
        try:
            return self._run_once()
        except redis.ResponseError as error:
            if "NOGROUP" not in str(error):
                raise
        logger.warning("consumer group missing (Redis restarted empty?): recreating it")
        self.groups_ensure()
        self._history = True
        self._claim_cursor.clear()
        return self._run_once()

    def _run_once(self) -> int:
        self.housekeeping()
        if self._due_now("claim", min(max(self.claim_idle_ms / 4000, 0.5), 15.0)):
            claimed = self.entries_claim()
            if claimed:
                self.entries_handle(claimed)
                return len(claimed)
        batch = self._ahead_take()
        if batch is None:
            entries = self.entries_read()
            if not entries:
                return 0
            batch = self.entries_parse(entries)
        if self._reader is not None and not self._history and not self.stop_requested():
            self._ahead = self._reader.submit(self._read_ahead)
        self.batch_apply(batch)
        return len(batch.entries)

    def _read_ahead(self) -> ParsedBatch | None:
        """The read-ahead thread: new entries only, without blocking (an idle stream is read normally)."""
        entries = self._entries_from(self._group_read(">"))
        return self.entries_parse(entries) if entries else None

    def _ahead_take(self) -> ParsedBatch | None:
        """The batch read ahead, if any. Dropped when the worker went back to its pending history:
        its entries are pending for this consumer, so the history read returns them anyway.
        """
        ahead, self._ahead = self._ahead, None
        if ahead is None:
            return None
        batch = ahead.result()
        return None if self._history else batch

    def read_ahead_finish(self) -> int:
        """Apply and acknowledge a batch read ahead, so that a stopping worker leaves nothing pending."""
        batch = self._ahead_take()
        if batch is None:
            return 0
        self.batch_apply(batch)
        return len(batch.entries)

    def entries_handle(self, entries: Sequence[Entry]) -> None:
        """Validate, apply in one transaction, then dead-letter and acknowledge in one MULTI."""
        self.batch_apply(self.entries_parse(entries))

    def entries_parse(self, entries: Sequence[Entry]) -> ParsedBatch:
        """Validate entries; those that can never be processed become dead entries."""
        started = time.perf_counter()
        batch = ParsedBatch(entries)
        items, dead = batch.items, batch.dead
        now = datetime.now(UTC)
        max_deliveries = self.max_deliveries
        handled = {handler.stream for handler in self.handlers}
        for entry in entries:
            if entry.fields is None:
                continue  # deleted from the stream while pending: nothing to do but acknowledge
            if entry.deliveries > max_deliveries:
                reason = f"delivered {entry.deliveries} times without success (max {max_deliveries})"
                dead.append(DeadEntry(entry.stream, entry.entry_id, entry.fields, reason, entry.deliveries))
                continue
            try:
                event = event_parse(entry.stream, entry.fields, now=now)
            except InvalidEvent as invalid:
                dead.append(DeadEntry(entry.stream, entry.entry_id, entry.fields, invalid.reason, entry.deliveries))
                continue
            stream_items = items.get(entry.stream)
            if stream_items is None:
                if entry.stream not in handled:
                    reason = f"no handler is registered for stream {entry.stream!r}"
                    dead.append(DeadEntry(entry.stream, entry.entry_id, entry.fields, reason, entry.deliveries))
                    continue
                stream_items = items[entry.stream] = []
            stream_items.append((event, entry))
        for handler in self.handlers:
            stream_items = items.get(handler.stream)
            if handler.prepare is not None and stream_items:
                batch.prepared[handler.stream] = handler.prepare([event for event, _entry in stream_items])
        batch.seconds = time.perf_counter() - started
        return batch

    def batch_apply(self, batch: ParsedBatch) -> None:
        """Apply a validated batch in one transaction, then dead-letter and acknowledge in one MULTI."""
        started = time.perf_counter() - batch.seconds
        entries = batch.entries
        dead = list(batch.dead)
        applied = self._apply_isolating(batch.items, batch.prepared)
        dead.extend(applied.dead)

        acks: dict[str, list[str]] = {}
        for entry in entries:
            acks.setdefault(entry.stream, []).append(entry.entry_id)
        try:
            stream_entries_settle(client=self.client, acks=acks, dead=dead)
        except REDIS_ERRORS:
            # Committed but not acknowledged: the entries come back and the inbox skips them.
            self._history = True
            raise

        # With DEBUG on (`make run`) Django keeps the last 9000 statements, each carrying a batch's arrays.
        reset_queries()
        seconds = time.perf_counter() - started
        stats = self.stats
        processed = sum(applied.processed.values())
        stats.events_processed += processed
        stats.duplicates_skipped += applied.duplicates
        stats.dead_lettered += len(dead)
        stats.entries_acked += len(entries)
        stats.batch_record(size=len(entries), seconds=seconds)
        worker_batch_observe(
            processed=applied.processed,
            duplicates=applied.duplicates,
            dead_lettered=len(dead),
            size=len(entries),
            duration=seconds,
        )
        logger.info(
            "batch: %d entries, %d counted, %d duplicates, %d dead-lettered in %.1f ms",
            len(entries),
            processed,
            applied.duplicates,
            len(dead),
            seconds * 1000,
        )

    def _apply_isolating(self, items: StreamItems, prepared: dict[str, Any] | None = None) -> Applied:
        """Apply; if the database rejects the batch (not a connectivity error), split it until each
        entry it rejects stands alone, and dead-letter those with the database's message.
        """
        count = sum(len(stream_items) for stream_items in items.values())
        try:
            results = self._apply_with_retry(
                {stream: [event for event, _entry in stream_items] for stream, stream_items in items.items()},
                prepared or {},
            )
        except DB_TRANSIENT:
            raise
        except DatabaseError as error:
            if count == 1:
                _event, entry = next(stream_items[0] for stream_items in items.values() if stream_items)
                reason = f"rejected by the database: {str(error).strip().splitlines()[0][:300]}"
                logger.error("entry %s %s %s", entry.stream, entry.entry_id, reason)
                return Applied(dead=[DeadEntry(entry.stream, entry.entry_id, entry.fields, reason, entry.deliveries)])
            logger.warning("%d events rejected by the database (%s); splitting", count, error)
            total = Applied()
            for half in (0, 1):
                part = {
                    stream: stream_items[: len(stream_items) // 2]
                    if half == 0
                    else stream_items[len(stream_items) // 2 :]
                    for stream, stream_items in items.items()
                }
                if any(part.values()):
                    total.add(self._apply_isolating(part))
            return total
        applied = Applied()
        for stream, result in results.items():
            stream_items = items[stream]
            applied.processed[stream] = result.applied
            applied.duplicates += result.duplicates
            applied.dead.extend(
                DeadEntry(entry.stream, entry.entry_id, entry.fields, reason, entry.deliveries)
                for index, reason in result.rejected.items()
                for _event, entry in [stream_items[index]]
            )
        return applied

    def _apply_with_retry(self, events: dict[str, list[Any]], prepared: dict[str, Any]):
        """Apply in one transaction; while PostgreSQL is unreachable keep the batch in hand and retry.

        Retrying in-process (rather than re-reading from Redis) keeps delivery counts honest: an outage
        must not push good entries past max_deliveries.
        """
        delay = 0.1
        while True:
            try:
                return stream_batch_apply(handlers=self.handlers, events=events, prepared=prepared)
            except DB_TRANSIENT as error:
                self.stats.transient_errors += 1
                logger.warning("PostgreSQL unavailable (%s); retrying the batch in %.1f s", error, delay)
                with contextlib.suppress(DatabaseError):
                    connection.close()
                self._sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
                try:
                    if self._due_now("heartbeat", HEARTBEAT_INTERVAL):
                        self.heartbeat()
                except REDIS_ERRORS:
                    pass

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.stop_requested():
                raise StopRequested
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
