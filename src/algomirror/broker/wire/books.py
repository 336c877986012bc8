"""The account as the broker reports it: ping, funds, and the order, trade, position and holdings books.

Wire rows are named ``Broker*`` (:class:`BrokerOrder`, :class:`BrokerTrade`, :class:`BrokerPosition`,
:class:`BrokerHolding`) so they never read as our database rows of the same idea.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Self

from algomirror.broker.wire.parsing import (
    _book_with_statistics,
    _dec,
    _ident,
    _int_from,
    _malformed,
    _money,
    _obj,
    _opt_text,
    _qty,
    _rows,
    _text,
    parse_gateway_time,
)
from algomirror.broker.wire.terms import OrderState, normalise_order_status
from algomirror.domain.money import to_quantity


@dataclass(frozen=True, slots=True)
class Ping:
    broker: str
    message: str

    @classmethod
    def parse(cls, payload: Mapping[str, Any]) -> Self:
        data = _obj(payload, "data", "ping")
        return cls(broker=_ident(data, "broker", "ping"), message=_text(data.get("message")))


@dataclass(frozen=True, slots=True)
class Funds:
    """Rupees; ``None`` = the gateway gave no usable value (never read it as 0)."""

    availablecash: Decimal | None
    collateral: Decimal | None
    m2mrealized: Decimal | None
    m2munrealized: Decimal | None
    utiliseddebits: Decimal | None
    grossexposure: Decimal | None = None
    totalpnl: Decimal | None = None

    @classmethod
    def parse(cls, payload: Mapping[str, Any]) -> Self:
        data = _obj(payload, "data", "funds")
        return cls(
            availablecash=_money(data, "availablecash"),
            collateral=_money(data, "collateral"),
            m2mrealized=_money(data, "m2mrealized"),
            m2munrealized=_money(data, "m2munrealized"),
            utiliseddebits=_money(data, "utiliseddebits"),
            grossexposure=_money(data, "grossexposure"),
            totalpnl=_money(data, "totalpnl"),
        )


@dataclass(frozen=True, slots=True)
class BrokerOrder:
    """An orderbook row or an orderstatus reply. ``status`` is normalised; ``raw_status`` is as sent.

    ``filled_quantity``/``pending_quantity`` are ``None`` when [live] omits them; ``placed_at`` is
    ``None`` when the broker's timestamp format is not recognised (``timestamp`` keeps the text).
    """

    orderid: str
    symbol: str
    exchange: str
    action: str
    quantity: int | None
    price: Decimal | None
    trigger_price: Decimal | None
    pricetype: str
    product: str
    status: OrderState
    raw_status: str
    average_price: Decimal | None
    filled_quantity: int | None
    pending_quantity: int | None
    rejection_reason: str
    strategy: str | None
    timestamp: str
    placed_at: datetime | None

    @classmethod
    def parse_row(cls, row: Mapping[str, Any], endpoint: str = "orderbook") -> Self:
        pricetype = row.get("pricetype")
        if pricetype in (None, ""):
            pricetype = row.get("price_type")
        return cls(
            orderid=_ident(row, "orderid", endpoint),
            symbol=_ident(row, "symbol", endpoint),
            exchange=_text(row.get("exchange")),
            action=_text(row.get("action")).upper(),
            quantity=_qty(row, "quantity"),
            price=_dec(row, "price"),
            trigger_price=_dec(row, "trigger_price"),
            pricetype=_text(pricetype).upper(),
            product=_text(row.get("product")).upper(),
            status=normalise_order_status(row.get("order_status")),
            raw_status=_text(row.get("order_status")),
            average_price=_dec(row, "average_price"),
            filled_quantity=_qty(row, "filled_quantity"),
            pending_quantity=_qty(row, "pending_quantity"),
            rejection_reason=_text(row.get("rejection_reason")),
            strategy=_opt_text(row.get("strategy")),
            timestamp=_text(row.get("timestamp")),
            placed_at=parse_gateway_time(row.get("timestamp")),
        )

    @classmethod
    def parse_status(cls, payload: Mapping[str, Any]) -> Self:
        """The orderstatus reply (``data`` object)."""
        return cls.parse_row(_obj(payload, "data", "orderstatus"), "orderstatus")


@dataclass(frozen=True, slots=True)
class OrderbookStatistics:
    total_buy_orders: int | None = None
    total_sell_orders: int | None = None
    total_completed_orders: int | None = None
    total_open_orders: int | None = None
    total_rejected_orders: int | None = None
    total_trigger_pending_orders: int | None = None


@dataclass(frozen=True, slots=True)
class Orderbook:
    orders: tuple[BrokerOrder, ...]
    statistics: OrderbookStatistics

    @classmethod
    def parse(cls, payload: Mapping[str, Any]) -> Self:
        rows, stats = _book_with_statistics(payload, "orders", "orderbook")
        return cls(
            orders=tuple(BrokerOrder.parse_row(row) for row in rows),
            statistics=OrderbookStatistics(
                **{name: _qty(stats, name) for name in OrderbookStatistics.__dataclass_fields__}
            ),
        )


@dataclass(frozen=True, slots=True)
class BrokerTrade:
    """A tradebook row; [live] may give several per order (partial fills)."""

    orderid: str
    symbol: str
    exchange: str
    product: str
    action: str
    quantity: int | None
    average_price: Decimal | None
    trade_value: Decimal | None
    timestamp: str
    traded_at: datetime | None
    price: Decimal | None = None
    strategy: str | None = None
    tradeid: str | None = None

    @classmethod
    def parse_row(cls, row: Mapping[str, Any]) -> Self:
        return cls(
            orderid=_ident(row, "orderid", "tradebook"),
            symbol=_ident(row, "symbol", "tradebook"),
            exchange=_text(row.get("exchange")),
            product=_text(row.get("product")).upper(),
            action=_text(row.get("action")).upper(),
            quantity=_qty(row, "quantity"),
            average_price=_dec(row, "average_price"),
            trade_value=_money(row, "trade_value"),
            timestamp=_text(row.get("timestamp")),
            traded_at=parse_gateway_time(row.get("timestamp")),
            price=_dec(row, "price"),
            strategy=_opt_text(row.get("strategy")),
            tradeid=_opt_text(row.get("tradeid")),
        )

    @staticmethod
    def parse_book(payload: Mapping[str, Any]) -> tuple[BrokerTrade, ...]:
        return tuple(BrokerTrade.parse_row(row) for row in _rows(payload, "data", "tradebook"))


@dataclass(frozen=True, slots=True)
class BrokerPosition:
    """A positionbook row. ``quantity`` is the signed net quantity (there is no netqty).

    ``quantity`` is ``None`` if the gateway sent garbage: unknown, never flat.

    ``today_realized_pnl`` is the day's realised P&L and ``unrealized_pnl`` the mark-to-market of what
    is still open. A flat row (quantity 0) has nothing open, so its ``unrealized_pnl`` is 0 whatever the
    server sent, and its realised figure is the first non-zero of ``today_realized_pnl``,
    ``unrealized_pnl`` and ``pnl`` as sent: a real OpenAlgo puts a closed row's realised P&L in
    ``unrealized_pnl``, and [live] rows carry only ``pnl`` (realised + 0 when flat).
    """

    symbol: str
    exchange: str
    product: str
    quantity: int | None
    average_price: Decimal | None
    ltp: Decimal | None
    pnl: Decimal | None
    pnlpercent: Decimal | None = None
    unrealized_pnl: Decimal | None = None
    today_realized_pnl: Decimal | None = None
    lot_size: int | None = None

    @classmethod
    def parse_row(cls, row: Mapping[str, Any]) -> Self:
        quantity = _qty(row, "quantity")
        pnl = _money(row, "pnl")
        unrealized = _money(row, "unrealized_pnl")
        realized = _money(row, "today_realized_pnl")
        if quantity == 0:
            realized = _flat_realized(realized, unrealized, pnl)
            unrealized = Decimal(0)
        return cls(
            symbol=_ident(row, "symbol", "positionbook"),
            exchange=_text(row.get("exchange")),
            product=_text(row.get("product")).upper(),
            quantity=quantity,
            average_price=_dec(row, "average_price"),
            ltp=_dec(row, "ltp"),
            pnl=pnl,
            pnlpercent=_dec(row, "pnlpercent"),
            unrealized_pnl=unrealized,
            today_realized_pnl=realized,
            lot_size=_int_from(row.get("lot_size")),
        )

    @property
    def realized_pnl(self) -> Decimal | None:
        """The day's realised P&L in rupees (``today_realized_pnl``); None when unknown."""
        return self.today_realized_pnl


