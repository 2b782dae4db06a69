"""Fixtures of the pipeline tests: real worker subprocesses."""

from __future__ import annotations

import pytest

from tests.streams.pipeline import WorkerProcess


@pytest.fixture
def start_worker(tmp_path):
    """Start `run_stream_worker` subprocesses (killed at the end if still running; their log tails printed)."""
    started: list[WorkerProcess] = []

    def start(consumer: str, *args: str, **kwargs) -> WorkerProcess:
        worker = WorkerProcess(log_dir=tmp_path, consumer=consumer, args=args, **kwargs)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.ensure_ended()
        lines = worker.log().splitlines()
        print(f"--- {worker.log_path.name} (batch lines left out)", *lines[-60:], sep="\n")
