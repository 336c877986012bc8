"""The run's combined-premium candle series (PRODUCT §6.5 "Series"): ONE builder for the Supertrend exit
rule (engine) and the premium chart (web).

**Legs.** The run's legs with open executions, grouped by (symbol, exchange, side) over accounts; each is
weighted by its executed lots summed over accounts (filled units / lot size; units when the lot size is not
known, which only rescales the series and never changes the Supertrend's direction).

**Candles per leg.** The gateway's history (``/history``) on the feed account at the run's timeframe,
or 1-minute bars aggregated when the gateway does not list (or refuses) that timeframe; every bar is
re-anchored on the IST session windows. Closed candles only: a window whose end is after ``now`` (the
forming candle, which gateways include) is discarded. After the newest history candle the leg continues
with candles built from our own ticks (:class:`TickCandles`, fed by the MarkBook listener).

**Combination.** :func:`~algomirror.domain.candles.combined_premium`: Σ SELL − Σ BUY of O/H/L/C, then
absolute values; a leg without a candle repeats its previous close; candles before every leg has data
are dropped. A leg whose history cannot be read (or is empty) makes the whole series ``unknown`` with a
message: no substitute series (index candles, zeros) is ever used.

**Warm-up.** ``warmup_bars(period)`` closed candles, counted over trading sessions: enough past sessions
are loaded for the warm-up, and past sessions' history is cached (it no longer changes).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, Protocol

from algomirror.broker.errors import BrokerError
from algomirror.domain.calendar import TradingCalendar, default_calendar
from algomirror.domain.candles import (
    TIMEFRAMES,
    Candle,
    CandleBuilder,
    aggregate,
    candle_end,
    combined_premium,
)
from algomirror.domain.mirror import symbol_lot_size
from algomirror.domain.supertrend import SupertrendPoint, supertrend, warmup_bars
from algomirror.domain.timeutil import ensure_aware, to_ist

log = logging.getLogger(__name__)

SeriesState = Literal["ok", "warming", "unknown"]
Side = Literal["BUY", "SELL"]

#: The calendar exchange that decides trading sessions of the option legs.
SESSION_EXCHANGE = "NSE"
#: Minutes in the regular session (09:15–15:30 IST).
SESSION_MINUTES = 375
#: Most tick candles kept per (symbol, exchange, timeframe): more than a day of 1-minute candles.
MAX_TICK_CANDLES = 500
#: How many past sessions' history is cached (per leg and timeframe).
MAX_CACHED = 2000


class HistoryBar(Protocol):
    """A gateway bar (:class:`algomirror.broker.wire.market.Candle`): ``start`` aware UTC, prices ₹."""

    @property
    def start(self) -> datetime: ...
    @property
    def open(self) -> Decimal | None: ...
    @property
    def high(self) -> Decimal | None: ...
    @property
    def low(self) -> Decimal | None: ...
    @property
    def close(self) -> Decimal | None: ...


class IntervalList(Protocol):
    @property
    def all(self) -> tuple[str, ...]: ...


class HistorySource(Protocol):
    """The part of :class:`~algomirror.broker.client.OpenAlgoClient` the builder uses."""

    async def history(
        self, symbol: str, exchange: str, interval: str, start_date: date, end_date: date
    ) -> Sequence[HistoryBar]: ...

    async def intervals(self) -> IntervalList: ...


@dataclass(frozen=True, slots=True)
class SeriesLeg:
    """One leg of the series: ``units`` executed (filled) over every account of the run."""

    symbol: str
    exchange: str
    side: Side
    units: int


@dataclass(frozen=True, slots=True)
class PremiumSeries:
    """The combined series at ``now``: closed candles (₹ of combined premium per lot set, oldest first),
    the state (``ok``, ``warming`` before ``needed`` candles, ``unknown`` with ``message``), and per leg
    the start of its newest closed candle (None: none) — a candle is complete when every leg has it."""

    timeframe: str
    candles: tuple[Candle, ...]
    state: SeriesState
    message: str | None
    needed: int
    leg_latest: tuple[datetime | None, ...] = ()

    def complete_at(self, start: datetime) -> bool:
        """Whether every leg has a candle at (or after) ``start``."""
        return bool(self.leg_latest) and all(s is not None and s >= start for s in self.leg_latest)

    def has(self, start: datetime) -> bool:
        """Whether the combined series has the candle opening at ``start``."""
        return any(c.start == start for c in reversed(self.candles))

    def indicator(self, period: int, multiplier: float) -> list[SupertrendPoint | None]:
        """Supertrend over the candles (PRODUCT §6.5 indicator)."""
        return supertrend(self.candles, period, multiplier)


def legs_of(rows: Sequence[tuple[str | None, str | None, str | None, int, int]]) -> list[SeriesLeg]:
    """Series legs from executions (symbol, exchange, side, filled units, exited units): only those with
    open units count; units summed per (symbol, exchange, side), in first-seen order."""
    totals: dict[tuple[str, str, Side], int] = {}
    for symbol, exchange, side, filled, exited in rows:
        if not symbol or not exchange or side not in ("BUY", "SELL") or filled - exited <= 0:
            continue
        action: Side = "SELL" if side == "SELL" else "BUY"
        key = (symbol, exchange, action)
        totals[key] = totals.get(key, 0) + filled
    return [SeriesLeg(s, e, side, units) for (s, e, side), units in totals.items()]


def timeframe_minutes(timeframe: str) -> int:
    """Minutes of ``timeframe`` (``"5m"`` → 5). Raises ValueError for one not in TIMEFRAMES."""
    try:
        return TIMEFRAMES[timeframe]
    except KeyError:
        raise ValueError(f"unknown timeframe {timeframe!r}") from None


def sessions_for(period: int, minutes: int, *, days: int = 0) -> int:
    """Trading sessions to load: enough closed candles for the warm-up (plus one, as today's session is
    partial), at least ``days``."""
    per_session = math.ceil(SESSION_MINUTES / minutes)
    return max(days, math.ceil(warmup_bars(period) / per_session) + 1)


def first_day(today: date, sessions: int, calendar: TradingCalendar) -> date:
    """The IST date ``sessions`` trading sessions back, counting ``today`` (or the last trading day)."""
    day = calendar.adjust_to_trading_day(SESSION_EXCHANGE, today)
    for _ in range(sessions - 1):
        day = calendar.previous_trading_day(SESSION_EXCHANGE, day)
    return day


class TickCandles:
    """Candles from our own ticks per (symbol, exchange, minutes), built only for watched keys.

    :meth:`on_mark` is a MarkBook listener body (any thread); reads take the same lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._builders: dict[tuple[str, str, int], CandleBuilder] = {}
        self._closed: dict[tuple[str, str, int], list[Candle]] = {}

    def watch(self, keys: set[tuple[str, str, int]]) -> None:
        """Build candles for exactly ``keys`` (symbol, exchange, minutes); others are forgotten."""
        with self._lock:
            for key in list(self._builders):
                if key not in keys:
                    del self._builders[key]
                    self._closed.pop(key, None)
            for key in keys:
                if key not in self._builders:
                    self._builders[key] = CandleBuilder(key[2])
                    self._closed[key] = []

    def on_mark(self, symbol: str, exchange: str, at: datetime, price: Decimal) -> None:
        """Apply one tick (``at`` aware) to every watched timeframe of (symbol, exchange)."""
        with self._lock:
            for key, builder in self._builders.items():
                if key[0] == symbol and key[1] == exchange:
                    self._keep(key, builder.add(at, price))

    def closed(self, symbol: str, exchange: str, minutes: int, now: datetime) -> list[Candle]:
        """The closed tick candles of the key by ``now`` (the forming one closed when its window ended)."""
        key = (symbol, exchange, minutes)
        with self._lock:
            builder = self._builders.get(key)
            if builder is None:
                return []
            self._keep(key, builder.close_due(now))
            return list(self._closed.get(key, ()))

    def _keep(self, key: tuple[str, str, int], candles: list[Candle]) -> None:
        if not candles:
            return
        kept = self._closed.setdefault(key, [])
        kept.extend(candles)
        if len(kept) > MAX_TICK_CANDLES:
            del kept[: len(kept) - MAX_TICK_CANDLES]


