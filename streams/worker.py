"""The generic stream consumer: read a batch, validate, apply in one transaction, acknowledge.

It knows no event's meaning: each stream's events go to the handler its owning app registered
(streams.handlers), all in one transaction with the inbox; the domain's periodic chores run between
batches. `manage.py run_stream_worker` is a thin loop around `StreamWorker.run_once()`; tests call the
same methods. See docs/events.md for the guarantees and docs/architecture.md for the registry.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import threading
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
from streams.handlers import BatchHandler, Chore, batch_handlers, chores
from streams.metrics import worker_batch_observe, worker_partitions_observe
from streams.partitions import (
    key_partition,
    partition_count,
    partition_of,
    partition_stream_key,
    stream_keys,
    stream_logical,
    stream_partitioned,
)
from streams.redis import REDIS_ERRORS, keys_by_slot, redis_client
from streams.selectors import pipeline_streams
from streams.services import (
    PARTITION_LEASE_TTL_MS,
    DeadEntry,
    inbox_prune,
    outbox_relay,
    partition_leases_acquire,
    partition_leases_release,
    partition_leases_renew,
    partition_members_beat,
    partition_members_leave,
    stream_batch_apply,
    stream_entries_settle,
)

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
# A partition is read and committed only while more than this remains of its lease by the worker's own
# clock, counted from before the renewal was sent (so it ends before Redis lets the lease go): a batch
# then commits, at the latest, well inside the lease. A commit even later is harmless (the inbox).
LEASE_USABLE_MARGIN = PARTITION_LEASE_TTL_MS / 2000
# With several keys to read (partitions) a blocking read waits on one key at a time, this long at most,
# so a quiet partition delays another's entries by no more than this.
MULTI_KEY_BLOCK_MS = 100


class StopRequested(Exception):
    """Raised inside a retry wait when the worker was asked to stop; the batch stays pending."""


class LeaseLost(Exception):
    """Raised inside a retry wait when the batch's partition is no longer this worker's: drop the batch."""


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
        chore_threads: bool = False,
        partitions: Sequence[int] | None = None,
    ) -> None:
        self.consumer = consumer or default_consumer_name()
        # Registration order is lock order (streams.handlers); it is fixed for the worker's life.
        self.handlers: list[BatchHandler] = batch_handlers()
        self.streams = list(streams or pipeline_streams())
        # With STREAM_PARTITIONS > 1 a partitioned stream is read only on the partitions this worker holds
        # the lease of (`partitions` pins them; otherwise it takes its fair share); the others are shared.
        self.partitioned = [stream for stream in self.streams if stream_partitioned(stream)]
        self.shared = [stream for stream in self.streams if not stream_partitioned(stream)]
        self.pinned = sorted(set(partitions)) if partitions is not None else None
        if self.pinned is not None and (
            not self.partitioned or not all(0 <= p < partition_count() for p in self.pinned)
        ):
            raise ValueError(f"partitions must be among 0..{partition_count() - 1} of a partitioned stream")
        self.group = settings.STREAM_CONSUMER_GROUP
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.max_deliveries = max_deliveries
        self.claim_idle_ms = claim_idle_ms
        self.stop_requested = stop_requested
        self.stats = WorkerStats()
        # A blocking read must not hit the socket timeout; a hung server must not hang us forever.
        self.client = redis_client(timeout=block_ms / 1000 + 10)
        self.host = socket.gethostname()
        self.pid = os.getpid()
        # Our own pending entries (after a restart under the same name, a failure or a claim) come first.
        # On a partition that role is the takeover's: every entry pending there is claimed when it is taken.
        self._history = True
        # partition -> when (monotonic) the lease ends by our clock; partitions to give up after the batch
        # in hand; partition keys whose pending entries are still to claim -> XAUTOCLAIM cursor.
        self._leases: dict[int, float] = {}
        self._releasing: set[int] = set()
        self._takeover: dict[str, str] = {}
        self._rotation = 0
        self._due: dict[str, float] = {}
        self._chore_keys: dict[str, object] = {}
        self._claim_cursor: dict[str, str] = {}
        # Read ahead: while one batch's transaction runs, a thread reads and validates the next one
        # (Redis and Python work overlap PostgreSQL's). Never touches the database.
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="stream-read-ahead") if read_ahead else None
        self._ahead: Future[ParsedBatch | None] | None = None
        # Chores registered with thread=True run in threads of their own, started by the first
        # housekeeping; without chore_threads they do not run in this worker at all.
        self._chore_threads_wanted = chore_threads
        self._chore_threads: list[threading.Thread] = []
        self._chore_threads_stop = threading.Event()
        self._applying: set[int] = set()

    # -- setup and housekeeping ---------------------------------------------------------------------------

    def groups_ensure(self) -> None:
        """Create the group on every stream key (MKSTREAM, from the beginning) unless it exists."""
        for stream in self._all_keys():
            try:
                self.client.xgroup_create(stream, self.group, id="0", mkstream=True)
            except redis.ResponseError as error:
                if "BUSYGROUP" not in str(error):
                    raise

    def _all_keys(self) -> list[str]:
        """Every key of the worker's streams: all partitions of a partitioned one."""
        return [key for stream in self.streams for key in stream_keys(stream)]

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
                partitions=self._leases,
            ),
        )
        pipe.expire(key, HEARTBEAT_TTL_SECONDS)
        pipe.execute()
        self.leases_renew()

    def heartbeat_clear(self) -> None:
        self.client.delete(heartbeat_key(self.consumer))

    def streams_trim(self) -> int:
        """Trim each stream below the oldest entry any group still needs; return entries removed.

        The bound is the smaller of each group's oldest pending id and the id just after its
        last-delivered id, so neither an unacknowledged nor an undelivered entry is ever dropped.
        """
        removed = 0
        for stream in self._all_keys():
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
        for stream in self._all_keys():
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
        for stream in [key for keys in self._read_groups() for key in keys]:
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
            self.partitions_balance()
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
        if self._chore_threads_wanted and not self._chore_threads:
            self.chore_threads_start()
        for chore in chores():
            if chore.thread:
                continue
            if chore.key is not None:
                key = chore.key()
                if key == self._chore_keys.get(chore.name):
                    continue
                chore.run()
                self._chore_keys[chore.name] = key
            elif self._due_now(f"chore:{chore.name}", chore.interval):
                chore.run()

    def chore_threads_start(self) -> None:
        """Start one thread per chore registered with thread=True (each runs until chore_threads_stop)."""
        for chore in chores():
            if chore.thread:
                thread = threading.Thread(
                    target=self._chore_thread, args=(chore,), name=f"chore-{chore.name}", daemon=True
                )
                thread.start()
                self._chore_threads.append(thread)

    def chore_threads_stop(self, *, timeout: float = 10.0) -> None:
        """Ask the chore threads to stop and wait up to `timeout` seconds for each to finish its run."""
        self._chore_threads_stop.set()
        for thread in self._chore_threads:
            thread.join(timeout)

    def _chore_thread(self, chore: Chore) -> None:
        """Run `chore` every `interval` seconds until asked to stop. A failed run is logged and retried at
        the next interval (the thread is the chore's only runner here, so it must not die of one error);
        the thread's own database connection is closed when it ends."""
        try:
            while not self._chore_threads_stop.is_set():
                try:
                    chore.run()
                except Exception:
                    logger.exception("chore %s failed; running it again in %.0f s", chore.name, chore.interval)
                    with contextlib.suppress(DatabaseError):
                        connection.close()
                self._chore_threads_stop.wait(chore.interval)
        finally:
            with contextlib.suppress(DatabaseError):
                connection.close()

    # -- partitions: leases, fair share, takeover ------------------------------------------------------------

    def _partition_keys(self, partition: int) -> list[str]:
        return [partition_stream_key(stream, partition) for stream in self.partitioned]

    def lease_usable(self, partition: int) -> bool:
        """Whether this worker may read and commit `partition` now: its lease, with the margin to spare."""
        deadline = self._leases.get(partition)
        return deadline is not None and deadline - time.monotonic() > LEASE_USABLE_MARGIN

    def _keys_usable(self, keys) -> bool:
        for key in keys:
            partition = key_partition(key)
            if partition is not None and not self.lease_usable(partition):
                return False
        return True

    @property
    def partitions_held(self) -> list[int]:
        return sorted(self._leases)

    def _lease_drop(self, partition: int) -> None:
        self._leases.pop(partition, None)
        self._releasing.discard(partition)
        for key in self._partition_keys(partition):
            self._takeover.pop(key, None)

    def _leases_add(self, partitions, *, sent: float) -> None:
        for partition in partitions:
            self._leases[partition] = sent + PARTITION_LEASE_TTL_MS / 1000

    def leases_renew(self) -> None:
        """Renew every lease held (compare-and-renew); forget those another worker holds now."""
        if not self._leases:
            return
        sent = time.monotonic()
        held = partition_leases_renew(client=self.client, consumer=self.consumer, partitions=sorted(self._leases))
        self._leases_add(held, sent=sent)
        for partition in sorted(set(self._leases) - held):
            logger.warning("lost the lease of partition %d: another worker holds it now", partition)
            self._lease_drop(partition)

    def partitions_balance(self) -> None:
        """Hold the pinned partitions, or a fair share: ceil(P / the workers sharing them out).

        Free partitions are taken (`SET NX PX`) and their pending entries then claimed, whoever they were
        pending on (its previous holder stopped reading it before its lease ended); partitions beyond the
        share are given up after the batch in hand, so another worker takes them at once.
        """
        if not self.partitioned:
            return
        count = partition_count()
        if self.pinned is not None:
            target = len(self.pinned)
            candidates = [partition for partition in self.pinned if partition not in self._leases]
        else:
            workers = partition_members_beat(client=self.client, consumer=self.consumer)
            target = math.ceil(count / max(workers, 1))
            active = sorted(partition for partition in self._leases if partition not in self._releasing)
            if len(active) > target:
                extras = active[target:]
                logger.info("%d workers share %d partitions: giving up %s", workers, count, extras)
                self._releasing.update(extras)
                return
            # Each worker starts looking at a place of its own, so that joiners rarely race for one lease.
            start = partition_of(self.consumer, count)
            candidates = [p for p in ((start + i) % count for i in range(count)) if p not in self._leases]
        want = target - sum(1 for partition in self._leases if partition not in self._releasing)
        sent = time.monotonic()
        taken = partition_leases_acquire(client=self.client, consumer=self.consumer, candidates=candidates, want=want)
        if taken:
            self._leases_add(taken, sent=sent)
            for partition in taken:
                for key in self._partition_keys(partition):
                    self._takeover[key] = "0-0"
            logger.info("took partitions %s (holding %s)", sorted(taken), self.partitions_held)
        worker_partitions_observe(held=len(self._leases))

    def _releases_finish(self, partitions: set[int]) -> None:
        """Give up the leases marked for release before the last read: nothing of them is in hand now."""
        done = sorted(partition for partition in partitions if partition in self._releasing)
        if not done:
            return
        partition_leases_release(client=self.client, consumer=self.consumer, partitions=done)
        for partition in done:
            self._lease_drop(partition)
        worker_partitions_observe(held=len(self._leases))

    def partitions_leave(self) -> None:
        """On a clean stop: give up every lease and leave the members, so others take over at once."""
        if not self.partitioned:
            return
        partition_leases_release(client=self.client, consumer=self.consumer, partitions=self.partitions_held)
        for partition in self.partitions_held:
            self._lease_drop(partition)
        if self.pinned is None:
            partition_members_leave(client=self.client, consumer=self.consumer)

    def _takeover_claim(self) -> list[Entry]:
        """The next chunk of entries pending on a partition just taken (XAUTOCLAIM from idle 0, any consumer)."""
        for key, cursor in list(self._takeover.items()):
            if not self._keys_usable((key,)):
                continue
            next_cursor, messages, *_deleted = self.client.xautoclaim(
                key, self.group, self.consumer, 0, start_id=cursor, count=self.batch_size
            )
            if next_cursor == "0-0":
                del self._takeover[key]
            else:
                self._takeover[key] = next_cursor
            entries = self._entries_from([(key, messages)])
            if entries:
                self.stats.entries_claimed += len(entries)
                logger.info("%s: took over %d pending entries", key, len(entries))
                return self._with_deliveries(entries)
        return []

    def _read_groups(self) -> list[tuple[str, ...]]:
        """The keys to read, each tuple in one XREADGROUP.

        Without partitions: every stream in one read, as always (on a cluster one read per hash slot, as
        one XREADGROUP may only name keys of one slot). With them: each held partition's key on its own
        (a batch is then one partition, its acknowledgement one key and one slot), then each shared
        stream on its own.
        """
        if not self.partitioned:
            return [tuple(keys) for keys in keys_by_slot(self.streams)]
        groups = [
            (key,)
            for partition in sorted(self._leases)
            if partition not in self._releasing and self.lease_usable(partition)
            for key in self._partition_keys(partition)
            if key not in self._takeover
        ]
        return groups + [(stream,) for stream in self.shared]

    def _entries_reread(self, entries: Sequence[Entry]) -> None:
        """Entries left pending on us (not acknowledged, or dropped): read them again from Redis."""
        for key in {entry.stream for entry in entries}:
            if key_partition(key) is None:
                self._history = True
            elif key_partition(key) in self._leases:
                self._takeover[key] = "0-0"

    def _batch_stale(self, batch: ParsedBatch) -> bool:
        """A batch read ahead whose entries are to be read again anyway (history, takeover)."""
        keys = {entry.stream for entry in batch.entries}
        if self._history and any(key_partition(key) is None for key in keys):
            return True
        return any(key in self._takeover for key in keys)

    # -- the unit of work ---------------------------------------------------------------------------------

    def entries_read(self) -> list[Entry]:
        """Read our own pending entries first (history), then new ones (blocking up to block_ms)."""
        if self._history:
            # One XREADGROUP names keys of one slot only on a cluster (streams.redis.keys_by_slot).
            for keys in keys_by_slot(self.shared):
                reply = self.client.xreadgroup(
                    self.group, self.consumer, dict.fromkeys(keys, "0"), count=self.batch_size
                )
                entries = self._entries_from(reply)
                if entries:
                    return self._with_deliveries(entries)
            self._history = False
        return self._entries_new(self._read_groups(), block=True)

    def _entries_new(self, groups: Sequence[tuple[str, ...]], *, block: bool) -> list[Entry]:
        """New entries (`>`) of the first read group, in rotation, that has any; with `block` the last
        read waits (block_ms with one group, at most MULTI_KEY_BLOCK_MS with several)."""
        if not groups:
            if block:
                time.sleep(MULTI_KEY_BLOCK_MS / 1000)
            return []
        count = len(groups)
        start = self._rotation % count
        for step in range(count):
            keys = groups[(start + step) % count]
            if not self._keys_usable(keys):
                continue  # the lease ran short since the groups were listed
            wait = None
            if block and step == count - 1:
                wait = self.block_ms if count == 1 else min(self.block_ms, MULTI_KEY_BLOCK_MS)
            reply = self.client.xreadgroup(
                self.group, self.consumer, dict.fromkeys(keys, ">"), count=self.batch_size, block=wait
            )
            entries = self._entries_from(reply)
            if entries:
                self._rotation = start + step + 1
                return entries
        self._rotation = start + 1
        return []

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
        for partition in self._leases:
            for key in self._partition_keys(partition):
                self._takeover[key] = "0-0"
        return self._run_once()

    def _run_once(self) -> int:
        self.housekeeping()
        if self._takeover:
            claimed = self._takeover_claim()
            if claimed:
                self.entries_handle(claimed)
                return len(claimed)
        if self._due_now("claim", min(max(self.claim_idle_ms / 4000, 0.5), 15.0)):
            claimed = self.entries_claim()
            if claimed:
                for part in self._by_read_group(claimed):
                    self.entries_handle(part)
                return len(claimed)
        batch = self._ahead_take()
        # Marked before any read from here on: once the batch in hand is settled nothing of them is left.
        releasable = set(self._releasing)
        if batch is None:
            entries = self.entries_read()
            if not entries:
                self._releases_finish(releasable)
                return 0
            batch = self.entries_parse(entries)
        if self._reader is not None and not self._history and not self.stop_requested():
            self._ahead = self._reader.submit(self._read_ahead, self._read_groups())
        self.batch_apply(batch)
        self._releases_finish(releasable)
        return len(batch.entries)

    def _by_read_group(self, entries: list[Entry]) -> list[list[Entry]]:
        """Claimed entries in batches as they would have been read: all together, or one key each."""
        if not self.partitioned:
            return [entries]
        by_key: dict[str, list[Entry]] = {}
        for entry in entries:
            by_key.setdefault(entry.stream, []).append(entry)
        return list(by_key.values())

    def _read_ahead(self, groups: Sequence[tuple[str, ...]]) -> ParsedBatch | None:
        """The read-ahead thread: new entries only, without blocking (an idle stream is read normally)."""
        entries = self._entries_new(groups, block=False)
        return self.entries_parse(entries) if entries else None

    def _ahead_take(self) -> ParsedBatch | None:
        """The batch read ahead, if any. Dropped when the worker went back to its pending history:
        its entries are pending for this consumer, so the history read returns them anyway.
        """
        ahead, self._ahead = self._ahead, None
        if ahead is None:
            return None
        batch = ahead.result()
        return None if batch is None or self._batch_stale(batch) else batch

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
        logical: dict[str, str] = {}  # key -> its stream (a partition's is the partitioned stream)
        for entry in entries:
            if entry.fields is None:
                continue  # deleted from the stream while pending: nothing to do but acknowledge
            if entry.deliveries > max_deliveries:
                reason = f"delivered {entry.deliveries} times without success (max {max_deliveries})"
                dead.append(DeadEntry(entry.stream, entry.entry_id, entry.fields, reason, entry.deliveries))
                continue
            stream = logical.get(entry.stream)
            if stream is None:
                stream = logical[entry.stream] = stream_logical(entry.stream)
            try:
                event = event_parse(stream, entry.fields, now=now)
            except InvalidEvent as invalid:
                dead.append(DeadEntry(entry.stream, entry.entry_id, entry.fields, invalid.reason, entry.deliveries))
                continue
            stream_items = items.get(stream)
            if stream_items is None:
                if stream not in handled:
                    reason = f"no handler is registered for stream {stream!r}"
                    dead.append(DeadEntry(entry.stream, entry.entry_id, entry.fields, reason, entry.deliveries))
                    continue
                stream_items = items[stream] = []
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
        partitions = {key_partition(entry.stream) for entry in entries} - {None}
        self._applying = partitions
        if not all(self.lease_usable(partition) for partition in partitions):
            # Read before the lease ran short: leave it pending; its next holder (or we) claims it.
            logger.warning("dropping %d entries of partitions %s: lease lost or running out", len(entries), partitions)
            self._entries_reread(entries)
            return
        try:
            applied = self._apply_isolating(batch.items, batch.prepared)
        except LeaseLost:
            logger.warning("dropping %d entries of partitions %s: lease lost while retrying", len(entries), partitions)
            self._entries_reread(entries)
            return
        dead = list(batch.dead)
        dead.extend(applied.dead)

        acks: dict[str, list[str]] = {}
        for entry in entries:
            acks.setdefault(entry.stream, []).append(entry.entry_id)
        try:
            stream_entries_settle(client=self.client, acks=acks, dead=dead)
        except REDIS_ERRORS:
            # Committed but not acknowledged: the entries come back and the inbox skips them.
            self._entries_reread(entries)
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
            partition=next(iter(partitions)) if len(partitions) == 1 else None,
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
                        self.heartbeat()  # renews the leases too: an outage does not cost the partitions
                except REDIS_ERRORS:
                    pass
                if not all(self.lease_usable(partition) for partition in self._applying):
                    raise LeaseLost from error

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.stop_requested():
                raise StopRequested
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
