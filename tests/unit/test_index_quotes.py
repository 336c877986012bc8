"""Which multiquotes items the engine stores for the header's index strip."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from algomirror.broker.wire import MultiQuoteItem
from algomirror.engine.index_quotes import IndexLevel, usable_levels


def reply(*rows: dict[str, Any]) -> tuple[MultiQuoteItem, ...]:
    return MultiQuoteItem.parse_results({"status": "success", "results": list(rows)})


def row(symbol: str, exchange: str, ltp: Any, prev_close: Any = 100.0) -> dict[str, Any]:
    return {"symbol": symbol, "exchange": exchange, "data": {"ltp": ltp, "prev_close": prev_close}}


def test_usable_levels_when_reply_is_complete_keeps_all_three_exactly() -> None:
    items = reply(
        row("NIFTY", "NSE_INDEX", 26105.35, 26073.9),
        row("BANKNIFTY", "NSE_INDEX", "59012.50", "59122.15"),
        row("SENSEX", "BSE_INDEX", 85000.0, 84554.2),
    )
    assert usable_levels(items) == [
        IndexLevel("NIFTY", "NSE_INDEX", Decimal("26105.35"), Decimal("26073.9")),
        IndexLevel("BANKNIFTY", "NSE_INDEX", Decimal("59012.50"), Decimal("59122.15")),
        IndexLevel("SENSEX", "BSE_INDEX", Decimal("85000.0"), Decimal("84554.2")),
    ]


def test_usable_levels_when_ltp_zero_missing_or_item_failed_skips_that_index() -> None:
    items = reply(
        {"symbol": "SENSEX", "exchange": "BSE_INDEX", "error": "Symbol not found"},
        row("NIFTY", "NSE_INDEX", 0),
        {"symbol": "BANKNIFTY", "exchange": "NSE_INDEX", "data": {"prev_close": 59000}},
    )
    assert usable_levels(items) == []


def test_usable_levels_when_prev_close_zero_or_missing_it_is_unknown() -> None:
    items = reply(
        row("NIFTY", "NSE_INDEX", 26000, 0),
        {"symbol": "SENSEX", "exchange": "BSE_INDEX", "data": {"ltp": 85000}},
    )
    assert [(level.symbol, level.prev_close) for level in usable_levels(items)] == [
        ("NIFTY", None),
        ("SENSEX", None),
    ]


def test_usable_levels_when_other_symbols_or_exchanges_ignores_them() -> None:
    items = reply(
        row("NIFTY", "NSE", 26000),  # an equity of that name, not the index
        row("FINNIFTY", "NSE_INDEX", 27000),
        row("NIFTY", "NSE_INDEX", 26001),
        row("NIFTY", "NSE_INDEX", 26002),  # a duplicate: the first wins
        {"symbol": "SENSEX", "data": {"ltp": 85000}},  # no exchange given: matched by its symbol
    )
    assert [(level.symbol, level.exchange, level.ltp) for level in usable_levels(items)] == [
        ("NIFTY", "NSE_INDEX", Decimal("26001")),
        ("SENSEX", "BSE_INDEX", Decimal("85000")),
    ]
