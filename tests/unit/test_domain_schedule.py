"""The pure schedule decisions (domain/schedule.py): what is due at an instant for a strategy's entry,
exit and square-off times, the grace window of entries, the MIS warning, expiry-day matching."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from algomirror.domain.calendar import default_calendar
from algomirror.domain.schedule import (
    DayFacts,
    LegContract,
    OpenRun,
    Schedule,
    due_actions,
    is_expiry_day,
    market_condition_matches,
    next_due,
)
from algomirror.domain.timeutil import ist_combine

WED = date(2026, 12, 9)  # a regular Wednesday: no NIFTY expiry
TUE = date(2026, 12, 8)  # a NIFTY weekly expiry
GRACE = timedelta(seconds=120)
SCHEDULE = Schedule(entry=time(9, 20), exit=time(15, 0), square_off=time(15, 15))


def facts(
    day: date = WED, *, trading: bool = True, matches: bool = True, in_session: bool = True
) -> DayFacts:
    return DayFacts(
        today=day,
        trading_day=trading,
        condition_matches=matches,
        in_session=in_session,
        close=ist_combine(day, time(15, 30)) if trading else None,
        previous_trading_day=day - timedelta(days=1),
    )


def at(hh: int, mm: int, ss: int = 0, day: date = WED) -> datetime:
    return ist_combine(day, time(hh, mm, ss))


def kinds(found: list[object]) -> list[str]:
    return [d.kind for d in found]  # type: ignore[attr-defined]


def run(started: datetime, *, mis: bool = True) -> OpenRun:
    return OpenRun(run_id=7, started_at=started, has_mis=mis)


def test_entry_is_due_from_entry_time_within_the_grace_window() -> None:
    assert due_actions(SCHEDULE, facts(), None, at(9, 19, 59), GRACE) == []
    due = due_actions(SCHEDULE, facts(), None, at(9, 20), GRACE)
    assert kinds(due) == ["entry"]
    assert due[0].day == WED and due[0].at == at(9, 20)
    assert kinds(due_actions(SCHEDULE, facts(), None, at(9, 22), GRACE)) == ["entry"]


def test_ist_entry_time_is_the_utc_instant_five_and_a_half_hours_earlier() -> None:
    due = due_actions(SCHEDULE, facts(), None, datetime(2026, 12, 9, 3, 50, tzinfo=UTC), GRACE)
    assert kinds(due) == ["entry"]
    assert due[0].at == datetime(2026, 12, 9, 3, 50, tzinfo=UTC)


def test_entry_beyond_grace_is_missed_not_sent() -> None:
    due = due_actions(SCHEDULE, facts(), None, at(9, 22, 1), GRACE)
    assert kinds(due) == ["entry_missed"]
    assert "grace" in due[0].reason


def test_no_entry_on_a_non_trading_or_non_matching_day() -> None:
    assert due_actions(SCHEDULE, facts(trading=False), None, at(9, 20), GRACE) == []
    assert due_actions(SCHEDULE, facts(matches=False), None, at(9, 20), GRACE) == []
    # Not a matching day: nothing is "missed" either.
    assert due_actions(SCHEDULE, facts(matches=False), None, at(12, 0), GRACE) == []


def test_an_open_run_waits_out_the_grace_window_then_the_entry_is_missed() -> None:
    open_run = run(at(9, 0, day=WED - timedelta(days=1)), mis=False)
    sched = Schedule(entry=time(9, 20))
    assert due_actions(sched, facts(), open_run, at(9, 20), GRACE) == []
    due = due_actions(sched, facts(), open_run, at(9, 23), GRACE)
    assert kinds(due) == ["entry_missed"] and "still open" in due[0].reason


def test_square_off_time_blocks_entries_for_the_day_even_within_grace() -> None:
    wide = timedelta(hours=8)
    due = due_actions(SCHEDULE, facts(), None, at(15, 16), wide)
    assert kinds(due) == ["entry_missed"] and "square-off" in due[0].reason
    assert kinds(due_actions(SCHEDULE, facts(), None, at(14, 0), wide)) == ["entry"]


def test_exit_due_at_exit_time_for_a_run_started_before_it() -> None:
    open_run = run(at(9, 20), mis=False)
    assert kinds(due_actions(SCHEDULE, facts(), open_run, at(14, 59), GRACE)) == []
    due = due_actions(SCHEDULE, facts(), open_run, at(15, 0), GRACE)
    assert kinds(due) == ["exit"] and due[0].run_id == 7 and due[0].day == WED


def test_a_run_started_after_the_exit_time_is_not_exited_that_day() -> None:
    late_run = run(at(15, 5), mis=False)
    assert kinds(due_actions(SCHEDULE, facts(), late_run, at(15, 10), GRACE)) == []


def test_missed_exit_of_the_previous_trading_day_is_due_at_the_next_open() -> None:
    yesterday = WED - timedelta(days=1)
    open_run = run(at(9, 20, day=yesterday), mis=False)
    due = due_actions(SCHEDULE, facts(), open_run, at(9, 15), GRACE)
    assert kinds(due) == ["exit"] and due[0].day == yesterday


def test_exits_wait_for_the_session() -> None:
    open_run = run(at(9, 20), mis=True)
    assert due_actions(SCHEDULE, facts(in_session=False), open_run, at(15, 40), GRACE) == []


def test_square_off_replaces_the_exit_for_an_mis_run() -> None:
    open_run = run(at(9, 20), mis=True)
    assert kinds(due_actions(SCHEDULE, facts(), open_run, at(15, 0), GRACE)) == ["exit"]
    due = due_actions(SCHEDULE, facts(), open_run, at(15, 15), GRACE)
    assert kinds(due) == ["square_off"] and due[0].run_id == 7
    # NRML runs are not squared off: their exit time still applies.
    nrml = run(at(9, 20), mis=False)
    assert kinds(due_actions(SCHEDULE, facts(), nrml, at(15, 15), GRACE)) == ["exit"]


def test_mis_warning_in_the_last_ten_minutes_without_a_square_off_time() -> None:
    sched = Schedule(entry=time(9, 20))
    open_run = run(at(9, 20), mis=True)
    assert due_actions(sched, facts(), open_run, at(15, 19, 59), GRACE) == []
    assert kinds(due_actions(sched, facts(), open_run, at(15, 20), GRACE)) == ["mis_warning"]
    assert due_actions(sched, facts(), open_run, at(15, 30), GRACE) == []
    assert due_actions(SCHEDULE, facts(), open_run, at(15, 20), GRACE)[0].kind == "square_off"
    assert due_actions(sched, facts(), run(at(9, 20), mis=False), at(15, 25), GRACE) == []


def test_naive_now_and_negative_grace_are_refused() -> None:
    with pytest.raises(ValueError):
        due_actions(SCHEDULE, facts(), None, datetime(2026, 12, 9, 9, 20), GRACE)
    with pytest.raises(ValueError):
        due_actions(SCHEDULE, facts(), None, at(9, 20), timedelta(seconds=-1))


def test_next_due_is_the_next_scheduled_instant_today() -> None:
    assert next_due(SCHEDULE, facts(), at(9, 0)) == at(9, 20)
    assert next_due(SCHEDULE, facts(), at(9, 20)) == at(15, 0)
    assert next_due(SCHEDULE, facts(), at(15, 15)) == at(15, 20)  # the MIS warning instant
    assert next_due(SCHEDULE, facts(), at(15, 25)) is None
    assert next_due(SCHEDULE, facts(trading=False), at(9, 0)) is None


def test_market_condition() -> None:
    assert market_condition_matches("any", True) and market_condition_matches("any", False)
    assert market_condition_matches("expiry", True) and not market_condition_matches("expiry", False)
    assert market_condition_matches("non_expiry", False) and not market_condition_matches("non_expiry", True)
    with pytest.raises(ValueError):
        market_condition_matches("sometimes", True)


def test_expiry_day_is_the_traded_contracts_expiry() -> None:
    cal = default_calendar()
    weekly = LegContract("NIFTY", "options", "current_week")
    assert is_expiry_day([weekly], TUE, cal)
    assert not is_expiry_day([weekly], WED, cal)
    # The next week's contract does not expire today; the monthly expires on the last Tuesday.
    assert not is_expiry_day([LegContract("NIFTY", "options", "next_week")], TUE, cal)
    assert is_expiry_day([LegContract("NIFTY", "futures", "current_month")], date(2026, 12, 29), cal)
    # SENSEX (BFO) expires on Thursdays: one matching leg is enough.
    assert is_expiry_day([weekly, LegContract("SENSEX", "options", "current_week")], date(2026, 12, 3), cal)
    # Equity legs, unknown instruments and empty legs never make an expiry day.
    assert not is_expiry_day(
        [LegContract("NIFTY", "equity", None), LegContract("NOPE", "options", "current_week")], TUE, cal
    )
    assert not is_expiry_day([], TUE, cal)


instants = st.datetimes(
    min_value=datetime(2026, 12, 9, 0, 0), max_value=datetime(2026, 12, 9, 23, 59, 59), timezones=st.just(UTC)
)


@given(now=instants, grace=st.integers(min_value=0, max_value=3600))
def test_entries_only_ever_within_grace_before_square_off(now: datetime, grace: int) -> None:
    window = timedelta(seconds=grace)
    for due in due_actions(SCHEDULE, facts(), None, now, window):
        if due.kind == "entry":
            assert at(9, 20) <= now <= at(9, 20) + window
            assert now < at(15, 0)
        if due.kind == "entry_missed":
            assert now > at(9, 20) + window or now >= at(15, 0)


@given(now=instants, started=instants, mis=st.booleans())
def test_exits_only_for_runs_started_before_their_instant(
    now: datetime, started: datetime, mis: bool
) -> None:
    open_run = OpenRun(3, started, mis)
    for due in due_actions(SCHEDULE, facts(), open_run, now, GRACE):
        if due.kind in ("exit", "square_off"):
            assert started < due.at <= now
            assert due.run_id == 3
        assert due.kind != "entry"  # a run is open
    found = kinds(due_actions(SCHEDULE, facts(), open_run, now, GRACE))
    assert not ("exit" in found and "square_off" in found)
