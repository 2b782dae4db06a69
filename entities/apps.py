from django.apps import AppConfig

from streams.events import entity_types_register


class EntitiesConfig(AppConfig):
    name = "entities"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from entities.models import EntityType  # models import only once the app registry is ready

        entity_types_register(EntityType.values)
