# The entity row loses its demand counters, their indexes and checks: they live in EntityDemand now
# (entities 0004), and DemandTotal's triggers read that table (analytics 0005).

from django.db import migrations, models

# Reversed, after the columns are back: the counters return to the entity row. The DemandTotal triggers
# are still on the demand table at that point (analytics 0005 is reversed after this), so the copy does
# not count the counters a second time in the totals.
COPY_BACK_SQL = """
UPDATE entities_entity AS e
SET demand_score = d.demand_score, query_count = d.query_count,
    first_queried_at = d.first_queried_at, last_queried_at = d.last_queried_at
FROM entities_entitydemand AS d
WHERE d.entity_id = e.id
"""


class Migration(migrations.Migration):
    dependencies = [
        ("entities", "0004_entity_demand"),
        ("analytics", "0005_demand_totals_on_entity_demand"),
    ]

    operations = [
        migrations.RunSQL(migrations.RunSQL.noop, reverse_sql=COPY_BACK_SQL),
        migrations.AlterModelOptions(
            name="entity",
            options={
                "ordering": ["-demand__demand_score", "-demand__query_count", "name"],
                "verbose_name_plural": "entities",
            },
        ),
        migrations.RemoveConstraint(model_name="entity", name="entity_demand_score_gte_0"),
        migrations.RemoveConstraint(model_name="entity", name="entity_query_count_gte_0"),
        migrations.RemoveIndex(model_name="entity", name="entity_last_queried_desc"),
        migrations.RemoveIndex(model_name="entity", name="entity_demand_desc"),
        migrations.RemoveIndex(model_name="entity", name="entity_updated_at_idx"),
        migrations.RemoveField(model_name="entity", name="demand_score"),
        migrations.RemoveField(model_name="entity", name="first_queried_at"),
        migrations.RemoveField(model_name="entity", name="last_queried_at"),
        migrations.RemoveField(model_name="entity", name="query_count"),
        migrations.AddIndex(
            model_name="entity",
            index=models.Index(fields=["updated_at"], name="entity_updated_at_idx"),
        ),
    ]
