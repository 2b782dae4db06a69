"""Answer composers: turn a question and its retrieved entities into the answer text.

`ExtractiveComposer` (the default) is deterministic and states only what the entities' own data says.
`GenerativeComposer` asks an OpenAI-compatible chat-completions service (ANSWER_LLM_*) to phrase the
answer from the same facts; on a timeout or any failure of that service it falls back to extractive.
"""

from __future__ import annotations

import http.client
import json
import logging
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

from django.conf import settings

from entities.models import EntityType
from entities.retrieval import SearchHit
from streams.events import ROLE_SUBJECT

logger = logging.getLogger(__name__)

NOTHING_FOUND = (
    "I found nothing relevant to that question in the entity data. "
    "Try a person's or company's full name, or a topic such as a genre or format."
)
SNIPPET_LENGTH = 240
MAX_LIST_ITEMS = 3


def _text(value: Any) -> str:
    """A data value as readable text: lists joined, mappings by their name/title, scalars as strings."""
    if isinstance(value, Mapping):
        return _text(value.get("name") or value.get("title") or "")
    if isinstance(value, (list, tuple)):
        return ", ".join(text for item in value[:MAX_LIST_ITEMS] if (text := _text(item)))
    if value is None or isinstance(value, bool):
        return ""
    return str(value).strip()


def _sentence(text: str) -> str:
    text = text.strip()
    return text if not text or text[-1] in ".!?" else text + "."


def _type_label(entity_type: str) -> str:
    try:
        return EntityType(entity_type).label.lower()
    except ValueError:
        return entity_type.replace("_", " ")


def entity_facts(hit: SearchHit) -> list[str]:
    """Short sentences about an entity, from its own data, most telling first."""
    data = hit.data if isinstance(hit.data, Mapping) else {}
    mandate = data.get("mandate") if isinstance(data.get("mandate"), Mapping) else {}
    facts: list[str] = []
    title, company = _text(data.get("title")), _text(data.get("company"))
    if title and company:
        facts.append(f"{hit.name} is {title} at {company}.")
    elif title or company:
        facts.append(f"{hit.name} is {title or 'at ' + company}.")
    else:
        kind = _text(data.get("kind") or data.get("business_model") or data.get("category"))
        facts.append(
            f"{hit.name} is a {kind + ' ' if kind and kind != hit.entity_type else ''}{_type_label(hit.entity_type)}."
        )
    if overview := _text(mandate.get("overview") if mandate else data.get("mandate")):
        facts.append(f"Mandate: {_sentence(overview)}")
    if looking_for := _text(mandate.get("looking_for")):
        facts.append(f"Looking for: {_sentence(looking_for)}")
    if greenlights := _text(data.get("recent_greenlights")):
        facts.append(f"Recent greenlights: {_sentence(greenlights)}")
    for key, label in (
        ("logline", "Logline"),
        ("description", "About"),
        ("scope", "Scope"),
        ("focus", "Focus"),
        ("specialty", "Specialty"),
        ("status", "Status"),
        ("platform", "Platform"),
        ("person", "Person"),
        ("production_company", "Production company"),
        ("credits", "Credits"),
    ):
        if len(facts) >= 5:
            break
        if value := _text(data.get(key)):
            facts.append(f"{label}: {_sentence(value)}")
    return facts


def entity_snippet(hit: SearchHit) -> str:
    """One line about the entity for the `entities` list of an answer."""
    facts = entity_facts(hit)
    snippet = " ".join(facts[1:3]) or facts[0]
    return snippet if len(snippet) <= SNIPPET_LENGTH else snippet[: SNIPPET_LENGTH - 1].rstrip() + "…"


class Composer(ABC):
    name: str  # as kept on the answer record

    @abstractmethod
    def compose(self, *, question: str, hits: Sequence[SearchHit]) -> str:
        """The answer text for `question` from `hits` (best first; may be empty)."""


def _listed(hits: Sequence[SearchHit]) -> str:
    return "; ".join(f"{hit.name} ({_type_label(hit.entity_type)})" for hit in hits)


class ExtractiveComposer(Composer):
    """Who or what the subject is, from its data (or the list of subjects), then the related entities."""

    name = "extractive"

    def compose(self, *, question: str, hits: Sequence[SearchHit]) -> str:
        if not hits:
            return NOTHING_FOUND
        subjects = [hit for hit in hits if hit.role == ROLE_SUBJECT]
        related = [hit for hit in hits if hit.role != ROLE_SUBJECT]
        if len(subjects) == 1:
            parts = [" ".join(entity_facts(subjects[0]))]
        else:
            parts = [f"{len(subjects)} matches: {_listed(subjects)}."]
        if related:
            about = subjects[0].name if len(subjects) == 1 else "them"
            parts.append(f"Related to {about}: {_listed(related)}.")
        return " ".join(parts)


class GenerativeComposer(Composer):
    """Phrases the answer with a chat-completions model, strictly from the retrieved facts."""

    name = "generative"

    SYSTEM_PROMPT = (
        "You answer questions about people and companies in the entertainment industry. Use only the facts "
        "given; if they do not answer the question, say so. Be brief: at most four sentences."
    )

    def __init__(self, *, url: str, model: str, api_key: str, timeout: float, fallback: Composer):
        self.url, self.model, self.api_key, self.timeout, self.fallback = url, model, api_key, timeout, fallback

    def compose(self, *, question: str, hits: Sequence[SearchHit]) -> str:
        if not hits:
            return self.fallback.compose(question=question, hits=hits)
        facts = "\n".join(
            f"- {'(the question is about this) ' if hit.role == ROLE_SUBJECT else '(related) '}"
            f"{' '.join(entity_facts(hit))}"
            for hit in hits
        )
        body = {
            "model": self.model,
            "temperature": 0,
            "messages": [
                {"role": "system", "content": self.SYSTEM_PROMPT},
                {"role": "user", "content": f"Facts:\n{facts}\n\nQuestion: {question}"},
            ],
        }
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = json.load(response)
            answer = payload["choices"][0]["message"]["content"]
            if not isinstance(answer, str) or not answer.strip():
                raise ValueError("empty answer")
        except (OSError, http.client.HTTPException, ValueError, KeyError, IndexError, TypeError) as error:
            # OSError covers timeouts, refused connections and HTTP error statuses (urllib's URLError).
            logger.warning("Generative composer failed (%s); answering extractively", error)
            return self.fallback.compose(question=question, hits=hits)
        return answer.strip()


def composer() -> Composer:
    """The composer selected by ANSWER_COMPOSER (generative only when ANSWER_LLM_URL is set)."""
    extractive = ExtractiveComposer()
    if settings.ANSWER_COMPOSER == "generative" and settings.ANSWER_LLM_URL:
        return GenerativeComposer(
            url=settings.ANSWER_LLM_URL,
            model=settings.ANSWER_LLM_MODEL,
            api_key=settings.ANSWER_LLM_API_KEY,
            timeout=settings.ANSWER_LLM_TIMEOUT,
            fallback=extractive,
        )
    return extractive
