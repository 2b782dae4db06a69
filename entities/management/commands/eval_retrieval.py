"""`manage.py eval_retrieval`: a labelled question set built from the records, retrieval scored per kind, and
/api/answer latency.

The questions and their right answers are computed from the entities' own records (names, employers,
mandates, genres), never from retrieval code. Each question is in the *tuning* part or the *held-out*
part: held-out phrasings and the first-name typo family are kept out of any tuning and reported apart.
Latency is measured through the whole URL stack (middleware, JWT, throttle, retrieval, composer,
publishing) with Django's test client and a throwaway user; its signals go to a throwaway stream that
is deleted afterwards, so the evaluation adds no demand to the data.
"""

from __future__ import annotations

import json
import random
import re
import statistics
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.test import Client, override_settings
from django.utils import timezone
from rest_framework_simplejwt.tokens import RefreshToken
from tqdm import tqdm

from entities.models import AnswerRecord, Entity, EntityType
from entities.retrieval import SearchHit, entity_search
from entities.services import answer_record_create, answer_record_signals, answer_signals_reconcile
from streams.models import ProcessedEvent
from streams.redis import redis_client

LATENCY_TARGET_MS = 50.0
RECORD_BUDGET_MS = 2.0
ANCHOR_QUESTION, ANCHOR_NAME = "Who is Chris Mansolillo?", "Chris Mansolillo"
TUNED, HELD_OUT = "tuned", "held-out"
ORGANISATIONS = (EntityType.COMPANY, EntityType.PLATFORM, EntityType.PRODUCTION_COMPANY)

# Name phrasings: (key, template, part, types it is asked about). {company} is the person's employer.
PERSON = (EntityType.PERSON,)
ANY_NAMED = (EntityType.PERSON, *ORGANISATIONS, EntityType.PROJECT)
PHRASINGS = (
    ("who_is", "Who is {name}?", TUNED, PERSON),
    ("looking_for", "What is {name} looking for?", TUNED, PERSON),
    ("possessive", "{name}'s mandate", TUNED, PERSON),
    ("at_company", "tell me about {name} at {company}", TUNED, PERSON),
    ("whos_lower", "who's {lower}?", TUNED, PERSON),
    ("upper", "{upper}", TUNED, ANY_NAMED),
    ("tell_me", "Can you tell me about {name}, please?", TUNED, ANY_NAMED),
    ("wants_to_buy", "What does {name} want to buy?", HELD_OUT, PERSON),
    ("at_company_buying", "{name} at {company}: what are they buying right now?", HELD_OUT, PERSON),
    ("info_on", "info on {lower}", HELD_OUT, ANY_NAMED),
    ("title", "What's {name}'s title?", HELD_OUT, PERSON),
    ("greenlights", "i need {lower}'s recent greenlights!!", HELD_OUT, PERSON),
)
TYPO_KINDS = ("drop", "double", "swap", "replace")
# The first-name typo family is held out; surname typos are the tuning part.
TYPO_PARTS = {"last": TUNED, "first": HELD_OUT}
# Words of a mandate a list question may ask about, and how a record says them.
KEYWORDS = {
    "comedies": r"\bcomed",
    "horror": r"\bhorror",
    "thrillers": r"\bthriller",
    "documentaries": r"\bdocumentar",
    "sci-fi": r"\bsci-fi\b",
    "true crime": r"\btrue crime\b",
    "dramas": r"\bdrama",
    "mysteries": r"\bmyster",
}
COMPANY_TOPIC_PHRASINGS = (
    ("Which executives at {company} are looking for {keyword}?", TUNED),
    ("Who at {company} is buying {keyword}?", TUNED),
    ("{company} execs interested in {keyword}", HELD_OUT),
    ("Anyone at {company} buying {keyword}?", HELD_OUT),
)
TYPE_TOPIC_PHRASINGS = (
    ("Who is looking for {topic}?", EntityType.PERSON, "looking_for", TUNED),
    ("Which companies focus on {topic}?", EntityType.COMPANY, "focus", TUNED),
    ("Which production companies specialize in {topic}?", EntityType.PRODUCTION_COMPANY, "specialty", TUNED),
    ("Which buyers want {topic}?", EntityType.PERSON, "looking_for", HELD_OUT),
    ("Which platforms are focused on {topic}?", EntityType.PLATFORM, "focus", HELD_OUT),
    ("Which production companies make {topic}?", EntityType.PRODUCTION_COMPANY, "specialty", HELD_OUT),
)
# "list {genre} projects" was held out until its misses were reported (every one empty); it is a tuning
# phrasing since, and the two after it were written then, before any change made for it.
GENRE_PHRASINGS = (
    ("Which projects are {genre}?", TUNED),
    ("list {genre} projects", TUNED),
    ("Show me all the {genre} projects", HELD_OUT),
    ("Give me {genre} projects", HELD_OUT),
)
NOTHING = (
    ("What is the weather in Paris tomorrow?", TUNED),
    ("How do I bake sourdough bread?", TUNED),
    ("xyzzy plugh", TUNED),
    ("Who is he?", TUNED),
    ("What is the capital of Australia?", TUNED),
    ("Recommend a good vacuum cleaner", TUNED),
    ("How many legs does a spider have?", TUNED),
    ("?!", TUNED),
    ("Who won the football match last night?", HELD_OUT),
    ("What time is it in Tokyo?", HELD_OUT),
    ("Translate hello into German", HELD_OUT),
    ("Is it going to rain on Sunday?", HELD_OUT),
    ("qwerty asdf zxcv", HELD_OUT),
    ("What is the square root of 144?", HELD_OUT),
    ("Where can I park my bicycle?", HELD_OUT),
    ("Tell me a joke about penguins", HELD_OUT),
)
# Targets of the issue, by family of kinds: (metric, minimum).
TARGETS = {
    "name": (("recall@1", 0.98), ("demand", 0.95), ("set precision", 0.9)),
    "typo": (("recall@1", 0.93), ("demand", 0.95), ("set precision", 0.9)),
    "list": (("precision@5", 0.9), ("recall@5", 0.8)),
    "nothing": (("empty", 1.0),),
}


