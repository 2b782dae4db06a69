"""Liveness (`/healthz`) and readiness (`/readyz`) probes, answered before the rest of the middleware.

They run first in MIDDLEWARE so a probe depends on nothing it does not check: no host validation
(load balancers probe by IP), no session, no authentication.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpRequest, HttpResponse, JsonResponse
from redis.cluster import RedisCluster

from kernel.replica import REPLICA, replica_configured
from streams.redis import redis_client

logger = logging.getLogger(__name__)

# Seconds a readiness probe may wait for Redis before it calls it unreachable.
REDIS_PROBE_TIMEOUT = 2.0

# Once a process has seen every migration applied it stays so: migrations only change with a deploy,
# and a deploy starts new processes.
_migrations_seen_applied: set[str] = set()
MIGRATIONS_SKIPPED = "not checked: PostgreSQL is down"


def postgres_check(*, using: str = DEFAULT_DB_ALIAS) -> str | None:
    """None when PostgreSQL answers `SELECT 1`, else why not."""
    connection = connections[using]
    try:
        # Stale persistent connections were already dropped by CONN_HEALTH_CHECKS at request start.
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any failure means "not ready"; the reason is reported
        connection.close()
        return f"PostgreSQL unreachable: {type(exc).__name__}: {str(exc).strip()[:200]}"
    return None


def migrations_check(*, using: str = DEFAULT_DB_ALIAS) -> str | None:
    """None when every migration is applied, else which ones are not."""
    if using in _migrations_seen_applied:
        return None
    connection = connections[using]
    try:
        executor = MigrationExecutor(connection)
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except Exception as exc:
        connection.close()
        return f"migration state unknown: {type(exc).__name__}: {str(exc).strip()[:200]}"
    if plan:
        names = ", ".join(f"{migration.app_label}.{migration.name}" for migration, _backwards in plan[:5])
        more = f" and {len(plan) - 5} more" if len(plan) > 5 else ""
        return f"{len(plan)} unapplied migration(s): {names}{more}"
    _migrations_seen_applied.add(using)
    return None


def redis_check() -> str | None:
    """None when Redis answers PING (on a cluster: every primary, and the cluster serves every slot), else why not."""
    try:
        client = redis_client(timeout=REDIS_PROBE_TIMEOUT)
        if settings.REDIS_CLUSTER:
            client.ping(target_nodes=RedisCluster.PRIMARIES)
            state = client.cluster_info(target_nodes=RedisCluster.DEFAULT_NODE).get("cluster_state")
            if state != "ok":
                return f"Redis Cluster state is {state!r}: some slots are not served"
        else:
            client.ping()
    except Exception as exc:
        return f"Redis unreachable: {type(exc).__name__}: {str(exc).strip()[:200]}"
    return None


# How far the replica's replay is behind: 0 when it has replayed everything it received (or is no longer a
# replica), else the age of the newest transaction it replayed; and the primary's WAL it has not replayed.
_REPLICA_LAG_SQL = """
SELECT CASE WHEN NOT pg_is_in_recovery() OR pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
            ELSE extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float END,
       CASE WHEN %(primary)s::pg_lsn IS NOT NULL
            THEN greatest(0, pg_wal_lsn_diff(%(primary)s::pg_lsn, pg_last_wal_replay_lsn()))::bigint END
"""


def replica_check(*, primary_up: bool) -> tuple[str | None, dict]:
    """(None or why the replica is unreachable, {"reachable", "replay_lag_seconds", "replay_lag_bytes"}).

    Lag seconds are None when the replica has replayed no transaction since it started; lag bytes are None
    when the primary is down.
    """
    report = {"reachable": False, "replay_lag_seconds": None, "replay_lag_bytes": None}
    primary_lsn = None
    if primary_up:
        try:
            with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
                cursor.execute("SELECT pg_current_wal_lsn()::text")
                primary_lsn = cursor.fetchone()[0]
        except DatabaseError as exc:  # the primary went down since its check: no lag in bytes this time
            logger.warning("replica lag: primary WAL position unknown: %s", type(exc).__name__)
            connections[DEFAULT_DB_ALIAS].close()
    replica = connections[REPLICA]
    try:
        with replica.cursor() as cursor:
            cursor.execute(_REPLICA_LAG_SQL, {"primary": primary_lsn})
            seconds, lag_bytes = cursor.fetchone()
    except Exception as exc:  # any failure means "unreachable"; the reason is reported
        replica.close()
        return f"PostgreSQL replica unreachable: {type(exc).__name__}: {str(exc).strip()[:200]}", report
    report.update(reachable=True, replay_lag_seconds=seconds, replay_lag_bytes=lag_bytes)
    return None, report


def readiness_report() -> dict[str, str]:
    """Each dependency -> "ok" or the reason it is not ready. Migrations are only checked with PostgreSQL up."""
    checks: dict[str, str] = {}
    postgres = postgres_check()
    checks["postgres"] = postgres or "ok"
    checks["migrations"] = (migrations_check() or "ok") if postgres is None else MIGRATIONS_SKIPPED
    checks["redis"] = redis_check() or "ok"
    return checks


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers. Checks no dependency, so a database outage never restarts the web."""
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: 200 when PostgreSQL and Redis answer and migrations are applied; 503 naming what fails.

    With a replica configured the body also reports it (`checks.replica`, `replica`): reachable, replay lag.
    An unreachable replica does not make the process unready: only the analytics reports need it (they
    answer 503 meanwhile), and taking the web out of service would stop answers and logins too.
    """
    checks = readiness_report()
    failing = [name for name, result in checks.items() if result not in ("ok", MIGRATIONS_SKIPPED)]
    body: dict = {"checks": checks}
    if replica_configured():
        reason, body["replica"] = replica_check(primary_up=checks["postgres"] == "ok")
        checks["replica"] = reason or "ok"
        if reason:
            logger.warning("%s", reason)
    if not failing:
        return JsonResponse({"status": "ready", **body})
    logger.warning("not ready: %s", "; ".join(checks[name] for name in failing))
    return JsonResponse({"error": f"Not ready: {', '.join(failing)} failing.", "failing": failing, **body}, status=503)


PROBES: dict[str, Callable[[HttpRequest], HttpResponse]] = {"/healthz": healthz, "/readyz": readyz}


class HealthCheckMiddleware:
    """Answers GET/HEAD /healthz and /readyz before host validation, sessions and authentication."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        probe = PROBES.get(request.path_info.rstrip("/") or "/")
        if probe is not None and request.method in ("GET", "HEAD"):
            return probe(request)
        return self.get_response(request)
