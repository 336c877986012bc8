"""The paper exchange's moving market: implements :class:`~algomirror.simulator.contracts.MarketModel`.

* **Indices** move by geometric Brownian motion, one step per ``tick_interval`` simulated seconds, only while
  their exchange's session is open (``TradingCalendar.is_open``); outside hours prices stay.
* **Options** are priced by Black–Scholes from spot, a volatility smile and the time to 15:30 IST on expiry;
  **futures** at spot·e^(rT). Derivatives are priced lazily: only when queried, or on each tick for the
  instruments someone :meth:`Market.watch`-es — the rest of the universe costs nothing per tick.
* **Determinism:** one ``random.Random`` stream per underlying (seeded by ``seed`` and the name), stepped
  on a fixed time grid ``start + k·tick_interval``; the path does not depend on how ``advance_to`` calls are
  chunked, on listeners or on queries. Past sessions come from :class:`SyntheticHistory` (per-day seeds).
* **Instrument master:** regenerated each IST day from the calendar and the effective-dated contract specs:
  weekly (where they exist) and monthly option expiries for ~2 months, the next 3 monthlies for options and
  futures, strikes ATM ± 40 steps around the spot of the day (union with earlier days' strikes).

Thread-safety: every public method takes one re-entrant lock; listeners are called *outside* it, so a
listener may call back into the model. An exception raised by a listener propagates to the caller of
``advance_to`` / ``set_price`` (the tick itself is already applied).
"""

from __future__ import annotations

import functools
import math
import random
import threading
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal

from algomirror.domain.calendar import (
    EXPIRY_CUTOFF,
    TradingCalendar,
    default_calendar,
    expiry_dates,
    is_expired,
)
from algomirror.domain.contract_specs import ContractSpecs, default_specs
from algomirror.domain.instruments import (
    TICK_SIZE,
    UNDERLYINGS,
    Contract,
    UnderlyingSpec,
    future_symbol,
    option_symbol,
)
from algomirror.domain.pricing import (
    SECONDS_PER_YEAR,
    TRADING_SECONDS_PER_YEAR,
    VolSmile,
    bs_price,
    forward_price,
    gbm_step,
)
from algomirror.domain.timeutil import ensure_aware, ist_combine, ist_today, to_ist
from algomirror.simulator.contracts import Candle, DepthLevel, Quote, TickListener
from algomirror.simulator.market_history import (
    Bar,
    SyntheticHistory,
    aggregate,
    bucket_start,
    interval_minutes,
)

DEFAULT_SPOTS: dict[str, Decimal] = {
    "NIFTY": Decimal(26000),
    "BANKNIFTY": Decimal(59000),
    "SENSEX": Decimal(85000),
    "FINNIFTY": Decimal(27500),
    "MIDCPNIFTY": Decimal(13500),
    "BANKEX": Decimal(65000),
}
STRIKES_EACH_SIDE = 40
WEEKLY_WINDOW_DAYS = 62
MONTHLIES_LISTED = 3
DEPTH_LEVELS = 5
_TICK_F = float(TICK_SIZE)
_ZERO = Decimal(0)
_EMPTY_DEPTH: tuple[DepthLevel, ...] = tuple(DepthLevel(_ZERO, 0, 0) for _ in range(DEPTH_LEVELS))
_EPS = timedelta(microseconds=1)
_IST_OFFSET = timedelta(hours=5, minutes=30)


class UnknownInstrument(LookupError):
    """No listed contract has this (symbol, exchange)."""


@dataclass(slots=True)
class _Ramp:
    start_price: float
    target: float
    t0: datetime
    t1: datetime

    def value(self, at: datetime) -> float:
        span = (self.t1 - self.t0).total_seconds()
        frac = 1.0 if span <= 0 else min(1.0, max(0.0, (at - self.t0).total_seconds() / span))
        return self.start_price + (self.target - self.start_price) * frac


@dataclass(slots=True)
class _Underlying:
    spec: UnderlyingSpec
    rng: random.Random
    spot: float
    price_time: (
        datetime  # the instant options are priced at: the last in-session tick (prices stay after hours)
    )
    history: SyntheticHistory
    day: date  # IST date the day statistics belong to
    open: float
    high: float
    low: float
    prev_close: float
    ramp: _Ramp | None = None
    # live 1-minute bars by IST date: start → [open, high, low, close]
    candles: dict[date, dict[datetime, list[float]]] = field(default_factory=dict)
    closes: dict[date, float] = field(default_factory=dict)  # live day closes
    version: int = 0  # bumps whenever spot or price_time changes
    minutes_cache: tuple[int, int] = (-1, 0)  # (version, session minutes elapsed)
    terms: dict[date, tuple[float, float, float, float]] = field(default_factory=dict)  # T, F, e^-rT, √T
    terms_version: int = -1


