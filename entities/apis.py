"""HTTP API of the entity store: `/api/entities/`, `/api/entities/<id>/` (read-only) and, for staff,
`POST /api/events/update-request` (publish refresh/reindex UpdateRequests for existing entities).
"""

from __future__ import annotations

from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import serializers, status, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.filters import SearchFilter
from rest_framework.request import Request
from rest_framework.response import Response

from entities.filters import EntityFilter, StrictOrderingFilter
from entities.models import Entity
from entities.selectors import DEMAND_COUNTERS, entity_get, entity_list
from kernel.openapi import ERROR_RESPONSES
from streams.apis import RedisUnavailable, StaffOpsView
from streams.events import MAX_ENTITY_IDS, OPERATIONS, SOURCE_MAX_LENGTH
from streams.publisher import update_requests_publish


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


class UpdateRequestView(StaffOpsView):
    class UpdateRequestInputSerializer(serializers.Serializer):
        entity_ids = serializers.ListField(
            child=serializers.UUIDField(), min_length=1, max_length=MAX_ENTITY_IDS, allow_empty=False
        )
        operation = serializers.ChoiceField(choices=OPERATIONS)
        source = serializers.CharField(max_length=SOURCE_MAX_LENGTH, required=False, allow_blank=True, default="")

    class UpdateRequestOutputSerializer(serializers.Serializer):
        event_id = serializers.UUIDField()
        operation = serializers.CharField()
        entity_count = serializers.IntegerField()
        delivery = serializers.ChoiceField(choices=["stream", "outbox"])

    @extend_schema(
        summary="Publish an UpdateRequest",
        description=(
            f"`refresh` records that the entities' content should be refreshed; `reindex` recomputes their search"
            f" data. 1 to {MAX_ENTITY_IDS} existing entity ids. Returns the event id of the published request."
        ),
        request=UpdateRequestInputSerializer,
        responses={
            202: UpdateRequestOutputSerializer,
            503: OpenApiResponse(description="Redis and outbox both failed"),
            **ERROR_RESPONSES,
        },
    )
    def post(self, request: Request) -> Response:
        serializer = self.UpdateRequestInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        entity_ids = list(dict.fromkeys(data["entity_ids"]))
        existing = set(Entity.objects.filter(id__in=entity_ids).values_list("id", flat=True))
        missing = [str(entity_id) for entity_id in entity_ids if entity_id not in existing]
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise ValidationError({"entity_ids": f"No entity has the id {', '.join(missing[:5])}{more}."})
        source = data["source"] or f"api:{request.user.get_username()}"
        outcome = update_requests_publish(entity_ids=entity_ids, operation=data["operation"], source=source)
        if outcome.lost:
            raise RedisUnavailable("Neither Redis nor the outbox accepted the request; nothing was published.")
        body = {
            "event_id": outcome.event_ids[0],  # at most MAX_ENTITY_IDS ids: one request
            "operation": data["operation"],
            "entity_count": len(entity_ids),
            "delivery": "outbox" if outcome.outboxed else "stream",
        }
        return Response(self.UpdateRequestOutputSerializer(body).data, status=status.HTTP_202_ACCEPTED)
