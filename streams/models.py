"""Delivery bookkeeping in PostgreSQL: the inbox of counted event ids and the publishers' outbox."""

from __future__ import annotations

from django.contrib.postgres.indexes import BrinIndex
from django.db import models
from django.utils import timezone


class ProcessedEvent(models.Model):
    """An event id whose effects are committed. Written in the same transaction as those effects."""

    event_id = models.UUIDField(primary_key=True)
    processed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        # Rows arrive in processed_at order, so a BRIN index serves the retention DELETE and costs
        # almost nothing to maintain on the worker's hot insert path.
        indexes = [BrinIndex(fields=["processed_at"], name="processed_event_at_brin")]

    def __str__(self) -> str:
        return str(self.event_id)


class OutboxEvent(models.Model):
    """An entry a publisher could not send to Redis; relayed (then deleted) when Redis is back."""

    id = models.BigAutoField(primary_key=True)
    stream = models.CharField(max_length=200)
    fields = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)
    attempts = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.stream} {self.fields.get('event_id', '')}"
