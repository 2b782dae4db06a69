"""Demand over time: hourly buckets of counted QuerySignals and the per-entity trending windows built on them."""

from __future__ import annotations

import pgtrigger
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import models
from django.db.models import F, Q
from django.db.models.expressions import RawSQL

from analytics.definitions import TIMEFRAME_HOURS, trend_score_sql
from entities.models import EntityDemand


class DemandBucket(models.Model):
    """How many distinct QuerySignal events named `entity` in the UTC hour starting at `hour`: as the subject
    (`count`) and in any role (`returned`).

    The stream worker inserts about one bucket per event, so the table keeps its writes few: the primary
    key is (entity, hour) itself (no surrogate id and its index), and the reference to the entity is not
    a database constraint (its per-row check cost the worker 12 % of a batch). The worker inserts
    buckets only for entities whose demand rows it holds locked, and deleting an entity through Django
    deletes its buckets (on_delete=CASCADE).
    """

    pk = models.CompositePrimaryKey("entity", "hour")
    entity = models.ForeignKey(
        "entities.Entity",
        on_delete=models.CASCADE,
        related_name="demand_buckets",
        db_index=False,  # the primary key (entity, hour) serves lookups by entity
        db_constraint=False,
    )
    hour = models.DateTimeField()
    # Subject signals: the demand (demand_score's history; trending windows and charts read it).
    count = models.BigIntegerField(default=0)
    # Every signal, subject or related (query_count's history).
    returned = models.BigIntegerField(default=0, db_default=0)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(count__gte=0), name="demand_bucket_count_gte_0"),
        ]
        indexes = [models.Index(fields=["hour", "entity"], name="demand_bucket_hour_entity")]

    def __str__(self) -> str:
        return f"{self.entity_id} {self.hour:%Y-%m-%d %H}:00 = {self.count}"


def _trend_score(timeframe: str) -> RawSQL:
    return RawSQL(trend_score_sql(current=f"current_{timeframe}", previous=f"previous_{timeframe}"), [])


def _window_constraints_and_indexes() -> tuple[list, list]:
    constraints, indexes = [], []
    for timeframe in TIMEFRAME_HOURS:
        constraints.append(
            models.CheckConstraint(
                condition=Q(**{f"current_{timeframe}__gte": 0, f"previous_{timeframe}__gte": 0}),
                name=f"demand_window_{timeframe}_gte_0",
            )
        )
        # Only rising entities can trend, so only they are indexed, in trending order.
        indexes.append(
            models.Index(
                F(f"trend_score_{timeframe}").desc(),
                F(f"current_{timeframe}").desc(),
                condition=Q(**{f"current_{timeframe}__gt": F(f"previous_{timeframe}")}),
                name=f"demand_window_rising_{timeframe}",
            )
        )
    return constraints, indexes


_WINDOW_CONSTRAINTS, _WINDOW_INDEXES = _window_constraints_and_indexes()


class DemandWindow(models.Model):
    """An entity's query counts in the current and previous window of each timeframe, without the open hour.

    Relative to `DemandWindowState.hour` (h0), see analytics.definitions: current_* holds the closed
    hours of the current window, (h0 - H, h0 - 1h], previous_* the whole previous window. Maintained by
    `demand_buckets_add` (late events) and `demand_windows_roll`; entities with nothing in any stored
    window have no row. trend_score_* (for the index) is over the stored counts.
    """

    entity = models.OneToOneField(
        "entities.Entity", on_delete=models.CASCADE, primary_key=True, related_name="demand_window"
    )
    current_1d = models.BigIntegerField(default=0)
    previous_1d = models.BigIntegerField(default=0)
    current_7d = models.BigIntegerField(default=0)
    previous_7d = models.BigIntegerField(default=0)
    current_30d = models.BigIntegerField(default=0)
    previous_30d = models.BigIntegerField(default=0)
    trend_score_1d = models.GeneratedField(
        expression=_trend_score("1d"), output_field=models.FloatField(), db_persist=True
    )
    trend_score_7d = models.GeneratedField(
        expression=_trend_score("7d"), output_field=models.FloatField(), db_persist=True
    )
    trend_score_30d = models.GeneratedField(
        expression=_trend_score("30d"), output_field=models.FloatField(), db_persist=True
    )

    class Meta:
        constraints = _WINDOW_CONSTRAINTS
        indexes = _WINDOW_INDEXES

    def __str__(self) -> str:
        return f"{self.entity_id} 7d {self.current_7d}/{self.previous_7d}"


