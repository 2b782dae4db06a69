"""The consumer's registry: the batch handler of each stream and the periodic chores of the domain.

The transport knows no event's meaning. The app that owns an event registers its handler from its
`AppConfig.ready()` (analytics counts QuerySignals, entities applies UpdateRequests), and the apps
that need the worker's clock register chores (analytics rolls the trending windows), the way Zulip's
`@assign_queue` ties a worker to its queue. `run_stream_worker` consumes whatever is registered.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings


@dataclass
class ApplyResult:
    """What one apply did: `applied` new events, `duplicates` already counted, `rejected` by input index."""

    applied: int = 0
    duplicates: int = 0
    rejected: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchHandler:
    """Applies a stream's validated events inside the consumer's batch transaction (with the inbox).

    `apply(events, prepared)` returns an ApplyResult whose `rejected` maps an index of `events` to a
    reason (those entries are dead-lettered). `prepare(events)`, when given, runs in the read-ahead
    thread without the database; its result is `prepared` (None when the consumer split a batch).
    Handlers run in registration order, which is INSTALLED_APPS order (entities, then analytics) and the
    order their locks are taken in: entity rows, then demand rows, as an entity's delete takes them.
    """

    stream_setting: str
    apply: Callable[[Sequence[Any], Any], ApplyResult]
    prepare: Callable[[Sequence[Any]], Any] | None = None

    @property
    def stream(self) -> str:
        return getattr(settings, self.stream_setting)


@dataclass(frozen=True)
class Chore:
    """Periodic work of the domain, run by the worker between batches.

    It runs every `interval` seconds, or, with `key`, whenever `key()` returns a new value (e.g. the
    current hour). With `thread`, it runs in a thread of its own instead, every `interval` seconds, so
    work that waits on something slow (another server) never holds up a batch; the worker starts
    those threads only when asked to (`StreamWorker(chore_threads=True)`, as `run_stream_worker` does).
    """

    name: str
    run: Callable[[], object]
    interval: float = 60.0
    key: Callable[[], Hashable] | None = None
    thread: bool = False


_handlers: dict[str, BatchHandler] = {}
_chores: dict[str, Chore] = {}


def batch_handler_register(handler: BatchHandler) -> None:
    """Register the handler of `handler.stream_setting`'s stream (a second registration replaces the first)."""
    _handlers[handler.stream_setting] = handler


def chore_register(chore: Chore) -> None:
    _chores[chore.name] = chore


def batch_handlers() -> list[BatchHandler]:
    return list(_handlers.values())


def chores() -> list[Chore]:
    return list(_chores.values())
