"""seed_demo (deterministic, idempotent) and import_entities (upsert, bad rows, dry run)."""

from __future__ import annotations

import csv
import json
import uuid
from io import StringIO

import pytest
from django.core.management import call_command
from django.db.models import F

from entities.demo import demo_entities
from entities.models import EMBEDDING_DIMENSIONS, Entity, EntityDemand

pytestmark = pytest.mark.django_db


def test_demo_data_is_deterministic_and_contains_chris_mansolillo():
    first = list(demo_entities(count=500, seed=7))
    second = list(demo_entities(count=500, seed=7))
    assert [(e.id, e.name, e.data) for e in first] == [(e.id, e.name, e.data) for e in second]
    assert len(first) == 500
    assert len({e.id for e in first}) == 500
    assert "Chris Mansolillo" in {e.name for e in first if e.entity_type == "person"}
    assert {e.entity_type for e in first} == {
        "person", "company", "project", "production_company", "platform", "deal", "genre", "format"
    }  # fmt: skip


def test_people_have_titles_companies_and_mandates_linked_by_name():
    entities = list(demo_entities(count=800, seed=1))
    names = {e.name for e in entities}
    people = [e for e in entities if e.entity_type == "person"]
    assert all(p.data["title"] and p.data["mandate"]["overview"] for p in people)
    assert all(p.data["company"] in names for p in people)
    assert all(g in names for p in people for g in p.data["recent_greenlights"])


def _write_jsonl(path, rows):
    path.write_text("\n".join(row if isinstance(row, str) else json.dumps(row) for row in rows) + "\n")
    return path


def test_import_jsonl_keeps_good_rows_and_reports_bad_ones_with_line_numbers(tmp_path, capsys):
    known = uuid.uuid4()
    path = _write_jsonl(
        tmp_path / "entities.jsonl",
        [
            {"id": str(known), "name": "Nora Vance", "entity_type": "person", "data": {"title": "VP Drama"}},
            {"name": "Harbor Films", "entity_type": "production_company"},
            {"name": "   ", "entity_type": "person"},
            {"name": "Nobody", "entity_type": "wizard"},
            "{not json",
            {"id": "nope", "name": "X", "entity_type": "person"},
            {"name": "Y", "entity_type": "person", "data": [1, 2]},
            {"name": "Z", "entity_type": "person", "embedding": [0.1, 0.2]},
        ],
    )
    with pytest.raises(SystemExit) as exit_info:
        call_command("import_entities", str(path), verbosity=0)
    assert exit_info.value.code == 1
    errors = capsys.readouterr().err
    for line, words in [(3, "name"), (4, "wizard"), (5, "JSON"), (6, "UUID"), (7, "object"), (8, "embedding")]:
        assert f"entities.jsonl:{line}:" in errors and words in errors
    assert sorted(Entity.objects.values_list("name", flat=True)) == ["Harbor Films", "Nora Vance"]
    assert Entity.objects.get(pk=known).data == {"title": "VP Drama"}
    assert not Entity.objects.filter(embedding__isnull=True).exists()


def test_import_upserts_by_id_and_moves_updated_at_only_when_content_changes(tmp_path):
    entity_id = uuid.uuid4()
    row = {"id": str(entity_id), "name": "Nora Vance", "entity_type": "person", "data": {"title": "VP Drama"}}
    path = _write_jsonl(tmp_path / "a.jsonl", [row])
    call_command("import_entities", str(path), verbosity=0)
    first = Entity.objects.get(pk=entity_id)

    call_command("import_entities", str(path), verbosity=0)  # same content: untouched
    assert Entity.objects.get(pk=entity_id).updated_at == first.updated_at

    EntityDemand.objects.filter(entity_id=entity_id).update(demand_score=F("demand_score") + 6)
    _write_jsonl(path, [{**row, "data": {"title": "EVP Drama"}}])
    call_command("import_entities", str(path), verbosity=0)
    changed = Entity.objects.get(pk=entity_id)
    assert changed.data == {"title": "EVP Drama"}
    assert changed.updated_at > first.updated_at
    assert changed.demand.demand_score == 6  # demand survives a content import
    assert Entity.objects.count() == 1


def test_import_csv_with_json_data_and_embedding(tmp_path):
    path = tmp_path / "entities.csv"
    vector = [0.0] * EMBEDDING_DIMENSIONS
    vector[0] = 1.0
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "name", "entity_type", "data", "embedding"])
        writer.writeheader()
        writer.writerow({"name": "Streamly", "entity_type": "platform", "data": '{"region": "US"}', "embedding": ""})
        writer.writerow({"name": "Vec Co", "entity_type": "company", "data": "", "embedding": json.dumps(vector)})
        writer.writerow({"name": "Bad", "entity_type": "platform", "data": "{oops", "embedding": ""})
    with pytest.raises(SystemExit):
        call_command("import_entities", str(path), verbosity=0)
    assert Entity.objects.get(name="Streamly").data == {"region": "US"}
    assert list(Entity.objects.get(name="Vec Co").embedding.vector[:2]) == [1.0, 0.0]


def test_import_dry_run_writes_nothing(tmp_path):
    path = _write_jsonl(tmp_path / "a.jsonl", [{"name": "Nora Vance", "entity_type": "person"}])
    out = StringIO()
    call_command("import_entities", str(path), dry_run=True, verbosity=0, stdout=out)
    assert Entity.objects.count() == 0
    assert "Dry run: 1 valid rows, 0 bad rows" in out.getvalue()


def test_import_missing_file_is_a_clear_error(tmp_path):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="no such file"):
        call_command("import_entities", str(tmp_path / "missing.jsonl"), verbosity=0)
