"""Reads from a streaming replica: the `replica` alias, the scope that sends reads to it, and its router.

Only code inside `replica_reads()` reads from the replica (the analytics reports). Everything else, every
write and every migration uses `default`, so logins, sessions, django-axes, the answer path and the worker
never depend on it. A router that sent every read to the replica would also send the login, session and
answer reads there, and they must see their own writes at once. With DATABASE_REPLICA_URL unset there is no
`replica` alias and no router, and the scope reads from `default`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connections
from django.db.backends.base.base import BaseDatabaseWrapper

# The alias of DATABASE_REPLICA_URL (mandate_wizard/settings.py).
REPLICA = "replica"

# Where reads go in the current scope; None outside any replica_reads(), and then the router has no opinion.
_read_alias: ContextVar[str | None] = ContextVar("read_alias", default=None)


class ReplicaUnavailable(Exception):
    """The replica was unreachable, or broke or cancelled a query, inside a replica_reads() scope."""


def replica_configured() -> bool:
    """True when DATABASE_REPLICA_URL is set (the `replica` alias exists)."""
    return REPLICA in settings.DATABASES


@contextmanager
def replica_reads() -> Iterator[str]:
    """Send the reads inside to the replica when one is configured, else to default. Yields the alias.

    A replica that is down, or that breaks or cancels a query (a recovery conflict), raises
    ReplicaUnavailable, which mandate_wizard.errors answers with 503 and Retry-After. The broken connection
    is closed first, so the next request connects again. Writes inside still go to default
    (ReplicaRouter). Also usable as a decorator: `@replica_reads()`.
    """
    alias = REPLICA if replica_configured() else DEFAULT_DB_ALIAS
    token = _read_alias.set(alias)
    try:
        yield alias
    except (OperationalError, InterfaceError) as exc:
        # Only the replica's own failures: a connection that raised has errors_occurred set (Django's
        # DatabaseErrorWrapper), and connect() clears it.
        if alias != REPLICA or not connections[REPLICA].errors_occurred:
            raise
        connections[REPLICA].close()
        raise ReplicaUnavailable(f"{type(exc).__name__}: {str(exc).strip()[:200]}") from exc
    finally:
        _read_alias.reset(token)


def read_connection() -> BaseDatabaseWrapper:
    """The connection for raw SQL reads: the replica's inside replica_reads() (when configured), else default's."""
    return connections[_read_alias.get() or DEFAULT_DB_ALIAS]


class ReplicaRouter:
    """Reads inside replica_reads() go to the replica. Writes and migrations always go to default.

    Installed only when DATABASE_REPLICA_URL is set. A write goes to default even for an object read from the
    replica: without a router's answer, Django would write where the object came from.
    """

    def db_for_read(self, model, **hints) -> str | None:
        return _read_alias.get()

    def db_for_write(self, model, **hints) -> str:
        return DEFAULT_DB_ALIAS

    def allow_relation(self, obj1, obj2, **hints) -> bool | None:
        # The replica holds the primary's rows: an object from either may refer to one from the other.
        if {obj1._state.db, obj2._state.db} <= {DEFAULT_DB_ALIAS, REPLICA}:
            return True
        return None

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None, **hints) -> bool | None:
        # The replica gets the schema by streaming the primary's WAL; it is read-only.
        return False if db == REPLICA else None
