"""A person's path through the admin in headless Chromium: log in, open the demand dashboard and an entity,
and see the same numbers as the API; and what a "Demand analysts" member (not a superuser) sees.
Screenshots go to test-output/ (git-ignored).

Chromium is Debian's /usr/bin/chromium (`make test` installs it, .ci/browser); Playwright only drives it.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.utils import timezone
from playwright.sync_api import Page, sync_playwright

from analytics.definitions import hour_floor
from analytics.demand import demand_buckets_add
from entities.models import EntityDemand, RefreshRequest
from streams.models import OutboxEvent
from tests.entities.factories import EntityFactory, UserFactory

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
OUTPUT = Path(settings.BASE_DIR) / "test-output"
PASSWORD = "correct-horse-battery-staple"

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def known_state(redis_client):
    """Three entities with counted demand (buckets, windows, counters), some stream backlog, a staff user."""
    now = timezone.now()
    stale = EntityFactory(name="Stale Studio", updated_at=now - timedelta(days=45))
    rising = EntityFactory(name="Rising Star")
    EntityFactory(name="Quiet Person")
    for entity, hours in ((stale, {24 * 3: 4, 24 * 12: 5}), (rising, {2: 3, 26: 1})):
        demand_buckets_add(counts={(entity.pk, hour_floor(now - timedelta(hours=h))): n for h, n in hours.items()})
        total = sum(hours.values())
        EntityDemand.objects.filter(entity=entity).update(
            demand_score=total,
            query_count=total,
            first_queried_at=now - timedelta(hours=max(hours)),
            last_queried_at=now - timedelta(hours=min(hours)),
        )
    redis_client.xadd(settings.STREAM_QUERY_SIGNALS, {"entity_id": str(rising.pk)})
    redis_client.xadd(settings.STREAM_DEAD_LETTER, {"dead_reason": "missing field 'query'"})
    OutboxEvent.objects.create(stream=settings.STREAM_QUERY_SIGNALS, fields={})
    user = UserFactory(is_staff=True, is_superuser=True)
    return {"user": user, "stale": stale, "rising": rising}


def _text(page: Page, selector: str) -> str:
    return page.locator(selector).inner_text().strip()


def test_admin_dashboard_and_entity_page_in_chromium(live_server, known_state):
    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: apt-get install chromium (see .ci/browser)"
    OUTPUT.mkdir(exist_ok=True)
    stale = known_state["stale"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1600})
            # Nothing may leave the machine: any request to another host fails the test.
            outside: list[str] = []
            # (blob: URLs of our own origin are made in the page: the JSON editor's syntax-check worker.)
            local = (live_server.url, f"blob:{live_server.url}")
            page.on("request", lambda r: None if r.url.startswith(local) else outside.append(r.url))

            page.goto(f"{live_server.url}/admin/login/")
            page.fill("#id_username", known_state["user"].username)
            page.fill("#id_password", PASSWORD)
            page.click("input[type=submit]")
            page.wait_for_url(f"{live_server.url}/admin/")

            page.click("text=Demand dashboard")
            page.wait_for_selector("#demand-dashboard")
            stats = page.request.get(f"{live_server.url}/api/analytics/demand/stats/").json()
            for name, key in (
                ("total-entities", "total_entities"),
                ("total-queries", "total_queries"),
                ("entities-with-demand", "entities_with_demand"),
                ("avg-demand-score", "avg_demand_score"),
                ("trending-entities", "trending_entities"),
                ("needs-update", "needs_update"),
            ):
                assert _text(page, f"#stat-{name} .value") == str(stats[key]), name
            assert stats["total_queries"] == 13

            # The chart is server-drawn SVG: 30 bars whose sum is the API's 30-day total over all entities.
            per_entity = [
                page.request.get(f"{live_server.url}/api/analytics/demand/entity/{e.pk}/timeseries/?days=30").json()
                for e in (known_state["stale"], known_state["rising"])
            ]
            chart = page.locator("#queries-chart svg.bar-chart")
            assert chart.get_attribute("data-total") == str(sum(s["total_queries"] for s in per_entity))
            assert page.locator("#queries-chart rect.bar").count() == 30
            bars = page.locator("#queries-chart rect.bar").all()
            drawn = [(int(bar.get_attribute("data-value")), bar.bounding_box()["height"]) for bar in bars]
            tallest = max(drawn)
            assert tallest[0] == 5 and tallest[1] > 0
            assert all(height == 0 for value, height in drawn if value == 0)

            streams = page.request.get(f"{live_server.url}/api/events/streams/info").json()
            assert _text(page, "#health-lag") == str(streams["totals"]["lag"]) == "1"
            assert _text(page, "#health-pending") == str(streams["totals"]["pending"])
            assert _text(page, "#health-dead-letters") == str(streams["dead_letter"]["length"]) == "1"
            assert _text(page, "#health-outbox") == str(streams["outbox"]["backlog"]) == "1"
            assert _text(page, "#health-workers") == str(len(streams["workers"]))

            page.click("#trending-entities a[data-timeframe='30d']")
            page.wait_for_url("**timeframe=30d")
            trending = page.request.get(f"{live_server.url}/api/analytics/demand/trending/?timeframe=30d").json()
            shown = page.locator("#trending-entities tbody tr td:first-child a").all_inner_texts()
            assert shown == [row["name"] for row in trending["trending"]]
            page.screenshot(path=str(OUTPUT / "admin-demand-dashboard.png"), full_page=True)

            page.click(f"#stale-entities a:has-text('{stale.name}')")
            page.wait_for_selector("#entity-demand")
            demand = page.request.get(f"{live_server.url}/api/analytics/demand/entity/{stale.pk}/").json()["entity"]
            assert _text(page, "#entity-demand-score") == str(demand["demand_score"]) == "9"
            assert _text(page, "#entity-query-count") == str(demand["query_count"])
            assert _text(page, "#entity-current-7d") == str(demand["current_period_queries"]) == "4"
            assert _text(page, "#entity-needs-update") == ("yes" if demand["needs_update"] else "no") == "yes"
            assert page.locator("#entity-demand-chart svg").get_attribute("data-total") == str(
                per_entity[0]["total_queries"]
            )
            # Demand fields are read-only on the page.
            assert page.locator("input[name=demand_score]").count() == 0
            # The name is a one-line input; data is shown in the JSON editor, pretty-printed.
            assert page.locator("input#id_name[type=text]").input_value() == stale.name
            page.wait_for_selector("#id_data .jsoneditor")
            assert "\n" in page.locator("#id_data .ace_content").inner_text()
            page.screenshot(path=str(OUTPUT / "admin-entity-page.png"), full_page=True)
            assert outside == []
        finally:
            browser.close()
    assert (OUTPUT / "admin-demand-dashboard.png").stat().st_size > 10_000


def _login(page: Page, base: str, username: str) -> None:
    page.goto(f"{base}/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{base}/admin/")


def test_a_demand_analyst_reads_entities_and_refresh_requests_but_not_users(live_server, known_state, monkeypatch):
    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: apt-get install chromium (see .ci/browser)"
    OUTPUT.mkdir(exist_ok=True)
    # The "Demand analysts" group comes from a data migration, whose rows a transactional test's flush
    # removes: run that migration again, as `migrate` does on a fresh database.
    call_command("migrate", "mandate_wizard", "zero", verbosity=0)
    call_command("migrate", "mandate_wizard", verbosity=0)
    monkeypatch.setenv("USER_PASSWORD", PASSWORD)
    call_command("create_user", "analyst@example.com", "--staff")
    analyst = get_user_model().objects.get(email="analyst@example.com")
    assert not analyst.is_superuser
    stale = known_state["stale"]
    RefreshRequest.objects.create(entity=stale, event_id=uuid.uuid4(), source="admin:test")
    base = live_server.url
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1200})
            _login(page, base, analyst.username)

            # The index lists the analyst's models and not auth's; the dashboard link is one line of text.
            assert page.locator("a[href='/admin/entities/entity/']").count() >= 1
            assert page.locator("a[href='/admin/entities/refreshrequest/']").count() >= 1
            assert page.locator("a[href='/admin/auth/user/']").count() == 0
            assert page.locator("a[href='/admin/auth/group/']").count() == 0
            link = page.locator("#demand-dashboard-link a[href='/admin/demand-dashboard/']").bounding_box()
            assert link["width"] > 4 * link["height"], link
            page.screenshot(path=str(OUTPUT / "admin-index-analyst.png"), full_page=True)

            page.click("a[href='/admin/entities/entity/']")
            page.wait_for_selector("#result_list")
            names = page.locator("#result_list tbody th a").all_inner_texts()
            assert {"Stale Studio", "Rising Star"} <= set(names)
            actions = page.locator("select[name=action] option").all_inner_texts()
            assert "Request refresh of the selected entities" in actions
            assert "Reindex the selected entities" in actions

            page.click(f"#result_list a:has-text('{stale.name}')")
            page.wait_for_selector("#entity-demand")
            assert _text(page, "#entity-demand-score") == "9"
            # View only: no editable name, no save button.
            assert page.locator("input#id_name").count() == 0
            assert page.locator("input[name=_save]").count() == 0

            page.goto(f"{base}/admin/entities/refreshrequest/")
            assert stale.name in page.locator("#result_list").inner_text()

            response = page.goto(f"{base}/admin/auth/user/")
            assert response.status == 403
            assert response.headers["content-type"].startswith("text/html")
            assert "403 Forbidden" in page.content()
        finally:
            browser.close()
