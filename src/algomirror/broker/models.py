"""Typed request and response models for the OpenAlgo REST endpoints the product uses.

Responses are parsed defensively (protocol §6.7, type drift): numbers may arrive as strings, keys may be
spelled ``pricetype`` or ``price_type``, ``mode`` may be absent. Money and prices are ``Decimal``;
quantities ``int``; an empty, null or unparseable number is ``None`` (unknown), never 0. Timestamps are
aware UTC. A reply missing an identity field (order id, symbol) raises
:class:`~algomirror.broker.errors.MalformedResponseError`; an order reply that says "success" without an
order id raises :class:`~algomirror.broker.errors.NotPlacedError`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Self

from algomirror.broker.errors import MalformedResponseError, NotPlacedError
from algomirror.domain.money import to_decimal, to_money, to_quantity
from algomirror.domain.timeutil import IST

# --------------------------------------------------------------------------------------------- enums


class Action(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class PriceType(StrEnum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"
    SL = "SL"
    SL_M = "SL-M"


class Product(StrEnum):
    MIS = "MIS"
    NRML = "NRML"
    CNC = "CNC"


class OrderState(StrEnum):
    """Normalised order status (PRODUCT.md §5.11)."""

    OPEN = "open"
    TRIGGER_PENDING = "trigger_pending"
    COMPLETE = "complete"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"

    @property
    def is_working(self) -> bool:
        return self in (OrderState.OPEN, OrderState.TRIGGER_PENDING)

    @property
    def is_terminal(self) -> bool:
        return self in (OrderState.COMPLETE, OrderState.REJECTED, OrderState.CANCELLED)


_STATE_ALIASES = {
    "open": OrderState.OPEN,
    "pending": OrderState.OPEN,
    "trigger_pending": OrderState.TRIGGER_PENDING,
    "complete": OrderState.COMPLETE,
    "completed": OrderState.COMPLETE,
    "filled": OrderState.COMPLETE,
    "traded": OrderState.COMPLETE,
    "rejected": OrderState.REJECTED,
    "cancelled": OrderState.CANCELLED,
    "canceled": OrderState.CANCELLED,
    # [live] rarely: an order the exchange dropped at the end of its validity; terminal, like a cancel.
    "expired": OrderState.CANCELLED,
}


def normalise_order_status(value: object) -> OrderState:
    """Map a gateway ``order_status`` (``"trigger pending"``, ``"COMPLETE"``…) to :class:`OrderState`."""
    if not isinstance(value, str):
        return OrderState.UNKNOWN
    key = re.sub(r"[\s\-]+", "_", value.strip().lower())
    return _STATE_ALIASES.get(key, OrderState.UNKNOWN)


# ------------------------------------------------------------------------------------ parse helpers


def _malformed(endpoint: str, what: str) -> MalformedResponseError:
    return MalformedResponseError(f"unexpected reply shape: {what}", endpoint=endpoint)


def _obj(payload: Mapping[str, Any], key: str, endpoint: str) -> Mapping[str, Any]:
    value = payload.get(key)
    if not isinstance(value, Mapping):
        raise _malformed(endpoint, f"'{key}' is not an object")
    return value


def _list(payload: Mapping[str, Any], key: str, endpoint: str) -> list[Any]:
    value = payload.get(key)
    if not isinstance(value, list):
        raise _malformed(endpoint, f"'{key}' is not a list")
    return value


def _rows(payload: Mapping[str, Any], key: str, endpoint: str) -> list[Mapping[str, Any]]:
    rows = _list(payload, key, endpoint)
    if not all(isinstance(row, Mapping) for row in rows):
        raise _malformed(endpoint, f"'{key}' holds a non-object row")
    return rows


def _book_with_statistics(
    payload: Mapping[str, Any], key: str, endpoint: str
) -> tuple[list[Mapping[str, Any]], Mapping[str, Any]]:
    """The orderbook/holdings envelope: ``data`` is an object with a ``key`` rows list and a
    ``statistics`` object, or an empty list (some brokers answer an empty book so).

    Returns the rows and the statistics (empty when absent or not an object; every figure then reads
    as unknown). A null rows list is an empty book. Raises MalformedResponseError when ``data`` is
    neither, when the rows key is missing (a read we cannot trust must not empty our copy of the book),
    or when the rows list holds a non-object.
    """
    data = payload.get("data")
    if isinstance(data, list) and not data:
        return [], {}
    data = _obj(payload, "data", endpoint)
    if key not in data:
        raise _malformed(endpoint, f"'data' has no '{key}' list")
    rows = _rows(data, key, endpoint) if data[key] is not None else []
    stats = data.get("statistics")
    return rows, stats if isinstance(stats, Mapping) else {}


def _text(value: object) -> str:
    """A display string; numbers are rendered, null is empty."""
    if value is None:
        return ""
    return str(value).strip()


def _opt_text(value: object) -> str | None:
    text = _text(value)
    return text or None


def _ident(row: Mapping[str, Any], key: str, endpoint: str) -> str:
    """A required identifier (order id, symbol): numbers are turned into strings, empty is malformed."""
    value = row.get(key)
    if isinstance(value, bool) or value is None:
        raise _malformed(endpoint, f"missing '{key}'")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    if not text:
        raise _malformed(endpoint, f"empty '{key}'")
    return text


def _orderid(value: object) -> str | None:
    """Order ids are always strings; a number is rendered without a decimal point."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def _money(row: Mapping[str, Any], key: str) -> Decimal | None:
    try:
        return to_money(row.get(key))
    except ArithmeticError:
        # Too many digits to round to the paisa (e.g. 1e30): garbage, so unknown, not a crash.
        return None


