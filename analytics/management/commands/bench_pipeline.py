"""Benchmark the event pipeline end to end, against the naive per-event baseline, in a throwaway database.

Creates a database on the same PostgreSQL server and uses stream keys of its own, publishes a
Zipf-skewed workload, runs the real worker (`run_stream_worker`, a subprocess) to drain it, checks that
every total is exact, and prints events/s, the baseline's events/s and the ratio, and the worker's memory.
The workload is answers, each with its answer record (as on the answer path); then it measures what the
answer reconciliation costs: the worker's events/s with its chore on (settling the first workload's
answers) and off, and the chore's own rate.
With `--workers N --partitions P` the workers first share the partitions out; the run also prints events
per CPU-second of the workers and the PostgreSQL and Redis process trees, the row-lock wait share and the
WAL, inbox, Redis and bucket bytes per event (docs/scaling.md).
"""

from __future__ import annotations

import os
import random
import secrets
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import psutil
import redis
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, connection, transaction
from django.db.models import F, Sum

from analytics.demand import demand_windows_roll
from analytics.models import DemandBucket
from entities.models import (
    AnswerReconcileMark,
    AnswerRecord,
    AnswerRecordEntity,
    AnswerSignalsPending,
    Entity,
    EntityDemand,
)
from entities.questions import answer_signal_event_id
from entities.selectors import answers_past_watermark
from entities.services import answer_signals_reconcile, demo_entities_seed
from kernel.databases import throwaway_database
from streams.events import QuerySignal, event_parse
from streams.models import ProcessedEvent
from streams.partitions import stream_keys
from streams.publisher import query_signals_publish, redis_circuit
from streams.redis import redis_client
from streams.selectors import partition_leases, workers_live
from streams.worker import DEFAULT_BATCH_SIZE

MANAGE = Path(settings.BASE_DIR) / "manage.py"
ZIPF_EXPONENT = 1.1
DUPLICATE_SHARE = 0.01
# When the worker's memory is sampled, in % of the events read. The first batches warm the worker up
# (two batches are in memory at once: the one applied and the one read ahead); after that it stays flat.
RSS_SAMPLES = (10, 25, 50, 75, 100)
# The worker's reconciliation chore: off (no answer is ever due) and on (every 0.5 s, answers due after 1 s).
RECONCILE_OFF = {"ANSWER_RECONCILE_AFTER_SECONDS": str(10**9)}
RECONCILE_ON = {"ANSWER_RECONCILE_AFTER_SECONDS": "1"}
# A group that never reads, on every key while the workers start: the workers' trimming keeps every entry.
HOLD_GROUP = "bench_hold"


class BenchAnswer(NamedTuple):
    """One answer of the workload: its id and its signals (one per distinct entity)."""

    id: uuid.UUID
    signals: list[QuerySignal]