@dataclass(slots=True)
class _DerivDay:
    day: date
    open: float
    high: float
    low: float
    prev_close: float


def _crc(text: str) -> int:
    return zlib.crc32(text.encode())


def _ticks(value: float) -> int:
    """Nearest whole number of ticks, half up, at least one."""
    return max(1, math.floor(value / _TICK_F + 0.5))


_DEC_CACHE: dict[int, Decimal] = {}
_LEVEL_CACHE: dict[tuple[int, int, int], DepthLevel] = {}


def _level(price_ticks: int, quantity: int, lot: int) -> DepthLevel:
    """A depth level (memoised; frozen and shared). A non-positive price is an empty, zero-padded level."""
    if price_ticks < 1:
        return _EMPTY_DEPTH[0]
    key = (price_ticks, quantity, lot)
    found = _LEVEL_CACHE.get(key)
    if found is None:
        if len(_LEVEL_CACHE) > 500_000:
            _LEVEL_CACHE.clear()
        found = _LEVEL_CACHE[key] = DepthLevel(_dec(price_ticks), quantity, 1 + (quantity // lot) % 5)
    return found


def _dec(ticks: int) -> Decimal:
    """``ticks`` × 0.05 as an exact Decimal (memoised: the same few thousand prices recur every tick)."""
    found = _DEC_CACHE.get(ticks)
    if found is None:
        if len(_DEC_CACHE) > 500_000:
            _DEC_CACHE.clear()
        found = _DEC_CACHE[ticks] = Decimal(ticks) * TICK_SIZE
    return found


class Market:
    """A seeded, clock-driven model of the Indian index F&O market (see the module docstring).

    ``start``: the model's initial instant (aware). ``tick_interval``: simulated seconds per step.
    ``drift``/``volatility``: annual GBM drift and volatility of every index (trading-time years);
    ``implied_vol`` (default: ``volatility``) is the smile's ATM level. ``spot`` overrides starting spots.
    ``spread_ticks``: minimum bid/ask spread of a derivative, in ticks (≥ 1). ``rate``: the annual rate for
    futures carry and Black–Scholes.
    """

    def __init__(
        self,
        *,
        seed: int,
        start: datetime,
        calendar: TradingCalendar | None = None,
        specs: ContractSpecs | None = None,
        tick_interval: float = 1.0,
        drift: float = 0.0,
        volatility: float = 0.15,
        implied_vol: float | None = None,
        spot: Mapping[str, Decimal] | None = None,
        spread_ticks: int = 2,
        rate: float = 0.065,
        smile: VolSmile | None = None,
        underlyings: Iterable[str] | None = None,
    ) -> None:
        if tick_interval <= 0:
            raise ValueError("tick_interval must be positive")
        if spread_ticks < 1:
            raise ValueError("spread_ticks must be at least 1")
        self._lock = threading.RLock()
        self._seed = seed
        self._calendar = calendar or default_calendar()
        self._specs = specs or default_specs()
        self._start = ensure_aware(start)
        self._now = self._start
        self._dt = timedelta(seconds=tick_interval)
        self._dt_years = tick_interval / TRADING_SECONDS_PER_YEAR
        self._next_tick = self._start + self._dt
        self._drift = drift
        self._vol = volatility
        self._rate = rate
        self._smile = smile or VolSmile(atm_vol=implied_vol if implied_vol is not None else volatility)
        self._spread = spread_ticks
        spots = {**DEFAULT_SPOTS, **{k.upper(): Decimal(v) for k, v in (spot or {}).items()}}
        names = [n.upper() for n in (underlyings or UNDERLYINGS)]
        self._under: dict[str, _Underlying] = {}
        for name in names:
            self._under[name] = self._new_underlying(UNDERLYINGS[name], float(spots[name]))
        self._listeners: list[TickListener] = []
        self._watch: dict[tuple[str, str], int] = {}
        self._overrides: dict[tuple[str, str], float] = {}
        self._deriv_day: dict[tuple[str, str], _DerivDay] = {}
        self._hashes: dict[str, int] = {}
        self._last_signature: dict[tuple[str, str], tuple[int, int, int, int, int, int, date]] = {}
        self._depth_cache: dict[
            tuple[str, str], tuple[tuple[int, int, int], tuple[DepthLevel, ...], tuple[DepthLevel, ...]]
        ] = {}
        self._contracts: dict[tuple[str, str], Contract] = {}
        self._option_expiries: dict[str, set[date]] = {}
        self._future_expiries: dict[str, set[date]] = {}
        self._strikes: dict[tuple[str, date], set[Decimal]] = {}
        self._master_day: date | None = None
        self._master_valid_until = self._start
        # exchange → (valid_from, valid_to, open?) so the per-tick open check rarely asks the calendar
        self._open_cache: dict[str, tuple[datetime, datetime, bool]] = {}
        self._ensure_master()

    # --- construction ---------------------------------------------------------------------------------

    def _new_underlying(self, spec: UnderlyingSpec, spot: float) -> _Underlying:
        history = SyntheticHistory(
            seed=self._seed,
            name=spec.name,
            exchange=spec.spot_exchange,
            calendar=self._calendar,
            anchor=self._start,
            anchor_price=spot,
            volatility=self._vol,
        )
        day = history.anchor_day
        bars = history.bars(day)
        opening = history.day_open(day) or spot
        high = max([spot, opening, *(b[2] for b in bars)])
        low = min([spot, opening, *(b[3] for b in bars)])
        state = _Underlying(
            spec=spec,
            rng=random.Random(f"{self._seed}:{spec.name}:ticks"),
            spot=spot,
            price_time=self._start,
            history=history,
            day=day,
            open=opening,
            high=high,
            low=low,
            prev_close=history.previous_close(day),
        )
        current = self._calendar.current_session(spec.spot_exchange, self._start)
        if current is not None and history.anchor_day == ist_today(self._start):
            minute = self._start.replace(second=0, microsecond=0)
            state.candles[day] = {minute: [spot, spot, spot, spot]}
        return state

    # --- MarketModel: clock ---------------------------------------------------------------------------

    def now(self) -> datetime:
        with self._lock:
            return self._now

    @property
    def calendar(self) -> TradingCalendar:
        return self._calendar

    @property
    def specs(self) -> ContractSpecs:
        return self._specs

    def advance_to(self, instant: datetime) -> None:
        """Step every ``tick_interval`` up to ``instant``, notifying listeners after each tick that moved a
        price (each changed index, plus every watched derivative of it). Earlier instants are a no-op.
        Closed periods (nights, weekends) are skipped in one jump, so advancing a week is cheap."""
        target = ensure_aware(instant)
        while True:
            with self._lock:
                if self._next_tick > target:
                    self._now = max(self._now, target)
                    break
                changed = self._step_locked(target)
                quotes = self._quotes_for_locked(changed, self._now) if (changed and self._listeners) else []
                listeners = list(self._listeners)
            self._notify(listeners, quotes)

    def jump_to(self, instant: datetime) -> None:
        """Like :meth:`advance_to` but notifies listeners once, at the end (for manual clock jumps)."""
        target = ensure_aware(instant)
        touched: set[str] = set()
        with self._lock:
            while self._next_tick <= target:
                touched |= self._step_locked(target)
            self._now = max(self._now, target)
            quotes = self._quotes_for_locked(touched, self._now) if (touched and self._listeners) else []
            listeners = list(self._listeners)
        self._notify(listeners, quotes)

    def _notify(self, listeners: list[TickListener], quotes: list[Quote]) -> None:
        for quote in quotes:
            for listener in listeners:
                listener(quote)

    def _is_open_cached(self, exchange: str, at: datetime) -> bool:
        cached = self._open_cache.get(exchange)
        if cached is not None and cached[0] <= at < cached[1]:
            return cached[2]
        session = self._calendar.current_session(exchange, at)
        if session is not None:
            entry = (session[0], session[1], True)
        else:
            try:
                entry = (at, self._calendar.next_session_start(exchange, at), False)
            except LookupError:
                entry = (at, at + timedelta(days=1), False)
        self._open_cache[exchange] = entry
        return entry[2]

    def _grid_at_or_after(self, instant: datetime) -> datetime:
        steps = math.ceil((instant - self._start) / self._dt)
        return self._start + steps * self._dt

    def _step_locked(self, target: datetime) -> set[str]:
        """Apply the tick at ``self._next_tick`` (or skip a closed stretch); returns the underlyings moved."""
        t = self._next_tick
        interval_start = t - self._dt
        changed: set[str] = set()
        any_open = False
        day: date | None = None
        minute: datetime | None = None
        for name, u in self._under.items():
            if self._is_open_cached(u.spec.spot_exchange, interval_start):
                any_open = True
                drawn = gbm_step(u.spot, self._drift, self._vol, self._dt_years, u.rng)
                new_spot = drawn if u.ramp is None else u.ramp.value(t)
                if day is None or minute is None:
                    day = (interval_start + _IST_OFFSET).date()
                    # A tick at t closes (t − dt, t]: one exactly on a minute boundary ends the bar before it.
                    minute = (t - _EPS).replace(second=0, microsecond=0)
                if day != u.day:
                    u.closes[u.day] = u.spot
                    u.prev_close = u.spot
                    u.day = day
                    u.open = u.high = u.low = new_spot
                u.spot = new_spot
                u.price_time = t
                self._record_locked(u, minute, day)
                changed.add(name)
            elif u.ramp is not None:
                u.spot = u.ramp.value(t)
                self._touch_day_stats(u)
                changed.add(name)
            if u.ramp is not None and t >= u.ramp.t1:
                u.ramp = None
            if name in changed:
                u.version += 1
        self._now = t
        if not any_open and not any(u.ramp for u in self._under.values()):
            # Nothing trades until the earliest next session: jump the grid there (bounded by target).
            wake = min(
                (self._open_cache[u.spec.spot_exchange][1] for u in self._under.values()),
                default=target,
            )
            jump = self._grid_at_or_after(min(wake, target + self._dt))
            self._next_tick = max(t + self._dt, jump)
            self._now = min(max(self._now, self._next_tick - self._dt), target)
        else:
            self._next_tick = t + self._dt
        if self._now >= self._master_valid_until:
            self._ensure_master()
        return changed

    def _touch_day_stats(self, u: _Underlying) -> None:
        u.high = max(u.high, u.spot)
        u.low = min(u.low, u.spot)
        u.closes[u.day] = u.spot

    def _record_locked(self, u: _Underlying, minute: datetime, day: date) -> None:
        spot = u.spot
        if spot > u.high:
            u.high = spot
        elif spot < u.low:
            u.low = spot
        day_bars = u.candles.get(day)
        if day_bars is None:
            day_bars = u.candles[day] = {}
        bar = day_bars.get(minute)
        if bar is None:
            day_bars[minute] = [spot, spot, spot, spot]
        else:
            if spot > bar[1]:
                bar[1] = spot
            elif spot < bar[2]:
                bar[2] = spot
            bar[3] = spot
        u.closes[day] = spot

    # --- MarketModel: contracts -----------------------------------------------------------------------

    def _ensure_master(self) -> None:
        with self._lock:
            today = ist_today(self._now)
            if self._master_day == today:
                return
            for name, u in self._under.items():
                self._list_underlying_locked(name, u, today)
            self._prune_locked(today - timedelta(days=7))
            self._master_day = today
            self._master_valid_until = ist_combine(today + timedelta(days=1), time(0, 0))

    def _list_underlying_locked(self, name: str, u: _Underlying, today: date) -> None:
        spec = u.spec
        index = Contract(name, name, spec.spot_exchange, "INDEX", None, None, 1, spec.tick_size, 0)
        self._contracts[(spec.spot_exchange, name)] = index
        weekly = expiry_dates(
            name, "weekly", today, today + timedelta(days=WEEKLY_WINDOW_DAYS), self._calendar, self._specs
        )
        monthly = expiry_dates(
            name, "monthly", today, today + timedelta(days=120), self._calendar, self._specs
        )
        monthly = monthly[:MONTHLIES_LISTED]
        freeze = self._specs.freeze_qty(name, today)
        step = spec.strike_step
        atm = (Decimal(repr(u.spot)) / step).to_integral_value(rounding=ROUND_HALF_UP) * step
        new_strikes = {
            atm + k * step for k in range(-STRIKES_EACH_SIDE, STRIKES_EACH_SIDE + 1) if atm + k * step > 0
        }
        for expiry in sorted(set(weekly) | set(monthly)):
            self._option_expiries.setdefault(name, set()).add(expiry)
            lot = self._specs.lot_size(name, expiry)
            strikes = self._strikes.setdefault((name, expiry), set())
            strikes |= new_strikes
            for strike in strikes:
                for kind in ("CE", "PE"):
                    symbol = option_symbol(name, expiry, strike, kind)
                    self._contracts[(spec.fo_exchange, symbol)] = Contract(
                        symbol, name, spec.fo_exchange, "CE" if kind == "CE" else "PE", expiry, strike, lot,
                        spec.tick_size, freeze,
                    )  # fmt: skip
        for expiry in monthly:
            self._future_expiries.setdefault(name, set()).add(expiry)
            symbol = future_symbol(name, expiry)
            lot = self._specs.lot_size(name, expiry)
            self._contracts[(spec.fo_exchange, symbol)] = Contract(
                symbol, name, spec.fo_exchange, "FUT", expiry, None, lot, spec.tick_size, freeze
            )

    def _prune_locked(self, before: date) -> None:
        stale = [k for k, c in self._contracts.items() if c.expiry is not None and c.expiry < before]
        for key in stale:
            del self._contracts[key]
            for cache in (self._deriv_day, self._last_signature, self._depth_cache, self._overrides):
                cache.pop(key, None)
        for expiries in (*self._option_expiries.values(), *self._future_expiries.values()):
            expiries -= {e for e in expiries if e < before}
        for strike_key in [k for k in self._strikes if k[1] < before]:
            del self._strikes[strike_key]

    def contract(self, symbol: str, exchange: str) -> Contract | None:
        with self._lock:
            self._ensure_master()
            return self._contracts.get((exchange.upper(), symbol))

    def instruments(self, exchange: str | None = None) -> list[Contract]:
        """Every listed contract (optionally of one exchange), including recently expired ones, ordered by
        (exchange, name, expiry, strike, type)."""
        with self._lock:
            self._ensure_master()
            rows = [c for c in self._contracts.values() if exchange is None or c.exchange == exchange.upper()]
        return sorted(rows, key=_contract_order)

    def search(self, query: str, exchange: str | None = None, limit: int = 500) -> list[Contract]:
        """Contracts whose symbol contains every whitespace-separated term of ``query`` (case-insensitive),
        expired ones excluded, in (name, expiry, strike, type) order, at most ``limit``."""
        terms = [t for t in query.upper().split() if t]
        if not terms:
            return []
        with self._lock:
            self._ensure_master()
            now = self._now
            rows = [
                c
                for c in self._contracts.values()
                if (exchange is None or c.exchange == exchange.upper())
                and all(t in c.symbol for t in terms)
                and (c.expiry is None or not is_expired(c.expiry, now))
            ]
        return sorted(rows, key=_contract_order)[: max(0, limit)]

    def _trades_fo_on(self, name: str, exchange: str) -> bool:
        """Whether ``name`` (upper case) is a known underlying with its F&O on ``exchange``. Hold the lock."""
        u = self._under.get(name)
        return u is not None and u.spec.fo_exchange == exchange.upper()

    def expiries(self, underlying: str, exchange: str, kind: str) -> list[date]:
        name = underlying.upper()
        with self._lock:
            self._ensure_master()
            if not self._trades_fo_on(name, exchange):
                return []
            if kind == "options":
                found = self._option_expiries.get(name, set())
            elif kind == "futures":
                found = self._future_expiries.get(name, set())
            else:
                return []
            return sorted(e for e in found if not is_expired(e, self._now))

    def strikes(self, underlying: str, exchange: str, expiry: date) -> list[Decimal]:
        name = underlying.upper()
        with self._lock:
            self._ensure_master()
            if not self._trades_fo_on(name, exchange):
                return []
            return sorted(self._strikes.get((name, expiry), ()))

    # --- watching and listeners -----------------------------------------------------------------------

    def add_listener(self, listener: TickListener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: TickListener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def watch(self, symbol: str, exchange: str) -> bool:
        """Re-price this instrument each tick and include it in listener notifications (ref-counted).
        Returns False (and watches nothing) for an unknown instrument."""
        key = (exchange.upper(), symbol)
        with self._lock:
            self._ensure_master()
            if key not in self._contracts:
                return False
            self._watch[key] = self._watch.get(key, 0) + 1
            return True

    def unwatch(self, symbol: str, exchange: str) -> None:
        key = (exchange.upper(), symbol)
        with self._lock:
            count = self._watch.get(key, 0) - 1
            if count > 0:
                self._watch[key] = count
            else:
                self._watch.pop(key, None)

    def watched(self) -> list[tuple[str, str]]:
        """(exchange, symbol) pairs currently watched."""
        with self._lock:
            return sorted(self._watch)

    def _quotes_for_locked(self, changed: set[str], at: datetime) -> list[Quote]:
        quotes: list[Quote] = []
        for name in sorted(changed):
            u = self._under[name]
            quotes.append(self._index_quote(u, at))
        for key in list(self._watch):
            contract = self._contracts.get(key)
            if contract is None or contract.instrument_type == "INDEX" or contract.name not in changed:
                continue
            quote = self._derivative_quote(contract, at, only_if_changed=True)
            if quote is not None:
                quotes.append(quote)
        return quotes

    # --- quotes ---------------------------------------------------------------------------------------

    def quote(self, symbol: str, exchange: str) -> Quote | None:
        with self._lock:
            self._ensure_master()
            contract = self._contracts.get((exchange.upper(), symbol))
            if contract is None:
                return None
            if contract.instrument_type == "INDEX":
                return self._index_quote(self._under[contract.name], self._now)
            return self._derivative_quote(contract, self._now)

    def spot(self, underlying: str) -> Decimal:
        """The index value rounded to the tick. Raises UnknownInstrument."""
        with self._lock:
            u = self._under.get(underlying.upper())
            if u is None:
                raise UnknownInstrument(underlying)
            return _dec(_ticks(u.spot))

    def _listed(self, symbol: str, exchange: str) -> Contract:
        """The listed contract ``symbol`` on ``exchange``. Hold the lock. Raises UnknownInstrument."""
        contract = self._contracts.get((exchange.upper(), symbol))
        if contract is None:
            raise UnknownInstrument(f"{symbol}@{exchange}")
        return contract

    def fair_value(self, symbol: str, exchange: str) -> float:
        """The model value (unrounded, including any forced offset) of a derivative or index."""
        with self._lock:
            self._ensure_master()
            contract = self._listed(symbol, exchange)
            u = self._under[contract.name]
            if contract.instrument_type == "INDEX":
                return u.spot
            return self._fair(contract, u) + self._overrides.get((contract.exchange, contract.symbol), 0.0)

    def _index_quote(self, u: _Underlying, at: datetime) -> Quote:
        ltp = _dec(_ticks(u.spot))
        return Quote(
            symbol=u.spec.name,
            exchange=u.spec.spot_exchange,
            ltp=ltp,
            open=_dec(_ticks(u.open)),
            high=_dec(_ticks(u.high)),
            low=_dec(_ticks(u.low)),
            prev_close=_dec(_ticks(u.prev_close)),
            bid=_ZERO,
            ask=_ZERO,
            bid_qty=0,
            ask_qty=0,
            volume=0,
            oi=0,
            ltq=0,
            average_price=ltp,
            timestamp=at,
            bids=_EMPTY_DEPTH,
            asks=_EMPTY_DEPTH,
        )

    def _settle_spot(self, u: _Underlying, expiry: date) -> float | None:
        """The index value at an expiry's 15:30 cut-off, once the model has passed it."""
        if u.price_time < _cutoff(expiry):
            return None
        close = u.closes.get(expiry)
        if close is None:
            close = u.history.day_close(expiry)
        return close

    def _price_at(self, contract: Contract, spot: float, at: datetime) -> float:
        assert contract.expiry is not None
        years = max(0.0, (_cutoff(contract.expiry) - at).total_seconds() / SECONDS_PER_YEAR)
        forward = forward_price(spot, self._rate, years)
        if contract.instrument_type == "FUT":
            return forward
        assert contract.strike is not None
        strike = float(contract.strike)
        vol = self._smile.vol(forward, strike)
        return bs_price(contract.instrument_type, spot, strike, years, self._rate, vol)

    def _fair(self, contract: Contract, u: _Underlying) -> float:
        """Model value now. The live path shares the per-expiry terms (T, forward, discount) of the current
        tick between all strikes of an expiry: it is the hot loop of a tick with many watched options."""
        expiry = contract.expiry
        assert expiry is not None
        cutoff = _cutoff(expiry)
        if u.price_time >= cutoff:
            settle = self._settle_spot(u, expiry)
            return self._price_at(contract, u.spot if settle is None else settle, cutoff)
        if u.terms_version != u.version:
            u.terms.clear()
            u.terms_version = u.version
        terms = u.terms.get(expiry)
        if terms is None:
            years = (cutoff - u.price_time).total_seconds() / SECONDS_PER_YEAR
            terms = u.terms[expiry] = (
                years,
                u.spot * math.exp(self._rate * years),
                math.exp(-self._rate * years),
                math.sqrt(years),
            )
        years, forward, discount, sqrt_t = terms
        if contract.instrument_type == "FUT":
            return forward
        assert contract.strike is not None
        strike = float(contract.strike)
        vol = self._smile.vol(forward, strike)
        sd = vol * sqrt_t
        d1 = (math.log(forward / strike) + 0.5 * vol * vol * years) / sd
        d2 = d1 - sd
        if contract.instrument_type == "CE":
            value = u.spot * _norm_cdf(d1) - strike * discount * _norm_cdf(d2)
        else:
            value = strike * discount * _norm_cdf(-d2) - u.spot * _norm_cdf(-d1)
        return max(value, 0.0)

    def _derivative_day(
        self, contract: Contract, u: _Underlying, key: tuple[str, str], fair: float
    ) -> _DerivDay:
        stats = self._deriv_day.get(key)
        if stats is None or stats.day != u.day:
            bounds = self._calendar.session_bounds(u.spec.spot_exchange, u.day)
            open_time = bounds[0] if bounds else u.price_time
            try:
                prev_day = self._calendar.previous_trading_day(u.spec.spot_exchange, u.day)
                prev_time = ist_combine(prev_day, EXPIRY_CUTOFF)
            except LookupError:
                prev_time = open_time
            expiry_end = ist_combine(contract.expiry, EXPIRY_CUTOFF) if contract.expiry else open_time
            opening = self._price_at(contract, u.open, min(open_time, expiry_end))
            prev = self._price_at(contract, u.prev_close, min(prev_time, expiry_end))
            extremes = [opening, fair]
            if not (contract.expiry and is_expired(contract.expiry, u.price_time)):
                extremes += [
                    self._price_at(contract, u.high, u.price_time),
                    self._price_at(contract, u.low, u.price_time),
                ]
            stats = _DerivDay(u.day, opening, max(extremes), min(extremes), prev)
            self._deriv_day[key] = stats
        stats.high = max(stats.high, fair)
        stats.low = min(stats.low, fair)
        return stats

    def _derivative_quote(
        self, contract: Contract, at: datetime, *, only_if_changed: bool = False
    ) -> Quote | None:
        """The quote of a future/option; with ``only_if_changed`` None when its prices, sizes and volume are
        the same as in the last notification (so listeners are not flooded with identical quotes)."""
        u = self._under[contract.name]
        key = (contract.exchange, contract.symbol)
        fair = self._fair(contract, u) + self._overrides.get(key, 0.0)
        fair = max(fair, _TICK_F)
        stats = self._derivative_day(contract, u, key, fair)
        ltp_t = _ticks(fair)
        if contract.instrument_type == "FUT":
            spread = max(self._spread, round(fair * 0.00002 / _TICK_F))
        else:
            spread = max(self._spread, round(fair * 0.001 / _TICK_F)) + (1 if fair < 2.0 else 0)
        bid_t = max(1, ltp_t - spread // 2)
        ask_t = bid_t + spread
        minutes_in = self._session_minutes_elapsed(u)
        high_t, low_t = max(_ticks(stats.high), ltp_t), min(_ticks(stats.low), ltp_t)
        signature = (ltp_t, bid_t, ask_t, high_t, low_t, minutes_in, u.day)
        if only_if_changed:
            if self._last_signature.get(key) == signature:
                return None
            self._last_signature[key] = signature
        lot = contract.lot_size
        h = self._hash(contract.symbol)
        cached = self._depth_cache.get(key)
        if cached is not None and cached[0] == (bid_t, ask_t, minutes_in):
            bids, asks = cached[1], cached[2]
        else:
            bids = tuple(
                _level(bid_t - level, lot * (1 + (h + 7 * level + minutes_in) % 15), lot)
                for level in range(DEPTH_LEVELS)
            )
            asks = tuple(
                _level(ask_t + level, lot * (1 + (h // 7 + 11 * level + minutes_in) % 15), lot)
                for level in range(DEPTH_LEVELS)
            )
            self._depth_cache[key] = ((bid_t, ask_t, minutes_in), bids, asks)
        liquidity = self._liquidity(contract, u)
        volume = lot * int(minutes_in * (1 + h % 40) * liquidity)
        oi = lot * int((200 + h % 3000) * liquidity)
        open_t = _ticks(stats.open)
        avg_t = _ticks((open_t + high_t + low_t + ltp_t) * _TICK_F / 4)
        return Quote(
            symbol=contract.symbol,
            exchange=contract.exchange,
            ltp=_dec(ltp_t),
            open=_dec(open_t),
            high=_dec(high_t),
            low=_dec(low_t),
            prev_close=_dec(_ticks(stats.prev_close)),
            bid=_dec(bid_t),
            ask=_dec(ask_t),
            bid_qty=bids[0].quantity,
            ask_qty=asks[0].quantity,
            volume=volume,
            oi=oi,
            ltq=lot,
            average_price=_dec(avg_t),
            timestamp=at,
            bids=bids,
            asks=asks,
        )

    def _hash(self, symbol: str) -> int:
        found = self._hashes.get(symbol)
        if found is None:
            found = self._hashes[symbol] = _crc(symbol)
        return found

    def _liquidity(self, contract: Contract, u: _Underlying) -> float:
        if contract.strike is None:
            return 1.0
        # Against the day's open so that volume and OI stay fixed through the day.
        distance = abs(float(contract.strike) / u.open - 1.0)
        return max(0.02, math.exp(-distance * 40.0))

    def _session_minutes_elapsed(self, u: _Underlying) -> int:
        if u.minutes_cache[0] == u.version:
            return u.minutes_cache[1]
        bounds = self._calendar.session_bounds(u.spec.spot_exchange, u.day)
        value = 0
        if bounds is not None:
            end = min(max(u.price_time, bounds[0]), bounds[1])
            value = int((end - bounds[0]).total_seconds() // 60)
        u.minutes_cache = (u.version, value)
        return value

    # --- forcing prices -------------------------------------------------------------------------------

    def set_price(self, symbol: str, exchange: str, price: Decimal) -> None:
        """Force a price now. An index moves its spot (options/futures re-price from it; a running ramp is
        cancelled); a derivative gets an offset so its quote shows ``price`` now and then moves with the model
        (see :meth:`clear_override`). Raises UnknownInstrument, or ValueError for a non-positive price."""
        value = float(price)
        if not value > 0:
            raise ValueError(f"price must be positive, got {price}")
        with self._lock:
            self._ensure_master()
            contract = self._listed(symbol, exchange)
            u = self._under[contract.name]
            if contract.instrument_type == "INDEX":
                u.ramp = None
                u.spot = value
                self._touch_day_stats(u)
                u.version += 1
                quotes = self._quotes_for_locked({u.spec.name}, self._now) if self._listeners else []
            else:
                key = (contract.exchange, contract.symbol)
                self._overrides[key] = value - self._fair(contract, u)
                quote = self._derivative_quote(contract, self._now)
                quotes = [quote] if (quote is not None and self._listeners) else []
            listeners = list(self._listeners)
        self._notify(listeners, quotes)

    def clear_override(self, symbol: str, exchange: str) -> None:
        """Drop a derivative's forced offset (back to the pure model price)."""
        with self._lock:
            self._overrides.pop((exchange.upper(), symbol), None)

    def ramp_price(self, symbol: str, exchange: str, target: Decimal, seconds: float) -> None:
        """Move an index linearly from its current value to ``target`` over ``seconds`` simulated seconds
        (also outside market hours); the GBM resumes from ``target`` afterwards. Raises UnknownInstrument,
        ValueError for a non-index or a non-positive target."""
        if seconds <= 0:
            self.set_price(symbol, exchange, target)
            return
        value = float(target)
        if not value > 0:
            raise ValueError(f"target must be positive, got {target}")
        with self._lock:
            contract = self._listed(symbol, exchange)
            if contract.instrument_type != "INDEX":
                raise ValueError("only an index can be ramped")
            u = self._under[contract.name]
            u.ramp = _Ramp(u.spot, value, self._now, self._now + timedelta(seconds=seconds))

    # --- history --------------------------------------------------------------------------------------

    def history(
        self, symbol: str, exchange: str, interval: str, start: date, end: date
    ) -> list[Candle] | None:
        """Bars for IST dates [start, end]: 1-minute bars of the sessions (synthetic before the model's start,
        recorded ticks since, including the forming bar), aggregated to ``interval`` anchored at the session
        open, or daily bars stamped 00:00 UTC of the trading date. None for an unknown symbol; ValueError for
        an unsupported interval."""
        minutes = interval_minutes(interval)
        with self._lock:
            self._ensure_master()
            contract = self._contracts.get((exchange.upper(), symbol))
            if contract is None:
                return None
            u = self._under[contract.name]
            base: list[Bar] = []
            day = start
            while day <= end:
                base.extend(self._underlying_bars(u, day))
                day += timedelta(days=1)
            if contract.instrument_type == "INDEX":
                bars = base
                volumes = [0] * len(bars)
                oi = 0
            else:
                bars = self._reprice_bars(contract, base)
                h = _crc(contract.symbol)
                volumes = [contract.lot_size * (1 + (h + _crc(b[0].isoformat())) % 30) for b in bars]
                oi = contract.lot_size * int((200 + h % 3000) * self._liquidity(contract, u))
        anchor = self._session_anchor(u)
        aggregated = aggregate(bars, minutes, anchor)
        volume_by_key: dict[datetime, int] = {}
        for bar, volume in zip(bars, volumes, strict=True):
            key = bucket_start(bar[0], minutes, anchor)
            volume_by_key[key] = volume_by_key.get(key, 0) + volume
        return [
            Candle(
                start=key,
                open=_dec(_ticks(o)),
                high=_dec(_ticks(h_)),
                low=_dec(_ticks(low)),
                close=_dec(_ticks(c)),
                volume=volume_by_key.get(key, 0),
                oi=oi,
            )
            for key, o, h_, low, c in aggregated
        ]

    def _session_anchor(self, u: _Underlying) -> Callable[[datetime], datetime]:
        exchange = u.spec.spot_exchange

        def anchor(bar_start: datetime) -> datetime:
            for session_start, session_end in self._calendar.sessions(exchange, to_ist(bar_start).date()):
                if session_start <= bar_start < session_end:
                    return session_start
            return bar_start.replace(second=0, microsecond=0)

        return anchor

    def _underlying_bars(self, u: _Underlying, day: date) -> list[Bar]:
        bars: list[Bar] = list(u.history.bars(day)) if day <= u.history.anchor_day else []
        live = u.candles.get(day, {})
        bars.extend((k, live[k][0], live[k][1], live[k][2], live[k][3]) for k in sorted(live))
        return bars

    def _reprice_bars(self, contract: Contract, bars: list[Bar]) -> list[Bar]:
        assert contract.expiry is not None
        cutoff = ist_combine(contract.expiry, EXPIRY_CUTOFF)
        out: list[Bar] = []
        for start, o, h, low, c in bars:
            if start >= cutoff:
                break
            close_at = min(start + timedelta(minutes=1), cutoff)
            po = self._price_at(contract, o, start)
            pc = self._price_at(contract, c, close_at)
            ph = self._price_at(contract, h, start)
            pl = self._price_at(contract, low, start)
            top, bottom = max(po, pc, ph, pl), min(po, pc, ph, pl)
            out.append((start, po, top, bottom, pc))
        return out


_SQRT2 = math.sqrt(2.0)


def _norm_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / _SQRT2))


@functools.lru_cache(maxsize=4096)
def _cutoff(expiry: date) -> datetime:
    """15:30 IST on the expiry date, aware UTC."""
    return ist_combine(expiry, EXPIRY_CUTOFF)


def _contract_order(c: Contract) -> tuple[str, str, date, Decimal, str]:
    return (c.exchange, c.name, c.expiry or date.min, c.strike or Decimal(0), c.instrument_type)


__all__ = ["DEFAULT_SPOTS", "Market", "UnknownInstrument"]
