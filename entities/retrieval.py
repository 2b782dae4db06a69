"""Entity search for answers: the entities a question is about, and the entities their records name.

A question is read in three steps, all against PostgreSQL:

1. **Names.** Every word of the question that may be part of a name finds candidate names through the
   trigram index (pg_trgm); each candidate's words are then matched to the question's words in SQL —
   exactly, by English stem, by one edit (fuzzystrmatch `levenshtein`), by a swap of letters, by sound
   (`dmetaphone`) or as a prefix. A *full match* is a name whose every word is in the question.
2. **What kind of question.** A full match of a person, project or deal is what the question is about
   (its subject). A question that names an entity type ("executives", "companies") or asks who is
   buying what is a *list question*: the companies or platforms it names and the words left over (the
   topic: a genre, format or mandate) become constraints, and every entity satisfying all of them is
   a subject. Otherwise a full match of any entity is the subject, then a question that is part of
   names ("Mansolillo", "Chris") finds those names, then its words are a topic searched over every type.
3. **Related.** Entities a subject's record names by name (a person's company and greenlit projects, a
   project's platform and executive) follow, marked `related`, up to `limit` in all.

A question about nothing in the data returns nothing.
"""

from __future__ import annotations

import json
import re
import unicodedata
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from django.db import connection, transaction

from entities.models import EntityType
from streams.events import ROLE_RELATED, ROLE_SUBJECT

# PostgreSQL's English stop words (tsearch_data/english.stop), so every step ignores the same words.
_STOP_WORDS = """
    i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her hers
    herself it its itself they them their theirs themselves what which who whom this that these those am is are
    was were be been being have has had having do does did doing a an the and but if or because as until while
    of at by for with about against between into through during before after above below to from up down in out
    on off over under again further then once here there when where why how all any both each few more most
    other some such no nor not only own same so than too very s t can will just don should now
"""
STOP_WORDS = frozenset(_STOP_WORDS.split())
# Words that frame a question or name an aspect of its subject rather than say what it is about.
_FRAMING_WORDS = """
    tell looking look looks want wants wanted know find show give info information anything anyone someone
    somebody buying buy buys bought interested interest seeking seek please could would like currently right
    today need needs acquiring acquire acquires focus focused focuses focusing specialize specializes
    specialise specialises specializing specialising make makes making produce produces work works working
    mandate mandates title role job profile background bio contact details recent greenlights greenlit
    does doing thing things lately anymore also ll ve re
"""
FRAMING_WORDS = frozenset(_FRAMING_WORDS.split())
IGNORED_WORDS = STOP_WORDS | FRAMING_WORDS
# Imperatives that ask for an answer ("List horror projects", "Can you name ..."): framing only where they
# open the question, before any word it is about, since elsewhere they may be words of a name or a topic.
_COMMAND_WORDS = "list name get display enumerate fetch search"
COMMAND_WORDS = frozenset(_COMMAND_WORDS.split())
_TOKEN = re.compile(r"[a-z0-9]+")
# "Mansolillo's", "Mansolillos'", "who's": the possessive or contracted ending is not part of the word.
_APOSTROPHE_S = re.compile(r"(\w)'s\b|(\w)s'(?!\w)")
# Typographic apostrophes (right single quote, modifier letter, prime, grave, acute) read as "'".
_APOSTROPHES = str.maketrans(dict.fromkeys("\u2019\u2018\u02bc\u2032`\u00b4", "'"))

# Plural or singular nouns that ask for a list of one entity type ("Which executives ...?").
TYPE_WORDS: dict[str, str] = {
    **dict.fromkeys(
        ("executive", "executives", "exec", "execs", "people", "person", "persons", "buyers", "buyer"),
        EntityType.PERSON,
    ),
    **dict.fromkeys(
        ("companies", "company", "studios", "studio", "networks", "distributors", "financiers"), EntityType.COMPANY
    ),
    **dict.fromkeys(("platforms", "platform", "streamers", "streamer", "services"), EntityType.PLATFORM),
    **dict.fromkeys(("projects", "project", "shows", "titles"), EntityType.PROJECT),
    **dict.fromkeys(("deals", "deal"), EntityType.DEAL),
    **dict.fromkeys(("prodcos", "prodco"), EntityType.PRODUCTION_COMPANY),
}
# "production companies" is one type, not "production" + companies.
_PRODUCTION_COMPANIES = re.compile(r"\bproduction\s+compan(y|ies)\b")
# A question that asks who wants, buys or makes something: its leftover words are a topic.
DEMAND_CUE = re.compile(
    r"\b(looking|buying|buys?|bought|wants?|seeking|interested|acquir\w*|focus\w*|speciali[sz]\w*|makes?|"
    r"produces?|works?\s+(on|in|at)|doing)\b"
)
WHO = re.compile(r"^\s*(who|whom|whose)\b")
# Entity types a list question can be constrained to by name (an employer or a home platform).
ORGANISATION_TYPES = frozenset({EntityType.COMPANY, EntityType.PLATFORM, EntityType.PRODUCTION_COMPANY})
# Types whose full match is a topic (a genre or format) in a list question, not what it is about.
TOPIC_TYPES = frozenset({EntityType.GENRE, EntityType.FORMAT})