class DemandWindowState(models.Model):
    """One row (id 1): the start of the UTC hour h0 that every DemandWindow row is relative to, and the
    demand_score threshold DemandTotal.stale_candidates counts with.

    Both are null until first built (`demand_windows_roll`, `demand_totals_rebuild`).
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    hour = models.DateTimeField(null=True, blank=True)
    stale_min_demand_score = models.BigIntegerField(null=True, blank=True)

    def __str__(self) -> str:
        return f"demand windows as of {self.hour}"


class DemandTotal(models.Model):
    """Per entity type (and shard), totals over the demand rows (one per entity), kept by triggers on
    entities_entitydemand; entity_type is the demand row's copy of the entity's type.

    A statement-level trigger adds each INSERT / UPDATE / DELETE's differences (transition tables),
    in the writer's transaction, to the row of its shard (backend pid % 16, so concurrent writers rarely
    wait for each other). `stale_candidates` counts entities with demand_score >=
    DemandWindowState.stale_min_demand_score. Read by summing the shards (`demand_stats`).
    """

    entity_type = models.CharField(max_length=32)
    shard = models.SmallIntegerField()
    entities = models.BigIntegerField(default=0)
    queries = models.BigIntegerField(default=0)
    with_demand = models.BigIntegerField(default=0)
    score_sum = models.BigIntegerField(default=0)
    stale_candidates = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["entity_type", "shard"], name="demand_total_type_shard")]

    def __str__(self) -> str:
        return f"{self.entity_type}/{self.shard}: {self.entities} entities, {self.queries} queries"


def _total_rows(table: str, sign: str) -> str:
    """One row of differences per changed demand row of a transition table (`sign` "-" for old rows)."""
    columns = (
        f"entity_type, {sign}1 AS entities, {sign}query_count AS queries,"
        f" {sign}(demand_score > 0)::int AS with_demand, {sign}demand_score AS score_sum,"
        f" {sign}coalesce(demand_score >= stale_min, false)::int AS stale_candidates"
    )
    return f"SELECT {columns} FROM {table}"  # noqa: S608 - built from constants only


def _totals_apply_func(deltas: str) -> str:
    """The trigger body: add the statement's differences to the writer's shard of each type's totals."""
    return f"""
    -- Lock first: a rebuild (EXCLUSIVE) then either ran before this statement's snapshot or waits for it.
    LOCK TABLE analytics_demandtotal IN ROW EXCLUSIVE MODE;
    SELECT stale_min_demand_score INTO stale_min FROM analytics_demandwindowstate WHERE id = 1;
    INSERT INTO analytics_demandtotal AS t
        (entity_type, shard, entities, queries, with_demand, score_sum, stale_candidates)
    SELECT entity_type, pg_backend_pid() % 16, sum(entities), sum(queries), sum(with_demand),
           sum(score_sum), sum(stale_candidates)
    FROM ({deltas}) AS d
    GROUP BY entity_type
    HAVING sum(entities) <> 0 OR sum(queries) <> 0 OR sum(with_demand) <> 0 OR sum(score_sum) <> 0
        OR sum(stale_candidates) <> 0
    ORDER BY entity_type
    ON CONFLICT (entity_type, shard) DO UPDATE SET
        entities = t.entities + EXCLUDED.entities,
        queries = t.queries + EXCLUDED.queries,
        with_demand = t.with_demand + EXCLUDED.with_demand,
        score_sum = t.score_sum + EXCLUDED.score_sum,
        stale_candidates = t.stale_candidates + EXCLUDED.stale_candidates;
    RETURN NULL;"""  # noqa: S608 - built from constants only


