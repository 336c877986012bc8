"""What we send: order, modify, option-leg and margin requests, in the wire form the server expects."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from algomirror.broker.wire.parsing import _wire_number, format_expiry
from algomirror.broker.wire.terms import Action, PriceType, Product


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


def symbols_wire(pairs: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    """[(symbol, exchange), …] -> the multiquotes ``symbols`` list."""
    return [{"symbol": symbol, "exchange": exchange} for symbol, exchange in pairs]
