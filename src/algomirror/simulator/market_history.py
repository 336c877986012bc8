"""Deterministic synthetic history for the paper exchange's market model, and candle aggregation.

Past sessions (before the model's start) are generated backwards from the starting spot: each regular
trading day gets its own ``random.Random`` seeded by (seed, underlying, date), so a day's bars never depend
on which other days were asked for or in what order. Within a day the 1-minute path is a Brownian bridge
from the day's open to its close; the close of the previous day is the open minus a small overnight gap.
All prices here are floats (model values); the caller rounds to the tick.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from algomirror.domain.calendar import TradingCalendar
from algomirror.domain.pricing import TRADING_SECONDS_PER_YEAR
from algomirror.domain.timeutil import ist_combine, to_ist

MINUTE = timedelta(minutes=1)

# (start, open, high, low, close) in model floats; start is aware UTC.
Bar = tuple[datetime, float, float, float, float]


@dataclass(slots=True)
class _SynthDay:
    open: float
    close: float  # the value at the end of the synthetic part (the day's close, or the anchor spot)
    minutes: int  # number of synthetic 1-minute bars


class SyntheticHistory:
    """Backwards-generated sessions of one underlying, anchored at ``anchor_price`` at ``anchor``.

    ``anchor_day`` is the last regular trading day whose session has begun at the anchor instant; its first
    ``anchor_minutes`` minutes are synthetic (all of them when the anchor is after its close).
    """

    def __init__(
        self,
        *,
        seed: int,
        name: str,
        exchange: str,
        calendar: TradingCalendar,
        anchor: datetime,
        anchor_price: float,
        volatility: float,
    ) -> None:
        self._seed = seed
        self._name = name
        self._exchange = exchange
        self._calendar = calendar
        self._minute_vol = volatility * math.sqrt(60.0 / TRADING_SECONDS_PER_YEAR)
        self._gap_vol = 0.3 * volatility * math.sqrt(1.0 / 252.0)
        self.anchor_day, self.anchor_minutes = self._locate_anchor(anchor)
        self._days: dict[date, _SynthDay] = {}
        self._bars: dict[date, list[Bar]] = {}
        self._oldest = self.anchor_day
        self._oldest_start_close = anchor_price  # the value at the end of the oldest generated day
        self._extend_to(self.anchor_day)

    def _locate_anchor(self, anchor: datetime) -> tuple[date, int]:
        day = anchor.astimezone(UTC).date() + timedelta(days=1)
        for _ in range(400):
            bounds = self._regular_bounds(day)
            if bounds is not None and bounds[0] <= anchor:
                start, end = bounds
                if anchor >= end:
                    return day, self._session_minutes(day)
                return day, int((anchor - start).total_seconds() // 60)
            day -= timedelta(days=1)
        raise LookupError(f"no trading day before {anchor.isoformat()}")

    def _regular_bounds(self, day: date) -> tuple[datetime, datetime] | None:
        if not self._calendar.is_trading_day(self._exchange, day):
            return None
        sessions = self._calendar.sessions(self._exchange, day)
        return sessions[0] if sessions else None

    def _session_minutes(self, day: date) -> int:
        bounds = self._regular_bounds(day)
        if bounds is None:
            return 0
        return int((bounds[1] - bounds[0]).total_seconds() // 60)

    def _rng(self, day: date) -> random.Random:
        return random.Random(f"{self._seed}:{self._name}:{day.isoformat()}:history")

    def _extend_to(self, day: date) -> None:
        """Generate days backwards until ``day`` (or the oldest generated day) is covered."""
        if day in self._days or (day > self._oldest and self._days):
            return
        current = self._oldest
        end_value = self._oldest_start_close
        while True:
            if current not in self._days:
                minutes = (
                    self.anchor_minutes if current == self.anchor_day else self._session_minutes(current)
                )
                rng = self._rng(current)
                opening = end_value * math.exp(
                    -self._minute_vol * math.sqrt(max(minutes, 0)) * rng.gauss(0, 1)
                )
                self._days[current] = _SynthDay(opening, end_value, minutes)
                self._oldest = current
                end_value = opening * math.exp(-self._gap_vol * rng.gauss(0, 1))
                self._oldest_start_close = end_value
            if current <= day:
                return
            current = self._calendar.previous_trading_day(self._exchange, current)

    def day_close(self, day: date) -> float | None:
        """Close of a synthetic regular trading day ≤ anchor day (the anchor value for the anchor day)."""
        if day > self.anchor_day or not self._calendar.is_trading_day(self._exchange, day):
            return None
        self._extend_to(day)
        found = self._days.get(day)
        return None if found is None else found.close

    def previous_close(self, day: date) -> float:
        """Close of the last regular trading day strictly before ``day`` (needs it to be ≤ anchor day)."""
        previous = self._calendar.previous_trading_day(self._exchange, day)
        close = self.day_close(previous)
        if close is None:
            raise LookupError(f"no synthetic close for {self._name} on {previous.isoformat()}")
        return close

    def day_open(self, day: date) -> float | None:
        if self.day_close(day) is None:
            return None
        return self._days[day].open

    def bars(self, day: date) -> list[Bar]:
        """The synthetic 1-minute bars of ``day`` (empty for non-trading days or days after the anchor)."""
        if self.day_close(day) is None:
            return []
        cached = self._bars.get(day)
        if cached is not None:
            return cached
        spec = self._days[day]
        bounds = self._regular_bounds(day)
        if bounds is None or spec.minutes <= 0:
            return []
        rng = self._rng(day)
        rng.gauss(0, 1)  # the two draws used for the open and the overnight gap
        rng.gauss(0, 1)
        n = spec.minutes
        walk = [0.0]
        for _ in range(n):
            walk.append(walk[-1] + self._minute_vol * rng.gauss(0, 1))
        start_log, end_log = math.log(spec.open), math.log(spec.close)
        total = walk[-1] - (end_log - start_log)
        path = [math.exp(start_log + walk[k] - total * k / n) for k in range(n + 1)]
        result: list[Bar] = []
        for k in range(n):
            o, c = path[k], path[k + 1]
            wiggle = abs(rng.gauss(0, 1)) * self._minute_vol * 0.5
            wiggle_low = abs(rng.gauss(0, 1)) * self._minute_vol * 0.5
            result.append(
                (
                    bounds[0] + k * MINUTE,
                    o,
                    max(o, c) * math.exp(wiggle),
                    min(o, c) * math.exp(-wiggle_low),
                    c,
                )
            )
        if len(self._bars) > 64:
            self._bars.pop(next(iter(self._bars)))
        self._bars[day] = result
        return result


_INTERVAL_RE = re.compile(r"^(\d+)(m|h)$")


def interval_minutes(interval: str) -> int | None:
    """Minutes per bar for ``1m``…``60m``/``1h``/``2h``; None for daily (``D``/``1d``).

    Raises ValueError for anything else (seconds, weeks and months are not generated).
    """
    text = interval.strip()
    if text in ("D", "1d", "1D", "day"):
        return None
    match = _INTERVAL_RE.match(text)
    if match is None or int(match.group(1)) <= 0:
        raise ValueError(f"unsupported interval {interval!r}")
    count = int(match.group(1))
    return count * 60 if match.group(2) == "h" else count


def bucket_start(
    start: datetime, minutes: int | None, session_start: Callable[[datetime], datetime]
) -> datetime:
    """Start of the aggregated bar holding a 1-minute bar that starts at ``start`` (see :func:`aggregate`)."""
    if minutes is None:
        ist_day = to_ist(start).date()
        return datetime(ist_day.year, ist_day.month, ist_day.day, tzinfo=UTC)
    anchor = session_start(start)
    offset = int((start - anchor).total_seconds() // 60) // minutes * minutes
    return anchor + timedelta(minutes=offset)


def aggregate(
    bars: Sequence[Bar],
    minutes: int | None,
    session_start: Callable[[datetime], datetime],
) -> list[Bar]:
    """Aggregate ascending 1-minute bars into ``minutes``-minute bars anchored at each bar's session start
    (``session_start(bar_start)``), or into daily bars stamped 00:00 UTC of the IST trading date when
    ``minutes`` is None. The bucket key of a bar is its IST date for daily bars."""
    out: list[Bar] = []
    current_key: datetime | None = None
    for start, o, h, low, c in bars:
        key = bucket_start(start, minutes, session_start)
        if key != current_key:
            out.append((key, o, h, low, c))
            current_key = key
        else:
            k, o0, h0, l0, _ = out[-1]
            out[-1] = (k, o0, max(h0, h), min(l0, low), c)
    return out


def day_bounds_ist(day: date) -> tuple[datetime, datetime]:
    """[00:00, 24:00) IST of ``day`` in aware UTC."""
    start = ist_combine(day, datetime.min.time())
    return start, start + timedelta(days=1)


def trading_days(calendar: TradingCalendar, exchange: str, start: date, end: date) -> Iterable[date]:
    day = start
    while day <= end:
        if calendar.sessions(exchange, day):
            yield day
        day += timedelta(days=1)
