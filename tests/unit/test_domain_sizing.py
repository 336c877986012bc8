"""Quantity per account: fixed lots and grade (margin) profiles (PRODUCT §4.1, §5.6–5.7, §9.1–9.3)."""

from __future__ import annotations

import random
from dataclasses import asdict, replace
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from algomirror.db.defaults import DEFAULT_GRADES, DEFAULT_MARGINS
from algomirror.domain.errors import (
    AccountRefused,
    ExecuteRefused,
    FundsUnavailable,
    GradeLegConflict,
    InvalidSizingInput,
    MissingMarginRow,
    UnknownGrade,
)
from algomirror.domain.sizing import (
    AccountFunds,
    AccountShare,
    Action,
    Grade,
    GradeSizing,
    LegKind,
    MarginRates,
    SizingLeg,
    allocate_lots,
    buyer_base,
    calculate_lots,
    margin_base,
    profile_grade_name,
    resolve_grade,
    seller_base,
    size_account,
    size_by_grade,
    size_fixed,
)

D = Decimal

# PRODUCT §9.1, written out here so a change of the seed defaults is noticed (see the drift test).
MARGINS = {
    "NIFTY": MarginRates(D(205000), D(250000), D(250000), D(320000), D(215000), D(215000), D(20000)),
    "BANKNIFTY": MarginRates(D(205000), D(250000), D(250000), D(320000), D(215000), D(215000), D(20000)),
    "SENSEX": MarginRates(D(180000), D(220000), D(225000), D(290000), D(185000), D(185000), D(20000)),
}
LOT = {"NIFTY": 65, "BANKNIFTY": 30, "SENSEX": 20}
A = Grade("A", D(95))
B = Grade("B", D(65))
C = Grade("C", D(36))
BUYER = Grade("BUYER", D(50), "cash")


def leg(
    index: int,
    instrument: str,
    action: Action,
    kind: LegKind,
    *,
    lots: int = 1,
    expiry_day: bool = False,
    hedges_open_lots: int | None = None,
    premium_per_lot: Decimal | None = None,
) -> SizingLeg:
    return SizingLeg(
        index=index,
        instrument=instrument,
        action=action,
        kind=kind,
        lot_size=LOT[instrument],
        lots=lots,
        expiry_day=expiry_day,
        hedges_open_lots=hedges_open_lots,
        premium_per_lot=premium_per_lot,
    )


def iron_condor(instrument: str = "NIFTY", start: int = 0, *, expiry_day: bool = False) -> list[SizingLeg]:
    return [
        leg(start, instrument, "SELL", "CE", expiry_day=expiry_day),
        leg(start + 1, instrument, "SELL", "PE", expiry_day=expiry_day),
        leg(start + 2, instrument, "BUY", "CE", expiry_day=expiry_day),
        leg(start + 3, instrument, "BUY", "PE", expiry_day=expiry_day),
    ]


def lots_of(result: GradeSizing) -> list[int]:
    return [size.lots for size in result.legs]


# --- the worked example of §5.7 -----------------------------------------------------------------------------


def test_worked_example_when_grade_b_on_12_lakh_condor_takes_2_lots_and_sensex_sell_is_skipped() -> None:
    funds = AccountFunds(available_cash=D(1200000), collateral=D(300000), collateral_included=True)
    legs = [*iron_condor("NIFTY"), leg(4, "SENSEX", "SELL", "CE")]

    result = size_account(legs, B, funds, MARGINS)

    assert result.base == D(1200000)
    assert result.budget == D(780000)
    assert lots_of(result) == [2, 2, 2, 2, 0]
    assert [s.quantity for s in result.legs] == [130, 130, 130, 130, 0]
    assert {s.basis for s in result.legs[:4]} == {"pair_sell"}
    assert [s.charged for s in result.legs] == [D(640000), 0, 0, 0, 0]
    assert [s.budget_left for s in result.legs[:4]] == [D(140000)] * 4
    assert result.budget_left == D(140000)
    sensex = result.leg(4)
    assert sensex.skipped
    assert sensex.basis == "single_sell"
    assert sensex.margin_per_lot == D(220000)
    assert sensex.reason == "insufficient margin: ₹2,20,000 per lot, ₹1,40,000 left"
    assert all(s.reason is None for s in result.legs[:4])


def test_budget_when_later_leg_sized_uses_remainder_without_applying_grade_again() -> None:
    # D = 6,00,000 × 90 % = 5,40,000; pair 3,20,000 → 1 lot, 2,20,000 left = one SENSEX single sell.
    # The original applied p again (2,20,000 × 0.9 = 1,98,000) and gave 0.
    legs = [leg(0, "NIFTY", "SELL", "CE"), leg(1, "NIFTY", "SELL", "PE"), leg(2, "SENSEX", "SELL", "PE")]

    result = size_by_grade(legs, Grade("X", D(90)), D(600000), MARGINS)

    assert lots_of(result) == [1, 1, 1]
    assert result.budget_left == 0


