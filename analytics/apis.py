"""HTTP API of analytics: the demand reports under /api/analytics/demand/ (with the refresh queue and its
lifecycle) and /api/analytics/status/; thin views.

Every report reads inside `replica_reads()` (from the replica when DATABASE_REPLICA_URL is set), entered in
the handler, after authentication, permissions and throttles have read from the primary.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_serializer,
)
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from analytics.exports import CSV_FORMAT, CsvReportMixin, csv_report_responses
from analytics.selectors import (
    ENTITY_TYPES,
    INTERVALS,
    REFRESH_QUEUE_PAGE_MAX,
    TIMEFRAMES,
    analytics_status,
    demand_entity,
    demand_stale,
    demand_stats,
    demand_timeseries,
    demand_top,
    demand_trending,
    questions_gaps,
    questions_top,
    refresh_queue,
    refresh_stats,
)
from entities.selectors import entity_get
from kernel.openapi import ERROR_RESPONSES, ErrorSerializer
from kernel.pagination import int_param
from kernel.permissions import AnalyticsAccess
from kernel.replica import replica_reads
from streams.events import timestamp_encode

BIGINT_MAX = 2**63 - 1
NOT_FOUND = {404: OpenApiResponse(ErrorSerializer, description="No entity has this id")}


class UtcDateTimeField(serializers.DateTimeField):
    """DRF's DateTimeField text for the database's UTC datetimes, without its per-value time zone lookups."""

    def to_representation(self, value):
        if value is None:
            return None
        return timestamp_encode(value)


class IntParam:
    """An integer query parameter: its range is validated (int_param) and documented from one place."""

    def __init__(self, name: str, *, default: int, minimum: int, maximum: int, description: str):
        self.name, self.default, self.minimum, self.maximum = name, default, minimum, maximum
        self.description = description

    def read(self, request) -> int:
        return int_param(request, self.name, default=self.default, minimum=self.minimum, maximum=self.maximum)

    def openapi(self) -> OpenApiParameter:
        schema = {"type": "integer", "minimum": self.minimum, "maximum": self.maximum, "default": self.default}
        return OpenApiParameter(self.name, schema, OpenApiParameter.QUERY, description=self.description)


class ChoiceParam:
    """A query parameter with a fixed set of values; anything else is a 400 that lists them."""

    def __init__(self, name: str, *, choices: tuple[str, ...], default: str | None, description: str):
        self.name, self.choices, self.default, self.description = name, choices, default, description

    def read(self, request) -> str | None:
        raw = request.query_params.get(self.name)
        if raw is None or raw == "":
            return self.default
        if raw not in self.choices:
            allowed = ", ".join(self.choices)
            raise ValidationError({self.name: f"'{raw}' is not valid: {self.name} must be one of {allowed}."})
        return raw

    def openapi(self) -> OpenApiParameter:
        return OpenApiParameter(
            self.name, str, OpenApiParameter.QUERY, enum=list(self.choices), default=self.default,
            description=self.description,
        )  # fmt: skip


ENTITY_ID = OpenApiParameter("entity_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="Entity UUID")

TOP_LIMIT = IntParam("limit", default=10, minimum=1, maximum=100, description="How many entities (1-100).")
TOP_OFFSET = IntParam("offset", default=0, minimum=0, maximum=10_000, description="How many to skip (0-10000).")
TOP_MIN_SCORE = IntParam(
    "min_score", default=0, minimum=0, maximum=BIGINT_MAX, description="Only entities with demand_score >= this."
)
TOP_ENTITY_TYPE = ChoiceParam("entity_type", choices=ENTITY_TYPES, default=None, description="Only this type.")

TRENDING_TIMEFRAME = ChoiceParam(
    "timeframe", choices=TIMEFRAMES, default="7d", description="Window length: 24, 168 or 720 hours."
)
TRENDING_LIMIT = IntParam("limit", default=10, minimum=1, maximum=50, description="How many entities (1-50).")

STALE_LIMIT = IntParam("limit", default=10, minimum=1, maximum=100, description="How many entities (1-100).")
STALE_MIN_SCORE = IntParam(
    "min_demand_score", default=5, minimum=0, maximum=BIGINT_MAX, description="Stale when demand_score >= this."
)
STALE_DAYS = IntParam(
    "days_since_update",
    default=30,
    minimum=0,
    maximum=36_500,
    description="Stale when updated_at is older than this many days (0-36500).",
)

TIMESERIES_DAYS = IntParam("days", default=30, minimum=1, maximum=90, description="How many days back (1-90).")
TIMESERIES_INTERVAL = ChoiceParam("interval", choices=INTERVALS, default="day", description="Bucket size.")


class DemandStatsApi(APIView):
    """Totals of demand over every entity."""

    permission_classes = [AnalyticsAccess]

    @extend_schema_serializer(component_name="DemandStats")
    class OutputSerializer(serializers.Serializer):
        @extend_schema_serializer(component_name="DemandStatsEntityType")
        class EntityTypeSerializer(serializers.Serializer):
            type = serializers.CharField()
            count = serializers.IntegerField()
            avg_score = serializers.FloatField()

        total_entities = serializers.IntegerField()
        total_queries = serializers.IntegerField(help_text="Sum of query_count.")
        entities_with_demand = serializers.IntegerField(help_text="Entities with demand_score > 0.")
        avg_demand_score = serializers.FloatField(help_text="Over entities with demand, 1 decimal; 0 when none.")
        trending_entities = serializers.IntegerField(help_text="Entities trending over 7d.")
        needs_update = serializers.IntegerField(help_text="Stale entities with the default criteria.")
        top_entity_types = EntityTypeSerializer(many=True, help_text="Over entities with demand, by count.")

    @extend_schema(summary="Demand totals", responses={200: OutputSerializer, **ERROR_RESPONSES})
    @replica_reads()
    def get(self, request):
        return Response(self.OutputSerializer(demand_stats()).data)


class DemandTopApi(CsvReportMixin, APIView):
    """Entities with the most demand."""

    permission_classes = [AnalyticsAccess]
    csv_rows = "entities"

    @extend_schema_serializer(component_name="DemandTop")
    class OutputSerializer(serializers.Serializer):
        @extend_schema_serializer(component_name="DemandTopEntity")
        class EntitySerializer(serializers.Serializer):
            id = serializers.UUIDField()
            name = serializers.CharField()
            entity_type = serializers.CharField()
            demand_score = serializers.IntegerField()
            query_count = serializers.IntegerField()
            last_queried_at = UtcDateTimeField(allow_null=True)
            last_updated_at = UtcDateTimeField()
            needs_update = serializers.BooleanField()

        entities = EntitySerializer(many=True)
        total = serializers.IntegerField(help_text="Items in this response.")
        limit = serializers.IntegerField()
        offset = serializers.IntegerField()

    @extend_schema(
        summary="Top entities by demand",
        description="Ordered by demand_score desc, then query_count desc, then name.",
        parameters=[
            TOP_LIMIT.openapi(),
            TOP_OFFSET.openapi(),
            TOP_MIN_SCORE.openapi(),
            TOP_ENTITY_TYPE.openapi(),
            CSV_FORMAT,
        ],
        responses=csv_report_responses(OutputSerializer),
    )
    @replica_reads()
    def get(self, request):
        limit, offset = TOP_LIMIT.read(request), TOP_OFFSET.read(request)
        entities = demand_top(
            limit=limit,
            offset=offset,
            entity_type=TOP_ENTITY_TYPE.read(request),
            min_score=TOP_MIN_SCORE.read(request),
        )
        data = {"entities": entities, "total": len(entities), "limit": limit, "offset": offset}
        return Response(self.OutputSerializer(data).data)


class DemandTrendingApi(CsvReportMixin, APIView):
    """Entities whose demand rises: current window vs. the previous one of the same length."""

    permission_classes = [AnalyticsAccess]
    csv_rows = "trending"

    @extend_schema_serializer(component_name="DemandTrending")
    class OutputSerializer(serializers.Serializer):
        @extend_schema_serializer(component_name="DemandTrendingEntity")
        class EntitySerializer(serializers.Serializer):
            id = serializers.UUIDField()
            name = serializers.CharField()
            entity_type = serializers.CharField()
            current_period_queries = serializers.IntegerField()
            previous_period_queries = serializers.IntegerField()
            growth_rate = serializers.FloatField(allow_null=True, help_text="Null when previous is 0.")
            trend_score = serializers.FloatField(help_text="(current - previous) / sqrt(previous + 1).")
            demand_score = serializers.IntegerField()
            last_queried_at = UtcDateTimeField(allow_null=True)

        trending = EntitySerializer(many=True)
        total = serializers.IntegerField(help_text="Items in this response.")
        timeframe = serializers.ChoiceField(choices=TIMEFRAMES)
        limit = serializers.IntegerField()

    @extend_schema(
        summary="Trending entities",
        description=(
            "Windows are whole UTC hours: with h0 the current hour and H the timeframe in hours, current = "
            "[h0-(H-1)h, h0], previous = [h0-(2H-1)h, h0-Hh]. Trending: current >= TRENDING_MIN_QUERIES and "
            "current > previous; ordered by trend_score desc, current desc, name."
        ),
        parameters=[TRENDING_TIMEFRAME.openapi(), TRENDING_LIMIT.openapi(), CSV_FORMAT],
        responses=csv_report_responses(OutputSerializer),
    )
    @replica_reads()
    def get(self, request):
        timeframe, limit = TRENDING_TIMEFRAME.read(request), TRENDING_LIMIT.read(request)
        trending = demand_trending(timeframe=timeframe, limit=limit)
        data = {"trending": trending, "total": len(trending), "timeframe": timeframe, "limit": limit}
        return Response(self.OutputSerializer(data).data)


class DemandStaleApi(CsvReportMixin, APIView):
    """Entities in demand whose content is old: the data team's refresh list."""

    permission_classes = [AnalyticsAccess]
    csv_rows = "stale_entities"

    @extend_schema_serializer(component_name="DemandStale")
    class OutputSerializer(serializers.Serializer):
        @extend_schema_serializer(component_name="DemandStaleEntity")
        class EntitySerializer(serializers.Serializer):
            id = serializers.UUIDField()
            name = serializers.CharField()
            entity_type = serializers.CharField()
            demand_score = serializers.IntegerField()
            query_count = serializers.IntegerField()
            last_queried_at = UtcDateTimeField(allow_null=True)
            last_updated_at = UtcDateTimeField()
            days_since_update = serializers.IntegerField()
            refresh_requested_at = UtcDateTimeField(allow_null=True)

        @extend_schema_serializer(component_name="DemandStaleCriteria")
        class CriteriaSerializer(serializers.Serializer):
            min_demand_score = serializers.IntegerField()
            days_since_update = serializers.IntegerField()

        stale_entities = EntitySerializer(many=True)
        total = serializers.IntegerField(help_text="Items in this response.")
        criteria = CriteriaSerializer()

    @extend_schema(
        summary="Stale entities",
        description="demand_score >= min_demand_score and updated_at older than days_since_update days; "
        "ordered by demand_score desc (then query_count desc, name).",
        parameters=[STALE_LIMIT.openapi(), STALE_MIN_SCORE.openapi(), STALE_DAYS.openapi(), CSV_FORMAT],
        responses=csv_report_responses(OutputSerializer),
    )
    @replica_reads()
    def get(self, request):
        criteria = {"min_demand_score": STALE_MIN_SCORE.read(request), "days_since_update": STALE_DAYS.read(request)}
        stale = demand_stale(limit=STALE_LIMIT.read(request), **criteria)
        data = {"stale_entities": stale, "total": len(stale), "criteria": criteria}
        return Response(self.OutputSerializer(data).data)


