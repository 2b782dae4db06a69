"""The "Demand analysts" also see the alert rules, their states and the delivery log in the admin (read only;
editing rules stays with superusers)."""

from django.apps import apps as global_apps
from django.contrib.auth.management import create_permissions
from django.db import migrations

GROUP_NAME = "Demand analysts"
CODENAMES = ["view_alertrule", "view_alertstate", "view_alertdelivery"]


def _permissions(apps):
    # Permissions are normally created after all migrations ran (post_migrate); a fresh database has none yet.
    create_permissions(global_apps.get_app_config("analytics"), apps=apps, verbosity=0)
    Permission = apps.get_model("auth", "Permission")
    return Permission.objects.filter(content_type__app_label="analytics", codename__in=CODENAMES)


def alert_views_grant(apps, schema_editor):
    group, _ = apps.get_model("auth", "Group").objects.get_or_create(name=GROUP_NAME)
    group.permissions.add(*_permissions(apps))


def alert_views_revoke(apps, schema_editor):
    # The group may be gone already (deleted by hand, or a test database flushed).
    for group in apps.get_model("auth", "Group").objects.filter(name=GROUP_NAME):
        group.permissions.remove(*_permissions(apps))


class Migration(migrations.Migration):
    dependencies = [
        ("mandate_wizard", "0001_demand_analysts_group"),
        ("analytics", "0010_alerts"),
    ]

    operations = [migrations.RunPython(alert_views_grant, alert_views_revoke)]
