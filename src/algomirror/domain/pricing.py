"""Option pricing for the paper exchange and estimates: Black–Scholes, a volatility smile, GBM steps.

Float maths is used *inside* pricing (it is a model, not money); results are floats and callers turn them
into exchange prices with :func:`round_to_tick` (Decimal). Rates and volatilities are annualised decimals
(0.065 = 6.5 %); times are in years.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal

from algomirror.domain.calendar import EXPIRY_CUTOFF
from algomirror.domain.timeutil import ensure_aware, ist_combine

SECONDS_PER_YEAR = 365.0 * 24 * 3600
TRADING_SECONDS_PER_YEAR = 252 * 6.25 * 3600  # 252 sessions of 375 minutes: the GBM's clock
_SQRT2 = math.sqrt(2.0)


def norm_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / _SQRT2))


def norm_pdf(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def years_to_expiry(now: datetime, expiry: date) -> float:
    """Calendar years from ``now`` to 15:30 IST on ``expiry``; 0 once past. Raises ValueError if naive."""
    seconds = (ist_combine(expiry, EXPIRY_CUTOFF) - ensure_aware(now)).total_seconds()
    return max(0.0, seconds / SECONDS_PER_YEAR)


def forward_price(spot: float, rate: float, years: float) -> float:
    """Cost-of-carry forward (futures fair value): spot · e^(r·T)."""
    return spot * math.exp(rate * max(0.0, years))


def _d1_d2(spot: float, strike: float, years: float, rate: float, vol: float) -> tuple[float, float]:
    sd = vol * math.sqrt(years)
    d1 = (math.log(spot / strike) + (rate + 0.5 * vol * vol) * years) / sd
    return d1, d1 - sd


def _discounted_strike(spot: float, strike: float, years: float, rate: float) -> float:
    """K·e^(−rT), T floored at 0. Raises ValueError for non-positive spot or strike."""
    if spot <= 0 or strike <= 0:
        raise ValueError(f"spot and strike must be positive (spot={spot}, strike={strike})")
    return strike * math.exp(-rate * max(0.0, years))


def bs_call(spot: float, strike: float, years: float, rate: float, vol: float) -> float:
    """European call value. At T ≤ 0 or vol ≤ 0 the value is the discounted intrinsic max(S − K·e^(−rT), 0).

    Raises ValueError for non-positive spot or strike.
    """
    discounted = _discounted_strike(spot, strike, years, rate)
    if years <= 0 or vol <= 0:
        return max(spot - discounted, 0.0)
    d1, d2 = _d1_d2(spot, strike, years, rate, vol)
    return max(spot * norm_cdf(d1) - discounted * norm_cdf(d2), 0.0)


def bs_put(spot: float, strike: float, years: float, rate: float, vol: float) -> float:
    """European put value (see :func:`bs_call`); at T ≤ 0 max(K·e^(−rT) − S, 0)."""
    discounted = _discounted_strike(spot, strike, years, rate)
    if years <= 0 or vol <= 0:
        return max(discounted - spot, 0.0)
    d1, d2 = _d1_d2(spot, strike, years, rate, vol)
    return max(discounted * norm_cdf(-d2) - spot * norm_cdf(-d1), 0.0)


def bs_price(option_type: str, spot: float, strike: float, years: float, rate: float, vol: float) -> float:
    """:func:`bs_call` for ``CE``, :func:`bs_put` for ``PE``; ValueError otherwise."""
    if option_type == "CE":
        return bs_call(spot, strike, years, rate, vol)
    if option_type == "PE":
        return bs_put(spot, strike, years, rate, vol)
    raise ValueError(f"option type must be CE or PE, not {option_type!r}")


@dataclass(frozen=True, slots=True)
class Greeks:
    delta: float
    gamma: float
    theta: float  # per calendar day
    vega: float  # per volatility point (1 %)
    rho: float  # per rate point (1 %)


def bs_greeks(option_type: str, spot: float, strike: float, years: float, rate: float, vol: float) -> Greeks:
    """Black–Scholes greeks; all zero except an intrinsic delta once expired (T ≤ 0) or vol ≤ 0."""
    if option_type not in ("CE", "PE"):
        raise ValueError(f"option type must be CE or PE, not {option_type!r}")
    if years <= 0 or vol <= 0:
        itm = spot > strike if option_type == "CE" else spot < strike
        delta = (1.0 if option_type == "CE" else -1.0) if itm else 0.0
        return Greeks(delta, 0.0, 0.0, 0.0, 0.0)
    d1, d2 = _d1_d2(spot, strike, years, rate, vol)
    sqrt_t = math.sqrt(years)
    disc = math.exp(-rate * years)
    gamma = norm_pdf(d1) / (spot * vol * sqrt_t)
    vega = spot * norm_pdf(d1) * sqrt_t / 100.0
    decay = -spot * norm_pdf(d1) * vol / (2.0 * sqrt_t)
    if option_type == "CE":
        delta = norm_cdf(d1)
        theta = decay - rate * strike * disc * norm_cdf(d2)
        rho = strike * years * disc * norm_cdf(d2) / 100.0
    else:
        delta = norm_cdf(d1) - 1.0
        theta = decay + rate * strike * disc * norm_cdf(-d2)
        rho = -strike * years * disc * norm_cdf(-d2) / 100.0
    return Greeks(delta, gamma, theta / 365.0, vega, rho)


def implied_volatility(
    option_type: str, price: float, spot: float, strike: float, years: float, rate: float
) -> float | None:
    """The volatility that reproduces ``price`` (bisection on [0.0001, 5]); None when no volatility can
    (price at/below intrinsic, above the no-arbitrage bound, or T ≤ 0)."""
    if years <= 0 or price <= 0:
        return None
    low, high = 1e-4, 5.0
    if (
        not bs_price(option_type, spot, strike, years, rate, low)
        < price
        < bs_price(option_type, spot, strike, years, rate, high)
    ):
        return None
    for _ in range(100):
        mid = 0.5 * (low + high)
        if bs_price(option_type, spot, strike, years, rate, mid) < price:
            low = mid
        else:
            high = mid
        if high - low < 1e-8:
            break
    return 0.5 * (low + high)


@dataclass(frozen=True, slots=True)
class VolSmile:
    """vol(K) = atm_vol + skew·m + curvature·m², m = ln(K/F), clamped to [floor, cap].

    A negative ``skew`` makes low strikes (OTM puts) dearer than high strikes — the index put skew.
    """

    atm_vol: float = 0.15
    skew: float = -0.35
    curvature: float = 1.5
    floor: float = 0.05
    cap: float = 1.5

    def vol(self, forward: float, strike: float) -> float:
        m = math.log(strike / forward)
        return min(self.cap, max(self.floor, self.atm_vol + self.skew * m + self.curvature * m * m))


def gbm_step(price: float, drift: float, vol: float, dt_years: float, rng: random.Random) -> float:
    """One geometric-Brownian-motion step: S·exp((μ − σ²/2)·dt + σ·√dt·Z), Z ~ N(0, 1) from ``rng``.

    Exactly one normal draw per call, so a stream's path depends only on how many steps were taken.
    """
    z = rng.gauss(0.0, 1.0)
    return price * math.exp((drift - 0.5 * vol * vol) * dt_years + vol * math.sqrt(dt_years) * z)


def round_to_tick(price: float | Decimal, tick: Decimal, *, min_ticks: int = 1) -> Decimal:
    """Nearest multiple of ``tick`` (half up), never below ``min_ticks`` ticks (a listed option never
    quotes 0). Pass ``min_ticks=0`` to allow 0. Raises ValueError for a non-positive tick or NaN price."""
    if tick <= 0:
        raise ValueError(f"tick must be positive, got {tick}")
    value = price if isinstance(price, Decimal) else Decimal(repr(float(price)))
    if not value.is_finite():
        raise ValueError(f"price must be finite, got {price}")
    ticks = (value / tick).to_integral_value(rounding=ROUND_HALF_UP)
    return max(ticks, Decimal(min_ticks)) * tick
