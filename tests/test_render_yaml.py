"""render.yaml is a valid Render Blueprint that deploys the web service, the worker, PostgreSQL and Key Value.

No registry package ships Render's published schema (render.com/schema/render.yaml.json), so the
structure is checked against the JSON Schema below, written from Render's Blueprint reference: it
rejects unknown keys at every level it describes, so a typo in a field name fails the test.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml
from django.conf import settings

BLUEPRINT = Path(settings.BASE_DIR) / "render.yaml"

_ENV_VAR = {
    "oneOf": [
        {
            "type": "object",
            "required": ["key", "value"],
            "properties": {"key": {"type": "string"}, "value": {"type": ["string", "number", "boolean"]}},
            "additionalProperties": False,
        },
        {
            "type": "object",
            "required": ["key", "generateValue"],
            "properties": {"key": {"type": "string"}, "generateValue": {"const": True}},
            "additionalProperties": False,
        },
        {
            "type": "object",
            "required": ["key", "sync"],
            "properties": {"key": {"type": "string"}, "sync": {"const": False}},
            "additionalProperties": False,
        },
        {
            "type": "object",
            "required": ["key", "fromDatabase"],
            "properties": {
                "key": {"type": "string"},
                "fromDatabase": {
                    "type": "object",
                    "required": ["name", "property"],
                    "properties": {
                        "name": {"type": "string"},
                        "property": {"enum": ["connectionString", "host", "port", "user", "password", "database"]},
                    },
                    "additionalProperties": False,
                },
            },
            "additionalProperties": False,
        },
        {
            "type": "object",
            "required": ["key", "fromService"],
            "properties": {
                "key": {"type": "string"},
                "fromService": {
                    "type": "object",
                    "required": ["type", "name"],
                    "properties": {
                        "type": {"enum": ["web", "pserv", "worker", "cron", "keyvalue", "redis"]},
                        "name": {"type": "string"},
                        "property": {"enum": ["host", "port", "hostport", "connectionString"]},
                        "envVarKey": {"type": "string"},
                    },
                    "additionalProperties": False,
                },
            },
            "additionalProperties": False,
        },
        {
            "type": "object",
            "required": ["fromGroup"],
            "properties": {"fromGroup": {"type": "string"}},
            "additionalProperties": False,
        },
    ]
}
_IP_ALLOW_LIST = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["source"],
        "properties": {"source": {"type": "string"}, "description": {"type": "string"}},
        "additionalProperties": False,
    },
}
_CODE_SERVICE = {
    "type": "object",
    "required": ["type", "name", "runtime", "buildCommand", "startCommand"],
    "properties": {
        "type": {"enum": ["web", "worker", "pserv", "cron"]},
        "name": {"type": "string", "minLength": 1},
        "runtime": {"enum": ["python", "node", "ruby", "go", "rust", "elixir", "docker", "image", "static"]},
        "plan": {"type": "string"},
        "region": {"type": "string"},
        "branch": {"type": "string"},
        "rootDir": {"type": "string"},
        "buildCommand": {"type": "string"},
        "startCommand": {"type": "string"},
        "preDeployCommand": {"type": "string"},
        "healthCheckPath": {"type": "string", "pattern": "^/"},
        "schedule": {"type": "string", "pattern": r"^\S+ \S+ \S+ \S+ \S+$"},
        "autoDeploy": {"type": "boolean"},
        "numInstances": {"type": "integer", "minimum": 1},
        "envVars": {"type": "array", "items": _ENV_VAR},
    },
    "additionalProperties": False,
}
_KEY_VALUE = {
    "type": "object",
    "required": ["type", "name", "ipAllowList"],
    "properties": {
        "type": {"enum": ["keyvalue", "redis"]},
        "name": {"type": "string", "minLength": 1},
        "plan": {"type": "string"},
        "region": {"type": "string"},
        "maxmemoryPolicy": {
            "enum": [
                "noeviction",
                "allkeys-lru",
                "allkeys-lfu",
                "allkeys-random",
                "volatile-lru",
                "volatile-lfu",
                "volatile-random",
                "volatile-ttl",
            ]
        },
        "ipAllowList": _IP_ALLOW_LIST,
    },
    "additionalProperties": False,
}
BLUEPRINT_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "services": {
            "type": "array",
            "items": {
                "if": {"properties": {"type": {"enum": ["keyvalue", "redis"]}}},
                "then": _KEY_VALUE,
                "else": _CODE_SERVICE,
            },
        },
        "databases": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string"},
                    "databaseName": {"type": "string"},
                    "user": {"type": "string"},
                    "plan": {"type": "string"},
                    "region": {"type": "string"},
                    "postgresMajorVersion": {"type": "string"},
                    "ipAllowList": _IP_ALLOW_LIST,
                },
                "additionalProperties": False,
            },
        },
        "envVarGroups": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "envVars"],
                "properties": {"name": {"type": "string"}, "envVars": {"type": "array", "items": _ENV_VAR}},
                "additionalProperties": False,
            },
        },
    },
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def blueprint() -> dict:
    return yaml.safe_load(BLUEPRINT.read_text())


def _service(blueprint: dict, kind: str) -> dict:
    matches = [s for s in blueprint["services"] if s["type"] == kind]
    assert len(matches) == 1, f"expected one {kind} service"
    return matches[0]


def _service_named(blueprint: dict, name: str) -> dict:
    (service,) = [s for s in blueprint["services"] if s["name"] == name]
    return service


def _env(blueprint: dict, service: dict) -> dict[str, dict]:
    """The service's variables by key, with its env groups' variables merged in."""
    groups = {g["name"]: g for g in blueprint.get("envVarGroups", [])}
    merged: dict[str, dict] = {}
    for var in service["envVars"]:
        if "fromGroup" in var:
            merged.update({v["key"]: v for v in groups[var["fromGroup"]]["envVars"]})
        else:
            merged[var["key"]] = var
    return merged


def test_blueprint_matches_the_schema(blueprint):
    jsonschema.Draft202012Validator.check_schema(BLUEPRINT_SCHEMA)
    jsonschema.validate(blueprint, BLUEPRINT_SCHEMA, cls=jsonschema.Draft202012Validator)


def test_schema_rejects_a_misspelt_field(blueprint):
    broken = yaml.safe_load(BLUEPRINT.read_text())
    _service(broken, "web")["healthcheckPath"] = "/healthz"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, BLUEPRINT_SCHEMA, cls=jsonschema.Draft202012Validator)


def test_web_service_builds_migrates_and_serves_with_gunicorn(blueprint):
    web = _service(blueprint, "web")
    assert web["runtime"] == "python"
    assert "pip install -r requirements/base.txt" in web["buildCommand"]
    assert "collectstatic --noinput" in web["buildCommand"]
    assert shlex.split(web["preDeployCommand"])[1:] == ["manage.py", "migrate", "--noinput"]
    start = shlex.split(web["startCommand"])
    assert start[:2] == ["gunicorn", "mandate_wizard.wsgi:application"]
    assert "0.0.0.0:$PORT" in start
    assert web["healthCheckPath"] == "/healthz"
    assert "whitenoise.middleware.WhiteNoiseMiddleware" in settings.MIDDLEWARE


def test_worker_runs_the_stream_worker(blueprint):
    worker = _service(blueprint, "worker")
    assert worker["runtime"] == "python"
    command = shlex.split(worker["startCommand"])
    assert command[:3] == ["python", "manage.py", "run_stream_worker"]
    assert command[command.index("--metrics-port") + 1] == "9100"
    assert "requirements/base.txt" in worker["buildCommand"]


def test_daily_cron_requests_stale_updates_and_prunes(blueprint):
    cron = _service_named(blueprint, "mandate-wizard-daily")
    commands = [shlex.split(part) for part in cron["startCommand"].split("&&")]
    assert [c[:3] for c in commands] == [
        ["python", "manage.py", "request_stale_updates"],
        ["python", "manage.py", "prune_demand_data"],
    ]
    assert len(cron["schedule"].split()) == 5


def test_alerts_cron_checks_alerts_every_five_minutes_beside_the_worker(blueprint):
    """The worker evaluates every minute while it lives; the cron still reports a dead or stopped worker."""
    cron = _service_named(blueprint, "mandate-wizard-alerts")
    assert (cron["type"], cron["schedule"]) == ("cron", "*/5 * * * *")
    assert shlex.split(cron["startCommand"]) == ["python", "manage.py", "check_alerts"]
    for service in (cron, _service(blueprint, "worker")):
        assert _env(blueprint, service)["ALERT_WEBHOOK_URL"] == {"key": "ALERT_WEBHOOK_URL", "sync": False}


def test_key_value_never_evicts_and_is_closed_to_the_internet(blueprint):
    kv = _service(blueprint, "keyvalue")
    assert kv["maxmemoryPolicy"] == "noeviction"
    assert kv["ipAllowList"] == []


@pytest.mark.parametrize(
    "name", ["mandate-wizard-web", "mandate-wizard-worker", "mandate-wizard-daily", "mandate-wizard-alerts"]
)
def test_services_are_wired_to_the_database_and_key_value(blueprint, name):
    env = _env(blueprint, _service_named(blueprint, name))
    database = blueprint["databases"][0]
    assert env["DATABASE_URL"]["fromDatabase"] == {"name": database["name"], "property": "connectionString"}
    kv = _service(blueprint, "keyvalue")
    assert env["REDIS_URL"]["fromService"] == {"type": "keyvalue", "name": kv["name"], "property": "connectionString"}
    assert env["SECRET_KEY"] == {"key": "SECRET_KEY", "generateValue": True}
    assert env["DEBUG"]["value"] == "false"
    assert env["LOG_JSON"]["value"] == "true"


def test_every_referenced_resource_exists(blueprint):
    names = {s["name"] for s in blueprint["services"]} | {d["name"] for d in blueprint["databases"]}
    groups = {g["name"] for g in blueprint.get("envVarGroups", [])}
    for service in blueprint["services"]:
        for var in service.get("envVars", []):
            if "fromGroup" in var:
                assert var["fromGroup"] in groups
            for ref in ("fromDatabase", "fromService"):
                if ref in var:
                    assert var[ref]["name"] in names


def test_settings_named_in_the_blueprint_exist():
    """Every plain variable the Blueprint sets is one that settings.py reads (no dead configuration)."""
    blueprint = yaml.safe_load(BLUEPRINT.read_text())
    source = (Path(settings.BASE_DIR) / "mandate_wizard" / "settings.py").read_text()
    keys = {v["key"] for g in blueprint["envVarGroups"] for v in g["envVars"]}
    keys |= {v["key"] for s in blueprint["services"] for v in s.get("envVars", []) if "key" in v}
    keys -= {"PYTHON_VERSION"}  # read by Render's build image, not by Django
    missing = sorted(key for key in keys if f'"{key}"' not in source)
    assert not missing, f"render.yaml sets variables settings.py never reads: {missing}"


def test_web_service_is_https_only_and_its_health_check_is_never_redirected(blueprint):
    web = _service(blueprint, "web")
    env = _env(blueprint, web)
    assert env["DEBUG"]["value"] == "false"
    assert env["SECURE_SSL_REDIRECT"]["value"] == "true"
    assert int(env["SECURE_HSTS_SECONDS"]["value"]) >= 31536000
    assert int(env["AXES_FAILURE_LIMIT"]["value"]) > 0 and int(env["AXES_COOLOFF_MINUTES"]["value"]) > 0
    # Render probes over plain HTTP: the health check path must be exempt from the HTTPS redirect.
    health_path = web["healthCheckPath"].lstrip("/")
    assert any(re.search(pattern, health_path) for pattern in settings.SECURE_REDIRECT_EXEMPT)
