"""`manage.py seed_demo [--entities 6408] [--seed N] [--if-empty] [--no-demand]`: the demo entities and their past."""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from analytics.services import demand_history_seed
from entities.demo import DEFAULT_DEMO_COUNT
from entities.models import Entity
from entities.services import demo_entities_seed


class Command(BaseCommand):
    help = (
        "Load realistic, deterministic demo entities (existing demo records are kept) and about 30 days of "
        "simulated demand for them, counted by the worker's own function (skipped when demand exists)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--entities", type=int, default=DEFAULT_DEMO_COUNT, help="How many (default 6408).")
        parser.add_argument("--seed", type=int, default=1, help="Data set variant; same seed, same records.")
        parser.add_argument("--if-empty", action="store_true", help="Do nothing when any entity exists.")
        parser.add_argument("--no-demand", action="store_true", help="Load the entities only, no demand history.")

    def handle(self, *args, entities: int, seed: int, if_empty: bool, no_demand: bool, **options):
        if entities < 1:
            raise CommandError("--entities must be at least 1.")
        if if_empty and Entity.objects.exists():
            self.stdout.write("Entities already present; demo data not loaded.")
            return
        quiet = options["verbosity"] == 0
        started = time.monotonic()
        with tqdm(total=entities, desc="seed_demo", unit="entity", disable=quiet) as bar:
            report = demo_entities_seed(count=entities, seed=seed, progress=bar.update)
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo data: {report.created} created, {report.existing} already present, {report.embedded} embedded "
                f"({time.monotonic() - started:.1f}s)."
            )
        )
        if no_demand:
            return
        started = time.monotonic()
        with tqdm(desc="demand history", unit="answer", disable=quiet) as bar:
            history = demand_history_seed(seed=seed, progress=bar.update)
        if history.skipped:
            self.stdout.write(f"Demand history not loaded: {history.skipped}.")
            return
        self.stdout.write(
            self.style.SUCCESS(
                f"Demand history: {history.answers} simulated answers over the last 30 days "
                f"({history.answers - history.signals} about nothing), {history.counted} signals counted "
                f"({time.monotonic() - started:.1f}s)."
            )
        )
