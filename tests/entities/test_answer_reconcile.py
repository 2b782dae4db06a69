"""Reconciliation: signals Redis lost after accepting them are re-sent from the answer records, counted once."""

from __future__ import annotations

import json
import re
import signal
from collections import Counter
from datetime import timedelta

import pytest
import redis
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone

from analytics.selectors import demand_answers_audit
from entities import services as entity_services
from entities.models import AnswerRecord, AnswerRecordEntity, AnswerSignalsPending, Entity, EntityDemand
from entities.selectors import answers_past_watermark, answers_unsettled
from entities.services import answer_signals_reconcile
from mandate_wizard.devservers import EmbeddedRedis
from streams.handlers import chores
from streams.models import OutboxEvent, ProcessedEvent
from streams.redis import redis_client
from streams.worker import StreamWorker
from tests.entities.catalog import catalog_create
from tests.live import counted_expected, counted_wait, live_stack, load_run, until
from tests.streams.pipeline import worker_drain

QS = settings.STREAM_QUERY_SIGNALS
QUESTIONS = [
    "Who is Chris Mansolillo?",
    "who is chris mansolillo",
    "Who is Chris?",
    "Tell me about Silver Harbor Studios",
    "What is the airspeed velocity of an unladen swallow?",
]


def ask_all(client, questions) -> None:
    for question in questions:
        response = client.post("/api/answer", json.dumps({"question": question}), content_type="application/json")
        assert response.status_code == 200


def counts_expected() -> dict:
    """Each answer record counts once for each entity it returned."""
    return dict(Counter(entity_id for record in AnswerRecord.objects.all() for entity_id in record.entity_ids))


def counts_actual() -> dict:
    return dict(EntityDemand.objects.filter(query_count__gt=0).values_list("entity_id", "query_count"))


def later(seconds: int = 1) -> timezone.datetime:
    return timezone.now() + timedelta(seconds=settings.ANSWER_RECONCILE_AFTER_SECONDS + seconds)


def test_signals_lost_by_an_empty_redis_restart_are_resent_and_counted_exactly_once(db, user_client, private_redis):
    catalog_create()
    worker = StreamWorker(consumer="reconcile-test", batch_size=100, block_ms=10)
    worker_drain(worker)  # the group exists before the answers
    ask_all(user_client, QUESTIONS * 3)
    lost = redis_client().xlen(QS)
    lost_answers = AnswerRecord.objects.filter(result_count__gt=0).count()
    assert lost > 0
    # Redis restarts empty (no persistence) after accepting the entries and before the worker read them.
    private_redis.kill()
    private_redis.start()
    ask_all(user_client, QUESTIONS[:2])  # published after the restart: the fast path counts these
    worker_drain(worker)
    expected = counts_expected()
    assert sum(counts_actual().values()) < sum(expected.values())

    assert answer_signals_reconcile().checked == 0  # nothing is older than the bound yet
    first = answer_signals_reconcile(now=later())
    assert first.resent == lost
    # The watermark passed every answer; those that returned nothing sent nothing to check.
    assert first.checked == AnswerRecord.objects.filter(result_count__gt=0).count()
    assert AnswerRecord.objects.filter(result_count=0).exists()
    assert first.settled == first.checked - lost_answers  # counted: nothing written for them
    worker_drain(worker)
    assert counts_actual() == expected
    assert ProcessedEvent.objects.count() == sum(expected.values())

    assert AnswerSignalsPending.objects.count() == lost_answers  # only the answers with a lost signal
    second = answer_signals_reconcile(now=later(2 * settings.ANSWER_RECONCILE_AFTER_SECONDS + 1))
    assert (second.resent, second.given_up) == (0, 0)
    assert answers_past_watermark().filter(asked_at__lt=later()).count() == 0
    assert answers_unsettled(before=later(10_000)) == 0
    assert answer_signals_reconcile(now=later(10_000)).checked == 0
    worker_drain(worker)
    assert counts_actual() == expected
    # The buckets agree with the records per entity, related entities (buckets' `returned`) included, once
    # the answers' hour is closed and audited.
    audit = demand_answers_audit(now=timezone.now() + timedelta(hours=2))
    assert audit.checked == len(expected) and audit.differences == []


def test_resent_signals_are_not_resent_again_before_the_bound_passes_once_more(db, user_client, redis_client):
    catalog_create()
    ask_all(user_client, QUESTIONS[:1])
    redis_client.delete(QS)  # an entry deleted by hand
    returned = AnswerRecord.objects.get().result_count
    now = later()
    assert answer_signals_reconcile(now=now).resent == returned
    assert answer_signals_reconcile(now=now + timedelta(seconds=1)).resent == 0
    assert redis_client.xlen(QS) == returned


def test_nothing_is_resent_while_the_outbox_holds_events(db, user_client, redis_client, monkeypatch):
    monkeypatch.setattr(entity_services, "RECONCILE_CHUNK", 1)  # held records must not come round again
    catalog_create()
    ask_all(user_client, QUESTIONS[:3])
    redis_client.delete(QS)
    returned = sum(AnswerRecord.objects.values_list("result_count", flat=True))
    OutboxEvent.objects.create(stream=QS, fields={"event_id": "waiting"})
    held = answer_signals_reconcile(now=later())
    assert (held.checked, held.resent, held.held, held.settled) == (3, 0, returned, 0)
    assert redis_client.xlen(QS) == 0
    OutboxEvent.objects.all().delete()
    resent = answer_signals_reconcile(now=later())
    assert (resent.checked, resent.resent) == (3, returned)


