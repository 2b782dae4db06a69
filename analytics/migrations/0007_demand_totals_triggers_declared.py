# DemandTotal's triggers are declared beside the model now (analytics/models.py, django-pgtrigger) and
# installed by entities 0008, on the table they watch. This drops the hand-written ones of 0003/0005;
# the new ones compute the same differences, so the totals need no rebuild.

import importlib

from django.db import migrations

_HAND_WRITTEN = importlib.import_module("analytics.migrations.0003_demand_totals")
_MOVED = importlib.import_module("analytics.migrations.0005_demand_totals_on_entity_demand")

DROP_SQL = """
DROP TRIGGER analytics_demand_totals_insert ON entities_entitydemand;
DROP TRIGGER analytics_demand_totals_update ON entities_entitydemand;
DROP TRIGGER analytics_demand_totals_delete ON entities_entitydemand;
DROP TRIGGER analytics_demand_totals_truncate ON entities_entitydemand;
DROP FUNCTION analytics_demand_totals_apply();
DROP FUNCTION analytics_demand_totals_clear();
"""


class Migration(migrations.Migration):
    dependencies = [
        ("analytics", "0006_bucket_composite_key"),
        ("entities", "0007_last_queried_index_in_api_order"),
    ]

    operations = [
        migrations.RunSQL(
            DROP_SQL,
            # Back to 0006: 0003's functions and triggers (created on entities_entity), moved as 0005 did.
            reverse_sql=_HAND_WRITTEN.TOTALS_SQL + _MOVED._move("entities_entity", "entities_entitydemand"),
        ),
    ]
