"""Admin pages for entities load for staff and keep demand fields read-only."""

from __future__ import annotations

import pytest

from tests.entities.factories import EntityFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, staff_user):
    staff_user.is_superuser = True
    staff_user.save()
    client.force_login(staff_user)
    return client


def test_entity_changelist_loads_with_filters_and_search(admin_client):
    EntityFactory(name="Chris Mansolillo")
    response = admin_client.get("/admin/entities/entity/", {"q": "Mansolillo", "entity_type__exact": "person"})
    assert response.status_code == 200
    assert b"Chris Mansolillo" in response.content


def test_entity_change_page_shows_demand_fields_read_only(admin_client):
    entity = EntityFactory()
    response = admin_client.get(f"/admin/entities/entity/{entity.pk}/change/")
    assert response.status_code == 200
    assert b'name="demand_score"' not in response.content
    assert b"Demand score" in response.content


def test_admin_requires_staff(client, user):
    client.force_login(user)
    response = client.get("/admin/entities/entity/")
    assert response.status_code == 302
