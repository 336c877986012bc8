"""The OpenAlgo wire format: what the client sends and how each reply is read.

One module per idea: :mod:`~.terms` (order vocabulary), :mod:`~.requests` (what we send),
:mod:`~.books` (the account: funds and the order/trade/position/holdings books), :mod:`~.market`
(quotes, depth, history), :mod:`~.instruments` (symbols, expiries, option chain, margin),
:mod:`~.results` (order-call replies), and :mod:`~.parsing` (the defensive field readers they share).

Replies are parsed defensively (protocol §6.7, type drift): numbers may arrive as strings, keys may be
spelled ``pricetype`` or ``price_type``, ``mode`` may be absent. Money and prices are ``Decimal``;
quantities ``int``; an empty, null or unparseable number is ``None`` (unknown), never 0. Timestamps are
aware UTC. A reply missing an identity field (order id, symbol) raises
:class:`~algomirror.broker.errors.MalformedResponseError`.
"""

from __future__ import annotations

from algomirror.broker.wire.books import (
    BrokerHolding,
    BrokerOrder,
    BrokerPosition,
    BrokerTrade,
    Funds,
    Holdings,
    HoldingsStatistics,
    Orderbook,
    OrderbookStatistics,
    Ping,
    Positionbook,
    parse_open_position,
)
from algomirror.broker.wire.instruments import (
    ChainLeg,
    ChainRow,
    Margin,
    OptionChain,
    OptionSymbol,
    SymbolInfo,
    parse_expiries,
)
from algomirror.broker.wire.market import (
    BookLevel,
    Candle,
    Depth,
    Intervals,
    MultiQuoteItem,
    Quote,
)
from algomirror.broker.wire.parsing import (
    format_expiry,
    parse_expiry,
    parse_gateway_time,
)
from algomirror.broker.wire.requests import (
    MarginPosition,
    ModifyRequest,
    OptionLeg,
    OrderRequest,
    symbols_wire,
)
from algomirror.broker.wire.results import (
    BatchResult,
    CancelAllResult,
    ClosePositionResult,
    ItemResult,
    OptionsMultiResult,
    OptionsOrderResult,
    OrderAck,
    SmartOrderResult,
)
from algomirror.broker.wire.terms import (
    Action,
    OrderState,
    PriceType,
    Product,
    normalise_order_status,
)

__all__ = [
    "Action",
    "BatchResult",
    "BookLevel",
    "BrokerHolding",
    "BrokerOrder",
    "BrokerPosition",
    "BrokerTrade",
    "CancelAllResult",
    "Candle",
    "ChainLeg",
    "ChainRow",
    "ClosePositionResult",
    "Depth",
    "Funds",
    "Holdings",
    "HoldingsStatistics",
    "Intervals",
    "ItemResult",
    "Margin",
    "MarginPosition",
    "ModifyRequest",
    "MultiQuoteItem",
    "OptionChain",
    "OptionLeg",
    "OptionSymbol",
    "OptionsMultiResult",
    "OptionsOrderResult",
    "OrderAck",
    "OrderRequest",
    "OrderState",
    "Orderbook",
    "OrderbookStatistics",
    "Ping",
    "Positionbook",
    "PriceType",
    "Product",
    "Quote",
    "SmartOrderResult",
    "SymbolInfo",
    "format_expiry",
    "normalise_order_status",
    "parse_expiries",
    "parse_expiry",
    "parse_gateway_time",
    "parse_open_position",
    "symbols_wire",
]
