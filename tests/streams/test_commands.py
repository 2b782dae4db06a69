"""The streams' operations commands on a known state: stream_status and replay_dead_letters."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from entities.models import EntityDemand
from streams.events import QuerySignal, dead_letter_fields
from streams.models import OutboxEvent
from tests.entities.factories import EntityFactory
from tests.streams.pipeline import command_run as run
from tests.streams.pipeline import worker_drain

pytestmark = pytest.mark.django_db


def _dead_letter_add(client, fields: dict[str, str], *, reason: str) -> str:
    return client.xadd(
        settings.STREAM_DEAD_LETTER,
        dead_letter_fields(
            fields=fields,
            reason=reason,
            stream=settings.STREAM_QUERY_SIGNALS,
            entry_id="1-0",
            deliveries=1,
            dead_at=datetime(2026, 11, 30, tzinfo=UTC),
        ),
    )


# -- stream_status -----------------------------------------------------------------------------------------


def test_stream_status_prints_the_tables_and_a_summary(redis_client, worker):
    entity = EntityFactory()
    for _ in range(3):
        redis_client.xadd(
            settings.STREAM_QUERY_SIGNALS,
            QuerySignal.new(entity_id=entity.id, entity_type=entity.entity_type, query="q").to_fields(),
        )
    redis_client.xreadgroup(settings.STREAM_CONSUMER_GROUP, "reader", {settings.STREAM_QUERY_SIGNALS: ">"}, count=1)
    _dead_letter_add(redis_client, {"event_id": "x"}, reason="bad")
    OutboxEvent.objects.create(stream=settings.STREAM_QUERY_SIGNALS, fields={})
    worker.heartbeat()

    output = run("stream_status")
    assert settings.STREAM_QUERY_SIGNALS in output
    assert "reader (1 pending" in output
    assert "ops-worker" in output
    summary = output.strip().splitlines()[-1]
    assert summary.startswith("Summary: lag 2, pending 1, dead letters 1, outbox backlog 1, oldest ")
    assert summary.endswith(", live workers 1.")

    data = json.loads(run("stream_status", "--json"))
    assert data["totals"] == {"length": 3, "pending": 1, "lag": 2}


def test_stream_status_fails_clearly_when_redis_is_stopped(private_redis):
    private_redis.stop()
    with pytest.raises(CommandError, match="Redis is unreachable"):
        run("stream_status")


def test_every_streams_command_has_help():
    for name in ("stream_status", "replay_dead_letters", "relay_outbox", "run_stream_worker"):
        out = StringIO()
        with pytest.raises(SystemExit) as exited:
            call_command(name, "--help", stdout=out)
        assert exited.value.code == 0


# -- replay_dead_letters -----------------------------------------------------------------------------------


def test_replay_dead_letters_dry_run_then_by_reason(redis_client, worker):
    entity = EntityFactory()
    signals = [QuerySignal.new(entity_id=entity.id, entity_type=entity.entity_type, query=str(n)) for n in range(3)]
    _dead_letter_add(redis_client, signals[0].to_fields(), reason="unknown entity_id")
    _dead_letter_add(redis_client, signals[1].to_fields(), reason="unknown entity_id")
    _dead_letter_add(redis_client, signals[2].to_fields(), reason="delivered 6 times")

    assert run("replay_dead_letters", "--dry-run") == "Dead letters: would replay 3; would remove 0 already counted.\n"
    assert redis_client.xlen(settings.STREAM_DEAD_LETTER) == 3

    assert run("replay_dead_letters", "--reason", "Unknown Entity") == (
        "Dead letters: replayed 2; removed 0 already counted.\n"
    )
    assert redis_client.xlen(settings.STREAM_DEAD_LETTER) == 1
    worker_drain(worker)
    assert EntityDemand.objects.get(pk=entity.pk).query_count == 2

    # The remaining one is a copy of an event that was counted meanwhile: removed, not counted again.
    redis_client.xadd(settings.STREAM_QUERY_SIGNALS, signals[2].to_fields())
    worker_drain(worker)
    assert run("replay_dead_letters") == "Dead letters: replayed 0; removed 1 already counted.\n"
    worker_drain(worker)
    assert EntityDemand.objects.get(pk=entity.pk).query_count == 3
    assert redis_client.xlen(settings.STREAM_DEAD_LETTER) == 0


def test_replay_dead_letters_reports_unknown_ids(redis_client):
    assert "Not found: 1-1." in run("replay_dead_letters", "1-1")
