"""Question analytics from the answer records: top questions, content gaps, an entity's top questions."""

from __future__ import annotations

import random
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from analytics.models import QuestionAsker, QuestionWindow
from analytics.selectors import (
    QUESTION_STORED_SLACK,
    TIMEFRAMES,
    question_windows_usable,
    questions_gaps,
    questions_top,
)
from analytics.services import QUESTION_ROLL_SETTLE, question_windows_oldest, question_windows_roll
from entities.models import AnswerRecord
from entities.retrieval import SearchHit
from entities.services import answer_record_create, answer_records_prune
from streams.handlers import chores
from tests.entities.factories import EntityFactory, UserFactory

pytestmark = pytest.mark.django_db

QUESTIONS = "/api/analytics/questions/"


def hit(entity, *, role: str = "subject", rank: int = 1) -> SearchHit:
    return SearchHit(entity.id, entity.name, entity.entity_type, entity.data, 1.0, role, rank)


@pytest.fixture(params=["records only", "windows rolled"])
def scripted(request):
    """A scripted day of questions: repeats in varied case and punctuation, questions about nothing.

    Run twice: before the question windows were ever rolled (the reports read the records alone), and after
    the worker's roll (the reports read the windows plus the records since their hour)."""
    chris, studio = EntityFactory(name="Chris Mansolillo"), EntityFactory(name="Silver Harbor Studios")
    alice, bob = UserFactory(), UserFactory()
    now = timezone.now()

    def asked(question, hits, user, minutes_ago, **kwargs):
        answer_record_create(
            question=question,
            hits=hits,
            user_id=user.pk,
            latency_ms=5.0,
            composer="extractive",
            asked_at=now - timedelta(minutes=minutes_ago),
            **kwargs,
        )

    with_him = [hit(chris), hit(studio, role="related", rank=2)]
    asked("Who is Chris Mansolillo?", with_him, alice, 50)
    asked("who is chris mansolillo", with_him, bob, 40)
    asked("WHO IS CHRIS MANSOLILLO??", with_him[:1], alice, 30)
    asked("Tell me about Silver Harbor Studios.", [hit(studio)], bob, 20)
    asked("What is the airspeed of a swallow?", [], alice, 15)
    asked("what is the airspeed of a swallow", [], alice, 10)
    asked("Who's the swallow's agent?", [hit(studio, role="related")], bob, 5)
    asked("Who is Chris Mansolillo?", with_him, bob, 60 * 24 * 3)  # outside 1d, inside 7d
    asked("Who is nobody?", [], bob, 60 * 24 * 40)  # outside every timeframe
    if request.param == "windows rolled":
        question_windows_roll(now=now)
        assert question_windows_usable(h0=now.replace(minute=0, second=0, microsecond=0))
    return {"chris": chris, "studio": studio, "now": now}


def test_top_questions_count_normalized_questions_exactly(staff_client, scripted):
    body = staff_client.get(QUESTIONS + "top/", {"timeframe": "1d"}).json()
    assert (body["total"], body["timeframe"], body["limit"]) == (4, "1d", 10)
    rows = [(q["question"], q["count"], q["users"], q["avg_results"]) for q in body["questions"]]
    assert rows == [
        ("who is chris mansolillo", 3, 2, round(5 / 3, 2)),
        ("what is the airspeed of a swallow", 2, 1, 0.0),
        ("tell me about silver harbor studios", 1, 1, 1.0),
        ("whos the swallows agent", 1, 1, 1.0),
    ]
    top = body["questions"][0]
    assert top["example"] in {"Who is Chris Mansolillo?", "who is chris mansolillo", "WHO IS CHRIS MANSOLILLO??"}
    assert top["last_asked_at"].endswith("Z")
    week = staff_client.get(QUESTIONS + "top/", {"timeframe": "7d", "limit": 1}).json()
    assert [(q["question"], q["count"], q["users"]) for q in week["questions"]] == [("who is chris mansolillo", 4, 2)]
    assert (week["total"], week["limit"]) == (1, 1)
    month = staff_client.get(QUESTIONS + "top/", {"timeframe": "30d", "limit": 100}).json()
    assert "who is nobody" not in {q["question"] for q in month["questions"]}


