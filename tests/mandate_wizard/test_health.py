"""/healthz answers with no dependency; /readyz fails, naming the part, when a REAL server is stopped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from django.conf import settings

from mandate_wizard import health
from mandate_wizard.devservers import free_port


def test_healthz_needs_no_database_and_no_allowed_host(client):
    # No `db` fixture: pytest-django fails any database access, so this proves liveness touches none.
    response = client.get("/healthz", HTTP_HOST="10.1.2.3")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_ready_when_everything_answers(client):
    response = client.get("/readyz", HTTP_HOST="10.1.2.3")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"postgres": "ok", "migrations": "ok", "redis": "ok"}}


@pytest.mark.django_db
def test_probes_only_answer_get_and_head(client):
    assert client.head("/healthz").status_code == 200
    # Any other method falls through to the URL routes, where no /healthz exists: the JSON 404.
    response = client.post("/healthz")
    assert response.status_code == 404
    assert "error" in response.json()


@pytest.mark.django_db
def test_readyz_503_names_redis_when_the_redis_server_is_stopped(client, private_redis):
    assert client.get("/readyz").status_code == 200
    private_redis.stop()
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["redis"]
    assert "redis" in body["error"]
    assert body["checks"]["redis"].startswith("Redis unreachable")
    assert body["checks"]["postgres"] == "ok"


def _manage(*args: str, env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "manage.py", *args], env=env, cwd=settings.BASE_DIR, check=True, capture_output=True
    )


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=15) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _readyz(url: str) -> tuple[int, dict]:
    return _get(f"{url}/readyz")


@pytest.mark.slow
def test_readyz_of_a_real_server_follows_its_postgres_and_migrations(private_postgres_factory):
    """A gunicorn process on a PostgreSQL of its own: unmigrated -> 503, migrated -> 200, stopped -> 503."""
    postgres = private_postgres_factory("readyz")
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": postgres.url,
        "REDIS_URL": settings.REDIS_URL,
        "DEBUG": "false",
        "ALLOWED_HOSTS": "",
        "DB_CONN_MAX_AGE": "600",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "mandate_wizard.wsgi:application", "-b", f"127.0.0.1:{port}", "-w", "1"],
        env=env,
        cwd=settings.BASE_DIR,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if _get(f"{url}/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.2)

        status, body = _readyz(url)
        assert status == 503
        assert body["failing"] == ["migrations"]
        assert "unapplied migration" in body["checks"]["migrations"]

        _manage("migrate", "--noinput", env=env)
        assert _readyz(url)[0] == 200

        postgres.stop(mode="fast")
        status, body = _readyz(url)
        assert status == 503
        assert body["failing"] == ["postgres"]
        assert body["checks"]["postgres"].startswith("PostgreSQL unreachable")
        # Liveness does not depend on the database: the web process must not be restarted for an outage.
        assert _get(f"{url}/healthz")[0] == 200

        postgres.start()
        assert _readyz(url)[0] == 200
    finally:
        server.terminate()
        server.wait(timeout=15)


def test_readiness_report_checks_migrations_only_when_postgres_answers(monkeypatch):
    monkeypatch.setattr(health, "postgres_check", lambda: "PostgreSQL unreachable: test")
    monkeypatch.setattr(health, "redis_check", lambda: None)
    assert health.readiness_report() == {
        "postgres": "PostgreSQL unreachable: test",
        "migrations": "not checked: PostgreSQL is down",
        "redis": "ok",
    }