# --- strategy shapes ----------------------------------------------------------------------------------------


def test_straddle_when_both_sides_sold_is_sized_as_one_pair() -> None:
    legs = [leg(0, "BANKNIFTY", "SELL", "CE"), leg(1, "BANKNIFTY", "SELL", "PE")]

    result = size_by_grade(legs, C, D(1000000), MARGINS)  # D = 3,60,000

    assert lots_of(result) == [1, 1]
    assert [s.quantity for s in result.legs] == [30, 30]
    assert result.charged == D(320000)
    assert result.budget_left == D(40000)


def test_strangle_when_grade_a_on_sensex_uses_sensex_pair_rate() -> None:
    legs = [leg(0, "SENSEX", "SELL", "PE"), leg(1, "SENSEX", "SELL", "CE")]

    result = size_by_grade(legs, A, D(2000000), MARGINS)  # D = 19,00,000; / 2,90,000 → 6

    assert lots_of(result) == [6, 6]
    assert [s.quantity for s in result.legs] == [120, 120]
    assert result.budget_left == D(160000)


def test_bull_put_spread_when_vertical_sizes_both_legs_at_single_rate_charged_once_on_first_leg() -> None:
    legs = [leg(0, "NIFTY", "BUY", "PE"), leg(1, "NIFTY", "SELL", "PE")]

    result = size_by_grade(legs, B, D(1200000), MARGINS)  # 7,80,000 / 2,50,000 → 3

    assert lots_of(result) == [3, 3]
    assert {s.basis for s in result.legs} == {"single_sell"}
    assert [s.charged for s in result.legs] == [D(750000), 0]
    assert result.budget_left == D(30000)


def test_iron_fly_when_expiry_day_uses_expiry_pair_column() -> None:
    result = size_by_grade(iron_condor("NIFTY", expiry_day=True), B, D(1200000), MARGINS)

    assert lots_of(result) == [3, 3, 3, 3]  # 7,80,000 / 2,50,000
    assert result.legs[0].margin_per_lot == D(250000)
    assert result.budget_left == D(30000)


@pytest.mark.parametrize(
    ("expiry_day", "rate", "lots"),
    [(True, D(205000), 3), (False, D(250000), 3)],
)
def test_single_sell_when_expiry_flag_set_reads_that_column(
    expiry_day: bool, rate: Decimal, lots: int
) -> None:
    result = size_by_grade([leg(0, "NIFTY", "SELL", "CE", expiry_day=expiry_day)], B, D(1200000), MARGINS)

    assert result.legs[0].margin_per_lot == rate
    assert result.legs[0].lots == lots
    assert result.budget_left == D(780000) - lots * rate


def test_expiry_day_when_sensex_pair_reads_225000_and_other_day_290000() -> None:
    straddle = [leg(0, "SENSEX", "SELL", "CE"), leg(1, "SENSEX", "SELL", "PE")]
    on_expiry = [replace(x, expiry_day=True) for x in straddle]

    assert size_by_grade(on_expiry, A, D(1000000), MARGINS).legs[0].lots == 4  # 9,50,000 / 2,25,000
    assert size_by_grade(straddle, A, D(1000000), MARGINS).legs[0].lots == 3  # / 2,90,000


def test_calendar_when_group_legs_disagree_on_expiry_day_charges_dearer_column() -> None:
    legs = [leg(0, "NIFTY", "SELL", "CE", expiry_day=True), leg(1, "NIFTY", "BUY", "CE", expiry_day=False)]

    result = size_by_grade(legs, B, D(1200000), MARGINS)

    assert result.legs[0].margin_per_lot == D(250000)


@pytest.mark.parametrize("action", ["BUY", "SELL"])
def test_futures_when_either_side_uses_futures_rate(action: Action) -> None:
    result = size_by_grade([leg(0, "NIFTY", action, "FUT")], A, D(1000000), MARGINS)

    assert result.legs[0].basis == "futures"
    assert result.legs[0].lots == 4  # 9,50,000 / 2,15,000
    assert result.legs[0].quantity == 260
    assert result.budget_left == D(90000)


def test_futures_when_beside_a_condor_are_sized_after_the_pair() -> None:
    legs = [leg(0, "NIFTY", "SELL", "FUT"), *iron_condor("NIFTY", 1)]

    result = size_by_grade(legs, A, D(1000000), MARGINS)  # D 9,50,000: pair 2 (6,40,000), FUT 1 (2,15,000)

    assert lots_of(result) == [1, 2, 2, 2, 2]
    assert result.leg(0).allocation == 1
    assert result.leg(1).allocation == 0
    assert result.budget_left == D(95000)


