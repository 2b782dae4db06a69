"""The move of the demand counters into EntityDemand, migrated forward and back over a database with rows."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)

# The schema of main before the move: counters on entities_entity, DemandTotal's triggers there too.
BEFORE = [("entities", "0003_covering_demand_indexes"), ("analytics", "0004_bucket_entity_index_covered")]
STALE_MIN = 5
FIRST, LAST = datetime(2026, 10, 1, 9, tzinfo=UTC), datetime(2026, 11, 29, 18, tzinfo=UTC)
# id, entity_type, demand_score, query_count, first_queried_at, last_queried_at
ROWS = [
    (uuid.uuid4(), "person", 12, 12, FIRST, LAST),
    (uuid.uuid4(), "person", 3, 4, FIRST, FIRST),
    (uuid.uuid4(), "company", 5, 5, LAST, LAST),
    (uuid.uuid4(), "platform", 0, 0, None, None),
]


def _migrate(targets) -> None:
    MigrationExecutor(connection).migrate(targets)


def _fetch(sql: str) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchall()


def _totals() -> dict[str, tuple[int, ...]]:
    rows = _fetch(
        "SELECT entity_type, sum(entities), sum(queries), sum(with_demand), sum(score_sum), sum(stale_candidates)"
        " FROM analytics_demandtotal GROUP BY entity_type"
    )
    return {row[0]: tuple(int(value) for value in row[1:]) for row in rows if any(row[1:])}


def _counters(table: str, id_column: str) -> set[tuple]:
    return set(
        _fetch(
            f"SELECT {id_column}, entity_type, demand_score, query_count, first_queried_at, last_queried_at"
            f" FROM {table}"
        )
    )


def _entity_columns() -> set[str]:
    return {
        row[0]
        for row in _fetch("SELECT column_name FROM information_schema.columns WHERE table_name = 'entities_entity'")
    }


def test_counters_are_copied_to_the_demand_table_and_back_with_the_totals_intact():
    _migrate(BEFORE)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO analytics_demandwindowstate (id, stale_min_demand_score) VALUES (1, %s)"
                " ON CONFLICT (id) DO UPDATE SET stale_min_demand_score = EXCLUDED.stale_min_demand_score",
                [STALE_MIN],
            )
            for entity_id, entity_type, score, count, first, last in ROWS:
                cursor.execute(
                    "INSERT INTO entities_entity (id, name, entity_type, data, created_at, updated_at, demand_score,"
                    " query_count, first_queried_at, last_queried_at) VALUES (%s, %s, %s, '{}', now(), now(), %s, %s,"
                    " %s, %s)",
                    [entity_id, f"Entity {entity_id}", entity_type, score, count, first, last],
                )
        totals = _totals()
        assert totals == {"person": (2, 16, 2, 15, 1), "company": (1, 5, 1, 5, 1), "platform": (1, 0, 0, 0, 0)}

        _migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
        assert _counters("entities_entitydemand", "entity_id") == set(ROWS)
        assert not {"demand_score", "query_count", "first_queried_at", "last_queried_at"} & _entity_columns()
        assert _totals() == totals
        # The totals triggers are on the demand table now: a counter update moves them, once.
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE entities_entitydemand SET demand_score = demand_score + 2, query_count = query_count + 2"
                " WHERE entity_id = %s",
                [ROWS[1][0]],
            )
        totals["person"] = (2, 18, 2, 17, 2)
        assert _totals() == totals

        _migrate(BEFORE)
        moved = ROWS[1]
        assert _counters("entities_entity", "id") == {*ROWS[:1], (*moved[:2], 5, 6, *moved[4:]), *ROWS[2:]}
        assert _totals() == totals  # copied back without being counted twice
        # And the triggers are back on the entity table.
        with connection.cursor() as cursor:
            cursor.execute("UPDATE entities_entity SET query_count = query_count + 1 WHERE id = %s", [ROWS[2][0]])
        assert _totals()["company"] == (1, 6, 1, 5, 1)
    finally:
        _migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
