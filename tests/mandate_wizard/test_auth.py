"""`POST /auth/login`, `/auth/refresh`, `/auth/logout`: tokens, rotation, blacklisting, uniform failures,
throttles on the real Redis cache."""

from __future__ import annotations

import json

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from tests.entities.factories import UserFactory

PASSWORD = "correct-horse-battery-staple"


@pytest.fixture(autouse=True)
def empty_throttle_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def ada(db):
    return UserFactory(username="ada@example.com", email="ada@example.com")


@pytest.fixture
def rates(settings):
    """Set throttle rates for one test (the throttles read them at request time)."""

    def set_rates(**overrides: str) -> None:
        current = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
        settings.REST_FRAMEWORK = {
            **settings.REST_FRAMEWORK,
            "DEFAULT_THROTTLE_RATES": {**current, **overrides},
        }

    return set_rates


def login(client: APIClient, body, **extra):
    return client.post("/auth/login", json.dumps(body), content_type="application/json", **extra)


def test_login_returns_tokens_that_open_the_api(ada, api_client):
    response = login(api_client, {"email": "ada@example.com", "password": PASSWORD})
    assert response.status_code == 200
    tokens = response.json()
    assert set(tokens) == {"access", "refresh"}

    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    assert api_client.post("/api/answer", {"question": "anyone?"}, format="json").status_code == 200


def test_email_matching_ignores_case_and_surrounding_spaces(ada, api_client):
    response = login(api_client, {"email": "  ADA@Example.COM ", "password": PASSWORD})
    assert response.status_code == 200


def test_refresh_returns_a_new_access_token(ada, api_client):
    refresh = login(api_client, {"email": "ada@example.com", "password": PASSWORD}).json()["refresh"]
    response = api_client.post("/auth/refresh", {"refresh": refresh}, format="json")
    assert response.status_code == 200
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['access']}")
    assert api_client.post("/api/answer", {"question": "anyone?"}, format="json").status_code == 200


def test_refresh_rotates_and_the_old_refresh_token_is_then_refused(ada, api_client):
    first = login(api_client, {"email": "ada@example.com", "password": PASSWORD}).json()["refresh"]
    response = api_client.post("/auth/refresh", {"refresh": first}, format="json")
    assert response.status_code == 200
    second = response.json()["refresh"]
    assert second != first
    reused = api_client.post("/auth/refresh", {"refresh": first}, format="json")
    assert reused.status_code == 401
    assert isinstance(reused.json()["error"], str)
    assert api_client.post("/auth/refresh", {"refresh": second}, format="json").status_code == 200


def test_a_refresh_token_used_after_logout_is_refused(ada, api_client):
    refresh = login(api_client, {"email": "ada@example.com", "password": PASSWORD}).json()["refresh"]
    response = api_client.post("/auth/logout", {"refresh": refresh}, format="json")
    assert response.status_code == 200
    assert response.json() == {}
    refused = api_client.post("/auth/refresh", {"refresh": refresh}, format="json")
    assert refused.status_code == 401
    assert isinstance(refused.json()["error"], str)
    # Logging out twice with the same token: it is already blacklisted.
    assert api_client.post("/auth/logout", {"refresh": refresh}, format="json").status_code == 401


@pytest.mark.parametrize(
    "body",
    [{}, {"refresh": ""}, {"refresh": "garbage"}, {"refresh": 5}, {"refresh": None}, ["x"], "x", 7, None],
)
def test_garbage_logout_bodies_are_4xx_json_errors(db, api_client, body):
    response = api_client.post("/auth/logout", json.dumps(body), content_type="application/json")
    assert response.status_code in (400, 401)
    assert isinstance(response.json()["error"], str)


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [("{not json", "application/json"), ("refresh=", "text/plain"), (b"\xff\xfe", "application/json")],
)
def test_unreadable_logout_bodies_are_4xx_json_errors(db, api_client, raw, content_type):
    response = api_client.generic("POST", "/auth/logout", raw, content_type=content_type)
    assert 400 <= response.status_code < 500
    assert isinstance(response.json()["error"], str)


def test_an_access_token_cannot_be_logged_out_as_a_refresh_token(ada, api_client):
    access = login(api_client, {"email": "ada@example.com", "password": PASSWORD}).json()["access"]
    response = api_client.post("/auth/logout", {"refresh": access}, format="json")
    assert response.status_code == 401


@pytest.mark.parametrize("refresh", ["not-a-token", ""])
def test_a_bad_refresh_token_is_a_json_error(db, api_client, refresh):
    response = api_client.post("/auth/refresh", {"refresh": refresh}, format="json")
    assert response.status_code in (400, 401)
    assert isinstance(response.json()["error"], str)


