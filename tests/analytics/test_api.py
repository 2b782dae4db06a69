"""The HTTP API of demand analytics: shapes, every bad parameter, access rules (real clock, real URL stack)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

from analytics.definitions import hour_floor
from entities.models import EntityDemand
from tests.analytics.helpers import queries_add
from tests.entities.factories import EntityFactory

pytestmark = pytest.mark.django_db

BASE = "/api/analytics/demand/"
LIST_ENDPOINTS = ["stats/", "top/", "trending/", "stale/"]


@pytest.fixture
def entity():
    return EntityFactory(name="Gina Prince", updated_at=timezone.now() - timedelta(days=40))


def entity_endpoints(entity) -> list[str]:
    return [f"entity/{entity.pk}/", f"entity/{entity.pk}/timeseries/"]


# -- access -------------------------------------------------------------------------------------------------


def test_anonymous_gets_401_with_a_bearer_challenge(api_client, entity):
    for path in LIST_ENDPOINTS + entity_endpoints(entity):
        response = api_client.get(BASE + path)
        assert response.status_code == 401, path
        assert response["WWW-Authenticate"].startswith("Bearer")
        assert "error" in response.json()


def test_non_staff_gets_403(user_client, entity):
    for path in LIST_ENDPOINTS + entity_endpoints(entity):
        response = user_client.get(BASE + path)
        assert response.status_code == 403, path
        assert response.json() == {"error": "Only staff users may read analytics."}


def test_staff_gets_200(staff_client, entity):
    for path in LIST_ENDPOINTS + entity_endpoints(entity):
        assert staff_client.get(BASE + path).status_code == 200, path


def test_setting_opens_analytics_to_every_signed_in_user(settings, user_client, api_client, entity):
    settings.ANALYTICS_STAFF_ONLY = False
    for path in LIST_ENDPOINTS + entity_endpoints(entity):
        assert user_client.get(BASE + path).status_code == 200, path
        assert api_client.get(BASE + path).status_code == 401, path


def test_staff_with_a_jwt_bearer_token_or_a_session(staff_user, user):
    bearer = APIClient()
    bearer.credentials(HTTP_AUTHORIZATION=f"Bearer {AccessToken.for_user(staff_user)}")
    assert bearer.get(BASE + "stats/").status_code == 200
    non_staff = APIClient()
    non_staff.credentials(HTTP_AUTHORIZATION=f"Bearer {AccessToken.for_user(user)}")
    assert non_staff.get(BASE + "stats/").status_code == 403
    session = APIClient()
    session.force_login(staff_user)
    assert session.get(BASE + "stats/").status_code == 200


def test_api_root_links_the_analytics_endpoints(staff_client):
    links = staff_client.get("/api/").json()
    assert links["analytics-demand-trending"].endswith(BASE + "trending/")
    assert links["analytics-demand-stats"].endswith(BASE + "stats/")


# -- shapes -------------------------------------------------------------------------------------------------


def test_stats_shape(staff_client, entity):
    queries_add(entity, hour_floor(timezone.now()), 6)
    body = staff_client.get(BASE + "stats/").json()
    assert body == {
        "total_entities": 1,
        "total_queries": 6,
        "entities_with_demand": 1,
        "avg_demand_score": 6.0,
        "trending_entities": 1,
        "needs_update": 1,
        "top_entity_types": [{"type": "person", "count": 1, "avg_score": 6.0}],
    }


def test_top_shape(staff_client, entity):
    queries_add(entity, hour_floor(timezone.now()), 6)
    EntityFactory(name="Quiet")
    body = staff_client.get(BASE + "top/", {"limit": 1}).json()
    assert (body["total"], body["limit"], body["offset"]) == (1, 1, 0)
    (row,) = body["entities"]
    assert set(row) >= {
        "id",
        "name",
        "entity_type",
        "demand_score",
        "query_count",
        "last_queried_at",
        "last_updated_at",
        "needs_update",
    }
    assert (row["id"], row["demand_score"], row["needs_update"]) == (str(entity.pk), 6, True)
    assert staff_client.get(BASE + "top/", {"entity_type": "company"}).json()["entities"] == []
    assert staff_client.get(BASE + "top/", {"min_score": 7}).json()["total"] == 0


def test_trending_shape(staff_client, entity):
    # Two hours ago and thirty hours ago stay in the same 1d windows even if the hour turns during the test.
    now = hour_floor(timezone.now())
    queries_add(entity, now - timedelta(hours=2), 6)
    queries_add(entity, now - timedelta(hours=30), 3)
    body = staff_client.get(BASE + "trending/", {"timeframe": "1d", "limit": 5}).json()
    assert (body["total"], body["timeframe"]) == (1, "1d")
    (row,) = body["trending"]
    assert row == {
        "id": str(entity.pk),
        "name": "Gina Prince",
        "entity_type": "person",
        "current_period_queries": 6,
        "previous_period_queries": 3,
        "growth_rate": 1.0,
        "trend_score": 1.5,
        "demand_score": 9,
        "last_queried_at": None,
    }
    assert staff_client.get(BASE + "trending/").json()["timeframe"] == "7d"


def test_stale_shape(staff_client, entity):
    queries_add(entity, hour_floor(timezone.now()), 5)
    body = staff_client.get(BASE + "stale/").json()
    assert body["criteria"] == {"min_demand_score": 5, "days_since_update": 30}
    assert body["total"] == 1
    (row,) = body["stale_entities"]
    assert (row["id"], row["days_since_update"], row["refresh_requested_at"]) == (str(entity.pk), 40, None)
    body = staff_client.get(BASE + "stale/", {"min_demand_score": 6, "days_since_update": 1}).json()
    assert (body["total"], body["criteria"]) == (0, {"min_demand_score": 6, "days_since_update": 1})


def test_entity_shape(staff_client, entity):
    queries_add(entity, hour_floor(timezone.now()) - timedelta(hours=2), 12)
    EntityDemand.objects.filter(pk=entity.pk).update(first_queried_at=timezone.now() - timedelta(hours=2))
    body = staff_client.get(f"{BASE}entity/{entity.pk}/").json()["entity"]
    assert set(body) >= {
        "id",
        "name",
        "entity_type",
        "demand_score",
        "query_count",
        "first_queried_at",
        "last_queried_at",
        "query_frequency",
        "trending",
        "last_updated_at",
        "needs_update",
        "current_period_queries",
        "previous_period_queries",
    }
    assert (body["query_frequency"], body["trending"], body["needs_update"]) == ("medium", True, True)
    assert (body["current_period_queries"], body["previous_period_queries"]) == (12, 0)
    assert body["first_queried_at"] is not None
    assert set(body["windows"]) == {"1d", "7d", "30d"}


def test_timeseries_zeros_by_day_and_by_hour(staff_client, entity):
    now = hour_floor(timezone.now())
    queries_add(entity, now - timedelta(days=3), 4)
    by_day = staff_client.get(f"{BASE}entity/{entity.pk}/timeseries/", {"days": 7}).json()
    assert by_day["interval"] == "day"
    assert len(by_day["timeseries"]) == 7
    assert [p["count"] for p in by_day["timeseries"]] in ([0, 0, 0, 4, 0, 0, 0], [0, 0, 4, 0, 0, 0, 0])
    by_hour = staff_client.get(f"{BASE}entity/{entity.pk}/timeseries/", {"days": 4, "interval": "hour"}).json()
    assert len(by_hour["timeseries"]) == 96
    assert sum(p["count"] for p in by_hour["timeseries"]) == 4
    assert sorted({p["count"] for p in by_hour["timeseries"]}) == [0, 4]


# -- bad input ----------------------------------------------------------------------------------------------

BAD_PARAMETERS = [
    ("top/", "limit", ["0", "101", "ten", "1.5", "-1"]),
    ("top/", "offset", ["-1", "x", "10001"]),
    ("top/", "min_score", ["-1", "abc", str(2**63)]),
    ("top/", "entity_type", ["wizard", "PERSON"]),
    ("trending/", "timeframe", ["2d", "week", "7D"]),
    ("trending/", "limit", ["0", "51", "many"]),
    ("stale/", "limit", ["0", "101", "z"]),
    ("stale/", "min_demand_score", ["-5", "five", "1e3"]),
    ("stale/", "days_since_update", ["-1", "thirty", "36501"]),
    ("timeseries", "days", ["0", "91", "week"]),
    ("timeseries", "interval", ["minute", "month", "DAY"]),
]


@pytest.mark.parametrize(("path", "name", "values"), BAD_PARAMETERS, ids=[f"{p}{n}" for p, n, _ in BAD_PARAMETERS])
def test_every_bad_parameter_is_a_400_that_names_it(staff_client, entity, path, name, values):
    url = f"{BASE}entity/{entity.pk}/timeseries/" if path == "timeseries" else BASE + path
    for value in values:
        response = staff_client.get(url, {name: value})
        assert response.status_code == 400, (name, value)
        error = response.json()["error"]
        assert error.startswith(f"{name}: ") and "must be" in error, error


def test_bad_parameter_messages_say_what_is_allowed(staff_client):
    error = staff_client.get(BASE + "trending/", {"timeframe": "2d"}).json()["error"]
    assert error == "timeframe: '2d' is not valid: timeframe must be one of 1d, 7d, 30d."
    error = staff_client.get(BASE + "top/", {"limit": "500"}).json()["error"]
    assert error == "limit: 500 is out of range: limit must be an integer from 1 to 100."


def test_malformed_entity_id_is_400_and_unknown_is_404(staff_client):
    for suffix in ("", "timeseries/"):
        response = staff_client.get(f"{BASE}entity/not-a-uuid/{suffix}")
        assert response.status_code == 400
        assert "not a valid entity id" in response.json()["error"]
        response = staff_client.get(f"{BASE}entity/{uuid.uuid4()}/{suffix}")
        assert response.status_code == 404
        assert response.json()["error"].startswith("No entity has the id")


def test_unknown_parameters_are_ignored(staff_client):
    assert staff_client.get(BASE + "top/", {"colour": "blue"}).status_code == 200
