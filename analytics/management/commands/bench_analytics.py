"""Benchmark the demand analytics endpoints at scale in a throwaway database, against a naive baseline.

Creates a database on the same PostgreSQL server, migrates it, loads (set-based SQL, not through the
worker) 100,000 entities and 5,000,000 Zipf-skewed events over 60 days as hourly buckets plus the
demand counters, then requests every endpoint through the real URL stack with a staff JWT: p50/p95,
cold (a new database session before every request, no result cache anywhere) and warm. In the same
run it times the naive GROUP BY over hourly buckets for 30d trending (the baseline), checks both give
the same answer, and times the write path and the hourly roll. The database is dropped at the end.
"""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

from analytics.definitions import hour_floor
from analytics.demand import demand_buckets_add, demand_totals_rebuild, demand_windows_roll
from analytics.selectors import TIMEFRAMES, demand_trending, questions_gaps, questions_top
from analytics.services import question_windows_roll, refresh_queue_snapshot_build
from entities.models import DEMAND_ORDER, Entity, EntityType
from kernel.databases import throwaway_database

MANAGE = Path(settings.BASE_DIR) / "manage.py"
BASE = "/api/analytics/demand/"
QUESTIONS = "/api/analytics/questions/"
TARGET_P95_MS = 50.0

# Share of each entity type among the bench entities (people and companies dominate, as in the real data).
TYPE_SHARES = [
    (EntityType.PERSON, 0.35),
    (EntityType.COMPANY, 0.20),
    (EntityType.PROJECT, 0.20),
    (EntityType.PRODUCTION_COMPANY, 0.08),
    (EntityType.DEAL, 0.07),
    (EntityType.PLATFORM, 0.05),
    (EntityType.GENRE, 0.03),
    (EntityType.FORMAT, 0.02),
]

# Zipf (s = 1) ranks by inverse transform: P(rank <= x) = ln(x + 1) / ln(N + 1). Each entity also has a
# trend t in [-0.5, 0.5]: with probability |t| an event falls in the newer half of the period (t > 0,
# rising) or the older half (t < 0, falling), otherwise anywhere in it; ages are whole hours back from h0.
# Rows go in hour order, as the worker writes them over time.
EVENTS_SQL = """
INSERT INTO analytics_demandbucket (entity_id, hour, count, returned)
SELECT r.entity_id, %(h0)s::timestamptz - e.age * interval '1 hour', count(*), count(*)
FROM (
    SELECT rank, floor(CASE
        WHEN pick < abs(t.trend) AND t.trend > 0 THEN spot * %(hours)s / 2
        WHEN pick < abs(t.trend) THEN %(hours)s / 2 + spot * %(hours)s / 2
        ELSE spot * %(hours)s
    END) AS age
    FROM (
        SELECT least(%(entities)s, floor(exp(random() * ln(%(entities)s + 1)))::int) AS rank,
               random() AS pick, random() AS spot
        FROM generate_series(1, %(events)s)
    ) AS raw
    JOIN bench_rank AS t USING (rank)
) AS e
JOIN bench_rank AS r USING (rank)
GROUP BY 1, 2
ORDER BY 2, 1
"""

COUNTERS_SQL = """
UPDATE entities_entitydemand AS d
SET query_count = s.total, demand_score = s.total,
    first_queried_at = s.first_hour + interval '7 minutes', last_queried_at = s.last_hour + interval '41 minutes'
FROM (
    SELECT entity_id, sum(count) AS total, min(hour) AS first_hour, max(hour) AS last_hour
    FROM analytics_demandbucket GROUP BY entity_id
) AS s
WHERE d.entity_id = s.entity_id
"""

