"""queue_positions.wire_time: queuedAt spelled as the operator writes it, so that the
history's strings compare in time order."""

from datetime import UTC, datetime, timedelta, timezone

from diffleet_api.queue_positions import UNKNOWN_TIME, wire_time


def test_a_time_is_spelled_as_the_operator_writes_queued_at() -> None:
    moment = datetime(2026, 12, 2, 16, 14, 8, 123456, tzinfo=UTC)
    assert wire_time(moment) == "2026-12-02T16:14:08Z"


def test_another_zone_is_spelled_in_utc_and_orders_with_it() -> None:
    east = datetime(2026, 12, 2, 18, 0, 0, tzinfo=timezone(timedelta(hours=2)))
    assert wire_time(east) == "2026-12-02T16:00:00Z"
    assert wire_time(east) < wire_time(datetime(2026, 12, 2, 16, 0, 1, tzinfo=UTC))


def test_no_time_stands_behind_every_queued_job() -> None:
    assert wire_time(None) == UNKNOWN_TIME
    assert wire_time(datetime(9998, 12, 31, tzinfo=UTC)) < UNKNOWN_TIME
