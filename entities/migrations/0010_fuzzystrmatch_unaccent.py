"""fuzzystrmatch (levenshtein, dmetaphone) and unaccent for name matching in entities.retrieval."""

from django.contrib.postgres.operations import CreateExtension, UnaccentExtension
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("entities", "0009_entity_request_update_permission")]

    operations = [CreateExtension("fuzzystrmatch"), UnaccentExtension()]
