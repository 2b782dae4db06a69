from django.apps import AppConfig
from django.utils import timezone

from analytics.definitions import hour_floor
from streams.handlers import BatchHandler, Chore, batch_handler_register, chore_register


class AnalyticsConfig(AppConfig):
    name = "analytics"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # analytics.demand imports the models, which load only once the app registry is ready.
        from analytics.demand import (
            demand_totals_sync,
            demand_windows_roll,
            query_signal_batch_apply,
            query_signal_batch_prepare,
        )
        from analytics.services import QUESTION_ROLL_SETTLE, question_windows_roll

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
        # The question reports read the windows of closed hours; roll them a settle time after an hour closes.
        chore_register(
            Chore(
                name="question_windows_roll",
                run=question_windows_roll,
                key=lambda: hour_floor(timezone.now() - QUESTION_ROLL_SETTLE),
            )
        )
