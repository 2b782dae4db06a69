"""Django admin of the entity store: entities (their demand counters read-only) and refresh requests.

The demand counters live on the entity's demand row (EntityDemand): the list reads them through one
join (list_select_related). The list's actions publish refresh/reindex UpdateRequests through
streams.publisher. Analytics extends this admin with demand (needs-update and trending columns and
filters, an entity's 30-day chart) in analytics/admin.py; nothing here knows those definitions.
"""

from __future__ import annotations

import json
from datetime import datetime

from django import forms
from django.contrib import admin, messages
from django.db.models import JSONField
from django.utils import timezone
from django.utils.html import format_html
from django_json_widget.widgets import JSONEditorWidget

from entities.models import DEMAND_ORDER, Entity, RefreshRequest
from entities.selectors import DEMAND_COUNTERS, HAS_DEMAND_ROW
from streams.publisher import update_requests_publish


class EntityDataWidget(JSONEditorWidget):
    """django-json-widget's editor; after a failed validation it shows the text as typed instead of crashing."""

    def format_value(self, value):
        try:
            return super().format_value(value)
        except json.JSONDecodeError:  # Django's JSONField hands back the invalid text (InvalidJSONInput)
            return value


class EntityAdmin(admin.ModelAdmin):
    list_display = ("name", "entity_type", "demand_score", "query_count", "last_queried_at", "updated_at")
    list_filter = ("entity_type",)
    search_fields = ("name",)
    list_select_related = ("demand",)
    ordering = DEMAND_ORDER
    readonly_fields = ("id", "created_at", "updated_at", *DEMAND_COUNTERS)
    fields = ("id", "name", "entity_type", "data", "created_at", "updated_at", *DEMAND_COUNTERS)
    show_full_result_count = False
    list_per_page = 50
    actions = ("request_refresh", "request_reindex")
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
        return super().get_queryset(request).filter(HAS_DEMAND_ROW).defer("search_vector")

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

    def _publish(self, request, queryset, *, operation: str, done: str) -> None:
        entity_ids = list(queryset.order_by("pk").values_list("pk", flat=True))
        outcome = update_requests_publish(
            entity_ids=entity_ids, operation=operation, source=f"admin:{request.user.get_username()}"
        )
        if outcome.lost:
            published = f" ({outcome.requests} request(s) went out before that)" if outcome.requests else ""
            self.message_user(
                request,
                f"Nothing was published: Neither Redis nor the outbox accepted the request.{published}",
                messages.ERROR,
            )
            return
        via = f" ({outcome.outboxed} held in the outbox until Redis is back)" if outcome.outboxed else ""
        self.message_user(
            request,
            f"{done} {len(entity_ids)} entities: {outcome.requests} UpdateRequest(s) published{via}.",
            messages.SUCCESS,
        )

    @admin.action(description="Request refresh of the selected entities", permissions=["request_entity_update"])
    def request_refresh(self, request, queryset) -> None:
        self._publish(request, queryset, operation="refresh", done="Requested a refresh of")

    @admin.action(description="Reindex the selected entities", permissions=["request_entity_update"])
    def request_reindex(self, request, queryset) -> None:
        self._publish(request, queryset, operation="reindex", done="Requested reindexing of")

    def save_model(self, request, obj: Entity, form, change: bool) -> None:
        # updated_at tracks content changes only, so it moves when an editor changes content.
        if not change or form.changed_data:
            obj.updated_at = timezone.now()
        super().save_model(request, obj, form, change)


admin.site.register(Entity, EntityAdmin)


class RefreshStatusFilter(admin.SimpleListFilter):
    """Open (the entity's content has not changed since the request) or done."""

    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return (("open", "Open"), ("done", "Done"))

    def queryset(self, request, queryset):
        if self.value() == "open":
            return queryset.filter(done_at__isnull=True)
        if self.value() == "done":
            return queryset.filter(done_at__isnull=False)
        return queryset


@admin.register(RefreshRequest)
class RefreshRequestAdmin(admin.ModelAdmin):
    list_display = ("entity", "requested_at", "status", "done_at", "time_to_refresh", "source", "event_id")
    list_filter = (RefreshStatusFilter, "source")
    list_select_related = ("entity",)
    search_fields = ("entity__name", "source")
    readonly_fields = ("entity", "event_id", "source", "requested_at", "done_at", "time_to_refresh")
    date_hierarchy = "requested_at"

    @admin.display(description="status", ordering="done_at")
    def status(self, request_row: RefreshRequest) -> str:
        return "open" if request_row.done_at is None else "done"

    @admin.display(description="time to refresh")
    def time_to_refresh(self, request_row: RefreshRequest) -> str:
        elapsed = request_row.time_to_refresh
        if elapsed is None:
            return "-"
        hours = elapsed.total_seconds() / 3600
        return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} h"

    def has_add_permission(self, request) -> bool:
        return False