# DemandTotal follows the demand rows through statement-level triggers (transition tables) in the
# writer's own transaction. They sit on entities' EntityDemand table (so the migration that installs
# them is in entities/migrations) but are analytics' definition, declared here beside the totals.
_STALE_MIN = [("stale_min", "bigint")]
DEMAND_TOTALS_TRIGGERS = (
    pgtrigger.Trigger(
        name="demand_totals_insert",
        level=pgtrigger.Statement,
        when=pgtrigger.After,
        operation=pgtrigger.Insert,
        referencing=pgtrigger.Referencing(new="new_rows"),
        declare=_STALE_MIN,
        func=_totals_apply_func(_total_rows("new_rows", "")),
    ),
    pgtrigger.Trigger(
        name="demand_totals_update",
        level=pgtrigger.Statement,
        when=pgtrigger.After,
        operation=pgtrigger.Update,
        referencing=pgtrigger.Referencing(old="old_rows", new="new_rows"),
        declare=_STALE_MIN,
        func=_totals_apply_func(_total_rows("old_rows", "-") + " UNION ALL " + _total_rows("new_rows", "")),
    ),
    pgtrigger.Trigger(
        name="demand_totals_delete",
        level=pgtrigger.Statement,
        when=pgtrigger.After,
        operation=pgtrigger.Delete,
        referencing=pgtrigger.Referencing(old="old_rows"),
        declare=_STALE_MIN,
        func=_totals_apply_func(_total_rows("old_rows", "-")),
    ),
    pgtrigger.Trigger(
        name="demand_totals_truncate",
        level=pgtrigger.Statement,
        when=pgtrigger.After,
        operation=pgtrigger.Truncate,
        func="DELETE FROM analytics_demandtotal; RETURN NULL;",
    ),
)
pgtrigger.register(*DEMAND_TOTALS_TRIGGERS)(EntityDemand)


class RefreshQueueEntry(models.Model):
    """One entity of the refresh queue as scored by the last `refresh_queue_snapshot_build` (the worker's chore).

    Derived data: the queue's own statement, materialized every REFRESH_QUEUE_SNAPSHOT_SECONDS, so the
    API reads a page from an index instead of scoring every stale entity per request. A logged table on
    purpose: an unlogged one cannot be read on a hot standby, and a read replica may serve analytics.
    """

    entity_id = models.UUIDField(primary_key=True)
    entity_type = models.CharField(max_length=32)
    critical = models.BooleanField()
    priority = models.FloatField()
    demand_score = models.BigIntegerField()
    recent_demand = models.BigIntegerField()
    trend_score = models.FloatField()
    age_days = models.FloatField()

    class Meta:
        indexes = [
            models.Index(fields=["-critical", "-priority", "-demand_score", "entity_id"], name="refresh_queue_order"),
            models.Index(
                fields=["entity_type", "-critical", "-priority", "-demand_score", "entity_id"],
                name="refresh_queue_type_order",
            ),
        ]

    def __str__(self) -> str:
        return f"refresh queue: {self.entity_id} {self.priority:.3f}"