@dataclass(frozen=True)
class Question:
    kind: str
    family: str  # name, typo, list or nothing
    part: str
    text: str
    relevant: frozenset  # the subjects a right answer has
    acceptable_related: frozenset = field(default_factory=frozenset)  # entities the subject's record names


@dataclass
class Record:
    id: uuid.UUID
    name: str
    entity_type: str
    data: dict


def typo_apply(word: str, kind: str, rng: random.Random) -> str:
    """The word with one edit of `kind` at a random position (the first letter included)."""
    position = rng.randrange(0, len(word) - 1)
    if kind == "drop":
        return word[:position] + word[position + 1 :]
    if kind == "double":
        return word[: position + 1] + word[position:]
    if kind == "swap":
        while word[position] == word[position + 1] and position + 2 < len(word):
            position += 1
        return word[:position] + word[position + 1] + word[position] + word[position + 2 :]
    letters = [letter for letter in "aeiourstnlmcdkp" if letter != word[position].lower()]
    replaced = rng.choice(letters)
    return word[:position] + (replaced.upper() if word[position].isupper() else replaced) + word[position + 1 :]


def names_in_record(data: dict) -> set[str]:
    """Strings at the top of a record and in its top-level lists: how demo records name each other."""
    found: set[str] = set()
    for value in data.values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                found.add(item)
    return found


