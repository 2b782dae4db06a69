"""Database URLs for subprocesses, and throwaway databases for benchmarks, on the server Django uses."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from django.db import connection


def pg_array_literal(values: Iterable[uuid.UUID | int | datetime]) -> str:
    """A PostgreSQL array literal of values whose text form needs no quoting: UUIDs, ints, aware datetimes.

    One string parameter instead of a list: psycopg adapts a list element by element in Python, which
    cost the stream worker more than its statements take in PostgreSQL. `str()` of an aware datetime
    (`2026-11-30 12:00:00+00:00`) is valid timestamptz input.
    """
    return "{" + ",".join(map(str, values)) + "}"


def database_url(*, name: str | None = None) -> str:
    """A URL for database `name` (default: the current one) on Django's server, with its credentials."""
    db = connection.settings_dict
    user, password = quote(db["USER"] or "", safe=""), quote(db["PASSWORD"] or "", safe="")
    auth = f"{user}:{password}@" if password else f"{user}@" if user else ""
    return f"postgres://{auth}{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{name or db['NAME']}"


@contextmanager
def throwaway_database(
    *, prefix: str, env: dict[str, str], keep: bool = False, say: Callable[[str], None] = print
) -> Iterator[str]:
    """Create and migrate a database named `prefix_<random>` next to the current one; yield its URL.

    `env` is the environment of the `migrate` subprocess (its DATABASE_URL is set here). The database is
    dropped afterwards, even when the body fails, unless `keep`.
    """
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    url = database_url(name=name)
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    say(f"throwaway database {name}")
    try:
        manage = str(Path(settings.BASE_DIR) / "manage.py")
        subprocess.run(
            [sys.executable, manage, "migrate", "--noinput", "-v0"], env={**env, "DATABASE_URL": url}, check=True
        )
        yield url
    finally:
        if not keep:
            connection.close()
            with connection.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            say(f"dropped {name}")
