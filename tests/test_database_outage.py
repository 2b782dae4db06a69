"""PostgreSQL stopped under a real gunicorn (--workers 2) mid-load: 503 JSON + Retry-After, never 500, then 200s."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
import requests
from django.db import InterfaceError, OperationalError, ProgrammingError

from mandate_wizard.devservers import free_port
from mandate_wizard.errors import handler500

ROOT = Path(__file__).resolve().parent.parent
MANAGE = ROOT / "manage.py"
GUNICORN = Path(sys.executable).parent / "gunicorn"
EMAIL, PASSWORD = "outage@example.com", "outage-password-1"
CLIENTS = 3


def port_wait(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


@pytest.fixture
def web(private_postgres_factory, tmp_path):
    """A migrated private PostgreSQL, one user and gunicorn serving the app against it."""
    server = private_postgres_factory("pg-web-outage")
    env = {
        **os.environ,
        "DATABASE_URL": server.url,
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1",
        "THROTTLE_LOGIN_IP": "100000/min",
        "THROTTLE_LOGIN_EMAIL": "100000/min",
        "THROTTLE_ANSWER_USER": "100000/min",
    }
    subprocess.run([sys.executable, str(MANAGE), "migrate", "--noinput", "-v0"], env=env, check=True, timeout=180)
    create = (
        "from django.contrib.auth import get_user_model; "
        f"get_user_model().objects.create_user(username='outage', email='{EMAIL}', password='{PASSWORD}')"
    )
    subprocess.run([sys.executable, str(MANAGE), "shell", "-c", create], env=env, check=True, timeout=120)
    port = free_port()
    log = (tmp_path / "gunicorn.log").open("w")
    process = subprocess.Popen(
        [str(GUNICORN), "mandate_wizard.wsgi:application", "--bind", f"127.0.0.1:{port}", "--workers", "2"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        port_wait(port)
        yield server, f"http://127.0.0.1:{port}", process
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        log.close()


def client_loop(base: str, stop: threading.Event, seen: list) -> None:
    """Log in and ask questions until `stop`; record (phase, status, retry_after, body) of every answer."""
    session = requests.Session()
    token = None
    while not stop.is_set():
        if token is None:
            response = session.post(f"{base}/auth/login", json={"email": EMAIL, "password": PASSWORD}, timeout=10)
            if response.status_code == 200:
                token = response.json()["access"]
        else:
            response = session.post(
                f"{base}/api/answer",
                json={"question": "Who is Chris Mansolillo?"},
                headers={"Authorization": f"Bearer {token}"},
                timeout=10,
            )
        seen.append((response.status_code, response.headers.get("Retry-After"), response.text))


def load_run(base: str, during) -> list:
    stop = threading.Event()
    seen: list = []
    threads = [threading.Thread(target=client_loop, args=(base, stop, seen)) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    try:
        during(seen)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    return seen


def until(predicate, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def outage_check(seen: list) -> None:
    statuses = {status for status, _, _ in seen}
    assert statuses <= {200, 503}, [entry for entry in seen if entry[0] not in (200, 503)][:3]
    for status, retry_after, text in seen:
        if status == 503:
            assert retry_after is not None and int(retry_after) > 0
            assert "error" in requests.models.complexjson.loads(text)
            assert "Traceback" not in text and "SELECT" not in text


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgres_stopped_under_gunicorn_gives_503_then_recovers(web, mode):
    server, base, process = web

    def during(seen: list) -> None:
        until(lambda: sum(1 for s, _, _ in seen if s == 200) >= 10)  # answers flow before the stop
        server.stop(mode=mode)
        start = len(seen)
        until(lambda: sum(1 for s, _, _ in seen[start:] if s == 503) >= 10)
        session_cookie = {"sessionid": "a" * 32}  # the session lookup in middleware needs PostgreSQL
        admin = requests.get(f"{base}/admin/", cookies=session_cookie, timeout=10)  # a plain HTML 503
        assert admin.status_code == 503 and admin.headers["Content-Type"].startswith("text/html")
        assert int(admin.headers["Retry-After"]) > 0
        ready = requests.get(f"{base}/readyz", timeout=10)
        assert ready.status_code == 503 and "postgres" in ready.text.lower()
        server.start()
        restarted = len(seen)
        until(lambda: sum(1 for s, _, _ in seen[restarted:] if s == 200) >= 10, timeout=30)

    seen = load_run(base, during)
    outage_check(seen)
    assert process.poll() is None  # recovered without restarting gunicorn
    assert requests.get(f"{base}/readyz", timeout=10).status_code == 200
    assert requests.get(f"{base}/admin/login/", timeout=10).status_code == 200


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (OperationalError("the database system is shutting down"), 503),
        (InterfaceError("connection already closed"), 503),
        (redis.ConnectionError("Connection refused"), 503),
        (ProgrammingError('relation "x" does not exist'), 500),
        (ZeroDivisionError("bug"), 500),
    ],
)
def test_handler500_classifies_unreachable_dependencies_and_bugs(rf, settings, error, status):
    settings.SERVICE_RETRY_AFTER_SECONDS = 7
    try:
        raise error
    except Exception:  # handler500 runs inside Django's except block and reads sys.exc_info()
        response = handler500(rf.get("/api/answer"))
    assert response.status_code == status
    assert json.loads(response.content)["error"] in (
        "Internal server error.",
        "PostgreSQL is unreachable; try again shortly.",
        "Redis is unreachable; try again shortly.",
    )
    assert response.get("Retry-After") == ("7" if status == 503 else None)
