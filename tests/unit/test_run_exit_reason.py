"""A closed run's exit reason: the one most of its exited legs carry, not the closing exit's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from algomirror.engine.exit_records import run_exit_reason

T = datetime(2026, 12, 9, 5, 0, tzinfo=UTC)


def at(seconds: int) -> datetime:
    return T + timedelta(seconds=seconds)


def test_the_closing_exit_s_reason_when_it_is_the_legs_reason() -> None:
    legs = [("max_loss", at(1)), ("max_loss", at(2))]
    assert run_exit_reason(legs, "max_loss", "exit of the run") == ("max_loss", "exit of the run")


def test_the_majority_of_legs_wins_over_the_exit_that_finished_last() -> None:
    legs = [("max_loss", at(1))] * 4 + [("manual", at(9))] * 2
    reason, detail = run_exit_reason(legs, "manual", "exit of an account")
    assert reason == "max_loss"
    assert detail == "4 of 6 legs exited for max_loss; the last exit: exit of an account (manual)"


def test_a_tie_goes_to_the_reason_whose_first_leg_exited_first() -> None:
    legs = [("manual", at(5)), ("kill_switch", at(3)), ("manual", at(6)), ("kill_switch", at(8))]
    assert run_exit_reason(legs, "manual", "exit of one leg")[0] == "kill_switch"
    # A leg without an exit time counts as the last.
    legs = [("manual", None), ("time_exit", at(30))]
    assert run_exit_reason(legs, "manual", "exit of one leg")[0] == "time_exit"


def test_legs_without_a_reason_fall_back_to_the_closing_exit() -> None:
    assert run_exit_reason([(None, at(1))], "manual", "exit all") == ("manual", "exit all")
    assert run_exit_reason([], "square_off", "exit of the run") == ("square_off", "exit of the run")
