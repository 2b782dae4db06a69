"""Entity model: database constraints, type validation, and updated_at untouched by demand counters."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import F

from entities.models import Entity, EntityDemand, EntityEmbedding, EntityType
from tests.entities.factories import EntityFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("name", ["", "   ", "\t\n"])
def test_blank_name_is_rejected_by_the_database(name):
    with pytest.raises(IntegrityError), transaction.atomic():
        Entity.objects.create(name=name, entity_type=EntityType.PERSON)


def test_unknown_entity_type_is_rejected_by_the_database():
    with pytest.raises(IntegrityError), transaction.atomic():
        Entity.objects.create(name="Someone", entity_type="wizard")


def test_unknown_entity_type_fails_model_validation_naming_the_allowed_values():
    entity = Entity(name="Someone", entity_type="wizard")
    with pytest.raises(ValidationError) as error:
        entity.full_clean()
    message = str(error.value.message_dict["entity_type"])
    assert "wizard" in message and "is not a valid choice" in message


@pytest.mark.parametrize("field", ["demand_score", "query_count"])
def test_negative_counters_are_rejected_by_the_database(field):
    entity = EntityFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        EntityDemand.objects.filter(entity=entity).update(**{field: -1})


def test_defaults():
    entity = Entity.objects.create(name="New Person", entity_type=EntityType.PERSON)
    entity.refresh_from_db()
    assert entity.data == {}
    demand = entity.demand
    assert (demand.entity_type, demand.demand_score, demand.query_count) == (EntityType.PERSON, 0, 0)
    assert demand.first_queried_at is None and demand.last_queried_at is None
    assert not EntityEmbedding.objects.filter(entity=entity).exists()


def test_counter_updates_never_move_updated_at():
    entity = EntityFactory()
    before = Entity.objects.get(pk=entity.pk).updated_at
    EntityDemand.objects.filter(entity=entity).update(
        demand_score=F("demand_score") + 3, query_count=F("query_count") + 3
    )
    after = Entity.objects.select_related("demand").get(pk=entity.pk)
    assert after.demand.demand_score == 3
    assert after.updated_at == before


def test_full_text_document_covers_name_and_string_values_of_data():
    entity = EntityFactory(name="Chris Mansolillo", data={"mandate": {"overview": "elevated horror"}, "year": 2024})
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT search_vector @@ plainto_tsquery('english', %s), search_vector @@ plainto_tsquery('english', %s),"
            " search_vector @@ plainto_tsquery('english', '2024') FROM entities_entity WHERE id = %s",
            ["mansolillo", "horror", entity.pk],
        )
        assert cursor.fetchone() == (True, True, False)
