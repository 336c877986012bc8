from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from algomirror.domain.calendar import default_calendar, is_expired
from algomirror.domain.errors import ExpiryNotResolved
from algomirror.domain.expiry_choice import (
    EXPIRY_CHOICES,
    calendar_listed_expiries,
    live_expiries,
    monthly_expiries,
    resolve_expiry,
)
from algomirror.domain.instruments import format_expiry_dashed
from algomirror.domain.timeutil import IST

CAL = default_calendar()


def ist(year: int, month: int, day: int, hour: int = 10, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=IST).astimezone(UTC)


def dashed(*days: date) -> list[str]:
    return [format_expiry_dashed(d) for d in days]


# NIFTY options as the gateway lists them in Oct 2025 (Tue 21 Oct is Diwali: that weekly is Mon 20 Oct).
NIFTY_OCT25 = dashed(
    date(2025, 10, 7),
    date(2025, 10, 14),
    date(2025, 10, 20),
    date(2025, 10, 28),
    date(2025, 11, 4),
    date(2025, 11, 11),
    date(2025, 11, 18),
    date(2025, 11, 25),
    date(2025, 12, 30),
)
# NIFTY options in Mar 2026: Tue 3 Mar (Holi) → Mon 2 Mar, Tue 31 Mar (Mahavir Jayanti) → Mon 30 Mar.
NIFTY_MAR26 = dashed(
    date(2026, 3, 2),
    date(2026, 3, 10),
    date(2026, 3, 17),
    date(2026, 3, 24),
    date(2026, 3, 30),
    date(2026, 4, 7),
    date(2026, 4, 13),
    date(2026, 4, 21),
    date(2026, 4, 28),
    date(2026, 5, 26),
)
NO_NOV = dashed(date(2025, 10, 28), date(2025, 12, 30))
NIFTY_FUT = dashed(date(2025, 10, 28), date(2025, 11, 25), date(2025, 12, 30))


@pytest.mark.parametrize(
    ("listed", "instant", "choice", "expected"),
    [
        # an ordinary day in the first week of October
        (NIFTY_OCT25, ist(2025, 10, 6), "current_week", date(2025, 10, 7)),
        (NIFTY_OCT25, ist(2025, 10, 6), "next_week", date(2025, 10, 14)),
        (NIFTY_OCT25, ist(2025, 10, 6), "current_month", date(2025, 10, 28)),
        (NIFTY_OCT25, ist(2025, 10, 6), "next_month", date(2025, 11, 25)),
        # the holiday-shifted week: the listed Monday is the nearest, until 15:30 IST on it
        (NIFTY_OCT25, ist(2025, 10, 15), "current_week", date(2025, 10, 20)),
        (NIFTY_OCT25, ist(2025, 10, 15), "next_week", date(2025, 10, 28)),
        (NIFTY_OCT25, ist(2025, 10, 20, 15, 29, 59), "current_week", date(2025, 10, 20)),
        (NIFTY_OCT25, ist(2025, 10, 20, 15, 30, 0), "current_week", date(2025, 10, 28)),
        (NIFTY_OCT25, ist(2025, 10, 20, 15, 30, 0), "next_week", date(2025, 11, 4)),
        # the monthly's own expiry day: the cut-off decides which month is "current"
        (NIFTY_OCT25, ist(2025, 10, 28, 15, 29, 59), "current_month", date(2025, 10, 28)),
        (NIFTY_OCT25, ist(2025, 10, 28, 15, 30, 0), "current_month", date(2025, 11, 25)),
        # this month's monthly past: §5.3 read literally, next_month is next calendar month's monthly too
        (NIFTY_OCT25, ist(2025, 10, 29), "current_month", date(2025, 11, 25)),
        (NIFTY_OCT25, ist(2025, 10, 29), "next_month", date(2025, 11, 25)),
        (NIFTY_OCT25, ist(2025, 10, 31), "current_week", date(2025, 11, 4)),
        # next month has nothing listed: the month after / the first later month-end
        (NO_NOV, ist(2025, 10, 6), "next_month", date(2025, 12, 30)),
        (NO_NOV, ist(2025, 10, 29), "current_month", date(2025, 12, 30)),
        (dashed(date(2025, 10, 28), date(2026, 2, 24)), ist(2025, 10, 6), "next_month", date(2026, 2, 24)),
        (NIFTY_OCT25, ist(2025, 11, 3), "next_month", date(2025, 12, 30)),
        # month end shifted by a holiday: Mon 30 Mar 2026 is March's monthly (the last listed of March)
        (NIFTY_MAR26, ist(2026, 3, 25), "current_month", date(2026, 3, 30)),
        (NIFTY_MAR26, ist(2026, 3, 25), "next_month", date(2026, 4, 28)),
        (NIFTY_MAR26, ist(2026, 3, 30, 15, 29, 59), "current_week", date(2026, 3, 30)),
        (NIFTY_MAR26, ist(2026, 3, 30, 15, 30), "current_month", date(2026, 4, 28)),
        (NIFTY_MAR26, ist(2026, 3, 31), "current_week", date(2026, 4, 7)),
        (NIFTY_MAR26, ist(2026, 3, 31), "next_month", date(2026, 4, 28)),
        # the IST date decides the month: 1 Apr 2026 00:30 IST is still 31 Mar in UTC
        (NIFTY_MAR26, ist(2026, 4, 1, 0, 30), "next_month", date(2026, 5, 26)),
        # Monday 13 Apr 2026 (Tue 14 Apr holiday) is an ordinary weekly, not April's monthly
        (NIFTY_MAR26, ist(2026, 4, 10), "current_week", date(2026, 4, 13)),
        (NIFTY_MAR26, ist(2026, 4, 10), "current_month", date(2026, 4, 28)),
        # only one listed expiry: "second" choices take the first
        (dashed(date(2025, 11, 25)), ist(2025, 11, 20), "next_week", date(2025, 11, 25)),
        (dashed(date(2025, 11, 25)), ist(2025, 11, 20), "current_month", date(2025, 11, 25)),
        # a monthly-only list (BANKNIFTY): weeks resolve to the nearest monthlies
        (NIFTY_FUT, ist(2025, 10, 6), "current_week", date(2025, 10, 28)),
        (NIFTY_FUT, ist(2025, 10, 6), "next_week", date(2025, 11, 25)),
        # the gateway's order is not trusted, nor its duplicates
        (list(reversed(NIFTY_OCT25)) + NIFTY_OCT25[:2], ist(2025, 10, 6), "next_week", date(2025, 10, 14)),
    ],
)
def test_resolve_when_options_listed_follows_product_5_3(
    listed: list[str], instant: datetime, choice: str, expected: date
) -> None:
    assert resolve_expiry(choice, "options", listed, instant) == expected