def test_standalone_buy_when_seller_grade_takes_its_own_lots_charged_at_premium() -> None:
    result = size_by_grade([leg(0, "NIFTY", "BUY", "CE", lots=3)], B, D(1200000), MARGINS)

    size = result.legs[0]
    assert (size.lots, size.quantity, size.basis) == (3, 195, "premium")
    assert size.charged == D(60000)
    assert size.reason is None


def test_standalone_buy_when_budget_short_gets_what_fits_and_says_so() -> None:
    result = size_by_grade([leg(0, "NIFTY", "BUY", "CE", lots=3)], B, D(70000), MARGINS)  # D 45,500

    assert result.legs[0].lots == 2
    assert result.legs[0].reason == "insufficient margin for 3 lots: ₹20,000 per lot, ₹45,500 left"
    assert result.budget_left == D(5500)


def test_standalone_buy_when_short_future_on_instrument_is_still_standalone() -> None:
    legs = [leg(0, "NIFTY", "SELL", "FUT"), leg(1, "NIFTY", "BUY", "CE", lots=2)]

    result = size_by_grade(legs, A, D(1000000), MARGINS)  # FUT 4 → 90,000 left; BUY 2 × 20,000

    assert lots_of(result) == [4, 2]
    assert result.legs[1].basis == "premium"
    assert result.budget_left == D(50000)


def test_buy_when_cash_grade_takes_floor_of_budget_over_premium() -> None:
    funds = AccountFunds(available_cash=D(500000), collateral=D(100000), collateral_included=True)

    result = size_account([leg(0, "NIFTY", "BUY", "PE")], BUYER, funds, MARGINS)

    assert result.base == D(400000)
    assert result.budget == D(200000)
    assert result.legs[0].lots == 10  # the leg's own lots (1) do not limit a cash grade
    assert result.legs[0].quantity == 650
    assert result.budget_left == 0


def test_buy_when_cash_grade_and_premium_known_uses_ltp_times_lot() -> None:
    premium = D("150.00") * 65  # 9,750 per lot
    legs = [leg(0, "NIFTY", "BUY", "CE", premium_per_lot=premium)]

    result = size_by_grade(legs, BUYER, D(400000), MARGINS)

    assert result.legs[0].lots == 20
    assert result.legs[0].margin_per_lot == premium
    assert result.budget_left == D(5000)


@pytest.mark.parametrize(("action", "kind"), [("SELL", "CE"), ("BUY", "FUT"), ("SELL", "FUT")])
def test_cash_grade_when_holding_sell_or_futures_refuses_the_execute(action: Action, kind: LegKind) -> None:
    legs = [leg(0, "NIFTY", "BUY", "CE"), leg(1, "NIFTY", action, kind)]

    with pytest.raises(GradeLegConflict, match="legs 1"):
        size_by_grade(legs, BUYER, D(1000000), MARGINS)


def test_risk_reversal_when_buy_of_other_type_is_sized_with_the_single_sell() -> None:
    legs = [leg(0, "NIFTY", "BUY", "CE"), leg(1, "NIFTY", "SELL", "PE")]

    result = size_by_grade(legs, B, D(1200000), MARGINS)

    assert lots_of(result) == [3, 3]
    assert {s.basis for s in result.legs} == {"single_sell"}
    assert result.charged == D(750000)


def test_vertical_with_extra_long_put_when_sized_keeps_all_option_legs_equal() -> None:
    legs = [leg(0, "NIFTY", "SELL", "CE"), leg(1, "NIFTY", "BUY", "CE"), leg(2, "NIFTY", "BUY", "PE")]

    result = size_by_grade(legs, A, D(1000000), MARGINS)  # 9,50,000 / 2,50,000 → 3

    assert lots_of(result) == [3, 3, 3]
    assert result.charged == D(750000)


def test_late_hedge_when_buy_covers_open_sell_takes_its_lots_without_charge() -> None:
    legs = [leg(0, "NIFTY", "BUY", "CE", hedges_open_lots=4)]

    result = size_by_grade(legs, B, D(0), MARGINS)

    assert result.legs[0].lots == 4
    assert result.legs[0].quantity == 260
    assert result.legs[0].basis == "open_hedge"
    assert result.charged == 0


