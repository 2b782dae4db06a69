"""Hybrid entity search for answers: name trigrams, full-text search and embeddings, fused in one query.

Each signal ranks its own candidates inside PostgreSQL; reciprocal rank fusion (score = sum of
1 / (RRF_K + rank)) combines the ranks, so no signal's raw scale dominates. An entity is returned only
when at least one signal matched it clearly (the *_MIN thresholds), so a question about nothing in the
data returns no entities at all.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
import uuid
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction

from entities.embeddings import EmbeddingError, embedder

logger = logging.getLogger(__name__)

# PostgreSQL's English stop words (tsearch_data/english.stop), so every signal ignores the same words.
_STOP_WORDS = """
    i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her hers
    herself it its itself they them their theirs themselves what which who whom this that these those am is are
    was were be been being have has had having do does did doing a an the and but if or because as until while
    of at by for with about against between into through during before after above below to from up down in out
    on off over under again further then once here there when where why how all any both each few more most
    other some such no nor not only own same so than too very s t can will just don should now
"""
STOP_WORDS = frozenset(_STOP_WORDS.split())
# Words that frame a question rather than say what it is about (not stop words for PostgreSQL).
_FRAMING_WORDS = """
    tell looking look looks want wants wanted know find show give info information anything anyone someone
    somebody buying buy buys interested seeking please could would like currently right now today
