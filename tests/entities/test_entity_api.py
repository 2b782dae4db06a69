"""The read-only entity API: auth, filters, search, ordering, pagination and JSON errors."""

from __future__ import annotations

import uuid

import pytest
from django.db.models import F

from entities.models import EntityDemand, EntityType
from tests.entities.factories import EntityFactory

pytestmark = pytest.mark.django_db

LIST_URL = "/api/entities/"


@pytest.fixture
def catalogue():
    people = [EntityFactory(name=f"Person {i}", entity_type=EntityType.PERSON) for i in range(3)]
    platform = EntityFactory(name="Streamly", entity_type=EntityType.PLATFORM)
    for entity, score in zip([*people, platform], [5, 9, 1, 7], strict=True):
        EntityDemand.objects.filter(entity=entity).update(demand_score=F("demand_score") + score, query_count=score)
    return {"people": people, "platform": platform}


def test_requires_authentication(api_client):
    response = api_client.get(LIST_URL)
    assert response.status_code == 401
    assert "error" in response.json()


def test_list_is_paginated_and_ordered_by_demand(user_client, catalogue):
    response = user_client.get(LIST_URL, {"limit": 2})
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 4
    assert [item["name"] for item in body["results"]] == ["Person 1", "Streamly"]
    assert body["next"] is not None
    second = user_client.get(LIST_URL, {"limit": 2, "offset": 2}).json()
    assert [item["name"] for item in second["results"]] == ["Person 0", "Person 2"]


def test_filter_by_entity_type(user_client, catalogue):
    body = user_client.get(LIST_URL, {"entity_type": "platform"}).json()
    assert [item["name"] for item in body["results"]] == ["Streamly"]


def test_unknown_entity_type_is_a_400_naming_allowed_values(user_client, catalogue):
    response = user_client.get(LIST_URL, {"entity_type": "wizard"})
    assert response.status_code == 400
    assert "wizard" in response.json()["error"]


def test_search_by_name(user_client, catalogue):
    body = user_client.get(LIST_URL, {"search": "stream"}).json()
    assert [item["name"] for item in body["results"]] == ["Streamly"]


def test_ordering_by_demand_fields(user_client, catalogue):
    body = user_client.get(LIST_URL, {"ordering": "demand_score"}).json()
    assert [item["demand_score"] for item in body["results"]] == [1, 5, 7, 9]


@pytest.mark.parametrize(
    "params",
    [
        {"ordering": "password"},
        {"ordering": "-embedding"},
        {"limit": "abc"},
        {"limit": "0"},
        {"limit": "100000"},
        {"offset": "-1"},
        {"min_demand_score": "lots"},
    ],
)
def test_bad_parameters_are_a_400_json_error(user_client, catalogue, params):
    response = user_client.get(LIST_URL, params)
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]


def test_detail(user_client, catalogue):
    platform = catalogue["platform"]
    body = user_client.get(f"{LIST_URL}{platform.pk}/").json()
    assert body["id"] == str(platform.pk)
    assert body["name"] == "Streamly"
    assert body["demand_score"] == 7
    assert "embedding" not in body


def test_unknown_id_is_a_404_json_error(user_client):
    response = user_client.get(f"{LIST_URL}{uuid.uuid4()}/")
    assert response.status_code == 404
    assert "No entity" in response.json()["error"]


@pytest.mark.parametrize("bad_id", ["not-a-uuid", "123", "0b5e-zz"])
def test_malformed_id_is_a_400_json_error(user_client, bad_id):
    response = user_client.get(f"{LIST_URL}{bad_id}/")
    assert response.status_code == 400
    assert bad_id in response.json()["error"]


def test_api_root_links_the_entity_endpoint(api_client):
    body = api_client.get("/api/").json()
    assert body["entities"].endswith("/api/entities/")
    assert body["docs"].endswith("/api/docs/")
