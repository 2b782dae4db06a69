"""Reading entity files (JSONL or CSV) into validated rows, each bad row reported with its line number."""

from __future__ import annotations

import csv
import json
import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from entities.models import EMBEDDING_DIMENSIONS, EntityType


@dataclass(frozen=True)
class EntityRow:
    line: int
    id: uuid.UUID | None
    name: str
    entity_type: str
    data: dict
    embedding: list[float] | None


@dataclass(frozen=True)
class RowError:
    line: int
    reason: str


class RowInvalid(ValueError):
    pass


def _embedding(value) -> list[float] | None:
    if value in (None, ""):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise RowInvalid("embedding is not a JSON array of numbers") from None
    if not isinstance(value, list) or len(value) != EMBEDDING_DIMENSIONS:
        raise RowInvalid(f"embedding must be an array of {EMBEDDING_DIMENSIONS} numbers")
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in value):
        raise RowInvalid("embedding must contain only finite numbers")
    return [float(x) for x in value]


def entity_row_parse(line: int, record: dict) -> EntityRow:
    """Validate one record; raise RowInvalid with a readable reason."""
    if not isinstance(record, dict):
        raise RowInvalid("a row must be a JSON object")
    raw_id = record.get("id")
    entity_id = None
    if raw_id not in (None, ""):
        try:
            entity_id = uuid.UUID(str(raw_id))
        except ValueError:
            raise RowInvalid(f"id '{raw_id}' is not a UUID") from None
    name = record.get("name")
    if not isinstance(name, str) or not name.strip():
        raise RowInvalid("name is required and must be a non-blank string")
    entity_type = record.get("entity_type")
    if entity_type not in EntityType.values:
        raise RowInvalid(f"entity_type '{entity_type}' is not one of {', '.join(EntityType.values)}")
    data = record.get("data")
    if data in (None, ""):
        data = {}
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError:
            raise RowInvalid("data is not valid JSON") from None
    if not isinstance(data, dict):
        raise RowInvalid("data must be a JSON object")
    return EntityRow(line, entity_id, name.strip(), entity_type, data, _embedding(record.get("embedding")))


def _records(path: Path) -> Iterator[tuple[int, dict | RowError]]:
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            for record in reader:
                yield reader.line_num, record
        return
    with path.open(encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                yield number, json.loads(text)
            except json.JSONDecodeError as error:
                yield number, RowError(number, f"not valid JSON ({error.msg})")


def entity_rows_read(path: Path) -> Iterator[EntityRow | RowError]:
    """Every row of a .jsonl/.json-lines or .csv file, parsed, or the reason it is bad."""
    seen: set[uuid.UUID] = set()
    for line, record in _records(path):
        if isinstance(record, RowError):
            yield record
            continue
        try:
            row = entity_row_parse(line, record)
        except RowInvalid as error:
            yield RowError(line, str(error))
            continue
        if row.id is not None:
            if row.id in seen:
                yield RowError(line, f"id {row.id} appears more than once in the file")
                continue
            seen.add(row.id)
        yield row
