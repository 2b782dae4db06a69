"""The admin login against brute force (django-axes): lockout per user and address, cooldown, unlock command."""

from __future__ import annotations

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.core.management import call_command
from django.test import Client

from tests.entities.factories import UserFactory

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery-staple"
LOGIN = "/admin/login/?next=/admin/"


@pytest.fixture
def editor():
    return UserFactory(username="editor@example.com", email="editor@example.com", is_staff=True)


def _login(client: Client, password: str, **extra):
    return client.post(LOGIN, {"username": "editor@example.com", "password": password}, **extra)


def _lock_out(client: Client) -> None:
    for attempt in range(settings.AXES_FAILURE_LIMIT - 1):
        response = _login(client, f"wrong-{attempt}")
        assert response.status_code == 200, attempt  # the login form again, with its error
    assert _login(client, "wrong-last").status_code == 429


def test_ten_wrong_passwords_lock_the_user_out_with_the_admins_own_page(editor):
    assert settings.AXES_FAILURE_LIMIT == 10
    client = Client()
    _lock_out(client)
    refused = _login(client, PASSWORD)
    assert refused.status_code == 429
    assert refused["Content-Type"].startswith("text/html")
    page = refused.content.decode()
    assert 'id="lockout-message"' in page and "Too many failed login attempts (10)" in page
    assert "for 60 minutes" in page
    assert int(refused["Retry-After"]) == 3600
    assert "_auth_user_id" not in client.session
    # Per user and address: the same user from another address still gets in.
    assert _login(Client(), PASSWORD, REMOTE_ADDR="127.0.0.2").status_code == 302


def test_the_lockout_ends_after_the_cooldown(editor):
    client = Client()
    _lock_out(client)
    assert _login(client, PASSWORD).status_code == 429
    # The cooldown has passed once the attempts are older than AXES_COOLOFF_TIME.
    AccessAttempt.objects.update(attempt_time=AccessAttempt.objects.get().attempt_time - timedelta(minutes=61))
    assert _login(client, PASSWORD).status_code == 302


def test_the_unlock_command_lifts_the_lockout(editor):
    client = Client()
    _lock_out(client)
    call_command("axes_reset_username", "editor@example.com")
    response = _login(client, PASSWORD)
    assert response.status_code == 302 and response["Location"] == "/admin/"


def test_the_api_login_is_not_counted_by_axes_and_keeps_working(editor):
    client = Client()
    _lock_out(client)
    response = client.post(
        "/auth/login", {"email": "editor@example.com", "password": PASSWORD}, content_type="application/json"
    )
    assert response.status_code == 200 and set(response.json()) == {"access", "refresh"}
