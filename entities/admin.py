"""Django admin for the entity store. Demand fields are read-only: only the worker changes them.

The demand counters live on the entity's demand row (EntityDemand): the list reads them through one
join (list_select_related), the entity page through `entity.demand`.

The list shows demand (with needs-update and 7-day trending filters) and publishes refresh/reindex
UpdateRequests; an entity's page shows its last 30 days of demand as a chart and its refresh requests.
Definitions come from analytics.selectors; nothing here re-derives them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime

from django import forms
from django.contrib import admin, messages
from django.db.models import BooleanField, ExpressionWrapper, JSONField
from django.utils import timezone
from django.utils.html import format_html
from django_json_widget.widgets import JSONEditorWidget

from analytics.charts import timeseries_chart
from analytics.selectors import (
    demand_entity,
    demand_stale_condition,
    demand_timeseries,
    demand_trending_condition,
    demand_windows_sync,
)
from entities.models import Entity, RefreshRequest
from entities.selectors import DEMAND_COUNTERS, HAS_DEMAND_ROW
from streams.events import MAX_ENTITY_IDS, UpdateRequest
from streams.publisher import update_request_publish

CHART_DAYS = 30
RECENT_REFRESH_REQUESTS = 20


def update_requests_publish(*, entity_ids: Sequence[uuid.UUID], operation: str, source: str) -> tuple[int, int]:
    """Publish UpdateRequests for `entity_ids` (chunks of MAX_ENTITY_IDS); return (requests, via outbox)."""
    requests = outboxed = 0
    for start in range(0, len(entity_ids), MAX_ENTITY_IDS):
        chunk = entity_ids[start : start + MAX_ENTITY_IDS]
        outcome = update_request_publish(
            request=UpdateRequest.new(entity_ids=chunk, operation=operation, source=source)
        )
        if outcome.lost:
            raise RuntimeError("Neither Redis nor the outbox accepted the request.")
        requests += 1
        outboxed += outcome.outboxed
    return requests, outboxed


class EntityDataWidget(JSONEditorWidget):
    """django-json-widget's editor; after a failed validation it shows the text as typed instead of crashing."""

    def format_value(self, value):
        try:
            return super().format_value(value)
        except json.JSONDecodeError:  # Django's JSONField hands back the invalid text (InvalidJSONInput)
            return value


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


@admin.register(Entity)
class EntityAdmin(admin.ModelAdmin):
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
    search_fields = ("name",)
    list_select_related = ("demand",)
    ordering = ("-demand__demand_score", "-demand__query_count", "name")
    readonly_fields = ("id", "created_at", "updated_at", *DEMAND_COUNTERS)
    fields = ("id", "name", "entity_type", "data", "created_at", "updated_at", *DEMAND_COUNTERS)
    show_full_result_count = False
    list_per_page = 50
    actions = ("request_refresh", "request_reindex")
    change_form_template = "analytics/admin/entity_change_form.html"
    # `data` pretty-printed in an editor that refuses invalid JSON (django-json-widget, files from our static).
    formfield_overrides = {JSONField: {"widget": EntityDataWidget(height="320px")}}

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name == "name":  # a TextField, but a name is one line
            kwargs["widget"] = forms.TextInput(attrs={"class": "vTextField"})
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def get_fields(self, request, obj=None):
        # Read-only viewers get `data` pretty-printed instead of Django's one-line JSON.
        if obj is not None and not self.has_change_permission(request, obj):
            return tuple("data_formatted" if name == "data" else name for name in self.fields)
        return self.fields

    def get_readonly_fields(self, request, obj=None):
        return (*self.readonly_fields, "data_formatted")

    @admin.display(description="data")
    def data_formatted(self, entity: Entity) -> str:
        return format_html("<pre>{}</pre>", json.dumps(entity.data, indent=2, ensure_ascii=False))

    def has_request_entity_update_permission(self, request) -> bool:
        return request.user.has_perm("entities.request_entity_update")

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .filter(HAS_DEMAND_ROW)
            .defer("search_vector")
            .annotate(
                needs_update=ExpressionWrapper(demand_stale_condition(), output_field=BooleanField()),
                trending_7d=ExpressionWrapper(
                    demand_trending_condition(timeframe="7d", prefix="demand_window__"), output_field=BooleanField()
                ),
            )
        )

    def changelist_view(self, request, extra_context=None):
        demand_windows_sync()  # trending reads the windows of the current hour
        return super().changelist_view(request, extra_context)

    @admin.display(description="demand score", ordering="demand__demand_score")
    def demand_score(self, entity: Entity) -> int:
        return entity.demand.demand_score

    @admin.display(description="query count", ordering="demand__query_count")
    def query_count(self, entity: Entity) -> int:
        return entity.demand.query_count

    @admin.display(description="first queried at", ordering="demand__first_queried_at")
    def first_queried_at(self, entity: Entity) -> datetime | None:
        return entity.demand.first_queried_at

    @admin.display(description="last queried at", ordering="demand__last_queried_at")
    def last_queried_at(self, entity: Entity) -> datetime | None:
        return entity.demand.last_queried_at

    @admin.display(boolean=True, description="needs update", ordering="needs_update")
    def needs_update(self, entity: Entity) -> bool:
        return entity.needs_update

    @admin.display(boolean=True, description="trending 7d", ordering="trending_7d")
    def trending_7d(self, entity: Entity) -> bool:
        # The windows' LEFT JOIN gives NULL for an entity with no recent demand: not trending.
        return bool(entity.trending_7d)

    def _publish(self, request, queryset, *, operation: str, done: str) -> None:
        entity_ids = list(queryset.order_by("pk").values_list("pk", flat=True))
        try:
            requests, outboxed = update_requests_publish(
                entity_ids=entity_ids, operation=operation, source=f"admin:{request.user.get_username()}"
            )
        except RuntimeError as error:
            self.message_user(request, f"Nothing was published: {error}", messages.ERROR)
            return
        via = f" ({outboxed} held in the outbox until Redis is back)" if outboxed else ""
        self.message_user(
            request,
            f"{done} {len(entity_ids)} entities: {requests} UpdateRequest(s) published{via}.",
            messages.SUCCESS,
        )

    @admin.action(description="Request refresh of the selected entities", permissions=["request_entity_update"])
    def request_refresh(self, request, queryset) -> None:
        self._publish(request, queryset, operation="refresh", done="Requested a refresh of")

    @admin.action(description="Reindex the selected entities", permissions=["request_entity_update"])
    def request_reindex(self, request, queryset) -> None:
        self._publish(request, queryset, operation="reindex", done="Requested reindexing of")

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

    def save_model(self, request, obj: Entity, form, change: bool) -> None:
        # updated_at tracks content changes only, so it moves when an editor changes content.
        if not change or form.changed_data:
            obj.updated_at = timezone.now()
        super().save_model(request, obj, form, change)


@admin.register(RefreshRequest)
class RefreshRequestAdmin(admin.ModelAdmin):
    list_display = ("entity", "requested_at", "source", "event_id")
    list_select_related = ("entity",)
    search_fields = ("entity__name", "source")
    readonly_fields = ("entity", "event_id", "source", "requested_at")
    date_hierarchy = "requested_at"

    def has_add_permission(self, request) -> bool:
        return False
