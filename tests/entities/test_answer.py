"""`POST /api/answer` through the URL stack: auth, validation, answer shape, signals, throttling, Redis down."""

from __future__ import annotations

import json
import uuid
from datetime import datetime

import pytest
from django.conf import settings
from django.core.cache import cache
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from analytics.demand import query_signals_apply
from entities.answers import NOTHING_FOUND
from entities.models import EntityDemand
from streams.events import QuerySignal, event_parse
from streams.models import OutboxEvent
from streams.publisher import redis_circuit
from streams.redis import redis_client as stream_redis
from streams.services import outbox_relay
from tests.entities.catalog import catalog_create

URL = "/api/answer"
QS = settings.STREAM_QUERY_SIGNALS


@pytest.fixture(autouse=True)
def clean_state():
    cache.clear()
    redis_circuit.reset()
    yield
    redis_circuit.reset()
    cache.clear()


@pytest.fixture
def catalog(db):
    return catalog_create()


@pytest.fixture
def jwt_client(user) -> APIClient:
    """A client that authenticates the real way: a Bearer access token."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(user).access_token}")
    return client


def ask(client: APIClient, body, **extra):
    return client.post(URL, json.dumps(body), content_type="application/json", **extra)


def test_answer_requires_a_bearer_token(db, api_client):
    response = ask(api_client, {"question": "Who is Chris Mansolillo?"})
    assert response.status_code == 401
    assert "error" in response.json()
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_bad_token_is_401(db, api_client):
    api_client.credentials(HTTP_AUTHORIZATION="Bearer not-a-jwt")
    response = ask(api_client, {"question": "Who is Chris Mansolillo?"})
    assert response.status_code == 401
    assert isinstance(response.json()["error"], str)


def test_a_refresh_token_is_not_an_access_token(user, api_client):
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(user)}")
    assert ask(api_client, {"question": "Who is Chris Mansolillo?"}).status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"limit": 5},
        {"question": ""},
        {"question": "   \n\t "},
        {"question": "x" * 1001},
        {"question": None},
        {"question": 42},
        {"question": ["Who is Chris Mansolillo?"]},
        {"question": {"text": "Who?"}},
        {"question": "ok\x00"},
        {"question": "Who is Chris?", "limit": 0},
        {"question": "Who is Chris?", "limit": 21},
        {"question": "Who is Chris?", "limit": -1},
        {"question": "Who is Chris?", "limit": "5"},
        {"question": "Who is Chris?", "limit": 5.0},
        {"question": "Who is Chris?", "limit": 2.5},
        {"question": "Who is Chris?", "limit": True},
        {"question": "Who is Chris?", "limit": None},
        {"question": "Who is Chris?", "limit": [5]},
        {"question": "Who is Chris?", "filters": {"type": "person"}},
        ["Who is Chris?"],
        "Who is Chris?",
        42,
        None,
    ],
)
def test_every_bad_body_is_a_400_json_error(db, jwt_client, body):
    response = ask(jwt_client, body)
    assert response.status_code == 400, response.content
    assert isinstance(response.json()["error"], str) and response.json()["error"]


def test_malformed_json_is_a_400(db, jwt_client):
    response = jwt_client.post(URL, '{"question": "Who', content_type="application/json")
    assert response.status_code == 400
    assert "JSON" in response.json()["error"]


def test_a_form_body_is_415(db, jwt_client):
    response = jwt_client.post(URL, {"question": "Who is Chris?"}, format="multipart")
    assert response.status_code == 415
    assert "error" in response.json()


def test_a_1000_character_question_after_trimming_is_accepted(catalog, jwt_client, redis_client):
    question = "Who is Chris Mansolillo? " + "x" * (1000 - len("Who is Chris Mansolillo? "))
    response = ask(jwt_client, {"question": f"   {question}\n  "})
    assert response.status_code == 200
    assert response.json()["question"] == question


def test_answer_names_the_person_from_their_data(catalog, jwt_client, redis_client):
    response = ask(jwt_client, {"question": "  Who is Chris Mansolillo?  ", "limit": 3})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"answer", "entities", "question"}
    assert body["question"] == "Who is Chris Mansolillo?"
    first = body["entities"][0]
    assert set(first) == {"id", "name", "entity_type", "score", "snippet"}
    assert first["name"] == "Chris Mansolillo"
    assert first["id"] == str(catalog["Chris Mansolillo"].id)
    assert first["entity_type"] == "person"
    assert 1 <= len(body["entities"]) <= 3
    # A "who" question lists people first; each group is ordered by score.
    entities = body["entities"]
    people = [entity for entity in entities if entity["entity_type"] == "person"]
    assert entities[: len(people)] == people
    for group in (people, entities[len(people) :]):
        assert [entity["score"] for entity in group] == sorted((entity["score"] for entity in group), reverse=True)
    assert body["answer"].startswith("Chris Mansolillo is SVP, Scripted Development at Silver Harbor Studios.")
    assert "elevated horror" in body["answer"]
    assert "The Midnight Crown" in body["answer"]  # recent greenlights
    assert "Buying elevated horror" in first["snippet"]


def test_the_default_limit_is_five(catalog, jwt_client, redis_client):
    response = ask(jwt_client, {"question": "Who is Chris?"})
    assert response.status_code == 200
    assert 2 <= len(response.json()["entities"]) <= 5


def test_one_signal_per_returned_entity_lands_in_the_stream(catalog, user, jwt_client, redis_client):
    question = "Who is Chris Mansolillo?"
    before = datetime.now().astimezone()
    body = ask(jwt_client, {"question": question, "limit": 4}).json()
    returned = {entity["id"]: entity for entity in body["entities"]}
    assert len(returned) >= 2

    entries = redis_client.xrange(QS)
    assert len(entries) == len(returned)
    signals = [event_parse(QS, fields) for _entry_id, fields in entries]
    assert all(isinstance(signal, QuerySignal) for signal in signals)
    assert {str(signal.entity_id) for signal in signals} == set(returned)
    assert len({signal.event_id for signal in signals}) == len(signals)
    for signal in signals:
        assert signal.query == question
        assert signal.user_id == str(user.pk)
        assert signal.entity_type == returned[str(signal.entity_id)]["entity_type"]
        assert signal.timestamp >= before.replace(microsecond=0)
    assert not OutboxEvent.objects.exists()


def test_nothing_relevant_says_so_with_no_entities_and_no_signals(catalog, jwt_client, redis_client):
    response = ask(jwt_client, {"question": "What is the weather in Paris tomorrow?"})
    assert response.status_code == 200
    assert response.json()["entities"] == []
    assert response.json()["answer"] == NOTHING_FOUND
    assert redis_client.xlen(QS) == 0
    assert not OutboxEvent.objects.exists()


def test_answers_are_throttled_per_user_with_retry_after(catalog, user, jwt_client, redis_client, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "answer_user": "2/min"},
    }
    assert [ask(jwt_client, {"question": "Who is Chris?"}).status_code for _ in range(2)] == [200, 200]
    response = ask(jwt_client, {"question": "Who is Chris?"})
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    assert "error" in response.json()

    other = APIClient()
    other_user = type(user).objects.create_user(username="other@example.com", email="other@example.com")
    other.credentials(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(other_user).access_token}")
    assert ask(other, {"question": "Who is Chris?"}).status_code == 200


def test_redis_down_answer_still_200_signals_outboxed_then_relayed_and_counted_once(
    catalog, user, jwt_client, private_redis, settings
):
    # The throttle cache is on the same (stopped) Redis, as in production.
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": private_redis.url}}
    private_redis.stop()

    response = ask(jwt_client, {"question": "Who is Chris Mansolillo?", "limit": 3})
    assert response.status_code == 200
    returned = [entity["id"] for entity in response.json()["entities"]]
    assert returned[0] == str(catalog["Chris Mansolillo"].id)
    outboxed = list(OutboxEvent.objects.order_by("id"))
    assert [row.stream for row in outboxed] == [QS] * len(returned)
    assert sorted(row.fields["entity_id"] for row in outboxed) == sorted(returned)

    private_redis.start()
    assert outbox_relay() == len(returned)
    assert not OutboxEvent.objects.exists()
    entries = stream_redis().xrange(QS)
    signals = [event_parse(QS, fields) for _entry_id, fields in entries]
    assert sorted(str(signal.entity_id) for signal in signals) == sorted(returned)

    assert query_signals_apply(signals=signals).applied == len(returned)
    # Delivered again (a worker crash before XACK): the inbox makes it a no-op.
    assert query_signals_apply(signals=signals).applied == 0
    counts = dict(
        EntityDemand.objects.filter(entity_id__in=[uuid.UUID(i) for i in returned]).values_list(
            "entity_id", "query_count"
        )
    )
    assert set(counts.values()) == {1}


def test_a_hung_redis_neither_fails_nor_hangs_the_answer(catalog, jwt_client, private_redis, settings):
    """SIGSTOP: the server accepts connections but never replies (the cache and the publisher both time out)."""
    import signal

    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": private_redis.url}}
    private_redis.process.send_signal(signal.SIGSTOP)
    try:
        response = ask(jwt_client, {"question": "Who is Chris Mansolillo?", "limit": 2})
    finally:
        private_redis.process.send_signal(signal.SIGCONT)
    assert response.status_code == 200
    assert response.json()["entities"][0]["name"] == "Chris Mansolillo"
    assert OutboxEvent.objects.count() == len(response.json()["entities"])