def questions_build(*, per_kind: int, seed: int) -> list[Question]:
    """A deterministic labelled question set from the records in the database."""
    rng = random.Random(seed)
    records = [Record(*row) for row in Entity.objects.order_by("id").values_list("id", "name", "entity_type", "data")]
    by_name: dict[str, set] = defaultdict(set)
    by_type: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        by_name[record.name].add(record.id)
        by_type[record.entity_type].append(record)
    if not by_type[EntityType.PERSON] or not by_type[EntityType.COMPANY]:
        raise CommandError("No people or companies in the database: run `manage.py seed_demo` first.")

    def linked(record: Record) -> frozenset:
        return frozenset(entity_id for name in names_in_record(record.data) for entity_id in by_name.get(name, ()))

    def sample(items: list, count: int) -> list:
        return rng.sample(items, min(count, len(items)))

    def name_question(kind: str, family: str, part: str, template: str, record: Record, name: str) -> Question:
        company = record.data.get("company", "")
        text = template.format(name=name, lower=name.lower(), upper=name.upper(), company=company)
        return Question(kind, family, part, text, frozenset([record.id]), linked(record))

    questions: list[Question] = []
    for key, template, part, types in PHRASINGS:
        pool = [record for kind in types for record in by_type[kind]]
        for record in sample(pool, per_kind):
            questions.append(name_question(key, "name", part, template, record, record.name))

    people = [record for record in by_type[EntityType.PERSON] if len(record.name.split()) >= 2]
    for position, part in TYPO_PARTS.items():
        for kind in TYPO_KINDS:
            for record in sample(people, per_kind):
                words = record.name.split()
                index = 0 if position == "first" else len(words) - 1
                if len(words[index]) < 4:
                    continue
                words[index] = typo_apply(words[index], kind, rng)
                # Every phrasing of the part (a held-out typo is asked in every phrasing).
                phrasings = [p for p in PHRASINGS if p[3] == PERSON and (part == HELD_OUT or p[2] == TUNED)]
                _key, template, _part, _types = rng.choice(phrasings)
                questions.append(
                    name_question(f"typo {position} {kind}", "typo", part, template, record, " ".join(words))
                )

    people_at: dict[str, list[Record]] = defaultdict(list)
    for record in by_type[EntityType.PERSON]:
        people_at[record.data.get("company", "")].append(record)
    companies = sorted(name for name in people_at if name in by_name and len(by_name[name]) == 1)
    for template, part in COMPANY_TOPIC_PHRASINGS:
        pairs = []
        for company in companies:
            for keyword, pattern in KEYWORDS.items():
                truth = frozenset(
                    record.id
                    for record in people_at[company]
                    if any(re.search(pattern, topic.lower()) for topic in record.data["mandate"]["looking_for"])
                )
                if truth:
                    pairs.append((company, keyword, truth))
        for company, keyword, truth in sample(pairs, per_kind):
            text = template.format(company=company, keyword=keyword)
            questions.append(Question("list company x topic", "list", part, text, truth))

    for template, entity_type, key, part in TYPE_TOPIC_PHRASINGS:
        wanted_by: dict[str, set] = defaultdict(set)
        for record in by_type[entity_type]:
            value = record.data.get("mandate", {}).get(key) if key == "looking_for" else record.data.get(key)
            for topic in value or []:
                wanted_by[topic].add(record.id)
        for topic in sample(sorted(wanted_by), per_kind):
            text = template.format(topic=topic)
            questions.append(Question(f"list {entity_type} x topic", "list", part, text, frozenset(wanted_by[topic])))

    def words(text: str) -> set[str]:
        return {word.rstrip("s") for word in re.findall(r"[a-z0-9-]+", text.lower())}

    genres = sorted({record.data["genre"] for record in by_type[EntityType.PROJECT] if record.data.get("genre")})
    for template, part in GENRE_PHRASINGS:
        for genre in sample(genres, per_kind):
            truth = frozenset(
                record.id
                for record in by_type[EntityType.PROJECT]
                if words(genre) <= words(record.data.get("genre", "")) | words(record.data.get("format", ""))
            )
            questions.append(Question("list project x genre", "list", part, template.format(genre=genre), truth))

    for text, part in NOTHING:
        questions.append(Question("nothing", "nothing", part, text, frozenset()))
    return questions


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


