"""The events of the pipeline: typed definitions, their validation and their wire encoding — the one place.

On the wire every event is a flat map of string fields, so any client (redis-cli, another language)
can produce it. See docs/events.md for the format.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings

SCHEMA_VERSION = 1
# Clocks drift; a timestamp further ahead than this is a bug in the producer, not drift.
MAX_FUTURE_SKEW = timedelta(minutes=5)
MAX_ENTITY_IDS = 1000
OPERATIONS = ("refresh", "reindex")
# entities.RefreshRequest.source has this length, so a valid request always fits.
SOURCE_MAX_LENGTH = 200
# The entity types a QuerySignal may name. The transport does not know them: the entity store registers
# them (entities.apps.EntitiesConfig.ready through entity_types_register) before any entry is read.
_entity_types: frozenset[str] = frozenset()

# Key names and the fields the pipeline adds to Redis, each spelled here only.
HEARTBEAT_PREFIX = f"{settings.STREAM_KEY_PREFIX}:workers:"
# Each partitioned stream's partition key field (by the setting that names the stream): QuerySignals of
# one entity land on one partition, so its demand rows are only ever locked by that partition's owner.
# streams.partitions applies the rule; UpdateRequests name up to 1000 entities and stay one key.
PARTITION_KEY_FIELDS = {"STREAM_QUERY_SIGNALS": "entity_id"}
# Fields added to an entry when it moves to the dead-letter stream; the rest are the original entry's.
DEAD_LETTER_META_FIELDS = ("dead_reason", "source_stream", "source_id", "dead_at", "deliveries")
# What the entity was to the answer: what the question was about, or named by that entity's record.
ROLE_SUBJECT, ROLE_RELATED = "subject", "related"
ROLES = (ROLE_SUBJECT, ROLE_RELATED)
MAX_RANK = 1000


def entity_types_register(values: Iterable[str]) -> None:
    """Set the entity types QuerySignals may name (the owner of the types calls it once, at startup)."""
    global _entity_types
    _entity_types = frozenset(values)


class InvalidEvent(ValueError):
    """An entry that can never be processed; `reason` says why in words a person can act on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _utc_now() -> datetime:
    return datetime.now(UTC)


def timestamp_encode(value: datetime) -> str:
    """ISO 8601 in UTC with a `Z`, e.g. `2026-11-30T00:05:06.123456Z`: the one timestamp text of the project."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def heartbeat_key(consumer: str) -> str:
    return f"{HEARTBEAT_PREFIX}{consumer}"


def heartbeat_fields(
    *,
    consumer: str,
    started_at: datetime,
    events_processed: int,
    last_batch_at: datetime | None,
    pid: int,
    host: str,
    partitions: Iterable[int] = (),
) -> dict[str, str | int]:
    """A worker's heartbeat hash, as the worker writes it (`partitions`: those it holds the lease of)."""
    return {
        "consumer": consumer,
        "started_at": timestamp_encode(started_at),
        "events_processed": events_processed,
        "last_batch_at": timestamp_encode(last_batch_at) if last_batch_at else "",
        "pid": pid,
        "host": host,
        "partitions": ",".join(str(partition) for partition in sorted(partitions)),
    }


def heartbeat_decode(key: str, beat: Mapping[str, str]) -> dict[str, Any]:
    """A heartbeat hash as read back (`key` names the consumer when the hash does not)."""
    return {
        "consumer": beat.get("consumer") or key.rsplit(":", 1)[-1],
        "started_at": beat.get("started_at"),
        "events_processed": int(beat.get("events_processed") or 0),
        "last_batch_at": beat.get("last_batch_at") or None,
        "pid": beat.get("pid"),
        "host": beat.get("host"),
        "partitions": [int(p) for p in (beat.get("partitions") or "").split(",") if p.isdigit()],
    }


def dead_letter_fields(
    *, fields: Mapping[str, str], reason: str, stream: str, entry_id: str, deliveries: int, dead_at: datetime
) -> dict[str, str]:
    """The dead-letter stream entry of an entry that can never be processed: its fields plus why and whence."""
    dead = dict(fields)
    dead.update(
        dead_reason=reason,
        source_stream=stream,
        source_id=entry_id,
        dead_at=timestamp_encode(dead_at),
        deliveries=str(deliveries),
    )
    return dead


