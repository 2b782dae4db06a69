"""Analytics from a REAL streaming replica (DATABASE_REPLICA_URL): what a reader sees while it lags, and when it stops.

A module fixture starts a primary of its own (embedded PostgreSQL, migrated, 40 demo entities, one analyst),
a streaming replica of it (`pg_basebackup -R`), a Redis, gunicorn and the stream worker, both with
DATABASE_REPLICA_URL set. The suite's own database cannot be the primary: its tests hold their data in
transactions a replica never receives, and when the suite runs against another PostgreSQL (.ci/run's second
pass) the embedded binaries cannot replicate it. Questions travel the real path: /api/answer, Redis, the
worker, the primary, WAL, the replica, the report.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import requests
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections

from kernel.replica import REPLICA, ReplicaRouter, read_connection, replica_reads
from mandate_wizard.devservers import EmbeddedPostgres, EmbeddedRedis, free_port
from tests.live import port_wait, until
from tests.real_servers import suite_workdir

ROOT = Path(__file__).resolve().parents[2]
MANAGE = ROOT / "manage.py"
GUNICORN = Path(sys.executable).parent / "gunicorn"
EMAIL, PASSWORD = "analyst@example.com", "replica-analyst-password-1"
QUESTION = "Who is Chris Mansolillo?"
SETUP = (
    "from django.core.management import call_command; "
    "call_command('migrate', verbosity=0); "
    "call_command('seed_demo', entities=40, no_demand=True, verbosity=0); "
    f"call_command('create_user', '{EMAIL}', staff=True)"
)


def sql(server: EmbeddedPostgres, statement: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(server.url, autocommit=True) as conn:
        return conn.execute(statement, params).fetchall()


@dataclass
class Replicated:
    primary: EmbeddedPostgres
    replica: EmbeddedPostgres
    base: str
    web: subprocess.Popen
    worker: subprocess.Popen

    def login(self) -> dict[str, str]:
        response = requests.post(f"{self.base}/auth/login", json={"email": EMAIL, "password": PASSWORD}, timeout=10)
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access']}"}

    def get(self, path: str, headers: dict[str, str]) -> requests.Response:
        return requests.get(f"{self.base}{path}", headers=headers, timeout=15)

    def ask(self, headers: dict[str, str]) -> uuid.UUID:
        """Ask QUESTION; the id of the entity it is about."""
        response = requests.post(f"{self.base}/api/answer", json={"question": QUESTION}, headers=headers, timeout=15)
        assert response.status_code == 200, response.text
        return uuid.UUID(next(e["id"] for e in response.json()["entities"] if e["role"] == "subject"))

    def entity_find(self, headers: dict[str, str]) -> uuid.UUID:
        """The id of the entity QUESTION is about, from the entity API (which reads the primary)."""
        response = self.get("/api/entities/?search=Chris Mansolillo", headers)
        assert response.status_code == 200, response.text
        return uuid.UUID(response.json()["results"][0]["id"])

    def primary_count(self, entity_id: uuid.UUID) -> int:
        """The entity's query_count on the primary, where the worker writes."""
        query = "SELECT query_count FROM entities_entitydemand WHERE entity_id = %s"
        return sql(self.primary, query, (entity_id,))[0][0]

    def replica_count(self, entity_id: uuid.UUID, headers: dict[str, str]) -> int:
        """The entity's query_count as the analytics report shows it."""
        response = self.get(f"/api/analytics/demand/entity/{entity_id}/", headers)
        assert response.status_code == 200, response.text
        return response.json()["entity"]["query_count"]

    def questions_asked(self, headers: dict[str, str]) -> int:
        """How often QUESTION was asked today, as the question report shows it."""
        response = self.get("/api/analytics/questions/top/?timeframe=1d", headers)
        assert response.status_code == 200, response.text
        return sum(q["count"] for q in response.json()["questions"] if q["question"] == "who is chris mansolillo")

    def replica_has(self, position: str, lsn: str) -> bool:
        """Whether the replica has received or replayed (`position`) the primary's WAL up to `lsn`."""
        query = f"SELECT pg_wal_lsn_diff(pg_last_wal_{position}_lsn(), %s::pg_lsn) >= 0"
        return sql(self.replica, query, (lsn,))[0][0]

    def primary_lsn(self) -> str:
        return sql(self.primary, "SELECT pg_current_wal_lsn()::text")[0][0]

    def readyz(self) -> dict:
        response = requests.get(f"{self.base}/readyz", timeout=15)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="module")
