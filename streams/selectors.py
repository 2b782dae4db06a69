"""Reads for operators: the streams' state (length, lag, pending, consumers), dead letters, outbox, workers."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

import redis
from django.conf import settings
from django.db.models import Count, Min

from streams.events import HEARTBEAT_PREFIX, dead_letter_decode, heartbeat_decode
from streams.handlers import batch_handlers
from streams.models import OutboxEvent, ProcessedEvent
from streams.partitions import key_partition, partition_count, partition_lease_key, stream_keys
from streams.redis import redis_client

# When Redis cannot report a group's lag (entries deleted after its last delivered id), count at most this.
LAG_COUNT_CAP = 10_000


def pipeline_streams() -> tuple[str, ...]:
    """The streams the worker group consumes: those with a registered handler (streams.handlers), by name."""
    return tuple(sorted(handler.stream for handler in batch_handlers()))


def _entry_id(entry: Any) -> str | None:
    return entry[0] if entry else None


def _group_lag(client: redis.Redis, stream: str, group: dict[str, Any]) -> tuple[int, bool]:
    """(lag, exact). Redis reports lag itself unless deletions made it unknowable; then count, capped."""
    if group.get("lag") is not None:
        return int(group["lag"]), True
    after = group.get("last-delivered-id") or "0-0"
    entries = client.xrange(stream, min=f"({after}", max="+", count=LAG_COUNT_CAP)
    return len(entries), len(entries) < LAG_COUNT_CAP


def stream_info(*, stream: str, client: redis.Redis | None = None) -> dict[str, Any]:
    """One stream: length, first and last entry ids, and the worker group's consumers, pending and lag."""
    client = client or redis_client()
    group_name = settings.STREAM_CONSUMER_GROUP
    empty_group = {
        "name": group_name,
        "exists": False,
        "consumers": [],
        "pending": 0,
        "lag": 0,
        "lag_exact": True,
        "last_delivered_id": None,
    }
    try:
        raw = client.xinfo_stream(stream)
    except redis.ResponseError:
        # No such key: nothing was ever published (or Redis restarted empty).
        return {
            "name": stream,
            "exists": False,
            "length": 0,
            "first_entry_id": None,
            "last_entry_id": None,
            "group": empty_group,
        }
    info = {
        "name": stream,
        "exists": True,
        "length": int(raw["length"]),
        "first_entry_id": _entry_id(raw.get("first-entry")),
        "last_entry_id": _entry_id(raw.get("last-entry")),
        "group": empty_group,
    }
    group = next((g for g in client.xinfo_groups(stream) if g["name"] == group_name), None)
    if group is None:
        info["group"] = {**empty_group, "lag": info["length"]}
        return info
    lag, exact = _group_lag(client, stream, group)
    consumers = [
        {"name": c["name"], "pending": int(c["pending"]), "idle_ms": int(c["idle"])}
        for c in client.xinfo_consumers(stream, group_name)
    ]
    info["group"] = {
        "name": group_name,
        "exists": True,
        "consumers": sorted(consumers, key=lambda c: c["name"]),
        "pending": int(group["pending"]),
        "lag": lag,
        "lag_exact": exact,
        "last_delivered_id": group.get("last-delivered-id"),
    }
    return info


def _entry_age_seconds(entry_id: str, now_ms: int) -> float:
    """Seconds since Redis added the entry: an entry id starts with Redis's clock in ms at XADD."""
    return max(0, now_ms - int(entry_id.split("-", 1)[0])) / 1000


def _key_waiting(*, key: str, client: redis.Redis) -> tuple[int, int, str | None]:
    """(lag, pending, oldest waiting entry id) of one stream key."""
    info = stream_info(stream=key, client=client)
    group = info["group"]
    oldest_id = None
    if group["pending"]:
        oldest_id = client.xpending(key, group["name"])["min"]
    elif group["lag"] and not group["exists"]:
        oldest_id = info["first_entry_id"]
    elif group["lag"]:
        after = group["last_delivered_id"] or "0-0"
        entries = client.xrange(key, min=f"({after}", max="+", count=1)
        oldest_id = _entry_id(entries[0]) if entries else None
    return group["lag"], group["pending"], oldest_id


def stream_waiting(*, stream: str, client: redis.Redis | None = None) -> dict[str, Any]:
    """Entries of `stream` the worker group has not acknowledged yet, and the age of the oldest of them.

    Waiting = lag (not yet delivered) + pending (delivered, not yet acknowledged), over all the stream's
    partitions. The oldest is a key's first pending entry, else its first undelivered one; its age is
    measured on Redis's clock (TIME), the clock its id was taken from. Without a group (no worker has
    started) the whole stream is waiting.
    """
    client = client or redis_client()
    lag = pending = 0
    oldest_ids = []
    for key in stream_keys(stream):
        key_lag, key_pending, key_oldest = _key_waiting(key=key, client=client)
        lag, pending = lag + key_lag, pending + key_pending
        if key_oldest:
            oldest_ids.append(key_oldest)
    oldest_id = min(oldest_ids, key=lambda entry_id: int(entry_id.split("-", 1)[0])) if oldest_ids else None
    seconds, microseconds = client.time()
    now_ms = seconds * 1000 + microseconds // 1000
    return {
        "stream": stream,
        "waiting": lag + pending,
        "lag": lag,
        "pending": pending,
        "oldest_waiting_id": oldest_id,
        "oldest_waiting_age_seconds": _entry_age_seconds(oldest_id, now_ms) if oldest_id else None,
    }


