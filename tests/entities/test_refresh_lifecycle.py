"""The refresh lifecycle: a request is open until the entity's content changes after it, then done (done_at).

The database closes requests (entities/models.py triggers), so every writer is tested through its real
path: `import_entities`, the admin's change form, and the worker's UpdateRequest handler.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.utils import timezone

from entities.models import Entity, RefreshRequest
from entities.services import update_requests_apply
from streams.events import UpdateRequest
from tests.entities.factories import EntityFactory

pytestmark = pytest.mark.django_db


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def requested():
    """An entity with 40-day-old content and one open refresh request made 3 hours ago."""
    now = timezone.now()
    entity = EntityFactory(name="Nora Vance", data={"title": "VP Drama"}, updated_at=now - timedelta(days=40))
    request = RefreshRequest.objects.create(entity=entity, event_id=uuid.uuid4(), requested_at=now - timedelta(hours=3))
    assert request.done_at is None
    return entity, request


def _row(entity: Entity, **changes) -> dict:
    return {
        "id": str(entity.pk),
        "name": entity.name,
        "entity_type": entity.entity_type,
        "data": entity.data,
        **changes,
    }


def test_an_import_that_changes_the_entity_closes_its_request(requested, tmp_path):
    entity, request = requested
    other = EntityFactory(name="Other", updated_at=timezone.now() - timedelta(days=40))
    other_request = RefreshRequest.objects.create(
        entity=other, event_id=uuid.uuid4(), requested_at=timezone.now() - timedelta(hours=1)
    )
    path = _write_jsonl(tmp_path / "a.jsonl", [_row(entity, data={"title": "EVP Drama"}), _row(other)])
    call_command("import_entities", str(path), verbosity=0)

    entity.refresh_from_db()
    request.refresh_from_db()
    assert request.done_at == entity.updated_at
    assert timedelta(hours=3) <= request.time_to_refresh < timedelta(hours=3, minutes=5)
    # The other row of the same import did not change its entity: its request stays open.
    other_request.refresh_from_db()
    assert other_request.done_at is None


def test_an_import_that_does_not_change_the_entity_leaves_its_request_open(requested, tmp_path):
    entity, request = requested
    call_command("import_entities", str(_write_jsonl(tmp_path / "a.jsonl", [_row(entity)])), verbosity=0)
    request.refresh_from_db()
    assert request.done_at is None
    assert Entity.objects.get(pk=entity.pk).updated_at == entity.updated_at


def test_a_done_request_keeps_its_done_at_through_later_changes(requested, tmp_path):
    entity, request = requested
    path = tmp_path / "a.jsonl"
    call_command("import_entities", str(_write_jsonl(path, [_row(entity, data={"title": "EVP"})])), verbosity=0)
    request.refresh_from_db()
    first_done = request.done_at
    call_command("import_entities", str(_write_jsonl(path, [_row(entity, data={"title": "President"})])), verbosity=0)
    request.refresh_from_db()
    assert request.done_at == first_done
    assert Entity.objects.get(pk=entity.pk).updated_at > first_done


@pytest.fixture
def admin_client(client, staff_user):
    staff_user.is_superuser = True
    staff_user.save()
    client.force_login(staff_user)
    return client


def test_an_admin_edit_closes_the_request_and_a_save_without_changes_does_not(requested, admin_client):
    entity, request = requested
    # As a browser sends it: `data` has a callable default, so the form carries its initial value too.
    data = json.dumps(entity.data)
    form = {"name": entity.name, "entity_type": entity.entity_type, "data": data, "initial-data": data}
    assert admin_client.post(f"/admin/entities/entity/{entity.pk}/change/", form).status_code == 302
    request.refresh_from_db()
    assert request.done_at is None

    changed = {**form, "data": json.dumps({"title": "EVP Drama"})}
    assert admin_client.post(f"/admin/entities/entity/{entity.pk}/change/", changed).status_code == 302
    request.refresh_from_db()
    assert request.done_at == Entity.objects.get(pk=entity.pk).updated_at


def test_a_request_recorded_after_the_content_changed_is_done_at_once(requested):
    """The worker records a request when it processes it; an edit in between has answered it already."""
    entity, _request = requested
    asked = timezone.now() - timedelta(minutes=10)
    Entity.objects.filter(pk=entity.pk).update(updated_at=timezone.now() - timedelta(minutes=5))
    later = UpdateRequest(
        event_id=uuid.uuid4(), entity_ids=(entity.pk,), operation="refresh", source="t", timestamp=asked
    )
    before = UpdateRequest(
        event_id=uuid.uuid4(),
        entity_ids=(entity.pk,),
        operation="refresh",
        source="t",
        timestamp=timezone.now() - timedelta(minutes=1),
    )
    assert update_requests_apply(requests=[later, before]).applied == 2
    done = {
        r.event_id: r.done_at for r in RefreshRequest.objects.filter(event_id__in=[later.event_id, before.event_id])
    }
    assert done[later.event_id] == Entity.objects.get(pk=entity.pk).updated_at
    assert done[before.event_id] is None  # asked after the change: still open
