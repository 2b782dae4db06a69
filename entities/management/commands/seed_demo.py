"""`manage.py seed_demo [--entities 6408] [--seed N] [--if-empty]`: load the deterministic demo data."""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from entities.demo import DEFAULT_DEMO_COUNT
from entities.models import Entity
from entities.services import demo_entities_seed


class Command(BaseCommand):
    help = "Load realistic, deterministic demo entities (idempotent: existing demo records are kept)."

    def add_arguments(self, parser):
        parser.add_argument("--entities", type=int, default=DEFAULT_DEMO_COUNT, help="How many (default 6408).")
        parser.add_argument("--seed", type=int, default=1, help="Data set variant; same seed, same records.")
        parser.add_argument("--if-empty", action="store_true", help="Do nothing when any entity exists.")

    def handle(self, *args, entities: int, seed: int, if_empty: bool, **options):
        if entities < 1:
            raise CommandError("--entities must be at least 1.")
        if if_empty and Entity.objects.exists():
            self.stdout.write("Entities already present; demo data not loaded.")
            return
        started = time.monotonic()
        with tqdm(total=entities, desc="seed_demo", unit="entity", disable=options["verbosity"] == 0) as bar:
            report = demo_entities_seed(count=entities, seed=seed, progress=bar.update)
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo data: {report.created} created, {report.existing} already present, {report.embedded} embedded "
                f"({time.monotonic() - started:.1f}s)."
            )
        )
