"""Writes of demand history. Called by the stream worker inside its apply transaction."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime

from django.db import connection


def demand_buckets_add(*, counts: Mapping[tuple[uuid.UUID, datetime], int]) -> None:
    """Add `counts[(entity_id, hour)]` to the hourly demand buckets in one set-based upsert.

    `hour` is the UTC start of the hour. Must run inside the caller's transaction, so the buckets
    commit or roll back together with the counters and the inbox.
    """
    if not counts:
        return
    entity_ids, hours, amounts = [], [], []
    for (entity_id, hour), amount in counts.items():
        entity_ids.append(entity_id)
        hours.append(hour)
        amounts.append(amount)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO analytics_demandbucket (entity_id, hour, count)
            SELECT * FROM unnest(%s::uuid[], %s::timestamptz[], %s::bigint[])
            ORDER BY 1, 2
            ON CONFLICT (entity_id, hour) DO UPDATE SET count = analytics_demandbucket.count + EXCLUDED.count
            """,
            [entity_ids, hours, amounts],
        )
