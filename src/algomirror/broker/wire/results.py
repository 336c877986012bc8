"""Order-call replies: acks, smart-order results, split/basket/multi-leg item results, cancel-all, close.

An order reply that says "success" without an order id raises
:class:`~algomirror.broker.errors.NotPlacedError` (semi-auto approval queue), except the smart-order
no-ops, which :class:`SmartOrderResult` reports with ``noop`` true.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Self

from algomirror.broker.errors import NotPlacedError
from algomirror.broker.wire.parsing import _dec, _opt_text, _orderid, _qty, _rows, _text
from algomirror.domain.money import to_quantity


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


# The server's texts for "nothing to do, the position is already at the target" (OpenAlgo places no
# order and sends no order id): "Positions Already Matched. No action needed.", "No action needed.
# Position size matches current position" and, when the request's quantity is 0,
# "No OpenPosition Found. Not placing Exit order.".
_SMART_NOOP = re.compile(
    r"already\s+matched|no\s+action\s+needed|no\s+open\s*position\s+found", re.IGNORECASE
)


@dataclass(frozen=True, slots=True)
class SmartOrderResult:
    """placesmartorder's outcome.

    ``noop`` true: the server placed nothing because the position already equals ``position_size``
    (for instance "No OpenPosition Found. Not placing Exit order." when flattening a flat position);
    ``orderid`` is then None, and this is a success, not a rejection. Otherwise ``orderid`` is the
    placed order. A success without an order id and without a no-op text (the semi-auto queue) raises
    NotPlacedError instead.
    """

    orderid: str | None
    message: str
    noop: bool = False

    @classmethod
    def parse(cls, payload: Mapping[str, Any]) -> Self:
        message = _text(payload.get("message"))
        orderid = _orderid(payload.get("orderid"))
        if orderid is None and _SMART_NOOP.search(message) and "pending_order_id" not in payload:
            return cls(orderid=None, message=message, noop=True)
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
