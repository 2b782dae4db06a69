"""Operators' HTTP API over the event pipeline: streams info and dead letters. Staff only.

Publishing UpdateRequests (`POST /api/events/update-request`) is the entity store's: entities.apis.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from kernel.openapi import ERROR_RESPONSES
from kernel.pagination import int_param
from kernel.permissions import StaffOnly
from streams.redis import REDIS_ERRORS
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
        if isinstance(exc, REDIS_ERRORS):
            exc = RedisUnavailable(f"Redis is unreachable ({type(exc).__name__}); try again shortly.")
        return super().handle_exception(exc)


class ConsumerOutputSerializer(serializers.Serializer):
    name = serializers.CharField()
    pending = serializers.IntegerField(help_text="Entries delivered to this consumer and not yet acknowledged.")
    idle_ms = serializers.IntegerField(help_text="Milliseconds since this consumer last read.")


class GroupOutputSerializer(serializers.Serializer):
    name = serializers.CharField()
    exists = serializers.BooleanField()
    consumers = ConsumerOutputSerializer(many=True)
    pending = serializers.IntegerField(help_text="Delivered, not yet acknowledged.")
    lag = serializers.IntegerField(help_text="Entries not yet delivered to the group.")
    lag_exact = serializers.BooleanField(help_text="False when Redis could not report lag and it was counted, capped.")
    last_delivered_id = serializers.CharField(allow_null=True)


class StreamOutputSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="The Redis key: the stream, or one partition of it.")
    stream = serializers.CharField(help_text="The stream this key belongs to (its own name when unpartitioned).")
    partition = serializers.IntegerField(allow_null=True, help_text="The partition number; null when unpartitioned.")
    exists = serializers.BooleanField()
    length = serializers.IntegerField()
    first_entry_id = serializers.CharField(allow_null=True)
    last_entry_id = serializers.CharField(allow_null=True)
    group = GroupOutputSerializer()


class WorkerOutputSerializer(serializers.Serializer):
    consumer = serializers.CharField()
    started_at = serializers.CharField(allow_null=True)
    events_processed = serializers.IntegerField()
    last_batch_at = serializers.CharField(allow_null=True)
    pid = serializers.CharField(allow_null=True)
    host = serializers.CharField(allow_null=True)
    partitions = serializers.ListField(
        child=serializers.IntegerField(), help_text="Partitions this worker holds the lease of."
    )


class PartitionLeaseOutputSerializer(serializers.Serializer):
    partition = serializers.IntegerField()
    owner = serializers.CharField(allow_null=True, help_text="The worker holding the lease; null when free.")
    expires_in_ms = serializers.IntegerField(allow_null=True)


class StreamsInfoOutputSerializer(serializers.Serializer):
    streams = StreamOutputSerializer(many=True)
    totals = inline_serializer(
        name="StreamTotals",
        fields={
            "length": serializers.IntegerField(),
            "pending": serializers.IntegerField(),
            "lag": serializers.IntegerField(),
        },
    )
    dead_letter = inline_serializer(
        name="DeadLetterSize", fields={"name": serializers.CharField(), "length": serializers.IntegerField()}
    )
    outbox = inline_serializer(
        name="OutboxBacklog",
        fields={
            "backlog": serializers.IntegerField(),
            "by_stream": serializers.DictField(child=serializers.IntegerField()),
            "oldest_created_at": serializers.DateTimeField(allow_null=True),
        },
    )
    workers = WorkerOutputSerializer(many=True, help_text="Workers whose heartbeat has not expired.")
    partitions = inline_serializer(
        name="StreamPartitions",
        fields={
            "count": serializers.IntegerField(help_text="STREAM_PARTITIONS."),
            "leases": PartitionLeaseOutputSerializer(many=True),
        },
    )


class DeadLetterEntryOutputSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="Entry id in the dead-letter stream (use it to replay).")
    reason = serializers.CharField()
    source_stream = serializers.CharField()
    source_id = serializers.CharField()
    dead_at = serializers.CharField()
    deliveries = serializers.CharField()
    event_id = serializers.CharField()
    fields = serializers.DictField(child=serializers.CharField(), help_text="The original entry's fields.")


class DeadLetterListOutputSerializer(serializers.Serializer):
    entries = DeadLetterEntryOutputSerializer(many=True)
    count = serializers.IntegerField()
    total = serializers.IntegerField(help_text="Entries in the dead-letter stream.")
    limit = serializers.IntegerField()


class StreamsInfoView(StaffOpsView):
    @extend_schema(
        summary="Event pipeline state",
        description=(
            "For each stream key (each partition of a partitioned stream): length, first and last entry ids,"
            " the worker group's consumers (name, pending, idle), pending total and lag (entries not yet"
            " delivered); totals over all keys. Also the dead-letter length, the outbox backlog, the live"
            " workers from their heartbeats and, with STREAM_PARTITIONS > 1, each partition's lease holder."
        ),
        responses={
            200: StreamsInfoOutputSerializer,
            503: OpenApiResponse(description="Redis unreachable"),
            **ERROR_RESPONSES,
        },
    )
    def get(self, request: Request) -> Response:
        return Response(StreamsInfoOutputSerializer(streams_info()).data)


class DeadLetterListView(StaffOpsView):
    @extend_schema(
        summary="Dead-letter entries",
        description="The oldest entries first (replay order), each with its reason, source stream and fields.",
        parameters=[
            OpenApiParameter("limit", int, description=f"1 to {DEAD_LETTER_LIST_MAX}, default 100"),
        ],
        responses={200: DeadLetterListOutputSerializer, **ERROR_RESPONSES},
    )
    def get(self, request: Request) -> Response:
        limit = int_param(request, "limit", default=100, minimum=1, maximum=DEAD_LETTER_LIST_MAX)
        entries = dead_letter_list(limit=limit)
        data = {"entries": entries, "count": len(entries), "total": dead_letter_length(), "limit": limit}
        return Response(DeadLetterListOutputSerializer(data).data)


class DeadLetterReplayView(StaffOpsView):
    class DeadLetterReplayInputSerializer(serializers.Serializer):
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
        request=DeadLetterReplayInputSerializer,
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
        serializer = self.DeadLetterReplayInputSerializer(data=request.data)
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
