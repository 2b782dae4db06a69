"""Alerts: rules evaluated on real data in the real PostgreSQL and Redis, POSTed to a real receiver on 127.0.0.1.

Time moves through the functions' explicit `now=`; nothing sleeps to wait for a window to pass.
"""

from __future__ import annotations

import importlib
import uuid
from dataclasses import replace
from datetime import timedelta

import psycopg
import pytest
from django.apps import apps as global_apps
from django.conf import settings
from django.utils import timezone

from analytics.alerts import EVALUATE_LOCK, alert_deliveries_send, alert_rules_evaluate, alerts_check
from analytics.definitions import hour_floor
from analytics.demand import demand_windows_roll
from analytics.models import AlertDelivery, AlertKind, AlertRule, AlertState
from analytics.selectors import analytics_status, demand_trending
from analytics.services import refresh_queue_snapshot_build
from entities.models import Entity
from kernel.databases import database_url
from streams.handlers import chores
from streams.models import OutboxEvent
from streams.worker import StreamWorker
from tests.analytics.helpers import H0, NOW, hours_ago, queries_add
from tests.analytics.webhook_receiver import WebhookReceiver
from tests.streams.pipeline import command_run, entities_make, signals_make, signals_xadd, worker_drain

pytestmark = pytest.mark.django_db


@pytest.fixture
def receiver():
    server = WebhookReceiver()
    yield server
    server.close()


@pytest.fixture
def rules(settings, receiver):
    """No rule but those the test creates; every alert goes to `receiver` unless the rule names its own URL."""
    AlertRule.objects.all().delete()
    settings.ALERT_WEBHOOK_URL = receiver.url()
    settings.ALERT_DELIVERY_BACKOFF_SECONDS = 30.0
    settings.ALERT_DELIVERY_MAX_ATTEMPTS = 4

    def make(kind: str, **fields) -> AlertRule:
        return AlertRule.objects.create(name=fields.pop("name", kind.replace("_", " ")), kind=kind, **fields)

    return make


@pytest.fixture
def worker(redis_client) -> StreamWorker:
    worker = StreamWorker(consumer="alerts-worker", block_ms=50, claim_idle_ms=3_600_000)
    worker.groups_ensure()
    yield worker
    worker.heartbeat_clear()


def burst_count(worker: StreamWorker, redis_client, entity: Entity, count: int) -> None:
    """`count` signals naming `entity` in the last minutes, published to the real stream and counted."""
    now = timezone.now()
    signals = [
        replace(signal, timestamp=now - timedelta(seconds=index))
        for index, signal in enumerate(signals_make([entity], count, seed=entity.pk.int % 2**31))
    ]
    signals_xadd(redis_client, signals)
    worker_drain(worker)


def test_a_burst_for_one_entity_fires_once_then_resolves_when_it_aged_out(rules, receiver, worker, redis_client):
    rules(AlertKind.DEMAND_SPIKE, threshold=5.0, timeframe="1d")
    spiking, quiet = entities_make(2)
    burst_count(worker, redis_client, spiking, 20)
    burst_count(worker, redis_client, quiet, 2)  # below TRENDING_MIN_QUERIES and the threshold

    out = command_run("check_alerts")
    assert "1 firing" in out and "sent 1" in out
    (firing,) = receiver.bodies()
    assert firing["rule"] == "demand spike" and firing["state"] == "firing"
    assert firing["entity_id"] == str(spiking.pk) and firing["entity_name"] == spiking.name
    assert firing["text"].startswith("[FIRING] demand spike: Pipeline entity 0 ")
    assert "trend score 20.0 over 1d" in firing["text"] and "\n" not in firing["text"]
    assert receiver.requests[0]["content_type"] == "application/json"

    assert "0 firing" in command_run("check_alerts")  # still true: nothing new
    assert len(receiver.bodies()) == 1

    later = timezone.now() + timedelta(days=3)  # the burst is out of both 1d windows
    assert demand_trending(timeframe="1d", now=later) == []
    outcome = alerts_check(now=later)
    assert (outcome.evaluation.resolved, outcome.delivery.sent) == (1, 1)
    resolved = receiver.bodies()[1]
    assert (resolved["state"], resolved["entity_id"]) == ("resolved", str(spiking.pk))
    assert resolved["text"] == f"[RESOLVED] demand spike: {spiking.name} ({spiking.entity_type}) no longer matches"
    alerts_check(now=later + timedelta(minutes=1))
    assert len(receiver.bodies()) == 2


