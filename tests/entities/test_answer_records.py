"""Answer records: written by every answer, the source of its signals' event ids, anonymised, pruned."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from entities.models import AnswerRecord, AnswerRecordEntity
from entities.questions import answer_signal_event_id
from entities.retrieval import SearchHit
from entities.selectors import answers_past_watermark, answers_unsettled
from entities.services import answer_record_create, answer_record_signals, answer_records_prune
from streams.events import event_parse
from tests.entities.catalog import catalog_create
from tests.entities.factories import EntityFactory, UserFactory

URL = "/api/answer"
QS = settings.STREAM_QUERY_SIGNALS


def ask(client, question: str, **body):
    return client.post(URL, json.dumps({"question": question, **body}), content_type="application/json")


def test_an_answer_writes_its_record_and_signals_carry_the_derived_event_ids(db, user, user_client, redis_client):
    catalog_create()
    body = ask(user_client, "Who is Chris Mansolillo?", limit=20).json()
    record = AnswerRecord.objects.get()
    assert record.user_id == user.pk
    assert record.question == "Who is Chris Mansolillo?"
    assert record.question_normalized == "who is chris mansolillo"
    assert record.composer == "extractive"
    assert record.result_count == len(body["entities"]) == 4
    assert record.subject_count == 1
    assert record.latency_ms > 0
    assert list(answers_past_watermark()) == [record]  # reconciliation has not passed it yet
    assert [(item["id"], item["role"], item["rank"], item["score"]) for item in record.entities] == [
        (entity["id"], entity["role"], entity["rank"], entity["score"]) for entity in body["entities"]
    ]
    assert record.entity_ids == [uuid.UUID(entity["id"]) for entity in body["entities"]]
    signals = [event_parse(QS, fields) for _id, fields in redis_client.xrange(QS)]
    assert [signal.event_id for signal in signals] == [
        answer_signal_event_id(answer_id=record.id, entity_id=entity_id) for entity_id in record.entity_ids
    ]
    assert {signal.timestamp for signal in signals} == {record.asked_at}


def test_each_returned_entity_gets_a_row_with_the_answers_time_and_question(db, user_client, redis_client):
    catalog_create()
    ask(user_client, "Who is Chris Mansolillo?", limit=20)
    record = AnswerRecord.objects.get()
    rows = AnswerRecordEntity.objects.filter(answer_id=record.id).order_by("rank")
    assert [(row.entity_id, row.role, row.rank) for row in rows] == [
        (uuid.UUID(item["id"]), item["role"], item["rank"]) for item in record.entities
    ]
    # The event id of the signal sent for it, which reconciliation checks against the inbox.
    assert [row.event_id for row in rows] == [signal.event_id for signal in answer_record_signals(record)]
    assert {(row.asked_at, row.question_normalized) for row in rows} == {(record.asked_at, "who is chris mansolillo")}


def test_an_answer_about_nothing_is_recorded_settled_with_no_entities(db, user_client, redis_client):
    catalog_create()
    ask(user_client, "What is the airspeed velocity of an unladen swallow?")
    record = AnswerRecord.objects.get()
    assert (record.result_count, record.entities) == (0, [])
    assert answers_unsettled(before=timezone.now() + timedelta(days=1)) == 0  # no signal to miss
    assert redis_client.xlen(QS) == 0


def test_a_bad_request_writes_no_record(db, user_client):
    assert user_client.post(URL, json.dumps({"question": ""}), content_type="application/json").status_code == 400
    assert not AnswerRecord.objects.exists()


def test_deleting_the_user_keeps_their_records_anonymised(db):
    person = UserFactory()
    record = answer_record_create(question="Who is X?", hits=[], user_id=person.pk, latency_ms=1.0, composer="x")
    person.delete()
    record.refresh_from_db()
    assert record.user_id is None
    assert record.question == "Who is X?"


def test_the_record_keeps_a_user_reference_and_nothing_of_the_credentials():
    columns = {field.column for field in AnswerRecord._meta.concrete_fields}
    assert "user_id" in columns
    assert not {column for column in columns if "token" in column or "password" in column or "email" in column}


def test_prune_drops_only_records_older_than_the_retention(db, settings):
    settings.ANSWER_RETENTION_DAYS = 90
    now = timezone.now()
    entity = EntityFactory()
    hits = [SearchHit(entity.id, entity.name, entity.entity_type, {}, 1.0)]
    for days in (0, 89, 91, 200):
        answer_record_create(
            question=f"{days}", hits=hits, user_id=None, latency_ms=1, composer="x", asked_at=now - timedelta(days=days)
        )
    assert answer_records_prune(now=now) == 2
    assert sorted(AnswerRecord.objects.values_list("question", flat=True)) == ["0", "89"]
    assert sorted(AnswerRecordEntity.objects.values_list("answer_id", flat=True)) == sorted(
        AnswerRecord.objects.values_list("id", flat=True)
    )
