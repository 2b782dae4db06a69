"""Hybrid retrieval on real PostgreSQL (pg_trgm, full-text search, pgvector): names, typos, parts, topics."""

from __future__ import annotations

import pytest
from django.db import connection

from entities.models import EntityType
from entities.retrieval import entity_search, question_terms
from entities.services import entities_reindex
from tests.entities.catalog import catalog_create
from tests.entities.factories import EntityFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalog():
    return catalog_create()


def names(question: str, limit: int = 5) -> list[str]:
    return [hit.name for hit in entity_search(question=question, limit=limit)]


def test_question_terms_drop_stop_and_framing_words_and_fold_accents():
    assert question_terms("Who is Chris Mansolillo?") == ["chris", "mansolillo"]
    assert question_terms("Tell me about Señor Studios, please") == ["senor", "studios"]
    assert question_terms("What is he looking for?") == []


def test_question_terms_drop_command_words_only_where_they_open_the_question():
    assert question_terms("list horror projects") == ["horror", "projects"]
    assert question_terms("Can you list all the horror projects?") == ["horror", "projects"]
    assert question_terms("Who is Chris List?") == ["chris", "list"]


@pytest.mark.parametrize(
    "question",
    ["Who is Chris Mansolillo?", "who is chris mansolillo", "What is Chris Mansolillo looking for?", "Mansolillo"],
)
def test_the_named_person_comes_first(catalog, question):
    assert names(question)[0] == "Chris Mansolillo"


@pytest.mark.parametrize(
    "question",
    [
        "Who is Chris Mansolilo?",  # a letter missing
        "Who is Chris Mansolilllo?",  # a letter doubled
        "Who is Chris Mnasolillo?",  # two letters swapped
        "Who is Chris Mansolillp?",  # a wrong letter
        "Who is Priya Lindqvst?",
        "Tell me about Silver Harbour Studios",
    ],
)
def test_one_typo_still_finds_the_entity_first(catalog, question):
    expected = "Silver Harbor Studios" if "Studios" in question else question.split(" ", 2)[2][:5]
    assert names(question)[0].startswith(expected)


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("Who is Okafor?", "Dana Okafor"),
        ("Who is Mansol?", "Chris Mansolillo"),
        ("Tell me about Silver Harbor", "Silver Harbor Studios"),
        ("Midnight Crown", "The Midnight Crown"),
    ],
)
def test_partial_names_find_the_entity_first(catalog, question, expected):
    assert names(question)[0] == expected


def test_a_mandate_topic_finds_the_person_looking_for_it(catalog):
    assert names("Who is looking for nature documentaries with a conservation angle?")[0] == "Priya Lindqvist"
    assert names("Who buys culinary competition formats?")[0] == "Dana Okafor"


@pytest.mark.parametrize("question", ["What is the weather in Paris?", "xyzzy plugh", "Who is he?", "?!"])
def test_nothing_relevant_returns_nothing(catalog, question):
    assert names(question) == []


@pytest.mark.parametrize(
    "question", ["Which projects are horror?", "list horror projects", "Can you list all the horror projects?"]
)
def test_a_list_question_returns_the_entities_of_the_type_and_topic_asked(catalog, question):
    hits = entity_search(question=question, limit=5)
    assert [(hit.name, hit.role, hit.rank) for hit in hits] == [("The Midnight Crown", "subject", 1)]


def test_part_of_several_names_returns_those_names_as_subjects_up_to_the_limit(catalog):
    hits = entity_search(question="Who is Chris?", limit=2)
    assert len(hits) == 2
    assert {hit.name for hit in hits} <= {"Chris Mansolillo", "Chris Ishikawa", "Chris Pryce", "Chris Carrow"}
    assert [(hit.role, hit.rank) for hit in hits] == [("subject", 1), ("subject", 2)]
    assert hits[0].score >= hits[1].score > 0
    assert len(entity_search(question="Who is Chris?", limit=20)) == 4


def test_entities_without_embeddings_are_still_found_by_name_and_text(catalog):
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM entities_entityembedding")
    assert names("Who is Chris Mansolilo?")[0] == "Chris Mansolillo"
    assert names("nature documentaries")[0] == "Priya Lindqvist"


def test_a_named_project_is_the_subject_and_the_people_its_record_names_are_related(catalog):
    hits = entity_search(question="Who is behind The Midnight Crown?", limit=5)
    assert [(hit.name, hit.role, hit.rank) for hit in hits] == [
        ("The Midnight Crown", "subject", 1),
        ("Chris Mansolillo", "related", 2),
    ]


def test_word_order_decides_between_names_with_the_same_words(catalog):
    made = [
        EntityFactory(name="Driftwood Nightjar Networks", entity_type=EntityType.COMPANY, data={"kind": "network"}),
        EntityFactory(name="Nightjar Driftwood Pictures", entity_type=EntityType.COMPANY, data={"kind": "studio"}),
    ]
    entities_reindex(entity_ids=[entity.pk for entity in made])
    assert names("Tell me about Nightjar Driftwood")[0] == "Nightjar Driftwood Pictures"
    assert names("Tell me about Driftwood Nightjar")[0] == "Driftwood Nightjar Networks"
