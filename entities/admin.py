"""Django admin for the entity store. Demand fields are read-only: only the worker changes them."""

from __future__ import annotations

from django.contrib import admin
from django.utils import timezone

from entities.models import Entity, RefreshRequest

DEMAND_FIELDS = ("demand_score", "query_count", "first_queried_at", "last_queried_at")


@admin.register(Entity)
class EntityAdmin(admin.ModelAdmin):
    list_display = ("name", "entity_type", "demand_score", "query_count", "last_queried_at", "updated_at")
    list_filter = ("entity_type",)
    search_fields = ("name",)
    ordering = ("-demand_score", "-query_count", "name")
    readonly_fields = ("id", "created_at", "updated_at", *DEMAND_FIELDS)
    fields = ("id", "name", "entity_type", "data", "created_at", "updated_at", *DEMAND_FIELDS)
    show_full_result_count = False
    list_per_page = 50

    def get_queryset(self, request):
        return super().get_queryset(request).defer("embedding", "search_vector")

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
