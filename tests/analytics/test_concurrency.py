"""Buckets written by a worker transaction that is still open when the windows roll are never lost:
the roll waits for it (real PostgreSQL, two connections)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connections, transaction

from analytics.demand import demand_buckets_add, demand_windows_roll
from analytics.selectors import demand_windows
from tests.analytics.helpers import NOW, hours_ago
from tests.entities.factories import EntityFactory

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_roll_waits_for_an_open_writer_and_then_counts_its_buckets():
    entity = EntityFactory()
    demand_windows_roll(now=NOW)
    writer_has_written = threading.Event()
    let_writer_commit = threading.Event()
    roll_done = threading.Event()

    def writer():
        try:
            with transaction.atomic():
                demand_buckets_add(counts={(entity.pk, hours_ago(3)): 5})  # a closed hour: moves the windows
                demand_buckets_add(counts={(entity.pk, NOW.replace(minute=0) + timedelta(hours=1)): 2})
                writer_has_written.set()
                let_writer_commit.wait(10)
        finally:
            connections.close_all()

    def roller():
        try:
            demand_windows_roll(now=NOW + timedelta(hours=2))
            roll_done.set()
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer)]
    threads[0].start()
    assert writer_has_written.wait(10)
    threads.append(threading.Thread(target=roller))
    threads[1].start()
    assert not roll_done.wait(0.5)  # blocked behind the writer's shared lock
    let_writer_commit.set()
    for thread in threads:
        thread.join(10)
    assert roll_done.is_set()
    # Relative to NOW + 2h: hours_ago(3) is 5 hours back (closed), H0 + 1h is 1 hour back (closed).
    assert demand_windows(entity_id=entity.pk, now=NOW + timedelta(hours=2))["1d"]["current_period_queries"] == 7
