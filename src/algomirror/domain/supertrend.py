"""Supertrend indicator (PRODUCT §6.5), TradingView-compatible.

Floats are fine here: it is an indicator compared with a threshold at candle closes, not money.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from algomirror.domain.candles import Candle

UP = -1  # premium above the line (TradingView's convention: −1 up)
DOWN = 1


@dataclass(frozen=True)
class SupertrendPoint:
    """Supertrend at one closed candle: the line's value and the direction (−1 up, +1 down)."""

    start: datetime
    line: float
    direction: int


def warmup_bars(period: int) -> int:
    """Closed candles needed before the indicator is trusted: max(10 × period, period + 5)."""
    return max(10 * period, period + 5)


def supertrend(candles: Sequence[Candle], period: int, multiplier: float) -> list[SupertrendPoint | None]:
    """Supertrend for each candle (oldest first); None for the ``period − 1`` bars before ATR is seeded.

    TR = max(H − L, |H − prevC|, |L − prevC|) (first bar H − L); ATR is Wilder's, seeded with the mean of
    the first ``period`` TRs; bands (H + L)/2 ± multiplier × ATR ratchet as in §6.5. Raises ValueError for
    ``period`` < 1 or a negative multiplier.
    """
    if period < 1:
        raise ValueError(f"period must be >= 1, not {period}")
    if multiplier < 0:
        raise ValueError(f"multiplier must be >= 0, not {multiplier}")
    result: list[SupertrendPoint | None] = []
    trs: list[float] = []
    atr = 0.0
    prev_close: float | None = None
    upper = lower = 0.0
    direction = DOWN
    for index, candle in enumerate(candles):
        high, low, close = float(candle.high), float(candle.low), float(candle.close)
        if prev_close is None:
            tr = high - low
        else:
            tr = max(high - low, abs(high - prev_close), abs(low - prev_close))
        if index < period:
            trs.append(tr)
        if index < period - 1:
            result.append(None)
            prev_close = close
            continue
        if index == period - 1:
            atr = sum(trs) / period
        else:
            atr += (tr - atr) / period
        mid = (high + low) / 2
        basic_upper = mid + multiplier * atr
        basic_lower = mid - multiplier * atr
        if index == period - 1:
            upper, lower, direction = basic_upper, basic_lower, DOWN
        else:
            assert prev_close is not None  # index >= period > 0
            # the bands only ratchet towards price unless the previous close broke through them
            lower = basic_lower if basic_lower > lower or prev_close < lower else lower
            upper = basic_upper if basic_upper < upper or prev_close > upper else upper
            if direction == DOWN:
                direction = UP if close > upper else DOWN
            else:
                direction = DOWN if close < lower else UP
        line = lower if direction == UP else upper
        result.append(SupertrendPoint(start=candle.start, line=line, direction=direction))
        prev_close = close
    return result


def supertrend_fires(kind: Literal["breakout", "breakdown"], point: SupertrendPoint | None) -> bool:
    """Whether the exit rule fires at this closed candle's point: ``breakout`` (net credit) at direction
    −1, ``breakdown`` (net debit) at +1; never without a point. Raises ValueError for another kind."""
    if kind not in ("breakout", "breakdown"):
        raise ValueError(f"unknown supertrend exit kind {kind!r}")
    if point is None:
        return False
    return point.direction == (UP if kind == "breakout" else DOWN)