def test_lone_sells_when_processed_in_step_two_follow_leg_order_after_groups() -> None:
    legs = [leg(0, "SENSEX", "SELL", "CE"), *iron_condor("NIFTY", 1)]

    result = size_by_grade(legs, B, D(1200000), MARGINS)

    assert result.leg(1).allocation == 0  # the NIFTY pair first (step 1)
    assert result.leg(0).allocation == 1
    assert lots_of(result) == [0, 2, 2, 2, 2]


def test_max_lots_per_leg_when_budget_allows_more_caps_lots_and_charge() -> None:
    result = size_by_grade(iron_condor(), A, D(100000000), MARGINS, max_lots_per_leg=10)

    assert lots_of(result) == [10] * 4
    assert all(s.capped for s in result.legs)
    assert result.charged == D(3200000)
    assert result.legs[0].reason == "capped at 10 lots (max lots per leg)"


def test_grade_percentage_when_zero_gives_zero_lots_everywhere() -> None:
    result = size_by_grade(iron_condor(), Grade("Z", D(0)), D(5000000), MARGINS)

    assert lots_of(result) == [0] * 4
    assert result.legs[0].reason == "insufficient margin: ₹3,20,000 per lot, ₹0 left"


def test_reason_when_budget_has_paise_shows_them() -> None:
    result = size_by_grade([leg(0, "NIFTY", "SELL", "CE")], B, D("100000.10"), MARGINS)

    assert result.budget == D("65000.0650")
    assert result.legs[0].reason == "insufficient margin: ₹2,50,000 per lot, ₹65,000.07 left"


# --- refusals -----------------------------------------------------------------------------------------------


def test_missing_margin_row_when_instrument_unknown_refuses_instead_of_zero_lots() -> None:
    legs = [*iron_condor("NIFTY"), leg(4, "SENSEX", "SELL", "CE")]
    margins = {"NIFTY": MARGINS["NIFTY"]}

    with pytest.raises(MissingMarginRow, match="SENSEX") as caught:
        size_by_grade(legs, B, D(1200000), margins)
    assert isinstance(caught.value, ExecuteRefused)


@pytest.mark.parametrize(
    ("profile", "name"),
    [
        ("fixed_lots", None),
        ("grade_A", "A"),
        ("grade_SWING", "SWING"),
        ("aggressive", "A"),
        ("balanced", "B"),
        ("conservative", "C"),
    ],
)
def test_profile_grade_name_when_known_profile_names_its_grade(profile: str, name: str | None) -> None:
    assert profile_grade_name(profile) == name


def test_resolve_grade_when_grade_missing_refuses_the_execute() -> None:
    grades = {"A": A, "B": B}

    assert resolve_grade("balanced", grades) is B
    assert resolve_grade("fixed_lots", grades) is None
    with pytest.raises(UnknownGrade) as caught:
        resolve_grade("grade_C", grades)
    assert isinstance(caught.value, ExecuteRefused)
    for bad in ("grade_", "moderate", ""):
        with pytest.raises(UnknownGrade):
            resolve_grade(bad, grades)


@pytest.mark.parametrize(
    "build",
    [
        lambda: Grade("X", D(101)),
        lambda: Grade("X", D(-1)),
        lambda: Grade("X", D(50), "seller"),  # type: ignore[arg-type]
        lambda: Grade("X", D("NaN")),
        lambda: MarginRates(D(0), D(1), D(1), D(1), D(1), D(1), D(1)),
        lambda: leg(0, "NIFTY", "BUY", "CE", lots=0),
        lambda: leg(0, "NIFTY", "SELL", "CE", hedges_open_lots=1),
        lambda: leg(0, "NIFTY", "BUY", "XX"),
        lambda: leg(0, "NIFTY", "BUY", "CE", premium_per_lot=D(0)),
        lambda: AccountShare(1, multiplier=D(0)),
    ],
)
def test_inputs_when_malformed_are_rejected(build: object) -> None:
    with pytest.raises(InvalidSizingInput):
        build()  # type: ignore[operator]


def test_size_by_grade_when_base_negative_or_indexes_clash_rejects() -> None:
    with pytest.raises(InvalidSizingInput):
        size_by_grade(iron_condor(), B, D(-1), MARGINS)
    with pytest.raises(InvalidSizingInput):
        size_by_grade([leg(0, "NIFTY", "SELL", "CE"), leg(0, "NIFTY", "SELL", "PE")], B, D(1), MARGINS)
    with pytest.raises(InvalidSizingInput):
        size_by_grade(iron_condor(), B, D(1), MARGINS, max_lots_per_leg=0)