def _vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class Command(BaseCommand):
    help = "Measure publishing and processing events/s (and the naive baseline) in a throwaway database."

    def add_arguments(self, parser):
        parser.add_argument("--events", type=int, default=200_000)
        parser.add_argument("--entities", type=int, default=6408)
        parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="The worker's --batch-size.")
        parser.add_argument("--workers", type=int, default=1, help="Worker processes draining in parallel.")
        parser.add_argument("--baseline-events", type=int, default=3000, help="Sample size for the naive baseline.")
        parser.add_argument("--publish-chunk", type=int, default=10, help="Signals per publish call (one answer).")
        parser.add_argument("--seed", type=int, default=42)
        parser.add_argument("--keep-database", action="store_true", help="Do not drop the throwaway database.")
        # Internal: set by the outer run for the inner run, which works inside the throwaway database.
        parser.add_argument("--inside", action="store_true", help="(internal)")

        parser.add_argument(
            "--partitions", type=int, default=1, help="STREAM_PARTITIONS of the run (1: the one stream key)."
        )
        parser.add_argument(
            "--cluster",
            action="store_true",
            help="Against a Redis/Valkey Cluster: needs REDIS_CLUSTER=true and REDIS_URL naming a node (e.g. the "
            "embedded cluster of `REDIS_CLUSTER=true make run`); Redis CPU is summed over every primary.",
        )

    def handle(self, *args, **options):
        if options["inside"]:
            return self._bench(options)
        if options["cluster"] != settings.REDIS_CLUSTER:
            raise CommandError(
                "--cluster needs REDIS_CLUSTER=true (and REDIS_URL naming a node of the cluster); "
                "REDIS_CLUSTER=true needs --cluster, so that the figures say what they measured"
            )
        prefix = f"mandate_wizard_bench_{uuid.uuid4().hex[:8]}"
        # Production settings for the measured processes (DEBUG off needs a secret key: a throwaway one).
        secret = settings.SECRET_KEY if not settings.DEBUG else secrets.token_urlsafe(48)
        env = {**os.environ, "STREAM_KEY_PREFIX": prefix, "DEBUG": "0", "SECRET_KEY": secret}
        env["STREAM_PARTITIONS"] = str(options["partitions"])
        self.stdout.write(f"stream keys {prefix}:*")
        try:
            with throwaway_database(
                prefix="mandate_wizard_bench", env=env, keep=options["keep_database"], say=self.stdout.write
            ) as url:
                argv = [sys.executable, str(MANAGE), "bench_pipeline", "--inside"]
                for option in (
                    "events",
                    "entities",
                    "batch_size",
                    "workers",
                    "partitions",
                    "baseline_events",
                    "publish_chunk",
                    "seed",
                ):
                    argv += [f"--{option.replace('_', '-')}", str(options[option])]
                if subprocess.run(argv, env={**env, "DATABASE_URL": url}).returncode:
                    raise CommandError("benchmark failed (see above)")
        finally:
            client = redis_client()
            keys = list(client.scan_iter(match=f"{prefix}:*"))
            if keys:
                client.delete(*keys)

    # -- inside the throwaway database ----------------------------------------------------------------------

    def _bench(self, options) -> None:
        rng = random.Random(options["seed"])
        count, entity_count = options["events"], options["entities"]
        client = redis_client()
        out = self.stdout.write

        started = time.perf_counter()
        # The demo data set, embedded as in production: counter updates must not pay for the vectors.
        demo_entities_seed(count=entity_count, seed=options["seed"])
        entities = list(Entity.objects.values_list("id", "entity_type"))
        rng.shuffle(entities)
        # As in production, where the first trending read creates them: every batch also moves the windows.
        demand_windows_roll()
        self._settle()
        out(f"seeded {len(entities)} entities in {time.perf_counter() - started:.1f} s")

        cum_weights, total = [], 0.0
        for rank in range(1, len(entities) + 1):
            total += 1 / rank**ZIPF_EXPONENT
            cum_weights.append(total)
        chunk = options["publish_chunk"]
        answers = self._answers(rng=rng, entities=entities, cum_weights=cum_weights, count=count, chunk=chunk)
        expected = Counter(signal.entity_id for answer in answers for signal in answer.signals)
        # Each answer is on the record (sent long ago, not settled): the reconciliation's work once counted.
        self._records_create(answers)
        # Some answers published twice (an answer's retry, an outbox relay after a partial publish).
        workload = answers + rng.sample(answers, int(len(answers) * DUPLICATE_SHARE))
        rng.shuffle(workload)
        top = expected.most_common(1)[0][1]
        duplicates = sum(len(answer.signals) for answer in workload) - count
        out(
            f"workload: {len(answers)} answers, {count} events (+{duplicates} duplicate "
            f"publishes) over {len(entities)} entities, Zipf s={ZIPF_EXPONENT}, timestamps over 30 days; "
            f"busiest entity {top} events, {len(expected)} entities queried"
        )

        entries, publish_seconds = self._publish(workload)
        out(
            f"publish: {entries} events in {publish_seconds:.2f} s = {entries / publish_seconds:,.0f} "
            f"events/s (one answer per call, up to {chunk} signals, one pipelined round trip each)"
        )

        batch_size, workers = options["batch_size"], options["workers"]
        self._capacity_before(client=client)
        process_seconds, rss = self._drain(
            client=client, batch_size=batch_size, workers=workers, total=entries, env=RECONCILE_OFF
        )
        out(
            f"process: {entries} entries in {process_seconds:.2f} s = {entries / process_seconds:,.0f} "
            f"events/s ({workers} worker{'s' if workers > 1 else ''}, --batch-size {batch_size}, reconciliation off)"
        )
        self._cost_report(entries=entries, partitions=options["partitions"])
        out(
            "worker memory (largest worker): RSS "
            + ", ".join(f"{rss[share] / 1024:.0f} MiB at {share}%" for share in RSS_SAMPLES)
            + f" of the events read (growth from {RSS_SAMPLES[1]}% to the end"
            f" {(rss[100] - rss[RSS_SAMPLES[1]]) / 1024:+.1f} MiB), peak {rss['peak'] / 1024:.0f} MiB"
        )
        self._totals_check(expected=expected, count=count)
        out("totals: exact (query_count per entity, demand_score, hourly buckets, inbox)")

        rate = entries / process_seconds
        # Before the baseline, which moves the counters its own way.
        self._reconciliation(
            rng=rng,
            entities=entities,
            cum_weights=cum_weights,
            options=options,
            expected=expected,
            entries=entries,
            rate_off=rate,
        )

        baseline_rate = self._baseline(
            rng=rng, entities=entities, cum_weights=cum_weights, count=options["baseline_events"]
        )
        out(
            f"baseline (seed's way: COUNT 10, one UPDATE and one XACK per event): "
            f"{options['baseline_events']} events at {baseline_rate:,.0f} events/s"
        )
        out(f"ratio: {rate / baseline_rate:.1f}x the baseline")

    # -- answers and their reconciliation -------------------------------------------------------------------

    @staticmethod
    def _answers(*, rng: random.Random, entities, cum_weights, count: int, chunk: int) -> list[BenchAnswer]:
        """`count` Zipf picks as answers: up to `chunk` distinct entities each, one time each (over 30 days),
        event ids derived from the answer (entities.questions.answer_signal_event_id), as on the answer path."""
        now = datetime.now(UTC)
        span = timedelta(days=30).total_seconds()
        answers: list[BenchAnswer] = []
        current: dict[uuid.UUID, QuerySignal] = {}
        answer_id, asked_at = None, None
        for entity_id, entity_type in rng.choices(entities, cum_weights=cum_weights, k=count):
            if answer_id is None or len(current) == chunk or entity_id in current:
                if current:
                    answers.append(BenchAnswer(answer_id, list(current.values())))
                answer_id = uuid.UUID(int=rng.getrandbits(128), version=4)
                asked_at = now - timedelta(seconds=rng.random() * span)
                current = {}
            current[entity_id] = QuerySignal(
                event_id=answer_signal_event_id(answer_id=answer_id, entity_id=entity_id),
                entity_id=entity_id,
                entity_type=entity_type,
                query="who greenlit this",
                user_id="bench",
                timestamp=asked_at,
                rank=len(current) + 1,
            )
        answers.append(BenchAnswer(answer_id, list(current.values())))
        return answers

    @staticmethod
    def _records_create(answers: list[BenchAnswer]) -> None:
        """The answers' records and entity rows (as answer_record_create writes them), asked in the past (so the
        reconciliation finds them due)."""
        records = [
            AnswerRecord(
                id=answer.id,
                asked_at=answer.signals[0].timestamp,
                question="who greenlit this",
                question_normalized="who greenlit this",
                entities=[
                    {"id": str(s.entity_id), "entity_type": s.entity_type, "role": s.role, "rank": s.rank, "score": 1}
                    for s in answer.signals
                ],
                result_count=len(answer.signals),
                subject_count=len(answer.signals),
                latency_ms=1.0,
                composer="bench",
            )
            for answer in answers
        ]
        rows = [
            AnswerRecordEntity(
                answer_id=answer.id,
                entity_id=s.entity_id,
                asked_at=s.timestamp,
                question_normalized="who greenlit this",
                role=s.role,
                rank=s.rank,
                event_id=s.event_id,
            )
            for answer in answers
            for s in answer.signals
        ]
        AnswerRecord.objects.bulk_create(records, batch_size=5000)
        AnswerRecordEntity.objects.bulk_create(rows, batch_size=5000)

    @staticmethod
    def _publish(workload: list[BenchAnswer]) -> tuple[int, float]:
        """Publish each answer's signals in one call; return (entries, seconds)."""
        redis_circuit.reset()
        started = time.perf_counter()
        outboxed = 0
        for answer in workload:
            outboxed += query_signals_publish(signals=answer.signals).outboxed
        seconds = time.perf_counter() - started
        if outboxed:
            raise CommandError(f"{outboxed} events went to the outbox: Redis was not reachable")
        return sum(len(answer.signals) for answer in workload), seconds

    def _reconciliation(
        self, *, rng, entities, cum_weights, options, expected: Counter, entries: int, rate_off: float
    ) -> None:
        """The worker's events/s with the reconciliation chore on, then off, on new equal workloads (without
        records) while the chore settles the first workload's answers (all counted, all due); the chore's rate."""
        out = self.stdout.write
        client = redis_client()
        count, chunk = options["events"], options["publish_chunk"]
        records = AnswerRecord.objects.count()
        rates: dict[str, list[float]] = {"off": [rate_off], "on": []}
        for mode in ("on", "off"):
            answers = self._answers(rng=rng, entities=entities, cum_weights=cum_weights, count=count, chunk=chunk)
            expected.update(signal.entity_id for answer in answers for signal in answer.signals)
            published, _seconds = self._publish(answers)
            seconds, _rss = self._drain(
                client=client,
                batch_size=options["batch_size"],
                workers=options["workers"],
                total=published,
                env=RECONCILE_ON if mode == "on" else RECONCILE_OFF,
            )
            rates[mode].append(published / seconds)
            entries += published
            if mode == "on":
                # The chore passed every answer (its watermark is past the newest) and left none pending.
                unsettled = answers_past_watermark().count() + AnswerSignalsPending.objects.count()
                # Ever added to the stream (the worker trims it), against what the benchmark published.
                added = sum(
                    client.xinfo_stream(key)["entries-added"] for key in stream_keys(settings.STREAM_QUERY_SIGNALS)
                )
                resent = added - entries
                if unsettled or resent:
                    raise CommandError(f"reconciliation: {unsettled} answers unsettled, {resent} signals re-sent")
        self._totals_check(expected=expected, count=sum(expected.values()))
        on, off = rates["on"][0], sum(rates["off"]) / len(rates["off"])
        out(
            f"reconciliation on (ANSWER_RECONCILE_AFTER_SECONDS=1: every 0.5 s; it settled the first workload's "
            f"{records} answers during the drain and re-sent nothing): {on:,.0f} events/s; off (the runs before "
            f"and after): {', '.join(f'{rate:,.0f}' for rate in rates['off'])} events/s; on/off {on / off:.2f} "
            f"(target >= 0.90); totals exact"
        )
        AnswerReconcileMark.objects.all().delete()  # every answer due again
        started = time.perf_counter()
        outcome = answer_signals_reconcile(limit=records)
        seconds = time.perf_counter() - started
        if (outcome.checked, outcome.settled, outcome.resent) != (records, records, 0):
            raise CommandError(f"reconciliation of counted answers did {outcome}")
        signals = sum(AnswerRecord.objects.values_list("result_count", flat=True))
        out(
            f"reconciliation rate (answer_signals_reconcile in process, every answer counted): {records} answers "
            f"({signals} signals) in {seconds:.2f} s = {records / seconds:,.0f} answers/s, "
            f"{signals / seconds:,.0f} signals/s"
        )

    @staticmethod
    def _settle() -> None:
        """Let the seeding's aftermath (dirty pages, tables due for autovacuum) pass before measuring.

        Otherwise a checkpoint or an autovacuum of the just-loaded tables lands in the measured seconds
        and the same run moves by 20 %. CHECKPOINT needs a superuser (or pg_checkpoint); without it
        the run goes on.
        """
        with connection.cursor() as cursor:
            for table in ("entities_entity", "entities_entitydemand", "entities_entityembedding"):
                cursor.execute(f"VACUUM ANALYZE {table}")  # a constant table name
            try:
                with transaction.atomic():
                    cursor.execute("CHECKPOINT")
            except DatabaseError:
                pass

    def _drain(
        self, *, client: redis.Redis, batch_size: int, workers: int, total: int, env: dict[str, str]
    ) -> tuple[float, dict[int | str, int]]:
        """Run real workers (`env` added to theirs) until the group has read and acknowledged the `total` new
        entries; time the draining."""
        keys = stream_keys(settings.STREAM_QUERY_SIGNALS)
        before = self._groups_hold(client=client, keys=keys)
        processes = [
            subprocess.Popen(
                [
                    *(sys.executable, str(MANAGE), "run_stream_worker", "--consumer", f"bench-worker-{number}"),
                    *("--batch-size", str(batch_size), "--block-ms", "200"),
                ],
                env={**os.environ, "LOG_LEVEL": "WARNING", **env},
            )
            for number in range(workers)
        ]

        def largest(field: str) -> int:
            return max(_vm_kib(process.pid, field) for process in processes)

        rss: dict[int | str, int] = dict.fromkeys((*RSS_SAMPLES, "peak"), 0)
        try:
            self._workers_ready(client=client, processes=processes)
            self._groups_release(client=client, before=before)
            already = sum(entries_read for _last, entries_read in before.values())
            started = None
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                if any(process.poll() is not None for process in processes):
                    raise CommandError("a worker exited early")
                read, pending = self._group_progress(client=client, keys=keys)
                read -= already
                if started is None and read:
                    started = time.perf_counter()
                    cpu_started = self._cpu_snapshot(processes=processes)
                if started is not None:
                    self._locks_sample()
                for share in RSS_SAMPLES[:-1]:
                    if not rss[share] and read >= total * share // 100:
                        rss[share] = largest("VmRSS")
                if read >= total and pending == 0:
                    seconds = time.perf_counter() - started
                    self._cpu = {k: v - cpu_started[k] for k, v in self._cpu_snapshot(processes=processes).items()}
                    rss[100], rss["peak"] = largest("VmRSS"), largest("VmHWM")
                    return seconds, rss
                time.sleep(0.01)
            raise CommandError("the workers did not drain the stream within 10 minutes")
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(timeout=30)

    # -- partitions, CPU seconds, lock waits, capacity figures (--partitions, issue 15) ------------------------

    @staticmethod
    def _groups_hold(*, client: redis.Redis, keys: list[str]) -> dict[str, tuple[str, int]]:
        """The workers' group at the end of every key, a never-reading group where the workers' group was: the
        workers start, share the partitions out and trim nothing while they see no entry. Returns each key's
        (last delivered id, entries read) of the workers' group before, for `_groups_release`."""
        before = {}
        for key in keys:
            groups = client.xinfo_groups(key) if client.exists(key) else []
            group = next((g for g in groups if g["name"] == settings.STREAM_CONSUMER_GROUP), None)
            if group is None:
                client.xgroup_create(key, settings.STREAM_CONSUMER_GROUP, id="$", mkstream=True)
                before[key] = ("0", 0)
            else:
                client.xgroup_setid(key, settings.STREAM_CONSUMER_GROUP, id="$")
                before[key] = (group["last-delivered-id"], group["entries-read"] or 0)
            client.xgroup_create(key, HOLD_GROUP, id=before[key][0])
        return before

    @staticmethod
    def _groups_release(*, client: redis.Redis, before: dict[str, tuple[str, int]]) -> None:
        """Move the workers' group back to where it was on every key: all workers start draining at once."""
        for key, (last_id, entries_read) in before.items():
            client.xgroup_setid(key, settings.STREAM_CONSUMER_GROUP, id=last_id, entries_read=entries_read)
            client.xgroup_destroy(key, HOLD_GROUP)

    @staticmethod
    def _workers_ready(*, client: redis.Redis, processes: list[subprocess.Popen]) -> None:
        """Wait until every worker beats and, with partitions, each holds its share of them."""
        names = {f"bench-worker-{number}" for number in range(len(processes))}
        count = settings.STREAM_PARTITIONS
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if any(process.poll() is not None for process in processes):
                raise CommandError("a worker exited early")
            live = {worker["consumer"] for worker in workers_live(client=client)}
            if names <= live:
                if count == 1:
                    return
                owners = Counter(lease["owner"] for lease in partition_leases(client=client))
                fair = {count // len(names), -(-count // len(names))}
                if None not in owners and set(owners) == names and set(owners.values()) <= fair:
                    return
            time.sleep(0.05)
        raise CommandError("the workers did not start (or share the partitions out) within 2 minutes")

    @staticmethod
    def _group_progress(*, client: redis.Redis, keys: list[str]) -> tuple[int, int]:
        """Entries the workers' group has read, and those pending, over all keys (one round trip)."""
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.xinfo_groups(key)
        read = pending = 0
        for groups in pipe.execute():
            group = next(g for g in groups if g["name"] == settings.STREAM_CONSUMER_GROUP)
            read += group["entries-read"] or 0
            pending += group["pending"]
        return read, pending

    @staticmethod
    def _tree_cpu(root: psutil.Process) -> float:
        """CPU seconds of a server's process tree: the live processes plus the children it has reaped."""
        total = 0.0
        for process in (root, *root.children(recursive=True)):
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        times = root.cpu_times()
        return total + times.children_user + times.children_system

    def _cpu_snapshot(self, *, processes: list[subprocess.Popen]) -> dict[str, float]:
        """Cumulative CPU seconds of the worker processes, PostgreSQL's process tree and Redis's."""
        if not hasattr(self, "_servers"):
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                postmaster = psutil.Process(cursor.fetchone()[0]).parent()
            self._servers = {
                "postgresql": postmaster,
                **{f"redis {number}": server for number, server in enumerate(self._redis_servers())},
            }
            self._lock_samples = [0, 0]
        workers = 0.0
        for process in processes:
            times = psutil.Process(process.pid).cpu_times()
            workers += times.user + times.system
        return {"workers": workers, **{name: self._tree_cpu(root) for name, root in self._servers.items()}}

    @staticmethod
    def _redis_servers() -> list[psutil.Process]:
        """The Redis server processes: the one server, or every primary of a cluster."""
        client = redis_client()
        if settings.REDIS_CLUSTER:
            return [
                psutil.Process(int(client.info("server", target_nodes=node)["process_id"]))
                for node in client.get_primaries()
            ]
        return [psutil.Process(int(client.info("server")["process_id"]))]

    def _locks_sample(self) -> None:
        """Sample the workers' backends: how many are in a batch's transaction, how many wait on a lock."""
        with connection.cursor() as cursor:
            cursor.execute(
                """
                SELECT count(*) FILTER (WHERE wait_event_type = 'Lock'), count(*)
                FROM pg_stat_activity
                WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
                  AND state IN ('active', 'idle in transaction')
                """
            )
            waiting, busy = cursor.fetchone()
        self._lock_samples[0] += waiting
        self._lock_samples[1] += busy

    def _capacity_before(self, *, client: redis.Redis) -> None:
        """Before the drain: the WAL position, and Redis's memory for the stream entries waiting."""
        keys = stream_keys(settings.STREAM_QUERY_SIGNALS)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_current_wal_lsn()")
            self._wal_before = cursor.fetchone()[0]
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.memory_usage(key, samples=0)
            pipe.xlen(key)
        replies = pipe.execute()
        self._stream_bytes = sum(replies[0::2])
        self._stream_entries = sum(replies[1::2])

    def _cost_report(self, *, entries: int, partitions: int) -> None:
        """Print events per CPU second (workers + PostgreSQL + Redis), the lock-wait share and capacity figures."""
        out = self.stdout.write
        cpu = self._cpu
        total = sum(cpu.values())
        redis_cpu = [seconds for name, seconds in cpu.items() if name.startswith("redis")]
        redis_text = f"Redis {sum(redis_cpu):.2f} s" + (
            f" over {len(redis_cpu)} cluster primaries" if settings.REDIS_CLUSTER else ""
        )
        out(
            f"cpu: {total:.2f} CPU-s = {entries / total:,.0f} events per CPU-second (workers {cpu['workers']:.2f} s, "
            f"PostgreSQL {cpu['postgresql']:.2f} s, {redis_text}; STREAM_PARTITIONS={partitions})"
        )
        waiting, busy = self._lock_samples
        out(
            f"row locks: {100 * waiting / busy if busy else 0:.1f} % of the workers' in-batch backend samples"
            f" waited on a lock (pg_stat_activity every ~10 ms: {waiting} of {busy})"
        )
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", [self._wal_before])
            wal = float(cursor.fetchone()[0])
            cursor.execute(
                "SELECT pg_total_relation_size('streams_processedevent'), pg_total_relation_size(%s)",
                [DemandBucket._meta.db_table],
            )
            inbox_bytes, bucket_bytes = cursor.fetchone()
        pending_bytes = self._pending_entry_bytes(client=redis_client())
        inbox_rows = ProcessedEvent.objects.count()
        bucket_rows = DemandBucket.objects.count()
        out(
            f"capacity: WAL {wal / entries:,.0f} B/event; inbox {inbox_bytes / inbox_rows:,.0f} B/event (table and"
            f" indexes); Redis {self._stream_bytes / self._stream_entries:,.0f} B per stream entry waiting"
            f" (MEMORY USAGE) + {pending_bytes:,.0f} B while it is pending;"
            f" {bucket_rows} hourly bucket rows for {entries} events over 30 days"
            f" ({bucket_rows / 30:,.0f} per day, {bucket_bytes / bucket_rows:,.0f} B each)"
        )

    @staticmethod
    def _pending_entry_bytes(*, client: redis.Redis, count: int = 10_000) -> float:
        """What a pending entry adds to its stream (the group's and the consumer's pending lists), measured on
        a probe key of the run's prefix: MEMORY USAGE before and after one consumer reads `count` entries."""
        key = f"{settings.STREAM_KEY_PREFIX}:memory_probe"
        fields = QuerySignal.new(entity_id=uuid.uuid4(), entity_type="person", query="who greenlit this").to_fields()
        pipe = client.pipeline(transaction=False)
        for _ in range(count):
            pipe.xadd(key, fields)
        pipe.execute()
        client.xgroup_create(key, "probe", id="0")
        before = client.memory_usage(key, samples=0)
        client.xreadgroup("probe", "probe", {key: ">"}, count=count)
        after = client.memory_usage(key, samples=0)
        client.delete(key)
        return (after - before) / count

    def _totals_check(self, *, expected: Counter, count: int) -> None:
        counts = dict(EntityDemand.objects.filter(query_count__gt=0).values_list("entity_id", "query_count"))
        if counts != dict(expected):
            ids = expected.keys() | counts.keys()
            wrong = sum(1 for entity_id in ids if counts.get(entity_id) != expected[entity_id])
            raise CommandError(f"query_count differs from the workload for {wrong} entities")
        if EntityDemand.objects.exclude(demand_score=F("query_count")).exists():
            raise CommandError("demand_score differs from query_count")
        buckets = DemandBucket.objects.aggregate(total=Sum("count"))["total"]
        inbox = ProcessedEvent.objects.count()
        if buckets != count or inbox != count:
            raise CommandError(f"buckets total {buckets}, inbox {inbox}; expected {count}")

    def _baseline(self, *, rng: random.Random, entities, cum_weights, count: int) -> float:
        """The seed's worker: read 10, then per event one UPDATE (autocommit) and one XACK."""
        client = redis_client()
        stream = f"{settings.STREAM_KEY_PREFIX}:baseline"
        group = "baseline"
        client.xgroup_create(stream, group, id="0", mkstream=True)
        pipe = client.pipeline(transaction=False)
        for entity_id, entity_type in rng.choices(entities, cum_weights=cum_weights, k=count):
            pipe.xadd(stream, QuerySignal.new(entity_id=entity_id, entity_type=entity_type, query="q").to_fields())
        pipe.execute()
        done = 0
        started = time.perf_counter()
        while done < count:
            for _stream, messages in client.xreadgroup(group, "baseline", {stream: ">"}, count=10, block=1000):
                for entry_id, fields in messages:
                    signal = event_parse(settings.STREAM_QUERY_SIGNALS, fields)
                    EntityDemand.objects.filter(entity_id=signal.entity_id).update(
                        demand_score=F("demand_score") + 1,
                        query_count=F("query_count") + 1,
                        last_queried_at=signal.timestamp,
                    )
                    client.xack(stream, group, entry_id)
                    done += 1
        return count / (time.perf_counter() - started)
