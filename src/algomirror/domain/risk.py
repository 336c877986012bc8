"""Risk rule arithmetic (PRODUCT §6.3, §6.4, §6.6): pure functions over Decimal rupees and prices.

The risk engine owns the state and the I/O; this module only says where the levels are and whether a
rule fires. Money and price levels are quantized half-up to the paisa (0.01).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

from algomirror.domain.money import PAISA

_HUNDRED = Decimal(100)
_ZERO = Decimal(0)

TRAILING_KINDS: frozenset[str] = frozenset({"percentage", "amount", "points"})
LEG_LEVEL_TYPES: frozenset[str] = frozenset({"percentage", "points", "premium"})
LEG_TRAILING_KINDS: frozenset[str] = frozenset({"percentage", "points"})


def _q(value: Decimal) -> Decimal:
    return value.quantize(PAISA, rounding=ROUND_HALF_UP)


def _check_action(action: str) -> None:
    if action not in ("BUY", "SELL"):
        raise ValueError(f"action must be BUY or SELL, not {action!r}")


def _check_non_negative(name: str, value: Decimal) -> None:
    if not value.is_finite() or value < 0:
        raise ValueError(f"{name} must be a finite value >= 0, not {value}")


# --- strategy trailing stop (§6.4) -------------------------------------------------------------------------


@dataclass(frozen=True)
class TrailingState:
    """Strategy trailing stop state, rupees: the initial stop I (<= 0), the peak P&L P (starts at 0) and
    the current stop level (I + P, never lowered)."""

    initial_stop: Decimal
    peak: Decimal
    level: Decimal

    @classmethod
    def armed(cls, initial_stop: Decimal) -> TrailingState:
        """The state at entry completion: peak 0, level = I."""
        return cls(initial_stop=initial_stop, peak=_ZERO, level=initial_stop)


def initial_trailing_stop(kind: str, value: Decimal, *, base_premium: Decimal, unit_quantity: int) -> Decimal:
    """Initial stop I in rupees (<= 0, paisa): ``percentage`` −E×v/100, ``amount`` −v, ``points`` −v×U.

    ``base_premium`` is E = |Σ BUY entry×qty − Σ SELL entry×qty| (rupees); ``unit_quantity`` is U, the
    run's smallest leg quantity per account summed over accounts (units). Raises ValueError for an
    unknown kind, a negative value/E or a negative U.
    """
    if kind not in TRAILING_KINDS:
        raise ValueError(f"unknown trailing stop kind {kind!r}")
    _check_non_negative("value", value)
    base = abs(base_premium)
    if kind == "percentage":
        result = -(base * value / _HUNDRED)
    elif kind == "amount":
        result = -value
    else:
        if unit_quantity < 0:
            raise ValueError(f"unit_quantity must be >= 0, not {unit_quantity}")
        result = -(value * unit_quantity)
    # -0 normalises to 0 so a zero stop compares and prints as 0.00
    return _q(result) + _ZERO


def advance_trailing(state: TrailingState, pnl: Decimal) -> TrailingState:
    """One evaluation at risk P&L ``pnl`` (rupees): peak = max(peak, pnl), level = I + peak, never lowered."""
    peak = max(state.peak, pnl)
    level = max(state.level, _q(state.initial_stop + peak))
    if peak == state.peak and level == state.level:
        return state
    return TrailingState(initial_stop=state.initial_stop, peak=peak, level=level)


def trailing_fires(state: TrailingState, pnl: Decimal) -> bool:
    """True when P&L is at or below the stop level (inclusive)."""
    return pnl <= state.level


# --- max loss / max profit (§6.3) --------------------------------------------------------------------------


def max_loss_fires(pnl: Decimal, max_loss: Decimal) -> bool:
    """True at P&L <= −max_loss (``max_loss`` a positive rupee amount; inclusive)."""
    return pnl <= -abs(max_loss)


def max_profit_fires(pnl: Decimal, max_profit: Decimal) -> bool:
    """True at P&L >= +max_profit (rupees; inclusive)."""
    return pnl >= abs(max_profit)


# --- leg stop-loss / target / trailing (§6.6) --------------------------------------------------------------


@dataclass(frozen=True)
class LegLevels:
    """Price levels of one execution (None = rule not set)."""

    stop_loss: Decimal | None
    target: Decimal | None


def _level(kind: str, value: Decimal, entry: Decimal, direction: int) -> Decimal:
    """Level at ``direction`` (+1 above, −1 below) the entry by ``value`` of ``kind``."""
    if kind not in LEG_LEVEL_TYPES:
        raise ValueError(f"unknown leg level type {kind!r}")
    _check_non_negative("value", value)
    if kind == "premium":
        return _q(value)
    if kind == "points":
        return _q(entry + direction * value)
    return _q(entry * (1 + direction * value / _HUNDRED))


def leg_levels(
    action: str,
    entry: Decimal,
    *,
    sl_type: str | None,
    sl_value: Decimal | None,
    tp_type: str | None,
    tp_value: Decimal | None,
) -> LegLevels:
    """Stop-loss and target prices of an execution with entry average ``entry`` (PRODUCT §6.6 table).

    A rule is unset (None) when its type or value is None. Raises ValueError for an unknown action or
    type, or a negative value.
    """
    _check_action(action)
    below = -1 if action == "BUY" else 1  # the adverse side for SL
    stop = None if sl_type is None or sl_value is None else _level(sl_type, sl_value, entry, below)
    target = None if tp_type is None or tp_value is None else _level(tp_type, tp_value, entry, -below)
    return LegLevels(stop_loss=stop, target=target)


def advance_leg_trailing(
    action: str,
    *,
    best: Decimal | None,
    ltp: Decimal,
    stop_loss: Decimal | None,
    entry: Decimal,
    kind: str,
    value: Decimal,
) -> tuple[Decimal, Decimal]:
    """One tick of a leg trailing stop; returns (best, stop_loss).

    best = best LTP since entry (max for BUY, min for SELL); distance d = v points or best×v/100;
    BUY SL = max(SL, best − d), SELL SL = min(SL, best + d), so it never moves backwards. With no SL yet
    it starts at e ∓ d (d from the entry for ``percentage``). Raises ValueError for an unknown action or
    kind (``premium`` cannot trail), or a negative value.
    """
    _check_action(action)
    if kind not in LEG_TRAILING_KINDS:
        raise ValueError(f"unknown leg trailing kind {kind!r}")
    _check_non_negative("value", value)

    def distance(price: Decimal) -> Decimal:
        return value if kind == "points" else price * value / _HUNDRED

    if action == "BUY":
        new_best = ltp if best is None else max(best, ltp)
        start = stop_loss if stop_loss is not None else _q(entry - distance(entry))
        return new_best, max(start, _q(new_best - distance(new_best)))
    new_best = ltp if best is None else min(best, ltp)
    start = stop_loss if stop_loss is not None else _q(entry + distance(entry))
    return new_best, min(start, _q(new_best + distance(new_best)))


def leg_hit(action: str, ltp: Decimal, levels: LegLevels) -> Literal["stop_loss", "take_profit"] | None:
    """Which leg rule ``ltp`` hits, SL checked first: BUY SL at LTP <= SL, target at LTP >= target;
    SELL SL at LTP >= SL, target at LTP <= target. Raises ValueError for an unknown action."""
    _check_action(action)
    buy = action == "BUY"
    if levels.stop_loss is not None and (ltp <= levels.stop_loss if buy else ltp >= levels.stop_loss):
        return "stop_loss"
    if levels.target is not None and (ltp >= levels.target if buy else ltp <= levels.target):
        return "take_profit"
    return None
