"""Production settings: `check --deploy` is clean; HTTPS redirect except for the health probes; CORS."""

from __future__ import annotations

import os
import secrets
import string
import subprocess
import sys

import pytest
from django.conf import settings
from django.test import Client

pytestmark = pytest.mark.django_db


def test_check_deploy_reports_no_issue_with_production_settings():
    env = {
        **{key: value for key, value in os.environ.items() if key not in ("SECURE_SSL_REDIRECT", "STATIC_MANIFEST")},
        "DEBUG": "0",
        "SECRET_KEY": "".join(secrets.choice(string.ascii_letters + string.digits + "!@#%^&*") for _ in range(50)),
        "ALLOWED_HOSTS": "example.com",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    assert "WARNINGS" not in result.stdout + result.stderr


def test_plain_http_is_redirected_but_health_probes_are_answered(settings):
    settings.SECURE_SSL_REDIRECT = True
    client = Client()  # a new handler: SecurityMiddleware reads the setting when it is built
    redirected = client.get("/api/")
    assert redirected.status_code == 301 and redirected["Location"] == "https://testserver/api/"
    assert client.get("/healthz").status_code == 200
    assert client.get("/api/", headers={"x-forwarded-proto": "https"}).status_code == 200
    assert "max-age=" in client.get("/api/", headers={"x-forwarded-proto": "https"})["Strict-Transport-Security"]


def test_cors_allows_only_the_configured_origins(settings):
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example.com"]
    client = Client()
    allowed = client.options(
        "/auth/login", headers={"origin": "https://app.example.com", "access-control-request-method": "POST"}
    )
    assert allowed["Access-Control-Allow-Origin"] == "https://app.example.com"
    other = client.options(
        "/auth/login", headers={"origin": "https://evil.example.net", "access-control-request-method": "POST"}
    )
    assert "Access-Control-Allow-Origin" not in other
