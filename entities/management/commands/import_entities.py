"""`manage.py import_entities FILE [--dry-run] [--batch-size N]`: upsert entities from JSONL or CSV."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from entities.services import entity_import


class Command(BaseCommand):
    help = (
        "Import entities from a JSONL (.jsonl/.ndjson) or CSV file, upserting by id. Bad rows are reported "
        "with their line number and skipped; the exit status is 1 when any row was bad."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--dry-run", action="store_true", help="Validate and report; write nothing.")
        parser.add_argument("--batch-size", type=int, default=1000)

    def handle(self, *args, file: Path, dry_run: bool, batch_size: int, **options):
        if not file.is_file():
            raise CommandError(f"{file}: no such file.")
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        with tqdm(desc="import", unit="row", disable=options["verbosity"] == 0) as bar:
            report = entity_import(path=file, dry_run=dry_run, batch_size=batch_size, progress=bar.update)
        for error in report.errors:
            self.stderr.write(f"{file}:{error.line}: {error.reason}")
        if dry_run:
            summary = f"Dry run: {report.valid} valid rows, {len(report.errors)} bad rows; nothing written."
        else:
            summary = (
                f"Imported: {report.created} created, {report.updated} updated, {report.unchanged} unchanged, "
                f"{report.embedded} embedded; {len(report.errors)} bad rows."
            )
        self.stdout.write(self.style.WARNING(summary) if report.errors else self.style.SUCCESS(summary))
        if report.errors:
            raise SystemExit(1)