REFRESH_QUEUE_LIMIT = IntParam(
    "limit", default=50, minimum=1, maximum=REFRESH_QUEUE_PAGE_MAX, description="How many entities (1-500)."
)
REFRESH_QUEUE_ENTITY_TYPE = ChoiceParam(
    "entity_type", choices=ENTITY_TYPES, default=None, description="Only this type."
)
REFRESH_QUEUE_CRITICAL = ChoiceParam(
    "critical",
    choices=("true", "false"),
    default=None,
    description="true: only the critical tier; false: only the rest; absent: both.",
)
REFRESH_STATS_TIMEFRAME = ChoiceParam(
    "timeframe",
    choices=TIMEFRAMES,
    default="7d",
    description="Requests done and answers asked in the last 24, 168 or 720 hours.",
)


class RefreshQueueApi(CsvReportMixin, APIView):
    """The refresh queue: stale entities by refresh priority (demand, staleness, trend), critical tier first."""

    permission_classes = [AnalyticsAccess]
    csv_rows = "entities"

    @extend_schema_serializer(component_name="RefreshQueue")
    class OutputSerializer(serializers.Serializer):
        @extend_schema_serializer(component_name="RefreshQueueEntity")
        class EntitySerializer(serializers.Serializer):
            id = serializers.UUIDField()
            name = serializers.CharField()
            entity_type = serializers.CharField()
            priority = serializers.FloatField(help_text="0-1: the weighted sum of demand, freshness and trending.")
            critical = serializers.BooleanField(help_text="recent_demand >= critical_min_demand and old enough.")
            demand_score = serializers.IntegerField()
            recent_demand = serializers.IntegerField(help_text="Queries in the current demand_timeframe window.")
            days_since_update = serializers.IntegerField()
            trend_score = serializers.FloatField(help_text="Over trend_timeframe.")
            last_updated_at = UtcDateTimeField()
            refresh_requested_at = UtcDateTimeField(
                allow_null=True, help_text="Latest open refresh request younger than requested_hours; null: new work."
            )

        @extend_schema_serializer(component_name="RefreshQueueDefinition")
        class DefinitionSerializer(serializers.Serializer):
            weight_demand = serializers.FloatField()
            weight_freshness = serializers.FloatField()
            weight_trend = serializers.FloatField()
            demand_timeframe = serializers.CharField()
            demand_saturation = serializers.IntegerField()
            freshness_saturation_days = serializers.FloatField()
            trend_timeframe = serializers.CharField()
            trend_saturation = serializers.FloatField()
            stale_min_demand_score = serializers.IntegerField()
            stale_days_since_update = serializers.IntegerField()
            critical_min_demand = serializers.IntegerField()
            critical_days_since_update = serializers.IntegerField()
            requested_hours = serializers.IntegerField()

        entities = EntitySerializer(many=True)
        total = serializers.IntegerField(help_text="Entities in the queue with these filters (all pages).")
        limit = serializers.IntegerField()
        definition = DefinitionSerializer(help_text="The weights and thresholds in force.")
        as_of = UtcDateTimeField(
            help_text="When the priorities were scored: now, or the worker's snapshot (at most two "
            "REFRESH_QUEUE_SNAPSHOT_SECONDS old)."
        )

    @extend_schema(
        summary="Refresh queue",
        description=(
            "The stale entities (demand_score >= STALE_MIN_DEMAND_SCORE, updated_at older than "
            "STALE_DAYS_SINCE_UPDATE days), by priority = weight_demand * min(1, ln(1 + recent) / ln(1 + "
            "demand_saturation)) + weight_freshness * min(1, max(0, age_days - stale_days) / "
            "freshness_saturation_days) + weight_trend * min(1, max(0, trend_score) / trend_saturation); the "
            "critical tier (recent >= critical_min_demand and age >= critical_days_since_update) first, then "
            "priority desc, demand_score desc, entity id."
        ),
        parameters=[
            REFRESH_QUEUE_LIMIT.openapi(),
            REFRESH_QUEUE_ENTITY_TYPE.openapi(),
            REFRESH_QUEUE_CRITICAL.openapi(),
            CSV_FORMAT,
        ],
        responses=csv_report_responses(OutputSerializer),
    )
    @replica_reads()
    def get(self, request):
        critical = REFRESH_QUEUE_CRITICAL.read(request)
        queue = refresh_queue(
            limit=REFRESH_QUEUE_LIMIT.read(request),
            entity_type=REFRESH_QUEUE_ENTITY_TYPE.read(request),
            critical=None if critical is None else critical == "true",
        )
        return Response(self.OutputSerializer(queue).data)