# --- margin base (§9.3) -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cash", "collateral", "included", "seller", "buyer"),
    [
        (D(500000), D(200000), True, D(500000), D(300000)),
        (D(500000), D(200000), False, D(700000), D(500000)),
        (D(100000), D(300000), True, D(100000), D(0)),
        (D(-50000), D(20000), False, D(0), D(0)),
        (D(-50000), D(80000), False, D(30000), D(0)),
        (D("1234.56"), D("0.01"), True, D("1234.56"), D("1234.55")),
    ],
)
def test_bases_when_collateral_included_or_not_follow_9_3(
    cash: Decimal, collateral: Decimal, included: bool, seller: Decimal, buyer: Decimal
) -> None:
    funds = AccountFunds(cash, collateral, included)

    assert seller_base(funds) == seller
    assert buyer_base(funds) == buyer
    assert margin_base(funds, "available") == seller
    assert margin_base(funds, "cash") == buyer


def test_bases_when_figure_unknown_skip_the_account_unless_it_is_not_needed() -> None:
    assert seller_base(AccountFunds(D(100), None, True)) == D(100)
    assert buyer_base(AccountFunds(D(100), None, False)) == D(100)
    for funds, base in [
        (AccountFunds(None, D(0), True), seller_base),
        (AccountFunds(D(100), None, False), seller_base),
        (AccountFunds(D(100), None, True), buyer_base),
        (AccountFunds(D(100), D(-1), True), buyer_base),
        (AccountFunds(D("Infinity"), D(0), True), seller_base),
    ]:
        with pytest.raises(FundsUnavailable) as caught:
            base(funds)
        assert isinstance(caught.value, AccountRefused)


# --- fixed lots (§4.1, §5.6) --------------------------------------------------------------------------------


def test_allocate_equal_when_cap_lower_caps_that_account_only() -> None:
    accounts = [AccountShare(1), AccountShare(2, max_lots_per_leg=3)]

    result = allocate_lots(5, "equal", accounts)

    assert [(r.account_id, r.lots, r.capped) for r in result] == [(1, 5, False), (2, 3, True)]
    assert result[1].reason == "capped at 3 lots (max lots per leg)"


def test_allocate_custom_when_multiplier_floors_lots() -> None:
    accounts = [AccountShare(1, D("1.5")), AccountShare(2, D("0.4")), AccountShare(3)]

    result = allocate_lots(3, "custom", accounts)

    assert [r.lots for r in result] == [4, 1, 3]
    assert (
        allocate_lots(2, "custom", [AccountShare(9, D("0.4"))])[0].reason == "2 lots × 0.4 is below one lot"
    )


def test_allocate_proportional_when_split_gives_leftover_to_largest_remainders() -> None:
    # 10 lots by 5 : 3 : 2 lakh → exactly 5, 3, 2.  7 lots → 3.5, 2.1, 1.4 → 3, 2, 1 + 1 to the 0.5.
    accounts = [AccountShare(1, seller_base=D(500000)), AccountShare(2, seller_base=D(300000))]
    accounts.append(AccountShare(3, seller_base=D(200000)))

    assert [r.lots for r in allocate_lots(10, "proportional", accounts)] == [5, 3, 2]
    assert [r.lots for r in allocate_lots(7, "proportional", accounts)] == [4, 2, 1]


def test_allocate_proportional_when_remainders_tie_prefers_larger_base() -> None:
    # 1 lot over bases 1 : 1 : 2 → remainders 1/4, 1/4, 2/4: the largest takes it.  3 lots → 3/4, 3/4, 6/4:
    # floors 0, 0, 1; the two leftovers go to the 3/4 remainders; then 2 lots → 2/4, 2/4, 4/4 → ties at 2/4.
    accounts = [AccountShare(1, seller_base=D(1)), AccountShare(2, seller_base=D(1))]
    accounts.append(AccountShare(3, seller_base=D(2)))
    assert [r.lots for r in allocate_lots(1, "proportional", accounts)] == [0, 0, 1]
    assert [r.lots for r in allocate_lots(3, "proportional", accounts)] == [1, 1, 1]
    assert [r.lots for r in allocate_lots(2, "proportional", accounts)] == [1, 0, 1]

    # 2 lots over bases 1 : 3 → 0.5 and 1.5: floors 0 and 1, equal remainders 2/4; the larger base wins,
    # whichever order the accounts come in.
    small, large = AccountShare(1, seller_base=D(1)), AccountShare(2, seller_base=D(3))
    assert [r.lots for r in allocate_lots(2, "proportional", [small, large])] == [0, 2]
    assert [r.lots for r in allocate_lots(2, "proportional", [large, small])] == [2, 0]


