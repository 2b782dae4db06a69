"""The demand admin: the "Demand dashboard" (stats, top, trending, stale, questions, gaps, the refresh lifecycle,
30 days of queries, stream health), the "Refresh queue" page, and demand in the entity store's admin.

The dashboard shows stats, top, trending, stale (each with a CSV link), 30 days of queries and stream
health; it is linked from the admin index (`index_template`) and routed in mandate_wizard/urls.py. `DemandEntityAdmin`
extends entities' EntityAdmin with the needs-update and 7-day trending columns and filters and an
entity's demand and chart, and takes its place. Every number comes from analytics.selectors and
streams.selectors, the same functions the API uses; nothing here re-derives them.
"""

from __future__ import annotations

import logging
import uuid

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import BooleanField, Count, ExpressionWrapper, Q
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from analytics.apis import QUESTIONS_LIMIT, REFRESH_QUEUE_LIMIT, STALE_LIMIT, TOP_LIMIT, TRENDING_LIMIT
from analytics.charts import timeseries_chart
from analytics.models import AlertDelivery, AlertRule, AlertState
from analytics.selectors import (
    ENTITY_TYPES,
    TIMEFRAMES,
    demand_entity,
    demand_stale,
    demand_stale_condition,
    demand_stats,
    demand_timeseries,
    demand_top,
    demand_trending,
    demand_trending_condition,
    questions_gaps,
    questions_top,
    refresh_queue,
    refresh_stats,
)
from analytics.services import refresh_requests_publish
from entities.admin import EntityAdmin
from entities.models import Entity
from kernel.replica import replica_reads
from streams.redis import REDIS_ERRORS
from streams.selectors import streams_info

logger = logging.getLogger(__name__)

DASHBOARD_ROWS = 10
CHART_DAYS = 30
RECENT_REFRESH_REQUESTS = 20

admin.site.index_template = "analytics/admin/index.html"


def csv_export_urls(*, timeframe: str) -> dict[str, str]:
    """The dashboard's CSV links: each report with as many rows as its API allows, trending in `timeframe`."""
    return {
        "top": f"{reverse('analytics-demand-top')}?format=csv&limit={TOP_LIMIT.maximum}",
        "trending": f"{reverse('analytics-demand-trending')}?format=csv&timeframe={timeframe}"
        f"&limit={TRENDING_LIMIT.maximum}",
        "stale": f"{reverse('analytics-demand-stale')}?format=csv&limit={STALE_LIMIT.maximum}",
        "refresh_queue": f"{reverse('analytics-demand-refresh-queue')}?format=csv&limit={REFRESH_QUEUE_LIMIT.maximum}",
        "questions_top": f"{reverse('analytics-questions-top')}?format=csv&timeframe={timeframe}"
        f"&limit={QUESTIONS_LIMIT.maximum}",
        "questions_gaps": f"{reverse('analytics-questions-gaps')}?format=csv&timeframe={timeframe}"
        f"&limit={QUESTIONS_LIMIT.maximum}",
    }


def demand_dashboard(request: HttpRequest) -> HttpResponse:
    """The dashboard page; `?timeframe=1d|7d|30d` switches the trending and question tables (default 7d).

    The reports are read like the API's, inside `replica_reads()`. The admin's own context (the user's
    permissions) and the stream health (Redis and the outbox) are read from the primary.
    """
    timeframe = request.GET.get("timeframe", "7d")
    if timeframe not in TIMEFRAMES:
        timeframe = "7d"
    now = timezone.now()
    try:
        pipeline = streams_info()
        pipeline_error = None
    except REDIS_ERRORS as error:
        logger.warning("dashboard: streams info unavailable: %s", error)
        pipeline, pipeline_error = None, f"Redis is unreachable ({type(error).__name__})."
    context = {
        **admin.site.each_context(request),
        "title": "Demand dashboard",
        "timeframes": TIMEFRAMES,
        "timeframe": timeframe,
        "pipeline": pipeline,
        "pipeline_error": pipeline_error,
        "csv_exports": csv_export_urls(timeframe=timeframe),
    }
    with replica_reads():
        series = demand_timeseries(entity_id=None, days=CHART_DAYS, interval="day", now=now)
        context |= {
            "stats": demand_stats(now=now),
            "top": demand_top(limit=DASHBOARD_ROWS, now=now),
            "trending": demand_trending(timeframe=timeframe, limit=DASHBOARD_ROWS, now=now),
            "stale": demand_stale(limit=DASHBOARD_ROWS, now=now),
            "refresh": _hours(refresh_stats(timeframe=timeframe, now=now)),
            "top_questions": questions_top(timeframe=timeframe, limit=DASHBOARD_ROWS, now=now),
            "gaps": questions_gaps(timeframe=timeframe, limit=DASHBOARD_ROWS, now=now),
            "series": series,
        }
    context["chart"] = timeseries_chart(series=series, title=f"Queries per day, last {CHART_DAYS} days")
    return TemplateResponse(request, "analytics/admin/demand_dashboard.html", context)


