"""Simulated demand history for the demo data: what 30 days of users asking questions would have left.

Pure generation, no database: `demand_history` turns entity records into past answers (one subject each,
or none for a question about nothing) with deterministic ids. `analytics.services.demand_history_seed`
records them and counts their QuerySignals (event ids derived from the answer, as on the answer path)
through the worker's own counting function, so counters, buckets, windows, totals and the question
reports agree as they would in production.

The shape, chosen so that every report of a first `make run` has something to show:
- a Zipf-like long tail over all entities (a few are asked about daily, most never);
- a handful of entities spiking in the last day and in the last week (trending 1d / 7d / 30d);
- several in-demand entities among the oldest records (stale, "refresh these next", when older than the
  stale threshold, as the demo data's oldest records are);
- varied question wording per entity type, and questions the data cannot answer (content gaps).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from entities.services import PastAnswer

HISTORY_NAMESPACE = uuid.UUID("0c7f6a8e-5d2b-4f8a-b1e3-9a6c4d2e7f10")
HISTORY_DAYS = 30
HISTORY_SIGNALS = 12_000
# The demo's askers: users without a usable password (nobody can log in as them).
DEMO_ASKERS = 25
GAP_ANSWERS = 150
GAP_QUESTIONS = [
    "Who is buying Antarctic westerns?",
    "which streamers want puppet musicals",
    "Who greenlights underwater reality shows?",
    "Who's looking for silent film remakes?",
    "Which executives want chess documentaries?",
    "who buys esports anime",
]
ZIPF_EXPONENT = 1.1
DAY_SPIKES = 6
WEEK_SPIKES = 6
STALE_IN_DEMAND = 10

QUESTION_TEMPLATES = {
    "person": ["Who is {name}?", "What is {name} looking for?", "{name}'s mandate", "tell me about {name}"],
    "company": ["Tell me about {name}", "What is {name} buying?", "who runs {name}?"],
    "production_company": ["Tell me about {name}", "What has {name} produced?", "{name} credits"],
    "platform": ["What is {name} buying?", "Who buys for {name}?", "{name} mandates"],
    "project": ["What's the status of {name}?", "Who is behind {name}?", "{name}"],
    "deal": ["Tell me about the deal {name}", "{name} terms"],
    "genre": ["Who is buying {name}?", "Which executives want {name}?"],
    "format": ["Who is buying {name}?", "Which platforms want {name}?"],
}


@dataclass(frozen=True, slots=True)
class HistoryEntity:
    """What the generator needs of an entity record."""

    id: uuid.UUID
    name: str
    entity_type: str
    updated_at: datetime


def _question(rng: random.Random, entity: HistoryEntity) -> str:
    templates = QUESTION_TEMPLATES.get(entity.entity_type, ["Tell me about {name}"])
    return rng.choice(templates).format(name=entity.name)


def demand_history(
    *,
    entities: Sequence[HistoryEntity],
    now: datetime,
    seed: int = 1,
    signals: int = HISTORY_SIGNALS,
    user_ids: Sequence[int | None] = (None,),
) -> Iterator[PastAnswer]:
    """Yield the simulated answers. Same entities and seed, same ids (and so the same signal event ids).

    `user_ids`: who asked (each answer picks one). Times lie in (now - HISTORY_DAYS, now]; only they
    depend on `now`, so a second run on the same records yields the same ids, and the inbox keeps it
    from counting anything twice.
    """
    if not entities:
        return
    rng = random.Random(seed)
    ordered = sorted(entities, key=lambda entity: entity.id)
    popularity = ordered[:]
    rng.shuffle(popularity)
    weights = [1.0 / (rank + 1) ** ZIPF_EXPONENT for rank in range(len(popularity))]
    serial = 0

    def signal(entity: HistoryEntity, age: timedelta) -> PastAnswer:
        nonlocal serial
        serial += 1
        return PastAnswer(
            id=uuid.uuid5(HISTORY_NAMESPACE, f"{seed}:{serial}"),
            asked_at=now - age,
            question=_question(rng, entity),
            entity_id=entity.id,
            entity_type=entity.entity_type,
            user_id=rng.choice(user_ids),
        )

    span = timedelta(days=HISTORY_DAYS)
    # The long tail, spread evenly over the whole history.
    for entity in rng.choices(popularity, weights=weights, k=signals):
        yield signal(entity, span * rng.random())

    # Entities outside the head of the tail, so that a spike stands out from their usual demand.
    quiet = popularity[len(popularity) // 10 :] or popularity
    spiking = rng.sample(quiet, min(len(quiet), DAY_SPIKES + WEEK_SPIKES))
    for entity in spiking[:DAY_SPIKES]:
        for _ in range(rng.randint(8, 20)):
            yield signal(entity, timedelta(hours=22) * rng.random())
    for entity in spiking[DAY_SPIKES:]:
        for _ in range(rng.randint(15, 40)):
            yield signal(entity, timedelta(days=6) * rng.random())

    # In-demand records whose content is old: the stale report's and the refresh panel's entries.
    # Chosen among the oldest records, not by their age at `now`, so the event ids never depend on `now`.
    old = sorted((entity for entity in quiet if entity not in spiking), key=lambda entity: entity.updated_at)
    old = old[: max(STALE_IN_DEMAND, len(old) // 10)]
    for entity in rng.sample(old, min(len(old), STALE_IN_DEMAND)):
        for _ in range(rng.randint(10, 40)):
            yield signal(entity, span * rng.random())

    # Questions about nothing in the data: the content-gaps report's entries.
    for _ in range(GAP_ANSWERS):
        serial += 1
        yield PastAnswer(
            id=uuid.uuid5(HISTORY_NAMESPACE, f"{seed}:{serial}"),
            asked_at=now - span * rng.random(),
            question=rng.choice(GAP_QUESTIONS),
            entity_id=None,
            user_id=rng.choice(user_ids),
        )