def test_allocate_proportional_when_funds_unknown_splits_among_the_rest() -> None:
    accounts = [AccountShare(1, seller_base=None), AccountShare(2, seller_base=D(100))]
    accounts.append(AccountShare(3, seller_base=D(100)))

    result = allocate_lots(4, "proportional", accounts)

    assert [r.lots for r in result] == [0, 2, 2]
    assert result[0].reason is not None and "funds unknown" in result[0].reason
    zero = allocate_lots(4, "proportional", [AccountShare(1, seller_base=D(0))])
    assert zero[0].lots == 0 and zero[0].reason == "no seller base to split by"


def test_size_fixed_when_condor_on_two_accounts_keeps_legs_equal_and_quantity_lot_multiple() -> None:
    legs = [replace(x, lots=3) for x in iron_condor("NIFTY")]
    accounts = [AccountShare(10), AccountShare(11, D(2), max_lots_per_leg=5)]

    result = size_fixed(legs, "custom", accounts)

    assert list(result) == [10, 11]
    assert [s.lots for s in result[10]] == [3, 3, 3, 3]
    assert [s.quantity for s in result[10]] == [195] * 4
    assert [(s.lots, s.capped) for s in result[11]] == [(5, True)] * 4
    assert {s.basis for s in result[11]} == {"fixed"}


def test_allocate_when_input_malformed_rejects() -> None:
    with pytest.raises(InvalidSizingInput):
        allocate_lots(0, "equal", [AccountShare(1)])
    with pytest.raises(InvalidSizingInput):
        allocate_lots(1, "equal", [AccountShare(1), AccountShare(1)])
    with pytest.raises(InvalidSizingInput):
        allocate_lots(1, "weighted", [AccountShare(1)])  # type: ignore[arg-type]


# --- agreement with the seed defaults -----------------------------------------------------------------------


def test_defaults_when_converted_match_the_9_1_table_and_9_2_grades() -> None:
    assert {name: MarginRates(**asdict(d)) for name, d in DEFAULT_MARGINS.items()} == MARGINS
    grades = {g.grade: Grade(g.grade, g.percentage, g.source) for g in DEFAULT_GRADES}  # type: ignore[arg-type]
    assert grades == {"A": A, "B": B, "C": C}


# --- properties ---------------------------------------------------------------------------------------------

INSTRUMENTS = st.sampled_from(sorted(LOT))
money = st.decimals(min_value=0, max_value=10**8, places=2, allow_nan=False, allow_infinity=False)
positive_money = st.decimals(min_value=1, max_value=10**6, places=2, allow_nan=False, allow_infinity=False)
percentages = st.decimals(min_value=0, max_value=100, places=2, allow_nan=False, allow_infinity=False)


@st.composite
def leg_lists(draw: st.DrawFn, *, cash: bool = False) -> list[SizingLeg]:
    count = draw(st.integers(min_value=0, max_value=8))
    legs = []
    for index in range(count):
        instrument = draw(INSTRUMENTS)
        kinds: list[LegKind] = ["CE", "PE"] if cash else ["CE", "PE", "FUT"]
        kind = draw(st.sampled_from(kinds))
        actions: list[Action] = ["BUY"] if cash else ["BUY", "SELL"]
        action = draw(st.sampled_from(actions))
        hedge = None
        if action == "BUY" and kind != "FUT":
            hedge = draw(st.none() | st.integers(min_value=1, max_value=5))
        premium = draw(st.none() | positive_money) if action == "BUY" and kind != "FUT" else None
        legs.append(
            SizingLeg(
                index=index,
                instrument=instrument,
                action=action,
                kind=kind,
                lot_size=draw(st.sampled_from([LOT[instrument], 75, 35])),
                lots=draw(st.integers(min_value=1, max_value=10)),
                expiry_day=draw(st.booleans()),
                hedges_open_lots=hedge,
                premium_per_lot=premium,
            )
        )
    return legs


@st.composite
def rate_tables(draw: st.DrawFn) -> dict[str, MarginRates]:
    return {name: MarginRates(*(draw(positive_money) for _ in range(7))) for name in sorted(LOT)}


@st.composite
def grades(draw: st.DrawFn) -> Grade:
    return Grade("G", draw(percentages), draw(st.sampled_from(["available", "cash"])))


@st.composite
def sizing_cases(draw: st.DrawFn) -> tuple[list[SizingLeg], Grade, dict[str, MarginRates], int | None]:
    grade = draw(grades())
    legs = draw(leg_lists(cash=grade.is_cash))
    margins = draw(st.sampled_from([MARGINS]) | rate_tables())
    cap = draw(st.none() | st.integers(min_value=1, max_value=50))
    return legs, grade, margins, cap


