"""engine.command_rows: the retry delay of a command and the values a command ends with."""

from __future__ import annotations

from datetime import UTC, datetime

from algomirror.engine.command_rows import end_values, retry_delay

NOW = datetime(2026, 12, 3, 9, 30, tzinfo=UTC)


def test_the_retry_delay_doubles_per_attempt_up_to_its_cap() -> None:
    assert [retry_delay(1.0, n) for n in range(1, 8)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert retry_delay(0.0, 3) == 0.0


def test_the_retry_delay_of_an_unbounded_command_never_overflows() -> None:
    # An unresolved command is retried for ever: 2 ** 1024 would not fit a float.
    assert retry_delay(1.0, 1025) == 30.0
    assert retry_delay(1.0, 10**6) == 30.0


def test_a_retry_without_an_attempt_limit_stays_pending_however_many_attempts() -> None:
    values = end_values("retry", result={"x": 1}, error="open", attempts=500, max_attempts=None, now=NOW)
    assert values["status"] == "pending" and values["result"] == {"attempts": 500}
    limited = end_values("retry", result={"x": 1}, error="open", attempts=5, max_attempts=5, now=NOW)
    assert limited["status"] == "failed" and limited["error"] == "gave up after 5 attempts: open"