def _flat_realized(*figures: Decimal | None) -> Decimal | None:
    """A flat row's realised P&L: the first non-zero figure, else the first known one (0), else None."""
    known = [figure for figure in figures if figure is not None]
    return next((figure for figure in known if figure != 0), known[0] if known else None)


@dataclass(frozen=True, slots=True)
class Positionbook:
    positions: tuple[BrokerPosition, ...]
    total_pnl: Decimal | None = None
    total_unrealized_pnl: Decimal | None = None
    total_today_realized_pnl: Decimal | None = None

    @classmethod
    def parse(cls, payload: Mapping[str, Any]) -> Self:
        return cls(
            positions=tuple(BrokerPosition.parse_row(row) for row in _rows(payload, "data", "positionbook")),
            total_pnl=_money(payload, "total_pnl"),
            total_unrealized_pnl=_money(payload, "total_unrealized_pnl"),
            total_today_realized_pnl=_money(payload, "total_today_realized_pnl"),
        )


@dataclass(frozen=True, slots=True)
class BrokerHolding:
    symbol: str
    exchange: str
    product: str
    quantity: int | None
    average_price: Decimal | None
    pnl: Decimal | None
    pnlpercent: Decimal | None
    ltp: Decimal | None = None
    current_value: Decimal | None = None

    @classmethod
    def parse_row(cls, row: Mapping[str, Any]) -> Self:
        return cls(
            symbol=_ident(row, "symbol", "holdings"),
            exchange=_text(row.get("exchange")),
            product=_text(row.get("product")).upper() or "CNC",
            quantity=_qty(row, "quantity"),
            average_price=_dec(row, "average_price"),
            pnl=_money(row, "pnl"),
            pnlpercent=_dec(row, "pnlpercent"),
            ltp=_dec(row, "ltp"),
            current_value=_money(row, "current_value"),
        )


@dataclass(frozen=True, slots=True)
class HoldingsStatistics:
    totalholdingvalue: Decimal | None = None
    totalinvvalue: Decimal | None = None
    totalprofitandloss: Decimal | None = None
    totalpnlpercentage: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Holdings:
    holdings: tuple[BrokerHolding, ...]
    statistics: HoldingsStatistics

    @classmethod
    def parse(cls, payload: Mapping[str, Any]) -> Self:
        rows, stats = _book_with_statistics(payload, "holdings", "holdings")
        return cls(
            holdings=tuple(BrokerHolding.parse_row(row) for row in rows),
            statistics=HoldingsStatistics(
                totalholdingvalue=_money(stats, "totalholdingvalue"),
                totalinvvalue=_money(stats, "totalinvvalue"),
                totalprofitandloss=_money(stats, "totalprofitandloss"),
                totalpnlpercentage=_dec(stats, "totalpnlpercentage"),
            ),
        )


def parse_open_position(payload: Mapping[str, Any]) -> int:
    """openposition -> signed net quantity. Garbage raises MalformedResponseError (never read as 0)."""
    quantity = to_quantity(payload.get("quantity"))
    if quantity is None:
        raise _malformed("openposition", "'quantity' is not an integer")
    return quantity