def dead_letter_decode(entry_id: str, fields: Mapping[str, str]) -> dict[str, Any]:
    """A dead-letter stream entry split into its reason, provenance and the original fields."""
    original = {k: v for k, v in fields.items() if k not in DEAD_LETTER_META_FIELDS}
    return {
        "id": entry_id,
        "reason": fields.get("dead_reason", ""),
        "source_stream": fields.get("source_stream", ""),
        "source_id": fields.get("source_id", ""),
        "dead_at": fields.get("dead_at", ""),
        "deliveries": fields.get("deliveries", ""),
        "event_id": original.get("event_id", ""),
        "fields": original,
    }


@dataclass(frozen=True, slots=True)
class QuerySignal:
    """One answer named one entity: the unit of demand.

    `role` says whether the question was about the entity (`subject`) or the entity was named by a
    subject's record (`related`); `rank` is its 1-based place in the answer. Without them on the wire
    (older producers) a signal is a subject at rank 1.
    """

    event_id: uuid.UUID
    entity_id: uuid.UUID
    entity_type: str
    query: str
    user_id: str
    timestamp: datetime
    role: str = ROLE_SUBJECT
    rank: int = 1

    @classmethod
    def new(
        cls,
        *,
        entity_id: uuid.UUID,
        entity_type: str,
        query: str,
        user_id: str = "",
        timestamp: datetime | None = None,
        role: str = ROLE_SUBJECT,
        rank: int = 1,
    ) -> QuerySignal:
        return cls(
            event_id=uuid.uuid4(),
            entity_id=entity_id,
            entity_type=str(entity_type),
            query=query,
            user_id=str(user_id),
            timestamp=timestamp or _utc_now(),
            role=role,
            rank=rank,
        )

    def to_fields(self) -> dict[str, str]:
        return {
            "v": str(SCHEMA_VERSION),
            "event_id": str(self.event_id),
            "entity_id": str(self.entity_id),
            "entity_type": self.entity_type,
            "query": self.query,
            "user_id": self.user_id,
            "timestamp": timestamp_encode(self.timestamp),
            "role": self.role,
            "rank": str(self.rank),
        }


@dataclass(frozen=True, slots=True)
class UpdateRequest:
    """A request to refresh (record for the data team) or reindex (recompute search data) entities."""

    event_id: uuid.UUID
    entity_ids: tuple[uuid.UUID, ...]
    operation: str
    source: str
    timestamp: datetime = field(default_factory=_utc_now)

    @classmethod
    def new(
        cls, *, entity_ids: tuple[uuid.UUID, ...] | list[uuid.UUID], operation: str, source: str = ""
    ) -> UpdateRequest:
        return cls(
            event_id=uuid.uuid4(),
            entity_ids=tuple(entity_ids),
            operation=operation,
            source=source,
            timestamp=_utc_now(),
        )

    def to_fields(self) -> dict[str, str]:
        return {
            "v": str(SCHEMA_VERSION),
            "event_id": str(self.event_id),
            "entity_ids": json.dumps([str(entity_id) for entity_id in self.entity_ids]),
            "operation": self.operation,
            "source": self.source,
            "timestamp": timestamp_encode(self.timestamp),
        }


def _required(fields: dict, name: str) -> str:
    value = fields.get(name)
    if value is None:
        raise InvalidEvent(f"missing field '{name}'")
    return value


def _uuid(value: object, name: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)  # type: ignore[arg-type]
    except (ValueError, TypeError, AttributeError):
        raise InvalidEvent(f"'{name}' is not a UUID: {str(value)[:80]!r}") from None


