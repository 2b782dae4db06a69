from django.apps import AppConfig
from django.conf import settings

from streams.events import entity_types_register
from streams.handlers import BatchHandler, Chore, batch_handler_register, chore_register


class EntitiesConfig(AppConfig):
    name = "entities"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Models and the modules that import them load only once the app registry is ready.
        from entities.models import EntityType
        from entities.services import answer_signals_reconcile, update_request_batch_apply

        entity_types_register(EntityType.values)
        batch_handler_register(BatchHandler(stream_setting="STREAM_UPDATE_REQUESTS", apply=update_request_batch_apply))
        # Signals of answers still uncounted ANSWER_RECONCILE_AFTER_SECONDS after they were sent (Redis lost
        # them) are re-sent from the answer records; twice per bound keeps the delay under 1.5 bounds. In a
        # thread of its own: its statements (an inbox probe per signal) run beside the batches, not between.
        chore_register(
            Chore(
                name="answer_signals_reconcile",
                run=answer_signals_reconcile,
                interval=settings.ANSWER_RECONCILE_AFTER_SECONDS / 2,
                thread=True,
            )
        )
