"""Analytics' operations commands on a known state: request_stale_updates, recompute_demand and
prune_demand_data (the streams commands are tested in tests/streams/test_commands.py)."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db.models import F
from django.utils import timezone

from analytics.definitions import hour_floor
from analytics.demand import demand_buckets_add
from analytics.models import AlertDelivery, AlertRule, DemandBucket
from analytics.selectors import refresh_queue
from analytics.services import refresh_claim_key
from entities.models import AnswerRecord, Entity, EntityDemand, RefreshRequest
from entities.questions import answer_signal_event_id
from entities.retrieval import SearchHit
from entities.services import PastAnswer, answer_record_create, answer_signals_reconcile, past_answers_record
from streams.models import ProcessedEvent
from tests.entities.factories import EntityFactory
from tests.streams.pipeline import command_run as run
from tests.streams.pipeline import worker_drain

pytestmark = pytest.mark.django_db


def test_every_analytics_command_has_help():
    for name in ("request_stale_updates", "recompute_demand", "prune_demand_data"):
        out = StringIO()
        with pytest.raises(SystemExit) as exited:
            call_command(name, "--help", stdout=out)
        assert exited.value.code == 0


# -- request_stale_updates ---------------------------------------------------------------------------------


@pytest.fixture
def stale_state(redis_client):
    """a (score 10) and e (score 6) are stale; b scores too low; c was updated recently; d was just requested."""
    old = timezone.now() - timedelta(days=40)
    entities = {
        "a": EntityFactory(name="a", updated_at=old),
        "b": EntityFactory(name="b", updated_at=old),
        "c": EntityFactory(name="c"),
        "d": EntityFactory(name="d", updated_at=old),
        "e": EntityFactory(name="e", updated_at=old),
    }
    for key, score in {"a": 10, "b": 4, "c": 10, "d": 20, "e": 6}.items():
        EntityDemand.objects.filter(pk=entities[key].pk).update(demand_score=score, query_count=score)
    RefreshRequest.objects.create(
        entity=entities["d"], event_id=uuid.uuid4(), requested_at=timezone.now() - timedelta(hours=2)
    )
    return entities


def _requested_ids(redis_client) -> list[list[str]]:
    return [json.loads(f["entity_ids"]) for _, f in redis_client.xrange(settings.STREAM_UPDATE_REQUESTS)]


def test_request_stale_updates_dry_run_changes_nothing(stale_state, redis_client):
    output = run("request_stale_updates", "--dry-run")
    assert output.startswith("Dry run: would request a refresh of 2 stale entities")
    assert "1 skipped" in output
    assert str(stale_state["a"].pk) in output
    assert redis_client.xlen(settings.STREAM_UPDATE_REQUESTS) == 0
    assert not redis_client.keys("mandate_wizard:refresh_claimed:*")


def test_request_stale_updates_publishes_once_per_entity_while_requested(stale_state, redis_client, worker):
    output = run("request_stale_updates")
    assert output.startswith("Requested a refresh of 2 stale entities (demand_score >= 5, not updated for 30 days)")
    assert _requested_ids(redis_client) == [[str(stale_state["a"].pk), str(stale_state["e"].pk)]]

    # Right away (the worker has not processed the request yet): the Redis claims stop a second request.
    again = run("request_stale_updates")
    assert again.startswith("Requested a refresh of 0 stale entities")
    assert "3 skipped" in again
    assert len(_requested_ids(redis_client)) == 1

    # After the worker recorded the requests, even a Redis that lost its keys does not repeat them.
    worker_drain(worker)
    assert set(RefreshRequest.objects.values_list("entity__name", flat=True)) == {"a", "d", "e"}
    redis_client.delete(*redis_client.keys("mandate_wizard:refresh_claimed:*"))
    assert run("request_stale_updates").startswith("Requested a refresh of 0 stale entities")
    assert len(_requested_ids(redis_client)) == 1


def test_request_stale_updates_limit_and_criteria(stale_state, redis_client):
    output = run("request_stale_updates", "--limit", "1")
    assert output.startswith("Requested a refresh of 1 stale entities")
    assert _requested_ids(redis_client) == [[str(stale_state["a"].pk)]]
    # e was not requested, so it must not be left claimed.
    assert not redis_client.exists(refresh_claim_key(stale_state["e"].pk))

    output = run("request_stale_updates", "--min-demand-score", "3", "--days-since-update", "30")
    assert output.startswith("Requested a refresh of 2 stale entities (demand_score >= 3")
    assert _requested_ids(redis_client)[-1] == [str(stale_state["e"].pk), str(stale_state["b"].pk)]


def test_request_stale_updates_takes_the_refresh_queues_order(redis_client):
    """Not demand order: the critical tier first, then priority (analytics.selectors.refresh_queue)."""
    now = timezone.now()
    h0 = hour_floor(now)
    # big: the most demand, all of it 40 days ago (no recent demand), content 31 days old: lowest priority.
    # critical: 12 queries this week, content 35 days old. old: 6 recent queries, content 300 days old.
    big = EntityFactory(name="big", updated_at=now - timedelta(days=31))
    critical = EntityFactory(name="critical", updated_at=now - timedelta(days=35))
    old = EntityFactory(name="old", updated_at=now - timedelta(days=300))
    for entity, hours_ago, count in ((big, 24 * 40, 90), (critical, 3, 12), (old, 50, 6)):
        demand_buckets_add(counts={(entity.pk, h0 - timedelta(hours=hours_ago)): count})
        EntityDemand.objects.filter(pk=entity.pk).update(demand_score=count, query_count=count)
    queue = [row["id"] for row in refresh_queue(limit=None)["entities"]]
    assert queue == [critical.pk, old.pk, big.pk]
    dry = run("request_stale_updates", "--dry-run")
    assert dry.splitlines()[1:] == [f"  {entity_id}" for entity_id in queue]
    run("request_stale_updates")
    assert _requested_ids(redis_client) == [[str(entity_id) for entity_id in queue]]


def test_request_stale_updates_requests_an_entity_again_once_its_request_is_old(stale_state, redis_client, settings):
    """d's open request (2 h old) marks it requested; with REFRESH_REQUEST_REPEAT_HOURS=1 it is new work again."""
    settings.REFRESH_REQUEST_REPEAT_HOURS = 1
    output = run("request_stale_updates")
    assert output.startswith("Requested a refresh of 3 stale entities")
    assert "0 skipped (requested in the last 1 h)" in output
    assert _requested_ids(redis_client) == [[str(stale_state[name].pk) for name in ("d", "a", "e")]]