class RefreshQueueState(models.Model):
    """One row (id 1): when the refresh queue snapshot was scored, with which definition, and its size per
    (entity_type, critical) as [[entity_type, critical, count], ...] (a page's total without a count)."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    computed_at = models.DateTimeField()
    definition = models.JSONField()
    counts = models.JSONField(default=list)

    def __str__(self) -> str:
        return f"refresh queue scored at {self.computed_at}"


# -- alerts -------------------------------------------------------------------------------------------------


class AlertKind(models.TextChoices):
    """What a rule watches; analytics.selectors.alert_rule_observe measures each (docs/operations.md)."""

    DEMAND_SPIKE = "demand_spike", "Demand spike (per entity: trend score in the timeframe above the threshold)"
    CRITICAL_STALE = "critical_stale", "Critical stale (per entity: in the refresh queue's critical tier)"
    PIPELINE_LAG = "pipeline_lag", "Pipeline lag (entries waiting above the threshold, or the oldest older than age)"
    DEAD_LETTERS_GREW = "dead_letters_grew", "Dead letters grew (by more than the threshold since last clear)"
    NO_LIVE_WORKER = "no_live_worker", "No live worker (no stream worker heartbeat)"
    OUTBOX_BACKLOG = "outbox_backlog", "Outbox backlog (events waiting above the threshold, or older than age)"


# Webhooks are plain HTTP(S) URLs (never file:, ftp: or anything else urllib could open).
WEBHOOK_SCHEMES = ("http", "https")
# Rules that keep one state, and alert, per entity.
ALERT_PER_ENTITY_KINDS = frozenset({AlertKind.DEMAND_SPIKE, AlertKind.CRITICAL_STALE})


class AlertRule(models.Model):
    """A condition watched every minute; it alerts once when it becomes true (firing) and once when it
    clears (resolved), and not again within `cooldown_seconds` of its last firing.

    `threshold`, `age_seconds` and `timeframe` mean what the kind says (AlertKind). Deliveries go to
    `webhook_url`, else to the ALERT_WEBHOOK_URL setting; with neither, nothing is sent.
    """

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=32, choices=AlertKind.choices)
    enabled = models.BooleanField(default=True)
    threshold = models.FloatField(null=True, blank=True)
    age_seconds = models.PositiveIntegerField(null=True, blank=True)
    timeframe = models.CharField(
        max_length=8, blank=True, choices=[(timeframe, timeframe) for timeframe in TIMEFRAME_HOURS]
    )
    cooldown_seconds = models.PositiveIntegerField(default=3600)
    webhook_url = models.URLField(
        max_length=500,
        blank=True,
        validators=[URLValidator(schemes=WEBHOOK_SCHEMES)],
        help_text="Empty: the ALERT_WEBHOOK_URL setting.",
    )
    last_evaluated_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def per_entity(self) -> bool:
        return self.kind in ALERT_PER_ENTITY_KINDS

    def clean(self) -> None:
        needs = {
            AlertKind.DEMAND_SPIKE: ("threshold", "timeframe"),
            AlertKind.PIPELINE_LAG: ("threshold",),
            AlertKind.DEAD_LETTERS_GREW: ("threshold",),
            AlertKind.OUTBOX_BACKLOG: ("threshold",),
        }.get(self.kind, ())
        missing = {name: "This kind of rule needs it." for name in needs if getattr(self, name) in (None, "")}
        if missing:
            raise ValidationError(missing)


class AlertEvaluation(models.Model):
    """One row (id 1): when the rules were last evaluated, with or without any rule (the status endpoint)."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    evaluated_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"alerts evaluated at {self.evaluated_at}"


class AlertState(models.Model):
    """Where a rule stands, for one entity (per-entity rules) or as a whole (`entity` null).

    `firing` until the condition clears; `fired_at` is the last firing sent (the cooldown counts from
    it); `value` the value measured when it last fired or resolved; `baseline` what dead_letters_grew
    compares with (the count when last seen clear).
    """

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="states")
    entity = models.ForeignKey("entities.Entity", on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    firing = models.BooleanField(default=False)
    value = models.FloatField(null=True, blank=True)
    baseline = models.FloatField(null=True, blank=True)
    fired_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["rule", "entity"], name="alert_state_once", nulls_distinct=False),
        ]

    def __str__(self) -> str:
        return f"{self.rule_id} {self.entity_id or '-'} {'firing' if self.firing else 'clear'}"


