"""Publishing events: one pipelined round trip, never an error, never slow. The only publisher.

When Redis is down or slower than settings.REDIS_PUBLISH_TIMEOUT the events (with their event ids)
go to the PostgreSQL outbox instead, and the worker relays them later; the kept event id makes a
second copy harmless. After a failure Redis is not tried again for settings.REDIS_PUBLISH_RETRY_SECONDS,
so a dead Redis costs an answer one outbox INSERT rather than a timeout each time.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from django.conf import settings
from django.db import DatabaseError

from streams.events import MAX_ENTITY_IDS, QuerySignal, UpdateRequest
from streams.partitions import stream_key_route
from streams.redis import REDIS_ERRORS, redis_client
from streams.services import outbox_events_add

logger = logging.getLogger(__name__)


class PublishOutcome(NamedTuple):
    published: int
    outboxed: int
    # Only when Redis and PostgreSQL both failed: logged as an error, never raised to the answer.
    lost: int = 0


class _RedisCircuit:
    """Remembers a recent publish failure so that requests skip Redis for a few seconds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open_until = 0.0

    def allows(self) -> bool:
        return time.monotonic() >= self._open_until

    def trip(self) -> None:
        with self._lock:
            self._open_until = time.monotonic() + settings.REDIS_PUBLISH_RETRY_SECONDS

    def reset(self) -> None:
        with self._lock:
            self._open_until = 0.0


redis_circuit = _RedisCircuit()


def _entries_publish(*, entries: list[tuple[str, dict[str, str]]]) -> PublishOutcome:
    """XADD each (logical stream, fields) to its key (its partition, streams.partitions), else the outbox.

    The outbox keeps the logical stream: the relay routes the entry again, by the setting of its day.
    """
    if not entries:
        return PublishOutcome(0, 0)
    if redis_circuit.allows():
        try:
            pipe = redis_client(timeout=settings.REDIS_PUBLISH_TIMEOUT, retry=False).pipeline(transaction=False)
            for stream, fields in entries:
                pipe.xadd(stream_key_route(stream, fields), fields)
            pipe.execute()
        except REDIS_ERRORS as error:
            redis_circuit.trip()
            logger.warning("Redis publish failed (%s); %d events go to the outbox", error, len(entries))
        else:
            return PublishOutcome(len(entries), 0)
    try:
        outbox_events_add(entries=entries)
    except DatabaseError:
        logger.exception("Redis and the outbox both failed: %d events lost", len(entries))
        return PublishOutcome(0, 0, lost=len(entries))
    return PublishOutcome(0, len(entries))


def query_signals_publish(*, signals: Sequence[QuerySignal]) -> PublishOutcome:
    """Publish one answer's QuerySignals in one round trip (or to the outbox)."""
    stream = settings.STREAM_QUERY_SIGNALS
    return _entries_publish(entries=[(stream, signal.to_fields()) for signal in signals])


def update_request_publish(*, request: UpdateRequest) -> PublishOutcome:
    """Publish one UpdateRequest (or put it in the outbox)."""
    return _entries_publish(entries=[(settings.STREAM_UPDATE_REQUESTS, request.to_fields())])


@dataclass
class UpdateRequestsOutcome:
    """What `update_requests_publish` did: the requests published (their event ids), how many went to the
    outbox, and `lost` when Redis and the outbox both refused (then nothing after that chunk was tried)."""

    event_ids: list[uuid.UUID] = field(default_factory=list)
    outboxed: int = 0
    lost: bool = False

    @property
    def requests(self) -> int:
        return len(self.event_ids)


def update_requests_publish(*, entity_ids: Sequence[uuid.UUID], operation: str, source: str) -> UpdateRequestsOutcome:
    """Publish `operation` UpdateRequests for `entity_ids`, MAX_ENTITY_IDS per request, in order.

    The admin action, the API and request_stale_updates all publish through here; they translate
    `lost` to their own answer (a message, a 503, a command error).
    """
    outcome = UpdateRequestsOutcome()
    for start in range(0, len(entity_ids), MAX_ENTITY_IDS):
        request = UpdateRequest.new(
            entity_ids=entity_ids[start : start + MAX_ENTITY_IDS], operation=operation, source=source
        )
        published = update_request_publish(request=request)
        if published.lost:
            outcome.lost = True
            return outcome
        outcome.event_ids.append(request.event_id)
        outcome.outboxed += published.outboxed
    return outcome
