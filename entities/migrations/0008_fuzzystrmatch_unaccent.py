"""fuzzystrmatch (levenshtein, dmetaphone) and unaccent for name matching in entities.retrieval."""

from django.contrib.postgres.operations import CreateExtension, UnaccentExtension
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("entities", "0007_last_queried_index_in_api_order")]

    operations = [CreateExtension("fuzzystrmatch"), UnaccentExtension()]