class AlertDelivery(models.Model):
    """One alert message to one webhook: the outbox the sender reads and the delivery log the admin shows.

    Written by the evaluation in its transaction; sent later, outside the worker's counting loop.
    `pending` until a POST gets a 2xx (`sent`) or the attempts run out or the receiver refuses it for
    good (`failed`); `next_attempt_at` is when it may be tried (again).
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        SENT = "sent"
        FAILED = "failed"

    class State(models.TextChoices):
        FIRING = "firing"
        RESOLVED = "resolved"

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="deliveries")
    entity = models.ForeignKey("entities.Entity", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    state = models.CharField(max_length=8, choices=State.choices)
    url = models.URLField(max_length=500)
    payload = models.JSONField()
    created_at = models.DateTimeField()
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "alert deliveries"
        indexes = [
            models.Index(fields=["next_attempt_at"], condition=Q(status="pending"), name="alert_delivery_pending_due")
        ]

    def __str__(self) -> str:
        return f"{self.payload.get('text', '')} → {self.status}"


def _question_window_indexes() -> list:
    # Per timeframe, the questions in report order (count desc, question) for `top` and, apart, for `gaps`;
    # partial, so a timeframe's index holds only the questions asked in it.
    indexes = []
    for timeframe in TIMEFRAME_HOURS:
        for measure in ("asked", "gaps"):
            column = f"{measure}_{timeframe}"
            indexes.append(
                models.Index(
                    F(column).desc(),
                    "question",
                    condition=Q(**{f"{column}__gt": 0}),
                    name=f"question_window_{column}",
                )
            )
    return indexes


class QuestionWindow(models.Model):
    """Per normalized question, its answers in the closed hours of each timeframe's window.

    Relative to `QuestionWindowState.hour` R: the `*_1d` columns sum the answer records of [R - 23h, R),
    `*_7d` of [R - 167h, R), `*_30d` of [R - 719h, R) (`analytics.definitions.QUESTION_MEASURES`: answers,
    entities returned, gaps, entities returned by gaps, gaps that found nothing). Kept by
    `analytics.services.question_windows_roll` (the worker's chore); readers add the records since R.
    Questions with nothing in any window have no row.
    """

    question = models.TextField(primary_key=True)
    asked_1d = models.BigIntegerField(default=0)
    results_1d = models.BigIntegerField(default=0)
    gaps_1d = models.BigIntegerField(default=0)
    gap_results_1d = models.BigIntegerField(default=0)
    gap_empty_1d = models.BigIntegerField(default=0)
    asked_7d = models.BigIntegerField(default=0)
    results_7d = models.BigIntegerField(default=0)
    gaps_7d = models.BigIntegerField(default=0)
    gap_results_7d = models.BigIntegerField(default=0)
    gap_empty_7d = models.BigIntegerField(default=0)
    asked_30d = models.BigIntegerField(default=0)
    results_30d = models.BigIntegerField(default=0)
    gaps_30d = models.BigIntegerField(default=0)
    gap_results_30d = models.BigIntegerField(default=0)
    gap_empty_30d = models.BigIntegerField(default=0)

    class Meta:
        indexes = _question_window_indexes()

    def __str__(self) -> str:
        return f"{self.question[:60]} 7d {self.asked_7d}"


class QuestionAsker(models.Model):
    """Who asked a normalized question, and when last (in any answer, and in a gap) before the windows' hour.

    A question's distinct users in a timeframe are those whose last ask is inside it (plus the askers of the
    records since the windows' hour), so `users` reads at most one row per asker instead of every answer.
    Kept by `question_windows_roll` for the last 30 days. Deleting the user deletes their rows: the anonymised
    answers of deleted users are not counted in `users`.
    """

    id = models.BigAutoField(primary_key=True)
    question = models.TextField()
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    last_asked_at = models.DateTimeField()
    last_gap_asked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["question", "user"],
                include=["last_asked_at", "last_gap_asked_at"],
                name="question_asker_once",
            )
        ]
        indexes = [models.Index(fields=["last_asked_at"], name="question_asker_last_asked")]

    def __str__(self) -> str:
        return f"{self.user_id} asked {self.question[:60]}"


class QuestionWindowState(models.Model):
    """One row (id 1): the hour R every QuestionWindow and QuestionAsker row is relative to (records before R
    are in them). Null (no row) until the first roll."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    hour = models.DateTimeField()

    def __str__(self) -> str:
        return f"question windows as of {self.hour}"
