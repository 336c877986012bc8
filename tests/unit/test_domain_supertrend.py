from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pytest

from algomirror.domain.candles import Candle
from algomirror.domain.supertrend import SupertrendPoint, supertrend, supertrend_fires, warmup_bars

T0 = datetime(2026, 1, 5, 3, 45, tzinfo=UTC)  # 09:15 IST


def random_walk(n: int = 300, seed: int = 12) -> list[Candle]:
    rng = np.random.default_rng(seed)
    closes = 150 + np.cumsum(rng.normal(0, 2.0, n))
    opens = np.concatenate([[150.0], closes[:-1]]) + rng.normal(0, 0.5, n)
    highs = np.maximum(opens, closes) + rng.exponential(1.0, n)
    lows = np.minimum(opens, closes) - rng.exponential(1.0, n)
    return [
        Candle(
            T0 + timedelta(minutes=5 * i),
            *(Decimal(f"{value:.2f}") for value in (opens[i], highs[i], lows[i], closes[i])),
        )
        for i in range(n)
    ]


def reference(candles: list[Candle], period: int, multiplier: float) -> pd.DataFrame:
    """Independent reference: vectorised TR and bands with pandas, then the band/direction recursion
    over numpy arrays (the state machine written as index lookups rather than running variables)."""
    frame = pd.DataFrame(
        {
            "h": [float(c.high) for c in candles],
            "l": [float(c.low) for c in candles],
            "c": [float(c.close) for c in candles],
        }
    )
    prev_c = frame["c"].shift(1)
    tr = pd.concat(
        [frame["h"] - frame["l"], (frame["h"] - prev_c).abs(), (frame["l"] - prev_c).abs()], axis=1
    )
    tr = tr.max(axis=1, skipna=True).to_numpy()
    n = len(frame)
    atr = np.full(n, np.nan)
    atr[period - 1] = tr[:period].mean()
    for i in range(period, n):
        atr[i] = atr[i - 1] * (period - 1) / period + tr[i] / period
    hl2 = ((frame["h"] + frame["l"]) / 2).to_numpy()
    basic_up = hl2 + multiplier * atr
    basic_dn = hl2 - multiplier * atr
    close = frame["c"].to_numpy()
    fu = basic_up.copy()
    fl = basic_dn.copy()
    dirs = np.zeros(n, dtype=int)
    line = np.full(n, np.nan)
    s = period - 1
    dirs[s] = 1
    for i in range(s + 1, n):
        fl[i] = basic_dn[i] if (basic_dn[i] > fl[i - 1] or close[i - 1] < fl[i - 1]) else fl[i - 1]
        fu[i] = basic_up[i] if (basic_up[i] < fu[i - 1] or close[i - 1] > fu[i - 1]) else fu[i - 1]
        if line_was_upper := dirs[i - 1] == 1:
            dirs[i] = -1 if close[i] > fu[i] else 1
        if not line_was_upper:
            dirs[i] = 1 if close[i] < fl[i] else -1
    line = np.where(dirs == -1, fl, fu)
    line[:s] = np.nan
    return pd.DataFrame({"line": line, "dir": dirs})


@pytest.mark.parametrize(("period", "multiplier", "seed"), [(10, 3.0, 12), (7, 2.0, 99), (1, 1.5, 3)])
def test_matches_reference_on_seeded_walk(period: int, multiplier: float, seed: int) -> None:
    candles = random_walk(300, seed)
    points = supertrend(candles, period, multiplier)
    ref = reference(candles, period, multiplier)
    assert len(points) == len(candles)
    assert all(p is None for p in points[: period - 1])
    directions = set()
    for i in range(period - 1, len(candles)):
        point = points[i]
        assert point is not None
        assert point.start == candles[i].start
        assert point.line == pytest.approx(ref["line"][i], abs=1e-6), i
        assert point.direction == ref["dir"][i], i
        directions.add(point.direction)
    assert directions == {-1, 1}  # the data exercises both states


def test_first_valid_bar_is_down_and_seeded_with_mean_tr() -> None:
    bars = [
        Candle(T0 + timedelta(minutes=i), Decimal(o), Decimal(h), Decimal(lo), Decimal(c))
        for i, (o, h, lo, c) in enumerate(
            [("10", "12", "9", "11"), ("11", "14", "10", "13"), ("13", "13", "8", "9")]
        )
    ]
    points = supertrend(bars, 3, 2.0)
    assert points[:2] == [None, None]
    # TRs 3, 4, max(5, 0, 5)=5 -> ATR 4; mid 10.5; upper 18.5
    assert points[2] == SupertrendPoint(bars[2].start, 18.5, 1)


def test_warmup_bars() -> None:
    assert warmup_bars(10) == 100
    assert warmup_bars(1) == 10
    assert warmup_bars(0) == 5


def test_breakout_and_breakdown() -> None:
    up = SupertrendPoint(T0, 100.0, -1)
    down = SupertrendPoint(T0, 100.0, 1)
    assert supertrend_fires("breakout", up) and not supertrend_fires("breakout", down)
    assert supertrend_fires("breakdown", down) and not supertrend_fires("breakdown", up)
    assert not supertrend_fires("breakout", None)
    with pytest.raises(ValueError, match="kind"):
        supertrend_fires("sideways", up)  # type: ignore[arg-type]


def test_rally_flips_to_up_then_crash_flips_down() -> None:
    prices = [100.0] * 12 + [100.0 + 5 * i for i in range(1, 10)] + [140.0 - 10 * i for i in range(1, 10)]
    bars = [
        Candle(
            T0 + timedelta(minutes=i),
            Decimal(str(p)),
            Decimal(str(p + 1)),
            Decimal(str(p - 1)),
            Decimal(str(p)),
        )
        for i, p in enumerate(prices)
    ]
    dirs = [p.direction for p in supertrend(bars, 5, 2.0) if p is not None]
    first_up = dirs.index(-1)
    assert 1 in dirs[first_up:]


def test_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="period"):
        supertrend([], 0, 3.0)
    with pytest.raises(ValueError, match="multiplier"):
        supertrend([], 10, -1.0)
    assert supertrend([], 10, 3.0) == []
