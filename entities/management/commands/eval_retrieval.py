"""`manage.py eval_retrieval`: retrieval quality (recall@1, recall@5, MRR per kind) and /api/answer latency.

Questions come from the entities in the current database (run `manage.py seed_demo` first), sampled
deterministically (`--seed`). Latency is measured through the whole URL stack (middleware, JWT
authentication, throttle, retrieval, composer, publishing) with Django's test client and a real JWT of
a throwaway user; its signals go to a throwaway stream that is deleted afterwards, so the evaluation
adds no demand to the data.
"""

from __future__ import annotations

import json
import random
import statistics
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.test import Client, override_settings
from rest_framework_simplejwt.tokens import RefreshToken
from tqdm import tqdm

from entities.models import Entity, EntityType
from entities.retrieval import entity_search
from streams.redis import redis_client

KINDS = ("full_name", "looking_for", "company", "typo", "surname", "partial", "topic")
TARGETS = {"full_name": 0.95, "typo": 0.85}
LATENCY_TARGET_MS = 100.0
ANCHOR_QUESTION, ANCHOR_NAME = "Who is Chris Mansolillo?", "Chris Mansolillo"


@dataclass(frozen=True)
class Question:
    kind: str
    text: str
    relevant: frozenset


def one_typo(word: str, rng: random.Random) -> str:
    """The word with one edit (drop, double, swap or replace a letter), never the first letter."""
    position = rng.randrange(1, len(word) - 1)
    edit = rng.choice(("drop", "double", "swap", "replace"))
    if edit == "drop":
        return word[:position] + word[position + 1 :]
    if edit == "double":
        return word[: position + 1] + word[position:]
    if edit == "swap":
        return word[:position] + word[position + 1] + word[position] + word[position + 2 :]
    letters = [letter for letter in "aeiourstnlm" if letter != word[position].lower()]
    return word[:position] + rng.choice(letters) + word[position + 1 :]


def questions_build(*, per_kind: int, seed: int) -> list[Question]:
    """A deterministic question set from the entities in the database."""
    rng = random.Random(seed)
    people = list(Entity.objects.filter(entity_type=EntityType.PERSON).order_by("id").values_list("id", "name", "data"))
    companies = list(
        Entity.objects.filter(entity_type__in=[EntityType.COMPANY, EntityType.PRODUCTION_COMPANY, EntityType.PLATFORM])
        .order_by("id")
        .values_list("id", "name")
    )
    if not people or not companies:
        raise CommandError("No people or companies in the database: run `manage.py seed_demo` first.")

    def sample(items: list, count: int) -> list:
        return rng.sample(items, min(count, len(items)))

    questions: list[Question] = []
    for entity_id, name, _data in sample(people, per_kind):
        questions.append(Question("full_name", f"Who is {name}?", frozenset([entity_id])))
    for entity_id, name, _data in sample(people, per_kind):
        questions.append(Question("looking_for", f"What is {name} looking for?", frozenset([entity_id])))
    for entity_id, name in sample(companies, per_kind):
        questions.append(Question("company", f"Tell me about {name}", frozenset([entity_id])))
    for entity_id, name, _data in sample(people, per_kind):
        words = name.split()
        target = max(range(len(words)), key=lambda index: len(words[index]))
        if len(words[target]) < 4:
            continue
        words[target] = one_typo(words[target], rng)
        questions.append(Question("typo", f"Who is {' '.join(words)}?", frozenset([entity_id])))

    surnames = Counter(name.split()[-1].lower() for _id, name, _data in people if len(name.split()) > 1)
    unique = [(entity_id, name) for entity_id, name, _data in people if surnames[name.split()[-1].lower()] == 1]
    for entity_id, name in sample(unique, per_kind):
        questions.append(Question("surname", f"Who is {name.split()[-1]}?", frozenset([entity_id])))

    # A company named without its last word ("Silver Harbor" for "Silver Harbor Studios"), when no other
    # entity's name (deals aside: they quote company names) contains all of those words.
    names = [
        set(name.lower().split())
        for name in Entity.objects.exclude(entity_type=EntityType.DEAL).values_list("name", flat=True)
    ]
    partial = []
    for entity_id, name in companies:
        words = name.split()
        if len(words) < 3:
            continue
        prefix = {word.lower() for word in words[:-1]}
        if sum(1 for other in names if prefix <= other) == 1:
            partial.append((entity_id, " ".join(words[:-1])))
    for entity_id, prefix in sample(partial, per_kind):
        questions.append(Question("partial", f"Tell me about {prefix}", frozenset([entity_id])))

    wanted_by: dict[str, set] = defaultdict(set)
    for entity_id, _name, data in people:
        mandate = data.get("mandate") if isinstance(data, dict) else None
        for topic in (mandate or {}).get("looking_for", []) if isinstance(mandate, dict) else []:
            if isinstance(topic, str):
                wanted_by[topic].add(entity_id)
    for topic in sample(sorted(wanted_by), per_kind):
        questions.append(Question("topic", f"Who is looking for {topic}?", frozenset(wanted_by[topic])))
    return questions


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


