"""Who may do what in the admin: the "Demand analysts" group, create_user's roles, HTML error pages."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth.models import Group, Permission
from django.core.management import call_command

from analytics.models import AlertRule
from entities.models import RefreshRequest
from tests.entities.factories import EntityFactory, UserFactory

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery-staple"


@pytest.fixture
def analyst(monkeypatch):
    monkeypatch.setenv("USER_PASSWORD", PASSWORD)
    call_command("create_user", "analyst@example.com", "--staff")
    from django.contrib.auth import get_user_model

    return get_user_model().objects.get(email="analyst@example.com")


def _is_html(response) -> bool:
    return response["Content-Type"].startswith("text/html") and b'"error"' not in response.content


def test_the_group_reads_entities_demand_and_refresh_requests_and_nothing_of_auth():
    codenames = set(
        Group.objects.get(name="Demand analysts").permissions.values_list("content_type__app_label", "codename")
    )
    assert ("entities", "view_entity") in codenames
    assert ("entities", "view_entitydemand") in codenames
    assert ("entities", "view_refreshrequest") in codenames
    assert ("entities", "request_entity_update") in codenames
    assert not {name for name in codenames if not name[1].startswith(("view_", "request_"))}
    assert not [pair for pair in codenames if pair[0] == "auth"]


def test_create_user_staff_joins_the_group_and_superuser_gets_everything(analyst, monkeypatch):
    assert analyst.is_staff and not analyst.is_superuser
    assert list(analyst.groups.values_list("name", flat=True)) == ["Demand analysts"]
    monkeypatch.setenv("USER_PASSWORD", PASSWORD)
    call_command("create_user", "root@example.com", "--superuser")
    from django.contrib.auth import get_user_model

    root = get_user_model().objects.get(email="root@example.com")
    assert root.is_staff and root.is_superuser
    assert root.has_perm("auth.change_user")


def test_an_analyst_sees_entities_an_entity_and_refresh_requests_but_not_users(analyst, client):
    entity = EntityFactory(name="Visible Studio", data={"title": "Executive", "mandate": "<b>drama</b>"})
    RefreshRequest.objects.create(entity=entity, event_id=uuid.uuid4(), source="test")
    client.force_login(analyst)

    index = client.get("/admin/")
    assert index.status_code == 200
    assert b"/admin/entities/entity/" in index.content
    assert b"/admin/entities/refreshrequest/" in index.content
    assert b"/admin/auth/user/" not in index.content and b"/admin/auth/group/" not in index.content

    changelist = client.get("/admin/entities/entity/")
    assert changelist.status_code == 200 and b"Visible Studio" in changelist.content
    # The actions are the analyst's too (the request_entity_update permission).
    assert b'value="request_refresh"' in changelist.content
    assert b'value="request_reindex"' in changelist.content
    page = client.get(f"/admin/entities/entity/{entity.pk}/change/")
    assert page.status_code == 200 and b"Visible Studio" in page.content
    # Read-only, `data` is pretty-printed (one key per line), HTML-escaped.
    assert "<pre>{\n  &quot;title&quot;: &quot;Executive&quot;" in page.content.decode()
    assert "&lt;b&gt;drama&lt;/b&gt;" in page.content.decode()
    requests = client.get("/admin/entities/refreshrequest/")
    assert requests.status_code == 200 and b"Visible Studio" in requests.content

    for url in ("/admin/auth/user/", "/admin/auth/group/"):
        response = client.get(url)
        assert response.status_code == 403
        assert _is_html(response)


def test_a_viewer_without_the_update_permission_gets_no_actions(client):
    viewer = UserFactory(is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_entity"))
    EntityFactory()
    client.force_login(viewer)
    response = client.get("/admin/entities/entity/")
    assert response.status_code == 200
    assert b'value="request_refresh"' not in response.content


def test_admin_errors_for_a_staff_user_without_rights_are_html_pages(client):
    client.force_login(UserFactory(is_staff=True))
    forbidden = client.get("/admin/entities/entity/")
    assert forbidden.status_code == 403
    assert _is_html(forbidden)
    missing = client.get("/admin/no-such-page/")
    assert missing.status_code == 404
    assert _is_html(missing)


def test_api_errors_stay_json(client):
    response = client.get("/api/no-such-endpoint/")
    assert response.status_code == 404
    assert response.json() == {"error": "Not found."}


def test_entity_name_is_one_line_and_data_a_json_editor(client):
    root = UserFactory(is_staff=True, is_superuser=True)
    entity = EntityFactory(name="Edited", data={"b": [1, 2]})
    client.force_login(root)
    page = client.get(f"/admin/entities/entity/{entity.pk}/change/").content.decode()
    assert '<input type="text" name="name"' in page
    assert '<textarea name="name"' not in page
    assert "jsoneditor.min.js" in page and "https://" not in page.split("<body")[0]
    # The editor refuses invalid JSON: the form is shown again with an error and nothing is saved.
    response = client.post(
        f"/admin/entities/entity/{entity.pk}/change/",
        {"name": "Edited", "entity_type": entity.entity_type, "data": "{not json"},
    )
    assert response.status_code == 200
    assert b"Enter a valid JSON" in response.content
    entity.refresh_from_db()
    assert entity.data == {"b": [1, 2]}


def test_an_analyst_reads_the_alert_rules_and_delivery_log_but_cannot_change_a_rule(analyst, client):
    rule = AlertRule.objects.create(name="Lag in this test", kind="pipeline_lag", threshold=100)
    client.force_login(analyst)
    index = client.get("/admin/")
    assert b"/admin/analytics/alertrule/" in index.content
    assert b"/admin/analytics/alertdelivery/" in index.content
    assert client.get("/admin/analytics/alertdelivery/").status_code == 200
    page = client.get(f"/admin/analytics/alertrule/{rule.pk}/change/")
    assert page.status_code == 200 and b'name="_save"' not in page.content
    threshold = rule.threshold
    response = client.post(f"/admin/analytics/alertrule/{rule.pk}/change/", {"name": rule.name, "threshold": "1"})
    assert response.status_code == 403
    rule.refresh_from_db()
    assert rule.threshold == threshold
