# DemandTotal's triggers move from entities_entity to entities_entitydemand, where the counters now live
# (entities 0004). The trigger functions stay as they are: the demand table has the same entity_type,
# query_count and demand_score columns, and one row per entity, so `entities` keeps counting entities.
# The totals need no rebuild: entities 0004 copied the counters, so both tables hold the same numbers.

from django.db import migrations

_EVENTS = (
    ("insert", "INSERT", "REFERENCING NEW TABLE AS new_rows", "analytics_demand_totals_apply"),
    ("update", "UPDATE", "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows", "analytics_demand_totals_apply"),
    ("delete", "DELETE", "REFERENCING OLD TABLE AS old_rows", "analytics_demand_totals_apply"),
    ("truncate", "TRUNCATE", "", "analytics_demand_totals_clear"),
)


def _move(source: str, target: str) -> str:
    statements = [f"DROP TRIGGER analytics_demand_totals_{name} ON {source};" for name, *_ in _EVENTS]
    statements += [
        f"CREATE TRIGGER analytics_demand_totals_{name} AFTER {event} ON {target} {transition}"
        f" FOR EACH STATEMENT EXECUTE FUNCTION {function}();"
        for name, event, transition, function in _EVENTS
    ]
    return "\n".join(statements)


class Migration(migrations.Migration):
    dependencies = [
        ("analytics", "0004_bucket_entity_index_covered"),
        ("entities", "0004_entity_demand"),
    ]

    operations = [
        migrations.RunSQL(
            _move("entities_entity", "entities_entitydemand"),
            reverse_sql=_move("entities_entitydemand", "entities_entity"),
        ),
    ]
