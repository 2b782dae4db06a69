from django.apps import AppConfig
from django.conf import settings
from django.utils import timezone

from analytics.definitions import hour_floor
from streams.handlers import BatchHandler, Chore, batch_handler_register, chore_register

ALERT_EVALUATE_SECONDS = 60.0
ALERT_SEND_SECONDS = 5.0


class AnalyticsConfig(AppConfig):
    name = "analytics"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # analytics.demand imports the models, which load only once the app registry is ready.
        from analytics.alerts import alert_deliveries_send, alert_rules_evaluate
        from analytics.demand import (
            demand_totals_sync,
            demand_windows_roll,
            query_signal_batch_apply,
            query_signal_batch_prepare,
        )
        from analytics.services import QUESTION_ROLL_SETTLE, question_windows_roll, refresh_queue_snapshot_chore

        batch_handler_register(
            BatchHandler(
                stream_setting="STREAM_QUERY_SIGNALS",
                apply=query_signal_batch_apply,
                prepare=query_signal_batch_prepare,
            )
        )
        # Move the trending windows on as soon as an hour closes, so no reader has the roll to make up.
        chore_register(
            Chore(name="demand_windows_roll", run=demand_windows_roll, key=lambda: hour_floor(timezone.now()))
        )
        # The totals count stale candidates at STALE_MIN_DEMAND_SCORE; readers count them on their own
        # while the setting differs from the one the totals were built with.
        chore_register(Chore(name="demand_totals_sync", run=demand_totals_sync, interval=60.0))
        # Alerts: the rules are measured every minute between batches (a few reads); the messages are
        # POSTed from a thread of their own, so a receiver that hangs never holds up a batch.
        chore_register(Chore(name="alert_rules_evaluate", run=alert_rules_evaluate, interval=ALERT_EVALUATE_SECONDS))
        chore_register(
            Chore(name="alert_deliveries_send", run=alert_deliveries_send, interval=ALERT_SEND_SECONDS, thread=True)
        )
        # The refresh queue's snapshot, so the API pages it from an index (after the roll: same hour).
        chore_register(
            Chore(
                name="refresh_queue_snapshot",
                run=refresh_queue_snapshot_chore,
                interval=float(max(settings.REFRESH_QUEUE_SNAPSHOT_SECONDS, 1)),
            )
        )
        # The question reports read the windows of closed hours; roll them a settle time after an hour closes.
        chore_register(
            Chore(
                name="question_windows_roll",
                run=question_windows_roll,
                key=lambda: hour_floor(timezone.now() - QUESTION_ROLL_SETTLE),
            )
        )
