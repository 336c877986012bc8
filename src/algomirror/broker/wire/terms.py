"""Order vocabulary shared by requests and replies: action, price type, product, normalised status."""

from __future__ import annotations

import re
from enum import StrEnum


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
