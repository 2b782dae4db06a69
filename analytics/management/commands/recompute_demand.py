"""`manage.py recompute_demand [--check]`: the demand counters audit, and their rebuild from the buckets."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand

from analytics.demand import demand_counters_rebuild
from analytics.selectors import answers_unreconciled, demand_answers_audit, demand_counters_audit

SHOWN = 20


class Command(BaseCommand):
    help = (
        "Rebuild query_count and demand_score from the hourly demand buckets, or with --check only report the "
        "entities whose counters differ (exit status 1 when any does). Entities first queried before the "
        "bucket retention (DEMAND_BUCKET_RETENTION_DAYS) are skipped: their oldest buckets were pruned. --check also "
        "counts answers whose signals reconciliation has not seen counted within two ANSWER_RECONCILE_AFTER_SECONDS, "
        "and compares each entity's buckets with the answer records of the same hours (the whole hours in both "
        "retentions, up to two bounds ago)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--check", action="store_true", help="Only report differences; change nothing.")

    def handle(self, *args, **options):
        audit = demand_counters_audit()
        scope = (
            f"{audit.checked} entities checked, {audit.skipped_history_pruned} skipped (first queried before "
            f"{audit.audit_from:%Y-%m-%d %H:%M} UTC, retention {settings.DEMAND_BUCKET_RETENTION_DAYS} days)"
        )
        for row in audit.differences[:SHOWN]:
            self.stdout.write(
                f"  {row['id']} {row['name']!r}: query_count {row['query_count']}, demand_score "
                f"{row['demand_score']}, buckets {row['bucket_returned']} returned / {row['bucket_total']} as subject"
            )
        if len(audit.differences) > SHOWN:
            self.stdout.write(f"  ... and {len(audit.differences) - SHOWN} more")
        if options["check"]:
            self.stdout.write(f"Demand audit: {len(audit.differences)} entities differ from their buckets; {scope}.")
            unreconciled = answers_unreconciled()
            self.stdout.write(
                f"Answer audit: {unreconciled} answers with signals not seen counted "
                f"{2 * settings.ANSWER_RECONCILE_AFTER_SECONDS} s after they were sent (run reconcile_answers)."
            )
            answers = demand_answers_audit()
            for row in answers.differences[:SHOWN]:
                self.stdout.write(
                    f"  {row['id']} {row['name']!r}: answers {row['answers_returned']} returned / "
                    f"{row['answers_subject']} as subject, buckets {row['bucket_returned']} returned / "
                    f"{row['bucket_total']} as subject"
                )
            if len(answers.differences) > SHOWN:
                self.stdout.write(f"  ... and {len(answers.differences) - SHOWN} more")
            self.stdout.write(
                f"Answer records audit: {len(answers.differences)} entities' buckets differ from the answers of the "
                f"same hours; {answers.checked} entities checked, hours {answers.audit_from:%Y-%m-%d %H:%M} to "
                f"{answers.audit_to:%Y-%m-%d %H:%M} UTC."
            )
            if audit.differences or unreconciled or answers.differences:
                raise SystemExit(1)
            return
        fixed = demand_counters_rebuild(
            entity_ids=[row["id"] for row in audit.differences], audit_from=audit.audit_from
        )
        self.stdout.write(f"Demand rebuild: {fixed} entities corrected from their buckets; {scope}.")
