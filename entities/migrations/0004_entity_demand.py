# The demand counters move out of the wide, heavily indexed entity row into a narrow 1:1 table
# (EntityDemand): the worker's counter updates then rewrite a small row and three small indexes.
# This migration creates the table, copies the counters and installs the triggers that give every new
# entity its demand row and keep its entity_type copy current. analytics 0005 then moves the DemandTotal
# triggers onto the new table, and entities 0005 drops the old columns (and, reversed, copies the
# counters back: that must happen while the totals triggers are on the demand table, so it lives there).

import django.db.models.deletion
from django.db import migrations, models

COPY_SQL = """
INSERT INTO entities_entitydemand
    (entity_id, entity_type, demand_score, query_count, first_queried_at, last_queried_at)
SELECT id, entity_type, demand_score, query_count, first_queried_at, last_queried_at
FROM entities_entity
ORDER BY id
"""

# One demand row per new entity, however it was inserted (ORM, bulk_create, raw SQL, import upsert:
# an INSERT ... ON CONFLICT's transition table holds only the rows it inserted). Statement level, so a
# bulk insert costs one INSERT ... SELECT. The type copy follows the entity's type: row level, because
# PostgreSQL allows no transition tables on an UPDATE OF column trigger, and the WHEN clause keeps the
# (rare) type changes the only updates that run any trigger code.
TRIGGERS_SQL = """
CREATE FUNCTION entities_demand_create() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO entities_entitydemand (entity_id, entity_type, demand_score, query_count)
    SELECT id, entity_type, 0, 0 FROM new_rows ORDER BY id;
    RETURN NULL;
END $$;

CREATE FUNCTION entities_demand_type_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE entities_entitydemand SET entity_type = NEW.entity_type WHERE entity_id = NEW.id;
    RETURN NULL;
END $$;

CREATE TRIGGER entities_demand_create AFTER INSERT ON entities_entity
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION entities_demand_create();
CREATE TRIGGER entities_demand_type_sync AFTER UPDATE OF entity_type ON entities_entity
    FOR EACH ROW WHEN (OLD.entity_type IS DISTINCT FROM NEW.entity_type)
    EXECUTE FUNCTION entities_demand_type_sync();
"""

TRIGGERS_DROP_SQL = """
DROP TRIGGER IF EXISTS entities_demand_create ON entities_entity;
DROP TRIGGER IF EXISTS entities_demand_type_sync ON entities_entity;
DROP FUNCTION IF EXISTS entities_demand_create();
DROP FUNCTION IF EXISTS entities_demand_type_sync();
"""


class Migration(migrations.Migration):
    dependencies = [
        ("entities", "0003_covering_demand_indexes"),
    ]

    operations = [
        migrations.CreateModel(
            name="EntityDemand",
            fields=[
                (
                    "entity",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="demand",
                        serialize=False,
                        to="entities.entity",
                    ),
                ),
                (
                    "entity_type",
                    models.CharField(
                        choices=[
                            ("person", "Person"),
                            ("company", "Company"),
                            ("project", "Project"),
                            ("production_company", "Production company"),
                            ("platform", "Platform"),
                            ("deal", "Deal"),
                            ("genre", "Genre"),
                            ("format", "Format"),
                        ],
                        max_length=32,
                    ),
                ),
                ("demand_score", models.BigIntegerField(default=0)),
                ("query_count", models.BigIntegerField(default=0)),
                ("first_queried_at", models.DateTimeField(blank=True, null=True)),
                ("last_queried_at", models.DateTimeField(blank=True, null=True)),
            ],
            options={
                "constraints": [
                    models.CheckConstraint(condition=models.Q(("demand_score__gte", 0)), name="demand_score_gte_0"),
                    models.CheckConstraint(
                        condition=models.Q(("query_count__gte", 0)), name="demand_query_count_gte_0"
                    ),
                ],
                "indexes": [
                    models.Index(
                        fields=["-demand_score", "-query_count"], include=("entity",), name="demand_score_desc"
                    ),
                    models.Index(
                        fields=["entity_type", "-demand_score", "-query_count"],
                        include=("entity",),
                        name="demand_type_score_desc",
                    ),
                    models.Index(
                        models.OrderBy(models.F("last_queried_at"), descending=True, nulls_last=True),
                        name="demand_last_queried_desc",
                    ),
                ],
            },
        ),
        # Reversed, nothing to do here: the table is dropped, and entities 0005 has copied the counters back.
        migrations.RunSQL(COPY_SQL, reverse_sql=migrations.RunSQL.noop),
        migrations.RunSQL(TRIGGERS_SQL, TRIGGERS_DROP_SQL),
    ]
