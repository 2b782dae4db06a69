"""`?format=csv` on the demand reports: the JSON's rows, parsed back with the csv module; errors stay JSON."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from analytics.definitions import hour_floor
from entities.models import EntityDemand
from entities.services import PastAnswer, past_answers_record
from tests.analytics.helpers import queries_add
from tests.entities.factories import EntityFactory

pytestmark = pytest.mark.django_db

BASE = "/api/analytics/demand/"
REPORTS = [
    ("top/", "entities", {"limit": 3, "offset": 1}),
    ("top/", "entities", {"entity_type": "company", "min_score": 2}),
    ("trending/", "trending", {"timeframe": "1d", "limit": 4}),
    ("trending/", "trending", {}),
    ("stale/", "stale_entities", {"limit": 2, "min_demand_score": 3, "days_since_update": 10}),
    ("stale/", "stale_entities", {}),
]


@pytest.fixture
def demand():
    """Entities of two types, some stale, some trending, one with a null last_queried_at, names that need quoting."""
    now = timezone.now()
    h0 = hour_floor(now)
    names = ["Gina Prince", 'Studio "North", Inc.', "Ava\nLines", "Quiet One", "Élan Films"]
    for index, name in enumerate(names):
        entity = EntityFactory(
            name=name, entity_type="company" if index % 2 else "person", updated_at=now - timedelta(days=15 * index)
        )
        queries_add(entity, h0 - timedelta(hours=2), 3 + index)
        if index % 2:
            queries_add(entity, h0 - timedelta(hours=30), 2)
            EntityDemand.objects.filter(pk=entity.pk).update(last_queried_at=now - timedelta(hours=index))


def csv_text(value) -> str:
    """A JSON value as its CSV cell reads back: null is empty, booleans are true/false."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@pytest.mark.parametrize(("path", "rows", "params"), REPORTS)
def test_csv_rows_are_the_json_rows(staff_client, demand, path, rows, params):
    expected = staff_client.get(BASE + path, params).json()[rows]
    response = staff_client.get(BASE + path, {**params, "format": "csv"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"] == f'attachment; filename="analytics-demand-{path.rstrip("/")}.csv"'
    header, *body = list(csv.reader(io.StringIO(response.content.decode())))
    assert expected, "the fixture gives every report rows"
    assert header == list(expected[0])
    assert body == [[csv_text(item[key]) for key in header] for item in expected]


def test_the_fixture_exercises_quoting_nulls_and_booleans(staff_client, demand):
    text = staff_client.get(BASE + "top/", {"format": "csv"}).content.decode()
    assert '"Studio ""North"", Inc."' in text and '"Ava\nLines"' in text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert {row["needs_update"] for row in rows} == {"true", "false"}
    assert "" in {row["last_queried_at"] for row in rows}


@pytest.mark.parametrize("path", ["top/", "trending/", "stale/"])
def test_an_empty_report_is_a_header_row(staff_client, path):
    response = staff_client.get(BASE + path, {"format": "csv"})
    assert response.status_code == 200
    (header,) = list(csv.reader(io.StringIO(response.content.decode())))
    assert "id" in header and "name" in header


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("top/", {"limit": "0"}),
        ("top/", {"entity_type": "wizard"}),
        ("trending/", {"timeframe": "2d"}),
        ("stale/", {"days_since_update": "-1"}),
    ],
)
def test_bad_parameters_with_format_csv_are_a_400_json(staff_client, path, params):
    response = staff_client.get(BASE + path, {**params, "format": "csv"})
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert "Content-Disposition" not in response
    (name,) = params
    assert response.json()["error"].startswith(f"{name}: ")


def test_an_unknown_format_is_a_400_that_names_the_formats(staff_client):
    response = staff_client.get(BASE + "top/", {"format": "xlsx"})
    assert response.status_code == 400
    assert response.json()["error"] == "format: must be one of json, csv."


def test_access_rules_hold_for_csv_and_answer_in_json(api_client, user_client):
    response = api_client.get(BASE + "top/", {"format": "csv"})
    assert (response.status_code, response["Content-Type"]) == (401, "application/json")
    response = user_client.get(BASE + "stale/", {"format": "csv"})
    assert (response.status_code, response["Content-Type"]) == (403, "application/json")
    assert response.json() == {"error": "Only staff users may read analytics."}


def test_json_stays_the_default(staff_client, demand):
    response = staff_client.get(BASE + "top/")
    assert response["Content-Type"] == "application/json"
    assert "Content-Disposition" not in response
    assert staff_client.get(BASE + "top/", {"format": "json"}).json() == response.json()


def test_options_with_format_csv_is_the_json_metadata(staff_client):
    response = staff_client.options(BASE + "stale/?format=csv")
    assert (response.status_code, response["Content-Type"]) == (200, "application/json")
    assert response.json()["name"] == "Demand Stale Api"


@pytest.mark.parametrize(("path", "params"), [("top/", {"timeframe": "1d", "limit": 5}), ("gaps/", {})])
def test_question_reports_csv_rows_are_the_json_rows(staff_client, path, params):
    now = timezone.now()
    (entity,) = EntityFactory.create_batch(1, name="Gina Prince")
    questions = ["Who is Gina Prince?", "who is gina prince", 'Who buys "puppet" musicals, really?', "Gina's deals"]
    past_answers_record(
        answers=[
            PastAnswer(
                id=uuid.uuid4(),
                asked_at=now - timedelta(minutes=10 + n),
                question=question,
                entity_id=None if "puppet" in question else entity.pk,
                entity_type=entity.entity_type,
            )
            for n, question in enumerate(questions * 2)
        ]
    )
    url = "/api/analytics/questions/" + path
    expected = staff_client.get(url, params).json()["questions"]
    response = staff_client.get(url, {**params, "format": "csv"})
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert expected and rows == [{key: csv_text(value) for key, value in item.items()} for item in expected]
