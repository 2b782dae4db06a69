"""`POST /api/answer` through the URL stack: auth, validation, answer shape, signals, throttling, Redis down."""

from __future__ import annotations

import json
import uuid
from datetime import datetime

import pytest
from django.conf import settings
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from analytics.demand import query_signals_apply
from entities.answers import NOTHING_FOUND
from entities.models import EntityDemand
from streams.events import QuerySignal, event_parse
from streams.models import OutboxEvent
from streams.redis import redis_client as stream_redis
from streams.services import outbox_relay
from tests.entities.catalog import catalog_create

URL = "/api/answer"
QS = settings.STREAM_QUERY_SIGNALS


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
    assert set(first) == {"id", "name", "entity_type", "score", "snippet", "role", "rank"}
    assert (first["name"], first["role"], first["rank"]) == ("Chris Mansolillo", "subject", 1)
    assert first["id"] == str(catalog["Chris Mansolillo"].id)
    assert first["entity_type"] == "person"
    # Then what his record names: his company and greenlit projects, as related.
    assert [(entity["name"], entity["role"], entity["rank"]) for entity in body["entities"][1:]] == [
        ("Silver Harbor Studios", "related", 2),
        ("The Midnight Crown", "related", 3),
    ]
    assert body["answer"].startswith("Chris Mansolillo is SVP, Scripted Development at Silver Harbor Studios.")
    assert "elevated horror" in body["answer"]
    assert "The Midnight Crown" in body["answer"]  # recent greenlights
    assert body["answer"].endswith(
        "Related to Chris Mansolillo: Silver Harbor Studios (company); The Midnight Crown (project)."
    )
    assert "Buying elevated horror" in first["snippet"]


def test_asking_about_chris_mansolillo_returns_only_him_as_subject_and_no_other_chris(
    catalog, user, jwt_client, redis_client
):
    body = ask(jwt_client, {"question": "Who is Chris Mansolillo?", "limit": 20}).json()
    names = [entity["name"] for entity in body["entities"]]
    assert [entity["name"] for entity in body["entities"] if entity["role"] == "subject"] == ["Chris Mansolillo"]
    assert not {"Chris Ishikawa", "Chris Pryce", "Chris Carrow"} & set(names)
    # `limit` is a maximum: him and the three entities his record names, not 20.
    assert names == ["Chris Mansolillo", "Silver Harbor Studios", "The Midnight Crown", "Echoes of Glass"]
    assert [entity["rank"] for entity in body["entities"]] == [1, 2, 3, 4]
    assert "Other Chris" not in body["answer"] and "Chris Pryce" not in body["answer"]


@pytest.mark.parametrize("limit", [1, 2])
def test_limit_is_a_maximum_and_the_subject_comes_first(catalog, jwt_client, redis_client, limit):
    entities = ask(jwt_client, {"question": "Who is Chris Mansolillo?", "limit": limit}).json()["entities"]
    assert len(entities) == limit
    assert (entities[0]["name"], entities[0]["role"]) == ("Chris Mansolillo", "subject")
    assert redis_client.xlen(QS) == limit


def test_the_default_limit_is_five_at_most(catalog, jwt_client, redis_client):
    entities = ask(jwt_client, {"question": "Who is Chris?"}).json()["entities"]
    # Four people are called Chris: each is a subject (the question could mean any of them), no more.
    assert sorted(entity["name"] for entity in entities) == [
        "Chris Carrow",
        "Chris Ishikawa",
        "Chris Mansolillo",
        "Chris Pryce",
    ]
    assert {entity["role"] for entity in entities} == {"subject"}


@pytest.mark.parametrize(
    "question",
    [
        "Who is Chris Mansolilo?",  # drop, last name
        "Who is Chris Mansollillo?",  # double, last name
        "Who is Chris Mnasolillo?",  # swap, last name
        "Who is Chris Mansolillp?",  # replace, last name
        "Who is Chrs Mansolillo?",  # drop, first name
        "Who is Chriss Mansolillo?",  # double, first name
        "Who is Chirs Mansolillo?",  # swap, first name
        "Who is Chros Mansolillo?",  # replace, first name
        "WHO IS CHRIS MANSOLILLO",
        "who's chris mansolillo?",
        "What is Chris Mansolillo\u2019s mandate?",
        "Mansolillo's mandate",
        "tell me about Chris Mansolillo at Silver Harbor Studios",
        "Quick one: what is Chris Mansolillo buying these days, do you know?",
    ],
)
def test_every_kind_of_typo_and_phrasing_finds_him_and_only_him(catalog, jwt_client, redis_client, question):
    entities = ask(jwt_client, {"question": question}).json()["entities"]
    subjects = [entity["name"] for entity in entities if entity["role"] == "subject"]
    assert subjects == ["Chris Mansolillo"]
    assert entities[0]["rank"] == 1
    assert not {entity["name"] for entity in entities} & {"Chris Ishikawa", "Chris Pryce", "Chris Carrow"}


def test_a_list_question_returns_only_the_entities_meeting_every_constraint(catalog, jwt_client, redis_client):
    # At Granite Media: Chris Ishikawa (workplace comedy) and Chris Carrow (heist thrillers); Chris Pryce
    # wants comedies at another company.
    body = ask(jwt_client, {"question": "Which executives at Granite Media are looking for comedies?"}).json()
    assert [(entity["name"], entity["role"], entity["rank"]) for entity in body["entities"]] == [
        ("Chris Ishikawa", "subject", 1)
    ]
    body = ask(jwt_client, {"question": "Who is looking for heist thrillers?"}).json()
    assert sorted(entity["name"] for entity in body["entities"]) == ["Chris Carrow", "Marcus Whitaker"]
    assert {entity["role"] for entity in body["entities"]} == {"subject"}
    assert body["answer"].startswith("2 matches: ")


def test_one_signal_per_returned_entity_with_its_role_and_rank_lands_in_the_stream(
    catalog, user, jwt_client, redis_client
):
    question = "Who is Chris Mansolillo?"
    before = datetime.now().astimezone()
    body = ask(jwt_client, {"question": question, "limit": 4}).json()
    returned = {entity["id"]: entity for entity in body["entities"]}
    assert len(returned) == 4

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
        assert (signal.role, signal.rank) == (
            returned[str(signal.entity_id)]["role"],
            returned[str(signal.entity_id)]["rank"],
        )
        assert signal.timestamp >= before.replace(microsecond=0)
    by_rank = sorted(signals, key=lambda signal: signal.rank)
    assert [(signal.role, signal.rank) for signal in by_rank] == [
        ("subject", 1),
        ("related", 2),
        ("related", 3),
        ("related", 4),
    ]
    assert by_rank[0].entity_id == catalog["Chris Mansolillo"].id
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