def test_trend_score_above_bounds_stored_and_open_hour_windows_alike():
    """The spike rule's bound applies to entities read from the stored windows and from the open hour."""
    stored_high, stored_low, open_high, open_low = entities_make(4)
    for entity, count in ((stored_high, 9), (stored_low, 4)):
        queries_add(entity, hours_ago(3), count)
    for entity, count in ((open_high, 8), (open_low, 3)):
        queries_add(entity, H0, count)
    demand_windows_roll(now=NOW)  # as the worker does: the stored windows are as of NOW's hour
    scores = {row["id"]: row["trend_score"] for row in demand_trending(timeframe="1d", limit=10, now=NOW)}
    assert set(scores) == {stored_high.pk, stored_low.pk, open_high.pk, open_low.pk}
    above = demand_trending(timeframe="1d", limit=10, now=NOW, trend_score_above=5.0)
    assert [row["id"] for row in above] == [stored_high.pk, open_high.pk]
    assert demand_trending(timeframe="1d", limit=10, now=NOW, trend_score_above=9.0) == []


def test_per_entity_rules_keep_a_state_per_entity(rules, receiver, worker, redis_client):
    rule = rules(AlertKind.DEMAND_SPIKE, threshold=5.0, timeframe="1d")
    first, second = entities_make(2)
    burst_count(worker, redis_client, first, 10)
    alerts_check()
    burst_count(worker, redis_client, second, 12)
    alerts_check()
    assert [(body["state"], body["entity_id"]) for body in receiver.bodies()] == [
        ("firing", str(first.pk)),
        ("firing", str(second.pk)),
    ]
    assert set(AlertState.objects.filter(rule=rule, firing=True).values_list("entity_id", flat=True)) == {
        first.pk,
        second.pk,
    }


def test_a_stopped_worker_with_entries_waiting_fires_the_lag_and_no_worker_rules(rules, receiver, worker, redis_client):
    rules(AlertKind.PIPELINE_LAG, threshold=3.0, age_seconds=3600)
    rules(AlertKind.NO_LIVE_WORKER)
    worker.heartbeat()
    assert alerts_check().evaluation.firing == 0
    worker.heartbeat_clear()  # what a worker does when it stops
    signals_xadd(redis_client, signals_make(entities_make(2), 5))

    outcome = alerts_check()
    assert outcome.evaluation.firing == 2
    bodies = {body["rule"]: body for body in receiver.bodies()}
    assert bodies["pipeline lag"]["state"] == "firing" and bodies["pipeline lag"]["value"] == 5
    assert bodies["pipeline lag"]["text"].startswith("[FIRING] pipeline lag: 5 stream entries not yet counted")
    assert "entity_id" not in bodies["pipeline lag"]
    assert bodies["no live worker"]["text"] == "[FIRING] no live worker: 0 live stream workers"

    # The worker is back: its housekeeping heartbeats and evaluates the rules (as every minute), then it
    # counts the backlog; the next evaluation sees nothing waiting.
    worker_drain(worker)
    alerts_check()
    assert AlertState.objects.filter(firing=True).count() == 0
    assert sorted(body["rule"] for body in receiver.bodies()[2:]) == ["no live worker", "pipeline lag"]
    assert {body["state"] for body in receiver.bodies()[2:]} == {"resolved"}


def test_the_oldest_waiting_entry_alone_fires_the_lag_rule(rules, receiver, redis_client):
    rules(AlertKind.PIPELINE_LAG, threshold=1000.0, age_seconds=60)
    seconds, _ = redis_client.time()
    signal = signals_make(entities_make(1), 1)[0]
    redis_client.xadd(settings.STREAM_QUERY_SIGNALS, signal.to_fields(), id=f"{(seconds - 120) * 1000}-0")
    assert alerts_check().evaluation.firing == 1
    assert "oldest 12" in receiver.bodies()[0]["text"]