def replicated() -> Iterator[Replicated]:
    workdir = suite_workdir() / f"replica-{uuid.uuid4().hex[:8]}"
    primary = EmbeddedPostgres(workdir / "primary", durable=False)
    redis_server = EmbeddedRedis(workdir / "redis")
    started: list = []
    try:
        primary.start()
        started.append(primary)
        redis_server.start()
        started.append(redis_server)
        env = {
            **os.environ,
            "DATABASE_URL": primary.url,
            "REDIS_URL": redis_server.url,
            "DEBUG": "0",
            "ALLOWED_HOSTS": "127.0.0.1",
            "USER_PASSWORD": PASSWORD,
            "THROTTLE_LOGIN_IP": "100000/min",
            "THROTTLE_LOGIN_EMAIL": "100000/min",
            "THROTTLE_ANSWER_USER": "100000/min",
        }
        subprocess.run([sys.executable, str(MANAGE), "shell", "-c", SETUP], env=env, check=True, timeout=180)
        replica = primary.replica_create(workdir / "replica")
        replica.start()
        started.append(replica)
        env["DATABASE_REPLICA_URL"] = replica.url
        port = free_port()
        logs = (workdir / "web.log").open("w"), (workdir / "worker.log").open("w")
        web = subprocess.Popen(
            [str(GUNICORN), "mandate_wizard.wsgi:application", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
            cwd=ROOT, env=env, stdout=logs[0], stderr=subprocess.STDOUT,
        )  # fmt: skip
        started.append(web)
        # The worker has the replica configured too, and must never need it.
        worker = subprocess.Popen(
            [sys.executable, str(MANAGE), "run_stream_worker", "--consumer", "replica-test", "--block-ms", "100"],
            cwd=ROOT, env=env, stdout=logs[1], stderr=subprocess.STDOUT,
        )  # fmt: skip
        started.append(worker)
        port_wait(port)
        yield Replicated(primary=primary, replica=replica, base=f"http://127.0.0.1:{port}", web=web, worker=worker)
    finally:
        for thing in reversed(started):
            if isinstance(thing, subprocess.Popen):
                thing.send_signal(signal.SIGTERM)
                thing.wait(timeout=30)
            elif isinstance(thing, EmbeddedPostgres):
                thing.stop(mode="immediate")
            else:
                thing.kill()


@pytest.mark.slow
def test_reports_read_the_replica_and_lag_while_its_replay_is_paused(replicated):
    headers = replicated.login()
    entity_id = replicated.ask(headers)
    until(lambda: replicated.replica_count(entity_id, headers) == replicated.primary_count(entity_id) >= 1)
    counted, asked = replicated.primary_count(entity_id), replicated.questions_asked(headers)
    assert asked >= 1

    sql(replicated.replica, "SELECT pg_wal_replay_pause()")
    try:
        until(lambda: sql(replicated.replica, "SELECT pg_get_wal_replay_pause_state()")[0][0] == "paused")
        assert replicated.ask(headers) == entity_id
        # The worker counts it on the primary while the replica replays nothing.
        until(lambda: replicated.primary_count(entity_id) > counted)
        written = replicated.primary_lsn()
        until(lambda: replicated.replica_has("receive", written))

        # The reports do not show it yet: they read the replica.
        assert replicated.replica_count(entity_id, headers) == counted
        assert replicated.questions_asked(headers) == asked
        ready = replicated.readyz()
        assert ready["checks"]["replica"] == "ok"
        assert ready["replica"]["reachable"] is True
        assert ready["replica"]["replay_lag_seconds"] > 0
        assert ready["replica"]["replay_lag_bytes"] > 0
        assert not replicated.replica_has("replay", written)
    finally:
        sql(replicated.replica, "SELECT pg_wal_replay_resume()")

    until(lambda: replicated.replica_count(entity_id, headers) == counted + 1)
    assert replicated.questions_asked(headers) == asked + 1
    until(lambda: replicated.readyz()["replica"]["replay_lag_seconds"] == 0)


def _admin_login(base: str) -> dict[str, str]:
    """A session login through the admin's form (django-axes checks it); the session and CSRF cookies.

    Cookies are carried by hand: with DEBUG off they are Secure, and requests sends none over plain HTTP.
    """
    page = requests.get(f"{base}/admin/login/", timeout=10)
    assert page.status_code == 200
    cookies = page.cookies.get_dict()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    response = requests.post(
        f"{base}/admin/login/?next=/admin/",
        data={"username": EMAIL, "password": PASSWORD, "csrfmiddlewaretoken": token},
        cookies=cookies,
        allow_redirects=False,
        timeout=10,
    )
    assert response.status_code == 302, response.text[:500]
    return {**cookies, **response.cookies.get_dict()}


@pytest.mark.slow
def test_replica_stopped_reports_503_and_logins_answers_and_the_worker_carry_on(replicated):
    headers = replicated.login()
    replicated.replica.stop(mode="fast")
    try:
        for path in ("/api/analytics/demand/top/", "/api/analytics/questions/top/?format=csv"):
            response = replicated.get(path, headers)
            assert response.status_code == 503, response.text
            assert response.json() == {"error": "The PostgreSQL replica is unreachable; try again shortly."}
            assert int(response.headers["Retry-After"]) > 0
        ready = replicated.readyz()  # still ready: answers and logins do not need the replica
        assert ready["status"] == "ready"
        assert ready["checks"]["replica"].startswith("PostgreSQL replica unreachable")
        assert ready["replica"] == {"reachable": False, "replay_lag_seconds": None, "replay_lag_bytes": None}

        # Logins (JWT, and the admin's session with django-axes), answers and the worker use the primary only.
        headers = replicated.login()
        entity_id = replicated.entity_find(headers)
        counted = replicated.primary_count(entity_id)
        assert replicated.ask(headers) == entity_id
        until(lambda: replicated.primary_count(entity_id) == counted + 1)
        entity = replicated.get(f"/api/entities/{entity_id}/", headers)
        assert entity.status_code == 200 and entity.json()["query_count"] == counted + 1
        cookies = _admin_login(replicated.base)
        listing = requests.get(f"{replicated.base}/admin/entities/entity/", cookies=cookies, timeout=10)
        assert listing.status_code == 200
        dashboard = requests.get(f"{replicated.base}/admin/demand-dashboard/", cookies=cookies, timeout=10)
        assert dashboard.status_code == 503 and dashboard.headers["Content-Type"].startswith("text/html")
        assert int(dashboard.headers["Retry-After"]) > 0
    finally:
        replicated.replica.start()

    # Back by itself (no restart of gunicorn), caught up with what the primary counted meanwhile.
    until(lambda: replicated.get("/api/analytics/demand/top/", headers).status_code == 200, timeout=30)
    until(lambda: replicated.replica_count(entity_id, headers) == counted + 1)
    dashboard = requests.get(f"{replicated.base}/admin/demand-dashboard/", cookies=cookies, timeout=10)
    assert dashboard.status_code == 200
    assert replicated.web.poll() is None and replicated.worker.poll() is None


def test_the_router_keeps_writes_and_migrations_on_the_primary():
    router = ReplicaRouter()
    with replica_reads():
        assert router.db_for_write(object) == DEFAULT_DB_ALIAS
    assert router.allow_migrate(REPLICA, "analytics") is False
    assert router.allow_migrate(DEFAULT_DB_ALIAS, "analytics") is None
    assert router.db_for_read(object) is None  # outside the scope: Django's default


def test_without_a_replica_the_reports_read_the_primary():
    # The suite runs with DATABASE_REPLICA_URL unset (tests/real_servers.py): no alias, no router.
    assert REPLICA not in settings.DATABASES and settings.DATABASE_ROUTERS == []
    with replica_reads() as alias:
        assert alias == DEFAULT_DB_ALIAS
        assert read_connection() is connections[DEFAULT_DB_ALIAS]
