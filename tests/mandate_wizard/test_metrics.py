"""Prometheus metrics of the web (/metrics, access by setting) and of a real worker process (--metrics-port),
and the worker's structured JSON log: one line per batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest
from django.conf import settings
from prometheus_client.parser import text_string_to_metric_families

from kernel.databases import database_url
from mandate_wizard.devservers import free_port
from streams.events import QuerySignal
from streams.models import OutboxEvent
from tests.entities.factories import EntityFactory

pytestmark = pytest.mark.django_db


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_are_staff_only_by_default(api_client, user_client, staff_client, redis_client):
    assert settings.METRICS_ACCESS == "staff"
    assert api_client.get("/metrics").status_code == 401
    assert user_client.get("/metrics").status_code == 403
    response = staff_client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")


def test_metrics_token_lets_a_scraper_in(api_client, redis_client, settings):
    settings.METRICS_TOKEN = "scrape-token-0123456789"
    assert api_client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-token-0123456789").status_code == 200
    wrong = api_client.get("/metrics", HTTP_AUTHORIZATION="Bearer not-the-token")
    assert wrong.status_code == 401
    assert "error" in wrong.json()


def test_metrics_off_and_public(api_client, staff_client, redis_client, settings):
    settings.METRICS_ACCESS = "off"
    assert staff_client.get("/metrics").status_code == 404
    settings.METRICS_ACCESS = "any"
    assert api_client.get("/metrics").status_code == 200


def test_web_metrics_report_the_pipeline(staff_client, redis_client):
    entity = EntityFactory()
    for _ in range(4):
        redis_client.xadd(
            settings.STREAM_QUERY_SIGNALS,
            QuerySignal.new(entity_id=entity.id, entity_type=entity.entity_type, query="q").to_fields(),
        )
    redis_client.xadd(settings.STREAM_DEAD_LETTER, {"dead_reason": "x"})
    OutboxEvent.objects.create(stream=settings.STREAM_QUERY_SIGNALS, fields={})
    samples = _samples(staff_client.get("/metrics").content.decode())
    signals = (("stream", settings.STREAM_QUERY_SIGNALS),)
    assert samples[("mandate_wizard_pipeline_up", ())] == 1
    assert samples[("mandate_wizard_stream_length", signals)] == 4
    assert samples[("mandate_wizard_stream_lag", signals)] == 4  # no group yet: everything is undelivered
    assert samples[("mandate_wizard_dead_letter_length", ())] == 1
    assert samples[("mandate_wizard_outbox_backlog", ())] == 1
    assert ("process_cpu_seconds_total", ()) in samples


def test_web_metrics_still_answer_when_redis_is_stopped(staff_client, private_redis):
    private_redis.stop()
    response = staff_client.get("/metrics")
    assert response.status_code == 200
    assert _samples(response.content.decode())[("mandate_wizard_pipeline_up", ())] == 0


def _scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return _samples(response.read().decode())


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_worker_process_serves_metrics_and_logs_one_json_line_per_batch(redis_client):
    entity = EntityFactory()
    signals = [QuerySignal.new(entity_id=entity.id, entity_type=entity.entity_type, query="q") for _ in range(30)]
    pipe = redis_client.pipeline()
    for signal in signals:
        pipe.xadd(settings.STREAM_QUERY_SIGNALS, signal.to_fields())
    pipe.xadd(settings.STREAM_QUERY_SIGNALS, signals[0].to_fields())  # a duplicate publish
    pipe.xadd(settings.STREAM_QUERY_SIGNALS, {"event_id": "nope"})  # dead-lettered
    pipe.execute()

    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url(), "LOG_JSON": "true", "LOG_LEVEL": "INFO"}
    args = ["run_stream_worker", "--consumer", "metrics-test", "--block-ms", "100", "--metrics-port", str(port)]
    worker = subprocess.Popen(
        [sys.executable, "manage.py", *args],
        cwd=settings.BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        samples: dict = {}
        while time.monotonic() < deadline:
            try:
                samples = _scrape(port)
            except OSError:
                samples = {}
            if samples.get(
                ("mandate_wizard_worker_events_processed_total", (("stream", settings.STREAM_QUERY_SIGNALS),))
            ):
                break
            time.sleep(0.2)
        signals_label = (("stream", settings.STREAM_QUERY_SIGNALS),)
        assert samples, f"no metrics served: {worker.poll()=}"
        assert samples[("mandate_wizard_worker_events_processed_total", signals_label)] == 30
        assert samples[("mandate_wizard_worker_duplicates_skipped_total", ())] == 1
        assert samples[("mandate_wizard_worker_dead_lettered_total", ())] == 1
        assert samples[("mandate_wizard_worker_batch_size_count", ())] >= 1
        assert samples[("mandate_wizard_worker_batch_size_sum", ())] == 32
        assert samples[("mandate_wizard_worker_batch_duration_seconds_count", ())] >= 1
        assert samples[("mandate_wizard_stream_lag", signals_label)] == 0
        assert samples[("mandate_wizard_outbox_backlog", ())] == 0
        assert samples[("mandate_wizard_workers_live", ())] == 1
    finally:
        worker.terminate()
        _out, err = worker.communicate(timeout=20)
    assert worker.returncode == 0

    records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert len(records) == len(err.splitlines()), f"non-JSON log lines: {err[:500]}"
    batches = [r for r in records if r["message"].startswith("batch:")]
    assert batches, records
    assert {"asctime", "levelname", "name", "message"} <= batches[0].keys()
    assert sum(int(r["message"].split()[1]) for r in batches) == 32
