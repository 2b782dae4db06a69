"""`manage.py embed_entities [--only-missing] [--batch-size N]`: (re)compute entity embeddings."""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from entities.models import Entity
from entities.services import EMBED_BATCH_SIZE, entity_embeddings_compute


class Command(BaseCommand):
    help = "Compute the embedding of every entity (or only of those without one) with the configured backend."

    def add_arguments(self, parser):
        parser.add_argument("--only-missing", action="store_true", help="Skip entities that have an embedding.")
        parser.add_argument(
            "--batch-size",
            type=int,
            default=EMBED_BATCH_SIZE,
            help=f"Entities per transaction (default {EMBED_BATCH_SIZE}).",
        )

    def handle(self, *args, only_missing: bool, batch_size: int, **options):
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        entities = Entity.objects.filter(embedding__isnull=True) if only_missing else Entity.objects.all()
        started = time.monotonic()
        with tqdm(
            total=entities.count(), desc="embed_entities", unit="entity", disable=options["verbosity"] == 0
        ) as bar:
            written = entity_embeddings_compute(only_missing=only_missing, batch_size=batch_size, progress=bar.update)
        self.stdout.write(self.style.SUCCESS(f"Embedded {written} entities in {time.monotonic() - started:.1f}s."))