@pytest.mark.parametrize(
    ("instant", "choice", "expected"),
    [
        (ist(2025, 10, 6), "current_week", date(2025, 10, 28)),
        (ist(2025, 10, 6), "current_month", date(2025, 10, 28)),
        (ist(2025, 10, 6), "next_week", date(2025, 11, 25)),
        (ist(2025, 10, 6), "next_month", date(2025, 11, 25)),
        (ist(2025, 10, 28, 15, 29, 59), "current_month", date(2025, 10, 28)),
        (ist(2025, 10, 28, 15, 30), "current_month", date(2025, 11, 25)),
        (ist(2025, 10, 28, 15, 30), "next_month", date(2025, 12, 30)),
        (ist(2025, 11, 26), "next_month", date(2025, 12, 30)),
        # only one contract left: the second falls back to the first
        (ist(2025, 12, 1), "next_month", date(2025, 12, 30)),
    ],
)
def test_resolve_when_futures_listed_takes_nearest_or_second(
    instant: datetime, choice: str, expected: date
) -> None:
    assert resolve_expiry(choice, "futures", NIFTY_FUT, instant) == expected


def test_resolve_when_options_month_and_futures_month_differ_after_monthly_expiry() -> None:
    instant = ist(2025, 10, 29)
    assert resolve_expiry("next_month", "options", NIFTY_FUT, instant) == date(2025, 11, 25)
    assert resolve_expiry("next_month", "futures", NIFTY_FUT, instant) == date(2025, 12, 30)


@pytest.mark.parametrize("choice", EXPIRY_CHOICES)
@pytest.mark.parametrize("kind", ["options", "futures"])
def test_resolve_when_list_empty_or_all_past_raises_could_not_resolve(choice: str, kind: str) -> None:
    with pytest.raises(ExpiryNotResolved, match="could not resolve expiry"):
        resolve_expiry(choice, kind, [], ist(2025, 10, 6))
    with pytest.raises(ExpiryNotResolved):
        resolve_expiry(choice, kind, dashed(date(2025, 10, 7)), ist(2025, 10, 7, 15, 30))


def test_resolve_when_only_this_month_listed_next_month_option_fails() -> None:
    listed = dashed(date(2025, 10, 20), date(2025, 10, 28))
    assert resolve_expiry("current_month", "options", listed, ist(2025, 10, 15)) == date(2025, 10, 28)
    with pytest.raises(ExpiryNotResolved):
        resolve_expiry("next_month", "options", listed, ist(2025, 10, 15))


def test_resolve_when_an_entry_is_unreadable_fails_rather_than_skipping_it() -> None:
    with pytest.raises(ExpiryNotResolved, match="unreadable"):
        resolve_expiry("current_week", "options", ["07OCT25", *NIFTY_OCT25[1:]], ist(2025, 10, 6))


def test_resolve_when_choice_or_kind_unknown_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="expiry choice"):
        resolve_expiry("weekly", "options", NIFTY_OCT25, ist(2025, 10, 6))
    with pytest.raises(ValueError, match="contract kind"):
        resolve_expiry("current_week", "equity", NIFTY_OCT25, ist(2025, 10, 6))


def test_live_expiries_when_dates_and_strings_mixed_sorts_dedupes_and_drops_past() -> None:
    listed: list[date | str] = [date(2025, 10, 14), "07-OCT-25", "14-OCT-25", date(2025, 9, 30)]
    assert live_expiries(listed, ist(2025, 10, 6)) == [date(2025, 10, 7), date(2025, 10, 14)]