def test_gaps_are_questions_with_no_subject_flagged_when_only_related(staff_client, scripted):
    body = staff_client.get(QUESTIONS + "gaps/", {"timeframe": "1d"}).json()
    rows = [(q["question"], q["count"], q["users"], q["low_confidence"]) for q in body["questions"]]
    assert rows == [("what is the airspeed of a swallow", 2, 1, False), ("whos the swallows agent", 1, 1, True)]
    assert body["total"] == 2
    assert body["questions"][0]["avg_results"] == 0.0


def test_the_entity_demand_gains_its_top_questions(staff_client, scripted):
    chris = staff_client.get(f"/api/analytics/demand/entity/{scripted['chris'].pk}/").json()["entity"]
    assert chris["top_questions"] == [{"question": "who is chris mansolillo", "count": 4}]
    studio = staff_client.get(f"/api/analytics/demand/entity/{scripted['studio'].pk}/").json()["entity"]
    assert studio["top_questions"] == [
        {"question": "who is chris mansolillo", "count": 3},
        {"question": "tell me about silver harbor studios", "count": 1},
        {"question": "whos the swallows agent", "count": 1},
    ]


BAD = [("timeframe", ["2d", "week", "7D"]), ("limit", ["0", "101", "ten", "1.5", "-1"])]


@pytest.mark.parametrize("path", ["top/", "gaps/"])
@pytest.mark.parametrize(("name", "values"), BAD, ids=[name for name, _ in BAD])
def test_every_bad_parameter_is_a_400_that_names_it(staff_client, path, name, values):
    for value in values:
        response = staff_client.get(QUESTIONS + path, {name: value})
        assert response.status_code == 400, (name, value)
        assert response.json()["error"].startswith(f"{name}: "), response.json()


@pytest.mark.parametrize("path", ["top/", "gaps/"])
def test_question_reports_follow_the_analytics_access_rules(api_client, user_client, staff_client, path):
    assert api_client.get(QUESTIONS + path).status_code == 401
    assert user_client.get(QUESTIONS + path).json() == {"error": "Only staff users may read analytics."}
    assert staff_client.get(QUESTIONS + path).json() == {"questions": [], "total": 0, "timeframe": "7d", "limit": 10}


@pytest.fixture
def admin_client(client, staff_user):
    staff_user.is_superuser = True
    staff_user.save()
    client.force_login(staff_user)
    return client


def test_the_dashboard_shows_top_questions_and_content_gaps(admin_client, scripted):
    content = admin_client.get("/admin/demand-dashboard/", {"timeframe": "1d"}).content.decode()
    top = content[content.index('id="top-questions"') : content.index('id="content-gaps"')]
    gaps = content[content.index('id="content-gaps"') : content.index('id="stale-entities"')]
    assert "<td>who is chris mansolillo</td>" in top and '<td class="num">3</td>' in top
    assert "<td>what is the airspeed of a swallow</td>" in gaps and "only related entities" in gaps
    assert "who is chris mansolillo" not in gaps


def test_the_entity_admin_page_shows_its_top_questions(admin_client, scripted):
    content = admin_client.get(f"/admin/entities/entity/{scripted['chris'].pk}/change/").content.decode()
    panel = content[content.index('id="entity-top-questions"') : content.index('id="entity-refresh-requests"')]
    assert "<td>who is chris mansolillo</td><td>4</td>" in panel


def _reports(now, *, windows: bool) -> dict:
    reports = {}
    for timeframe in TIMEFRAMES:
        for limit in (3, 100):
            reports[("top", timeframe, limit)] = questions_top(
                timeframe=timeframe, limit=limit, now=now, windows=windows
            )
            reports[("gaps", timeframe, limit)] = questions_gaps(
                timeframe=timeframe, limit=limit, now=now, windows=windows
            )
    return reports


