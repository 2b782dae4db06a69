"""EntityDemand: the demand row the database keeps beside every entity, and the per-type totals over it."""

from __future__ import annotations

import uuid
from collections import defaultdict

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from analytics.definitions import hour_floor
from analytics.demand import demand_buckets_add, demand_totals_rebuild
from analytics.models import DemandBucket, DemandTotal
from analytics.selectors import demand_stats
from entities.imports import EntityRow
from entities.models import Entity, EntityDemand, EntityType
from entities.services import entities_upsert
from tests.entities.factories import EntityFactory

pytestmark = pytest.mark.django_db

STALE_MIN = 5


def _demand_types() -> dict[uuid.UUID, str]:
    return dict(EntityDemand.objects.values_list("entity_id", "entity_type"))


def _counters_set(entity: Entity, score: int) -> None:
    EntityDemand.objects.filter(entity=entity).update(demand_score=score, query_count=score)


def _ctid(entity: Entity) -> str:
    """The physical place of the demand row's current version: any UPDATE of the row moves it."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT ctid::text FROM entities_entitydemand WHERE entity_id = %s", [entity.pk])
        return cursor.fetchone()[0]


def test_create_gives_the_entity_a_demand_row_with_zero_counters():
    entity = Entity.objects.create(name="Harbor Studios", entity_type=EntityType.COMPANY)
    demand = EntityDemand.objects.get(entity=entity)
    assert (demand.entity_type, demand.demand_score, demand.query_count) == (EntityType.COMPANY, 0, 0)
    assert demand.first_queried_at is None and demand.last_queried_at is None


def test_bulk_create_gives_each_inserted_entity_one_demand_row_and_leaves_existing_ones():
    existing = EntityFactory()
    _counters_set(existing, 3)
    new = [
        Entity(name=f"Bulk {index}", entity_type=EntityType.PLATFORM if index % 2 else EntityType.DEAL)
        for index in range(5)
    ]
    # As the demo seed does: a conflicting id is skipped, and so must its demand row be.
    Entity.objects.bulk_create(
        [*new, Entity(id=existing.pk, name="Duplicate", entity_type=EntityType.PERSON)], ignore_conflicts=True
    )
    assert _demand_types() == {existing.pk: EntityType.PERSON, **{entity.pk: entity.entity_type for entity in new}}
    assert EntityDemand.objects.get(entity=existing).demand_score == 3


def test_raw_sql_insert_gets_demand_rows():
    ids = [uuid.uuid4() for _ in range(3)]
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO entities_entity (id, name, entity_type, data, created_at, updated_at)"
            " SELECT id, 'Raw ' || id, 'project', '{}', now(), now() FROM unnest(%s::uuid[]) AS id",
            [ids],
        )
    assert _demand_types() == dict.fromkeys(ids, EntityType.PROJECT)


def _change_by_save(entity: Entity) -> None:
    entity.entity_type = EntityType.COMPANY
    entity.save()


def _change_by_queryset(entity: Entity) -> None:
    Entity.objects.filter(pk=entity.pk).update(entity_type=EntityType.COMPANY)


def _change_by_raw_sql(entity: Entity) -> None:
    with connection.cursor() as cursor:
        cursor.execute("UPDATE entities_entity SET entity_type = 'company' WHERE id = %s", [entity.pk])


def _change_by_import(entity: Entity) -> None:
    row = EntityRow(
        line=1, id=entity.pk, name=entity.name, entity_type=EntityType.COMPANY, data=entity.data, embedding=None
    )
    assert entities_upsert(rows=[row]).updated == 1


@pytest.mark.parametrize("change", [_change_by_save, _change_by_queryset, _change_by_raw_sql, _change_by_import])
def test_a_type_change_is_copied_to_the_demand_row_and_keeps_its_counters(change):
    entity = EntityFactory(entity_type=EntityType.PERSON)
    _counters_set(entity, 4)
    change(entity)
    demand = EntityDemand.objects.get(entity=entity)
    assert (demand.entity_type, demand.demand_score, demand.query_count) == (EntityType.COMPANY, 4, 4)


def test_content_updates_that_keep_the_type_leave_the_demand_row_untouched():
    entity = EntityFactory(entity_type=EntityType.PERSON)
    place = _ctid(entity)
    Entity.objects.filter(pk=entity.pk).update(name="Renamed", data={"title": "EVP"})
    Entity.objects.filter(pk=entity.pk).update(entity_type=F("entity_type"))  # written, but not changed
    assert _ctid(entity) == place


def test_deleting_entities_deletes_their_demand_rows():
    kept, deleted_one, *deleted_many = (EntityFactory() for _ in range(4))
    deleted_one.delete()
    Entity.objects.filter(pk__in=[entity.pk for entity in deleted_many]).delete()
    assert _demand_types() == {kept.pk: EntityType.PERSON}


def test_deleting_entities_deletes_their_demand_buckets():
    """Buckets reference entities without a database constraint (see DemandBucket); Django cascades."""
    kept, deleted_one, *deleted_many = (EntityFactory() for _ in range(4))
    hour = hour_floor(timezone.now())
    demand_buckets_add(counts={(entity.pk, hour): 2 for entity in (kept, deleted_one, *deleted_many)})
    deleted_one.delete()
    Entity.objects.filter(pk__in=[entity.pk for entity in deleted_many]).delete()
    assert list(DemandBucket.objects.values_list("entity_id", "hour", "count")) == [(kept.pk, hour, 2)]


def test_a_raw_delete_of_an_entity_that_still_has_its_demand_row_is_refused():
    entity = EntityFactory()
    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM entities_entity WHERE id = %s", [entity.pk])
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # Django's foreign keys are checked at commit
    assert EntityDemand.objects.filter(entity=entity).exists()


def _totals() -> dict[str, tuple[int, ...]]:
    """DemandTotal summed over its shards, per type (types whose sums are all zero left out)."""
    sums: dict[str, list[int]] = defaultdict(lambda: [0] * 5)
    for row in DemandTotal.objects.all():
        for index, value in enumerate(
            (row.entities, row.queries, row.with_demand, row.score_sum, row.stale_candidates)
        ):
            sums[row.entity_type][index] += value
    return {entity_type: tuple(values) for entity_type, values in sums.items() if any(values)}


def _totals_recomputed() -> dict[str, tuple[int, ...]]:
    sums: dict[str, list[int]] = defaultdict(lambda: [0] * 5)
    for demand in EntityDemand.objects.all():
        values = sums[demand.entity_type]
        values[0] += 1
        values[1] += demand.query_count
        values[2] += demand.demand_score > 0
        values[3] += demand.demand_score
        values[4] += demand.demand_score >= STALE_MIN
    return {entity_type: tuple(values) for entity_type, values in sums.items()}


def test_totals_follow_counters_type_changes_and_deletes():
    demand_totals_rebuild(stale_min_demand_score=STALE_MIN)
    moving, staying, company = (
        EntityFactory(entity_type=EntityType.PERSON),
        EntityFactory(entity_type=EntityType.PERSON),
        EntityFactory(entity_type=EntityType.COMPANY),
    )
    for entity, score in ((moving, 7), (staying, 2), (company, 5)):
        _counters_set(entity, score)
    assert _totals() == _totals_recomputed() == {"person": (2, 9, 2, 9, 1), "company": (1, 5, 1, 5, 1)}

    moving.entity_type = EntityType.COMPANY
    moving.save()
    assert _totals() == _totals_recomputed() == {"person": (1, 2, 1, 2, 0), "company": (2, 12, 2, 12, 2)}

    staying.delete()
    Entity.objects.filter(pk=company.pk).delete()
    assert _totals() == _totals_recomputed() == {"company": (1, 7, 1, 7, 1)}
    stats = demand_stats()
    assert (stats["total_entities"], stats["total_queries"], stats["entities_with_demand"]) == (1, 7, 1)
    assert stats["top_entity_types"] == [{"type": "company", "count": 1, "avg_score": 7.0}]


def test_truncating_the_entity_table_clears_the_totals():
    demand_totals_rebuild(stale_min_demand_score=STALE_MIN)
    _counters_set(EntityFactory(), 6)
    assert _totals() == {"person": (1, 6, 1, 6, 1)}
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # TRUNCATE refuses tables with checks still pending
        cursor.execute("TRUNCATE entities_entity CASCADE")
    assert not EntityDemand.objects.exists()
    assert _totals() == {}
