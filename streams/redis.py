"""The one way to get a Redis client: from settings.REDIS_URL, with string responses."""

from __future__ import annotations

import functools

import redis
from django.conf import settings


@functools.cache
def _client(url: str, timeout: float | None) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
    )


def redis_client(*, timeout: float | None = None) -> redis.Redis:
    """A pooled client for settings.REDIS_URL; `timeout` (seconds) bounds connect and each command."""
    return _client(settings.REDIS_URL, timeout)