def _timestamp(value: str, now: datetime) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidEvent(f"'timestamp' is not ISO 8601: {value[:80]!r}") from None
    if parsed.tzinfo is None:
        raise InvalidEvent(f"'timestamp' has no 'Z' or UTC offset: {value[:80]!r}")
    try:
        parsed.astimezone(UTC)
    except OverflowError:
        raise InvalidEvent(f"'timestamp' is out of range: {value[:80]!r}") from None
    if parsed - now > MAX_FUTURE_SKEW:
        raise InvalidEvent(f"'timestamp' is more than 5 minutes in the future: {value}")
    return parsed


def _role(fields: dict) -> str:
    role = fields.get("role", ROLE_SUBJECT)
    if role not in ROLES:
        raise InvalidEvent(f"unknown role {str(role)[:40]!r} (known: {', '.join(ROLES)})")
    return role


def _rank(fields: dict) -> int:
    raw = fields.get("rank", "1")
    # Digits only: int() would also take " 3", "+3" and "3_0".
    if not isinstance(raw, str) or not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_RANK:
        raise InvalidEvent(f"'rank' must be an integer from 1 to {MAX_RANK}: {str(raw)[:40]!r}")
    return int(raw)


def _version(fields: dict) -> None:
    version = fields.get("v", str(SCHEMA_VERSION))
    if version != str(SCHEMA_VERSION):
        raise InvalidEvent(f"unsupported schema version 'v'={version[:20]!r} (this worker reads {SCHEMA_VERSION})")


def query_signal_parse(fields: dict, *, now: datetime | None = None) -> QuerySignal:
    """Validate and decode a QuerySignal entry; raise InvalidEvent."""
    _version(fields)
    now = now or _utc_now()
    event_id = _uuid(_required(fields, "event_id"), "event_id")
    entity_id = _uuid(_required(fields, "entity_id"), "entity_id")
    entity_type = _required(fields, "entity_type")
    if entity_type not in _entity_types:
        raise InvalidEvent(f"unknown entity_type {entity_type[:40]!r}")
    query = _required(fields, "query")
    user_id = _required(fields, "user_id")
    timestamp = _timestamp(_required(fields, "timestamp"), now)
    return QuerySignal(event_id, entity_id, entity_type, query, user_id, timestamp, _role(fields), _rank(fields))


def update_request_parse(fields: dict, *, now: datetime | None = None) -> UpdateRequest:
    """Validate and decode an UpdateRequest entry; raise InvalidEvent."""
    _version(fields)
    now = now or _utc_now()
    event_id = _uuid(_required(fields, "event_id"), "event_id")
    raw_ids = _required(fields, "entity_ids")
    try:
        decoded = json.loads(raw_ids)
    except ValueError:
        raise InvalidEvent(f"'entity_ids' is not a JSON array: {raw_ids[:80]!r}") from None
    if not isinstance(decoded, list) or not decoded:
        raise InvalidEvent("'entity_ids' must be a non-empty JSON array of UUID strings")
    if len(decoded) > MAX_ENTITY_IDS:
        raise InvalidEvent(f"'entity_ids' has {len(decoded)} ids; at most {MAX_ENTITY_IDS} per request")
    entity_ids = tuple(dict.fromkeys(_uuid(value, "entity_ids") for value in decoded))
    operation = _required(fields, "operation")
    if operation not in OPERATIONS:
        raise InvalidEvent(f"unknown operation {operation[:40]!r} (known: {', '.join(OPERATIONS)})")
    source = _required(fields, "source")
    if len(source) > SOURCE_MAX_LENGTH:
        raise InvalidEvent(f"'source' is longer than {SOURCE_MAX_LENGTH} characters")
    timestamp = _timestamp(_required(fields, "timestamp"), now)
    return UpdateRequest(event_id, entity_ids, operation, source, timestamp)


def event_parse(stream: str, fields: dict, *, now: datetime | None = None) -> QuerySignal | UpdateRequest:
    """Decode an entry of the logical stream `stream`; raise InvalidEvent with a readable reason."""
    if stream == settings.STREAM_QUERY_SIGNALS:
        return query_signal_parse(fields, now=now)
    if stream == settings.STREAM_UPDATE_REQUESTS:
        return update_request_parse(fields, now=now)
    raise InvalidEvent(f"no event type is read from stream {stream!r}")
