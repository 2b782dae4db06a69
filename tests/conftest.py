"""Fixtures shared by the whole suite: users, API clients and private real servers for failure tests."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import redis
from django.conf import settings
from rest_framework.test import APIClient

from mandate_wizard.devservers import EmbeddedPostgres, EmbeddedRedis, EmbeddedRedisCluster
from streams.worker import StreamWorker
from tests.entities.factories import UserFactory
from tests.real_servers import suite_workdir


@pytest.fixture
def user(db):
    return UserFactory()


@pytest.fixture
def staff_user(db):
    return UserFactory(is_staff=True)


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def user_client(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def staff_client(staff_user) -> APIClient:
    client = APIClient()
    client.force_authenticate(staff_user)
    return client


@pytest.fixture
def redis_client() -> redis.Redis:
    """The suite's Redis, emptied before and after the test."""
    client = redis.Redis.from_url(settings.REDIS_URL, decode_responses=True)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def private_redis(settings) -> EmbeddedRedis:
    """A Redis server of this test's own, so the test can stop or kill it; settings point at it."""
    server = EmbeddedRedis(suite_workdir() / f"redis-{uuid.uuid4().hex[:8]}")
    server.start()
    settings.REDIS_URL = server.url
    yield server
    server.kill()


@pytest.fixture
def private_postgres_factory():
    """Start PostgreSQL servers of the test's own (migrated with `manage.py migrate` by the caller)."""
    servers: list[EmbeddedPostgres] = []

    def start(name: str = "pg", *, durable: bool = False) -> EmbeddedPostgres:
        # durable: fsync and synchronous commits on, as in production, for tests that crash it and count after.
        server = EmbeddedPostgres(Path(suite_workdir()) / f"{name}-{uuid.uuid4().hex[:8]}", durable=durable)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(mode="immediate")


@pytest.fixture
def worker(redis_client) -> StreamWorker:
    """A stream worker of the suite's Redis, its group created; it claims nothing (idle 1 h)."""
    worker = StreamWorker(consumer="ops-worker", block_ms=50, claim_idle_ms=3_600_000)
    worker.groups_ensure()
    return worker


@pytest.fixture(scope="session")
def redis_cluster() -> EmbeddedRedisCluster:
    """A Redis Cluster of three primaries for the session, started by the first test that asks for it."""
    cluster = EmbeddedRedisCluster(suite_workdir() / "redis-cluster")
    cluster.start()
    yield cluster
    cluster.stop()
