from django.db import migrations


class Migration(migrations.Migration):
    """Stats read DemandTotal now; the entity-type covering index only slowed every counter update."""

    dependencies = [
        ("analytics", "0003_demand_totals"),
    ]

    operations = [
        migrations.RunSQL(
            "DROP INDEX IF EXISTS analytics_entity_type_demand;",
            "CREATE INDEX IF NOT EXISTS analytics_entity_type_demand"
            " ON entities_entity (entity_type, demand_score, query_count, updated_at);",
        ),
    ]