# Answer records over 30 days: Zipf (s = 1) over `questions` distinct questions, one in ten about nothing,
# the others returning one to three of the Zipf-ranked entities; askers drawn from the bench users.
ANSWERS_SQL = """
CREATE TEMP TABLE bench_answer AS
SELECT gen_random_uuid() AS id, at, q,
       (%(users)s::int[])[1 + (hashint4(q + n) & 2147483647) %% cardinality(%(users)s::int[])] AS user_id,
       CASE WHEN q %% 10 = 0 THEN 0 ELSE 1 + q %% 3 END AS returned
FROM (
    SELECT n, least(%(questions)s, floor(exp(random() * ln(%(questions)s + 1)))::int) AS q,
           now() - random() * interval '30 days' AS at
    FROM generate_series(1, %(answers)s) AS n
) AS raw;
INSERT INTO entities_answerrecord (id, asked_at, user_id, question, question_normalized, entities,
    result_count, subject_count, latency_ms, composer)
SELECT a.id, a.at, a.user_id, 'Who is bench person ' || a.q || '?', 'who is bench person ' || a.q,
       coalesce((
           SELECT jsonb_agg(jsonb_build_object('id', r.entity_id, 'entity_type', e.entity_type,
                  'role', CASE WHEN k = 1 THEN 'subject' ELSE 'related' END, 'rank', k, 'score', 1.0) ORDER BY k)
           FROM generate_series(1, a.returned) AS k
           JOIN bench_rank AS r ON r.rank = 1 + (a.q + k - 1) %% %(entities)s
           JOIN entities_entity AS e ON e.id = r.entity_id
       ), '[]'::jsonb),
       a.returned, least(a.returned, 1), 12.5, 'extractive'
FROM bench_answer AS a ORDER BY a.at;
-- Random event ids: no reader measured here looks at them (the answer path derives them, see bench_pipeline).
INSERT INTO entities_answerrecordentity (answer_id, entity_id, asked_at, question_normalized, role, rank, event_id)
SELECT a.id, r.entity_id, a.at, 'who is bench person ' || a.q, CASE WHEN k = 1 THEN 'subject' ELSE 'related' END, k,
       gen_random_uuid()
FROM bench_answer AS a CROSS JOIN LATERAL generate_series(1, a.returned) AS k
JOIN bench_rank AS r ON r.rank = 1 + (a.q + k - 1) %% %(entities)s
ORDER BY a.at;
"""
# Refresh requests over 30 days for the most demanded entities; the content of every other one changes
# after its request (through an entity UPDATE, so the database's trigger closes it, as for an import).
REFRESH_REQUESTS = 5_000
REFRESH_REQUESTS_SQL = """
INSERT INTO entities_refreshrequest (entity_id, event_id, source, requested_at)
SELECT entity_id, gen_random_uuid(), 'bench', now() - random() * interval '30 days'
FROM bench_rank WHERE rank <= %(requests)s
"""
REFRESH_DONE_SQL = """
UPDATE entities_entity AS e SET updated_at = r.requested_at + random() * (now() - r.requested_at)
FROM entities_refreshrequest AS r JOIN bench_rank AS b ON b.entity_id = r.entity_id
WHERE e.id = r.entity_id AND b.rank % 2 = 0
"""
ANSWER_QUESTIONS = 50_000
ANSWER_USERS = 500

# The naive baseline: 30d trending straight from the hourly buckets, one GROUP BY per request.
NAIVE_TRENDING_SQL = """
SELECT s.entity_id, s.cur, s.prev
FROM (
    SELECT entity_id,
           coalesce(sum(count) FILTER (WHERE hour > %(h0)s::timestamptz - interval '720 hours'), 0)::bigint AS cur,
           coalesce(sum(count) FILTER (WHERE hour <= %(h0)s::timestamptz - interval '720 hours'), 0)::bigint AS prev
    FROM analytics_demandbucket
    WHERE hour > %(h0)s::timestamptz - interval '1440 hours' AND hour <= %(h0)s
    GROUP BY entity_id
) AS s
JOIN entities_entity AS e ON e.id = s.entity_id
WHERE s.cur >= %(min)s AND s.cur > s.prev
ORDER BY (s.cur - s.prev)::float8 / sqrt(s.prev::float8 + 1.0) DESC, s.cur DESC, e.name
LIMIT %(limit)s
"""