"""
FRAMING_WORDS = frozenset(_FRAMING_WORDS.split())
IGNORED_WORDS = STOP_WORDS | FRAMING_WORDS
_TOKEN = re.compile(r"[a-z0-9]+")

RRF_K = 10
# Weighted RRF: names are what people ask about, so the name signal counts three times.
NAME_WEIGHT, TEXT_WEIGHT, VECTOR_WEIGHT = 3.0, 1.0, 1.0
# Words of a question looked up in the name index (names are short; long questions are about topics).
MAX_NAME_TERMS = 8
# A name is a candidate when one of its words resembles a question word this much (pg_trgm's default).
NAME_TERM_THRESHOLD = 0.6
# Each signal's top POOL ranks enter the fusion; the vector signal scores all CANDIDATES of the others.
POOL = 40
CANDIDATES = 200
# HNSW search breadth (pgvector's default, 40, misses close neighbours of these hashed vectors).
HNSW_EF_SEARCH = 100
# A name matches when this share of its trigrams appear in the question, in order (pg_trgm).
TRIGRAM_MIN = 0.5
# A question that is only part of a name (a surname, a prefix) scores this fraction of its similarity.
PARTIAL_NAME_WEIGHT = 0.9
# Full-text: a document must contain at least this share of the question's distinct terms.
TEXT_COVERAGE_MIN = 0.5
# Embeddings: cosine similarity a vector-only match needs to count.
COSINE_MIN = 0.35
# "Who ...?", "What is X looking for?" ask for a person: matching people are listed first.
PERSON_INTENT = re.compile(r"^\s*(who|whom|whose)\b|\blooking for\b|\bmandate\b", re.IGNORECASE)


@dataclass(frozen=True)
class SearchHit:
    id: uuid.UUID
    name: str
    entity_type: str
    data: dict[str, Any]
    score: float
    name_similarity: float | None
    text_rank: float | None
    cosine: float | None


def question_terms(question: str) -> list[str]:
    """The words of a question that say what it is about, lower case, accents folded, in order."""
    folded = unicodedata.normalize("NFKD", question).encode("ascii", "ignore").decode().lower()
    return [word for word in _TOKEN.findall(folded) if word not in IGNORED_WORDS and len(word) > 1]


def _vector_literal(question: str) -> str | None:
    try:
        vector = embedder().embed([question])[0]
    except EmbeddingError as error:
        # Two signals still answer; an embedding outage must not take answers down.
        logger.warning("Question embedding failed, searching without vectors: %s", error)
        return None
    if not vector.any():
        return None
    return "[" + ",".join(f"{value:.6g}" for value in vector.tolist()) + "]"


_SEARCH_SQL = """
WITH
lexeme AS (
    SELECT to_tsquery('english', term) AS query
    FROM unnest(%(terms)s::text[]) AS term
    WHERE numnode(to_tsquery('english', term)) > 0
),
name_term AS (
    SELECT term FROM unnest(%(terms)s::text[]) AS term LIMIT %(max_name_terms)s
),
trigram AS (
    -- Candidates from the trigram index: a word of the name resembles a word of the question
    -- (word_similarity >= pg_trgm.word_similarity_threshold = NAME_TERM_THRESHOLD). Then the whole
    -- name is scored both ways: the name inside the question ("Who is Chris Mansolillo?"), or the
    -- question inside the name ("Mansol"), the latter discounted so an exact name outranks longer
    -- names containing it.
    -- Trigrams ignore word order, so equal scores are told apart by the question's words appearing in
    -- the name in the same order, then by plain similarity (the name that covers more of the question).
    SELECT id, similarity, rank() OVER (ORDER BY similarity DESC, in_order DESC, coverage DESC) AS rank
    FROM (
        SELECT e.id, greatest(
                   strict_word_similarity(e.name, %(text)s),
                   %(partial_weight)s * word_similarity(%(text)s, e.name)
               ) AS similarity,
               strpos(lower(e.name), %(text)s) > 0 AS in_order,
               similarity(e.name, %(text)s) AS coverage
        FROM (
            SELECT DISTINCT c.id, c.name FROM name_term AS t JOIN entities_entity AS c ON c.name %%> t.term
        ) AS e
    ) scored
    WHERE similarity >= %(trigram_min)s
    ORDER BY similarity DESC, in_order DESC, coverage DESC, id
    LIMIT %(candidates)s
),
text_match AS (
    SELECT id, text_rank, rank() OVER (ORDER BY text_rank DESC) AS rank
    FROM (
        SELECT e.id, ts_rank(e.search_vector, q.query) AS text_rank,
               (SELECT count(*) FROM lexeme WHERE e.search_vector @@ lexeme.query) AS matched
        FROM entities_entity AS e, to_tsquery('english', %(tsquery)s) AS q(query)
        WHERE e.search_vector @@ q.query
    ) scored
    WHERE matched >= ceil(%(coverage_min)s * (SELECT count(*) FROM lexeme))
    ORDER BY text_rank DESC, id
    LIMIT %(candidates)s
),
nearest AS (
    -- Approximate neighbours from the HNSW index: they find topic matches the words alone miss.
    SELECT entity_id AS id FROM entities_entityembedding
    WHERE %(embedding)s::text IS NOT NULL
    ORDER BY vector <=> %(embedding)s::vector
    LIMIT %(pool)s
),
vector AS (
    -- Exact cosine over every candidate: the ANN scan alone misses close neighbours of sparse
    -- hashed vectors (a one-word question is near almost nothing, so the graph walk gets lost).
    SELECT id, cosine, rank() OVER (ORDER BY cosine DESC) AS rank
    FROM (
        SELECT e.entity_id AS id, 1 - (e.vector <=> %(embedding)s::vector) AS cosine
        FROM entities_entityembedding AS e
        WHERE %(embedding)s::text IS NOT NULL
          AND e.entity_id IN (SELECT id FROM trigram UNION SELECT id FROM text_match UNION SELECT id FROM nearest)
    ) scored
),
signals AS (
    SELECT id, %(name_weight)s / (%(k)s + rank) AS part, similarity AS name_similarity,
           NULL::real AS text_rank, NULL::float8 AS cosine
    FROM trigram WHERE rank <= %(pool)s
    UNION ALL
    SELECT id, %(text_weight)s / (%(k)s + rank), NULL, text_rank, NULL FROM text_match WHERE rank <= %(pool)s
    UNION ALL
    SELECT id, %(vector_weight)s / (%(k)s + rank), NULL, NULL, cosine FROM vector WHERE rank <= %(pool)s
),
fused AS (
    SELECT id, sum(part) AS score, max(name_similarity) AS name_similarity,
           max(text_rank) AS text_rank, max(cosine) AS cosine
    FROM signals
    GROUP BY id
)
SELECT e.id, e.name, e.entity_type, e.data, f.score, f.name_similarity, f.text_rank, f.cosine
FROM fused AS f JOIN entities_entity AS e ON e.id = f.id
WHERE f.name_similarity IS NOT NULL OR f.text_rank IS NOT NULL OR f.cosine >= %(cosine_min)s
ORDER BY %(person_intent)s AND e.entity_type = 'person' DESC, f.score DESC, e.name
LIMIT %(limit)s
"""


def entity_search(*, question: str, limit: int) -> list[SearchHit]:
    """The entities that best answer `question`, best first; empty when nothing matches clearly."""
    terms = question_terms(question)
    if not terms:
        return []
    text = " ".join(terms)
    distinct = list(dict.fromkeys(terms))
    params = {
        "text": text,
        "tsquery": " | ".join(distinct),
        "terms": distinct,
        "coverage_min": TEXT_COVERAGE_MIN,
        "embedding": _vector_literal(text),
        "trigram_min": TRIGRAM_MIN,
        "partial_weight": PARTIAL_NAME_WEIGHT,
        "cosine_min": COSINE_MIN,
        "pool": POOL,
        "candidates": CANDIDATES,
        "max_name_terms": MAX_NAME_TERMS,
        "k": RRF_K,
        "name_weight": NAME_WEIGHT,
        "text_weight": TEXT_WEIGHT,
        "vector_weight": VECTOR_WEIGHT,
        "person_intent": bool(PERSON_INTENT.search(question)),
        "limit": limit,
    }
    with transaction.atomic(), connection.cursor() as cursor:
        # For a few thousand rows the planner prices a sequential scan below the HNSW and GIN indexes,
        # but each row's vector is TOASTed: the scan is ~10x slower than the index in practice.
        cursor.execute(
            "SET LOCAL enable_seqscan = off;"
            f" SET LOCAL hnsw.ef_search = {HNSW_EF_SEARCH};"
            f" SET LOCAL pg_trgm.word_similarity_threshold = {NAME_TERM_THRESHOLD}"
        )
        cursor.execute(_SEARCH_SQL, params)
        rows = cursor.fetchall()
    return [
        SearchHit(
            id=row[0],
            name=row[1],
            entity_type=row[2],
            data=json.loads(row[3]) if isinstance(row[3], str) else row[3],
            score=float(row[4]),
            name_similarity=row[5],
            text_rank=row[6],
            cosine=row[7],
        )
        for row in rows
    ]
