"""Response models: protocol examples, [live] string-typed payloads, drift and garbage."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from algomirror.broker.errors import MalformedResponseError, NotPlacedError
from algomirror.broker.wire import (
    Action,
    BatchResult,
    BrokerOrder,
    BrokerTrade,
    CancelAllResult,
    Candle,
    ClosePositionResult,
    Depth,
    Funds,
    Holdings,
    Intervals,
    MarginPosition,
    ModifyRequest,
    MultiQuoteItem,
    OptionChain,
    OptionsOrderResult,
    OptionSymbol,
    OrderAck,
    Orderbook,
    OrderRequest,
    OrderState,
    Ping,
    Positionbook,
    PriceType,
    Quote,
    SmartOrderResult,
    SymbolInfo,
    format_expiry,
    normalise_order_status,
    parse_expiries,
    parse_expiry,
    parse_gateway_time,
    parse_open_position,
)
from algomirror.domain.money import to_decimal

OK: dict[str, Any] = {"status": "success"}


def test_ping_when_protocol_example_returns_broker() -> None:
    ping = Ping.parse({**OK, "data": {"broker": "zerodha", "message": "pong"}})
    assert ping == Ping(broker="zerodha", message="pong")


def test_ping_when_data_missing_raises_malformed() -> None:
    with pytest.raises(MalformedResponseError):
        Ping.parse(OK)


def test_funds_when_live_strings_parses_decimals() -> None:
    payload = {
        **OK,
        "data": {
            "availablecash": "320150.66",
            "collateral": "0.00",
            "m2mrealized": "3.27",
            "m2munrealized": "-7.88",
            "utiliseddebits": "67934.00",
        },
    }
    funds = Funds.parse(payload)
    assert funds.availablecash == Decimal("320150.66")
    assert funds.m2munrealized == Decimal("-7.88")
    assert funds.collateral == Decimal("0.00")
    assert funds.grossexposure is None


def test_funds_when_paper_numbers_parses_without_float_noise() -> None:
    funds = Funds.parse({**OK, "data": {"availablecash": 9999871.1, "utiliseddebits": 128.9, "totalpnl": 0}})
    assert funds.availablecash == Decimal("9999871.10")
    assert funds.utiliseddebits == Decimal("128.90")
    assert funds.totalpnl == Decimal("0.00")


@pytest.mark.parametrize("garbage", ["", None, "N/A", "nan", True, {"x": 1}])
def test_funds_when_value_is_garbage_gives_none_not_zero(garbage: object) -> None:
    funds = Funds.parse({**OK, "data": {"availablecash": garbage, "collateral": "5"}})
    assert funds.availablecash is None
    assert funds.collateral == Decimal("5.00")


ORDERBOOK_EXAMPLE: dict[str, Any] = {
    **OK,
    "data": {
        "orders": [
            {
                "orderid": "25112201234570",
                "symbol": "NIFTY25NOV2526000CE",
                "exchange": "NFO",
                "action": "SELL",
                "quantity": 75,
                "price": 0.0,
                "trigger_price": 140.0,
                "pricetype": "SL-M",
                "product": "NRML",
                "order_status": "trigger pending",
                "timestamp": "2025-11-22 10:02:12",
                "average_price": 0.0,
                "filled_quantity": 0,
                "pending_quantity": 75,
                "rejection_reason": "",
                "strategy": "IronFly-1",
            }
        ],
        "statistics": {
            "total_buy_orders": 1,
            "total_sell_orders": 1,
            "total_completed_orders": 1,
            "total_open_orders": 0,
            "total_rejected_orders": 0,
            "total_trigger_pending_orders": 1,
        },
    },
}


def test_orderbook_when_protocol_example_normalises_status_and_time() -> None:
    book = Orderbook.parse(ORDERBOOK_EXAMPLE)
    (row,) = book.orders
    assert row.orderid == "25112201234570"
    assert row.status is OrderState.TRIGGER_PENDING
    assert row.raw_status == "trigger pending"
    assert row.pricetype == "SL-M"
    assert row.trigger_price == Decimal("140.0")
    assert row.quantity == 75
    assert row.placed_at == datetime(2025, 11, 22, 4, 32, 12, tzinfo=UTC)  # 10:02:12 IST
    assert row.strategy == "IronFly-1"
    assert book.statistics.total_trigger_pending_orders == 1


def test_orderbook_when_live_row_has_strings_and_no_fill_fields() -> None:
    row = {
        "orderid": 250000001,
        "symbol": "SBIN",
        "exchange": "NSE",
        "action": "buy",
        "quantity": "10",
        "price": "801.50",
        "trigger_price": "0",
        "price_type": "LIMIT",
        "product": "CNC",
        "order_status": "OPEN",
        "timestamp": "22-Nov-2025 10:02:11",
    }
    book = Orderbook.parse({**OK, "data": {"orders": [row], "statistics": {}}})
    (order,) = book.orders
    assert order.orderid == "250000001"
    assert order.action == "BUY"
    assert order.quantity == 10
    assert order.price == Decimal("801.50")
    assert order.pricetype == "LIMIT"
    assert order.status is OrderState.OPEN
    assert order.filled_quantity is None
    assert order.placed_at == datetime(2025, 11, 22, 4, 32, 11, tzinfo=UTC)
    assert book.statistics.total_trigger_pending_orders is None


def test_orderbook_when_empty_list_data_gives_empty_book() -> None:
    assert Orderbook.parse({**OK, "data": []}).orders == ()


def test_orderbook_when_row_lacks_orderid_raises_malformed() -> None:
    with pytest.raises(MalformedResponseError):
        Orderbook.parse({**OK, "data": {"orders": [{"symbol": "SBIN"}]}})


def test_orderbook_when_data_is_html_string_raises_malformed() -> None:
    with pytest.raises(MalformedResponseError):
        Orderbook.parse({**OK, "data": "<html>"})


@pytest.mark.parametrize(
    ("raw", "state"),
    [
        ("open", OrderState.OPEN),
        ("trigger pending", OrderState.TRIGGER_PENDING),
        ("TRIGGER_PENDING", OrderState.TRIGGER_PENDING),
        ("complete", OrderState.COMPLETE),
        ("COMPLETE", OrderState.COMPLETE),
        ("rejected", OrderState.REJECTED),
        ("cancelled", OrderState.CANCELLED),
        ("canceled", OrderState.CANCELLED),
        ("expired", OrderState.CANCELLED),
        ("weird", OrderState.UNKNOWN),
        (None, OrderState.UNKNOWN),
    ],
)
def test_normalise_order_status_when_variant_maps_to_state(raw: object, state: OrderState) -> None:
    assert normalise_order_status(raw) is state


def test_orderstatus_when_paper_example_parses_price_type() -> None:
    payload = {
        **OK,
        "data": {
            "orderid": "25112201234567",
            "symbol": "NIFTY25NOV2526000CE",
            "exchange": "NFO",
            "action": "BUY",
            "quantity": 75,
            "price": 112.4,
            "trigger_price": 0.0,
            "price_type": "MARKET",
            "product": "NRML",
            "order_status": "complete",
            "average_price": 112.45,
            "filled_quantity": 75,
            "pending_quantity": 0,
            "timestamp": "2025-11-22 10:02:11",
            "strategy": "IronFly-1",
        },
    }
    order = BrokerOrder.parse_status(payload)
    assert order.status is OrderState.COMPLETE
    assert order.average_price == Decimal("112.45")
    assert order.pricetype == "MARKET"
    assert order.filled_quantity == 75


def test_tradebook_when_paper_and_live_rows_parse() -> None:
    payload = {
        **OK,
        "data": [
            {
                "symbol": "NIFTY25NOV2526000CE",
                "exchange": "NFO",
                "product": "NRML",
                "action": "BUY",
                "quantity": 75,
                "average_price": 112.45,
                "trade_value": 8433.75,
                "orderid": "25112201234567",
                "timestamp": "2025-11-22 10:02:11",
                "tradeid": "TRADE-20251122-100211-1a2b3c4d",
            },
            {
                "symbol": "SBIN",
                "exchange": "NSE",
                "product": "CNC",
                "action": "SELL",
                "quantity": "5",
                "average_price": "801.5",
                "trade_value": "4007.5",
                "orderid": "777",
                "timestamp": "10:02:11",
            },
        ],
    }
    first, second = BrokerTrade.parse_book(payload)
    assert first.trade_value == Decimal("8433.75")
    assert first.tradeid == "TRADE-20251122-100211-1a2b3c4d"
    assert second.quantity == 5
    assert second.traded_at is None  # time-only [live] timestamp: raw text kept
    assert second.timestamp == "10:02:11"


def test_positionbook_when_short_row_keeps_sign_and_lot_size_float() -> None:
    row = {
        "symbol": "NIFTY25NOV2526000CE",
        "exchange": "NFO",
        "product": "NRML",
        "quantity": -150,
        "average_price": 118.2,
        "ltp": 112.45,
        "pnl": 862.5,
        "pnlpercent": 4.86,
        "unrealized_pnl": 862.5,
        "today_realized_pnl": 0.0,
        "total_pnl_today": 862.5,
        "lot_size": 75.0,
    }
    book = Positionbook.parse({**OK, "data": [row], "total_pnl": 862.5})
    (position,) = book.positions
    assert position.quantity == -150
    assert position.lot_size == 75
    assert position.pnl == Decimal("862.50")
    assert book.total_pnl == Decimal("862.50")


def test_positionbook_when_quantity_is_garbage_gives_none_not_flat() -> None:
    row = {"symbol": "SBIN", "exchange": "NSE", "product": "MIS", "quantity": "", "average_price": "801.00"}
    (position,) = Positionbook.parse({**OK, "data": [row]}).positions
    assert position.quantity is None
    assert position.average_price == Decimal("801.00")


# A real OpenAlgo (2.0.2.1, analyzer/paper mode) lists a row closed today with quantity 0 and its
# realised P&L in ``unrealized_pnl`` (protocol §8); every reply carries "mode": "analyze".
REAL_FLAT_ROW = {
    "symbol": "NIFTY30DEC2526000CE",
    "exchange": "NFO",
    "product": "NRML",
    "quantity": 0,
    "average_price": 0.0,
    "ltp": 112.45,
    "pnl": 862.5,
    "pnlpercent": 0.0,
    "unrealized_pnl": 862.5,
    "today_realized_pnl": 0.0,
}


def test_positionbook_when_real_server_flat_row_puts_realised_in_unrealised_reads_it_as_realised() -> None:
    payload = {"status": "success", "mode": "analyze", "data": [REAL_FLAT_ROW]}
    (position,) = Positionbook.parse(payload).positions
    assert position.quantity == 0
    assert position.today_realized_pnl == Decimal("862.50")
    assert position.realized_pnl == Decimal("862.50")
    assert position.unrealized_pnl == Decimal(0)
    assert isinstance(position.unrealized_pnl, Decimal)
    assert position.pnl == Decimal("862.50")  # realised + nothing open: unchanged


def test_positionbook_when_flat_row_carries_realised_in_both_fields_counts_it_once() -> None:
    row = {**REAL_FLAT_ROW, "today_realized_pnl": -240.75, "unrealized_pnl": -240.75, "pnl": -240.75}
    (position,) = Positionbook.parse({**OK, "data": [row]}).positions
    assert (position.today_realized_pnl, position.unrealized_pnl) == (Decimal("-240.75"), Decimal(0))


def test_positionbook_when_live_flat_row_has_only_pnl_reads_it_as_realised() -> None:
    row = {"symbol": "SBIN", "exchange": "NSE", "product": "MIS", "quantity": "0", "average_price": "0.00",
           "ltp": "801.10", "pnl": "-35.50"}  # fmt: skip
    (position,) = Positionbook.parse({**OK, "data": [row]}).positions
    assert (position.today_realized_pnl, position.unrealized_pnl) == (Decimal("-35.50"), Decimal(0))


def test_positionbook_when_flat_row_has_no_pnl_at_all_keeps_realised_unknown() -> None:
    row = {"symbol": "SBIN", "exchange": "NSE", "product": "MIS", "quantity": 0}
    (position,) = Positionbook.parse({**OK, "data": [row]}).positions
    assert (position.today_realized_pnl, position.unrealized_pnl) == (None, Decimal(0))


def test_positionbook_when_open_row_keeps_unrealised_as_sent() -> None:
    row = {**REAL_FLAT_ROW, "quantity": -75, "average_price": 118.2, "unrealized_pnl": 431.25,
           "today_realized_pnl": 120.0, "pnl": 551.25}  # fmt: skip
    (position,) = Positionbook.parse({**OK, "data": [row]}).positions
    assert (position.unrealized_pnl, position.today_realized_pnl) == (Decimal("431.25"), Decimal("120.00"))


def test_holdings_when_protocol_example_parses_statistics() -> None:
    payload = {
        **OK,
        "data": {
            "holdings": [
                {
                    "symbol": "SBIN",
                    "exchange": "NSE",
                    "product": "CNC",
                    "quantity": 10,
                    "average_price": 780.0,
                    "pnl": 215.0,
                    "pnlpercent": 2.76,
                }
            ],
            "statistics": {
                "totalholdingvalue": "8015",
                "totalinvvalue": 7800,
                "totalprofitandloss": 215.0,
                "totalpnlpercentage": 2.76,
            },
        },
    }
    holdings = Holdings.parse(payload)
    assert holdings.holdings[0].quantity == 10
    assert holdings.statistics.totalholdingvalue == Decimal("8015.00")
    assert holdings.statistics.totalpnlpercentage == Decimal("2.76")


def test_open_position_when_live_string_parses_and_garbage_raises() -> None:
    assert parse_open_position({**OK, "quantity": "-75"}) == -75
    assert parse_open_position({**OK, "quantity": 0}) == 0
    with pytest.raises(MalformedResponseError):
        parse_open_position({**OK, "quantity": "lots"})


def test_quote_when_protocol_example_parses() -> None:
    payload = {
        **OK,
        "data": {
            "ltp": 112.45,
            "open": 98.0,
            "high": 131.2,
            "low": 90.05,
            "prev_close": 101.3,
            "bid": 112.4,
            "ask": 112.5,
            "volume": 4519275,
            "oi": 6120450,
        },
    }
    quote = Quote.parse(payload)
    assert quote.ltp == Decimal("112.45")
    assert quote.low == Decimal("90.05")
    assert quote.volume == 4519275


def test_multiquotes_when_mixed_items_keeps_errors_per_item() -> None:
    payload = {
        **OK,
        "results": [
            {"symbol": "NOPE", "exchange": "NSE", "error": "Symbol not found"},
            {"symbol": "SBIN", "exchange": "NSE", "data": {"ltp": "801.5"}},
        ],
    }
    bad, good = MultiQuoteItem.parse_results(payload)
    assert bad.quote is None
    assert bad.error == "Symbol not found"
    assert good.quote is not None
    assert good.quote.ltp == Decimal("801.5")


def test_depth_when_five_levels_parse() -> None:
    levels = [{"price": 100 + i, "quantity": 10 * i} for i in range(5)]
    depth = Depth.parse({**OK, "data": {"ltp": 101, "bids": levels, "asks": levels, "totalbuyqty": "500"}})
    assert len(depth.bids) == 5
    assert depth.bids[1].price == Decimal(101)
    assert depth.totalbuyqty == 500


def test_history_when_epoch_seconds_gives_aware_utc() -> None:
    payload = {
        **OK,
        "data": [
            {
                "timestamp": 1763782500,
                "open": 25910.0,
                "high": 25932.5,
                "low": 25901.1,
                "close": 25925.4,
                "volume": 0,
                "oi": 0,
            },
            {
                "timestamp": 1763782560.0,
                "open": "1",
                "high": "2",
                "low": "0.5",
                "close": "1.5",
                "volume": "7",
            },
        ],
    }
    first, second = Candle.parse_history(payload)
    assert first.start == datetime(2025, 11, 22, 3, 35, tzinfo=UTC)
    assert first.close == Decimal("25925.4")
    assert second.start.tzinfo is UTC
    assert second.volume == 7
    assert second.oi is None


def test_history_when_bar_has_no_timestamp_raises_malformed() -> None:
    with pytest.raises(MalformedResponseError):
        Candle.parse_history({**OK, "data": [{"open": 1}]})


def test_intervals_when_example_lists_all() -> None:
    payload = {
        **OK,
        "data": {
            "seconds": [],
            "minutes": ["1m", "5m"],
            "hours": ["1h"],
            "days": ["D"],
            "weeks": [],
            "months": [],
        },
    }
    assert Intervals.parse(payload).all == ("1m", "5m", "1h", "D")


def test_symbol_when_option_example_parses_expiry_and_freeze() -> None:
    payload = {
        **OK,
        "data": {
            "id": 4121,
            "symbol": "NIFTY25NOV2526000CE",
            "brsymbol": "NIFTY25N2526000CE",
            "name": "NIFTY",
            "exchange": "NFO",
            "brexchange": "NFO",
            "token": 47291,
            "expiry": "25-NOV-25",
            "strike": 26000.0,
            "lotsize": 75,
            "instrumenttype": "CE",
            "tick_size": 0.05,
            "freeze_qty": 1800,
        },
    }
    info = SymbolInfo.parse(payload)
    assert info.expiry == date(2025, 11, 25)
    assert info.token == "47291"
    assert info.known_freeze_qty == 1800
    assert info.tick_size == Decimal("0.05")


def test_symbol_when_equity_has_empty_expiry_and_unknown_freeze() -> None:
    row = {"symbol": "SBIN", "exchange": "NSE", "expiry": "", "strike": -0.01, "lotsize": 1, "freeze_qty": 1}
    info = SymbolInfo.parse({**OK, "data": row})
    assert info.expiry is None
    assert info.known_freeze_qty is None


def test_search_when_no_hits_gives_empty_tuple() -> None:
    assert SymbolInfo.parse_search({**OK, "message": "Found 0 matching symbols", "data": []}) == ()


def test_expiry_when_list_parses_sorted_dates() -> None:
    payload = {**OK, "data": ["02-DEC-25", "25-NOV-25", "09-DEC-25"]}
    assert parse_expiries(payload) == (date(2025, 11, 25), date(2025, 12, 2), date(2025, 12, 9))


def test_expiry_when_entry_unreadable_raises_malformed() -> None:
    with pytest.raises(MalformedResponseError):
        parse_expiries({**OK, "data": ["soon"]})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("25-NOV-25", date(2025, 11, 25)),
        ("25NOV25", date(2025, 11, 25)),
        ("25-Nov-2025", date(2025, 11, 25)),
        ("", None),
        ("31-FEB-25", None),
        ("xx", None),
    ],
)
def test_parse_expiry_when_format_varies(text: str, expected: date | None) -> None:
    assert parse_expiry(text) == expected


def test_format_expiry_when_date_gives_ddmmmyy() -> None:
    assert format_expiry(date(2025, 12, 2)) == "02DEC25"


def test_parse_gateway_time_when_epoch_ms_gives_utc() -> None:
    assert parse_gateway_time(1763782500123) == datetime(2025, 11, 22, 3, 35, 0, 123000, tzinfo=UTC)


def test_optionsymbol_and_chain_when_examples_parse() -> None:
    osym = OptionSymbol.parse(
        {
            **OK,
            "symbol": "NIFTY25NOV2526000CE",
            "exchange": "NFO",
            "lotsize": 75,
            "tick_size": 0.05,
            "freeze_qty": 1800,
            "underlying_ltp": 25962.3,
        }
    )
    assert osym.lotsize == 75
    leg = {
        "symbol": "NIFTY25NOV2525900CE",
        "label": "ATM",
        "ltp": 120.5,
        "bid": 120.4,
        "ask": 120.6,
        "lotsize": 75,
    }
    chain = OptionChain.parse(
        {
            **OK,
            "underlying": "NIFTY",
            "underlying_ltp": 25962.3,
            "expiry_date": "25NOV25",
            "atm_strike": 25900.0,
            "chain": [{"strike": 25900.0, "ce": leg, "pe": None}],
        }
    )
    assert chain.expiry_date == date(2025, 11, 25)
    assert chain.chain[0].ce is not None and chain.chain[0].ce.label == "ATM"
    assert chain.chain[0].pe is None


def test_order_ack_when_numeric_orderid_gives_string() -> None:
    assert OrderAck.parse({**OK, "orderid": 25112201234567}).orderid == "25112201234567"


def test_order_ack_when_semi_auto_success_without_orderid_raises_not_placed() -> None:
    payload = {
        **OK,
        "message": "Order queued for approval in Action Center",
        "mode": "semi_auto",
        "pending_order_id": 123,
    }
    with pytest.raises(NotPlacedError) as info:
        OrderAck.parse(payload)
    assert "Action Center" in info.value.message


def test_smart_order_when_positions_matched_is_noop() -> None:
    result = SmartOrderResult.parse({**OK, "message": "Positions Already Matched. No Action needed."})
    assert result.noop
    assert result.orderid is None


def test_smart_order_when_real_server_finds_no_open_position_is_noop_success_not_not_placed() -> None:
    # OpenAlgo 2.0.2.1 flattening a flat position (position_size 0, quantity 0): success, no order id.
    body = {
        "status": "success",
        "mode": "analyze",
        "message": "No OpenPosition Found. Not placing Exit order.",
    }
    result = SmartOrderResult.parse(body)
    assert result.noop
    assert result.orderid is None
    assert result.message == "No OpenPosition Found. Not placing Exit order."


def test_smart_order_when_size_already_matches_is_noop() -> None:
    result = SmartOrderResult.parse(
        {**OK, "message": "No action needed. Position size matches current position"}
    )
    assert (result.noop, result.orderid) == (True, None)


def test_smart_order_when_placed_is_not_noop() -> None:
    result = SmartOrderResult.parse({**OK, "message": "Order placed", "orderid": 25112201234567})
    assert (result.noop, result.orderid) == (False, "25112201234567")


def test_smart_order_when_semi_auto_raises_not_placed() -> None:
    with pytest.raises(NotPlacedError):
        SmartOrderResult.parse({**OK, "message": "Order queued for approval", "pending_order_id": 5})


def test_split_when_one_child_failed_reports_it() -> None:
    payload = {
        **OK,
        "total_quantity": 1900,
        "split_size": 900,
        "results": [
            {"order_num": 1, "quantity": 900, "status": "success", "orderid": "25112201230001"},
            {"order_num": 2, "quantity": 900, "status": "success", "orderid": 25112201230002},
            {"order_num": 3, "quantity": 100, "status": "error", "message": "Insufficient funds. …"},
        ],
    }
    result = BatchResult.parse(payload)
    assert [i.orderid for i in result.placed] == ["25112201230001", "25112201230002"]
    assert [i.index for i in result.failed] == [3]
    assert result.failed[0].message == "Insufficient funds. …"
    assert not result.all_placed
    assert result.total_quantity == 1900


def test_basket_when_item_success_without_orderid_counts_as_failed() -> None:
    payload = {
        **OK,
        "results": [{"symbol": "SBIN", "exchange": "NSE", "product": "MIS", "status": "success"}],
    }
    result = BatchResult.parse(payload, "basketorder")
    assert result.placed == ()
    assert "not placed" in result.failed[0].message


def test_options_order_when_split_reply_has_results() -> None:
    payload = {
        **OK,
        "symbol": "NIFTY25NOV2525800CE",
        "exchange": "NFO",
        "underlying_ltp": 25962.3,
        "total_quantity": 150,
        "split_size": 75,
        "results": [
            {"order_num": 1, "status": "success", "orderid": "1"},
            {"order_num": 2, "status": "success", "orderid": "2"},
        ],
    }
    result = OptionsOrderResult.parse(payload)
    assert result.orderid is None
    assert result.split is not None and result.split.all_placed


def test_cancel_all_and_close_when_paper_replies_parse() -> None:
    cancel = CancelAllResult.parse(
        {
            **OK,
            "message": "Canceled 2 orders. Failed to cancel 0 orders.",
            "canceled_orders": ["1", 2],
            "failed_cancellations": [],
        }
    )
    assert cancel.canceled_orders == ("1", "2")
    close = ClosePositionResult.parse({**OK, "message": "All Open Positions Squared Off"})
    assert close.closed_positions is None


def test_order_request_when_strings_given_validates_and_serialises() -> None:
    request = OrderRequest(
        symbol="SBIN",
        exchange="NSE",
        action="buy",
        quantity=10,  # type: ignore[arg-type]
        pricetype="limit",
        price=Decimal("801.50"),
    )  # type: ignore[arg-type]
    assert request.action is Action.BUY
    assert request.pricetype is PriceType.LIMIT
    wire = request.to_wire()
    assert wire["price"] == "801.50"
    assert wire["quantity"] == "10"
    with pytest.raises(ValueError):
        OrderRequest(symbol="SBIN", exchange="NSE", action="HOLD", quantity=1)  # type: ignore[arg-type]


def test_modify_and_margin_requests_when_serialised_use_strings() -> None:
    modify = ModifyRequest(
        orderid="1",
        symbol="SBIN",
        exchange="NSE",
        action=Action.BUY,
        quantity=5,
        pricetype=PriceType.LIMIT,
        product="CNC",
        price=Decimal("800"),
    )  # type: ignore[arg-type]
    assert modify.to_wire()["orderid"] == "1"
    margin = MarginPosition(symbol="SBIN", exchange="NSE", action=Action.SELL, quantity=5, product="MIS")  # type: ignore[arg-type]
    assert margin.to_wire()["quantity"] == "5"


@given(st.decimals(min_value=Decimal("-1e9"), max_value=Decimal("1e9"), places=2, allow_nan=False))
def test_funds_when_any_rupee_amount_as_string_or_number_parses_exactly(amount: Decimal) -> None:
    as_text = Funds.parse({**OK, "data": {"availablecash": str(amount)}})
    as_number = Funds.parse({**OK, "data": {"availablecash": float(amount)}})
    assert as_text.availablecash == amount
    assert as_number.availablecash == amount


@given(st.text().filter(lambda s: to_decimal(s) is None))
def test_position_when_quantity_is_any_non_number_is_unknown_never_flat(text: str) -> None:
    row = {"symbol": "X", "exchange": "NFO", "product": "NRML", "quantity": text}
    (position,) = Positionbook.parse({**OK, "data": [row]}).positions
    assert position.quantity is None


def test_parse_books_when_amount_is_too_large_for_money_reads_unknown_not_crash() -> None:
    # 1e30 is valid JSON but cannot be rounded to the paisa in Decimal's 28 digits: unknown, not a crash.
    funds = Funds.parse({**OK, "data": {"availablecash": 1e30, "collateral": "5"}})
    assert (funds.availablecash, funds.collateral) == (None, Decimal("5.00"))
    row = {"symbol": "X", "exchange": "NFO", "product": "NRML", "quantity": 75, "pnl": "1e40"}
    (position,) = Positionbook.parse({**OK, "data": [row]}).positions
    assert (position.quantity, position.pnl) == (75, None)


@pytest.mark.parametrize("stamp", [1e20, -1e20, 10**30])
def test_parse_order_when_epoch_timestamp_is_out_of_range_keeps_time_unknown(stamp: object) -> None:
    order = BrokerOrder.parse_row({"orderid": "1", "symbol": "X", "order_status": "open", "timestamp": stamp})
    assert (order.orderid, order.placed_at) == ("1", None)


def test_parse_history_when_bar_epoch_is_out_of_range_raises_malformed() -> None:
    with pytest.raises(MalformedResponseError):
        Candle.parse_history({**OK, "data": [{"timestamp": 1e20, "open": 1, "close": 1}]})


@pytest.mark.parametrize("parse", [Orderbook.parse, Holdings.parse])
def test_parse_book_when_rows_key_missing_raises_malformed_not_empty(parse: Any) -> None:
    # "unknown, never flat": a success reply without the rows list must not read as an empty book.
    with pytest.raises(MalformedResponseError):
        parse({"status": "success", "data": {}})
    with pytest.raises(MalformedResponseError):
        parse({"status": "success", "data": {"statistics": {}}})


@pytest.mark.parametrize(("parse", "key"), [(Orderbook.parse, "orders"), (Holdings.parse, "holdings")])
def test_parse_book_when_rows_null_or_data_empty_list_reads_empty(parse: Any, key: str) -> None:
    assert getattr(parse({"status": "success", "data": {key: None}}), key) == ()
    assert getattr(parse({"status": "success", "data": []}), key) == ()
