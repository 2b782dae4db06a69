"""Stream partitions: the partition rule (the one place), the keys it gives, and the lease key names.

With settings.STREAM_PARTITIONS = P > 1 a partitioned stream (one whose events name a partition key
field, streams.events.PARTITION_KEY_FIELDS) is P keys, `{stream}:{p}` with literal braces: a cluster
hash tag, so partition p of every stream and the lease of p hash to one slot and the partitions spread
over the slots. p = crc32(the event's partition key, UTF-8) mod P, the key being the field's value as a
canonical lowercase UUID when it is a UUID. With P = 1 every stream is the one key it always was.
The transport knows no entity: the event's definition says which field is its partition key.
"""

from __future__ import annotations

import re
import uuid
import zlib
from collections.abc import Mapping

from django.conf import settings

from streams.events import PARTITION_KEY_FIELDS

_PARTITION_KEY = re.compile(r"^(?P<stream>.+):\{(?P<partition>\d+)\}$")


def partition_of(key: str, partitions: int) -> int:
    """The partition of a partition key: crc32 of its UTF-8 bytes, mod `partitions`. THE rule."""
    return zlib.crc32(key.encode("utf-8")) % partitions


def partition_key_text(value: object) -> str:
    """A partition key field as hashed: a UUID in its canonical lowercase form, anything else as given."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return str(value)


def partition_count() -> int:
    return settings.STREAM_PARTITIONS


def stream_partition_field(stream: str) -> str | None:
    """The field that partitions `stream` (a logical stream name), or None when it is one key."""
    if settings.STREAM_PARTITIONS == 1:
        return None
    for setting, field in PARTITION_KEY_FIELDS.items():
        if getattr(settings, setting) == stream:
            return field
    return None


def stream_partitioned(stream: str) -> bool:
    return stream_partition_field(stream) is not None


def partition_stream_key(stream: str, partition: int) -> str:
    """The key of partition `partition` of the logical stream `stream`."""
    return f"{stream}:{{{partition}}}"


def stream_keys(stream: str) -> list[str]:
    """The Redis keys of a logical stream: its partitions in order, or the stream itself."""
    if not stream_partitioned(stream):
        return [stream]
    return [partition_stream_key(stream, partition) for partition in range(settings.STREAM_PARTITIONS)]


def stream_logical(key: str) -> str:
    """The logical stream of a key: `x:{3}` is partition 3 of `x`; any other key is its own stream."""
    match = _PARTITION_KEY.match(key)
    return match["stream"] if match else key


def key_partition(key: str) -> int | None:
    """The partition number of a partition key, None for an unpartitioned key."""
    match = _PARTITION_KEY.match(key)
    return int(match["partition"]) if match else None


def stream_key_route(stream: str, fields: Mapping[str, str]) -> str:
    """The key an entry of `stream` (logical, or a partition key from an older layout) is added to.

    Publishers, the outbox relay and dead-letter replays all route through here, so an entry lands on
    the partition of today's setting whatever key it was first written to.
    """
    stream = stream_logical(stream)
    field = stream_partition_field(stream)
    if field is None:
        return stream
    key = partition_key_text(fields.get(field, ""))
    return partition_stream_key(stream, partition_of(key, settings.STREAM_PARTITIONS))


def partition_lease_key(partition: int) -> str:
    """Who owns partition `partition` (of every partitioned stream): `SET NX PX` by the owner."""
    return f"{settings.STREAM_KEY_PREFIX}:partition_lease:{{{partition}}}"


def partition_members_key() -> str:
    """The workers that share the partitions out (a sorted set: consumer -> last beat, Redis's clock)."""
    return f"{settings.STREAM_KEY_PREFIX}:partition_workers"