def test_cooldown_holds_back_a_new_firing_after_a_quick_clear(rules, receiver, worker):
    rules(AlertKind.NO_LIVE_WORKER, cooldown_seconds=600)
    start = timezone.now()
    assert alerts_check(now=start).evaluation.firing == 1
    worker.heartbeat()
    assert alerts_check(now=start + timedelta(seconds=60)).evaluation.resolved == 1
    worker.heartbeat_clear()
    held = alerts_check(now=start + timedelta(seconds=120)).evaluation
    assert (held.firing, held.suppressed) == (0, 1)
    assert alerts_check(now=start + timedelta(seconds=601)).evaluation.firing == 1
    assert [body["state"] for body in receiver.bodies()] == ["firing", "resolved", "firing"]


def test_a_rule_may_name_its_own_webhook(rules, receiver, settings):
    own = WebhookReceiver()
    try:
        rules(AlertKind.NO_LIVE_WORKER, name="to its own", webhook_url=own.url("/own"))
        rules(AlertKind.NO_LIVE_WORKER, name="to the default")
        alerts_check()
        assert [body["rule"] for body in own.bodies()] == ["to its own"]
        assert own.requests[0]["path"] == "/own"
        assert [body["rule"] for body in receiver.bodies()] == ["to the default"]
    finally:
        own.close()


def test_nothing_is_sent_when_no_webhook_is_configured(rules, receiver, settings):
    settings.ALERT_WEBHOOK_URL = ""
    rule = rules(AlertKind.NO_LIVE_WORKER)
    outcome = alerts_check()
    assert (outcome.evaluation.firing, outcome.evaluation.undeliverable) == (0, 1)
    assert AlertState.objects.get(rule=rule).firing  # the state still moves: the admin shows it
    assert AlertDelivery.objects.count() == 0
    assert receiver.requests == []


def test_a_receiver_answering_500_is_retried_with_backoff_until_it_accepts(rules, receiver):
    rules(AlertKind.NO_LIVE_WORKER)
    receiver.statuses.extend([500, 503])
    start = timezone.now()
    assert alerts_check(now=start).delivery.retrying == 1
    delivery = AlertDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("pending", 1, 500)
    assert delivery.last_error.startswith("HTTP 500")
    assert delivery.next_attempt_at == start + timedelta(seconds=30)

    assert alert_deliveries_send(now=start + timedelta(seconds=29)).retrying == 0  # not due yet
    assert len(receiver.requests) == 1
    alert_deliveries_send(now=start + timedelta(seconds=30))
    delivery.refresh_from_db()
    assert (delivery.attempts, delivery.last_status_code) == (2, 503)
    assert delivery.next_attempt_at == start + timedelta(seconds=30 + 60)  # the backoff doubled
    assert alert_deliveries_send(now=start + timedelta(seconds=90)).sent == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code, delivery.last_error) == ("sent", 3, 200, "")
    bodies = receiver.bodies()
    assert len(bodies) == 3 and bodies[0] == bodies[1] == bodies[2]  # the same message each time


def test_attempts_run_out_and_a_refusing_receiver_fails_at_once(rules, receiver):
    rules(AlertKind.NO_LIVE_WORKER, name="always 500")
    receiver.statuses.extend([500] * 4)
    moment = timezone.now()
    alerts_check(now=moment)
    for _ in range(3):
        moment += timedelta(hours=1)
        alert_deliveries_send(now=moment)
    delivery = AlertDelivery.objects.get()
    assert (delivery.status, delivery.attempts) == ("failed", 4)
    assert alert_deliveries_send(now=moment + timedelta(days=1)).failed == 0
    assert len(receiver.requests) == 4

    rules(AlertKind.NO_LIVE_WORKER, name="refused")
    receiver.statuses.append(404)
    assert alerts_check(now=moment).delivery.failed == 1
    assert AlertDelivery.objects.get(rule__name="refused").attempts == 1


