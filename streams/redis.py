"""The one way to get a Redis client: from settings.REDIS_URL, with string responses."""

from __future__ import annotations

import functools

import redis
from django.conf import settings
from redis.backoff import NoBackoff
from redis.retry import Retry


@functools.cache
def _client(url: str, timeout: float | None, retry: bool) -> redis.Redis:
    options = {} if retry else {"retry": Retry(NoBackoff(), 0)}
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
        **options,
    )


def redis_client(*, timeout: float | None = None, retry: bool = True) -> redis.Redis:
    """A pooled client for settings.REDIS_URL; `timeout` (seconds) bounds connect and each command.

    `retry=False` gives up at the first connection error or timeout (redis-py retries 3 times by
    default), for callers that have a fallback and a time budget, such as the publisher.
    """
    return _client(settings.REDIS_URL, timeout, retry)
