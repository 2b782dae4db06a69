"""Send the outbox (events publishers could not deliver while Redis was down) to Redis now."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from streams.redis import REDIS_ERRORS
from streams.services import outbox_relay


class Command(BaseCommand):
    help = "Relay events held in the PostgreSQL outbox to their Redis streams."

    def add_arguments(self, parser):
        parser.add_argument("--limit", type=int, default=1_000_000, help="Relay at most this many events.")

    def handle(self, *args, **options):
        try:
            relayed = outbox_relay(limit=options["limit"])
        except REDIS_ERRORS as error:
            raise CommandError(f"Redis is unreachable, the outbox is kept: {error}") from error
        self.stdout.write(f"relayed {relayed} events")
