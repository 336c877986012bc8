"""domain.reservations: margin reservations per run on an account (PRODUCT §9.5)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from algomirror.domain.reservations import entered, funds_left, released, reservation_key, reserve, reserved
from algomirror.domain.sizing import AccountFunds, seller_base

AT = datetime(2026, 12, 3, 4, 0, tzinfo=UTC)


def test_a_run_reserves_its_margin_and_other_runs_see_it() -> None:
    allocated = reserve(None, 12, Decimal("320000.00"), AT)
    allocated = reserve(allocated, 13, Decimal("100000"), AT)
    assert allocated[reservation_key(12)] == {
        "amount": "320000.00",
        "reserved_at": AT.isoformat(),
        "entered_at": None,
    }
    assert reserved(allocated) == Decimal("420000.00")
    assert reserved(allocated, excluding_run=12) == Decimal("100000")
    # The same run again replaces its reservation (a re-plan), it never adds a second one.
    assert reserved(reserve(allocated, 12, Decimal("1"), AT)) == Decimal("100001")


def test_unreadable_and_non_positive_amounts_count_nothing() -> None:
    allocated = {
        "run:1": {"amount": "abc"},
        "run:2": {"amount": "-5"},
        "run:3": "x",
        "run:4": {"amount": "7"},
    }
    assert reserved(allocated) == Decimal(7)
    with pytest.raises(ValueError):
        reserve(None, 1, Decimal(0), AT)
    with pytest.raises(ValueError):
        reserve(None, 1, Decimal(1), AT.replace(tzinfo=None))


def test_a_reservation_is_released_by_the_first_funds_read_after_its_entry_ended() -> None:
    allocated = reserve(reserve(None, 1, Decimal(100), AT), 2, Decimal(50), AT)
    assert entered(allocated, 9, AT) is None  # no reservation of run 9: nothing to write
    ended = entered(allocated, 1, AT + timedelta(seconds=10))
    assert ended is not None
    # A read taken before (or at) the entry's end does not hold its margin yet.
    assert released(ended, AT + timedelta(seconds=10)) == ended
    later = released(ended, AT + timedelta(seconds=11))
    assert list(later) == [reservation_key(2)] and reserved(later) == Decimal(50)
    # Entries this module did not write are kept.
    assert released({"manual": {"amount": "5", "entered_at": AT.isoformat()}}, AT + timedelta(days=1)) == {
        "manual": {"amount": "5", "entered_at": AT.isoformat()}
    }


def test_sizing_uses_the_cash_left_after_other_runs_reservations() -> None:
    funds = AccountFunds(Decimal("1200000"), Decimal("300000"), collateral_included=True)
    assert seller_base(funds_left(funds, Decimal("320000"))) == Decimal("880000")
    assert seller_base(funds_left(funds, Decimal("2000000"))) == Decimal(0)  # never below zero
    assert funds_left(AccountFunds(None, None), Decimal(5)) == AccountFunds(None, None)
    assert funds_left(funds, Decimal(0)) is funds


@given(st.lists(st.tuples(st.integers(1, 50), st.decimals(1, 10**7, places=2)), max_size=20))
def test_the_total_is_the_sum_of_the_latest_reservation_of_each_run(
    entries: list[tuple[int, Decimal]],
) -> None:
    allocated: dict[str, object] | None = None
    latest: dict[int, Decimal] = {}
    for run_id, amount in entries:
        allocated = reserve(allocated, run_id, amount, AT)
        latest[run_id] = amount
    assert reserved(allocated) == sum(latest.values(), Decimal(0))
    for run_id in latest:
        assert reserved(allocated, excluding_run=run_id) == sum(latest.values(), Decimal(0)) - latest[run_id]