def test_a_hanging_receiver_times_out_and_is_retried(rules, receiver):
    rules(AlertKind.NO_LIVE_WORKER)
    receiver.hang = True
    start = timezone.now()
    assert alert_rules_evaluate(now=start).firing == 1
    assert alert_deliveries_send(now=start, timeout=0.5).retrying == 1
    delivery = AlertDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("pending", 1, None)
    assert "timed out" in delivery.last_error
    receiver.release()
    assert alert_deliveries_send(now=start + timedelta(seconds=30), timeout=0.5).sent == 1


def test_resolved_waits_for_its_firing_to_be_delivered_first(rules, receiver, worker):
    rules(AlertKind.NO_LIVE_WORKER)
    receiver.statuses.append(500)
    start = timezone.now()
    alerts_check(now=start)  # firing: refused once, retried at +30 s
    worker.heartbeat()
    outcome = alerts_check(now=start + timedelta(seconds=10))  # resolved written, firing not yet due
    assert (outcome.evaluation.resolved, outcome.delivery.sent) == (1, 0)
    alert_deliveries_send(now=start + timedelta(seconds=30))
    alert_deliveries_send(now=start + timedelta(seconds=30))
    assert [body["state"] for body in receiver.bodies()] == ["firing", "firing", "resolved"]


def test_critical_stale_fires_for_an_entity_entering_the_tier_and_resolves_when_updated(rules, receiver, settings):
    """The tier is the refresh queue's (`refresh_queue(critical=True)`): recent demand and days since update."""
    settings.REFRESH_CRITICAL_MIN_DEMAND, settings.REFRESH_CRITICAL_DAYS_SINCE_UPDATE = 10, 30
    rules(AlertKind.CRITICAL_STALE)
    old, fresh, small = entities_make(3)
    Entity.objects.filter(pk__in=[old.pk, small.pk]).update(updated_at=timezone.now() - timedelta(days=45))
    hour = hour_floor(timezone.now()) - timedelta(hours=3)
    for entity, count in ((old, 12), (fresh, 12), (small, 9)):  # `small` is stale but below the tier
        queries_add(entity, hour, count)
    alerts_check()
    (firing,) = receiver.bodies()
    assert firing["entity_id"] == str(old.pk)
    assert firing["text"].startswith(
        f"[FIRING] critical stale: {old.name} ({old.entity_type}) is critically stale: 12 queries in 30d,"
        " last updated 45 days ago, refresh priority "
    )
    alerts_check()
    assert len(receiver.bodies()) == 1
    refresh_queue_snapshot_build()  # the worker's chore: the queue scored into its snapshot
    Entity.objects.filter(pk=old.pk).update(updated_at=timezone.now())  # refreshed: out of the queue
    alerts_check()  # reads the snapshot, as the queue's API does: scored before the refresh
    assert len(receiver.bodies()) == 1
    refresh_queue_snapshot_build()
    alerts_check()
    assert [(body["state"], body["entity_id"]) for body in receiver.bodies()][1:] == [("resolved", str(old.pk))]


def test_dead_letters_grew_fires_on_new_dead_letters_and_resolves_when_replayed(rules, receiver, redis_client):
    rules(AlertKind.DEAD_LETTERS_GREW, threshold=0.0)
    redis_client.xadd(settings.STREAM_DEAD_LETTER, {"reason": "old"})
    assert alerts_check().evaluation.firing == 0  # the first count is the baseline
    ids = [redis_client.xadd(settings.STREAM_DEAD_LETTER, {"reason": "bad payload"}) for _ in range(2)]
    assert alerts_check().evaluation.firing == 1
    assert receiver.bodies()[0]["text"] == (
        "[FIRING] dead letters grew: 3 dead letters, 2 more than the 1 when last clear (threshold 0)"
    )
    ids.append(redis_client.xadd(settings.STREAM_DEAD_LETTER, {"reason": "bad payload"}))
    assert alerts_check().evaluation.firing == 0  # still firing: no second message
    redis_client.xdel(settings.STREAM_DEAD_LETTER, *ids)  # replayed (replay deletes what it re-publishes)
    assert alerts_check().evaluation.resolved == 1
    assert [body["state"] for body in receiver.bodies()] == ["firing", "resolved"]


