"""Read-only HTTP API over the entity store: `/api/entities/` and `/api/entities/<id>/`."""

from __future__ import annotations

from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import serializers, viewsets
from rest_framework.filters import SearchFilter

from entities.filters import EntityFilter, StrictOrderingFilter
from entities.models import Entity
from entities.selectors import DEMAND_COUNTERS, entity_get, entity_list
from kernel.openapi import ERROR_RESPONSES


class EntityOutputSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="entity-detail")
    # Flat, as before the counters moved to the entity's demand row.
    demand_score = serializers.IntegerField(source="demand.demand_score", read_only=True)
    query_count = serializers.IntegerField(source="demand.query_count", read_only=True)
    first_queried_at = serializers.DateTimeField(source="demand.first_queried_at", read_only=True, allow_null=True)
    last_queried_at = serializers.DateTimeField(source="demand.last_queried_at", read_only=True, allow_null=True)
    has_embedding = serializers.BooleanField(read_only=True, help_text="Whether the entity has a search vector.")

    class Meta:
        model = Entity
        fields = [
            "id",
            "url",
            "name",
            "entity_type",
            "data",
            "demand_score",
            "query_count",
            "first_queried_at",
            "last_queried_at",
            "created_at",
            "updated_at",
            "has_embedding",
        ]


@extend_schema_view(
    list=extend_schema(
        summary="List entities",
        description="Paginated; filter by `entity_type`, search by name with `search`, order by demand fields.",
        responses={200: EntityOutputSerializer(many=True), **ERROR_RESPONSES},
    ),
    retrieve=extend_schema(
        summary="One entity",
        parameters=[OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="Entity UUID")],
        responses={
            200: EntityOutputSerializer,
            400: OpenApiResponse(description="Malformed id"),
            404: OpenApiResponse(description="No entity has this id"),
            **ERROR_RESPONSES,
        },
    ),
)
class EntityViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = EntityOutputSerializer
    filter_backends = [DjangoFilterBackend, SearchFilter, StrictOrderingFilter]
    filterset_class = EntityFilter
    search_fields = ["name"]
    ordering_fields = ["demand_score", "query_count", "last_queried_at", "first_queried_at", "name", "updated_at"]
    # The public ordering names of the counters, and where they are (StrictOrderingFilter translates).
    ordering_sources = {name: f"demand__{name}" for name in DEMAND_COUNTERS}
    ordering = ["-demand_score", "-query_count", "name"]
    lookup_value_regex = "[^/]+"

    def get_queryset(self):
        return entity_list()

    def get_object(self) -> Entity:
        entity = entity_get(self.kwargs["pk"])
        self.check_object_permissions(self.request, entity)
        return entity