class MissingHistory(Exception):
    """A leg's history could not be read (or was empty); the message says which and why."""


@dataclass
class PremiumSeriesBuilder:
    """Builds :class:`PremiumSeries`; holds the past sessions' history cache and the gateways' interval
    lists (per ``source_key``: the feed account). Coroutines run on one loop at a time."""

    calendar: TradingCalendar = field(default_factory=default_calendar)
    ticks: TickCandles | None = None
    _past: dict[tuple[Any, ...], tuple[Candle, ...]] = field(default_factory=dict)
    _intervals: dict[Any, frozenset[str] | None] = field(default_factory=dict)

    async def build(
        self,
        legs: Sequence[SeriesLeg],
        timeframe: str,
        now: datetime,
        source: HistorySource,
        *,
        source_key: Any = None,
        period: int,
        days: int = 0,
    ) -> PremiumSeries:
        """The series of ``legs`` at ``timeframe`` by ``now`` (aware) from ``source``; ``days`` asks for
        at least that many sessions (the chart). Never raises for a broker failure: that is state
        ``unknown``. Raises ValueError for an unknown timeframe or a period < 1."""
        now = ensure_aware(now)
        minutes = timeframe_minutes(timeframe)
        needed = warmup_bars(period)
        if not legs:
            return PremiumSeries(timeframe, (), "unknown", "no open legs", needed)
        today = to_ist(now).date()
        start = first_day(today, sessions_for(period, minutes, days=days), self.calendar)
        per_leg: list[tuple[str, int, Sequence[Candle]]] = []
        latest: list[datetime | None] = []
        for leg in legs:
            try:
                candles = await self._leg_candles(source, source_key, leg, timeframe, minutes, start, today)
            except MissingHistory as exc:
                return PremiumSeries(timeframe, (), "unknown", str(exc), needed)
            closed = [c for c in candles if candle_end(c.start, minutes) <= now]
            if self.ticks is not None:
                newest = closed[-1].start if closed else None
                closed.extend(
                    c
                    for c in self.ticks.closed(leg.symbol, leg.exchange, minutes, now)
                    if (newest is None or c.start > newest) and candle_end(c.start, minutes) <= now
                )
            if not closed:
                return PremiumSeries(
                    timeframe, (), "unknown", f"no history for {leg.symbol} at {timeframe}", needed
                )
            per_leg.append((leg.side, leg.units, closed))
            latest.append(closed[-1].start)
        combined = _per_lot(combined_premium(per_leg), legs)
        state: SeriesState = "ok" if len(combined) >= needed else "warming"
        message = None if state == "ok" else f"warming up: {len(combined)} of {needed} closed candles"
        return PremiumSeries(timeframe, tuple(combined), state, message, needed, tuple(latest))

    async def _leg_candles(
        self,
        source: HistorySource,
        source_key: Any,
        leg: SeriesLeg,
        timeframe: str,
        minutes: int,
        start: date,
        today: date,
    ) -> list[Candle]:
        """History of one leg for IST dates [start, today]: past sessions cached, today read again."""
        out: list[Candle] = []
        if start < today:
            last_past = today - timedelta(days=1)
            key = (source_key, leg.symbol, leg.exchange, timeframe, start, last_past)
            cached = self._past.get(key) if source_key is not None else None
            if cached is None:
                cached = tuple(
                    await self._fetch(source, source_key, leg, timeframe, minutes, start, last_past)
                )
                if source_key is not None:
                    if len(self._past) >= MAX_CACHED:
                        self._past.clear()
                    self._past[key] = cached
            out.extend(cached)
        out.extend(await self._fetch(source, source_key, leg, timeframe, minutes, today, today))
        if not out:
            raise MissingHistory(f"no history for {leg.symbol} at {timeframe}")
        return out

    async def _fetch(
        self,
        source: HistorySource,
        source_key: Any,
        leg: SeriesLeg,
        timeframe: str,
        minutes: int,
        start: date,
        end: date,
    ) -> list[Candle]:
        listed = await self._listed(source, source_key)
        direct_error: BrokerError | None = None
        if listed is None or timeframe in listed:
            try:
                bars = await source.history(leg.symbol, leg.exchange, timeframe, start, end)
                return aggregate(_candles(bars), minutes)
            except BrokerError as exc:
                # A listed timeframe can still fail (OPENALGO-PROTOCOL §2.3): aggregate 1-minute bars.
                direct_error = exc
        try:
            bars = await source.history(leg.symbol, leg.exchange, "1m", start, end)
        except BrokerError as exc:
            first = f"{timeframe}: {_reason(direct_error)}; " if direct_error is not None else ""
            raise MissingHistory(f"history for {leg.symbol} unavailable ({first}1m: {_reason(exc)})") from exc
        return aggregate(_candles(bars), minutes)

    async def _listed(self, source: HistorySource, source_key: Any) -> frozenset[str] | None:
        if source_key is not None and source_key in self._intervals:
            return self._intervals[source_key]
        try:
            listed: frozenset[str] | None = frozenset((await source.intervals()).all)
        except BrokerError as exc:
            log.info("premium series: intervals not read (%s); trying the timeframe itself", _reason(exc))
            listed = None
        if source_key is not None and listed is not None:
            self._intervals[source_key] = listed
        return listed


