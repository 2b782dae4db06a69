"""Chores registered with thread=True run in threads of their own: a chore that blocks or fails never holds
up the worker's batches, and the threads stop with the worker."""

from __future__ import annotations

import threading

import pytest

from streams import handlers
from streams.handlers import Chore
from streams.worker import StreamWorker
from tests.streams.pipeline import entities_make, signals_make, signals_xadd, totals_assert, wait_until, worker_drain

pytestmark = pytest.mark.django_db


@pytest.fixture
def slow_chore(monkeypatch):
    """A threaded chore that fails on its first run, then blocks until released on its second."""
    runs: list[str] = []
    release = threading.Event()

    def run() -> None:
        runs.append(threading.current_thread().name)
        if len(runs) == 1:
            raise RuntimeError("first run fails")
        release.wait(60)

    # The registry is the set-up here, not what is tested: the test's chore is registered beside the apps'.
    monkeypatch.setitem(
        handlers._chores, "slow_test_chore", Chore(name="slow_test_chore", run=run, interval=0.05, thread=True)
    )
    yield runs, release
    release.set()


def test_a_blocked_threaded_chore_never_holds_up_counting(redis_client, slow_chore):
    runs, release = slow_chore
    worker = StreamWorker(consumer="chore-threads", block_ms=50, claim_idle_ms=3_600_000, chore_threads=True)
    worker.groups_ensure()
    signals = signals_make(entities_make(3), 40)
    signals_xadd(redis_client, signals)
    worker_drain(worker)  # its first housekeeping starts the chore's thread
    wait_until(lambda: len(runs) == 2, timeout=30, what="the chore's second run (after its failure)")
    signals_xadd(redis_client, more := signals_make(entities_make(2), 30, seed=9))
    worker_drain(worker)  # while the chore blocks in its thread
    totals_assert(signals + more)
    assert runs == ["chore-slow_test_chore", "chore-slow_test_chore"]
    release.set()
    worker.chore_threads_stop()
    assert not any(thread.is_alive() for thread in worker._chore_threads)


def test_threaded_chores_do_not_run_without_chore_threads(redis_client, slow_chore):
    runs, _release = slow_chore
    worker = StreamWorker(consumer="no-chore-threads", block_ms=50, claim_idle_ms=3_600_000)
    worker.groups_ensure()
    worker.housekeeping()
    assert runs == []