@dataclass
class Score:
    n: int = 0
    at1: float = 0.0
    at5: float = 0.0
    mrr: float = 0.0
    returned: int = 0
    right: int = 0  # returned entities that belong in the answer
    subjects: int = 0
    right_subjects: int = 0  # subject signals (demand) that went to what the question asked about
    p5: float = 0.0
    empty: int = 0

    def add(self, question: Question, hits: list[SearchHit]) -> bool:
        """Score one answer; True when it is a miss worth printing."""
        self.n += 1
        subjects = [hit for hit in hits if hit.role == "subject"]
        self.subjects += len(subjects)
        self.right_subjects += sum(1 for hit in subjects if hit.id in question.relevant)
        self.returned += len(hits)
        self.right += sum(
            1
            for hit in hits
            if (hit.role == "subject" and hit.id in question.relevant)
            or (hit.role == "related" and hit.id in question.acceptable_related)
        )
        self.empty += not hits
        if question.family == "nothing":
            return bool(hits)
        ranks = [index for index, hit in enumerate(subjects, start=1) if hit.id in question.relevant]
        first = ranks[0] if ranks else None
        top5 = [hit for hit in subjects[:5] if hit.id in question.relevant]
        self.at1 += first == 1
        self.at5 += len(top5) / min(5, len(question.relevant))
        self.mrr += 1 / first if first else 0
        self.p5 += len(top5) / len(subjects[:5]) if subjects else 0
        if question.family == "list":
            return len(top5) < min(5, len(question.relevant)) or len(top5) < len(subjects[:5])
        return first != 1 or len(subjects) != 1

    def metrics(self) -> dict[str, float]:
        n = self.n or 1
        return {
            "recall@1": self.at1 / n,
            "recall@5": self.at5 / n,
            "MRR": self.mrr / n,
            "precision@5": self.p5 / n,
            "set precision": self.right / self.returned if self.returned else 1.0,
            "demand": self.right_subjects / self.subjects if self.subjects else 1.0,
            "empty": self.empty / n,
        }


