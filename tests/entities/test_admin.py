"""Entity admin: demand columns, needs-update and trending filters, refresh/reindex actions, the entity page."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.messages import get_messages
from django.utils import timezone

from analytics.definitions import hour_floor
from analytics.demand import demand_buckets_add
from entities.models import Entity, EntityDemand, RefreshRequest
from streams.models import OutboxEvent
from streams.publisher import redis_circuit
from tests.entities.factories import EntityFactory

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/entities/entity/"


@pytest.fixture
def admin_client(client, staff_user):
    staff_user.is_superuser = True
    staff_user.save()
    client.force_login(staff_user)
    return client


def _demand(entity: Entity, hours_ago_counts: dict[int, int]) -> None:
    """Counted demand as the worker leaves it: buckets, windows and counters."""
    now = timezone.now()
    demand_buckets_add(
        counts={(entity.pk, hour_floor(now - timedelta(hours=h))): n for h, n in hours_ago_counts.items()}
    )
    total = sum(hours_ago_counts.values())
    EntityDemand.objects.filter(entity=entity).update(
        demand_score=total,
        query_count=total,
        first_queried_at=now - timedelta(hours=max(hours_ago_counts)),
        last_queried_at=now - timedelta(hours=min(hours_ago_counts)),
    )


@pytest.fixture
def demand_state():
    """rising: 5 queries this week, none before (trending, fresh); stale: 8 queries long ago, content 40 days old;
    quiet: never queried."""
    rising = EntityFactory(name="Rising Star")
    stale = EntityFactory(name="Stale Studio", updated_at=timezone.now() - timedelta(days=40))
    quiet = EntityFactory(name="Quiet Person")
    _demand(rising, {1: 3, 30: 2})
    _demand(stale, {24 * 20: 8})
    return {"rising": rising, "stale": stale, "quiet": quiet}


def _names(response) -> list[str]:
    return [entity.name for entity in response.context["cl"].result_list]


def test_changelist_shows_demand_columns(admin_client, demand_state):
    response = admin_client.get(CHANGELIST)
    assert response.status_code == 200
    assert _names(response) == ["Stale Studio", "Rising Star", "Quiet Person"]
    content = response.content.decode()
    for header in ("Demand score", "Query count", "Needs update", "Trending 7d"):
        assert header in content


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"needs_update": "yes"}, ["Stale Studio"]),
        ({"needs_update": "no"}, ["Rising Star", "Quiet Person"]),
        ({"trending_7d": "yes"}, ["Rising Star"]),
        ({"trending_7d": "no"}, ["Stale Studio", "Quiet Person"]),
        ({"entity_type__exact": "person", "trending_7d": "yes"}, ["Rising Star"]),
        ({"entity_type__exact": "company"}, []),
    ],
)
def test_changelist_filters(admin_client, demand_state, query, expected):
    response = admin_client.get(CHANGELIST, query)
    assert response.status_code == 200
    assert _names(response) == expected


def test_needs_update_and_trending_columns_match_the_definitions(admin_client, demand_state):
    rows = {
        e.name: (e.needs_update, bool(e.trending_7d)) for e in admin_client.get(CHANGELIST).context["cl"].result_list
    }
    assert rows == {
        "Stale Studio": (True, False),
        "Rising Star": (False, True),
        "Quiet Person": (False, False),
    }


@pytest.mark.parametrize(
    ("action", "operation", "word"),
    [("request_refresh", "refresh", "a refresh of"), ("request_reindex", "reindex", "reindexing of")],
)
def test_actions_publish_one_update_request_and_say_how_many(
    admin_client, redis_client, demand_state, action, operation, word
):
    chosen = sorted([demand_state["rising"].pk, demand_state["quiet"].pk])
    response = admin_client.post(
        CHANGELIST, {"action": action, "_selected_action": [str(pk) for pk in chosen]}, follow=True
    )
    assert response.status_code == 200
    [message] = [str(m) for m in get_messages(response.wsgi_request)]
    assert message == f"Requested {word} 2 entities: 1 UpdateRequest(s) published."
    [(_, fields)] = redis_client.xrange(settings.STREAM_UPDATE_REQUESTS)
    assert fields["operation"] == operation
    assert json.loads(fields["entity_ids"]) == [str(pk) for pk in chosen]
    assert fields["source"].startswith("admin:")


def test_actions_keep_requests_in_the_outbox_when_redis_is_stopped(admin_client, private_redis, demand_state):
    private_redis.stop()
    try:
        response = admin_client.post(
            CHANGELIST, {"action": "request_refresh", "_selected_action": [str(demand_state["stale"].pk)]}, follow=True
        )
    finally:
        redis_circuit.reset()
    [message] = [str(m) for m in get_messages(response.wsgi_request)]
    assert message == (
        "Requested a refresh of 1 entities: 1 UpdateRequest(s) published (1 held in the outbox until Redis is back)."
    )
    assert OutboxEvent.objects.get().stream == settings.STREAM_UPDATE_REQUESTS


def test_entity_page_shows_30_days_of_demand_and_refresh_requests(admin_client, demand_state):
    entity = demand_state["stale"]
    # 8 queries 20 days ago (in the chart) and 4 queries 40 days ago (outside it).
    demand_buckets_add(counts={(entity.pk, hour_floor(timezone.now() - timedelta(days=40))): 4})
    RefreshRequest.objects.create(entity=entity, event_id="11111111-1111-4111-8111-111111111111", source="admin:x")

    response = admin_client.get(f"{CHANGELIST}{entity.pk}/change/")
    assert response.status_code == 200
    content = response.content.decode()
    assert re.search(r'<svg class="bar-chart"[^>]*data-total="8"', content)
    assert content.count('class="bar"') == 30
    assert 'id="entity-chart-total">8<' in content
    assert 'id="entity-refresh-request-count">1<' in content
    assert "11111111-1111-4111-8111-111111111111" in content
    assert 'id="entity-needs-update">yes<' in content
    # Demand fields are shown, never editable.
    for field in ("demand_score", "query_count", "first_queried_at", "last_queried_at"):
        assert f'name="{field}"' not in content


def test_refresh_requests_link_filters_by_entity(admin_client, demand_state):
    entity = demand_state["stale"]
    RefreshRequest.objects.create(entity=entity, event_id="11111111-1111-4111-8111-111111111111")
    RefreshRequest.objects.create(entity=demand_state["rising"], event_id="22222222-2222-4222-8222-222222222222")
    response = admin_client.get("/admin/entities/refreshrequest/", {"entity__id__exact": str(entity.pk)})
    assert response.status_code == 200
    assert [r.entity_id for r in response.context["cl"].result_list] == [entity.pk]


def test_editing_content_still_moves_updated_at_but_not_demand(admin_client, demand_state):
    entity = demand_state["rising"]
    before = Entity.objects.select_related("demand").get(pk=entity.pk)
    response = admin_client.post(
        f"{CHANGELIST}{entity.pk}/change/",
        {"name": "Rising Star II", "entity_type": "person", "data": json.dumps(before.data)},
    )
    assert response.status_code == 302
    after = Entity.objects.select_related("demand").get(pk=entity.pk)
    assert after.name == "Rising Star II"
    assert after.updated_at > before.updated_at
    assert (before.demand.demand_score, before.demand.query_count) == (5, 5)
    assert (after.demand.demand_score, after.demand.query_count) == (5, 5)


def test_changelist_searches_by_name(admin_client, demand_state):
    response = admin_client.get(CHANGELIST, {"q": "stale"})
    assert response.status_code == 200
    assert _names(response) == ["Stale Studio"]


def test_admin_requires_staff(client, user):
    client.force_login(user)
    response = client.get(CHANGELIST)
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
