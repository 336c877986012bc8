"""The boundary between the paper exchange's market model and its exchange (matching, accounts, servers).

``simulator.market.Market`` implements :class:`MarketModel`; the exchange and the REST/WS servers use
only this interface, so either side can be tested alone. Prices are ``Decimal`` rounded to the tick
(0.05); quantities are ``int``; times are aware UTC.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Protocol

from algomirror.domain.instruments import Contract


@dataclass(frozen=True, slots=True)
class DepthLevel:
    price: Decimal
    quantity: int
    orders: int


@dataclass(frozen=True, slots=True)
class Quote:
    """A snapshot of one instrument. ``bid``/``ask`` are 0 when that side is empty."""

    symbol: str
    exchange: str
    ltp: Decimal
    open: Decimal
    high: Decimal
    low: Decimal
    prev_close: Decimal
    bid: Decimal
    ask: Decimal
    bid_qty: int
    ask_qty: int
    volume: int
    oi: int
    ltq: int
    average_price: Decimal
    timestamp: datetime
    bids: tuple[DepthLevel, ...] = field(default=())  # 5 levels, best first
    asks: tuple[DepthLevel, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class Candle:
    start: datetime  # aware UTC, bar start
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: int
    oi: int


TickListener = Callable[[Quote], None]


class MarketModel(Protocol):
    """What the exchange needs from the market."""

    def now(self) -> datetime:
        """The simulated clock's current instant (aware UTC)."""
        ...

    def contract(self, symbol: str, exchange: str) -> Contract | None:
        """The listed contract (or index) with this exact symbol on this exchange, else None."""
        ...

    def search(self, query: str, exchange: str | None = None, limit: int = 500) -> list[Contract]: ...

    def expiries(self, underlying: str, exchange: str, kind: str) -> list[date]:
        """Unexpired expiries, ascending; ``kind`` is ``options`` or ``futures``."""
        ...

    def strikes(self, underlying: str, exchange: str, expiry: date) -> list[Decimal]:
        """Listed strikes of that expiry, ascending."""
        ...

    def quote(self, symbol: str, exchange: str) -> Quote | None:
        """Current quote, or None for an unknown symbol."""
        ...

    def history(
        self, symbol: str, exchange: str, interval: str, start: date, end: date
    ) -> list[Candle] | None:
        """Bars for the IST dates [start, end]; None for an unknown symbol.

        ``interval`` is like '1m', '5m' or 'D'.
        """
        ...

    def add_listener(self, listener: TickListener) -> None:
        """Call ``listener`` with a fresh :class:`Quote` for each instrument that ticked."""
        ...

    def remove_listener(self, listener: TickListener) -> None: ...

    def advance_to(self, instant: datetime) -> None:
        """Move the model forward to ``instant`` (ticks every ``tick_interval``), notifying listeners."""
        ...

    def set_price(self, symbol: str, exchange: str, price: Decimal) -> None:
        """Force an index/future/option price; for an index the options and futures re-price from it."""
        ...

    def ramp_price(self, symbol: str, exchange: str, target: Decimal, seconds: float) -> None:
        """Move an index linearly to ``target`` over ``seconds`` of simulated time."""
        ...

    def jump_to(self, instant: datetime) -> None:
        """Like :meth:`advance_to`, but listeners are notified once, at the end (long manual clock moves)."""
        ...

    def watch(self, symbol: str, exchange: str) -> bool:
        """Re-price this instrument on every tick and notify listeners of it (ref-counted).
        Returns False for an unknown instrument."""
        ...

    def unwatch(self, symbol: str, exchange: str) -> None:
        """Release one :meth:`watch` reference."""
        ...

    def instruments(self, exchange: str | None = None) -> list[Contract]:
        """Every listed contract, optionally of one exchange (the bulk /instruments listing)."""
        ...
