"""`manage.py request_stale_updates`: request refreshes of the refresh queue's entities, in the queue's order."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from redis import RedisError

from analytics.services import stale_entities_refresh_request


def _positive(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError(value)
    return number


class Command(BaseCommand):
    help = (
        "Publish `refresh` UpdateRequests for the refresh queue's entities (stale: demand_score >= "
        "--min-demand-score and content older than --days-since-update days), in the queue's order: the "
        "critical tier first, then by priority. An entity with an open refresh request younger than "
        "REFRESH_REQUEST_REPEAT_HOURS is skipped, so running this hourly or daily is safe."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--min-demand-score",
            type=_positive,
            default=settings.STALE_MIN_DEMAND_SCORE,
            help="Only entities with at least this demand score (default %(default)s).",
        )
        parser.add_argument(
            "--days-since-update",
            type=_positive,
            default=settings.STALE_DAYS_SINCE_UPDATE,
            help="Only entities whose content is older than this many days (default %(default)s).",
        )
        parser.add_argument("--limit", type=_positive, default=None, help="Request at most N entities.")
        parser.add_argument("--dry-run", action="store_true", help="Only report what would be requested.")

    def handle(self, *args, **options):
        try:
            outcome = stale_entities_refresh_request(
                min_demand_score=options["min_demand_score"],
                days_since_update=options["days_since_update"],
                limit=options["limit"],
                dry_run=options["dry_run"],
            )
        except RedisError as error:
            raise CommandError(str(error)) from error
        if outcome.lost:
            raise CommandError(
                f"Neither Redis nor the outbox took the refresh request for {outcome.lost} entities; "
                f"{len(outcome.requested)} were requested before that."
            )
        criteria = f"demand_score >= {options['min_demand_score']}, not updated for {options['days_since_update']} days"
        skipped = f"{outcome.skipped_recent} skipped (requested in the last {settings.REFRESH_REQUEST_REPEAT_HOURS} h)"
        if options["dry_run"]:
            self.stdout.write(
                f"Dry run: would request a refresh of {len(outcome.requested)} stale entities ({criteria}); {skipped}."
            )
            for entity_id in outcome.requested[:20]:
                self.stdout.write(f"  {entity_id}")
            return
        via = f", {outcome.outboxed} via the outbox" if outcome.outboxed else ""
        self.stdout.write(
            f"Requested a refresh of {len(outcome.requested)} stale entities ({criteria}) in "
            f"{len(outcome.event_ids)} UpdateRequest(s){via}; {skipped}."
        )