def _reason(exc: BaseException | None) -> str:
    if exc is None:
        return ""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def _candles(bars: Sequence[HistoryBar]) -> list[Candle]:
    """Domain candles from gateway bars; a bar missing a price is not a candle (never filled with 0)."""
    out = []
    for bar in bars:
        o, h, lo, c = bar.open, bar.high, bar.low, bar.close
        if o is None or h is None or lo is None or c is None:
            continue
        out.append(Candle(ensure_aware(bar.start), o, h, lo, c))
    return out


def _per_lot(candles: list[Candle], legs: Sequence[SeriesLeg]) -> list[Candle]:
    """Units → lots: divide by the legs' common lot size (units stay when the legs' lot sizes differ or
    are unknown)."""
    sizes: set[int] = set()
    for leg in legs:
        try:
            sizes.add(symbol_lot_size(leg.symbol))
        except ValueError:
            return candles
    if len(sizes) != 1:
        return candles
    lot = Decimal(sizes.pop())
    if lot == 1:
        return candles
    return [Candle(c.start, c.open / lot, c.high / lot, c.low / lot, c.close / lot) for c in candles]


__all__ = [
    "HistorySource",
    "MissingHistory",
    "PremiumSeries",
    "PremiumSeriesBuilder",
    "SeriesLeg",
    "TickCandles",
    "first_day",
    "legs_of",
    "sessions_for",
    "timeframe_minutes",
]