# Candidate names for a question word: one of the name's words resembles it this much (pg_trgm
# word_similarity); the matching below decides, this only has to keep every plausible typo.
NAME_TERM_THRESHOLD = 0.45
CANDIDATES_PER_TERM = 60
MAX_NAME_TERMS = 12
# How well a question word matches a name word, by kind of match (a full match needs every word).
EXACT, STEM, ONE_EDIT, SWAP, SOUND, PREFIX = 1.0, 0.95, 0.85, 0.85, 0.75, 0.7
# Fuzzy (non-exact) matches need this many letters, or this many when no other word of the name
# matched exactly ("man" must not find the platform "Max").
FUZZY_MIN_ANCHORED, FUZZY_MIN_ALONE = 3, 5
PREFIX_MIN = 4
# Longer words are matched by nothing (levenshtein takes at most 255 characters).
WORD_MAX = 64


@dataclass(frozen=True)
class SearchHit:
    id: uuid.UUID
    name: str
    entity_type: str
    data: dict[str, Any]
    score: float
    role: str = ROLE_SUBJECT
    rank: int = 1


def question_fold(question: str) -> str:
    """The question in lower case, accents folded, possessive and contracted "'s" removed."""
    folded = unicodedata.normalize("NFKD", question.translate(_APOSTROPHES)).encode("ascii", "ignore").decode()
    return _APOSTROPHE_S.sub(lambda match: match.group(1) or match.group(2) + "s", folded.lower())


def question_terms(question: str) -> list[str]:
    """The words of a question that say what it is about, lower case, accents folded, in order.

    Stop and framing words go wherever they are; command words only where they open the question.
    """
    terms = [word for word in _TOKEN.findall(question_fold(question)) if word not in IGNORED_WORDS and len(word) > 1]
    opening = 0
    while opening < len(terms) and terms[opening] in COMMAND_WORDS:
        opening += 1
    return terms[opening:]


