"""The default embedder and the services that store embeddings (real PostgreSQL + pgvector)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from django.core.management import call_command
from django.db import connection

from entities.embeddings import (
    EMBEDDING_DIMENSIONS,
    EmbeddingError,
    HashedNgramEmbedder,
    HttpEmbedder,
    embedder,
    entity_text,
)
from entities.models import Entity
from entities.retrieval import entity_search
from entities.services import entities_reindex, entity_embeddings_compute
from tests.entities.catalog import catalog_create
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
    np.testing.assert_allclose(stored.embedding.vector, HashedNgramEmbedder().embed_entities([PERSON])[0], rtol=1e-6)
    assert stored.updated_at == before


@pytest.mark.django_db
def test_compute_only_missing_leaves_embedded_entities_alone():
    embedded, missing = EntityFactory(), EntityFactory()
    entities_reindex(entity_ids=[embedded.pk])
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM entities_entityembedding WHERE entity_id = %s", [missing.pk])
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
    assert "ON public.entities_entityembedding USING hnsw (vector vector_cosine_ops)" in definition
    assert "m='16'" in definition and "ef_construction='64'" in definition
    assert Entity.objects.filter(embedding__isnull=True).count() == 0


class EmbeddingServer:
    """A local OpenAI-compatible /embeddings endpoint that returns fixed unit vectors, or fails."""

    def __init__(self, status: int = 200):
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.bodies: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                server.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                texts = server.bodies[-1]["input"]
                payload = {
                    "data": [
                        {
                            "index": index,
                            "embedding": [0.0] * index + [2.0] + [0.0] * (EMBEDDING_DIMENSIONS - index - 1),
                        }
                        for index in range(len(texts))
                    ]
                }
                body = json.dumps(payload).encode() if status == 200 else b"{}"
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1/embeddings"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_the_http_backend_is_selected_by_settings_and_normalises(settings):
    server = EmbeddingServer()
    try:
        settings.EMBEDDING_BACKEND = "http"
        settings.EMBEDDING_URL = server.url
        settings.EMBEDDING_MODEL = "test-embed"
        model = embedder()
        assert isinstance(model, HttpEmbedder)
        vectors = model.embed(["a", "b"])
    finally:
        server.close()
    assert server.bodies == [{"model": "test-embed", "input": ["a", "b"], "dimensions": EMBEDDING_DIMENSIONS}]
    assert vectors.shape == (2, EMBEDDING_DIMENSIONS)
    assert vectors[0][0] == 1.0 and vectors[1][1] == 1.0


@pytest.mark.django_db
def test_retrieval_still_answers_when_the_embedding_service_fails(settings):
    catalog_create()
    server = EmbeddingServer(status=500)
    try:
        settings.EMBEDDING_BACKEND = "http"
        settings.EMBEDDING_URL = server.url
        with pytest.raises(EmbeddingError):
            embedder().embed(["Chris Mansolillo"])
        hits = entity_search(question="Who is Chris Mansolilo?", limit=3)
    finally:
        server.close()
    assert hits[0].name == "Chris Mansolillo"


def test_an_unknown_backend_is_a_clear_error(settings):
    settings.EMBEDDING_BACKEND = "word2vec"
    with pytest.raises(EmbeddingError, match="Unknown EMBEDDING_BACKEND"):
        embedder()