def _dec(row: Mapping[str, Any], key: str) -> Decimal | None:
    return to_decimal(row.get(key))


def _qty(row: Mapping[str, Any], key: str) -> int | None:
    return to_quantity(row.get(key))


def _int_from(value: object) -> int | None:
    """A count that may arrive as ``75.0`` (``lot_size``) or ``"75"``."""
    return to_quantity(value)


_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%d-%b-%Y %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%d-%m-%Y %H:%M:%S")


def parse_gateway_time(value: object) -> datetime | None:
    """Order/trade times are naive IST wall-clock text in several broker formats -> aware UTC.

    Epoch numbers (seconds, or milliseconds when > 1e11) are accepted too. A time-only or unknown
    format gives ``None``: the caller keeps the raw text.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = float(value) / 1000 if value > 1e11 else float(value)
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None  # out of any calendar's range: unknown
    if not isinstance(value, str):
        return None
    text = value.strip()
    for fmt in _TIME_FORMATS:
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=IST).astimezone(UTC)
        except ValueError:
            continue
    return None


_MONTHS = {
    m: i
    for i, m in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), start=1
    )
}


def parse_expiry(value: object) -> date | None:
    """``25-NOV-25``, ``25NOV25`` or ``25-Nov-2025`` -> date; empty or unknown -> None."""
    if not isinstance(value, str):
        return None
    match = re.fullmatch(r"(\d{1,2})-?([A-Za-z]{3})-?(\d{2}|\d{4})", value.strip())
    if match is None:
        return None
    day, mon, year = match.groups()
    month = _MONTHS.get(mon.upper())
    if month is None:
        return None
    full_year = int(year) + 2000 if len(year) == 2 else int(year)
    try:
        return date(full_year, month, int(day))
    except ValueError:
        return None


def format_expiry(value: date) -> str:
    """date -> ``DDMMMYY`` as symbols and the options endpoints expect (``25NOV25``)."""
    return value.strftime("%d%b%y").upper()


def _wire_number(value: Decimal | int | float | str) -> str:
    """Numbers go out as strings (as the SDK sends them); Decimal keeps its exact text."""
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


# --------------------------------------------------------------------------------------- requests


def _normalise_terms(order: OrderRequest | ModifyRequest | OptionLeg) -> None:
    """Accept plain strings ("BUY", "sl-m") from callers; reject anything the server would.

    Raises ValueError for an action, price type or product the server does not know.
    """
    object.__setattr__(order, "action", Action(str(order.action).upper()))
    object.__setattr__(order, "pricetype", PriceType(str(order.pricetype).upper()))
    object.__setattr__(order, "product", Product(str(order.product).upper()))


def _terms_wire(order: OrderRequest | ModifyRequest | OptionLeg) -> dict[str, Any]:
    """The order terms every placing request carries, in the order they go out (numbers as strings)."""
    return {
        "action": order.action.value,
        "quantity": str(order.quantity),
        "pricetype": order.pricetype.value,
        "product": order.product.value,
        "price": _wire_number(order.price),
        "trigger_price": _wire_number(order.trigger_price),
    }


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """One order as placeorder / placesmartorder / splitorder / a basket item send it.

    ``quantity`` is in units (lots × lot size). Prices are rupees.
    """

    symbol: str
    exchange: str
    action: Action
    quantity: int
    pricetype: PriceType = PriceType.MARKET
    product: Product = Product.MIS
    price: Decimal = Decimal(0)
    trigger_price: Decimal = Decimal(0)
    disclosed_quantity: int = 0

    def __post_init__(self) -> None:
        _normalise_terms(self)
        if isinstance(self.quantity, bool) or not isinstance(self.quantity, int) or self.quantity < 0:
            raise ValueError("quantity must be a non-negative int (units)")

    def to_wire(self) -> dict[str, Any]:
        return {
            "exchange": self.exchange,
            "symbol": self.symbol,
            **_terms_wire(self),
            "disclosed_quantity": str(self.disclosed_quantity),
        }


@dataclass(frozen=True, slots=True)
class ModifyRequest:
    """modifyorder: every field is required by the server."""

    orderid: str
    symbol: str
    exchange: str
    action: Action
    quantity: int
    pricetype: PriceType
    product: Product
    price: Decimal = Decimal(0)
    trigger_price: Decimal = Decimal(0)
    disclosed_quantity: int = 0

    def __post_init__(self) -> None:
        _normalise_terms(self)

    def to_wire(self) -> dict[str, Any]:
        return {
            "orderid": self.orderid,
            "exchange": self.exchange,
            "symbol": self.symbol,
            **_terms_wire(self),
            "disclosed_quantity": str(self.disclosed_quantity),
        }


@dataclass(frozen=True, slots=True)
class OptionLeg:
    """One optionsmultiorder leg / the strike fields of optionsorder."""

    offset: str  # ATM, ITM1…50, OTM1…50
    option_type: str  # CE | PE
    action: Action
    quantity: int
    pricetype: PriceType = PriceType.MARKET
    product: Product = Product.MIS
    price: Decimal = Decimal(0)
    trigger_price: Decimal = Decimal(0)
    expiry_date: date | None = None
    splitsize: int = 0

    def __post_init__(self) -> None:
        _normalise_terms(self)

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "offset": self.offset,
            "option_type": self.option_type.upper(),
            **_terms_wire(self),
        }
        if self.expiry_date is not None:
            wire["expiry_date"] = format_expiry(self.expiry_date)
        if self.splitsize:
            wire["splitsize"] = str(self.splitsize)
        return wire


@dataclass(frozen=True, slots=True)
class MarginPosition:
    """One /margin position; the server wants quantity and prices as strings."""

    symbol: str
    exchange: str
    action: Action
    quantity: int
    product: Product
    pricetype: PriceType = PriceType.MARKET
    price: Decimal = Decimal(0)
    trigger_price: Decimal = Decimal(0)

    def to_wire(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "exchange": self.exchange,
            "action": Action(str(self.action).upper()).value,
            "quantity": str(self.quantity),
            "product": Product(str(self.product).upper()).value,
            "pricetype": PriceType(str(self.pricetype).upper()).value,
            "price": _wire_number(self.price),
            "trigger_price": _wire_number(self.trigger_price),
        }


# ------------------------------------------------------------------------------------ account reads


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
class Order:
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
    orders: tuple[Order, ...]
    statistics: OrderbookStatistics

    @classmethod
    def parse(cls, payload: Mapping[str, Any]) -> Self:
        rows, stats = _book_with_statistics(payload, "orders", "orderbook")
        return cls(
            orders=tuple(Order.parse_row(row) for row in rows),
            statistics=OrderbookStatistics(
                **{name: _qty(stats, name) for name in OrderbookStatistics.__dataclass_fields__}
            ),
        )


@dataclass(frozen=True, slots=True)
class Trade:
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
    def parse_book(payload: Mapping[str, Any]) -> tuple[Trade, ...]:
        return tuple(Trade.parse_row(row) for row in _rows(payload, "data", "tradebook"))


@dataclass(frozen=True, slots=True)
class Position:
    """A positionbook row. ``quantity`` is the signed net quantity (there is no netqty).

    ``quantity`` is ``None`` if the gateway sent garbage: unknown, never flat.
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
        return cls(
            symbol=_ident(row, "symbol", "positionbook"),
            exchange=_text(row.get("exchange")),
            product=_text(row.get("product")).upper(),
            quantity=_qty(row, "quantity"),
            average_price=_dec(row, "average_price"),
            ltp=_dec(row, "ltp"),
            pnl=_money(row, "pnl"),
            pnlpercent=_dec(row, "pnlpercent"),
            unrealized_pnl=_money(row, "unrealized_pnl"),
            today_realized_pnl=_money(row, "today_realized_pnl"),
            lot_size=_int_from(row.get("lot_size")),
        )


