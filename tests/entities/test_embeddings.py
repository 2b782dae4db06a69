"""The default embedder and the services that store embeddings (real PostgreSQL + pgvector)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from django.core.management import call_command
from django.db import connection

from entities.embeddings import EMBEDDING_DIMENSIONS, HashedNgramEmbedder, embedder, entity_text
from entities.models import Entity
from entities.services import entities_reindex, entity_embeddings_compute
from tests.entities.factories import EntityFactory

PERSON = ("Chris Mansolillo", {"title": "SVP, Scripted Development", "company": "Silver Harbor Studios"})


def test_default_backend_is_the_hashed_embedder():
    assert isinstance(embedder(), HashedNgramEmbedder)


def test_vectors_have_1024_dimensions_and_unit_length():
    vectors = HashedNgramEmbedder().embed(["Who is Chris Mansolillo?", "elevated horror", "x"])
    assert vectors.shape == (3, EMBEDDING_DIMENSIONS)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_empty_text_is_the_zero_vector_not_nan():
    vector = HashedNgramEmbedder().embed(["?!"])[0]
    assert not np.isnan(vector).any()
    assert not vector.any()


def test_same_text_same_vector_in_another_process():
    """blake2b, not Python's salted hash(): a fresh interpreter produces identical bytes."""
    here = HashedNgramEmbedder().embed_entities([PERSON])[0]
    code = (
        "import sys, django; django.setup(); from entities.embeddings import HashedNgramEmbedder;"
        "v = HashedNgramEmbedder().embed_entities([('Chris Mansolillo', {'title': 'SVP, Scripted Development',"
        " 'company': 'Silver Harbor Studios'})])[0]; sys.stdout.write(v.tobytes().hex())"
    )
    env = {"PYTHONHASHSEED": "12345", "DJANGO_SETTINGS_MODULE": "mandate_wizard.settings"}
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={**os.environ, **env}
    ).stdout
    assert bytes.fromhex(other) == here.tobytes()


def test_a_typo_stays_close_and_an_unrelated_name_does_not():
    model = HashedNgramEmbedder()
    exact, typo, other = model.embed(["Chris Mansolillo", "Chris Mansolilo", "Dana Okafor"])
    assert exact @ typo > 0.5
    assert exact @ other < 0.1


def test_entity_text_takes_every_value_but_no_keys():
    text = entity_text(name="X", data={"title": "VP", "greenlights": ["A", {"name": "B"}], "year": 2024, "ok": True})
    assert text.splitlines() == ["X", "VP", "A", "B", "2024"]


@pytest.mark.django_db
def test_reindex_stores_the_same_vector_the_embedder_computes_and_keeps_updated_at():
    entity = EntityFactory(name=PERSON[0], data=PERSON[1])
    before = Entity.objects.get(pk=entity.pk).updated_at
    assert entities_reindex(entity_ids=[entity.pk]) == 1
    stored = Entity.objects.get(pk=entity.pk)
    np.testing.assert_allclose(stored.embedding, HashedNgramEmbedder().embed_entities([PERSON])[0], rtol=1e-6)
    assert stored.updated_at == before


@pytest.mark.django_db
def test_compute_only_missing_leaves_embedded_entities_alone():
    embedded, missing = EntityFactory(), EntityFactory()
    entities_reindex(entity_ids=[embedded.pk])
    with connection.cursor() as cursor:
        cursor.execute("UPDATE entities_entity SET embedding = NULL WHERE id = %s", [missing.pk])
    assert entity_embeddings_compute(only_missing=True, batch_size=1) == 1
    assert Entity.objects.filter(embedding__isnull=True).count() == 0


@pytest.mark.django_db
def test_embed_entities_command_embeds_everything_in_batches(capsys):
    EntityFactory.create_batch(7)
    call_command("embed_entities", "--batch-size", "3")
    assert Entity.objects.filter(embedding__isnull=True).count() == 0
    assert "Embedded 7 entities" in capsys.readouterr().out


@pytest.mark.django_db
def test_embed_entities_command_rejects_a_bad_batch_size():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="batch-size"):
        call_command("embed_entities", "--batch-size", "0")


@pytest.mark.django_db
def test_a_bulk_compute_rebuilds_the_hnsw_index_with_its_model_definition(monkeypatch):
    monkeypatch.setattr("entities.services.HNSW_REBUILD_MIN_ROWS", 3)
    EntityFactory.create_batch(4)
    assert entity_embeddings_compute(batch_size=2) == 4
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'entity_embedding_hnsw'")
        (definition,) = cursor.fetchone()
    assert "hnsw (embedding vector_cosine_ops)" in definition
    assert "m='16'" in definition and "ef_construction='64'" in definition
    assert Entity.objects.filter(embedding__isnull=True).count() == 0
