"""Question analytics from the answer records: top questions, content gaps, an entity's top questions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from entities.retrieval import SearchHit
from entities.services import answer_record_create
from tests.entities.factories import EntityFactory, UserFactory

pytestmark = pytest.mark.django_db

QUESTIONS = "/api/analytics/questions/"


def hit(entity, *, role: str = "subject", rank: int = 1) -> SearchHit:
    return SearchHit(entity.id, entity.name, entity.entity_type, entity.data, 1.0, role, rank)


@pytest.fixture
def scripted():
    """A scripted day of questions: repeats in varied case and punctuation, questions about nothing."""
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
