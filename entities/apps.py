from django.apps import AppConfig

from streams.events import entity_types_register
from streams.handlers import BatchHandler, batch_handler_register


class EntitiesConfig(AppConfig):
    name = "entities"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Models and the modules that import them load only once the app registry is ready.
        from entities.models import EntityType
        from entities.services import update_request_batch_apply

        entity_types_register(EntityType.values)
        batch_handler_register(BatchHandler(stream_setting="STREAM_UPDATE_REQUESTS", apply=update_request_batch_apply))