@dataclass(frozen=True, slots=True)
class Positionbook:
    positions: tuple[Position, ...]
    total_pnl: Decimal | None = None
    total_unrealized_pnl: Decimal | None = None
    total_today_realized_pnl: Decimal | None = None

    @classmethod
    def parse(cls, payload: Mapping[str, Any]) -> Self:
        return cls(
            positions=tuple(Position.parse_row(row) for row in _rows(payload, "data", "positionbook")),
            total_pnl=_money(payload, "total_pnl"),
            total_unrealized_pnl=_money(payload, "total_unrealized_pnl"),
            total_today_realized_pnl=_money(payload, "total_today_realized_pnl"),
        )


@dataclass(frozen=True, slots=True)
class Holding:
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
    holdings: tuple[Holding, ...]
    statistics: HoldingsStatistics

    @classmethod
    def parse(cls, payload: Mapping[str, Any]) -> Self:
        rows, stats = _book_with_statistics(payload, "holdings", "holdings")
        return cls(
            holdings=tuple(Holding.parse_row(row) for row in rows),
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


# -------------------------------------------------------------------------------------- market data


@dataclass(frozen=True, slots=True)
class Quote:
    ltp: Decimal | None
    open: Decimal | None
    high: Decimal | None
    low: Decimal | None
    prev_close: Decimal | None
    bid: Decimal | None
    ask: Decimal | None
    volume: int | None
    oi: int | None

    @classmethod
    def parse_data(cls, data: Mapping[str, Any]) -> Self:
        return cls(
            ltp=_dec(data, "ltp"),
            open=_dec(data, "open"),
            high=_dec(data, "high"),
            low=_dec(data, "low"),
            prev_close=_dec(data, "prev_close"),
            bid=_dec(data, "bid"),
            ask=_dec(data, "ask"),
            volume=_qty(data, "volume"),
            oi=_qty(data, "oi"),
        )

    @classmethod
    def parse(cls, payload: Mapping[str, Any]) -> Self:
        return cls.parse_data(_obj(payload, "data", "quotes"))


@dataclass(frozen=True, slots=True)
class MultiQuoteItem:
    """One multiquotes result: ``quote`` on success, ``error`` (the server's text) otherwise."""

    symbol: str
    exchange: str
    quote: Quote | None
    error: str | None

    @staticmethod
    def parse_results(payload: Mapping[str, Any]) -> tuple[MultiQuoteItem, ...]:
        items = []
        for row in _rows(payload, "results", "multiquotes"):
            data = row.get("data")
            items.append(
                MultiQuoteItem(
                    symbol=_ident(row, "symbol", "multiquotes"),
                    exchange=_text(row.get("exchange")),
                    quote=Quote.parse_data(data) if isinstance(data, Mapping) else None,
                    error=None if isinstance(data, Mapping) else (_text(row.get("error")) or "no data"),
                )
            )
        return tuple(items)


@dataclass(frozen=True, slots=True)
class BookLevel:
    price: Decimal | None
    quantity: int | None


@dataclass(frozen=True, slots=True)
class Depth:
    ltp: Decimal | None
    ltq: int | None
    open: Decimal | None
    high: Decimal | None
    low: Decimal | None
    prev_close: Decimal | None
    volume: int | None
    oi: int | None
    totalbuyqty: int | None
    totalsellqty: int | None
    bids: tuple[BookLevel, ...]
    asks: tuple[BookLevel, ...]

    @classmethod
    def parse(cls, payload: Mapping[str, Any]) -> Self:
        data = _obj(payload, "data", "depth")

        def levels(key: str) -> tuple[BookLevel, ...]:
            rows = data.get(key)
            if not isinstance(rows, list):
                return ()
            return tuple(
                BookLevel(price=_dec(r, "price"), quantity=_qty(r, "quantity"))
                for r in rows
                if isinstance(r, Mapping)
            )

        return cls(
            ltp=_dec(data, "ltp"),
            ltq=_qty(data, "ltq"),
            open=_dec(data, "open"),
            high=_dec(data, "high"),
            low=_dec(data, "low"),
            prev_close=_dec(data, "prev_close"),
            volume=_qty(data, "volume"),
            oi=_qty(data, "oi"),
            totalbuyqty=_qty(data, "totalbuyqty"),
            totalsellqty=_qty(data, "totalsellqty"),
            bids=levels("bids"),
            asks=levels("asks"),
        )


@dataclass(frozen=True, slots=True)
class Candle:
    """A history bar; ``start`` is aware UTC (daily bars: 00:00 UTC of the trading date)."""

    start: datetime
    open: Decimal | None
    high: Decimal | None
    low: Decimal | None
    close: Decimal | None
    volume: int | None
    oi: int | None

    @staticmethod
    def parse_history(payload: Mapping[str, Any]) -> tuple[Candle, ...]:
        candles = []
        for row in _rows(payload, "data", "history"):
            stamp = to_decimal(row.get("timestamp"))
            if stamp is None:
                # Docs show string dates; the server sends epoch seconds. Accept both.
                start = parse_gateway_time(row.get("timestamp"))
                if start is None:
                    raise _malformed("history", "bar without a usable timestamp")
            else:
                try:
                    start = datetime.fromtimestamp(float(stamp), UTC)
                except (OverflowError, OSError, ValueError):
                    raise _malformed("history", "bar timestamp out of range") from None
            candles.append(
                Candle(
                    start=start,
                    open=_dec(row, "open"),
                    high=_dec(row, "high"),
                    low=_dec(row, "low"),
                    close=_dec(row, "close"),
                    volume=_qty(row, "volume"),
                    oi=_qty(row, "oi"),
                )
            )
        return tuple(candles)


@dataclass(frozen=True, slots=True)
class Intervals:
    seconds: tuple[str, ...] = ()
    minutes: tuple[str, ...] = ()
    hours: tuple[str, ...] = ()
    days: tuple[str, ...] = ()
    weeks: tuple[str, ...] = ()
    months: tuple[str, ...] = ()

    @classmethod
    def parse(cls, payload: Mapping[str, Any]) -> Self:
        data = _obj(payload, "data", "intervals")

        def names(key: str) -> tuple[str, ...]:
            value = data.get(key)
            return tuple(str(v) for v in value) if isinstance(value, list) else ()

        return cls(
            seconds=names("seconds"),
            minutes=names("minutes"),
            hours=names("hours"),
            days=names("days"),
            weeks=names("weeks"),
            months=names("months"),
        )

    @property
    def all(self) -> tuple[str, ...]:
        return self.seconds + self.minutes + self.hours + self.days + self.weeks + self.months


# -------------------------------------------------------------------------------------- instruments


@dataclass(frozen=True, slots=True)
class SymbolInfo:
    """A /symbol or /search row. ``freeze_qty`` ≤ ``lotsize`` means unknown (OpenAlgo reports 1)."""

    symbol: str
    exchange: str
    name: str
    brsymbol: str
    brexchange: str
    token: str
    expiry: date | None
    strike: Decimal | None
    lotsize: int | None
    instrumenttype: str
    tick_size: Decimal | None
    freeze_qty: int | None

    @classmethod
    def parse_row(cls, row: Mapping[str, Any], endpoint: str = "symbol") -> Self:
        return cls(
            symbol=_ident(row, "symbol", endpoint),
            exchange=_text(row.get("exchange")),
            name=_text(row.get("name")),
            brsymbol=_text(row.get("brsymbol")),
            brexchange=_text(row.get("brexchange")),
            token=_orderid(row.get("token")) or "",
            expiry=parse_expiry(row.get("expiry")),
            strike=_dec(row, "strike"),
            lotsize=_int_from(row.get("lotsize")),
            instrumenttype=_text(row.get("instrumenttype")),
            tick_size=_dec(row, "tick_size"),
            freeze_qty=_int_from(row.get("freeze_qty")),
        )

    @property
    def known_freeze_qty(self) -> int | None:
        if self.freeze_qty is None or self.lotsize is None or self.freeze_qty <= self.lotsize:
            return None
        return self.freeze_qty

    @classmethod
    def parse(cls, payload: Mapping[str, Any]) -> Self:
        return cls.parse_row(_obj(payload, "data", "symbol"))

    @staticmethod
    def parse_search(payload: Mapping[str, Any]) -> tuple[SymbolInfo, ...]:
        return tuple(SymbolInfo.parse_row(row, "search") for row in _rows(payload, "data", "search"))


def parse_expiries(payload: Mapping[str, Any]) -> tuple[date, ...]:
    """The /expiry list (``DD-MMM-YY``) -> ascending dates; an unparseable entry is malformed."""
    dates = []
    for item in _list(payload, "data", "expiry"):
        parsed = parse_expiry(item)
        if parsed is None:
            raise _malformed("expiry", f"unreadable expiry {item!r}")
        dates.append(parsed)
    return tuple(sorted(dates))


@dataclass(frozen=True, slots=True)
class OptionSymbol:
    symbol: str
    exchange: str
    lotsize: int | None
    tick_size: Decimal | None
    freeze_qty: int | None
    underlying_ltp: Decimal | None

    @classmethod
    def parse(cls, payload: Mapping[str, Any]) -> Self:
        return cls(
            symbol=_ident(payload, "symbol", "optionsymbol"),
            exchange=_text(payload.get("exchange")),
            lotsize=_int_from(payload.get("lotsize")),
            tick_size=_dec(payload, "tick_size"),
            freeze_qty=_int_from(payload.get("freeze_qty")),
            underlying_ltp=_dec(payload, "underlying_ltp"),
        )


@dataclass(frozen=True, slots=True)
class ChainLeg:
    symbol: str
    label: str
    ltp: Decimal | None
    bid: Decimal | None
    ask: Decimal | None
    bid_qty: int | None
    ask_qty: int | None
    open: Decimal | None
    high: Decimal | None
    low: Decimal | None
    prev_close: Decimal | None
    volume: int | None
    oi: int | None
    lotsize: int | None
    tick_size: Decimal | None
    implied_volatility: Decimal | None = None
    delta: Decimal | None = None
    gamma: Decimal | None = None
    theta: Decimal | None = None
    vega: Decimal | None = None

    @classmethod
    def parse_leg(cls, row: object) -> Self | None:
        if not isinstance(row, Mapping):
            return None
        return cls(
            symbol=_ident(row, "symbol", "optionchain"),
            label=_text(row.get("label")),
            ltp=_dec(row, "ltp"),
            bid=_dec(row, "bid"),
            ask=_dec(row, "ask"),
            bid_qty=_qty(row, "bid_qty"),
            ask_qty=_qty(row, "ask_qty"),
            open=_dec(row, "open"),
            high=_dec(row, "high"),
            low=_dec(row, "low"),
            prev_close=_dec(row, "prev_close"),
            volume=_qty(row, "volume"),
            oi=_qty(row, "oi"),
            lotsize=_int_from(row.get("lotsize")),
            tick_size=_dec(row, "tick_size"),
            implied_volatility=_dec(row, "implied_volatility"),
            delta=_dec(row, "delta"),
            gamma=_dec(row, "gamma"),
            theta=_dec(row, "theta"),
            vega=_dec(row, "vega"),
        )


@dataclass(frozen=True, slots=True)
class ChainRow:
    strike: Decimal
    ce: ChainLeg | None
    pe: ChainLeg | None


@dataclass(frozen=True, slots=True)
class OptionChain:
    underlying: str
    underlying_ltp: Decimal | None
    underlying_prev_close: Decimal | None
    expiry_date: date | None
    atm_strike: Decimal | None
    chain: tuple[ChainRow, ...]
    forward_price: Decimal | None = None

    @classmethod
    def parse(cls, payload: Mapping[str, Any]) -> Self:
        rows = []
        for row in _rows(payload, "chain", "optionchain"):
            strike = to_decimal(row.get("strike"))
            if strike is None:
                raise _malformed("optionchain", "chain row without a strike")
            rows.append(
                ChainRow(
                    strike=strike, ce=ChainLeg.parse_leg(row.get("ce")), pe=ChainLeg.parse_leg(row.get("pe"))
                )
            )
        return cls(
            underlying=_text(payload.get("underlying")),
            underlying_ltp=_dec(payload, "underlying_ltp"),
            underlying_prev_close=_dec(payload, "underlying_prev_close"),
            expiry_date=parse_expiry(payload.get("expiry_date")),
            atm_strike=_dec(payload, "atm_strike"),
            chain=tuple(rows),
            forward_price=_dec(payload, "forward_price"),
        )


@dataclass(frozen=True, slots=True)
class Margin:
    total_margin_required: Decimal | None
    span_margin: Decimal | None
    exposure_margin: Decimal | None

    @classmethod
    def parse(cls, payload: Mapping[str, Any]) -> Self:
        data = _obj(payload, "data", "margin")
        return cls(
            total_margin_required=_money(data, "total_margin_required"),
            span_margin=_money(data, "span_margin"),
            exposure_margin=_money(data, "exposure_margin"),
        )


# ----------------------------------------------------------------------------------- order results


def _placed_orderid(payload: Mapping[str, Any], endpoint: str) -> str:
    orderid = _orderid(payload.get("orderid"))
    if orderid is None:
        # Semi-auto mode queues the order for manual approval: nothing was placed (protocol §1.3).
        message = _text(payload.get("message")) or "success reply without an order id"
        raise NotPlacedError(f"order not placed: {message}", endpoint=endpoint, http_status=200)
    return orderid


@dataclass(frozen=True, slots=True)
class OrderAck:
    """placeorder / modifyorder / cancelorder: the order id (always a string)."""

    orderid: str
    message: str = ""

    @classmethod
    def parse(cls, payload: Mapping[str, Any], endpoint: str = "placeorder") -> Self:
        return cls(orderid=_placed_orderid(payload, endpoint), message=_text(payload.get("message")))


_SMART_NOOP = re.compile(r"already\s+matched|no\s+action\s+needed", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class SmartOrderResult:
    """placesmartorder: ``orderid`` is ``None`` only for the "Positions Already Matched" no-op."""

    orderid: str | None
    message: str

    @property
    def noop(self) -> bool:
        return self.orderid is None

    @classmethod
    def parse(cls, payload: Mapping[str, Any]) -> Self:
        message = _text(payload.get("message"))
        orderid = _orderid(payload.get("orderid"))
        if orderid is None and _SMART_NOOP.search(message) and "pending_order_id" not in payload:
            return cls(orderid=None, message=message)
        return cls(orderid=_placed_orderid(payload, "placesmartorder"), message=message)


@dataclass(frozen=True, slots=True)
class ItemResult:
    """One child of a split, basket or multi-leg order. Check every item: the envelope says nothing.

    ``placed`` is true only with ``status`` success *and* an order id.
    """

    index: int
    status: str
    orderid: str | None
    message: str
    symbol: str | None = None
    exchange: str | None = None
    product: str | None = None
    action: str | None = None
    quantity: int | None = None

    @property
    def placed(self) -> bool:
        return self.status == "success" and self.orderid is not None

    @classmethod
    def parse_item(cls, row: Mapping[str, Any], index: int) -> Self:
        status = _text(row.get("status")).lower()
        orderid = _orderid(row.get("orderid"))
        message = _text(row.get("message"))
        if status == "success" and orderid is None and not message:
            message = "success reply without an order id: not placed"
        return cls(
            index=index,
            status=status or "unknown",
            orderid=orderid,
            message=message,
            symbol=_opt_text(row.get("symbol")),
            exchange=_opt_text(row.get("exchange")),
            product=_opt_text(row.get("product")),
            action=_opt_text(row.get("action")),
            quantity=_qty(row, "quantity"),
        )


@dataclass(frozen=True, slots=True)
class BatchResult:
    """splitorder / basketorder: the per-item outcomes in the server's order."""

    items: tuple[ItemResult, ...]
    total_quantity: int | None = None
    split_size: int | None = None

    @property
    def placed(self) -> tuple[ItemResult, ...]:
        return tuple(item for item in self.items if item.placed)

    @property
    def failed(self) -> tuple[ItemResult, ...]:
        return tuple(item for item in self.items if not item.placed)

    @property
    def all_placed(self) -> bool:
        return bool(self.items) and not self.failed

    @classmethod
    def parse(cls, payload: Mapping[str, Any], endpoint: str = "splitorder") -> Self:
        rows = _rows(payload, "results", endpoint)
        items = []
        for position, row in enumerate(rows, start=1):
            index = to_quantity(row.get("order_num")) or to_quantity(row.get("leg")) or position
            items.append(ItemResult.parse_item(row, index))
        return cls(
            items=tuple(items),
            total_quantity=_qty(payload, "total_quantity"),
            split_size=_qty(payload, "split_size"),
        )


@dataclass(frozen=True, slots=True)
class OptionsOrderResult:
    """optionsorder: a single ``orderid``, or ``split`` when the leg was split."""

    symbol: str
    exchange: str
    underlying_ltp: Decimal | None
    orderid: str | None
    split: BatchResult | None = None
    offset: str = ""
    option_type: str = ""

    @classmethod
    def parse(cls, payload: Mapping[str, Any]) -> Self:
        split = BatchResult.parse(payload, "optionsorder") if "results" in payload else None
        return cls(
            symbol=_text(payload.get("symbol")),
            exchange=_text(payload.get("exchange")),
            underlying_ltp=_dec(payload, "underlying_ltp"),
            orderid=None if split is not None else _placed_orderid(payload, "optionsorder"),
            split=split,
            offset=_text(payload.get("offset")),
            option_type=_text(payload.get("option_type")),
        )


@dataclass(frozen=True, slots=True)
class OptionsMultiResult:
    underlying_ltp: Decimal | None
    legs: BatchResult

    @classmethod
    def parse(cls, payload: Mapping[str, Any]) -> Self:
        return cls(
            underlying_ltp=_dec(payload, "underlying_ltp"),
            legs=BatchResult.parse(payload, "optionsmultiorder"),
        )


@dataclass(frozen=True, slots=True)
class CancelAllResult:
    message: str
    canceled_orders: tuple[str, ...] = field(default=())
    failed_cancellations: tuple[str, ...] = field(default=())

    @classmethod
    def parse(cls, payload: Mapping[str, Any]) -> Self:
        def ids(key: str) -> tuple[str, ...]:
            value = payload.get(key)
            if not isinstance(value, list):
                return ()
            out = []
            for item in value:
                raw = item.get("orderid") if isinstance(item, Mapping) else item
                orderid = _orderid(raw)
                if orderid is not None:
                    out.append(orderid)
            return tuple(out)

        return cls(
            message=_text(payload.get("message")),
            canceled_orders=ids("canceled_orders"),
            failed_cancellations=ids("failed_cancellations"),
        )


@dataclass(frozen=True, slots=True)
class ClosePositionResult:
    """closeposition: [live] says only a message; [paper] adds counts."""

    message: str
    closed_positions: int | None = None
    failed_closures: int | None = None

    @classmethod
    def parse(cls, payload: Mapping[str, Any]) -> Self:
        return cls(
            message=_text(payload.get("message")),
            closed_positions=_qty(payload, "closed_positions"),
            failed_closures=_qty(payload, "failed_closures"),
        )


def symbols_wire(pairs: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    """[(symbol, exchange), …] -> the multiquotes ``symbols`` list."""
    return [{"symbol": symbol, "exchange": exchange} for symbol, exchange in pairs]