demand_dashboard_view = admin.site.admin_view(demand_dashboard)


def _hours(stats: dict) -> dict:
    """The refresh stats with the times to refresh in hours too, for display."""
    for name in ("median", "p90"):
        seconds = stats[f"time_to_refresh_{name}_seconds"]
        stats[f"time_to_refresh_{name}_hours"] = None if seconds is None else seconds / 3600
    return stats


REFRESH_QUEUE_ROWS = 100


def refresh_queue_page(request: HttpRequest) -> HttpResponse:
    """The refresh queue (`?entity_type=`, `?critical=true|false`), with a bulk "request refresh" (POST).

    Requesting goes through `refresh_requests_publish`, so entities requested already are skipped; it
    needs the `entities.request_entity_update` permission, as the entity list's action does.
    """
    entity_type = request.GET.get("entity_type") or None
    if entity_type not in (None, *ENTITY_TYPES):
        entity_type = None
    critical = {"true": True, "false": False}.get(request.GET.get("critical", ""))
    if request.method == "POST":
        if not request.user.has_perm("entities.request_entity_update"):
            raise PermissionDenied
        _queue_request_refresh(request)
        return HttpResponseRedirect(request.get_full_path())
    queue = refresh_queue(limit=REFRESH_QUEUE_ROWS, entity_type=entity_type, critical=critical)
    context = {
        **admin.site.each_context(request),
        "title": "Refresh queue",
        "queue": queue,
        "entity_types": ENTITY_TYPES,
        "entity_type": entity_type,
        "critical": request.GET.get("critical", ""),
        "can_request": request.user.has_perm("entities.request_entity_update"),
        "csv_url": f"{reverse('analytics-demand-refresh-queue')}?format=csv&limit={REFRESH_QUEUE_LIMIT.maximum}",
    }
    return TemplateResponse(request, "analytics/admin/refresh_queue.html", context)


def _queue_request_refresh(request: HttpRequest) -> None:
    try:
        entity_ids = [uuid.UUID(raw) for raw in request.POST.getlist("entity_id")]
    except ValueError:
        messages.error(request, "The selection holds an id that is not an entity id; nothing was requested.")
        return
    if not entity_ids:
        messages.warning(request, "Select the entities to request a refresh of.")
        return
    try:
        outcome = refresh_requests_publish(entity_ids=entity_ids, source=f"admin:{request.user.get_username()}")
    except REDIS_ERRORS as error:
        logger.warning("refresh queue: request refresh failed: %s", error)
        messages.error(request, f"Nothing was requested: Redis is unreachable ({type(error).__name__}).")
        return
    if outcome.lost:
        messages.error(request, "Nothing more was requested: neither Redis nor the outbox accepted the request.")
    via = f" ({outcome.outboxed} held in the outbox until Redis is back)" if outcome.outboxed else ""
    messages.success(
        request,
        f"Requested a refresh of {len(outcome.requested)} entities{via}; {outcome.skipped_recent} skipped "
        "(requested already).",
    )


refresh_queue_view = admin.site.admin_view(refresh_queue_page)


class NeedsUpdateFilter(admin.SimpleListFilter):
    title = "needs update"
    parameter_name = "needs_update"

    def lookups(self, request, model_admin):
        return (("yes", "Yes"), ("no", "No"))

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(demand_stale_condition())
        if self.value() == "no":
            return queryset.exclude(demand_stale_condition())
        return queryset


