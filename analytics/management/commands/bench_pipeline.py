"""Benchmark the event pipeline end to end, against the naive per-event baseline, in a throwaway database.

Creates a database on the same PostgreSQL server and uses stream keys of its own, publishes a
Zipf-skewed workload, runs the real worker (`run_stream_worker`, a subprocess) to drain it, checks that
every total is exact, and prints events/s, the baseline's events/s and the ratio, and the worker's memory.
The workload is answers, each with its answer record (as on the answer path); then it measures what the
answer reconciliation costs: the worker's events/s with its chore on (settling the first workload's
answers) and off, and the chore's own rate.
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

import redis
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, connection, transaction
from django.db.models import F, Sum

from analytics.demand import demand_windows_roll
from analytics.models import DemandBucket
from entities.models import AnswerRecord, Entity, EntityDemand
from entities.questions import answer_signal_event_id
from entities.services import answer_signals_reconcile, demo_entities_seed
from kernel.databases import throwaway_database
from streams.events import QuerySignal, event_parse
from streams.models import ProcessedEvent
from streams.publisher import query_signals_publish, redis_circuit
from streams.redis import redis_client
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

    def handle(self, *args, **options):
        if options["inside"]:
            return self._bench(options)
        prefix = f"mandate_wizard_bench_{uuid.uuid4().hex[:8]}"
        # Production settings for the measured processes (DEBUG off needs a secret key: a throwaway one).
        secret = settings.SECRET_KEY if not settings.DEBUG else secrets.token_urlsafe(48)
        env = {**os.environ, "STREAM_KEY_PREFIX": prefix, "DEBUG": "0", "SECRET_KEY": secret}
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
        process_seconds, rss = self._drain(
            client=client, batch_size=batch_size, workers=workers, total=entries, env=RECONCILE_OFF
        )
        out(
            f"process: {entries} entries in {process_seconds:.2f} s = {entries / process_seconds:,.0f} "
            f"events/s ({workers} worker{'s' if workers > 1 else ''}, --batch-size {batch_size}, reconciliation off)"
        )
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
        """The answers' records, unsettled and sent when asked (so the reconciliation finds them due)."""
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
                signals_sent_at=answer.signals[0].timestamp,
            )
            for answer in answers
        ]
        AnswerRecord.objects.bulk_create(records, batch_size=5000)

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
                unsettled = AnswerRecord.objects.filter(signals_settled=False).count()
                # Ever added to the stream (the worker trims it), against what the benchmark published.
                resent = client.xinfo_stream(settings.STREAM_QUERY_SIGNALS)["entries-added"] - entries
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
        AnswerRecord.objects.update(signals_settled=False)
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
        stream, group = settings.STREAM_QUERY_SIGNALS, settings.STREAM_CONSUMER_GROUP
        groups = client.xinfo_groups(stream) if client.exists(stream) else []
        if not groups:
            client.xgroup_create(stream, group, id="0", mkstream=True)
        before = (groups[0]["entries-read"] or 0) if groups else 0
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
            started = None
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                if any(process.poll() is not None for process in processes):
                    raise CommandError("a worker exited early")
                info = client.xinfo_groups(stream)[0]
                read = (info["entries-read"] or 0) - before
                if started is None and read:
                    started = time.perf_counter()
                for share in RSS_SAMPLES[:-1]:
                    if not rss[share] and read >= total * share // 100:
                        rss[share] = largest("VmRSS")
                if read >= total and info["pending"] == 0:
                    seconds = time.perf_counter() - started
                    rss[100], rss["peak"] = largest("VmRSS"), largest("VmHWM")
                    return seconds, rss
                time.sleep(0.01)
            raise CommandError("the workers did not drain the stream within 10 minutes")
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(timeout=30)

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