class RefreshStatsApi(CsvReportMixin, APIView):
    """The refresh lifecycle: open requests, requests done and how long they took, and the stale-answer rate."""

    permission_classes = [AnalyticsAccess]
    csv_rows = None  # one row

    @extend_schema_serializer(component_name="RefreshStats")
    class OutputSerializer(serializers.Serializer):
        timeframe = serializers.ChoiceField(choices=TIMEFRAMES)
        open = serializers.IntegerField(help_text="Refresh requests not done (the entity has not changed since).")
        open_overdue = serializers.IntegerField(help_text="Open requests older than REFRESH_REQUEST_REPEAT_HOURS.")
        done = serializers.IntegerField(help_text="Requests done (the entity's content changed) in the timeframe.")
        time_to_refresh_median_seconds = serializers.FloatField(
            allow_null=True, help_text="Median of done_at - requested_at over those; null when none."
        )
        time_to_refresh_p90_seconds = serializers.FloatField(allow_null=True, help_text="90th percentile (linear).")
        answers = serializers.IntegerField(help_text="Answers asked in the timeframe.")
        stale_answers = serializers.IntegerField(
            help_text="Of those, answers that returned a subject entity whose content was, when answered, older "
            "than stale_days_since_update days."
        )
        stale_answer_rate = serializers.FloatField(allow_null=True, help_text="stale_answers / answers; null: none.")
        stale_days_since_update = serializers.IntegerField(help_text="The stale threshold (STALE_DAYS_SINCE_UPDATE).")

    @extend_schema(
        summary="Refresh lifecycle and stale-answer rate",
        parameters=[REFRESH_STATS_TIMEFRAME.openapi(), CSV_FORMAT],
        responses=csv_report_responses(OutputSerializer),
    )
    @replica_reads()
    def get(self, request):
        return Response(self.OutputSerializer(refresh_stats(timeframe=REFRESH_STATS_TIMEFRAME.read(request))).data)


