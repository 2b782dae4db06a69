"""The "Demand analysts" group: staff who read entities, demand and refresh requests in the admin and may
request refreshes/reindexing, but see no users or groups. `create_user --staff` puts users in it.
"""

from django.apps import apps as global_apps
from django.contrib.auth.management import create_permissions
from django.db import migrations

GROUP_NAME = "Demand analysts"

# (app label, codename)
PERMISSIONS = [
    ("entities", "view_entity"),
    ("entities", "view_entitydemand"),
    ("entities", "view_refreshrequest"),
    ("entities", "request_entity_update"),
    ("analytics", "view_demandbucket"),
    ("analytics", "view_demandwindow"),
    ("analytics", "view_demandtotal"),
]


def demand_analysts_create(apps, schema_editor):
    # Permissions are normally created after all migrations ran (post_migrate); a fresh database has none yet.
    for app_label in {app_label for app_label, _ in PERMISSIONS}:
        create_permissions(global_apps.get_app_config(app_label), apps=apps, verbosity=0)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name=GROUP_NAME)
    for app_label, codename in PERMISSIONS:
        group.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))


def demand_analysts_delete(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name=GROUP_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("entities", "0009_entity_request_update_permission"),
        ("analytics", "0006_bucket_composite_key"),
    ]

    operations = [migrations.RunPython(demand_analysts_create, demand_analysts_delete)]
