"""The answer record's definitions: question normalization and derived signal event ids."""

from __future__ import annotations

import uuid

import pytest

from entities.questions import answer_signal_event_id, question_normalize


@pytest.mark.parametrize(
    "question",
    [
        "Who is Chris Mansolillo?",
        "who is chris mansolillo",
        "  WHO   is\tChris\nMansolillo ??",
        "Who is Chris Mansolillo?!",
        "who is, chris mansolillo.",
        "Who is \u201cChris Mansolillo\u201d?",
        "Ｗｈｏ ｉｓ Chris Mansolillo？",  # full-width letters and question mark (NFKC)  # noqa: RUF001
    ],
)
def test_case_whitespace_and_punctuation_do_not_make_questions_different(question):
    assert question_normalize(question) == "who is chris mansolillo"


def test_apostrophes_join_and_words_stay_apart():
    assert question_normalize("What's Chris Mansolillo\u2019s mandate?") == "whats chris mansolillos mandate"
    assert question_normalize("sci-fi/fantasy") == "sci fi fantasy"
    assert question_normalize("Who is Chris") != question_normalize("Who is Chris Mansolillo")


def test_accents_and_digits_are_kept():
    assert question_normalize("José's 2024 deals") == "josés 2024 deals"
    assert question_normalize("Jose") != question_normalize("José")


def test_nothing_but_punctuation_normalizes_to_empty():
    assert question_normalize(" ?!… ") == ""


def test_event_ids_are_uuid5_of_answer_and_entity_and_differ_per_entity():
    answer, first, second = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    assert answer_signal_event_id(answer_id=answer, entity_id=first) == uuid.uuid5(answer, str(first))
    assert answer_signal_event_id(answer_id=answer, entity_id=first) == answer_signal_event_id(
        answer_id=answer, entity_id=first
    )
    assert answer_signal_event_id(answer_id=answer, entity_id=first) != answer_signal_event_id(
        answer_id=answer, entity_id=second
    )
    assert answer_signal_event_id(answer_id=answer, entity_id=first).version == 5