@extend_schema_serializer(component_name="DemandWindow")
class WindowSerializer(serializers.Serializer):
    current_period_queries = serializers.IntegerField()
    previous_period_queries = serializers.IntegerField()
    growth_rate = serializers.FloatField(allow_null=True)
    trend_score = serializers.FloatField()
    trending = serializers.BooleanField()


@extend_schema_serializer(component_name="DemandEntityQuestion")
class EntityQuestionSerializer(serializers.Serializer):
    question = serializers.CharField(help_text="Normalized (entities.questions.question_normalize).")
    count = serializers.IntegerField()


class DemandEntityApi(APIView):
    """One entity's demand."""

    permission_classes = [AnalyticsAccess]

    @extend_schema_serializer(component_name="DemandEntity")
    class OutputSerializer(serializers.Serializer):
        @extend_schema_serializer(component_name="DemandEntityDetail")
        class EntitySerializer(serializers.Serializer):
            id = serializers.UUIDField()
            name = serializers.CharField()
            entity_type = serializers.CharField()
            demand_score = serializers.IntegerField()
            query_count = serializers.IntegerField()
            first_queried_at = UtcDateTimeField(allow_null=True, help_text="Earliest event counted.")
            last_queried_at = UtcDateTimeField(allow_null=True)
            query_frequency = serializers.ChoiceField(choices=["never", "low", "medium", "high", "very_high"])
            trending = serializers.BooleanField(help_text="Trending over 7d.")
            last_updated_at = UtcDateTimeField()
            needs_update = serializers.BooleanField()
            current_period_queries = serializers.IntegerField(help_text="7d current window.")
            previous_period_queries = serializers.IntegerField(help_text="7d previous window.")
            growth_rate = serializers.FloatField(allow_null=True, help_text="7d; null when previous is 0.")
            trend_score = serializers.FloatField(help_text="7d.")
            windows = serializers.DictField(child=WindowSerializer(), help_text="Per timeframe: 1d, 7d, 30d.")
            top_questions = EntityQuestionSerializer(
                many=True, help_text="The normalized questions whose answers returned it most, last 30 days."
            )

        entity = EntitySerializer()

    @extend_schema(
        summary="One entity's demand",
        parameters=[ENTITY_ID],
        responses={200: OutputSerializer, **ERROR_RESPONSES, **NOT_FOUND},
    )
    @replica_reads()
    def get(self, request, entity_id: str):
        entity = entity_get(entity_id)
        return Response(self.OutputSerializer({"entity": demand_entity(entity=entity)}).data)


