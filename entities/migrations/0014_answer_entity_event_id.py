"""Each answer's entity row keeps the event id of the signal it sent, so reconciliation checks in SQL alone.

Existing rows are left without one (null): reconciliation has passed them already, and checks any it still
meets (pending answers, or rows the previous release writes during this deploy, whose INSERTs do not name
the column) by deriving the ids in Python. So the migration writes no row, and, run while the previous
release still serves (a zero-downtime deploy runs `migrate` first), builds and drops the indexes
CONCURRENTLY, never blocking an answer behind a table lock.
"""

from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("entities", "0013_answer_reconcile_watermark"),
    ]

    operations = [
        migrations.AddField(
            model_name="answerrecordentity",
            name="event_id",
            field=models.UUIDField(null=True),
        ),
        AddIndexConcurrently(
            model_name="answerrecordentity",
            index=models.Index(
                fields=["asked_at", "answer_id"], include=["event_id"], name="answer_entity_asked_event"
            ),
        ),
        RemoveIndexConcurrently(
            model_name="answerrecordentity",
            name="answer_entity_asked_at",
        ),
    ]