def percentile(samples: list[float], share: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


class Command(BaseCommand):
    help = "Measure the analytics endpoints (p50/p95, cold and warm) on 100k entities / 5M events."

    def add_arguments(self, parser):
        parser.add_argument("--entities", type=int, default=100_000)
        parser.add_argument("--events", type=int, default=5_000_000)
        parser.add_argument("--days", type=int, default=60, help="Events are spread over this many days.")
        parser.add_argument("--answers", type=int, default=1_000_000, help="Answer records over 30 days.")
        parser.add_argument("--runs", type=int, default=40, help="Requests per endpoint and mode.")
        parser.add_argument("--baseline-runs", type=int, default=5)
        parser.add_argument("--only", default="", help="Time only the endpoints whose label starts with this.")
        parser.add_argument("--keep-database", action="store_true", help="Do not drop the throwaway database.")
        parser.add_argument("--explain", action="store_true", help="Print the query plans of the endpoints.")
        # Internal: set by the outer run for the inner run, which works inside the throwaway database.
        parser.add_argument("--inside", action="store_true", help="(internal)")

    def handle(self, *args, **options):
        if options["inside"]:
            return self._bench(options)
        with throwaway_database(
            prefix="mandate_wizard_bench_analytics",
            env=dict(os.environ),
            keep=options["keep_database"],
            say=self.stdout.write,
        ) as url:
            argv = [sys.executable, str(MANAGE), "bench_analytics", "--inside"]
            for option in ("entities", "events", "days", "answers", "runs", "baseline_runs", "only"):
                argv += [f"--{option.replace('_', '-')}", str(options[option])]
            if options["explain"]:
                argv.append("--explain")
            if subprocess.run(argv, env={**os.environ, "DATABASE_URL": url}).returncode:
                raise CommandError("benchmark failed (see above)")

    # -- inside the throwaway database ----------------------------------------------------------------------

    def _bench(self, options) -> None:
        out = self.stdout.write
        now = timezone.now()
        h0 = hour_floor(now)
        self._load(options, h0)

        started = time.perf_counter()
        demand_windows_roll(now=now)
        out(f"windows built from the buckets in {time.perf_counter() - started:.1f} s (once, by the first roll)")
        started = time.perf_counter()
        demand_totals_rebuild(stale_min_demand_score=settings.STALE_MIN_DEMAND_SCORE)
        out(f"entity totals built in {time.perf_counter() - started:.1f} s (once; triggers keep them after that)")
        started = time.perf_counter()
        question_windows_roll(now=now)
        out(f"question windows built from the answer records in {time.perf_counter() - started:.1f} s (once)")
        self._vacuum()

        staff = get_user_model().objects.create_user(
            username="bench-staff@example.com", password=uuid.uuid4().hex, is_staff=True
        )
        # The test client's host name; requests never leave this process.
        settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {AccessToken.for_user(staff)}")
        ranked = list(Entity.objects.order_by(*DEMAND_ORDER).values_list("id", flat=True))
        sample = [ranked[min(i, len(ranked) - 1)] for i in (0, 9, 99, 999, 9_999, len(ranked) - 1)]
        endpoints: dict[str, Callable[[int], str]] = {
            "stats": lambda i: BASE + "stats/",
            "top": lambda i: BASE + "top/?limit=10",
            "top type=format offset=100": lambda i: BASE + "top/?limit=100&offset=100&entity_type=format",
            "trending 1d": lambda i: BASE + "trending/?timeframe=1d&limit=10",
            "trending 7d": lambda i: BASE + "trending/?timeframe=7d&limit=10",
            "trending 30d": lambda i: BASE + "trending/?timeframe=30d&limit=50",
            "stale": lambda i: BASE + "stale/?limit=100",
            "entity": lambda i: f"{BASE}entity/{sample[i % len(sample)]}/",
            "timeseries 30d by day": lambda i: f"{BASE}entity/{sample[i % len(sample)]}/timeseries/?days=30",
            "timeseries 30d by hour": lambda i: (
                f"{BASE}entity/{sample[i % len(sample)]}/timeseries/?days=30&interval=hour"
            ),
            "refresh queue": lambda i: BASE + "refresh-queue/?limit=50",
            "refresh queue critical": lambda i: BASE + "refresh-queue/?limit=50&critical=true",
            "refresh queue type=format": lambda i: BASE + "refresh-queue/?limit=50&entity_type=format",
            "refresh stats 7d": lambda i: BASE + "refresh-stats/?timeframe=7d",
            "refresh stats 30d": lambda i: BASE + "refresh-stats/?timeframe=30d",
            **{
                f"questions {report} {timeframe}": (lambda i, r=report, t=timeframe: f"{QUESTIONS}{r}/?timeframe={t}")
                for report in ("top", "gaps")
                for timeframe in TIMEFRAMES
            },
        }
        if options["only"]:
            endpoints = {label: path for label, path in endpoints.items() if label.startswith(options["only"])}
        if options["explain"]:
            self._explain(client, endpoints)

        demand_windows_roll()  # as the worker's chores do; a roll is timed on its own below
        question_windows_roll()
        runs = options["runs"]
        out(f"\n{'endpoint':<28}{'cold p50':>10}{'cold p95':>10}{'warm p50':>10}{'warm p95':>10}   (ms, {runs} runs)")
        worst = 0.0
        for label, path in endpoints.items():
            if label.startswith("refresh queue"):
                refresh_queue_snapshot_build()  # as the worker's chore does every minute; timed below
            self._get(client, path(0))  # import and URL resolver warm-up, not measured
            cold = [self._timed_get(client, path(i), fresh_session=True) for i in range(runs)]
            warm = [self._timed_get(client, path(i), fresh_session=False) for i in range(runs)]
            worst = max(worst, percentile(cold, 0.95))
            out(
                f"{label:<28}{statistics.median(cold):>10.1f}{percentile(cold, 0.95):>10.1f}"
                f"{statistics.median(warm):>10.1f}{percentile(warm, 0.95):>10.1f}"
            )
        verdict = "meets" if worst <= TARGET_P95_MS else "MISSES"
        out(f"worst cold p95 {worst:.1f} ms: {verdict} the {TARGET_P95_MS:.0f} ms target")

        if not options["only"] or "refresh queue".startswith(options["only"]):
            self._refresh_queue_live(client, runs)
        self._questions_baseline(options)
        if not options["only"]:
            self._baseline(options, now)
            self._roll_and_write(now)

    def _load(self, options, h0) -> None:
        out = self.stdout.write
        entities, events, hours = options["entities"], options["events"], options["days"] * 24
        started = time.perf_counter()
        types = [kind for kind, share in TYPE_SHARES for _ in range(round(share * 100))]
        ids = [uuid.uuid4() for _ in range(entities)]
        stamp = timezone.now()
        Entity.objects.bulk_create(
            [
                Entity(
                    id=entity_id,
                    name=f"Bench entity {index:06d}",
                    entity_type=types[(index * 7919) % len(types)],
                    data={"title": "Executive", "company": f"Studio {index % 97}"},
                    created_at=stamp - timedelta(days=400),
                    # Content age 0-365 days: most of the demand is on records older than 30 days.
                    updated_at=stamp - timedelta(days=(index * 7907) % 365, minutes=index % 1440),
                )
                for index, entity_id in enumerate(ids)
            ],
            batch_size=5000,
        )
        out(f"created {entities:,} entities in {time.perf_counter() - started:.1f} s")

        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute("SET work_mem = '256MB'")
            cursor.execute("CREATE TEMP TABLE bench_rank (rank int PRIMARY KEY, entity_id uuid, trend float8)")
            # Rank 1 is the most asked-about entity; its trend is uniform in [-0.5, 0.5].
            cursor.execute(
                "INSERT INTO bench_rank SELECT r, id, random() - 0.5"
                " FROM unnest(%s::uuid[]) WITH ORDINALITY AS t(id, r)",
                [ids],
            )
            cursor.execute(EVENTS_SQL, {"h0": h0, "hours": hours, "entities": entities, "events": events})
            buckets = cursor.rowcount
            cursor.execute(COUNTERS_SQL)
            cursor.execute("SELECT sum(count) FROM analytics_demandbucket")
            counted = cursor.fetchone()[0]
            cursor.execute("RESET work_mem")
        if counted != events:
            raise CommandError(f"loaded {counted} events, expected {events}")
        out(
            f"loaded {events:,} events over {options['days']} days as {buckets:,} hourly buckets, "
            f"and the entity counters, in {time.perf_counter() - started:.1f} s"
        )
        started = time.perf_counter()
        User = get_user_model()
        users = User.objects.bulk_create(
            [User(username=f"bench-asker-{index}@example.com", password="!") for index in range(ANSWER_USERS)]
        )
        params = {
            "users": [user.pk for user in users],
            "answers": options["answers"],
            "questions": ANSWER_QUESTIONS,
            "entities": entities,
        }
        with connection.cursor() as cursor:
            for statement in ANSWERS_SQL.split(";")[:-1]:
                cursor.execute(statement, params)
        out(
            f"loaded {options['answers']:,} answer records over 30 days ({ANSWER_QUESTIONS:,} distinct questions, "
            f"Zipf) in {time.perf_counter() - started:.1f} s"
        )

        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute(REFRESH_REQUESTS_SQL, {"requests": REFRESH_REQUESTS})
            cursor.execute(REFRESH_DONE_SQL)
            done = cursor.rowcount
        out(
            f"loaded {REFRESH_REQUESTS:,} refresh requests over 30 days, {done:,} of them done by a content change, "
            f"in {time.perf_counter() - started:.1f} s"
        )

    def _vacuum(self) -> None:
        started = time.perf_counter()
        with connection.cursor() as cursor:
            for table in (
                "entities_entity",
                "entities_entitydemand",
                "analytics_demandbucket",
                "analytics_demandwindow",
                "entities_answerrecord",
                "entities_answerrecordentity",
                "entities_refreshrequest",
                "analytics_questionwindow",
                "analytics_questionasker",
            ):
                cursor.execute(f"VACUUM ANALYZE {table}")
        self.stdout.write(f"vacuum analyze in {time.perf_counter() - started:.1f} s")

    def _get(self, client: APIClient, url: str):
        response = client.get(url)
        if response.status_code != 200:
            raise CommandError(f"{url} answered {response.status_code}: {response.content[:200]!r}")
        return response

    def _timed_get(self, client: APIClient, url: str, *, fresh_session: bool) -> float:
        if fresh_session:
            # A new PostgreSQL backend: no cached plans or catalog entries (the connection is made before timing).
            connection.close()
            connection.ensure_connection()
        started = time.perf_counter()
        self._get(client, url)
        return (time.perf_counter() - started) * 1000

    def _explain(self, client, endpoints) -> None:
        from django.test.utils import CaptureQueriesContext

        for label, path in endpoints.items():
            with CaptureQueriesContext(connection) as queries:
                self._get(client, path(0))
            self.stdout.write(f"\n== {label}: {len(queries)} queries")
            for query in queries:
                sql = query["sql"]
                if not sql.lstrip().upper().startswith(("SELECT", "WITH")):
                    continue
                with connection.cursor() as cursor:
                    cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
                    plan = "\n".join(row[0] for row in cursor.fetchall())
                self.stdout.write(f"-- {sql[:300]}\n{plan}")

    def _refresh_queue_live(self, client: APIClient, runs: int) -> None:
        """The snapshot's price and its baseline: scoring the whole queue per request (no snapshot)."""
        out = self.stdout.write
        timings = []
        for _ in range(5):
            started = time.perf_counter()
            size = refresh_queue_snapshot_build()
            timings.append((time.perf_counter() - started) * 1000)
        out(
            f"\nrefresh queue snapshot build (the worker's chore, every {settings.REFRESH_QUEUE_SNAPSHOT_SECONDS} s): "
            f"{size:,} entities, p50 {statistics.median(timings):.0f} ms, max {max(timings):.0f} ms"
        )
        snapshot_seconds = settings.REFRESH_QUEUE_SNAPSHOT_SECONDS
        settings.REFRESH_QUEUE_SNAPSHOT_SECONDS = 0
        try:
            url = BASE + "refresh-queue/?limit=50"
            self._get(client, url)
            cold = [self._timed_get(client, url, fresh_session=True) for _ in range(runs)]
        finally:
            settings.REFRESH_QUEUE_SNAPSHOT_SECONDS = snapshot_seconds
        out(
            f"baseline: refresh queue scored per request (REFRESH_QUEUE_SNAPSHOT_SECONDS=0), cold: "
            f"p50 {statistics.median(cold):.0f} ms, p95 {percentile(cold, 0.95):.0f} ms"
        )

    def _questions_baseline(self, options) -> None:
        """The question reports from the records alone (the plain GROUP BY over the timeframe, as before the
        windows), timed cold; and the check that the windows give the same rows."""
        out = self.stdout.write
        out(f"\nbaseline: question reports from the records alone, query only, {options['baseline_runs']} cold runs")
        for name, report in (("top", questions_top), ("gaps", questions_gaps)):
            for timeframe in TIMEFRAMES:
                timings = []
                for _ in range(options["baseline_runs"]):
                    connection.close()
                    connection.ensure_connection()
                    now = timezone.now()
                    started = time.perf_counter()
                    plain = report(timeframe=timeframe, limit=10, now=now, windows=False)
                    timings.append((time.perf_counter() - started) * 1000)
                windows = report(timeframe=timeframe, limit=10, now=now, windows=True)
                if windows != plain:
                    raise CommandError(f"questions {name} {timeframe}: the windows differ from the records: {windows}")
                median, worst = statistics.median(timings), max(timings)
                out(f"  questions {name} {timeframe}: p50 {median:.0f} ms, max {worst:.0f} ms; the windows agree")
        started = time.perf_counter()
        question_windows_roll(now=timezone.now() + timedelta(hours=1))
        forward = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        question_windows_roll(rebuild=True)
        out(
            f"question windows: roll by 1 h {forward:.0f} ms, "
            f"rebuild from the records {(time.perf_counter() - started) * 1000:.0f} ms"
        )

    def _baseline(self, options, now) -> None:
        out = self.stdout.write
        params = {"h0": hour_floor(now), "min": settings.TRENDING_MIN_QUERIES, "limit": 50}
        timings = []
        for _ in range(options["baseline_runs"]):
            connection.close()
            connection.ensure_connection()
            started = time.perf_counter()
            with connection.cursor() as cursor:
                cursor.execute(NAIVE_TRENDING_SQL, params)
                naive = cursor.fetchall()
            timings.append((time.perf_counter() - started) * 1000)
        out(
            f"\nbaseline: naive 30d trending (GROUP BY over the hourly buckets), query only, "
            f"{options['baseline_runs']} cold runs: p50 {statistics.median(timings):.0f} ms, "
            f"max {max(timings):.0f} ms"
        )
        ours = [
            (row["id"], row["current_period_queries"], row["previous_period_queries"])
            for row in demand_trending(timeframe="30d", limit=50, now=now)
        ]
        naive = [tuple(row) for row in naive]
        if ours != naive:
            diff = [(a, b) for a, b in zip(ours, naive, strict=False) if a != b][:3]
            raise CommandError(f"30d trending from the windows differs from the naive recount: {diff}")
        out("exactness: the windows' 30d top 50 equals the naive recount (ids, current, previous)")

    def _roll_and_write(self, now) -> None:
        out = self.stdout.write
        for hours in (1, 24):
            started = time.perf_counter()
            demand_windows_roll(now=now + timedelta(hours=hours))
            forward = (time.perf_counter() - started) * 1000
            started = time.perf_counter()
            demand_windows_roll(now=now)
            out(
                f"roll of the windows by {hours} h: {forward:.0f} ms forward, "
                f"{(time.perf_counter() - started) * 1000:.0f} ms back"
            )

        # The worker's write path: 1,000 (entity, hour) counts per call, rolled back after measuring. Events of
        # the open hour (the common case) touch only buckets; late events of closed hours also move windows.
        ids = list(Entity.objects.order_by("?").values_list("id", flat=True)[:20_000])
        h0 = hour_floor(now)
        plain_sql = (
            "INSERT INTO analytics_demandbucket (entity_id, hour, count, returned)"
            " SELECT b.*, b.count FROM unnest(%s::uuid[], %s::timestamptz[], %s::bigint[]) AS b(entity_id, hour, count)"
            " ORDER BY 1, 2 ON CONFLICT (entity_id, hour) DO UPDATE SET count = analytics_demandbucket.count"
            " + EXCLUDED.count, returned = analytics_demandbucket.returned + EXCLUDED.returned"
        )

        def plain_add(counts):
            keys = list(counts)
            with connection.cursor() as cursor:
                cursor.execute(plain_sql, [[k[0] for k in keys], [k[1] for k in keys], [counts[k] for k in keys]])

        def windows_add(counts):
            demand_buckets_add(counts=counts)

        # Measured in turns (baseline, ours, baseline, ...) so both see the same machine load.
        for hours_back, events in ((0, "open-hour events"), (1, "late events (previous hour)")):
            batches = [
                {(ids[(b * 1000 + i) % len(ids)], h0 - timedelta(hours=hours_back)): 1 + i % 2 for i in range(1000)}
                for b in range(20)
            ]
            timings = {"plain bucket upsert (baseline)": 0.0, "demand_buckets_add": 0.0}
            with transaction.atomic():
                for counts in batches:
                    for label, add in zip(timings, (plain_add, windows_add), strict=True):
                        started = time.perf_counter()
                        add(counts)
                        timings[label] += (time.perf_counter() - started) * 1000 / len(batches)
                transaction.set_rollback(True)
            out(
                f"write path, 1,000 {events} per call: "
                + ", ".join(f"{label} {ms:.1f} ms" for label, ms in timings.items())
            )

        # The worker's counter UPDATE of 1,000 demand rows, with and without the totals trigger (triggers do
        # not fire with session_replication_role = replica). As in the worker, the redundant ANY makes the
        # planner look the rows up by primary key instead of hashing the whole (narrow) table.
        update_sql = (
            "UPDATE entities_entitydemand AS d SET demand_score = d.demand_score + 1, query_count = d.query_count + 1"
            " FROM unnest(%(ids)s::uuid[]) AS batch(id) WHERE d.entity_id = batch.id AND d.entity_id = ANY(%(ids)s)"
        )
        timings = {"without the totals trigger (baseline)": 0.0, "with it": 0.0}
        with transaction.atomic(), connection.cursor() as cursor:
            for b in range(0, 20, 2):  # each mode updates entities of its own (no row is updated twice)
                for offset, (label, role) in enumerate(zip(timings, ("replica", "origin"), strict=True)):
                    cursor.execute(f"SET LOCAL session_replication_role = {role}")
                    block = sorted(ids[(b + offset) * 1000 : (b + offset + 1) * 1000])
                    started = time.perf_counter()
                    cursor.execute(update_sql, {"ids": block})
                    timings[label] += (time.perf_counter() - started) * 1000 / 10
            transaction.set_rollback(True)
        out(
            "demand counter UPDATE of 1,000 rows: " + ", ".join(f"{label} {ms:.1f} ms" for label, ms in timings.items())
        )
