"""Demand over time: hourly buckets of counted QuerySignals, the source of trending and timeseries."""

from __future__ import annotations

from django.db import models


class DemandBucket(models.Model):
    """How many distinct QuerySignal events named `entity` in the UTC hour starting at `hour`."""

    entity = models.ForeignKey("entities.Entity", on_delete=models.CASCADE, related_name="demand_buckets")
    hour = models.DateTimeField()
    count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["entity", "hour"], name="demand_bucket_entity_hour"),
            models.CheckConstraint(condition=models.Q(count__gte=0), name="demand_bucket_count_gte_0"),
        ]
        indexes = [models.Index(fields=["hour", "entity"], name="demand_bucket_hour_entity")]

    def __str__(self) -> str:
        return f"{self.entity_id} {self.hour:%Y-%m-%d %H}:00 = {self.count}"
