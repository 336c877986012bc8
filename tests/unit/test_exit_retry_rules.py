"""The exit retry's pure rules: the capped backoff, the attempt rounds, and how much a verified retry
may send (never more than our fills or the broker's net say is open)."""

from __future__ import annotations

from algomirror.engine.exit_records import round_end
from algomirror.engine.exit_verify import BrokerView, still_open
from algomirror.engine.exits import ExitRetry


def test_backoff_starts_at_the_first_wait_doubles_and_is_capped_per_round() -> None:
    retry = ExitRetry(attempts=5, first_wait=10.0, max_wait=60.0)
    assert [retry.wait_after(n) for n in range(1, 6)] == [10.0, 20.0, 40.0, 60.0, 60.0]
    assert retry.wait_after(6) == 10.0  # a person's retry starts a new round


def test_rounds_of_attempts() -> None:
    assert [round_end(n) for n in (1, 4, 5, 6, 10, 11)] == [5, 5, 5, 10, 10, 15]
    assert round_end(3, 1) == 3


def test_a_retry_sends_only_what_both_sides_say_is_open() -> None:
    short_open = BrokerView(net=-130, working=(), untracked_fills=0)
    assert still_open(short_open, leg_side="SELL", ours_open=65) == 65  # another strategy's short too
    assert still_open(short_open, leg_side="SELL", ours_open=195) == 130  # never beyond the broker
    flat = BrokerView(net=0, working=(), untracked_fills=0)
    assert still_open(flat, leg_side="SELL", ours_open=65) == 0
    reversed_view = BrokerView(net=65, working=(), untracked_fills=0)
    assert still_open(reversed_view, leg_side="SELL", ours_open=65) == 0  # never reverses
    seen = BrokerView(net=-65, working=(), untracked_fills=65)  # our tagged fill no intent owns
    assert still_open(seen, leg_side="SELL", ours_open=65) == 0
    long_open = BrokerView(net=65, working=(), untracked_fills=0)
    assert still_open(long_open, leg_side="BUY", ours_open=65) == 65
    assert long_open.open_quantity("SELL") == 0
