"""Text embeddings for entities and questions: one interface, three backends chosen by EMBEDDING_BACKEND.

`hashed` (the default) needs no network and no model: deterministic, L2-normalised vectors built by
hashing word unigrams, word bigrams and character trigrams into EMBEDDING_DIMENSIONS buckets (the
"hashing trick"), so questions and entities that share words or spellings point the same way.
`sentence-transformers` runs a local model; `http` calls an OpenAI-compatible `/embeddings` endpoint.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import struct
import unicodedata
import urllib.error
import urllib.request
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from django.conf import settings

from entities.models import EMBEDDING_DIMENSIONS

_TOKEN = re.compile(r"[a-z0-9]+")
# Bigrams never span these: a title and a company are separate phrases.
_SEGMENT_BREAK = re.compile(r"[\n.;:|!?()\[\]{}]+")

# How much each kind of feature counts: whole words carry meaning, trigrams carry spelling (typos).
WORD_WEIGHT = 1.0
BIGRAM_WEIGHT = 0.7
TRIGRAM_WEIGHT = 0.35
# The name is what people ask about; it weighs as much as this many repetitions of the rest.
NAME_WEIGHT = 3.0


class EmbeddingError(Exception):
    """The embedding backend could not produce vectors (unreachable service, bad model output)."""


class Embedder(ABC):
    """Turns texts into unit vectors of EMBEDDING_DIMENSIONS floats, one row per text."""

    dimensions = EMBEDDING_DIMENSIONS

    @abstractmethod
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """A float32 array of shape (len(texts), dimensions); every non-empty row has norm 1."""

    def embed_entities(self, entities: Sequence[tuple[str, Mapping[str, Any]]]) -> np.ndarray:
        """Vectors for (name, data) pairs. Backends without per-field weights embed the joined text."""
        return self.embed([entity_text(name=name, data=data) for name, data in entities])


def data_strings(value: Any) -> Iterable[str]:
    """Every string and number inside a JSON value, depth first (keys are labels, not content)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, (int, float)):
        yield str(value)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from data_strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from data_strings(item)


def entity_text(*, name: str, data: Mapping[str, Any]) -> str:
    """The text an entity is embedded from: its name, then every value in its data, one per line."""
    return "\n".join([name, *data_strings(data)])


def _normalise(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (matrix / norms).astype(np.float32, copy=False)


@functools.lru_cache(maxsize=500_000)
def _bucket(feature: str, dimensions: int) -> tuple[int, float]:
    """The bucket and sign of a feature; blake2b, not hash(), so every process agrees."""
    digest = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "little")
    return digest % dimensions, (1.0 if digest >> 63 else -1.0)


class HashedNgramEmbedder(Embedder):
    """Deterministic feature hashing of words, word pairs and character trigrams."""

    def __init__(self, dimensions: int = EMBEDDING_DIMENSIONS):
        self.dimensions = dimensions

    @staticmethod
    def tokens(text: str) -> list[list[str]]:
        """Lower-case ASCII word lists, one per segment of the text (accents folded: "Señor" -> "senor")."""
        folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
        return [words for segment in _SEGMENT_BREAK.split(folded) if (words := _TOKEN.findall(segment))]

    @staticmethod
    def features(text: str) -> dict[str, float]:
        """Feature -> summed weight for one text."""
        counts: dict[str, float] = {}
        for words in HashedNgramEmbedder.tokens(text):
            for index, word in enumerate(words):
                counts["w:" + word] = counts.get("w:" + word, 0.0) + WORD_WEIGHT
                if index:
                    bigram = f"b:{words[index - 1]} {word}"
                    counts[bigram] = counts.get(bigram, 0.0) + BIGRAM_WEIGHT
                padded = f" {word} "
                for start in range(len(padded) - 2):
                    trigram = "c:" + padded[start : start + 3]
                    counts[trigram] = counts.get(trigram, 0.0) + TRIGRAM_WEIGHT
        return counts

    def raw_vector(self, text: str) -> np.ndarray:
        """The unnormalised sum of one text's hashed features (cached: data values repeat a lot)."""
        return _raw_vector(text, self.dimensions)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return _normalise(np.stack([self.raw_vector(text) for text in texts]))

    def embed_entities(self, entities: Sequence[tuple[str, Mapping[str, Any]]]) -> np.ndarray:
        matrix = np.zeros((len(entities), self.dimensions), dtype=np.float64)
        for row, (name, data) in enumerate(entities):
            matrix[row] = NAME_WEIGHT * self.raw_vector(name)
            for text in data_strings(data):
                matrix[row] += self.raw_vector(text)
        return _normalise(matrix)


