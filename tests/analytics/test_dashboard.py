"""The admin "Demand dashboard": access, numbers equal to the selectors', trending switch, stream health."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from analytics.definitions import hour_floor
from analytics.demand import demand_buckets_add
from analytics.selectors import demand_stats
from entities.models import EntityDemand
from streams.models import OutboxEvent
from tests.entities.factories import EntityFactory

pytestmark = pytest.mark.django_db

DASHBOARD = "/admin/demand-dashboard/"


@pytest.fixture
def admin_client(client, staff_user):
    client.force_login(staff_user)
    return client


@pytest.fixture
def demand_state():
    now = timezone.now()
    rising = EntityFactory(name="Rising Star")
    stale = EntityFactory(name="Stale Studio", updated_at=now - timedelta(days=40))
    EntityFactory(name="Quiet Person")
    for entity, counts in ((rising, {1: 3, 30: 2}), (stale, {24 * 20: 6, 24 * 45: 2})):
        demand_buckets_add(counts={(entity.pk, hour_floor(now - timedelta(hours=h))): n for h, n in counts.items()})
        EntityDemand.objects.filter(pk=entity.pk).update(
            demand_score=sum(counts.values()), query_count=sum(counts.values())
        )
    return {"rising": rising, "stale": stale}


def _stat(content: str, name: str) -> str:
    return re.search(rf'id="stat-{name}">.*?class="value">([^<]*)<', content, re.S).group(1)


def test_admin_index_links_the_dashboard(admin_client):
    content = admin_client.get("/admin/").content.decode()
    assert f'href="{DASHBOARD}"' in content
    assert "Demand dashboard" in content


def test_dashboard_is_for_staff_only(client, user):
    assert client.get(DASHBOARD).status_code == 302
    client.force_login(user)
    response = client.get(DASHBOARD)
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_dashboard_numbers_are_the_selectors_numbers(admin_client, redis_client, demand_state):
    response = admin_client.get(DASHBOARD)
    assert response.status_code == 200
    content = response.content.decode()
    stats = demand_stats()
    assert stats["total_queries"] == 13
    for name, key in (
        ("total-entities", "total_entities"),
        ("total-queries", "total_queries"),
        ("entities-with-demand", "entities_with_demand"),
        ("avg-demand-score", "avg_demand_score"),
        ("trending-entities", "trending_entities"),
        ("needs-update", "needs_update"),
    ):
        assert _stat(content, name) == str(stats[key]), name
    # The chart covers 30 days: the 2 queries of 45 days ago are outside it.
    assert re.search(r'<svg class="bar-chart"[^>]*data-total="11"', content)
    assert content.count('class="bar"') == 30
    # Top, trending and stale tables link to the entities.
    rising, stale = demand_state["rising"], demand_state["stale"]
    top = content.split('id="top-entities"')[1].split('id="trending-entities"')[0]
    assert top.index("Stale Studio") < top.index("Rising Star")
    trending = content.split('id="trending-entities"')[1].split('id="stale-entities"')[0]
    assert f"/admin/entities/entity/{rising.pk}/change/" in trending
    assert "Stale Studio" not in trending
    stale_table = content.split('id="stale-entities"')[1].split('id="stream-health"')[0]
    assert f"/admin/entities/entity/{stale.pk}/change/" in stale_table


def test_dashboard_trending_timeframe_switch(admin_client, redis_client, demand_state):
    month = admin_client.get(DASHBOARD, {"timeframe": "30d"})
    assert month.context["timeframe"] == "30d"
    # trend scores: Rising (5 - 0) / sqrt(1) = 5.0 before Stale (6 - 2) / sqrt(3) = 2.3
    assert [row["name"] for row in month.context["trending"]] == ["Rising Star", "Stale Studio"]
    day = admin_client.get(DASHBOARD, {"timeframe": "1d"})
    assert [row["name"] for row in day.context["trending"]] == ["Rising Star"]
    # An unknown timeframe falls back to the default rather than failing the page.
    assert admin_client.get(DASHBOARD, {"timeframe": "2y"}).context["timeframe"] == "7d"


def test_dashboard_stream_health(admin_client, redis_client):
    entity = EntityFactory()
    redis_client.xadd(settings.STREAM_QUERY_SIGNALS, {"entity_id": str(entity.pk)})
    redis_client.xadd(settings.STREAM_DEAD_LETTER, {"dead_reason": "x"})
    OutboxEvent.objects.create(stream=settings.STREAM_QUERY_SIGNALS, fields={})
    content = admin_client.get(DASHBOARD).content.decode()
    assert 'id="health-lag">1<' in content
    assert 'id="health-pending">0<' in content
    assert 'id="health-dead-letters">1<' in content
    assert 'id="health-outbox">1<' in content
    assert 'id="health-workers">0<' in content


def test_dashboard_renders_when_redis_is_stopped(admin_client, private_redis, demand_state):
    private_redis.stop()
    response = admin_client.get(DASHBOARD)
    assert response.status_code == 200
    content = response.content.decode()
    assert "Redis is unreachable" in content
    assert _stat(content, "total-queries") == "13"


def test_dashboard_links_the_csv_exports_and_they_download(admin_client, demand_state):
    content = admin_client.get(DASHBOARD, {"timeframe": "1d"}).content.decode()
    links = re.findall(r'class="csv-export" href="([^"]+)"', content)
    assert [link.replace("&amp;", "&") for link in links] == [
        "/api/analytics/demand/top/?format=csv&limit=100",
        "/api/analytics/demand/trending/?format=csv&timeframe=1d&limit=50",
        "/api/analytics/questions/top/?format=csv&timeframe=1d&limit=100",
        "/api/analytics/questions/gaps/?format=csv&timeframe=1d&limit=100",
        "/api/analytics/demand/stale/?format=csv&limit=100",
        "/api/analytics/demand/refresh-queue/?format=csv&limit=500",
    ]
    for link in links:
        # The admin's session signs the download in.
        response = admin_client.get(link.replace("&amp;", "&"))
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/csv")
        assert response["Content-Disposition"].startswith("attachment; filename=")