def test_outbox_backlog_fires_above_its_threshold(rules, receiver):
    rules(AlertKind.OUTBOX_BACKLOG, threshold=2.0)
    OutboxEvent.objects.bulk_create(
        [OutboxEvent(stream=settings.STREAM_QUERY_SIGNALS, fields={"event_id": str(uuid.uuid4())}) for _ in range(3)]
    )
    assert alerts_check().evaluation.firing == 1
    assert receiver.bodies()[0]["text"].startswith("[FIRING] outbox backlog: 3 events waiting in the outbox")


def test_a_rule_needing_an_unreachable_redis_keeps_its_state(rules, receiver, private_redis):
    rule = rules(AlertKind.NO_LIVE_WORKER)
    assert alerts_check().evaluation.firing == 1
    private_redis.kill()
    outcome = alerts_check()
    assert outcome.evaluation.unavailable == ["no live worker"]
    assert AlertState.objects.get(rule=rule).firing
    assert "Not evaluated (Redis unavailable): no live worker." in command_run("check_alerts")


def test_status_reports_the_last_alert_evaluation(rules, redis_client):
    rules(AlertKind.NO_LIVE_WORKER)
    assert analytics_status()["last_alert_evaluation"] is None
    moment = timezone.now()
    alert_rules_evaluate(now=moment)
    assert analytics_status()["last_alert_evaluation"] == moment


def test_a_second_evaluator_at_the_same_moment_skips(rules, receiver):
    rules(AlertKind.NO_LIVE_WORKER)
    # Another process (the worker, or a cron's check_alerts) is evaluating: its transaction holds the lock.
    with psycopg.connect(database_url()) as other:
        other.execute("SELECT pg_advisory_xact_lock(%s)", [EVALUATE_LOCK])
        assert alert_rules_evaluate().ran is False
    assert alert_rules_evaluate().ran is True
    assert len(receiver.bodies()) == 0  # evaluation writes the message; sending is a separate step
    assert AlertDelivery.objects.filter(status="pending").count() == 1


def test_the_default_rules_one_of_each_kind():
    migration = importlib.import_module("analytics.migrations.0011_alert_rules_default")
    AlertRule.objects.all().delete()
    migration.default_rules_create(global_apps, None)
    migration.default_rules_create(global_apps, None)  # again: nothing doubled
    assert sorted(AlertRule.objects.values_list("kind", flat=True)) == sorted(AlertKind.values)
    assert AlertRule.objects.get(kind=AlertKind.DEMAND_SPIKE).timeframe == "1d"


def test_analytics_registers_evaluation_in_housekeeping_and_sending_in_a_thread():
    registered = {chore.name: chore for chore in chores()}
    assert registered["alert_rules_evaluate"].run is alert_rules_evaluate
    assert (registered["alert_rules_evaluate"].interval, registered["alert_rules_evaluate"].thread) == (60.0, False)
    assert registered["alert_deliveries_send"].run is alert_deliveries_send
    assert registered["alert_deliveries_send"].thread is True


def test_the_admin_edits_rules_and_shows_states_and_the_delivery_log(rules, receiver, admin_client):
    rule = rules(AlertKind.NO_LIVE_WORKER)
    receiver.statuses.append(500)
    alerts_check()
    page = admin_client.get("/admin/analytics/alertrule/")
    assert page.status_code == 200 and b"no live worker" in page.content
    change = admin_client.get(f"/admin/analytics/alertrule/{rule.pk}/change/")
    assert change.status_code == 200 and b"firing" in change.content
    log = admin_client.get("/admin/analytics/alertdelivery/")
    assert log.status_code == 200 and b"HTTP 500" in log.content
    refused = admin_client.post(
        "/admin/analytics/alertrule/add/",
        {"name": "bad", "kind": AlertKind.DEMAND_SPIKE, "cooldown_seconds": 60, "webhook_url": "file:///etc/passwd"},
    )
    assert refused.status_code == 200 and not AlertRule.objects.filter(name="bad").exists()
    assert b"Enter a valid URL" in refused.content and b"This kind of rule needs it" in refused.content
