"""The wire format: encoding, decoding and every kind of invalid entry."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from django.conf import settings

from streams.events import InvalidEvent, QuerySignal, UpdateRequest, event_parse

QS = settings.STREAM_QUERY_SIGNALS
UR = settings.STREAM_UPDATE_REQUESTS


def signal_fields(**overrides) -> dict[str, str]:
    fields = {
        "event_id": str(uuid.uuid4()),
        "entity_id": str(uuid.uuid4()),
        "entity_type": "person",
        "query": "who runs drama at Netflix",
        "user_id": "42",
        "timestamp": "2026-11-29T10:00:00Z",
    }
    fields.update(overrides)
    return {name: value for name, value in fields.items() if value is not None}


def request_fields(**overrides) -> dict[str, str]:
    fields = {
        "event_id": str(uuid.uuid4()),
        "entity_ids": json.dumps([str(uuid.uuid4()), str(uuid.uuid4())]),
        "operation": "refresh",
        "source": "data-team",
        "timestamp": "2026-11-29T10:00:00+01:00",
    }
    fields.update(overrides)
    return {name: value for name, value in fields.items() if value is not None}


def test_query_signal_round_trip():
    signal = QuerySignal.new(entity_id=uuid.uuid4(), entity_type="company", query="q", user_id="7")
    fields = signal.to_fields()
    assert all(isinstance(value, str) for value in fields.values())
    assert fields["v"] == "1"
    assert fields["timestamp"].endswith("Z")
    assert event_parse(QS, fields) == signal


def test_role_and_rank_travel_on_the_wire():
    signal = QuerySignal.new(entity_id=uuid.uuid4(), entity_type="company", query="q", role="related", rank=3)
    fields = signal.to_fields()
    assert (fields["role"], fields["rank"]) == ("related", "3")
    parsed = event_parse(QS, fields)
    assert (parsed.role, parsed.rank) == ("related", 3)
    assert parsed == signal


def test_a_signal_without_role_or_rank_is_a_subject_at_rank_one():
    """Old producers and redis-cli entries stay valid."""
    fields = signal_fields()
    assert "role" not in fields and "rank" not in fields
    signal = event_parse(QS, fields)
    assert (signal.role, signal.rank) == ("subject", 1)
    assert event_parse(QS, signal_fields(role="subject", rank="1000")).rank == 1000


def test_update_request_round_trip():
    request = UpdateRequest.new(entity_ids=[uuid.uuid4(), uuid.uuid4()], operation="reindex", source="admin")
    fields = request.to_fields()
    assert json.loads(fields["entity_ids"]) == [str(entity_id) for entity_id in request.entity_ids]
    assert event_parse(UR, fields) == request


def test_hand_written_entry_without_version_or_with_offset_is_accepted():
    fields = signal_fields(timestamp="2026-11-29T11:30:00+01:30", user_id="")
    signal = event_parse(QS, fields)
    assert signal.timestamp == datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
    assert signal.user_id == ""
    request = event_parse(UR, request_fields())
    assert request.timestamp.utcoffset() == timedelta(hours=1)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (signal_fields(event_id=None), "missing field 'event_id'"),
        (signal_fields(entity_id=None), "missing field 'entity_id'"),
        (signal_fields(query=None), "missing field 'query'"),
        (signal_fields(user_id=None), "missing field 'user_id'"),
        (signal_fields(timestamp=None), "missing field 'timestamp'"),
        (signal_fields(event_id="not-a-uuid"), "'event_id' is not a UUID"),
        (signal_fields(entity_id="1234"), "'entity_id' is not a UUID"),
        (signal_fields(entity_type="spaceship"), "unknown entity_type 'spaceship'"),
        (signal_fields(timestamp="yesterday"), "'timestamp' is not ISO 8601"),
        (signal_fields(timestamp="2026-11-29T10:00:00"), "no 'Z' or UTC offset"),
        (signal_fields(v="2"), "unsupported schema version"),
        (signal_fields(timestamp="0001-01-01T00:00:00+01:00"), "'timestamp' is out of range"),
        (signal_fields(role="primary"), "unknown role 'primary'"),
        (signal_fields(role=""), "unknown role ''"),
        (signal_fields(role="Subject"), "unknown role 'Subject'"),
        (signal_fields(rank="0"), "'rank' must be an integer from 1 to 1000"),
        (signal_fields(rank="-1"), "'rank' must be an integer"),
        (signal_fields(rank="1.5"), "'rank' must be an integer"),
        (signal_fields(rank=" 2"), "'rank' must be an integer"),
        (signal_fields(rank="two"), "'rank' must be an integer"),
        (signal_fields(rank=""), "'rank' must be an integer"),
        (signal_fields(rank="1001"), "'rank' must be an integer"),
        (signal_fields(rank="\u0662"), "'rank' must be an integer"),
    ],
)
def test_invalid_query_signals(fields, reason):
    with pytest.raises(InvalidEvent) as raised:
        event_parse(QS, fields)
    assert reason in raised.value.reason


def test_timestamp_more_than_five_minutes_ahead_is_invalid_but_small_skew_is_not():
    now = datetime.now(UTC)
    ahead = (now + timedelta(minutes=6)).isoformat()
    with pytest.raises(InvalidEvent, match="more than 5 minutes in the future"):
        event_parse(QS, signal_fields(timestamp=ahead))
    skewed = (now + timedelta(minutes=4)).astimezone(timezone(timedelta(hours=-5))).isoformat()
    assert event_parse(QS, signal_fields(timestamp=skewed)).timestamp > now


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (request_fields(entity_ids=None), "missing field 'entity_ids'"),
        (request_fields(operation=None), "missing field 'operation'"),
        (request_fields(source=None), "missing field 'source'"),
        (request_fields(entity_ids="not json"), "not a JSON array"),
        (request_fields(entity_ids="[]"), "non-empty JSON array"),
        (request_fields(entity_ids='{"a": 1}'), "non-empty JSON array"),
        (request_fields(entity_ids='["abc"]'), "'entity_ids' is not a UUID"),
        (request_fields(entity_ids="[42]"), "'entity_ids' is not a UUID"),
        (request_fields(operation="delete"), "unknown operation 'delete'"),
        (request_fields(event_id="x"), "'event_id' is not a UUID"),
        (request_fields(source="s" * 201), "'source' is longer than 200 characters"),
    ],
)
def test_invalid_update_requests(fields, reason):
    with pytest.raises(InvalidEvent) as raised:
        event_parse(UR, fields)
    assert reason in raised.value.reason


def test_unknown_stream_is_invalid():
    with pytest.raises(InvalidEvent, match="no event type"):
        event_parse("somewhere:else", signal_fields())
