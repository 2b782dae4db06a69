"""Operators' HTTP API over the event pipeline: streams info, update requests, dead letters. Staff only."""

from __future__ import annotations

import redis
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from entities.models import Entity
from mandate_wizard.openapi import ERROR_RESPONSES
from mandate_wizard.pagination import int_param
from mandate_wizard.permissions import StaffOnly
from streams.events import MAX_ENTITY_IDS, OPERATIONS, UpdateRequest
from streams.publisher import update_request_publish
from streams.selectors import dead_letter_length, dead_letter_list, streams_info
from streams.services import dead_letters_replay

DEAD_LETTER_LIST_MAX = 1000


class RedisUnavailable(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "Redis is unreachable; try again shortly."
    default_code = "redis_unavailable"


class StaffOpsView(APIView):
    """Staff only, even when ANALYTICS_STAFF_ONLY opens analytics; a Redis outage is a 503, not a 500."""

    permission_classes = [StaffOnly]

    def handle_exception(self, exc):
        if isinstance(exc, redis.RedisError):
            exc = RedisUnavailable(f"Redis is unreachable ({type(exc).__name__}); try again shortly.")
        return super().handle_exception(exc)


class StreamsInfoView(StaffOpsView):
    @extend_schema(
        summary="Event pipeline state",
        description=(
            "For each stream: length, first and last entry ids, the worker group's consumers (name, pending,"
            " idle), pending total and lag (entries not yet delivered). Also the dead-letter length, the"
            " outbox backlog and the live workers from their heartbeats."
        ),
        responses={200: OpenApiResponse(description="Streams info"), **ERROR_RESPONSES},
    )
    def get(self, request: Request) -> Response:
        return Response(streams_info())


class UpdateRequestView(StaffOpsView):
    class InputSerializer(serializers.Serializer):
        entity_ids = serializers.ListField(
            child=serializers.UUIDField(), min_length=1, max_length=MAX_ENTITY_IDS, allow_empty=False
        )
        operation = serializers.ChoiceField(choices=OPERATIONS)
        source = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")

    class OutputSerializer(serializers.Serializer):
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
        request=InputSerializer,
        responses={
            202: OutputSerializer,
            503: OpenApiResponse(description="Redis and outbox both failed"),
            **ERROR_RESPONSES,
        },
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        entity_ids = list(dict.fromkeys(data["entity_ids"]))
        existing = set(Entity.objects.filter(id__in=entity_ids).values_list("id", flat=True))
        missing = [str(entity_id) for entity_id in entity_ids if entity_id not in existing]
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise ValidationError({"entity_ids": f"No entity has the id {', '.join(missing[:5])}{more}."})
        source = data["source"] or f"api:{request.user.get_username()}"
        update = UpdateRequest.new(entity_ids=entity_ids, operation=data["operation"], source=source)
        outcome = update_request_publish(request=update)
        if outcome.lost:
            raise RedisUnavailable("Neither Redis nor the outbox accepted the request; nothing was published.")
        body = {
            "event_id": update.event_id,
            "operation": update.operation,
            "entity_count": len(entity_ids),
            "delivery": "stream" if outcome.published else "outbox",
        }
        return Response(self.OutputSerializer(body).data, status=status.HTTP_202_ACCEPTED)


class DeadLetterListView(StaffOpsView):
    @extend_schema(
        summary="Dead-letter entries",
        description="The oldest entries first (replay order), each with its reason, source stream and fields.",
        parameters=[
            OpenApiParameter("limit", int, description=f"1 to {DEAD_LETTER_LIST_MAX}, default 100"),
        ],
        responses={200: OpenApiResponse(description="Dead-letter entries"), **ERROR_RESPONSES},
    )
    def get(self, request: Request) -> Response:
        limit = int_param(request, "limit", default=100, minimum=1, maximum=DEAD_LETTER_LIST_MAX)
        entries = dead_letter_list(limit=limit)
        return Response({"entries": entries, "count": len(entries), "total": dead_letter_length(), "limit": limit})


class DeadLetterReplayView(StaffOpsView):
    class InputSerializer(serializers.Serializer):
        ids = serializers.ListField(
            child=serializers.RegexField(r"^\d+-\d+$", max_length=41),
            required=False,
            allow_empty=False,
            max_length=10_000,
            help_text="Dead-letter entry ids to replay.",
        )
        all = serializers.BooleanField(required=False, default=False, help_text="Replay every dead-letter entry.")
        reason_contains = serializers.CharField(required=False, allow_blank=False, max_length=200)

        def validate(self, attrs):
            if bool(attrs.get("ids")) == bool(attrs.get("all")):
                raise ValidationError('Give either "ids" (a list of dead-letter entry ids) or "all": true.')
            return attrs

    @extend_schema(
        summary="Replay dead letters",
        description=(
            "Re-publishes the chosen (or all) dead-letter entries to their source stream with their original"
            " fields and removes them from the dead-letter stream. The event id is kept, so an event that was"
            " already counted is counted once; entries whose event id is already in the inbox are only removed."
        ),
        request=InputSerializer,
        responses={
            200: inline_serializer(
                name="DeadLetterReplay",
                fields={
                    "replayed": serializers.IntegerField(),
                    "already_counted": serializers.IntegerField(),
                    "not_found": serializers.ListField(child=serializers.CharField()),
                    "unknown_source": serializers.IntegerField(),
                },
            ),
            **ERROR_RESPONSES,
        },
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        outcome = dead_letters_replay(
            ids=None if data["all"] else data["ids"], reason_contains=data.get("reason_contains")
        )
        return Response(
            {
                "replayed": outcome.replayed,
                "already_counted": outcome.already_counted,
                "not_found": outcome.not_found,
                "unknown_source": outcome.unknown_source,
            }
        )
