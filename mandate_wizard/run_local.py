"""`make run`: the whole system on one machine — services, migrations, demo data, web server and worker.

Uses DATABASE_URL / REDIS_URL when set; otherwise starts embedded PostgreSQL and Redis that keep
their data in `.data/` (git-ignored). `--replica` also starts a streaming replica of the embedded
PostgreSQL, copied afresh into `.data/replica` each time, and points DATABASE_REPLICA_URL at it.
With REDIS_CLUSTER=true and no REDIS_URL the Redis is an embedded
cluster of three primaries, created anew each run: its nodes remember each other's ports, which are
chosen when it starts (PostgreSQL keeps the data; the answers' reconciliation re-sends what Redis lost).
Ctrl-C stops every process it started, servers included.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from environ import Env

from mandate_wizard.devservers import EmbeddedPostgres, EmbeddedRedis, EmbeddedRedisCluster, free_port, remove_tree

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = BASE_DIR / ".data"


def _manage(*args: str, env: dict[str, str]) -> None:
    subprocess.run([sys.executable, str(BASE_DIR / "manage.py"), *args], check=True, env=env, cwd=BASE_DIR)


def _spawn(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(BASE_DIR / "manage.py"), *args], env=env, cwd=BASE_DIR)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replica", action="store_true", help="Serve the analytics reports from a replica.")
    replica_wanted = parser.parse_args(argv).replica
    env = dict(os.environ)
    env.setdefault("DEBUG", "1")
    if replica_wanted and env.get("DATABASE_URL"):
        parser.error("--replica copies the embedded PostgreSQL; with DATABASE_URL set, set DATABASE_REPLICA_URL.")
    postgres = redis_server = replica = None
    children: list[subprocess.Popen] = []
    stopping = False

    def request_stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        if not env.get("DATABASE_URL"):
            postgres = EmbeddedPostgres(DATA_DIR / "postgres")
            postgres.start()
            env["DATABASE_URL"] = postgres.url
        cluster = env.get("REDIS_CLUSTER", "").strip().lower() in Env.BOOLEAN_TRUE_STRINGS
        if not env.get("REDIS_URL") and cluster:
            remove_tree(DATA_DIR / "redis-cluster")
            redis_server = EmbeddedRedisCluster(DATA_DIR / "redis-cluster")
            redis_server.start()
            env["REDIS_URL"] = redis_server.url
        elif not env.get("REDIS_URL"):
            redis_server = EmbeddedRedis(DATA_DIR / "redis", persistent=True)
            redis_server.start()
            env["REDIS_URL"] = redis_server.url
        kind = " (cluster: any node)" if cluster else ""
        print(f"PostgreSQL: {env['DATABASE_URL']}\nRedis:      {env['REDIS_URL']}{kind}", flush=True)

        _manage("migrate", "--noinput", env=env)
        _manage("seed_demo", "--if-empty", env=env)
        email = env.setdefault("DEMO_USER_EMAIL", "demo@mandatewizard.local")
        env.setdefault("DEMO_USER_PASSWORD", "demo-wizard-password")
        _manage("create_user", email, "--superuser", "--password-env", "DEMO_USER_PASSWORD", env=env)
        if replica_wanted:
            # A fresh copy each run: a replica left behind may need WAL the primary has since recycled.
            remove_tree(DATA_DIR / "replica")
            replica = postgres.replica_create(DATA_DIR / "replica")
            replica.start()
            env["DATABASE_REPLICA_URL"] = replica.url
            print(f"Replica:    {replica.url} (the analytics reports read it)", flush=True)

        port = int(env.get("PORT") or 8000)
        if port == 0:
            port = free_port()
        children.append(_spawn("runserver", f"127.0.0.1:{port}", "--noreload", env=env))
        children.append(_spawn("run_stream_worker", env=env))
        base = f"http://127.0.0.1:{port}"
        print(
            f"\nMandate Wizard is running.\n"
            f"  API root: {base}/api/\n  Admin:    {base}/admin/\n  API docs: {base}/api/docs/\n"
            f"  Superuser login: {email} / {env['DEMO_USER_PASSWORD']}\n"
            "Press Ctrl-C to stop everything.\n",
            flush=True,
        )
        while not stopping:
            if any(child.poll() is not None for child in children):
                print("A process exited; stopping the rest.", file=sys.stderr)
                break
            time.sleep(0.5)
        return 0
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
        if replica:
            replica.stop()
        if redis_server:
            redis_server.stop()
        if postgres:
            postgres.stop()
        print("Stopped.", flush=True)


if __name__ == "__main__":
    sys.exit(main())