_NAME_SQL = """
WITH
term AS (
    SELECT t.term, t.pos::int AS pos, ts_lexize('english_stem', t.term) AS stem, dmetaphone(t.term) AS sound
    FROM unnest(%(terms)s::text[]) WITH ORDINALITY AS t(term, pos)
    WHERE length(t.term) <= %(word_max)s  -- no name has such a word; levenshtein takes at most 255
),
candidate AS (
    -- name %%> term: word_similarity(term, name) >= pg_trgm.word_similarity_threshold (GIN trigram index).
    SELECT DISTINCT c.id
    FROM term AS t
    CROSS JOIN LATERAL (
        SELECT e.id FROM entities_entity AS e
        WHERE e.name %%> t.term
        -- The names most of whose letters the question holds first (word_similarity(name, question)).
        ORDER BY word_similarity(e.name, %(question)s) DESC, length(e.name), e.id
        LIMIT %(per_term)s
    ) AS c
),
name_word AS (
    SELECT e.id, w.word, w.idx::int AS idx, ts_lexize('english_stem', w.word) AS stem
    FROM candidate JOIN entities_entity AS e USING (id)
    CROSS JOIN LATERAL regexp_split_to_table(lower(unaccent(e.name)), '[^a-z0-9]+') WITH ORDINALITY AS w(word, idx)
    WHERE length(w.word) BETWEEN 2 AND %(word_max)s AND NOT w.word = ANY(%(ignored)s::text[])
),
scored AS (
    SELECT n.id, n.idx, n.word, t.pos,
           CASE
               WHEN t.term = n.word THEN %(exact)s
               WHEN t.stem = n.stem THEN %(stem)s
               WHEN levenshtein(t.term, n.word) = 1 THEN %(one_edit)s
               WHEN length(t.term) = length(n.word) AND levenshtein(t.term, n.word) = 2
                    AND array(SELECT unnest(string_to_array(t.term, NULL)) ORDER BY 1)
                        = array(SELECT unnest(string_to_array(n.word, NULL)) ORDER BY 1) THEN %(swap)s
               WHEN length(n.word) >= 5 AND levenshtein(t.term, n.word) = 2 AND dmetaphone(n.word) = t.sound
                   THEN %(sound)s
               WHEN length(t.term) >= %(prefix_min)s AND left(n.word, length(t.term)) = t.term THEN %(prefix)s
           END AS quality
    FROM name_word AS n CROSS JOIN term AS t
),
best AS (
    -- Each name word's best question word (ties: the earlier word).
    SELECT DISTINCT ON (id, idx) id, idx, word, pos, quality
    FROM scored
    WHERE quality IS NOT NULL
    ORDER BY id, idx, quality DESC, pos
),
word_count AS (
    SELECT id, count(*) AS words FROM name_word GROUP BY id
)
SELECT e.id, e.name, e.entity_type, e.data, w.words,
       array_agg(b.pos ORDER BY b.idx) AS positions, array_agg(b.quality ORDER BY b.idx) AS qualities,
       array_agg(length(b.word) ORDER BY b.idx) AS lengths
FROM best AS b JOIN entities_entity AS e ON e.id = b.id JOIN word_count AS w ON w.id = b.id
GROUP BY e.id, w.words
"""

# A list question: every entity of the asked types that names one of the organisations (directly, or
# for people through the company they work at) and whose topic fields contain every topic word.
_LIST_SQL = """
WITH org AS (SELECT unnest(%(orgs)s::text[]) AS name),
employer AS (
    -- Companies that name one of the organisations (a platform they distribute on, say).
    SELECT c.name FROM entities_entity AS c
    WHERE %(has_orgs)s AND c.entity_type = 'company'
      AND EXISTS (
          SELECT 1 FROM jsonb_each(c.data) AS kv, org
          WHERE kv.value = to_jsonb(org.name) OR (jsonb_typeof(kv.value) = 'array' AND kv.value ? org.name)
      )
),
matched AS (
    SELECT e.id, e.name, e.entity_type, e.data,
           -- The fields that say what an entity of each type wants, makes or is (genres and formats: their name).
           jsonb_to_tsvector('english', coalesce(CASE e.entity_type
               WHEN 'person' THEN e.data -> 'mandate' -> 'looking_for'
               WHEN 'project' THEN jsonb_build_array(e.data -> 'genre', e.data -> 'format')
               WHEN 'production_company' THEN e.data -> 'specialty'
               WHEN 'company' THEN e.data -> 'focus'
               WHEN 'platform' THEN e.data -> 'focus'
               WHEN 'deal' THEN e.data -> 'kind'
               ELSE to_jsonb(e.name)
           END, '[]'), '["string"]') AS topic
    FROM entities_entity AS e
    WHERE (cardinality(%(types)s::text[]) = 0 OR e.entity_type = ANY(%(types)s::text[]))
      AND (NOT %(has_topic)s OR e.search_vector @@ plainto_tsquery('english', %(topic)s))
      AND (NOT %(has_orgs)s OR EXISTS (
              SELECT 1 FROM jsonb_each(e.data) AS kv, org
              WHERE kv.value = to_jsonb(org.name) OR (jsonb_typeof(kv.value) = 'array' AND kv.value ? org.name)
          ) OR (e.entity_type = 'person' AND e.data ->> 'company' IN (SELECT name FROM employer)))
      AND NOT e.name = ANY(%(orgs)s::text[])
)
SELECT id, name, entity_type, data,
       CASE WHEN %(has_topic)s THEN ts_rank(topic, plainto_tsquery('english', %(topic)s)) ELSE 1 END AS score
FROM matched
WHERE NOT %(has_topic)s OR topic @@ plainto_tsquery('english', %(topic)s)
ORDER BY score DESC, name, id
LIMIT %(limit)s
"""

