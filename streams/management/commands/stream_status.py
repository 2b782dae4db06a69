"""`manage.py stream_status`: the event pipeline's state as tables for a terminal."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError
from django.core.serializers.json import DjangoJSONEncoder
from rich.console import Console
from rich.table import Table

from streams.redis import REDIS_ERRORS
from streams.selectors import streams_info


def _idle(ms: int) -> str:
    seconds = ms / 1000
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.0f}m"


class Command(BaseCommand):
    help = (
        "Show each stream's length, first/last ids, the worker group's lag, pending entries and consumers, "
        "the dead-letter length, the outbox backlog and the live workers."
    )

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print the same data as JSON (for scripts).")

    def handle(self, *args, **options):
        try:
            info = streams_info()
        except REDIS_ERRORS as error:
            raise CommandError(f"Redis is unreachable: {error}") from error
        if options["json"]:
            self.stdout.write(json.dumps(info, cls=DjangoJSONEncoder, indent=2))
            return
        console = Console(file=self.stdout, width=140, force_terminal=False)

        streams = Table(title="Streams (group: consumer group of the workers)")
        for column in ("stream", "length", "first id", "last id", "lag", "pending", "consumers"):
            streams.add_column(column, justify="right" if column in ("length", "lag", "pending") else "left")
        for stream in info["streams"]:
            group = stream["group"]
            lag = f"{group['lag']}" + ("" if group["lag_exact"] else "+")
            consumers = ", ".join(
                f"{c['name']} ({c['pending']} pending, idle {_idle(c['idle_ms'])})" for c in group["consumers"]
            )
            streams.add_row(
                stream["name"],
                str(stream["length"]),
                stream["first_entry_id"] or "-",
                stream["last_entry_id"] or "-",
                lag if group["exists"] else f"{lag} (no group)",
                str(group["pending"]),
                consumers or "-",
            )
        console.print(streams)

        workers = Table(title="Live workers (heartbeats)")
        for column in ("consumer", "host", "pid", "started", "events processed", "last batch", "partitions"):
            workers.add_column(column)
        for worker in info["workers"]:
            workers.add_row(
                worker["consumer"],
                worker["host"] or "-",
                worker["pid"] or "-",
                worker["started_at"] or "-",
                str(worker["events_processed"]),
                worker["last_batch_at"] or "-",
                ",".join(str(partition) for partition in worker["partitions"]) or "-",
            )
        console.print(workers if info["workers"] else "No live workers: no heartbeat in the last 30 s.")

        partitions = info["partitions"]
        if partitions["count"] > 1:
            by_partition = {s["partition"]: s for s in info["streams"] if s["partition"] is not None}
            leases = Table(title=f"Partitions ({partitions['count']}, STREAM_PARTITIONS): lease holder and backlog")
            for column in ("partition", "held by", "lease left", "lag", "pending"):
                leases.add_column(column, justify="left" if column == "held by" else "right")
            for lease in partitions["leases"]:
                group = by_partition.get(lease["partition"], {}).get("group", {})
                leases.add_row(
                    str(lease["partition"]),
                    lease["owner"] or "- (free)",
                    f"{lease['expires_in_ms'] / 1000:.1f}s" if lease["expires_in_ms"] is not None else "-",
                    str(group.get("lag", 0)),
                    str(group.get("pending", 0)),
                )
            console.print(leases)

        outbox = info["outbox"]
        totals = info["totals"]
        oldest = f", oldest {outbox['oldest_created_at']:%Y-%m-%d %H:%M:%S}" if outbox["oldest_created_at"] else ""
        self.stdout.write(
            f"Summary: lag {totals['lag']}, pending {totals['pending']}, "
            f"dead letters {info['dead_letter']['length']}, outbox backlog {outbox['backlog']}{oldest}, "
            f"live workers {len(info['workers'])}."
        )