@extend_schema_serializer(component_name="DemandTimeseriesPoint")
class PointSerializer(serializers.Serializer):
    start = UtcDateTimeField(help_text="Start of the UTC day or hour.")
    count = serializers.IntegerField()


@extend_schema_field(PointSerializer(many=True))
class PointsField(serializers.Field):
    """A series' points, written without a serializer per point (90 days by hour is 2,160 of them)."""

    def to_representation(self, points):
        start = UtcDateTimeField().to_representation
        return [{"start": start(p["start"]), "count": p["count"]} for p in points]


class DemandTimeseriesApi(APIView):
    """One entity's queries per UTC day or hour, zeros included, for charts."""

    permission_classes = [AnalyticsAccess]

    @extend_schema_serializer(component_name="DemandTimeseries")
    class OutputSerializer(serializers.Serializer):
        entity_id = serializers.UUIDField()
        interval = serializers.ChoiceField(choices=INTERVALS)
        days = serializers.IntegerField()
        start = UtcDateTimeField(help_text="Start of the first bucket.")
        end = UtcDateTimeField(help_text="End (exclusive) of the last bucket, the current day or hour.")
        total_queries = serializers.IntegerField()
        timeseries = PointsField()

    @extend_schema(
        summary="One entity's demand over time",
        parameters=[ENTITY_ID, TIMESERIES_DAYS.openapi(), TIMESERIES_INTERVAL.openapi()],
        responses={200: OutputSerializer, **ERROR_RESPONSES, **NOT_FOUND},
    )
    @replica_reads()
    def get(self, request, entity_id: str):
        entity = entity_get(entity_id)
        days, interval = TIMESERIES_DAYS.read(request), TIMESERIES_INTERVAL.read(request)
        series = demand_timeseries(entity_id=entity.pk, days=days, interval=interval)
        return Response(self.OutputSerializer(series).data)