class Command(BaseCommand):
    help = "Score retrieval on a labelled question set built from the records, and time /api/answer."

    def add_arguments(self, parser):
        parser.add_argument("--per-kind", type=int, default=100, help="Questions per kind (default 100).")
        parser.add_argument("--seed", type=int, default=7, help="Sampling seed (default 7).")
        parser.add_argument("--requests", type=int, default=300, help="/api/answer requests timed (default 300).")
        parser.add_argument("--limit", type=int, default=5, help="Entities per answer at most (default 5).")
        parser.add_argument("--misses", type=int, default=0, help="Print up to N missed questions per part.")

    def handle(self, *args, per_kind: int, seed: int, requests: int, limit: int, misses: int, **options):
        if per_kind < 1 or requests < 0 or not 1 <= limit <= 20:
            raise CommandError("--per-kind >= 1, --requests >= 0 and --limit 1..20 are required.")
        questions = questions_build(per_kind=per_kind, seed=seed)
        self.stdout.write(f"{Entity.objects.count()} entities; {len(questions)} questions (seed {seed}).")
        search_ms: list[float] = []
        for part in (TUNED, HELD_OUT):
            part_questions = [question for question in questions if question.part == part]
            self._part(part, part_questions, limit, misses, search_ms, quiet=options["verbosity"] == 0)
        self.stdout.write(
            f"\nentity_search alone: p50 {percentile(search_ms, 0.5):.1f} ms, p95 {percentile(search_ms, 0.95):.1f} ms"
        )
        top = entity_search(question=ANCHOR_QUESTION, limit=limit)
        described = ", ".join(f"{hit.name} ({hit.role})" for hit in top) or "nothing"
        self.stdout.write(f'"{ANCHOR_QUESTION}" -> {described}')
        if requests:
            self._latency(questions, requests, limit, seed)

    def _part(
        self, part: str, questions: list[Question], limit: int, misses: int, search_ms: list[float], quiet: bool
    ) -> None:
        scores: dict[str, Score] = defaultdict(Score)
        families: dict[str, Score] = defaultdict(Score)
        missed: list[str] = []
        for question in tqdm(questions, desc=part, unit="question", disable=quiet):
            started = time.perf_counter()
            hits = entity_search(question=question.text, limit=limit)
            search_ms.append((time.perf_counter() - started) * 1000)
            families[question.family].add(question, hits)
            if scores[question.kind].add(question, hits) and len(missed) < misses:
                got = "; ".join(f"{hit.name} [{hit.entity_type}, {hit.role}]" for hit in hits[:4]) or "nothing"
                missed.append(f"  {question.kind}: {question.text!r} ({len(question.relevant)} right) -> {got}")
        self.stdout.write(f"\n== {part} part ({len(questions)} questions) ==")
        if missed:
            self.stdout.write("Misses:\n" + "\n".join(missed))
        header = ("n", "recall@1", "recall@5", "MRR", "P@5", "set prec", "demand", "empty")
        self.stdout.write(f"{'kind':<30}" + "".join(f"{label:>9}" for label in header))
        for label, score in [*sorted(scores.items()), *((f"ALL {name}", s) for name, s in sorted(families.items()))]:
            metrics = score.metrics()
            row = [metrics[key] for key in ("recall@1", "recall@5", "MRR", "precision@5")]
            row += [metrics["set precision"], metrics["demand"], metrics["empty"]]
            self.stdout.write(f"{label:<30}{score.n:>9}" + "".join(f"{value:>9.3f}" for value in row))
        for family, targets in TARGETS.items():
            if family not in families:
                continue
            metrics = families[family].metrics()
            verdicts = [
                f"{metric} {metrics[metric]:.3f} >= {minimum} {'met' if metrics[metric] >= minimum else 'MISSED'}"
                for metric, minimum in targets
            ]
            self.stdout.write(f"target {family}: " + "; ".join(verdicts))

    def _record_cost(self, *, user_id: int, requests: int) -> None:
        """Time the answer record's INSERT alone (five entities) beside a bare round trip to PostgreSQL."""
        hits = list(entity_search(question=ANCHOR_QUESTION, limit=5))
        hits += [hits[0]] * (5 - len(hits))
        inserts: list[float] = []
        round_trips: list[float] = []
        for _ in range(requests):
            started = time.perf_counter()
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            round_trips.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            answer_record_create(
                question=ANCHOR_QUESTION, hits=hits, user_id=user_id, latency_ms=1.0, composer="extractive"
            )
            inserts.append((time.perf_counter() - started) * 1000)
        self._reconcile_cost(user_id=user_id)
        p95 = percentile(inserts, 0.95)
        self.stdout.write(
            f"\nanswer record INSERT ({requests} records, 5 entities each): p50 {percentile(inserts, 0.5):.2f} ms,"
            f" p95 {p95:.2f} ms — budget p95 <= {RECORD_BUDGET_MS:.0f} ms"
            f" {'met' if p95 <= RECORD_BUDGET_MS else 'MISSED'}; baseline SELECT 1 round trip"
            f" p50 {percentile(round_trips, 0.5):.2f} ms, p95 {percentile(round_trips, 0.95):.2f} ms"
        )

    def _reconcile_cost(self, *, user_id: int) -> None:
        """Time the steady-state reconciliation: records whose signals the worker counted, checked and settled."""
        records = AnswerRecord.objects.filter(user_id=user_id)
        event_ids = {
            signal.event_id
            for record in records.only("id", "asked_at", "question", "entities")
            for signal in answer_record_signals(record)
        }
        ProcessedEvent.objects.bulk_create(
            [ProcessedEvent(event_id=event_id) for event_id in event_ids], ignore_conflicts=True
        )
        try:
            started = time.perf_counter()
            outcome = answer_signals_reconcile(now=timezone.now() + timedelta(days=1) - timedelta(seconds=1))
            seconds = time.perf_counter() - started
        finally:
            ProcessedEvent.objects.filter(event_id__in=event_ids).delete()
        self.stdout.write(
            f"\nreconciliation: {outcome.checked} answers ({len(event_ids)} signals, all counted) checked and "
            f"{outcome.settled} settled in {seconds * 1000:.0f} ms = {len(event_ids) / seconds:,.0f} signals/s "
            f"({outcome.resent} re-sent)"
        )

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
            self._record_cost(user_id=user.pk, requests=requests)
        finally:
            redis_client().delete(stream)
            AnswerRecord.objects.filter(user=user).delete()
            user.delete()
        p95 = percentile(timings, 0.95)
        self.stdout.write(
            f"\n/api/answer through the URL stack ({requests} requests, limit {limit}, statuses {dict(statuses)}):"
            f" p50 {percentile(timings, 0.5):.1f} ms, p95 {p95:.1f} ms, mean {statistics.fmean(timings):.1f} ms"
            f" — target p95 <= {LATENCY_TARGET_MS:.0f} ms {'met' if p95 <= LATENCY_TARGET_MS else 'MISSED'};"
            f" {published} signals published to a throwaway stream"
        )
