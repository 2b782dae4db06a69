"""The one way to get a Redis client: from settings.REDIS_URL, with string responses.

With settings.REDIS_CLUSTER the client is redis-py's `RedisCluster` on that URL (any node): it learns
the slot map from the node and sends each command to the primary of its key's slot. A command naming
several keys must then keep them in one slot; `keys_by_slot` splits such a command's keys.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

import redis
from django.conf import settings
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.crc import key_slot
from redis.exceptions import RedisClusterException
from redis.retry import Retry

# What a client raises when Redis cannot serve a command. redis-py's cluster client raises
# RedisClusterException, which is no RedisError, when no node of the cluster answers (it rebuilds its slot
# map after a connection error and finds nobody) or no node serves a key's slot; every place that treats
# an unreachable Redis as transient catches this tuple.
REDIS_ERRORS = (redis.RedisError, RedisClusterException)


@functools.cache
def _client(url: str, timeout: float | None, retry: bool, cluster: bool) -> redis.Redis | RedisCluster:
    options = {} if retry else {"retry": Retry(NoBackoff(), 0)}
    if not cluster:
        return redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            health_check_interval=30,
            **options,
        )
    try:
        return RedisCluster.from_url(
            url,
            decode_responses=True,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            health_check_interval=30,
            **options,
        )
    except RedisClusterException as error:
        # The cluster client reads the slot map when it is built; no reachable node is an outage like
        # any other (callers classify redis.ConnectionError as transient), and the next call tries again.
        raise redis.ConnectionError(f"Redis Cluster unreachable at {url}: {error}") from error


def redis_client(*, timeout: float | None = None, retry: bool = True) -> redis.Redis | RedisCluster:
    """A pooled client for settings.REDIS_URL; `timeout` (seconds) bounds connect and each command.

    `retry=False` gives up at the first connection error or timeout (redis-py retries 3 times by
    default), for callers that have a fallback and a time budget, such as the publisher.
    """
    return _client(settings.REDIS_URL, timeout, retry, settings.REDIS_CLUSTER)


def keys_by_slot(keys: Iterable[str]) -> list[list[str]]:
    """`keys` in groups one multi-key command may name together: all of them on one Redis, one group
    per hash slot on a cluster (in the order the slots first appear)."""
    keys = list(keys)
    if not settings.REDIS_CLUSTER:
        return [keys] if keys else []
    groups: dict[int, list[str]] = {}
    for key in keys:
        groups.setdefault(key_slot(key.encode()), []).append(key)
    return list(groups.values())


def key_in_slot_of(key: str, name: str) -> str:
    """`key:name`, in `key`'s cluster slot, so that one MULTI or script may use both keys.

    A key with a hash tag (`{...}`) hashes by the tag, which `key:name` keeps; any other key hashes as a
    whole, so the whole key is appended as the tag (`key:name:{key}`), and the name still starts with
    `key` (a SCAN for the prefix finds it).
    """
    start = key.find("{")
    if start != -1 and key.find("}", start + 1) > start + 1:
        return f"{key}:{name}"
    if start != -1:
        # A brace that is no tag would come first in `key:name:{key}` too and spoil the tag.
        raise ValueError(f"cannot name a key in the slot of {key!r}: it has a '{{' but no hash tag")
    return f"{key}:{name}:{{{key}}}"


def script_calls(
    client: redis.Redis | RedisCluster, script: Script, calls: Sequence[tuple[Sequence[str], Sequence[Any]]]
) -> list[Any]:
    """Run `script` once per (keys, args) and return the replies: in one pipeline on one Redis (which
    loads the script first), one call each on a cluster, where redis-py refuses EVALSHA in a pipeline
    (each call loads the script on its node when a restart made the node forget it)."""
    if isinstance(client, RedisCluster):
        return [script(keys=keys, args=args) for keys, args in calls]
    pipe = client.pipeline(transaction=False)
    for keys, args in calls:
        script(keys=keys, args=args, client=pipe)
    return pipe.execute()
