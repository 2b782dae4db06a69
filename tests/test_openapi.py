"""Schemathesis against the project's OpenAPI schema: the analytics and entity endpoints and /auth/logout,
called as staff through the WSGI app, never answer 500 and every response matches the documented schema."""

from __future__ import annotations

from datetime import timedelta

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from rest_framework_simplejwt.tokens import AccessToken
from schemathesis.specs.openapi.checks import negative_data_rejection

from analytics.definitions import hour_floor
from tests.analytics.helpers import queries_add
from tests.entities.factories import EntityFactory

# Bounded so the whole file runs in well under a minute.
MAX_EXAMPLES = 15
TESTED_PATHS = r"^/(api/(analytics/|entities/)|auth/logout$)"


def served_schema() -> dict:
    """The schema /api/schema/ serves, generated in-process (collection runs before any test server)."""
    import json

    return json.loads(OpenApiJsonRenderer().render(SchemaGenerator().get_schema(request=None, public=True)))


schema = schemathesis.openapi.from_dict(served_schema()).include(path_regex=TESTED_PATHS)
schema.app = get_wsgi_application()


@pytest.fixture
def staff_headers(db, settings, staff_user) -> dict[str, str]:
    """A staff JWT, some demand in the database, and a WSGI app that may be called inside the test's transaction."""
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "localhost"]  # schemathesis's WSGI host name
    # As Django's test client does: a request must not close the connection that holds the test's transaction.
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    now = hour_floor(timezone.now())
    for index in range(4):
        entity = EntityFactory(updated_at=timezone.now() - timedelta(days=40 * index))
        queries_add(entity, now - timedelta(hours=3), 5 + index)
        queries_add(entity, now - timedelta(hours=30), 2)
    yield {"Authorization": f"Bearer {AccessToken.for_user(staff_user)}"}
    for signal in (request_started, request_finished):
        signal.connect(close_old_connections)


@schema.parametrize()
# derandomize: the same examples on every run, so CI is reproducible (explore more with a higher MAX_EXAMPLES).
@hypothesis_settings(
    max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
)
def test_api_conforms_to_its_schema(case, staff_headers):
    # Every other check runs, on valid and invalid requests alike (no 500, documented status codes,
    # bodies that match the schema, valid requests accepted). Not negative_data_rejection: an empty
    # query value (`?limit=`) means the default, as in DRF's own pagination, which it counts as invalid.
    case.call_and_validate(headers=staff_headers, excluded_checks=[negative_data_rejection])


def test_the_tested_schema_is_the_one_served(client):
    served = client.get("/api/schema/", {"format": "json"}).json()
    assert served == served_schema()
    assert {path for path in served["paths"] if path.startswith("/api/analytics/demand/")} == {
        "/api/analytics/demand/stats/",
        "/api/analytics/demand/top/",
        "/api/analytics/demand/trending/",
        "/api/analytics/demand/stale/",
        "/api/analytics/demand/refresh-queue/",
        "/api/analytics/demand/refresh-stats/",
        "/api/analytics/demand/entity/{entity_id}/",
        "/api/analytics/demand/entity/{entity_id}/timeseries/",
    }


def test_swagger_ui_is_served_from_our_own_static_files(client):
    page = client.get("/api/docs/").content.decode()
    assert "swagger-ui" in page
    assert "cdn.jsdelivr.net" not in page and "unpkg.com" not in page