def test_the_windows_give_the_records_answer_through_many_rolls():
    """Random answers over 31 days (repeats, gaps, related-only, askers, ties); at every step of rolling the
    windows hour by hour, with new answers arriving in between, both ways give identical reports."""
    assert QUESTION_STORED_SLACK + 3 < 150 < QUESTION_STORED_SLACK + 100
    rng = random.Random(13)
    users = [UserFactory() for _ in range(6)]
    now = timezone.now().replace(minute=30, second=0, microsecond=0)
    # 150 questions (more than limit + QUESTION_STORED_SLACK for limit 3, fewer for 100), Zipf-like, some in two
    # wordings: the reports' bounded lookups of the tail questions are exercised both ways.
    wordings = [f"Who is person {n}?" for n in range(150)] + [f"who is PERSON {n}" for n in range(6)]
    weights = [1 / (1 + n % 150) for n in range(len(wordings))]
    subject = SearchHit(uuid.uuid4(), "x", "person", {}, 1.0, "subject", 1)
    related = SearchHit(uuid.uuid4(), "y", "company", {}, 0.0, "related", 2)

    def ask(at, question=None):
        hits = rng.choice([[subject], [subject, related], [], [related]])
        answer_record_create(
            question=question or rng.choices(wordings, weights)[0],
            hits=hits,
            user_id=rng.choice(users).pk,
            latency_ms=1.0,
            composer="extractive",
            asked_at=at,
        )

    for _ in range(900):
        ask(now - timedelta(minutes=rng.randrange(31 * 24 * 60)))
    # Answers right at the hour edges of every window (first hour of 1d, 7d, 30d, and just before).
    h0 = now.replace(minute=0)
    for hours in (0, 22, 23, 24, 166, 167, 168, 718, 719, 720):
        ask(h0 - timedelta(hours=hours))
        ask(h0 - timedelta(hours=hours, microseconds=1))

    question_windows_roll(now=now - timedelta(hours=6))  # the first build, six hours behind
    for step in range(8):
        moment = now + timedelta(hours=step - 6)
        for _ in range(12):
            ask(moment - timedelta(minutes=rng.randrange(30)))  # since the stored hour, as answers arrive
        if step == 3:  # a rare question suddenly asked a lot: it must climb into the top from outside it
            for _ in range(80):
                ask(moment - timedelta(minutes=rng.randrange(30)), question="Who is person 140?")
        for reader in (moment, moment + timedelta(minutes=20)):
            assert question_windows_usable(h0=reader.replace(minute=0))
            assert _reports(reader, windows=True) == _reports(reader, windows=False), (step, reader)
        question_windows_roll(now=moment + timedelta(minutes=31))  # the worker's chore, once the hour closed
    assert QuestionWindow.objects.exists() and QuestionAsker.objects.exists()
    assert "who is person 140" in {q["question"] for q in questions_top(timeframe="30d", limit=3, now=moment)}
    # A deleted user's answers stay (anonymised) but are no longer counted in users, either way.
    users[0].delete()
    moment = now + timedelta(hours=2)
    assert _reports(moment, windows=True) == _reports(moment, windows=False)


def test_a_stopped_roll_falls_back_to_the_records_and_the_rebuild_agrees():
    user = UserFactory()
    now = timezone.now()
    for minutes in (5, 70, 60 * 30):
        answer_record_create(
            question="Who is Ann?", hits=[], user_id=user.pk, latency_ms=1.0, composer="c",
            asked_at=now - timedelta(minutes=minutes),
        )  # fmt: skip
    question_windows_roll(now=now - timedelta(hours=13))
    h0 = now.replace(minute=0, second=0, microsecond=0)
    assert not question_windows_usable(h0=h0)  # more than 12 hours behind: the records alone answer
    assert [(q["count"], q["users"]) for q in questions_top(timeframe="7d", now=now)] == [(3, 1)]
    # A pinned clock before the stored hour is read from the records too; a roll back rebuilds.
    assert question_windows_roll(now=now) == (now - QUESTION_ROLL_SETTLE).replace(minute=0, second=0, microsecond=0)
    earlier = now - timedelta(hours=2)
    assert [q["count"] for q in questions_top(timeframe="7d", now=earlier)] == [1]  # the one 30 hours ago
    question_windows_roll(now=earlier)
    assert questions_top(timeframe="7d", now=earlier, windows=True) == questions_top(
        timeframe="7d", now=earlier, windows=False
    )


def test_prune_keeps_the_records_the_question_windows_still_hold(settings):
    settings.ANSWER_RETENTION_DAYS = 1
    now = timezone.now()
    for days in (2, 40):
        answer_record_create(
            question="q", hits=[], user_id=None, latency_ms=1.0, composer="c", asked_at=now - timedelta(days=days)
        )
    question_windows_roll(now=now)
    assert answer_records_prune(now=now, keep_from=question_windows_oldest(now=now)) == 1
    assert list(AnswerRecord.objects.values_list("question", flat=True)) == ["q"]


def test_analytics_registers_the_question_windows_roll_as_a_worker_chore():
    (chore,) = [chore for chore in chores() if chore.name == "question_windows_roll"]
    assert chore.run is question_windows_roll and chore.key is not None