@given(case=sizing_cases(), base=money)
def test_budget_when_any_strategy_sized_never_goes_negative_and_equals_budget_minus_charges(
    case: tuple[list[SizingLeg], Grade, dict[str, MarginRates], int | None], base: Decimal
) -> None:
    legs, grade, margins, cap = case

    result = size_by_grade(legs, grade, base, margins, max_lots_per_leg=cap)

    assert result.budget == base * grade.percentage / 100
    assert 0 <= result.budget_left <= result.budget
    assert result.budget_left == result.budget - result.charged
    by_allocation: dict[int, list[Decimal]] = {}
    for size in result.legs:
        assert size.allocation is not None and size.budget_left is not None
        by_allocation.setdefault(size.allocation, []).append(size.budget_left)
    spent = D(0)
    for number in sorted(by_allocation):
        spent += sum(s.charged for s in result.legs if s.allocation == number)
        assert set(by_allocation[number]) == {result.budget - spent}
        assert result.budget - spent >= 0


@given(case=sizing_cases(), base=money)
def test_lots_when_any_strategy_sized_are_whole_capped_and_quantity_is_lots_times_lot(
    case: tuple[list[SizingLeg], Grade, dict[str, MarginRates], int | None], base: Decimal
) -> None:
    legs, grade, margins, cap = case

    result = size_by_grade(legs, grade, base, margins, max_lots_per_leg=cap)

    assert [s.index for s in result.legs] == [x.index for x in legs]
    for source, size in zip(legs, result.legs, strict=True):
        assert isinstance(size.lots, int) and size.lots >= 0
        assert size.quantity == size.lots * source.lot_size
        assert cap is None or size.lots <= cap
        assert (size.lots == 0) == size.skipped
        if size.lots == 0:
            assert size.reason is not None and size.reason.startswith("insufficient margin: ₹")
        if size.basis != "open_hedge":
            assert size.margin_per_lot is not None
            charged_by_group = sum(s.charged for s in result.legs if s.allocation == size.allocation)
            assert charged_by_group == size.lots * size.margin_per_lot
        if source.action == "SELL" or not source.is_option:
            assert size.basis in ("pair_sell", "single_sell", "futures")


@given(case=sizing_cases(), base=money, seed=st.integers(min_value=0, max_value=2**32))
def test_sizing_when_repeated_shuffled_or_given_extra_rows_depends_only_on_its_inputs(
    case: tuple[list[SizingLeg], Grade, dict[str, MarginRates], int | None], base: Decimal, seed: int
) -> None:
    legs, grade, margins, cap = case
    first = size_by_grade(legs, grade, base, margins, max_lots_per_leg=cap)

    shuffled = list(legs)
    random.Random(seed).shuffle(shuffled)
    reordered = dict(reversed(list(margins.items())))
    reordered["FINNIFTY"] = MARGINS["NIFTY"]

    assert size_by_grade(legs, grade, base, margins, max_lots_per_leg=cap) == first
    assert size_by_grade(shuffled, grade, base, reordered, max_lots_per_leg=cap) == first


@given(case=sizing_cases(), base=money, extra=money)
def test_larger_base_when_same_legs_never_charges_less_in_total(
    case: tuple[list[SizingLeg], Grade, dict[str, MarginRates], int | None], base: Decimal, extra: Decimal
) -> None:
    legs, grade, margins, cap = case

    small = size_by_grade(legs, grade, base, margins, max_lots_per_leg=cap)
    large = size_by_grade(legs, grade, base + extra, margins, max_lots_per_leg=cap)

    assert large.charged >= small.charged
    # The first allocation sees the whole budget, so its lots never fall.
    first = [s for s in small.legs if s.allocation == 0]
    assert all(large.leg(s.index).lots >= s.lots for s in first)


@given(
    legs=st.sampled_from(
        [
            iron_condor("NIFTY"),
            [leg(0, "SENSEX", "SELL", "CE"), leg(1, "SENSEX", "SELL", "PE")],
            [leg(0, "NIFTY", "BUY", "PE"), leg(1, "NIFTY", "SELL", "PE")],
            [leg(0, "BANKNIFTY", "SELL", "FUT")],
            [leg(0, "NIFTY", "BUY", "CE"), leg(1, "NIFTY", "SELL", "PE")],
        ]
    ),
    base=money,
    extra=money,
)
def test_larger_base_when_one_allocation_never_yields_fewer_lots(
    legs: list[SizingLeg], base: Decimal, extra: Decimal
) -> None:
    small = size_by_grade(legs, B, base, MARGINS)
    large = size_by_grade(legs, B, base + extra, MARGINS)

    assert all(b.lots >= a.lots for a, b in zip(small.legs, large.legs, strict=True))