_NAMED_SQL = """
SELECT id, name, entity_type, data FROM entities_entity WHERE name = ANY(%(names)s::text[]) ORDER BY name, id
"""


@dataclass(frozen=True)
class _NameMatch:
    id: uuid.UUID
    name: str
    entity_type: str
    data: dict[str, Any]
    words: int
    positions: tuple[int, ...]
    qualities: tuple[float, ...]
    lengths: tuple[int, ...]

    @property
    def full(self) -> bool:
        if len(self.positions) < self.words or len(set(self.positions)) < len(self.positions):
            return False
        anchored = EXACT in self.qualities
        return all(
            quality == EXACT or length >= (FUZZY_MIN_ANCHORED if anchored else FUZZY_MIN_ALONE)
            for quality, length in zip(self.qualities, self.lengths, strict=True)
        )

    @property
    def quality(self) -> float:
        return sum(self.qualities) / self.words

    @property
    def in_order(self) -> bool:
        return list(self.positions) == sorted(self.positions)

    def hit(self, *, score: float | None = None) -> SearchHit:
        return SearchHit(self.id, self.name, self.entity_type, self.data, self.quality if score is None else score)


def _data(value: Any) -> dict[str, Any]:
    decoded = json.loads(value) if isinstance(value, str) else value
    return decoded if isinstance(decoded, dict) else {}


def _name_matches(terms: list[str], question: str) -> list[_NameMatch]:
    params = {
        "question": question_fold(question),
        "terms": terms[:MAX_NAME_TERMS],
        "per_term": CANDIDATES_PER_TERM,
        "ignored": sorted(IGNORED_WORDS),
        "exact": EXACT,
        "stem": STEM,
        "one_edit": ONE_EDIT,
        "swap": SWAP,
        "sound": SOUND,
        "prefix": PREFIX,
        "prefix_min": PREFIX_MIN,
        "word_max": WORD_MAX,
    }
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL pg_trgm.word_similarity_threshold = {NAME_TERM_THRESHOLD}")
        cursor.execute(_NAME_SQL, params)
        rows = cursor.fetchall()
    return [
        _NameMatch(
            row[0], row[1], row[2], _data(row[3]), row[4], tuple(row[5]), tuple(map(float, row[6])), tuple(row[7])
        )
        for row in rows
    ]


def _phrase(text: str) -> str:
    return " " + " ".join(_TOKEN.findall(question_fold(text))) + " "


def _full_matches_select(matches: Iterable[_NameMatch], question: str) -> list[_NameMatch]:
    """The full matches the question names: the best match of each stretch of the question's words.

    A name covering more of the question beats one covering part of it ("Silver Harbor Studios" over
    "Silver Studios"); over the same words an exact match beats a typo, a name written out word for word
    (stop words included: "The Paper Orbit", not "Paper of Orbit") beats one that is not, and words in
    the name's order beat the same words in another order. Exact ties (two entities of one name) are
    all kept.
    """
    asked = _phrase(question)
    full = sorted(
        (match for match in matches if match.full),
        key=lambda match: (
            -len(match.positions),
            -match.quality,
            _phrase(match.name) not in asked,
            not match.in_order,
            len(match.name),
            match.name,
        ),
    )
    chosen: list[_NameMatch] = []
    for match in full:
        clashes = [other for other in chosen if set(other.positions) & set(match.positions)]
        written = _phrase(match.name) in asked
        if not clashes or all(
            (set(other.positions), other.quality, other.in_order, _phrase(other.name) in asked)
            == (set(match.positions), match.quality, match.in_order, written)
            for other in clashes
        ):
            chosen.append(match)
    return chosen


def _names_in(data: Mapping[str, Any]) -> list[str]:
    """The strings a record holds at its top level and in its top-level lists: where records name others."""
    names: list[str] = []
    for value in data.values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and item.strip():
                names.append(item)
    return names


def _related(subjects: list[SearchHit], room: int) -> list[SearchHit]:
    if room <= 0 or not subjects:
        return []
    wanted = [name for subject in subjects for name in _names_in(subject.data)]
    if not wanted:
        return []
    with connection.cursor() as cursor:
        cursor.execute(_NAMED_SQL, {"names": sorted(set(wanted))})
        by_name: dict[str, list[tuple]] = {}
        for row in cursor.fetchall():
            by_name.setdefault(row[1], []).append(row)
    taken = {subject.id for subject in subjects}
    related: list[SearchHit] = []
    for name in wanted:  # in the order the subjects' records name them
        for row in by_name.get(name, []):
            if row[0] not in taken and len(related) < room:
                taken.add(row[0])
                related.append(SearchHit(row[0], row[1], row[2], _data(row[3]), 0.0, ROLE_RELATED))
    return related


