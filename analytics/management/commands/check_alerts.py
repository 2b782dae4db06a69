"""Evaluate the alert rules once and send the due alerts: for a cron, beside (or instead of) the worker."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from analytics.alerts import alerts_check


class Command(BaseCommand):
    help = "Evaluate every enabled alert rule once, then POST the alerts due to their webhooks (exit 0)."

    def handle(self, *args, **options):
        outcome = alerts_check()
        evaluation, delivery = outcome.evaluation, outcome.delivery
        if not evaluation.ran:
            self.stdout.write("Another process was evaluating the rules; this run only sent alerts.")
        if evaluation.unavailable:
            self.stdout.write(f"Not evaluated (Redis unavailable): {', '.join(evaluation.unavailable)}.")
        if evaluation.undeliverable:
            self.stdout.write(
                f"{evaluation.undeliverable} alerts had no webhook (set ALERT_WEBHOOK_URL or the rule's URL)."
            )
        self.stdout.write(
            f"Alerts: {evaluation.rules} rules evaluated, {evaluation.firing} firing, {evaluation.resolved} resolved,"
            f" {evaluation.suppressed} in cooldown; sent {delivery.sent}, retrying {delivery.retrying},"
            f" failed {delivery.failed}."
        )
