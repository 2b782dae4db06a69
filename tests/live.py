"""The app as deployed, for failure tests: gunicorn (--workers 2) and a stream worker, each a real process
against a private PostgreSQL, with clients asking questions through HTTP and an audit of what was counted."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import requests

from mandate_wizard.devservers import free_port

ROOT = Path(__file__).resolve().parent.parent
MANAGE = ROOT / "manage.py"
GUNICORN = Path(sys.executable).parent / "gunicorn"
EMAIL, PASSWORD = "live@example.com", "live-password-1"
CLIENTS = 3
# Questions about the test catalogue's entities (subjects and related ones), and one about nothing.
QUESTIONS = [
    "Who is Chris Mansolillo?",
    "Tell me about Silver Harbor Studios",
    "who is dana okafor",
    "What is the airspeed velocity of an unladen swallow?",
]


def port_wait(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


def until(predicate: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


@dataclass
class Live:
    base: str
    web: subprocess.Popen
    worker: subprocess.Popen
    env: dict


@contextlib.contextmanager
def live_stack(*, database_url: str, redis_url: str, workdir: Path, **env_extra: str) -> Iterator[Live]:
    """Migrate the database, load the test catalogue and one user, then run gunicorn and a stream worker.

    Both get their own stream keys on `redis_url`, and ANSWER_RECONCILE_AFTER_SECONDS=2 unless given: answers
    whose signals are not counted yet are re-sent soon, and the inbox must still count each once.
    """
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "STREAM_KEY_PREFIX": f"live-{uuid.uuid4().hex[:8]}",
        "ANSWER_RECONCILE_AFTER_SECONDS": "2",
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1",
        "THROTTLE_LOGIN_IP": "100000/min",
        "THROTTLE_LOGIN_EMAIL": "100000/min",
        "THROTTLE_ANSWER_USER": "100000/min",
        **env_extra,
    }
    subprocess.run([sys.executable, str(MANAGE), "migrate", "--noinput", "-v0"], env=env, check=True, timeout=180)
    setup = (
        "from django.contrib.auth import get_user_model; "
        f"get_user_model().objects.create_user(username='live', email='{EMAIL}', password='{PASSWORD}'); "
        "from tests.entities.catalog import catalog_create; catalog_create()"
    )
    subprocess.run([sys.executable, str(MANAGE), "shell", "-c", setup], env=env, cwd=ROOT, check=True, timeout=120)
    port = free_port()
    logs = [(workdir / "gunicorn.log").open("w"), (workdir / "worker.log").open("w")]
    web = subprocess.Popen(
        [str(GUNICORN), "mandate_wizard.wsgi:application", "--bind", f"127.0.0.1:{port}", "--workers", "2"],
        cwd=ROOT,
        env=env,
        stdout=logs[0],
        stderr=subprocess.STDOUT,
    )
    worker = subprocess.Popen(
        [sys.executable, str(MANAGE), "run_stream_worker", "--consumer", "live-worker", "--block-ms", "100"],
        cwd=ROOT,
        env=env,
        stdout=logs[1],
        stderr=subprocess.STDOUT,
    )
    try:
        port_wait(port)
        yield Live(base=f"http://127.0.0.1:{port}", web=web, worker=worker, env=env)
    finally:
        for child in (web, worker):
            child.send_signal(signal.SIGCONT)  # a test may have paused it
            child.send_signal(signal.SIGTERM)
        for child in (web, worker):
            child.wait(timeout=30)
        for log in logs:
            log.close()


def client_loop(base: str, stop: threading.Event, seen: list, answered: list) -> None:
    """Log in and ask questions until `stop`; record (status, retry_after, body) of every response in
    `seen`, and (sent, received, status, returned entity ids) of every answer in `answered`."""
    session = requests.Session()
    token = None
    asked = 0
    while not stop.is_set():
        if token is None:
            response = session.post(f"{base}/auth/login", json={"email": EMAIL, "password": PASSWORD}, timeout=10)
            if response.status_code == 200:
                token = response.json()["access"]
        else:
            sent = time.monotonic()
            response = session.post(
                f"{base}/api/answer",
                json={"question": QUESTIONS[asked % len(QUESTIONS)]},
                headers={"Authorization": f"Bearer {token}"},
                timeout=10,
            )
            asked += 1
            ids = [item["id"] for item in response.json()["entities"]] if response.status_code == 200 else []
            answered.append((sent, time.monotonic(), response.status_code, ids))
        seen.append((response.status_code, response.headers.get("Retry-After"), response.text))


def load_run(base: str, during: Callable[[list, list], None]) -> tuple[list, list]:
    """Run CLIENTS client loops while `during(seen, answered)` acts; return (seen, answered) of client_loop."""
    stop = threading.Event()
    seen: list = []
    answered: list = []
    threads = [threading.Thread(target=client_loop, args=(base, stop, seen, answered)) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    try:
        during(seen, answered)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    return seen, answered


def counted(url: str) -> dict:
    """What the database holds: answer records, their entities, counters, buckets and inbox ids."""
    with psycopg.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*), coalesce(sum(result_count), 0) FROM entities_answerrecord")
        records, returned = cursor.fetchone()
        cursor.execute("SELECT e->>'id' FROM entities_answerrecord, jsonb_array_elements(entities) AS e")
        recorded = Counter(entity_id for (entity_id,) in cursor.fetchall())
        cursor.execute("SELECT entity_id::text, query_count FROM entities_entitydemand WHERE query_count > 0")
        counters = dict(cursor.fetchall())
        cursor.execute("SELECT entity_id::text, sum(returned)::int FROM analytics_demandbucket GROUP BY 1")
        buckets = dict(cursor.fetchall())
        cursor.execute("SELECT count(*) FROM streams_processedevent")
        (inbox,) = cursor.fetchone()
    return {
        "records": records,
        "returned": returned,
        "recorded": dict(recorded),
        "counters": counters,
        "buckets": buckets,
        "inbox": inbox,
    }


def counted_expected(answered: list) -> dict:
    """What `counted` must show for these answers: one record per 200, each returned entity counted once."""
    returned = Counter(entity_id for _, _, status, ids in answered if status == 200 for entity_id in ids)
    assert returned, "no answer returned an entity"
    total = sum(returned.values())
    return {
        "records": sum(1 for _, _, status, _ in answered if status == 200),
        "returned": total,
        "recorded": dict(returned),
        "counters": dict(returned),
        "buckets": dict(returned),
        "inbox": total,
    }


def counted_wait(url: str, expected: dict, timeout: float) -> dict:
    """Poll `counted` until it equals `expected` or `timeout` seconds passed; return the last state."""
    deadline = time.monotonic() + timeout
    while (state := counted(url)) != expected and time.monotonic() < deadline:
        time.sleep(0.5)
    return state


def counted_settled(url: str, timeout: float) -> dict:
    """Poll `counted` until every recorded answer's entities are counted exactly once (counters, buckets and
    inbox ids equal the records), or `timeout` seconds passed; return the last state."""
    deadline = time.monotonic() + timeout
    while True:
        state = counted(url)
        exact = state["counters"] == state["buckets"] == state["recorded"] and state["inbox"] == state["returned"]
        if exact or time.monotonic() > deadline:
            return state
        time.sleep(0.5)
