"""`manage.py create_user EMAIL [--staff | --superuser]`: create (or reset) a user who logs in with this email.

--staff makes an admin user in the "Demand analysts" group (entities, demand, refresh requests, the refresh
and reindex actions; no users or groups); --superuser one with every permission.

The password never comes from the command line: it is prompted for, or read from the environment
variable named by --password-env (default USER_PASSWORD).
"""

from __future__ import annotations

import getpass
import os

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.validators import validate_email

# Created by mandate_wizard/migrations/0001_demand_analysts_group.py.
DEMAND_ANALYSTS_GROUP = "Demand analysts"


class Command(BaseCommand):
    help = "Create a user (or reset an existing one's password) who logs in with EMAIL."

    def add_arguments(self, parser):
        parser.add_argument("email")
        parser.add_argument(
            "--staff", action="store_true", help='May read analytics and use the admin as a "Demand analysts" member.'
        )
        parser.add_argument("--superuser", action="store_true", help="Staff with every permission.")
        parser.add_argument(
            "--password-env",
            default="USER_PASSWORD",
            help="Environment variable holding the password (default USER_PASSWORD); prompts when unset.",
        )

    def handle(self, *args, email: str, staff: bool, superuser: bool, password_env: str, **options):
        email = email.strip().lower()
        try:
            validate_email(email)
        except ValidationError:
            raise CommandError(f"'{email}' is not a valid email address.") from None
        password = os.environ.get(password_env)
        if not password:
            if not options.get("interactive", True) or not os.isatty(0):
                raise CommandError(f"No password: set {password_env} or run in a terminal to be prompted.")
            password = getpass.getpass("Password: ")
            if password != getpass.getpass("Password (again): "):
                raise CommandError("The passwords do not match.")
        User = get_user_model()
        user = User.objects.filter(email__iexact=email).first() or User(username=email, email=email)
        try:
            validate_password(password, user)
        except ValidationError as error:
            raise CommandError(" ".join(error.messages)) from None
        created = user.pk is None
        user.set_password(password)
        user.is_staff = user.is_staff or staff or superuser
        user.is_superuser = user.is_superuser or superuser
        user.is_active = True
        user.save()
        if staff:
            group = Group.objects.filter(name=DEMAND_ANALYSTS_GROUP).first()
            if group is None:
                raise CommandError(f'The "{DEMAND_ANALYSTS_GROUP}" group is missing: run manage.py migrate.')
            user.groups.add(group)
        role = "superuser" if user.is_superuser else "staff user" if user.is_staff else "user"
        self.stdout.write(self.style.SUCCESS(f"{'Created' if created else 'Updated'} {role} {email}."))