class Trending7dFilter(admin.SimpleListFilter):
    title = "trending (7d)"
    parameter_name = "trending_7d"

    def lookups(self, request, model_admin):
        return (("yes", "Yes"), ("no", "No"))

    def queryset(self, request, queryset):
        trending = demand_trending_condition(timeframe="7d", prefix="demand_window__")
        if self.value() == "yes":
            return queryset.filter(trending)
        if self.value() == "no":
            return queryset.exclude(trending)
        return queryset


class DemandEntityAdmin(EntityAdmin):
    """The entity admin with demand: needs-update and 7-day trending, and an entity's demand and chart."""

    list_display = (
        "name",
        "entity_type",
        "demand_score",
        "query_count",
        "last_queried_at",
        "needs_update",
        "trending_7d",
        "updated_at",
    )
    list_filter = ("entity_type", NeedsUpdateFilter, Trending7dFilter)
    change_form_template = "analytics/admin/entity_change_form.html"

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                needs_update=ExpressionWrapper(demand_stale_condition(), output_field=BooleanField()),
                trending_7d=ExpressionWrapper(
                    demand_trending_condition(timeframe="7d", prefix="demand_window__"), output_field=BooleanField()
                ),
            )
        )

    @admin.display(boolean=True, description="needs update", ordering="needs_update")
    def needs_update(self, entity: Entity) -> bool:
        return entity.needs_update

    @admin.display(boolean=True, description="trending 7d", ordering="trending_7d")
    def trending_7d(self, entity: Entity) -> bool:
        # The windows' LEFT JOIN gives NULL for an entity with no recent demand: not trending.
        return bool(entity.trending_7d)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        entity = self.get_object(request, object_id)
        if entity is not None:
            series = demand_timeseries(entity_id=entity.pk, days=CHART_DAYS, interval="day")
            extra_context = {
                **(extra_context or {}),
                "demand": demand_entity(entity=entity),
                "demand_series": series,
                "demand_chart": timeseries_chart(series=series, title=f"{entity.name}: queries per day"),
                "refresh_requests": entity.refresh_requests.all()[:RECENT_REFRESH_REQUESTS],
                "refresh_request_count": entity.refresh_requests.count(),
            }
        return super().change_view(request, object_id, form_url, extra_context)


admin.site.unregister(Entity)
admin.site.register(Entity, DemandEntityAdmin)


# -- alerts: the rules (edited here), where each stands, and the delivery log ------------------------------


class AlertStateInline(admin.TabularInline):
    model = AlertState
    fields = ("entity", "firing", "value", "fired_at", "resolved_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def get_queryset(self, request):
        # The states worth seeing: firing ones, then the most recently fired.
        return super().get_queryset(request).select_related("entity").order_by("-firing", "-fired_at")


@admin.register(AlertRule)
class AlertRuleAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "kind",
        "enabled",
        "threshold",
        "age_seconds",
        "timeframe",
        "cooldown_seconds",
        "destination",
        "firing_count",
        "last_evaluated_at",
    )
    list_filter = ("kind", "enabled")
    list_editable = ("enabled",)
    readonly_fields = ("last_evaluated_at",)
    inlines = [AlertStateInline]
    # A URL typed without a scheme is taken as https (Django 6's default; 5.2 warns without it).
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(firing_count=Count("states", filter=Q(states__firing=True)))

    @admin.display(description="webhook")
    def destination(self, rule: AlertRule) -> str:
        return rule.webhook_url or ("ALERT_WEBHOOK_URL" if settings.ALERT_WEBHOOK_URL else "none: nothing is sent")

    @admin.display(description="firing", ordering="firing_count")
    def firing_count(self, rule: AlertRule) -> int:
        return rule.firing_count


@admin.register(AlertDelivery)
class AlertDeliveryAdmin(admin.ModelAdmin):
    """The delivery log: every alert message, its attempts, the last status code and error. Read-only."""

    list_display = (
        "created_at",
        "rule",
        "state",
        "entity",
        "status",
        "attempts",
        "last_status_code",
        "last_error",
        "next_attempt_at",
        "sent_at",
    )
    list_filter = ("status", "state", "rule")
    list_select_related = ("rule", "entity")
    search_fields = ("payload__text", "last_error")
    date_hierarchy = "created_at"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
