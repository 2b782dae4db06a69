"""`manage.py reconcile_answers`: re-send the signals of answers that are still not counted."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand

from entities.services import answer_signals_reconcile


class Command(BaseCommand):
    help = (
        "Re-send, from the answer records, the QuerySignals not yet counted ANSWER_RECONCILE_AFTER_SECONDS after "
        "they were sent (same event ids, so each counts once), and settle the answers whose signals are all counted."
    )

    def add_arguments(self, parser):
        parser.add_argument("--limit", type=int, default=100_000, help="Check at most this many answers.")

    def handle(self, *args, **options):
        outcome = answer_signals_reconcile(limit=options["limit"])
        self.stdout.write(
            f"checked {outcome.checked} answers older than {settings.ANSWER_RECONCILE_AFTER_SECONDS} s: "
            f"{outcome.settled} settled, {outcome.resent} signals re-sent, {outcome.held} held back (outbox not "
            f"empty), {outcome.given_up} given up"
        )
