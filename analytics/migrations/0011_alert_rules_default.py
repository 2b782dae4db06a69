"""The default alert rules, one of each kind; edit or disable them in the admin."""

from django.db import migrations

# name, kind, threshold, age_seconds, timeframe, cooldown_seconds
DEFAULT_RULES = [
    ("demand spike", "demand_spike", 5.0, None, "1d", 6 * 3600),
    ("critical stale", "critical_stale", None, None, "", 24 * 3600),
    ("pipeline lag", "pipeline_lag", 10_000.0, 300, "", 900),
    ("dead letters grew", "dead_letters_grew", 0.0, None, "", 3600),
    ("no live worker", "no_live_worker", None, None, "", 900),
    ("outbox backlog", "outbox_backlog", 1000.0, 300, "", 900),
]


def default_rules_create(apps, schema_editor):
    AlertRule = apps.get_model("analytics", "AlertRule")
    for name, kind, threshold, age_seconds, timeframe, cooldown in DEFAULT_RULES:
        AlertRule.objects.get_or_create(
            name=name,
            defaults={
                "kind": kind,
                "threshold": threshold,
                "age_seconds": age_seconds,
                "timeframe": timeframe,
                "cooldown_seconds": cooldown,
            },
        )


def default_rules_delete(apps, schema_editor):
    apps.get_model("analytics", "AlertRule").objects.filter(name__in=[rule[0] for rule in DEFAULT_RULES]).delete()


class Migration(migrations.Migration):
    dependencies = [("analytics", "0010_alerts")]

    operations = [migrations.RunPython(default_rules_create, default_rules_delete)]