def partition_leases(*, client: redis.Redis | None = None) -> list[dict[str, Any]]:
    """Each partition's lease: who holds it and for how many more milliseconds (none when P = 1)."""
    client = client or redis_client()
    partitions = range(partition_count()) if partition_count() > 1 else range(0)
    if not partitions:
        return []
    pipe = client.pipeline(transaction=False)
    for partition in partitions:
        pipe.get(partition_lease_key(partition))
        pipe.pttl(partition_lease_key(partition))
    replies = pipe.execute()
    return [
        {
            "partition": partition,
            "owner": replies[2 * index],
            "expires_in_ms": replies[2 * index + 1] if replies[2 * index] is not None else None,
        }
        for index, partition in enumerate(partitions)
    ]


def workers_live(*, client: redis.Redis | None = None) -> list[dict[str, Any]]:
    """Workers whose heartbeat key has not expired, by consumer name."""
    client = client or redis_client()
    keys = sorted(client.scan_iter(match=f"{HEARTBEAT_PREFIX}*", count=1000))
    if not keys:
        return []
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hgetall(key)
    workers = []
    for key, beat in zip(keys, pipe.execute(), strict=True):
        if not beat:  # expired between SCAN and HGETALL
            continue
        workers.append(heartbeat_decode(key, beat))
    return workers


def outbox_backlog() -> dict[str, Any]:
    """Events waiting in the PostgreSQL outbox: how many, per stream, and since when."""
    per_stream = {
        row["stream"]: row["n"] for row in OutboxEvent.objects.values("stream").annotate(n=Count("id")).order_by()
    }
    oldest = OutboxEvent.objects.aggregate(oldest=Min("created_at"))["oldest"]
    return {"backlog": sum(per_stream.values()), "by_stream": per_stream, "oldest_created_at": oldest}


def dead_letter_length(*, client: redis.Redis | None = None) -> int:
    client = client or redis_client()
    return int(client.xlen(settings.STREAM_DEAD_LETTER))


def streams_info(*, client: redis.Redis | None = None) -> dict[str, Any]:
    """Everything `GET /api/events/streams/info`, `stream_status`, the dashboard and /metrics show.

    `streams` has one item per Redis key: a partitioned stream's partitions each (`stream` names the
    logical stream, `partition` the number; None for a stream that is one key); `totals` sum them all.
    """
    client = client or redis_client()
    streams = [
        {**stream_info(stream=key, client=client), "stream": name, "partition": key_partition(key)}
        for name in pipeline_streams()
        for key in stream_keys(name)
    ]
    return {
        "streams": streams,
        "totals": {
            "length": sum(s["length"] for s in streams),
            "pending": sum(s["group"]["pending"] for s in streams),
            "lag": sum(s["group"]["lag"] for s in streams),
        },
        "dead_letter": {"name": settings.STREAM_DEAD_LETTER, "length": dead_letter_length(client=client)},
        "outbox": outbox_backlog(),
        "workers": workers_live(client=client),
        "partitions": {"count": partition_count(), "leases": partition_leases(client=client)},
    }


def dead_letter_list(*, limit: int = 100, client: redis.Redis | None = None) -> list[dict[str, Any]]:
    """The oldest `limit` dead-letter entries (replay order), each with its reason."""
    client = client or redis_client()
    return [dead_letter_decode(i, f) for i, f in client.xrange(settings.STREAM_DEAD_LETTER, count=limit)]


def inbox_counted(*, event_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
    """The ids among `event_ids` that the inbox holds: their effects are committed."""
    ids = list(event_ids)
    if not ids:
        return set()
    return set(ProcessedEvent.objects.filter(event_id__in=ids).values_list("event_id", flat=True))


def inbox_contains_sql(*, event_id: str) -> str:
    """SQL condition: the inbox holds `event_id` (a uuid SQL expression), i.e. its effects are committed.

    One primary-key probe per row: `OFFSET 0` keeps PostgreSQL from turning the EXISTS into a hash anti-join,
    which reads the whole inbox (INBOX_RETENTION_DAYS of events) to check a page of a few thousand ids.
    """
    return (
        "EXISTS (SELECT 1 FROM streams_processedevent AS inbox"  # noqa: S608 - an SQL expression, not a value
        f" WHERE inbox.event_id = {event_id} OFFSET 0)"
    )


def outbox_waiting() -> bool:
    """Whether any event waits in the outbox (Redis was unreachable and the relay has not caught up)."""
    return OutboxEvent.objects.exists()
