"""`manage.py replay_dead_letters`: send dead-letter entries back to their source streams."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from streams.redis import REDIS_ERRORS
from streams.services import dead_letters_replay


class Command(BaseCommand):
    help = (
        "Re-publish dead-letter entries to their source stream with their original fields (same event id, so "
        "nothing is counted twice) and remove them from the dead-letter stream. Entries whose event id was "
        "already counted are only removed."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Only report what would be replayed.")
        parser.add_argument(
            "--reason", metavar="TEXT", default=None, help="Only entries whose reason contains TEXT (any case)."
        )
        parser.add_argument("ids", nargs="*", help="Dead-letter entry ids (default: every entry).")

    def handle(self, *args, **options):
        try:
            outcome = dead_letters_replay(
                ids=options["ids"] or None, reason_contains=options["reason"], dry_run=options["dry_run"]
            )
        except REDIS_ERRORS as error:
            raise CommandError(f"Redis is unreachable: {error}") from error
        verb = "would replay" if options["dry_run"] else "replayed"
        removed = "would remove" if options["dry_run"] else "removed"
        lines = [
            f"Dead letters: {verb} {outcome.replayed}; {removed} {outcome.already_counted} already counted.",
        ]
        if outcome.unknown_source:
            lines.append(f"Kept {outcome.unknown_source} whose source stream is not one the worker reads.")
        if outcome.not_found:
            lines.append(f"Not found: {', '.join(outcome.not_found)}.")
        self.stdout.write("\n".join(lines))