def test_monthly_expiries_when_weeks_listed_takes_last_of_each_month() -> None:
    days = live_expiries(NIFTY_MAR26, ist(2026, 3, 1))
    assert monthly_expiries(days) == {
        (2026, 3): date(2026, 3, 30),
        (2026, 4): date(2026, 4, 28),
        (2026, 5): date(2026, 5, 26),
    }


def test_calendar_listed_when_holidays_shift_matches_the_gateway_style_list() -> None:
    options = calendar_listed_expiries("NIFTY", "options", date(2025, 10, 1), date(2025, 11, 30), CAL)
    assert dashed(*options) == NIFTY_OCT25[:-1]
    futures = calendar_listed_expiries("NIFTY", "futures", date(2025, 10, 1), date(2025, 12, 31), CAL)
    assert dashed(*futures) == NIFTY_FUT
    march = calendar_listed_expiries("NIFTY", "options", date(2026, 3, 1), date(2026, 4, 30), CAL)
    assert dashed(*march) == NIFTY_MAR26[:-1]
    with pytest.raises(ValueError, match="contract kind"):
        calendar_listed_expiries("NIFTY", "equity", date(2026, 3, 1), date(2026, 4, 30), CAL)


def test_calendar_listed_when_resolved_picks_the_shifted_monday_of_the_diwali_week() -> None:
    listed = calendar_listed_expiries("NIFTY", "options", date(2025, 10, 1), date(2025, 12, 31), CAL)
    assert resolve_expiry("current_week", "options", listed, ist(2025, 10, 17)) == date(2025, 10, 20)


# --- properties -------------------------------------------------------------------------------------------

_DAYS = st.dates(min_value=date(2025, 1, 1), max_value=date(2026, 12, 31))
_LISTS = st.lists(_DAYS, min_size=1, max_size=20)
_INSTANTS = st.datetimes(
    min_value=datetime(2024, 12, 1), max_value=datetime(2027, 1, 31), timezones=st.just(IST)
).map(lambda d: d.astimezone(UTC))


def _resolve_or_none(choice: str, kind: str, listed: Iterable[date | str], instant: datetime) -> date | None:
    try:
        return resolve_expiry(choice, kind, listed, instant)
    except ExpiryNotResolved:
        return None


@given(listed=_LISTS, instant=_INSTANTS, choice=st.sampled_from(EXPIRY_CHOICES), kind=st.sampled_from(
    ["options", "futures"]
))  # fmt: skip
def test_property_result_is_a_listed_live_expiry_or_a_typed_failure(
    listed: list[date], instant: datetime, choice: str, kind: str
) -> None:
    picked = _resolve_or_none(choice, kind, listed, instant)
    live = [d for d in listed if not is_expired(d, instant)]
    if picked is None:
        # options next_month may fail with live expiries (none after this month); nothing else may
        assert not live or (kind == "options" and choice == "next_month")
    else:
        assert picked in listed
        assert not is_expired(picked, instant)
    # strings and dates are the same list
    assert _resolve_or_none(choice, kind, dashed(*listed), instant) == picked


@given(listed=_LISTS, instant=_INSTANTS, kind=st.sampled_from(["options", "futures"]))
def test_property_next_choices_never_precede_current_ones(
    listed: list[date], instant: datetime, kind: str
) -> None:
    current_week = _resolve_or_none("current_week", kind, listed, instant)
    next_week = _resolve_or_none("next_week", kind, listed, instant)
    assert (current_week is None) == (next_week is None)
    if current_week is not None and next_week is not None:
        assert next_week >= current_week
    current_month = _resolve_or_none("current_month", kind, listed, instant)
    next_month = _resolve_or_none("next_month", kind, listed, instant)
    if current_month is not None and next_month is not None:
        assert next_month >= current_month


@given(listed=_LISTS, instant=_INSTANTS, choice=st.sampled_from(["current_month", "next_month"]))
def test_property_option_month_picks_are_the_last_listed_of_their_month(
    listed: list[date], instant: datetime, choice: str
) -> None:
    picked = _resolve_or_none(choice, "options", listed, instant)
    if picked is None:
        return
    assert picked == max(d for d in listed if (d.year, d.month) == (picked.year, picked.month))
    today = instant.astimezone(IST).date()
    if choice == "current_month":
        # no live expiry is in an earlier month than the one picked
        live = [d for d in listed if not is_expired(d, instant)]
        assert (picked.year, picked.month) == (min(live).year, min(live).month)
    else:
        assert (picked.year, picked.month) > (today.year, today.month)


@given(day=_DAYS, seconds=st.integers(min_value=-3600, max_value=3600))
def test_property_an_expiry_is_current_until_its_1530_cutoff(day: date, seconds: int) -> None:
    cutoff = datetime(day.year, day.month, day.day, 15, 30, tzinfo=IST).astimezone(UTC)
    instant = cutoff + timedelta(seconds=seconds)
    picked = _resolve_or_none("current_week", "options", [day, day + timedelta(days=7)], instant)
    assert picked == (day if seconds < 0 else day + timedelta(days=7))