def test_request_stale_updates_rejects_bad_options(stale_state):
    with pytest.raises(CommandError):
        call_command("request_stale_updates", "--limit", "-1")
    with pytest.raises(CommandError):
        call_command("request_stale_updates", "--min-demand-score", "abc")


# -- recompute_demand --------------------------------------------------------------------------------------


def _demand_state() -> dict[str, Entity]:
    """Counters that agree with buckets and buckets with the answers, as the worker and reconciliation leave them."""
    now = timezone.now()
    entities = {"x": EntityFactory(name="x"), "y": EntityFactory(name="y"), "never": EntityFactory(name="never")}
    hours = [hour_floor(now - timedelta(hours=h)) for h in (3, 30, 24 * 20)]
    counts = {(entities["x"].pk, hours[0]): 3, (entities["x"].pk, hours[2]): 2, (entities["y"].pk, hours[1]): 4}
    demand_buckets_add(counts=counts)
    for key, total, first in (("x", 5, hours[2]), ("y", 4, hours[1])):
        EntityDemand.objects.filter(pk=entities[key].pk).update(
            query_count=total, demand_score=total, first_queried_at=first, last_queried_at=now
        )
    # The answers those buckets counted: one subject each, their signals in the inbox, reconciled.
    answers = [
        PastAnswer(id=uuid.uuid4(), asked_at=hour + timedelta(minutes=n), question="q", entity_id=entity_id)
        for (entity_id, hour), count in counts.items()
        for n in range(count)
    ]
    past_answers_record(answers=answers)
    ProcessedEvent.objects.bulk_create(
        [ProcessedEvent(event_id=answer_signal_event_id(answer_id=a.id, entity_id=a.entity_id)) for a in answers]
    )
    assert answer_signals_reconcile().resent == 0
    return entities


def test_recompute_demand_check_passes_on_a_consistent_state():
    _demand_state()
    output = run("recompute_demand", "--check")
    assert output == (
        "Demand audit: 0 entities differ from their buckets; 3 entities checked, 0 skipped (first queried before "
        + output.split("first queried before ")[1]
    )
    assert (
        "Answer audit: 0 answers with signals not seen counted 120 s after they were sent (run reconcile_answers).\n"
        "Answer records audit: 0 entities' buckets differ from the answers of the same hours; 2 entities checked"
    ) in output


def test_recompute_demand_check_fails_on_answers_reconciliation_left_behind():
    _demand_state()
    entity = EntityFactory()
    hits = [SearchHit(entity.id, entity.name, entity.entity_type, {}, 1.0)]
    answer_record_create(
        question="q", hits=hits, user_id=None, latency_ms=1, composer="x", asked_at=timezone.now() - timedelta(hours=1)
    )
    out = StringIO()
    with pytest.raises(SystemExit) as exited:
        call_command("recompute_demand", "--check", stdout=out)
    assert exited.value.code == 1
    assert "Answer audit: 1 answers with signals not seen counted 120 s" in out.getvalue()


