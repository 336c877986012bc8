"""OHLC candles (PRODUCT §6.5): IST session-anchored windows, tick building, 1m aggregation and the
combined premium series of a run's legs. Prices are Decimal; instants aware UTC."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

TIMEFRAMES: dict[str, int] = {"1m": 1, "3m": 3, "5m": 5, "10m": 10, "15m": 15}


@dataclass(frozen=True)
class Candle:
    """One OHLC candle; ``start`` is the aware UTC instant its window opens."""

    start: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