QUESTIONS_TIMEFRAME = ChoiceParam(
    "timeframe",
    choices=TIMEFRAMES,
    default="7d",
    description="Questions asked in the current UTC hour and the 23, 167 or 719 before it (the trending windows).",
)
QUESTIONS_LIMIT = IntParam("limit", default=10, minimum=1, maximum=100, description="How many questions (1-100).")


class QuestionSerializer(serializers.Serializer):
    question = serializers.CharField(help_text="Normalized: case, whitespace and punctuation folded away.")
    count = serializers.IntegerField(help_text="Answers to it in the timeframe.")
    users = serializers.IntegerField(help_text="Distinct users who asked it (deleted users' answers not counted).")
    example = serializers.CharField(help_text="One wording as asked: the latest answer's.")
    avg_results = serializers.FloatField(help_text="Mean number of entities its answers returned, 2 decimals.")
    last_asked_at = UtcDateTimeField(help_text="When the latest answer to it was asked.")


class QuestionsTopApi(CsvReportMixin, APIView):
    """The questions asked most, from the answer records."""

    permission_classes = [AnalyticsAccess]
    csv_rows = "questions"

    @extend_schema_serializer(component_name="QuestionsTop")
    class OutputSerializer(serializers.Serializer):
        @extend_schema_serializer(component_name="QuestionsTopQuestion")
        class ItemSerializer(QuestionSerializer):
            pass

        questions = ItemSerializer(many=True)
        total = serializers.IntegerField(help_text="Items in this response.")
        timeframe = serializers.ChoiceField(choices=TIMEFRAMES)
        limit = serializers.IntegerField()

    @extend_schema(
        summary="Top questions",
        description="Normalized questions by how often they were asked in the timeframe (ties by question).",
        parameters=[QUESTIONS_TIMEFRAME.openapi(), QUESTIONS_LIMIT.openapi(), CSV_FORMAT],
        responses=csv_report_responses(OutputSerializer),
    )
    @replica_reads()
    def get(self, request):
        timeframe, limit = QUESTIONS_TIMEFRAME.read(request), QUESTIONS_LIMIT.read(request)
        questions = questions_top(timeframe=timeframe, limit=limit)
        data = {"questions": questions, "total": len(questions), "timeframe": timeframe, "limit": limit}
        return Response(self.OutputSerializer(data).data)