def test_recompute_demand_check_fails_on_buckets_that_differ_from_the_answers_of_their_hours():
    entities = _demand_state()
    x, y = entities["x"], entities["y"]
    hour = hour_floor(timezone.now() - timedelta(hours=3))
    # A lost count (x's bucket one short of its answers) and a count with no answer behind it (y, an hour with
    # none of its answers), each with the counters moved alike, so only the answer audit can see them.
    DemandBucket.objects.filter(entity_id=x.pk, hour=hour).update(count=F("count") - 1, returned=F("returned") - 1)
    demand_buckets_add(counts={(y.pk, hour): 1})
    EntityDemand.objects.filter(pk=x.pk).update(query_count=4, demand_score=4)
    EntityDemand.objects.filter(pk=y.pk).update(query_count=5, demand_score=5)
    out = StringIO()
    with pytest.raises(SystemExit) as exited:
        call_command("recompute_demand", "--check", stdout=out)
    assert exited.value.code == 1
    report = out.getvalue()
    assert "Demand audit: 0 entities differ from their buckets" in report
    # Summed over the audited hours: x 5 answers, 4 counted; y 4 answers, 5 counted.
    assert f"{x.pk} 'x': answers 5 returned / 5 as subject, buckets 4 returned / 4 as subject" in report
    assert f"{y.pk} 'y': answers 4 returned / 4 as subject, buckets 5 returned / 5 as subject" in report
    assert (
        "Answer records audit: 2 entities' buckets differ from the answers of the same hours; 2 entities checked"
        in report
    )


def test_recompute_demand_finds_and_repairs_drift():
    entities = _demand_state()
    x = entities["x"]
    updated_at = Entity.objects.get(pk=x.pk).updated_at
    EntityDemand.objects.filter(pk=x.pk).update(query_count=F("query_count") + 3)
    EntityDemand.objects.filter(pk=entities["never"].pk).update(demand_score=1)

    out = StringIO()
    with pytest.raises(SystemExit) as exited:
        call_command("recompute_demand", "--check", stdout=out)
    assert exited.value.code == 1
    report = out.getvalue()
    assert f"{x.pk} 'x': query_count 8, demand_score 5, buckets 5" in report
    assert f"{entities['never'].pk} 'never': query_count 0, demand_score 1, buckets 0" in report
    assert "Demand audit: 2 entities differ from their buckets; 3 entities checked" in report

    rebuild = run("recompute_demand").splitlines()
    assert rebuild[-1].startswith("Demand rebuild: 2 entities corrected from their buckets")
    assert len(rebuild) == 3  # the two entities it corrects, then the summary
    demand = EntityDemand.objects.get(pk=x.pk)
    assert (demand.query_count, demand.demand_score) == (5, 5)
    assert Entity.objects.get(pk=x.pk).updated_at == updated_at  # demand never touches content time
    assert run("recompute_demand", "--check").startswith("Demand audit: 0 entities differ")


def test_recompute_demand_skips_entities_whose_buckets_were_pruned(settings):
    old = EntityFactory(name="old")
    long_ago = timezone.now() - timedelta(days=200)
    # 7 events 200 days ago (their buckets pruned) and 2 recent ones still in the buckets.
    demand_buckets_add(counts={(old.pk, hour_floor(timezone.now())): 2})
    EntityDemand.objects.filter(pk=old.pk).update(query_count=9, demand_score=9, first_queried_at=long_ago)
    output = run("recompute_demand", "--check")
    assert output.startswith("Demand audit: 0 entities differ from their buckets; 0 entities checked, 1 skipped")
    assert run("recompute_demand").startswith("Demand rebuild: 0 entities corrected")
    assert EntityDemand.objects.get(pk=old.pk).query_count == 9


# -- prune_demand_data -------------------------------------------------------------------------------------


def test_prune_demand_data_drops_what_is_past_retention():
    entity = EntityFactory()
    now = timezone.now()
    demand_buckets_add(
        counts={
            (entity.pk, hour_floor(now - timedelta(days=120))): 1,
            (entity.pk, hour_floor(now - timedelta(days=100))): 1,
            (entity.pk, hour_floor(now - timedelta(days=10))): 1,
        }
    )
    ProcessedEvent.objects.bulk_create(
        [
            ProcessedEvent(event_id=uuid.uuid4(), processed_at=now - timedelta(days=8)),
            ProcessedEvent(event_id=uuid.uuid4(), processed_at=now - timedelta(days=8)),
            ProcessedEvent(event_id=uuid.uuid4(), processed_at=now - timedelta(days=1)),
        ]
    )
    for days in (91, 89):
        answer_record_create(
            question="q", hits=[], user_id=None, latency_ms=1, composer="x", asked_at=now - timedelta(days=days)
        )
    rule = AlertRule.objects.first()
    for days, status in ((91, "sent"), (91, "failed"), (91, "pending"), (89, "sent")):
        created = now - timedelta(days=days)
        AlertDelivery.objects.create(
            rule=rule,
            state="firing",
            url="http://127.0.0.1:9/",
            payload={"text": "t"},
            created_at=created,
            status=status,
            next_attempt_at=created,
        )
    assert run("prune_demand_data") == (
        "Pruned 2 demand buckets (retention 90 days), 2 inbox event ids (retention 7 days), "
        "1 answer records (retention 90 days) and 2 alert deliveries (retention 90 days).\n"
    )
    assert DemandBucket.objects.count() == 1
    assert ProcessedEvent.objects.count() == 1
    assert AnswerRecord.objects.count() == 1
    # An old pending delivery is still owed to its receiver; the recent one is inside the retention.
    assert sorted(AlertDelivery.objects.values_list("status", flat=True)) == ["pending", "sent"]
    assert run("prune_demand_data").startswith("Pruned 0 demand buckets")
