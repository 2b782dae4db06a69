"""Definitions of the answer record, written once: question normalization and signal event ids."""

from __future__ import annotations

import re
import unicodedata
import uuid

# Apostrophes join ("what's" → "whats"); every other non-word character separates words.
_APOSTROPHES = re.compile(r"['\u2018\u2019\u02bc`]")
_NON_WORD = re.compile(r"[\W_]+")


def question_normalize(question: str) -> str:
    """The form two questions share when they differ only in case, whitespace or punctuation.

    Unicode-compatible (NFKC) and case-folded, apostrophes dropped, every run of other punctuation,
    symbols and whitespace made one space, trimmed: "Who is Chris Mansolillo?" and
    "  who is chris   mansolillo " are both "who is chris mansolillo". Accents are kept ("josé" ≠ "jose").
    """
    folded = unicodedata.normalize("NFKC", question).casefold()
    return _NON_WORD.sub(" ", _APOSTROPHES.sub("", folded)).strip()


def answer_signal_event_id(*, answer_id: uuid.UUID, entity_id: uuid.UUID) -> uuid.UUID:
    """The event id of the QuerySignal an answer sends for one entity: UUIDv5(answer id, entity id).

    Derived, not random, so that re-sending a signal from the answer record carries the same id and
    the worker's inbox counts it at most once (docs/events.md).
    """
    return uuid.uuid5(answer_id, str(entity_id))
