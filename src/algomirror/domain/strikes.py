"""Strike selection (PRODUCT §5.4, MARKET-FACTS §3): ATM half-up, ITM/OTM counted in listed strikes,
premium-near-X. Prices and strikes are Decimal rupees."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from typing import Literal

from algomirror.domain.errors import NoPremiumQuotes, StrikeNotListed

Moneyness = Literal["ATM", "ITM", "OTM"]
_OFFSET_RE = re.compile(r"^(ATM|ITM|OTM)(\d*)$")
PREMIUM_SCAN_STEPS = 20
_HALF = Decimal("0.5")


def atm_strike(spot: Decimal, step: Decimal) -> Decimal:
    """step × ⌊spot/step + ½⌋ (round half UP): 24,025 → 24,050; 24,024.95 → 24,000 (step 50).

    Raises ValueError for a non-positive step or spot.
    """
    if step <= 0 or spot <= 0:
        raise ValueError(f"spot and step must be positive (spot={spot}, step={step})")
    return (spot / step + _HALF).to_integral_value(rounding=ROUND_FLOOR) * step


def atm_from_listed(spot: Decimal, listed: Iterable[Decimal]) -> Decimal:
    """The listed strike nearest to ``spot``; an exact tie goes to the higher strike (half up).

    Raises :class:`StrikeNotListed` when nothing is listed.
    """
    best: Decimal | None = None
    for strike in listed:
        if best is None:
            best = strike
            continue
        distance, best_distance = abs(strike - spot), abs(best - spot)
        if distance < best_distance or (distance == best_distance and strike > best):
            best = strike
    if best is None:
        raise StrikeNotListed("no listed strikes")
    return best


def parse_offset(offset: str) -> tuple[Moneyness, int]:
    """``ATM`` → (ATM, 0); ``ITM3`` → (ITM, 3); ``OTM1`` → (OTM, 1). Raises ValueError otherwise."""
    match = _OFFSET_RE.match(offset.strip().upper())
    if match is None:
        raise ValueError(f"bad offset {offset!r}")
    kind, digits = match.groups()
    if kind == "ATM":
        if digits:
            raise ValueError(f"bad offset {offset!r}")
        return "ATM", 0
    if not digits or int(digits) < 1:
        raise ValueError(f"bad offset {offset!r}: ITM/OTM need a count ≥ 1")
    return ("ITM" if kind == "ITM" else "OTM"), int(digits)


def strike_for_offset(
    listed: Sequence[Decimal], atm: Decimal, option_type: str, moneyness: Moneyness, k: int = 0
) -> Decimal:
    """The strike ``k`` listed strikes away from ``atm`` (PRODUCT §5.4).

    CE: ITM k below ATM, OTM k above; PE: ITM k above, OTM k below. Raises :class:`StrikeNotListed` when
    ``atm`` is not listed or the target lies beyond the listed range; ValueError for bad arguments.
    """
    if option_type not in ("CE", "PE"):
        raise ValueError(f"option type must be CE or PE, not {option_type!r}")
    ordered = sorted(set(listed))
    try:
        index = ordered.index(atm)
    except ValueError:
        raise StrikeNotListed(f"ATM strike {atm} is not listed") from None
    if moneyness == "ATM":
        return atm
    if k < 1:
        raise ValueError("ITM/OTM offsets count from 1")
    below = (moneyness == "ITM") == (option_type == "CE")
    target = index - k if below else index + k
    if not 0 <= target < len(ordered):
        raise StrikeNotListed(f"{moneyness}{k} {option_type} is beyond the listed strikes around {atm}")
    return ordered[target]


def premium_scan_strikes(listed: Iterable[Decimal], atm: Decimal, step: Decimal) -> list[Decimal]:
    """Listed strikes within ATM ± 20 steps (the candidates of a premium-near scan), ascending."""
    low, high = atm - PREMIUM_SCAN_STEPS * step, atm + PREMIUM_SCAN_STEPS * step
    return sorted({s for s in listed if low <= s <= high})


def premium_deviation_limit(target: Decimal) -> Decimal:
    """Allowed relative deviation before a warning: 20 % (X < 50), 15 % (50 ≤ X < 100), 10 % (X ≥ 100)."""
    if target < 50:
        return Decimal("0.20")
    if target < 100:
        return Decimal("0.15")
    return Decimal("0.10")


@dataclass(frozen=True, slots=True)
class PremiumPick:
    strike: Decimal
    ltp: Decimal
    deviation: Decimal  # |ltp − target| / target
    warning: bool  # deviation beyond :func:`premium_deviation_limit`


def select_premium_near(
    target: Decimal, quotes: Mapping[Decimal, Decimal | None], atm: Decimal
) -> PremiumPick:
    """Pick the strike whose LTP is nearest ``target`` (PRODUCT §5.4).

    ``quotes`` maps candidate strike → LTP (None/≤ 0 ignored). Ties prefer the premium below the target,
    then the strike nearer ATM (then the lower strike, for determinism). Raises :class:`NoPremiumQuotes`
    when no candidate has a positive LTP, ValueError for a non-positive target.
    """
    if target <= 0:
        raise ValueError(f"premium target must be positive, got {target}")
    best: tuple[Decimal, int, Decimal, Decimal] | None = None
    pick: tuple[Decimal, Decimal] | None = None
    for strike, ltp in quotes.items():
        if ltp is None or ltp <= 0:
            continue
        key = (abs(ltp - target), 0 if ltp <= target else 1, abs(strike - atm), strike)
        if best is None or key < best:
            best, pick = key, (strike, ltp)
    if pick is None:
        raise NoPremiumQuotes(f"no positive premium among {len(quotes)} candidate strikes")
    strike, ltp = pick
    deviation = abs(ltp - target) / target
    return PremiumPick(strike, ltp, deviation, deviation > premium_deviation_limit(target))