class Command(BaseCommand):
    help = "Measure retrieval quality per question kind and /api/answer latency on the current database."

    def add_arguments(self, parser):
        parser.add_argument("--per-kind", type=int, default=200, help="Questions per kind (default 200).")
        parser.add_argument("--seed", type=int, default=7, help="Sampling seed (default 7).")
        parser.add_argument("--requests", type=int, default=300, help="/api/answer requests timed (default 300).")
        parser.add_argument("--limit", type=int, default=5, help="Entities per answer (default 5).")
        parser.add_argument("--show-misses", type=int, default=0, help="Print up to N questions missed at rank 1.")

    def handle(self, *args, per_kind: int, seed: int, requests: int, limit: int, show_misses: int, **options):
        if per_kind < 1 or requests < 0 or not 1 <= limit <= 20:
            raise CommandError("--per-kind >= 1, --requests >= 0 and --limit 1..20 are required.")
        total = Entity.objects.count()
        embedded = Entity.objects.filter(embedding__isnull=False).count()
        questions = questions_build(per_kind=per_kind, seed=seed)
        self.stdout.write(f"{total} entities ({embedded} embedded); {len(questions)} questions (seed {seed}).")
        self._quality(questions, limit, show_misses=show_misses, quiet=options["verbosity"] == 0)
        if requests:
            self._latency(questions, requests, limit, seed)

    def _quality(self, questions: list[Question], limit: int, show_misses: int, quiet: bool) -> None:
        ranks: dict[str, list[int | None]] = defaultdict(list)
        search_ms: list[float] = []
        misses: list[str] = []
        for question in tqdm(questions, desc="retrieval", unit="question", disable=quiet):
            started = time.perf_counter()
            hits = entity_search(question=question.text, limit=limit)
            search_ms.append((time.perf_counter() - started) * 1000)
            rank = next((index + 1 for index, hit in enumerate(hits) if hit.id in question.relevant), None)
            ranks[question.kind].append(rank)
            if rank != 1 and len(misses) < show_misses:
                got = ", ".join(f"{hit.name} [{hit.entity_type}]" for hit in hits[:3]) or "nothing"
                misses.append(f"  {question.kind}: {question.text!r} (rank {rank}) -> {got}")

        if misses:
            self.stdout.write("Missed at rank 1:\n" + "\n".join(misses))
        self.stdout.write(f"\n{'kind':<12} {'n':>5} {'recall@1':>9} {'recall@5':>9} {'MRR':>7}  target")
        for kind in KINDS:
            found = ranks.get(kind)
            if not found:
                self.stdout.write(f"{kind:<12} {0:>5}  (no questions of this kind in the data)")
                continue
            at1 = sum(1 for rank in found if rank == 1) / len(found)
            at5 = sum(1 for rank in found if rank is not None and rank <= 5) / len(found)
            mrr = sum(1 / rank for rank in found if rank) / len(found)
            target = ""
            if kind in TARGETS:
                target = f"recall@1 >= {TARGETS[kind]:.2f} {'met' if at1 >= TARGETS[kind] else 'MISSED'}"
            self.stdout.write(f"{kind:<12} {len(found):>5} {at1:>9.3f} {at5:>9.3f} {mrr:>7.3f}  {target}")
        self.stdout.write(
            f"entity_search alone: p50 {percentile(search_ms, 0.5):.1f} ms, p95 {percentile(search_ms, 0.95):.1f} ms"
        )
        top = entity_search(question=ANCHOR_QUESTION, limit=limit)
        first = top[0].name if top else "nothing"
        verdict = "ok" if first == ANCHOR_NAME else "WRONG"
        self.stdout.write(f'"{ANCHOR_QUESTION}" -> first: {first} ({verdict})')

    def _latency(self, questions: list[Question], requests: int, limit: int, seed: int) -> None:
        rng = random.Random(seed)
        stream = f"mandate_wizard:eval:{uuid.uuid4().hex}:query_signals"
        User = get_user_model()
        email = f"eval-retrieval-{uuid.uuid4().hex[:12]}@example.invalid"
        user = User.objects.create_user(username=email, email=email, password=None)
        rates = {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "answer_user": f"{requests + 10}/min"}
        client = Client(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(user).access_token}")
        timings: list[float] = []
        statuses: Counter[int] = Counter()
        try:
            with override_settings(
                STREAM_QUERY_SIGNALS=stream,
                ALLOWED_HOSTS=[*settings.ALLOWED_HOSTS, "testserver"],
                REST_FRAMEWORK={**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates},
            ):
                # The first request pays for imports and connections; it is not counted.
                client.post("/api/answer", {"question": ANCHOR_QUESTION}, content_type="application/json")
                for _ in tqdm(range(requests), desc="/api/answer", unit="request"):
                    body = json.dumps({"question": rng.choice(questions).text, "limit": limit})
                    started = time.perf_counter()
                    response = client.post("/api/answer", body, content_type="application/json")
                    timings.append((time.perf_counter() - started) * 1000)
                    statuses[response.status_code] += 1
            published = redis_client().xlen(stream)
        finally:
            redis_client().delete(stream)
            user.delete()
        p95 = percentile(timings, 0.95)
        self.stdout.write(
            f"\n/api/answer through the URL stack ({requests} requests, limit {limit}, statuses {dict(statuses)}):"
            f" p50 {percentile(timings, 0.5):.1f} ms, p95 {p95:.1f} ms, mean {statistics.fmean(timings):.1f} ms"
            f" — target p95 <= {LATENCY_TARGET_MS:.0f} ms {'met' if p95 <= LATENCY_TARGET_MS else 'MISSED'};"
            f" {published} signals published to a throwaway stream"
        )