def test_an_access_token_is_not_a_refresh_token(ada, api_client):
    access = login(api_client, {"email": "ada@example.com", "password": PASSWORD}).json()["access"]
    assert api_client.post("/auth/refresh", {"refresh": access}, format="json").status_code == 401


def test_wrong_password_and_unknown_email_are_the_same_401(ada, api_client):
    wrong_password = login(api_client, {"email": "ada@example.com", "password": "nope-nope-nope"})
    unknown_email = login(api_client, {"email": "nobody@example.com", "password": PASSWORD})
    assert wrong_password.status_code == unknown_email.status_code == 401
    assert wrong_password.json() == unknown_email.json() == {"error": "Invalid email or password."}


def test_an_inactive_user_cannot_log_in(ada, api_client):
    ada.is_active = False
    ada.save()
    assert login(api_client, {"email": "ada@example.com", "password": PASSWORD}).status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"email": "ada@example.com"},
        {"password": PASSWORD},
        {"email": "not-an-email", "password": PASSWORD},
        {"email": ["ada@example.com"], "password": PASSWORD},
        {"email": "ada@example.com", "password": None},
        ["ada@example.com", PASSWORD],
        "ada@example.com",
    ],
)
def test_malformed_login_bodies_are_400_json_errors(db, api_client, body):
    response = login(api_client, body)
    assert response.status_code == 400
    assert isinstance(response.json()["error"], str)


def test_login_ignores_a_stale_authorization_header(ada, api_client):
    api_client.credentials(HTTP_AUTHORIZATION="Bearer expired-or-garbage")
    assert login(api_client, {"email": "ada@example.com", "password": PASSWORD}).status_code == 200


def test_attempts_per_email_are_throttled_with_retry_after(ada, api_client, rates):
    rates(login_email="3/min", login_ip="100/min")
    statuses = [login(api_client, {"email": "ada@example.com", "password": "wrong"}).status_code for _ in range(3)]
    assert statuses == [401, 401, 401]
    # The right password does not help once the email is throttled, nor does changing its case.
    blocked = login(api_client, {"email": "ADA@example.com", "password": PASSWORD})
    assert blocked.status_code == 429
    assert int(blocked.headers["Retry-After"]) > 0
    assert "error" in blocked.json()
    # Another email from the same address is not affected.
    assert login(api_client, {"email": "bob@example.com", "password": "wrong"}).status_code == 401


def test_attempts_per_ip_are_throttled_whatever_the_email(ada, api_client, rates):
    rates(login_email="100/min", login_ip="2/min")
    for index in range(2):
        assert login(api_client, {"email": f"guess{index}@example.com", "password": "x"}).status_code == 401
    response = login(api_client, {"email": "ada@example.com", "password": PASSWORD})
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    # Another client address still gets in.
    assert (
        login(api_client, {"email": "ada@example.com", "password": PASSWORD}, REMOTE_ADDR="127.0.0.2").status_code
        == 200
    )


def test_refresh_is_throttled_per_ip(ada, api_client, rates):
    rates(login_ip="1/min")
    refresh = login(api_client, {"email": "ada@example.com", "password": PASSWORD}).json()["refresh"]
    response = api_client.post("/auth/refresh", {"refresh": refresh}, format="json")
    assert response.status_code == 429
    assert "Retry-After" in response.headers


def test_login_works_when_the_throttle_cache_is_down(ada, api_client, private_redis, settings, rates):
    rates(login_email="1/min")
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": private_redis.url}}
    private_redis.kill()
    for _ in range(2):
        assert login(api_client, {"email": "ada@example.com", "password": PASSWORD}).status_code == 200


def test_create_user_command_makes_an_account_that_can_log_in(db, api_client, monkeypatch):
    from django.core.management import call_command

    monkeypatch.setenv("USER_PASSWORD", "a-long-operator-password-42")
    call_command("create_user", "Grace@Example.com", "--staff")
    response = login(api_client, {"email": "grace@example.com", "password": "a-long-operator-password-42"})
    assert response.status_code == 200


def test_create_user_refuses_to_run_without_a_password(db, monkeypatch):
    from django.core.management import CommandError, call_command

    monkeypatch.delenv("USER_PASSWORD", raising=False)
    monkeypatch.setattr("os.isatty", lambda fd: False)  # as in CI: nobody to prompt, even from a terminal
    with pytest.raises(CommandError, match="No password"):
        call_command("create_user", "grace@example.com")
