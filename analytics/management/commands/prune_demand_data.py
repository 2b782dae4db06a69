"""`manage.py prune_demand_data`: drop demand buckets, inbox ids, answer records and alert deliveries past their
retention."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand

from analytics.alerts import alert_deliveries_prune
from analytics.demand import demand_buckets_prune
from analytics.services import question_windows_oldest
from entities.services import answer_records_prune
from streams.services import inbox_prune


class Command(BaseCommand):
    help = (
        "Delete hourly demand buckets older than DEMAND_BUCKET_RETENTION_DAYS (buckets inside a trending window "
        "are always kept), inbox event ids older than INBOX_RETENTION_DAYS and answer records older than "
        "ANSWER_RETENTION_DAYS (never those of the last 30 days, which the question windows hold), and sent or "
        "failed alert deliveries older than ALERT_DELIVERY_RETENTION_DAYS. The worker prunes the inbox too; this "
        "command is for a scheduled job."
    )

    def handle(self, *args, **options):
        buckets = demand_buckets_prune()
        inbox = inbox_prune()
        # The question windows' roll subtracts the records leaving the 30-day window: they outlive it.
        answers = answer_records_prune(keep_from=question_windows_oldest())
        deliveries = alert_deliveries_prune()
        self.stdout.write(
            f"Pruned {buckets} demand buckets (retention {settings.DEMAND_BUCKET_RETENTION_DAYS} days), "
            f"{inbox} inbox event ids (retention {settings.INBOX_RETENTION_DAYS} days), "
            f"{answers} answer records (retention {settings.ANSWER_RETENTION_DAYS} days) and "
            f"{deliveries} alert deliveries (retention {settings.ALERT_DELIVERY_RETENTION_DAYS} days)."
        )