@functools.lru_cache(maxsize=100_000)
def _raw_vector(text: str, dimensions: int) -> np.ndarray:
    counts = HashedNgramEmbedder.features(text)
    buckets = np.empty(len(counts), dtype=np.int64)
    values = np.empty(len(counts), dtype=np.float64)
    for position, (feature, count) in enumerate(counts.items()):
        buckets[position], sign = _bucket(feature, dimensions)
        values[position] = sign * count
    vector = np.bincount(buckets, weights=values, minlength=dimensions)
    vector.flags.writeable = False
    return vector


class SentenceTransformerEmbedder(Embedder):
    """A local sentence-transformers model (EMBEDDING_MODEL); it must output EMBEDDING_DIMENSIONS floats."""

    def __init__(self, model_name: str):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as error:
            raise EmbeddingError(
                "EMBEDDING_BACKEND=sentence-transformers needs `pip install sentence-transformers`."
            ) from error
        self.model = SentenceTransformer(model_name)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        vectors = np.asarray(self.model.encode(list(texts), normalize_embeddings=True), dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dimensions:
            raise EmbeddingError(f"The model returned vectors of shape {vectors.shape}, not (n, {self.dimensions}).")
        return vectors


class HttpEmbedder(Embedder):
    """An OpenAI-compatible embeddings API: POST {"model", "input": [...]} -> {"data": [{"embedding"}]}."""

    def __init__(self, *, url: str, model: str, api_key: str, timeout: float):
        self.url, self.model, self.api_key, self.timeout = url, model, api_key, timeout

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        body = json.dumps({"model": self.model, "input": list(texts), "dimensions": self.dimensions}).encode()
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = json.load(response)
            rows = sorted(payload["data"], key=lambda item: item.get("index", 0))
            vectors = np.asarray([row["embedding"] for row in rows], dtype=np.float64)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise EmbeddingError(f"The embedding service failed: {error}") from error
        if vectors.shape != (len(texts), self.dimensions):
            raise EmbeddingError(f"The embedding service returned shape {vectors.shape}, not ({len(texts)}, 1024).")
        return _normalise(vectors)


@functools.cache
def _embedder(backend: str, model: str, url: str, api_key: str, timeout: float) -> Embedder:
    if backend == "hashed":
        return HashedNgramEmbedder()
    if backend == "sentence-transformers":
        return SentenceTransformerEmbedder(model)
    if backend == "http":
        return HttpEmbedder(url=url, model=model, api_key=api_key, timeout=timeout)
    raise EmbeddingError(f"Unknown EMBEDDING_BACKEND {backend!r}: use hashed, sentence-transformers or http.")


def embedder() -> Embedder:
    """The embedder selected by settings (one instance per configuration)."""
    return _embedder(
        settings.EMBEDDING_BACKEND,
        settings.EMBEDDING_MODEL,
        settings.EMBEDDING_URL,
        settings.EMBEDDING_API_KEY,
        settings.EMBEDDING_TIMEOUT,
    )


def vectors_copy_binary(*, ids: Sequence[uuid.UUID], vectors: np.ndarray) -> bytes:
    """Rows (id uuid, embedding vector) in PostgreSQL's binary COPY format: no text formatting of floats."""
    rows, dimensions = vectors.shape
    row_type = np.dtype(
        [
            ("fields", ">i2"),
            ("id_length", ">i4"),
            ("id", "S16"),
            ("vector_length", ">i4"),
            ("dimensions", ">u2"),
            ("unused", ">u2"),
            ("vector", ">f4", (dimensions,)),
        ]
    )
    table = np.zeros(rows, dtype=row_type)
    table["fields"] = 2
    table["id_length"] = 16
    table["id"] = [entity_id.bytes for entity_id in ids]
    table["vector_length"] = 4 + 4 * dimensions
    table["dimensions"] = dimensions
    table["vector"] = vectors
    header = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
    return header + table.tobytes() + struct.pack(">h", -1)
