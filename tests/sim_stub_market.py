"""A tiny, fully predictable :class:`MarketModel` for exchange unit tests.

Contracts: NIFTY @ NSE_INDEX (spot 26,000), NIFTY29DEC26FUT, NIFTY 01-Dec-2026 options 25,800–26,200 step 50
(lot 65, freeze 1,800), SENSEX @ BSE_INDEX (85,000) with SENSEX 26-Nov-2026 options 84,800–85,200 step 100
(lot 20, freeze 1,000). Prices move only through :meth:`set_price` (no randomness). Each quote has a
one-tick spread: bid = ltp − 0.05, ask = ltp + 0.05. Day high/low follow every price set.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from algomirror.domain.instruments import Contract, future_symbol, option_symbol
from algomirror.simulator.contracts import Candle, DepthLevel, Quote

TICK = Decimal("0.05")
START = datetime(2026, 11, 25, 5, 0, tzinfo=UTC)  # Wed 25 Nov 2026 10:30 IST
NIFTY_WEEKLY = date(2026, 12, 1)
NIFTY_MONTHLY = date(2026, 12, 29)
SENSEX_WEEKLY = date(2026, 11, 26)


def _contracts() -> list[Contract]:
    out = [
        Contract("NIFTY", "NIFTY", "NSE_INDEX", "INDEX", None, None, 1, TICK, 0),
        Contract("SENSEX", "SENSEX", "BSE_INDEX", "INDEX", None, None, 1, TICK, 0),
        Contract(
            future_symbol("NIFTY", NIFTY_MONTHLY), "NIFTY", "NFO", "FUT", NIFTY_MONTHLY, None, 65, TICK, 1800
        ),
    ]
    for strike in range(25800, 26201, 50):
        for kind in ("CE", "PE"):
            sym = option_symbol("NIFTY", NIFTY_WEEKLY, strike, kind)
            out.append(Contract(sym, "NIFTY", "NFO", kind, NIFTY_WEEKLY, Decimal(strike), 65, TICK, 1800))  # type: ignore[arg-type]
    for strike in range(84800, 85201, 100):
        for kind in ("CE", "PE"):
            sym = option_symbol("SENSEX", SENSEX_WEEKLY, strike, kind)
            out.append(Contract(sym, "SENSEX", "BFO", kind, SENSEX_WEEKLY, Decimal(strike), 20, TICK, 1000))  # type: ignore[arg-type]
    return out


def _round_tick(value: Decimal) -> Decimal:
    return max((value / TICK).quantize(Decimal(1)) * TICK, TICK)


class StubMarket:
    def __init__(self, start: datetime = START) -> None:
        self._now = start
        self._contracts = {(c.symbol, c.exchange): c for c in _contracts()}
        self._ltp: dict[tuple[str, str], Decimal] = {}
        self._high: dict[tuple[str, str], Decimal] = {}
        self._low: dict[tuple[str, str], Decimal] = {}
        self._listeners: list[Callable[[Quote], None]] = []
        self._spot = {"NIFTY": Decimal(26000), "SENSEX": Decimal(85000)}
        self._forced: set[tuple[str, str]] = set()
        self._reprice()

    # derived prices --------------------------------------------------------------------------------
    def _model_price(self, c: Contract) -> Decimal:
        spot = self._spot[c.name]
        if c.instrument_type == "INDEX":
            return spot
        if c.instrument_type == "FUT":
            return _round_tick(spot + 60)
        assert c.strike is not None
        intrinsic = (
            max(spot - c.strike, Decimal(0))
            if c.instrument_type == "CE"
            else max(c.strike - spot, Decimal(0))
        )
        return _round_tick(intrinsic + Decimal(100) - abs(spot - c.strike) / 10)

    def _reprice(self) -> None:
        for key, c in self._contracts.items():
            if key not in self._forced:
                self._store(key, self._model_price(c))

    def _store(self, key: tuple[str, str], price: Decimal) -> None:
        self._ltp[key] = price
        self._high[key] = max(self._high.get(key, price), price)
        self._low[key] = min(self._low.get(key, price), price)

    # MarketModel -----------------------------------------------------------------------------------
    def now(self) -> datetime:
        return self._now

    def contract(self, symbol: str, exchange: str) -> Contract | None:
        return self._contracts.get((symbol, exchange))

    def search(self, query: str, exchange: str | None = None, limit: int = 500) -> list[Contract]:
        words = query.upper().split()
        found = [
            c
            for c in self._contracts.values()
            if (exchange is None or c.exchange == exchange) and all(w in c.symbol for w in words)
        ]
        return sorted(found, key=lambda c: c.symbol)[:limit]

    def expiries(self, underlying: str, exchange: str, kind: str) -> list[date]:
        wanted = ("CE", "PE") if kind == "options" else ("FUT",)
        return sorted(
            {
                c.expiry
                for c in self._contracts.values()
                if c.name == underlying
                and c.exchange == exchange
                and c.instrument_type in wanted
                and c.expiry
            }
        )

    def strikes(self, underlying: str, exchange: str, expiry: date) -> list[Decimal]:
        return sorted(
            {
                c.strike
                for c in self._contracts.values()
                if c.name == underlying
                and c.exchange == exchange
                and c.expiry == expiry
                and c.strike is not None
            }
        )

    def quote(self, symbol: str, exchange: str) -> Quote | None:
        key = (symbol, exchange)
        if key not in self._contracts:
            return None
        ltp = self._ltp[key]
        index = self._contracts[key].instrument_type == "INDEX"
        bid = Decimal(0) if index else max(ltp - TICK, Decimal(0))
        ask = Decimal(0) if index else ltp + TICK
        bids = (
            tuple(DepthLevel(max(bid - TICK * i, TICK), 650 * (i + 1), i + 1) for i in range(5))
            if not index
            else ()
        )
        asks = tuple(DepthLevel(ask + TICK * i, 650 * (i + 1), i + 1) for i in range(5)) if not index else ()
        return Quote(
            symbol=symbol,
            exchange=exchange,
            ltp=ltp,
            open=self._model_price(self._contracts[key]),
            high=self._high[key],
            low=self._low[key],
            prev_close=self._model_price(self._contracts[key]),
            bid=bid,
            ask=ask,
            bid_qty=0 if index else 650,
            ask_qty=0 if index else 650,
            volume=0 if index else 100_000,
            oi=0 if index else 50_000,
            ltq=0 if index else 65,
            average_price=ltp,
            timestamp=self._now,
            bids=bids,
            asks=asks,
        )

    def history(
        self, symbol: str, exchange: str, interval: str, start: date, end: date
    ) -> list[Candle] | None:
        key = (symbol, exchange)
        if key not in self._contracts:
            return None
        price = self._ltp[key]
        bars = []
        t = datetime(start.year, start.month, start.day, 3, 45, tzinfo=UTC)
        while t.date() <= end and t <= self._now:
            bars.append(Candle(t, price, price, price, price, 0, 0))
            t += timedelta(minutes=1 if interval == "1m" else 5)
            if t.hour >= 10:
                t = datetime(t.year, t.month, t.day, 3, 45, tzinfo=UTC) + timedelta(days=1)
        return bars

    def add_listener(self, listener: Callable[[Quote], None]) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[Quote], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _emit_all(self) -> None:
        for key in self._contracts:
            quote = self.quote(*key)
            assert quote is not None
            for listener in list(self._listeners):
                listener(quote)

    def advance_to(self, instant: datetime) -> None:
        if instant > self._now:
            self._now = instant
        self._emit_all()

    def set_price(self, symbol: str, exchange: str, price: Decimal) -> None:
        key = (symbol, exchange)
        c = self._contracts[key]
        if c.instrument_type == "INDEX":
            self._spot[c.name] = price
            self._reprice()
        else:
            self._forced.add(key)
            self._store(key, price)
        quote = self.quote(symbol, exchange)
        assert quote is not None
        for listener in list(self._listeners):
            listener(quote)

    def ramp_price(self, symbol: str, exchange: str, target: Decimal, seconds: float) -> None:
        self.set_price(symbol, exchange, target)

    def jump_to(self, instant: datetime) -> None:
        self.advance_to(instant)

    def watch(self, symbol: str, exchange: str) -> bool:
        # The stub re-prices everything on every tick, so watching is only a membership check.
        return (symbol, exchange) in self._contracts

    def unwatch(self, symbol: str, exchange: str) -> None:
        return None

    def instruments(self, exchange: str | None = None) -> list[Contract]:
        return [c for c in self._contracts.values() if exchange is None or c.exchange == exchange]