def _list_search(*, types: list[str], orgs: list[str], topic: str, limit: int) -> list[SearchHit]:
    params = {
        "types": types,
        "orgs": orgs,
        "has_orgs": bool(orgs),
        "topic": topic,
        "has_topic": bool(topic),
        "limit": limit,
    }
    with connection.cursor() as cursor:
        cursor.execute(_LIST_SQL, params)
        rows = cursor.fetchall()
    return [SearchHit(row[0], row[1], row[2], _data(row[3]), float(row[4])) for row in rows]


def _types_asked(folded: str, words: list[str]) -> list[str]:
    types = {TYPE_WORDS[word] for word in words if word in TYPE_WORDS}
    if _PRODUCTION_COMPANIES.search(folded):
        types.discard(EntityType.COMPANY)
        types.add(EntityType.PRODUCTION_COMPANY)
    if not types and WHO.search(folded):
        types.add(EntityType.PERSON)
    return sorted(types)


def _ranked(hits: list[SearchHit]) -> list[SearchHit]:
    return [replace(hit, rank=rank) for rank, hit in enumerate(hits, start=1)]


def entity_search(*, question: str, limit: int) -> list[SearchHit]:
    """The entities `question` is about (role `subject`), then entities their records name (`related`).

    At most `limit` entities, ranked from 1; empty when the question is about nothing in the data.
    """
    terms = question_terms(question)
    if not terms:
        return []
    folded = question_fold(question)
    matches = _name_matches(terms, question)
    full = _full_matches_select(matches, question)
    covered = {position for match in full for position in match.positions}
    uncovered = [term for position, term in enumerate(terms, start=1) if position not in covered]
    named = [match for match in full if match.entity_type not in ORGANISATION_TYPES | TOPIC_TYPES]
    types = _types_asked(folded, uncovered)
    type_words = set(TYPE_WORDS) | ({"production"} if _PRODUCTION_COMPANIES.search(folded) else set())
    topic_words = [word for word in uncovered if word not in type_words]
    orgs = [match for match in full if match.entity_type in ORGANISATION_TYPES]
    # Genres and formats named in a list question are part of its topic.
    topic_words += [term for match in full if match.entity_type in TOPIC_TYPES for term in _match_terms(match, terms)]
    explicit_type = any(word in TYPE_WORDS for word in uncovered)
    wants = bool(DEMAND_CUE.search(folded))
    is_list = not named and (explicit_type or (wants and bool(topic_words))) and bool(orgs or topic_words or types)

    if is_list:
        subjects = _list_search(
            types=types, orgs=[match.name for match in orgs], topic=" ".join(topic_words), limit=limit
        )
        return _ranked(subjects)
    if full:
        subjects = [match.hit() for match in full]
        named_by_subjects = {name for subject in subjects for name in _names_in(subject.data)}
        # "X at <company>": the company X's record names is related to X, not a second subject.
        leading = [subject for subject in subjects if subject.name not in named_by_subjects] or subjects
        subjects = leading[:limit]
        return _ranked(subjects + _related(subjects, limit - len(subjects)))
    partial = [match for match in matches if set(match.positions) >= set(range(1, len(terms) + 1))]
    if partial:
        # The question is part of names ("Mansolillo", "Chris"): the names it is the largest part of.
        best = max(len(match.positions) / match.words for match in partial)
        chosen = sorted(
            (match for match in partial if len(match.positions) / match.words == best),
            key=lambda match: (-match.quality, not match.in_order, match.name, str(match.id)),
        )
        subjects = [match.hit(score=match.quality * best) for match in chosen[:limit]]
        # Several names the question could mean: no one's record speaks for the answer.
        related = _related(subjects, limit - len(subjects)) if len(subjects) == 1 else []
        return _ranked(subjects + related)
    return _ranked(_list_search(types=types, orgs=[], topic=" ".join(terms), limit=limit))


def _match_terms(match: _NameMatch, terms: list[str]) -> list[str]:
    return [terms[position - 1] for position in match.positions]