def test_rows_without_a_stored_event_id_are_checked_by_the_derived_ids(db, user_client, redis_client):
    """Rows written before entities 0014, or by the release before during its deploy, have no event id:
    counted ones settle without a re-send, lost ones are re-sent."""
    catalog_create()
    worker = StreamWorker(consumer="reconcile-test", batch_size=100, block_ms=10)
    worker_drain(worker)
    ask_all(user_client, QUESTIONS[:1])
    worker_drain(worker)  # counted
    ask_all(user_client, QUESTIONS[3:4])
    redis_client.delete(QS)  # lost
    lost = AnswerRecord.objects.latest("asked_at").result_count
    assert AnswerRecordEntity.objects.update(event_id=None) > lost > 0
    outcome = answer_signals_reconcile(now=later())
    assert (outcome.checked, outcome.settled, outcome.resent) == (2, 1, lost)
    worker_drain(worker)
    assert counts_actual() == counts_expected()


def test_reconcile_gives_up_on_deleted_entities_and_records_past_the_inbox_retention(db, user_client, redis_client):
    catalog_create()
    ask_all(user_client, ["Who is Chris Mansolillo?"])
    redis_client.delete(QS)
    record = AnswerRecord.objects.get()
    Entity.objects.filter(id__in=record.entity_ids).delete()
    outcome = answer_signals_reconcile(now=later())
    assert (outcome.resent, outcome.given_up, outcome.settled) == (0, record.result_count, 1)

    ask_all(user_client, ["Who is Chris?"])
    redis_client.delete(QS)
    old = AnswerRecord.objects.latest("asked_at")
    assert old.result_count > 0
    outcome = answer_signals_reconcile(now=timezone.now() + timedelta(days=settings.INBOX_RETENTION_DAYS, seconds=1))
    assert (outcome.resent, outcome.given_up, outcome.settled) == (0, old.result_count, 1)
    assert redis_client.xlen(QS) == 0


def test_reconcile_answers_command_reports_what_it_did(db, user_client, redis_client, settings):
    catalog_create()
    settings.ANSWER_RECONCILE_AFTER_SECONDS = 0
    ask_all(user_client, ["Who is Chris Mansolillo?"])
    redis_client.delete(QS)
    out = _run("reconcile_answers")
    assert out.startswith("checked 1 answers older than 0 s: 0 settled, ")
    assert "given up" in out


def _run(*args) -> str:
    from io import StringIO

    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_entities_registers_reconciliation_as_a_worker_chore_at_half_the_bound(settings):
    (chore,) = [chore for chore in chores() if chore.name == "answer_signals_reconcile"]
    assert chore.run is entity_services.answer_signals_reconcile
    assert chore.interval == settings.ANSWER_RECONCILE_AFTER_SECONDS / 2
    assert chore.thread  # beside the batches, not between them


@pytest.mark.slow
def test_redis_restarted_empty_under_load_loses_no_signal_of_any_answer(private_postgres_factory, tmp_path):
    """Clients ask through gunicorn while a real worker counts; Redis restarts empty holding entries the worker
    never read. Every 200 answer's signals are counted exactly once, re-sent from the records within the bound."""
    server = private_postgres_factory("pg-redis-loss")
    redis_server = EmbeddedRedis(tmp_path / "redis")  # the test's own, so it can kill it
    redis_server.start()
    try:
        with live_stack(database_url=server.url, redis_url=redis_server.url, workdir=tmp_path) as live:
            stream = f"{live.env['STREAM_KEY_PREFIX']}:query_signals"
            client = redis.Redis.from_url(redis_server.url, decode_responses=True)
            unread = {}

            def answers_with_entities(seen, start):
                return sum(1 for status, _, text in seen[start:] if status == 200 and '"entities":[{' in text)

            def during(seen: list, answered: list) -> None:
                until(lambda: answers_with_entities(seen, 0) >= 10)
                # The worker is paused (a real process, stopped), so what is published now is accepted and unread.
                live.worker.send_signal(signal.SIGSTOP)
                paused = len(seen)
                until(lambda: answers_with_entities(seen, paused) >= 10)
                (group,) = client.xinfo_groups(stream)
                unread["entries"] = group["lag"]
                redis_server.kill()  # no persistence: it starts again empty
                redis_server.start()
                live.worker.send_signal(signal.SIGCONT)
                restarted = len(seen)
                until(lambda: answers_with_entities(seen, restarted) >= 10, timeout=30)

            seen, answered = load_run(live.base, during)
            assert unread["entries"] > 0
            assert {status for status, _, _ in seen} == {200}  # Redis down: the answers' signals go to the outbox
            expected = counted_expected(answered)
            # ANSWER_RECONCILE_AFTER_SECONDS is 2 here: the lost signals are re-sent a bound after they were sent.
            assert counted_wait(server.url, expected, timeout=30) == expected
            assert live.worker.poll() is None
        log = (tmp_path / "worker.log").read_text()
        resent = sum(int(n) for n in re.findall(r"(\d+) signals re-sent", log))
        assert resent >= unread["entries"], log[-2000:]
    finally:
        redis_server.kill()
