"""OHLC candles (PRODUCT §6.5): IST session-anchored windows, tick building, 1m aggregation and the
combined premium series of a run's legs. Prices are Decimal; instants aware UTC.

Windows are [09:15 + kN, 09:15 + (k+1)N) IST, the last one cut at the session close (10m: 15:25–15:30).
Nothing here invents a candle: a window without ticks (or bars) has no candle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

from algomirror.domain.timeutil import ist_combine, to_ist

TIMEFRAMES: dict[str, int] = {"1m": 1, "3m": 3, "5m": 5, "10m": 10, "15m": 15}

SESSION_OPEN = time(9, 15)
SESSION_CLOSE = time(15, 30)


@dataclass(frozen=True)
class Candle:
    """One OHLC candle; ``start`` is the aware UTC instant its window opens."""

    start: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal


def _check_minutes(minutes: int) -> None:
    if minutes < 1:
        raise ValueError(f"minutes must be >= 1, not {minutes}")


def candle_start(
    at: datetime,
    minutes: int,
    *,
    session_open: time = SESSION_OPEN,
    session_close: time = SESSION_CLOSE,
) -> datetime | None:
    """UTC start of the ``minutes`` window holding ``at`` (anchored at the IST session open); None
    outside [open, close). Raises ValueError for a naive ``at`` or ``minutes`` < 1."""
    _check_minutes(minutes)
    local = to_ist(at)
    if not session_open <= local.time() < session_close:
        return None
    opened = ist_combine(local.date(), session_open)
    elapsed = int((at.astimezone(UTC) - opened).total_seconds())
    return opened + timedelta(seconds=elapsed - elapsed % (minutes * 60))


def candle_end(start: datetime, minutes: int, *, session_close: time = SESSION_CLOSE) -> datetime:
    """UTC end (exclusive) of the window opening at ``start``: start + N, cut at the session close."""
    _check_minutes(minutes)
    close = ist_combine(to_ist(start).date(), session_close)
    return min(start + timedelta(minutes=minutes), close)


class CandleBuilder:
    """Builds ``minutes`` candles from ticks. Ticks outside the session, or older than the forming
    candle (a late tick for a candle already closed), are ignored: a closed candle never changes."""

    def __init__(
        self,
        minutes: int,
        *,
        session_open: time = SESSION_OPEN,
        session_close: time = SESSION_CLOSE,
    ) -> None:
        _check_minutes(minutes)
        self.minutes = minutes
        self._open = session_open
        self._close = session_close
        self._forming: Candle | None = None
        self._forming_end: datetime | None = None
        self._last_closed: datetime | None = None  # start of the newest closed candle

    @property
    def forming(self) -> Candle | None:
        """The candle still open (never used for decisions), or None."""
        return self._forming

    def add(self, at: datetime, price: Decimal) -> list[Candle]:
        """Apply a tick at ``at`` (aware) with ``price``; returns the candles this tick closed."""
        closed = self.close_due(at)
        start = candle_start(at, self.minutes, session_open=self._open, session_close=self._close)
        if start is None:
            return closed
        if self._last_closed is not None and start <= self._last_closed:
            return closed  # late tick for a candle already closed
        current = self._forming
        if current is None:
            self._forming = Candle(start, price, price, price, price)
            self._forming_end = candle_end(start, self.minutes, session_close=self._close)
            return closed
        if start < current.start:
            return closed  # late tick for a window that had no candle: too late to open one
        if start == current.start:
            self._forming = Candle(
                start, current.open, max(current.high, price), min(current.low, price), price
            )
            return closed
        # a later window (any windows between had no ticks and get no candle)
        closed.append(current)
        self._last_closed = current.start
        self._forming = Candle(start, price, price, price, price)
        self._forming_end = candle_end(start, self.minutes, session_close=self._close)
        return closed

    def close_due(self, now: datetime) -> list[Candle]:
        """Close the forming candle when its window (or the session) has ended by ``now``."""
        if self._forming is None or self._forming_end is None or now < self._forming_end:
            return []
        done = self._forming
        self._last_closed = done.start
        self._forming = None
        self._forming_end = None
        return [done]


def aggregate(
    bars: Sequence[Candle],
    minutes: int,
    *,
    session_open: time = SESSION_OPEN,
    session_close: time = SESSION_CLOSE,
) -> list[Candle]:
    """1-minute bars → ``minutes`` candles on the same anchoring (bars outside the session dropped);
    O first open, H max, L min, C last close. Raises ValueError for ``minutes`` < 1."""
    out: list[Candle] = []
    for bar in sorted(bars, key=lambda b: b.start):
        start = candle_start(bar.start, minutes, session_open=session_open, session_close=session_close)
        if start is None:
            continue
        if out and out[-1].start == start:
            last = out[-1]
            out[-1] = Candle(start, last.open, max(last.high, bar.high), min(last.low, bar.low), bar.close)
        else:
            out.append(Candle(start, bar.open, bar.high, bar.low, bar.close))
    return out


def combined_premium(legs: Sequence[tuple[str, int, Sequence[Candle]]]) -> list[Candle]:
    """The run's combined premium series (PRODUCT §6.5): per timestamp Σ SELL − Σ BUY of O, H, L, C,
    each leg weighted by its lots; then absolute values with H/L swapped if needed. A leg without a
    candle at a timestamp repeats its previous close; timestamps before every leg has data are dropped.

    ``legs`` are (action "BUY"/"SELL", lots > 0, candles). Raises ValueError for another action or
    non-positive lots.
    """
    if not legs:
        return []
    by_start: list[dict[datetime, Candle]] = []
    weights: list[int] = []
    for action, lots, candles in legs:
        if action not in ("BUY", "SELL"):
            raise ValueError(f"action must be BUY or SELL, not {action!r}")
        if lots <= 0:
            raise ValueError(f"lots must be > 0, not {lots}")
        weights.append(lots if action == "SELL" else -lots)
        by_start.append({c.start: c for c in candles})
    stamps = sorted({start for leg in by_start for start in leg})
    last_close: list[Decimal | None] = [None] * len(legs)
    out: list[Candle] = []
    for stamp in stamps:
        parts: list[tuple[Decimal, Decimal, Decimal, Decimal]] = []
        for index, leg in enumerate(by_start):
            candle = leg.get(stamp)
            if candle is not None:
                parts.append((candle.open, candle.high, candle.low, candle.close))
                last_close[index] = candle.close
            else:
                previous = last_close[index]
                if previous is not None:
                    parts.append((previous, previous, previous, previous))
        if len(parts) < len(legs):
            continue  # some leg has no data yet
        o, h, lo, c = (
            abs(sum((w * p[k] for w, p in zip(weights, parts, strict=True)), Decimal(0))) for k in range(4)
        )
        if h < lo:
            h, lo = lo, h
        out.append(Candle(stamp, o, h, lo, c))
    return out