def test_larger_base_when_an_early_group_takes_another_lot_can_yield_fewer_total_lots() -> None:
    # The greedy rule of §5.7 is not monotonic in total lots: one more NIFTY pair lot (4 leg-lots) can use
    # the remainder that bought several standalone lots. D 3,20,000 → pair 1 + BUY 5; D 6,40,000 → pair 2.
    legs = [*iron_condor("NIFTY"), leg(4, "SENSEX", "BUY", "CE", lots=20)]

    def total(base: int) -> int:
        return sum(lots_of(size_by_grade(legs, Grade("F", D(100)), D(base), MARGINS)))

    assert total(420000) == 4 + 5
    assert total(640000) == 8 + 0
    assert total(639999) == 4 + 15
    assert total(639999) > total(640000)


@given(
    cash=st.decimals(min_value=-(10**7), max_value=10**8, places=2, allow_nan=False, allow_infinity=False),
    collateral=money,
    included=st.booleans(),
)
def test_bases_when_any_funds_buyer_never_below_zero_and_seller_never_below_buyer(
    cash: Decimal, collateral: Decimal, included: bool
) -> None:
    funds = AccountFunds(cash, collateral, included)

    assert buyer_base(funds) >= 0
    assert seller_base(funds) >= buyer_base(funds)
    assert seller_base(funds) <= max(cash + collateral, D(0))


@given(
    lots=st.integers(min_value=1, max_value=100),
    bases=st.lists(money, min_size=1, max_size=8),
)
def test_proportional_when_bases_known_splits_the_whole_total_near_each_exact_share(
    lots: int, bases: list[Decimal]
) -> None:
    accounts = [AccountShare(i, seller_base=b) for i, b in enumerate(bases)]
    total = sum(bases, D(0))

    result = allocate_lots(lots, "proportional", accounts)

    if total == 0:
        assert all(r.lots == 0 for r in result)
        return
    assert sum(r.lots for r in result) == lots
    for share, r in zip(accounts, result, strict=True):
        exact = lots * (share.seller_base or D(0)) / total
        assert exact - 1 < r.lots < exact + 1


@given(
    lots=st.integers(min_value=1, max_value=100),
    multipliers=st.lists(
        st.decimals(min_value=D("0.01"), max_value=10, places=2, allow_nan=False, allow_infinity=False),
        min_size=1,
        max_size=5,
    ),
    cap=st.none() | st.integers(min_value=1, max_value=100),
)
def test_custom_and_equal_when_any_multiplier_floor_and_cap(
    lots: int, multipliers: list[Decimal], cap: int | None
) -> None:
    accounts = [AccountShare(i, m, max_lots_per_leg=cap) for i, m in enumerate(multipliers)]

    custom = allocate_lots(lots, "custom", accounts)
    equal = allocate_lots(lots, "equal", accounts)

    for share, r in zip(accounts, custom, strict=True):
        uncapped = int(lots * share.multiplier // 1)
        assert r.lots == (uncapped if cap is None else min(uncapped, cap))
        assert r.capped == (cap is not None and uncapped > cap)
    assert all(r.lots == (lots if cap is None else min(lots, cap)) for r in equal)


# --- the margin calculator ---------------------------------------------------------------------------------

_rupees = st.decimals(min_value=0, max_value=10**10, places=2, allow_nan=False, allow_infinity=False)


@given(
    base=_rupees,
    percentage=st.decimals(min_value=0, max_value=100, places=2),
    per_lot=st.decimals(min_value="0.01", max_value=10**7, places=2),
)
def test_calculator_lots_never_negative_and_used_never_above_the_base(
    base: Decimal, percentage: Decimal, per_lot: Decimal
) -> None:
    calc = calculate_lots(base, percentage, per_lot)
    assert calc.lots >= 0
    assert calc.used == calc.lots * per_lot <= calc.deployable <= base
    assert calc.remaining == base - calc.used >= 0
    # One more lot would not fit in the deployable amount.
    assert (calc.lots + 1) * per_lot > calc.deployable


@pytest.mark.parametrize(
    ("base", "pct", "per_lot", "lots"),
    [("1000000", "95", "250000", 3), ("0", "95", "250000", 0), ("250000", "100", "250000", 1)],
)
def test_calculator_table(base: str, pct: str, per_lot: str, lots: int) -> None:
    assert calculate_lots(Decimal(base), Decimal(pct), Decimal(per_lot)).lots == lots


@pytest.mark.parametrize(("base", "pct", "per_lot"), [("-1", "50", "1"), ("1", "101", "1"), ("1", "50", "0")])
def test_calculator_refuses_bad_input(base: str, pct: str, per_lot: str) -> None:
    with pytest.raises(InvalidSizingInput):
        calculate_lots(Decimal(base), Decimal(pct), Decimal(per_lot))
