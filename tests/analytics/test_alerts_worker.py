"""Alerts with a real `run_stream_worker` process: a stopped worker makes the lag rule fire, and a receiver that
hangs is retried without ever holding up the worker's counting."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.db.models import Sum

from analytics.alerts import alert_rules_evaluate
from analytics.models import AlertDelivery, AlertKind, AlertRule
from entities.models import EntityDemand
from kernel.databases import database_url
from streams.selectors import workers_live
from tests.analytics.webhook_receiver import WebhookReceiver
from tests.streams.pipeline import (
    MANAGE,
    WorkerProcess,
    command_run,
    entities_make,
    signals_make,
    signals_xadd,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def receiver():
    server = WebhookReceiver()
    yield server
    server.close()


@pytest.fixture
def start_worker(tmp_path, receiver):
    started: list[WorkerProcess] = []

    def start(consumer: str, **env: str) -> WorkerProcess:
        worker = WorkerProcess(log_dir=tmp_path, consumer=consumer, env={"ALERT_WEBHOOK_URL": receiver.url(), **env})
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.ensure_ended()
        print(f"--- {worker.log_path.name}", *worker.log().splitlines()[-40:], sep="\n")


@pytest.fixture
def alert_rules(settings, receiver):
    AlertRule.objects.all().delete()
    settings.ALERT_WEBHOOK_URL = receiver.url()


def test_a_stopped_worker_with_entries_waiting_makes_the_lag_rule_fire(
    alert_rules, receiver, redis_client, start_worker
):
    AlertRule.objects.create(name="pipeline lag", kind=AlertKind.PIPELINE_LAG, threshold=3, age_seconds=3600)
    AlertRule.objects.create(name="no live worker", kind=AlertKind.NO_LIVE_WORKER)
    worker = start_worker("alerts-stopped")
    wait_until(lambda: len(workers_live()) == 1, timeout=60, what="the worker's heartbeat")
    assert worker.stop() == 0
    signals_xadd(redis_client, signals_make(entities_make(3), 8))

    # As Render's cron runs it: a process of its own, exit status 0.
    cron = subprocess.run(
        [sys.executable, str(MANAGE), "check_alerts"],
        env={
            **os.environ,
            "DATABASE_URL": database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "ALERT_WEBHOOK_URL": receiver.url(),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cron.returncode == 0, cron.stderr
    assert (
        "Alerts: 2 rules evaluated, 2 firing, 0 resolved, 0 in cooldown; sent 2, retrying 0, failed 0." in cron.stdout
    )
    bodies = {body["rule"]: body for body in receiver.bodies()}
    assert set(bodies) == {"pipeline lag", "no live worker"}  # the running worker had nothing to report
    assert bodies["pipeline lag"]["state"] == "firing"
    assert bodies["pipeline lag"]["text"].startswith("[FIRING] pipeline lag: 8 stream entries not yet counted")
    command_run("check_alerts")
    assert len(receiver.bodies()) == 2


def test_a_hanging_receiver_never_holds_up_counting_and_is_retried(alert_rules, receiver, redis_client, start_worker):
    AlertRule.objects.create(name="no live worker", kind=AlertKind.NO_LIVE_WORKER)
    assert alert_rules_evaluate().firing == 1  # no worker yet: one message waits to be sent
    receiver.hang = True
    receiver.statuses.append(500)
    # Long enough that the POST is still waiting on the receiver while the worker counts below.
    worker = start_worker("alerts-hang", ALERT_WEBHOOK_TIMEOUT="120")
    wait_until(lambda: len(receiver.requests) == 1, timeout=60, what="the worker's POST to the hanging receiver")

    signals = signals_make(entities_make(5), 300)
    signals_xadd(redis_client, signals)
    counted = lambda: EntityDemand.objects.aggregate(n=Sum("query_count"))["n"] == len(signals)  # noqa: E731
    wait_until(counted, timeout=60, what="the batch counted while the receiver hangs")
    assert receiver.answered == 0  # the POST was still unanswered all the while

    receiver.release()  # it answers 500: a retry is scheduled with backoff
    firing = AlertDelivery.objects.filter(state="firing")
    wait_until(lambda: firing.get().attempts == 1, timeout=60, what="the failed attempt recorded")
    delivery = firing.get()
    assert (delivery.status, delivery.last_status_code) == ("pending", 500)
    assert delivery.next_attempt_at > delivery.last_attempt_at
    assert worker.stop() == 0
