"""A fake OpenAlgo history source for the premium-series and Supertrend tests: 1-minute bars of the
regular sessions from a price path per symbol, served up to the clock's now INCLUDING the forming bar
(as the paper exchange and real gateways do), other timeframes aggregated from them when listed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal

from algomirror.broker.errors import RejectedError
from algomirror.broker.wire.market import Candle as Bar
from algomirror.broker.wire.market import Intervals
from algomirror.domain.calendar import default_calendar
from algomirror.domain.candles import TIMEFRAMES, Candle, aggregate
from algomirror.domain.timeutil import Clock, ist_combine

Path = Callable[[datetime], Decimal]
TICK = Decimal("0.05")


def flat(price: str) -> Path:
    value = Decimal(price)
    return lambda at: value


@dataclass
class FakeHistory:
    """``paths[symbol](instant)`` is the price; ``listed`` the timeframes /intervals lists;
    ``missing`` symbols answer 400; ``since[symbol]`` is its first bar (listed that day); ``lag``
    hides bars that started within that many seconds of now (a gateway that is late).
    Every call is recorded as (symbol, interval, start, end)."""

    clock: Clock
    paths: dict[str, Path]
    listed: tuple[str, ...] = ("1m", "3m", "5m", "10m", "15m")
    missing: set[str] = field(default_factory=set)
    lag: float = 0.0
    since: dict[str, datetime] = field(default_factory=dict)
    calls: list[tuple[str, str, date, date]] = field(default_factory=list)

    async def intervals(self) -> Intervals:
        return Intervals(minutes=self.listed)

    async def history(
        self, symbol: str, exchange: str, interval: str, start_date: date, end_date: date
    ) -> Sequence[Bar]:
        self.calls.append((symbol, interval, start_date, end_date))
        if symbol in self.missing or symbol not in self.paths:
            raise RejectedError(f"Symbol {symbol} not found", endpoint="history", http_status=400)
        if interval not in self.listed:
            raise RejectedError(
                f"Interval '{interval}' is not supported", endpoint="history", http_status=400
            )
        bars = self.minute_bars(symbol, start_date, end_date)
        if interval != "1m":
            bars = aggregate(bars, TIMEFRAMES[interval])
        return [Bar(b.start, b.open, b.high, b.low, b.close, 0, 0) for b in bars]

    def minute_bars(self, symbol: str, start_date: date, end_date: date) -> list[Candle]:
        now = self.clock.now() - timedelta(seconds=self.lag)
        path = self.paths[symbol]
        calendar = default_calendar()
        out: list[Candle] = []
        day = start_date
        while day <= end_date:
            if calendar.is_trading_day("NSE", day):
                at = ist_combine(day, time(9, 15))
                first = self.since.get(symbol)
                if first is not None:
                    at = max(at, first)
                close = ist_combine(day, time(15, 30))
                while at < close and at <= now:
                    end = min(at + timedelta(seconds=59), now)
                    o, c = path(at), path(end)
                    out.append(Candle(at, o, max(o, c) + TICK, max(min(o, c) - TICK, TICK), c))
                    at += timedelta(minutes=1)
            day += timedelta(days=1)
        return out
