from __future__ import annotations

import math
import random
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from algomirror.domain.pricing import (
    VolSmile,
    bs_call,
    bs_greeks,
    bs_price,
    bs_put,
    forward_price,
    gbm_step,
    implied_volatility,
    round_to_tick,
    years_to_expiry,
)

TICK = Decimal("0.05")
spots = st.floats(min_value=1000, max_value=100000)
moneyness = st.floats(min_value=0.7, max_value=1.3)
years = st.floats(min_value=1e-4, max_value=1.0)
vols = st.floats(min_value=0.05, max_value=1.0)
rates = st.floats(min_value=0.0, max_value=0.1)


@given(spot=spots, m=moneyness, t=years, r=rates, v=vols)
def test_parity_when_any_inputs_call_minus_put_equals_forward_difference(
    spot: float, m: float, t: float, r: float, v: float
) -> None:
    strike = spot * m
    lhs = bs_call(spot, strike, t, r, v) - bs_put(spot, strike, t, r, v)
    rhs = spot - strike * math.exp(-r * t)
    assert lhs == pytest.approx(rhs, abs=1e-6)


@given(spot=spots, m=moneyness, t=years, r=rates, v=vols)
def test_call_when_any_inputs_at_least_intrinsic_and_monotone_in_spot(
    spot: float, m: float, t: float, r: float, v: float
) -> None:
    strike = spot * m
    price = bs_call(spot, strike, t, r, v)
    assert price >= max(spot - strike * math.exp(-r * t), 0.0) - 1e-9
    assert price >= max(spot - strike, 0.0) - 1e-9  # r ≥ 0: never below the undiscounted intrinsic either
    assert bs_call(spot * 1.01, strike, t, r, v) >= price - 1e-9


def test_price_when_expired_is_intrinsic() -> None:
    assert bs_call(26100, 26000, 0.0, 0.065, 0.15) == pytest.approx(100)
    assert bs_put(26100, 26000, 0.0, 0.065, 0.15) == 0
    assert bs_price("PE", 25900, 26000, 0.0, 0.065, 0.15) == pytest.approx(100)
    with pytest.raises(ValueError):
        bs_price("XX", 1, 1, 1, 0, 0.1)


def test_price_when_textbook_inputs_matches_known_value() -> None:
    # S=100, K=100, T=1, r=5 %, σ=20 %: call 10.4506, put 5.5735
    assert bs_call(100, 100, 1, 0.05, 0.2) == pytest.approx(10.4506, abs=1e-4)
    assert bs_put(100, 100, 1, 0.05, 0.2) == pytest.approx(5.5735, abs=1e-4)


def test_years_to_expiry_when_measured_to_1530_ist() -> None:
    # 15:30 IST = 10:00 UTC; one day before → 1/365
    assert years_to_expiry(datetime(2026, 2, 2, 10, 0, tzinfo=UTC), date(2026, 2, 3)) == pytest.approx(
        1 / 365
    )
    assert years_to_expiry(datetime(2026, 2, 3, 10, 0, 1, tzinfo=UTC), date(2026, 2, 3)) == 0.0


def test_smile_when_strike_below_forward_vol_is_higher_than_above() -> None:
    smile = VolSmile(atm_vol=0.15, skew=-0.35, curvature=1.5)
    assert smile.vol(26000, 26000) == pytest.approx(0.15)
    assert smile.vol(26000, 24700) > 0.15 > smile.vol(26000, 27300)
    m = math.log(27300 / 26000)
    assert smile.vol(26000, 27300) > 0.15 - 0.35 * m  # the curvature lifts the wings above the skew line
    assert VolSmile(atm_vol=0.15, skew=-0.35, curvature=1.5, cap=0.4).vol(26000, 2600) == 0.4


def test_gbm_when_same_seed_gives_same_path_and_stays_positive() -> None:
    def path(seed: int) -> list[float]:
        rng = random.Random(seed)
        price, out = 26000.0, []
        for _ in range(200):
            price = gbm_step(price, 0.0, 0.15, 1 / (252 * 22500), rng)
            out.append(price)
        return out

    assert path(7) == path(7)
    assert path(7) != path(8)
    assert all(p > 0 for p in path(7))


def test_round_to_tick_when_below_one_tick_floors_at_one_tick() -> None:
    assert round_to_tick(0.0, TICK) == Decimal("0.05")
    assert round_to_tick(-3.0, TICK) == Decimal("0.05")
    assert round_to_tick(0.0, TICK, min_ticks=0) == 0
    assert round_to_tick(123.474, TICK) == Decimal("123.45")
    assert round_to_tick(123.475, TICK) == Decimal("123.50")
    assert round_to_tick(Decimal("26000.024"), TICK) == Decimal("26000.00")


def test_forward_when_positive_rate_exceeds_spot() -> None:
    assert forward_price(26000, 0.065, 30 / 365) == pytest.approx(26000 * math.exp(0.065 * 30 / 365))


def test_greeks_when_atm_call_delta_near_half_and_iv_round_trips() -> None:
    greeks = bs_greeks("CE", 26000, 26000, 7 / 365, 0.065, 0.15)
    assert 0.5 < greeks.delta < 0.56
    assert greeks.gamma > 0
    assert greeks.theta < 0
    assert bs_greeks("PE", 26000, 26000, 7 / 365, 0.065, 0.15).delta == pytest.approx(greeks.delta - 1)
    price = bs_call(26000, 26200, 7 / 365, 0.065, 0.18)
    assert implied_volatility("CE", price, 26000, 26200, 7 / 365, 0.065) == pytest.approx(0.18, abs=1e-6)
    assert implied_volatility("CE", 0.0, 26000, 26200, 7 / 365, 0.065) is None
