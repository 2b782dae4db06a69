"""Pytest plugin (loaded with `-p tests.real_servers`): real PostgreSQL and Redis for the whole suite.

It runs before pytest-django reads the settings. When DATABASE_URL / REDIS_URL are unset it starts
throwaway embedded servers (PostgreSQL 18 + pgvector, valkey) in temporary folders and points the
environment at them; when they are set, those servers are used as they are.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from mandate_wizard.devservers import EmbeddedPostgres, EmbeddedRedis, remove_tree

_started: dict[str, object] = {}


@pytest.hookimpl(wrapper=True)
def pytest_load_initial_conftests(early_config, parser, args):
    workdir = Path(tempfile.mkdtemp(prefix="mandate-wizard-tests-"))
    _started["workdir"] = workdir
    if not os.environ.get("DATABASE_URL"):
        postgres = EmbeddedPostgres(workdir / "postgres", durable=False)
        postgres.start()
        _started["postgres"] = postgres
        os.environ["DATABASE_URL"] = postgres.url
    if not os.environ.get("REDIS_URL"):
        redis_server = EmbeddedRedis(workdir / "redis")
        redis_server.start()
        _started["redis"] = redis_server
        os.environ["REDIS_URL"] = redis_server.url
    # The suite's tests keep their data in transactions a replica never receives: the reports read the
    # primary here, and tests/analytics/test_replica.py starts a primary and replica of its own.
    os.environ.pop("DATABASE_REPLICA_URL", None)
    os.environ.setdefault("STATIC_MANIFEST", "0")
    # The suite speaks plain HTTP to its test client and live servers; tests/test_deploy.py checks the redirect.
    os.environ.setdefault("SECURE_SSL_REDIRECT", "0")
    os.environ.setdefault("SECRET_KEY", "tests-only-secret-key-0123456789abcdefghijklmnop")
    return (yield)


def pytest_unconfigure(config):
    if redis_server := _started.pop("redis", None):
        redis_server.stop()
    if postgres := _started.pop("postgres", None):
        postgres.stop(mode="immediate")
    if workdir := _started.pop("workdir", None):
        remove_tree(workdir)


def suite_workdir() -> Path:
    """A folder that lives as long as the test session (servers of individual tests go below it)."""
    return _started["workdir"]