class QuestionsGapsApi(CsvReportMixin, APIView):
    """Content gaps: the questions whose answers found nothing the question was about."""

    permission_classes = [AnalyticsAccess]
    csv_rows = "questions"

    @extend_schema_serializer(component_name="QuestionsGaps")
    class OutputSerializer(serializers.Serializer):
        @extend_schema_serializer(component_name="QuestionsGapsQuestion")
        class ItemSerializer(QuestionSerializer):
            low_confidence = serializers.BooleanField(
                help_text="True when every answer returned entities, none of them a subject (only related)."
            )

        questions = ItemSerializer(many=True)
        total = serializers.IntegerField(help_text="Items in this response.")
        timeframe = serializers.ChoiceField(choices=TIMEFRAMES)
        limit = serializers.IntegerField()

    @extend_schema(
        summary="Content gaps",
        description=(
            "Normalized questions whose answers had no subject — no entity at all, or (low_confidence) only "
            "related ones — by how often they were asked in the timeframe."
        ),
        parameters=[QUESTIONS_TIMEFRAME.openapi(), QUESTIONS_LIMIT.openapi(), CSV_FORMAT],
        responses=csv_report_responses(OutputSerializer),
    )
    @replica_reads()
    def get(self, request):
        timeframe, limit = QUESTIONS_TIMEFRAME.read(request), QUESTIONS_LIMIT.read(request)
        questions = questions_gaps(timeframe=timeframe, limit=limit)
        data = {"questions": questions, "total": len(questions), "timeframe": timeframe, "limit": limit}
        return Response(self.OutputSerializer(data).data)


class AnalyticsStatusApi(APIView):
    """How fresh the analytics are: the newest question counted, what waits in the stream, live workers."""

    permission_classes = [AnalyticsAccess]

    @extend_schema_serializer(component_name="AnalyticsStatus")
    class OutputSerializer(serializers.Serializer):
        last_counted_event_at = UtcDateTimeField(
            allow_null=True, help_text="Time of the newest question the counters include (max last_queried_at)."
        )
        entries_waiting = serializers.IntegerField(
            help_text="QuerySignal entries not yet counted: entries_undelivered + entries_pending."
        )
        entries_undelivered = serializers.IntegerField(help_text="Not yet delivered to the worker group (lag).")
        entries_pending = serializers.IntegerField(help_text="Delivered to a worker, not yet acknowledged.")
        oldest_waiting_age_seconds = serializers.FloatField(
            allow_null=True, help_text="Age of the oldest waiting entry, on Redis's clock; null when none waits."
        )
        live_workers = serializers.IntegerField(help_text="Workers whose heartbeat has not expired.")
        last_alert_evaluation = UtcDateTimeField(
            allow_null=True, help_text="When the alert rules were last evaluated (worker or check_alerts); null: never."
        )

    @extend_schema(
        summary="Analytics freshness",
        responses={
            200: OutputSerializer,
            **ERROR_RESPONSES,
            503: OpenApiResponse(ErrorSerializer, description="Redis or PostgreSQL unreachable (Retry-After)"),
        },
    )
    @replica_reads()
    def get(self, request):
        return Response(self.OutputSerializer(analytics_status()).data)
