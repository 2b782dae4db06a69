"""Every entities test starts without throttle counters (the cache) and with the publisher's circuit closed."""

from __future__ import annotations

import pytest
from django.core.cache import cache

from streams.publisher import redis_circuit


@pytest.fixture(autouse=True)
def clean_state():
    cache.clear()
    redis_circuit.reset()
    yield
    redis_circuit.reset()
    cache.clear()
