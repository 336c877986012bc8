"""The sync's mirroring rules (algomirror.engine.book_mirror) on real SQLite and PostgreSQL, fed with parsed
gateway replies of the shapes live brokers send (strings, gaps, garbage) — which the paper exchange
does not produce (it has no holdings, and always sends clean numbers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import select

from algomirror.broker import wire
from algomirror.broker.errors import (
    AuthError,
    BrokerTimeoutError,
    ConnectionFailedError,
    MalformedResponseError,
    NotFoundError,
    RateLimitedError,
    RejectedError,
    ServerError,
)
from algomirror.db.models import (
    AccountFunds,
    Holding,
    MarginTracker,
    Order,
    Position,
    Trade,
    TradingAccount,
    User,
)
from algomirror.db.session import Database
from algomirror.engine import book_mirror
from algomirror.engine.sync import failure_kind, is_unsupported

T0 = datetime(2026, 11, 25, 5, 0, tzinfo=UTC)
T1 = T0 + timedelta(seconds=5)


def make_account(database: Database, *, collateral_included: bool = True) -> int:
    with database.session() as s:
        user = User(username="books", email="books@example.com", password_hash="x")
        s.add(user)
        s.flush()
        acc = TradingAccount(
            user_id=user.id,
            account_name="Live",
            broker="zerodha",
            api_key_encrypted="token",
            collateral_included=collateral_included,
        )
        s.add(acc)
        s.flush()
        return acc.id


def holdings(*rows: dict[str, object]) -> tuple[wire.BrokerHolding, ...]:
    return wire.Holdings.parse({"status": "success", "data": {"holdings": list(rows)}}).holdings


def positions(*rows: dict[str, object]) -> tuple[wire.BrokerPosition, ...]:
    return wire.Positionbook.parse({"status": "success", "data": list(rows)}).positions


def test_store_holdings_when_read_changes_upserts_and_removes_absent_symbols(database: Database) -> None:
    acc = make_account(database)
    first = holdings(
        {
            "symbol": "INFY",
            "exchange": "NSE",
            "quantity": "10",
            "average_price": "1500.5",
            "ltp": "1600",
            "pnl": "995",
        },
        {
            "symbol": "TCS",
            "exchange": "NSE",
            "quantity": 5,
            "average_price": 3000,
            "pnl": "",
            "pnlpercent": None,
        },
    )
    with database.session() as s:
        counts = book_mirror.store_holdings(s, acc, first, fetched_at=T0)
    assert (counts.inserted, counts.removed) == (2, 0)
    with database.session() as s:
        rows = {h.symbol: h for h in s.scalars(select(Holding))}
    assert rows["INFY"].invested_value == Decimal("15005.00") and rows["INFY"].current_value == Decimal(
        "16000.00"
    )
    # Unknown numbers are NULL, never 0.
    assert rows["TCS"].pnl is None and rows["TCS"].pnl_percent is None and rows["TCS"].current_value is None

    with database.session() as s:
        counts = book_mirror.store_holdings(
            s,
            acc,
            holdings({"symbol": "INFY", "exchange": "NSE", "quantity": 12, "average_price": 1510}),
            fetched_at=T1,
        )
    assert (counts.updated, counts.removed) == (1, 1)
    with database.session() as s:
        only = s.scalars(select(Holding)).one()
    assert (only.symbol, only.quantity, only.updated_at) == ("INFY", 12, T1)


def test_store_positions_when_quantity_is_garbage_keeps_the_last_good_row(database: Database) -> None:
    acc = make_account(database)
    good = {"symbol": "NIFTY01DEC2626000CE", "exchange": "NFO", "product": "NRML", "quantity": "-65",
            "average_price": "120.5", "ltp": "118", "pnl": "162.5"}  # fmt: skip
    with database.session() as s:
        book_mirror.store_positions(s, acc, positions(good), fetched_at=T0)
    garbage = {**good, "quantity": "abc", "pnl": "0"}
    fresh = {"symbol": "NIFTY01DEC2626500CE", "exchange": "NFO", "product": "NRML", "quantity": 65,
             "average_price": None}  # fmt: skip
    with database.session() as s:
        counts = book_mirror.store_positions(s, acc, positions(garbage, fresh), fetched_at=T1)
    assert (counts.inserted, counts.removed, counts.skipped) == (0, 0, 2)
    with database.session() as s:
        row = s.scalars(select(Position)).one()
    assert (row.quantity, row.pnl, row.updated_at) == (-65, Decimal("162.50"), T0)


def test_store_positions_when_the_clock_has_not_moved_keeps_its_stamp_not_the_wall_clock(
    database: Database,
) -> None:
    # Two reads within one step of a demo or test clock: the ORM leaves an equal stamp out of the UPDATE,
    # and the column's onupdate used to put this computer's time there instead (seen in the demo).
    acc = make_account(database)
    row = {"symbol": "NIFTY01DEC2626000CE", "exchange": "NFO", "product": "NRML", "quantity": -65,
           "average_price": "120.5", "ltp": "118"}  # fmt: skip
    with database.session() as s:
        book_mirror.store_positions(s, acc, positions(row), fetched_at=T0)
    with database.session() as s:
        counts = book_mirror.store_positions(s, acc, positions({**row, "ltp": "119"}), fetched_at=T0)
    assert counts.updated == 1
    with database.session() as s:
        stored = s.scalars(select(Position)).one()
    assert (stored.ltp, stored.updated_at) == (Decimal("119"), T0)


def test_store_orders_when_working_order_disappears_marks_it_unknown_not_deleted(database: Database) -> None:
    acc = make_account(database)
    row = {"orderid": 123, "symbol": "NIFTY01DEC2626000CE", "exchange": "NFO", "action": "buy",
           "quantity": "65", "price": "10", "pricetype": "LIMIT", "product": "NRML", "order_status": "open",
           "timestamp": "25-Nov-2026 10:31:00"}  # fmt: skip
    done = {
        **row,
        "orderid": "124",
        "order_status": "COMPLETE",
        "average_price": "10",
    }  # no filled_quantity ([live])
    book = wire.Orderbook.parse({"status": "success", "data": {"orders": [row, done]}}).orders
    with database.session() as s:
        book_mirror.store_orders(s, acc, book, fetched_at=T0)
    with database.session() as s:
        counts = book_mirror.store_orders(s, acc, book[1:], fetched_at=T1)
    assert counts.removed == 1
    with database.session() as s:
        orders = {o.order_id: o for o in s.scalars(select(Order))}
    assert orders["123"].status == "unknown" and orders["123"].placed_at == datetime(
        2026, 11, 25, 5, 1, tzinfo=UTC
    )
    assert orders["124"].status == "complete" and orders["124"].filled_quantity == 65
    assert orders["124"].pending_quantity is None  # not given: unknown, not 0


def test_store_funds_when_collateral_excluded_tracker_uses_seller_base_minus_reservations(
    database: Database,
) -> None:
    acc = make_account(database, collateral_included=False)
    reply = {"status": "success", "data": {"availablecash": "320150.66", "collateral": "50000.00",
             "m2mrealized": "3.27", "m2munrealized": "", "utiliseddebits": "67934.00"}}  # fmt: skip
    with database.session() as s:
        s.add(MarginTracker(account_id=acc, allocated_margins={"run:1:leg:2": {"amount": "20000.00"}}))
    with database.session() as s:
        book_mirror.store_funds(
            s, acc, wire.Funds.parse(reply), reply["data"], collateral_included=False, fetched_at=T0
        )
        book_mirror.store_funds(
            s, acc, wire.Funds.parse(reply), reply["data"], collateral_included=False, fetched_at=T1
        )
    with database.session() as s:
        funds = s.scalars(select(AccountFunds)).one()
        tracker = s.scalars(select(MarginTracker)).one()
    assert funds.m2m_unrealized is None and funds.raw == reply["data"] and funds.fetched_at == T1
    # Seller base = availablecash + collateral; used margin is never subtracted again.
    assert tracker.total_available_margin == Decimal("370150.66")
    assert tracker.used_margin == Decimal("67934.00")
    assert tracker.free_margin == Decimal("350150.66")
    assert (tracker.update_count, tracker.last_updated) == (2, T1)


def test_seller_base_when_cash_or_collateral_unknown_is_unknown() -> None:
    assert book_mirror.seller_base(None, Decimal(1), True) is None
    assert book_mirror.seller_base(Decimal(5), None, False) is None
    assert book_mirror.seller_base(Decimal(5), None, True) == Decimal(5)


def test_failure_kind_when_server_answered_is_failed_else_error() -> None:
    assert failure_kind(RejectedError("no")) == "failed"
    assert failure_kind(ServerError("500", http_status=500)) == "failed"
    assert failure_kind(RateLimitedError("429", http_status=429)) == "failed"
    assert failure_kind(MalformedResponseError("html", http_status=200)) == "error"
    assert failure_kind(BrokerTimeoutError("slow")) == "error"
    assert failure_kind(ConnectionFailedError("refused")) == "error"
    assert failure_kind(AuthError("403", http_status=403)) == "error"  # handled before: auth_failed


def test_is_unsupported_when_broker_lacks_the_endpoint_but_never_for_funds_auth_or_429() -> None:
    assert is_unsupported("holdings", NotFoundError("Broker-specific module not found", http_status=404))
    assert is_unsupported("holdings", ServerError("server error 501: Not Implemented", http_status=501))
    assert is_unsupported(
        "tradebook", ServerError("Tradebook not supported for this broker", http_status=500)
    )
    assert not is_unsupported("holdings", ServerError("Error fetching holdings data", http_status=500))
    assert not is_unsupported("funds", NotFoundError("Broker-specific module not found", http_status=404))
    assert not is_unsupported("holdings", AuthError("not supported", http_status=403))
    assert not is_unsupported("holdings", RateLimitedError("429", http_status=429))
    assert not is_unsupported("holdings", BrokerTimeoutError("no reply within the timeout"))


def test_store_positions_when_product_is_unreadable_keeps_the_row(database: Database) -> None:
    acc = make_account(database)
    good = {"symbol": "NIFTY01DEC2626000CE", "exchange": "NFO", "product": "NRML", "quantity": "-65",
            "average_price": "120.5", "ltp": "118", "pnl": "162.5"}  # fmt: skip
    with database.session() as s:
        book_mirror.store_positions(s, acc, positions(good), fetched_at=T0)
    with database.session() as s:
        counts = book_mirror.store_positions(s, acc, positions({**good, "product": ""}), fetched_at=T1)
    assert (counts.removed, counts.skipped) == (0, 1)
    with database.session() as s:
        row = s.scalars(select(Position)).one()
    assert (row.quantity, row.product, row.updated_at) == (-65, "NRML", T0)


def test_store_orders_and_trades_when_strategy_tag_is_overlong_store_it_clipped(database: Database) -> None:
    # One over-long free-text tag must not fail the whole book's transaction (PostgreSQL enforces
    # VARCHAR lengths), which would freeze every order's status at its last good read.
    acc = make_account(database)
    tag = "T" * 150
    order = {"orderid": "7", "symbol": "NIFTY01DEC2626000CE", "exchange": "NFO", "action": "BUY",
             "quantity": 65, "pricetype": "MARKET", "product": "NRML", "order_status": "complete",
             "strategy": tag}  # fmt: skip
    trade = {"orderid": "7", "symbol": "NIFTY01DEC2626000CE", "exchange": "NFO", "action": "BUY",
             "quantity": 65, "average_price": "10", "product": "NRML", "strategy": tag}  # fmt: skip
    with database.session() as s:
        orders = wire.Orderbook.parse({"data": {"orders": [order]}}).orders
        book_mirror.store_orders(s, acc, orders, fetched_at=T0)
        book_mirror.store_trades(s, acc, wire.BrokerTrade.parse_book({"data": [trade]}), fetched_at=T0)
    with database.session() as s:
        stored_order = s.scalars(select(Order)).one()
        stored_trade = s.scalars(select(Trade)).one()
    assert stored_order.status == "complete" and stored_order.strategy == tag[:100]
    assert stored_trade.quantity == 65 and stored_trade.strategy == tag[:100]


def trade_book(*rows: dict[str, object]) -> tuple[wire.BrokerTrade, ...]:
    return wire.BrokerTrade.parse_book({"status": "success", "data": list(rows)})


def order_book(*rows: dict[str, object]) -> tuple[wire.BrokerOrder, ...]:
    return wire.Orderbook.parse({"status": "success", "data": {"orders": list(rows)}}).orders


ORDER = {"orderid": "900", "symbol": "NIFTY01DEC2626000CE", "exchange": "NFO", "action": "BUY",
         "quantity": 65, "price": "10", "pricetype": "LIMIT", "product": "NRML", "order_status": "complete",
         "filled_quantity": 65, "average_price": "10"}  # fmt: skip
FILL = {"orderid": "900", "symbol": "NIFTY01DEC2626000CE", "exchange": "NFO", "action": "BUY",
        "quantity": 65, "average_price": "10", "trade_value": "650", "product": "NRML"}  # fmt: skip


def test_trading_day_start_when_around_ist_midnight_is_the_ist_calendar_day() -> None:
    assert book_mirror.trading_day_start(datetime(2026, 11, 25, 18, 29, tzinfo=UTC)) == datetime(
        2026, 11, 24, 18, 30, tzinfo=UTC
    )
    assert book_mirror.trading_day_start(datetime(2026, 11, 25, 18, 30, tzinfo=UTC)) == datetime(
        2026, 11, 25, 18, 30, tzinfo=UTC
    )


def test_store_trades_when_stamps_are_time_only_matches_rows_by_key_across_reads(database: Database) -> None:
    # traded_at stays NULL, so the day window cannot find these rows: the natural-key look-up must, or
    # the second read would insert duplicates (and fail on the unique key).
    acc = make_account(database)
    book = trade_book({**FILL, "timestamp": "10:31:00"}, {**FILL, "timestamp": "10:30:00", "quantity": 10})
    with database.session() as s:
        first = book_mirror.store_trades(s, acc, book, fetched_at=T0)
    with database.session() as s:
        second = book_mirror.store_trades(s, acc, book, fetched_at=T1)
    assert (first.inserted, second.inserted, second.updated) == (2, 0, 2)
    with database.session() as s:
        rows = s.scalars(select(Trade).order_by(Trade.trade_key)).all()
    assert [(t.trade_key, t.quantity, t.traded_at, t.updated_at) for t in rows] == [
        ("#1", 10, None, T1),
        ("#2", 65, None, T1),
    ]


def test_store_books_when_earlier_days_exist_leaves_their_rows_untouched(database: Database) -> None:
    acc = make_account(database)
    old_day = T0 - timedelta(days=3)
    with database.session() as s:
        old_book = order_book(
            {**ORDER, "timestamp": "22-Nov-2026 10:00:00"},
            {**ORDER, "orderid": "901", "order_status": "open", "filled_quantity": 0,
             "timestamp": "22-Nov-2026 10:01:00"},
        )  # fmt: skip
        book_mirror.store_orders(s, acc, old_book, fetched_at=old_day)
        book_mirror.store_trades(
            s, acc, trade_book({**FILL, "timestamp": "2026-11-22 10:00:00"}), fetched_at=old_day
        )
    today = {**ORDER, "orderid": "950", "timestamp": "25-Nov-2026 10:29:00"}
    with database.session() as s:
        orders = book_mirror.store_orders(s, acc, order_book(today), fetched_at=T0)
        trades = book_mirror.store_trades(
            s, acc, trade_book({**FILL, "orderid": "950", "timestamp": "2026-11-25 10:29:00"}), fetched_at=T0
        )
    assert (orders.inserted, orders.updated, orders.removed) == (1, 0, 1)
    assert (trades.inserted, trades.updated) == (1, 0)
    with database.session() as s:
        by_id = {o.order_id: o for o in s.scalars(select(Order))}
        old_trade = s.scalars(select(Trade).where(Trade.order_id == "900")).one()
    assert (by_id["900"].status, by_id["900"].updated_at) == ("complete", old_day)
    # A working order from an earlier day that the book no longer lists is no longer known to work.
    assert (by_id["901"].status, by_id["901"].updated_at) == ("unknown", T0)
    assert old_trade.updated_at == old_day and old_trade.quantity == 65


def test_store_books_when_read_after_midnight_lists_yesterdays_rows_updates_them_in_place(
    database: Database,
) -> None:
    acc = make_account(database)
    evening = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)  # 14:30 IST
    after_midnight = datetime(2026, 11, 25, 18, 40, tzinfo=UTC)  # 00:10 IST on the 26th
    order = {**ORDER, "timestamp": "25-Nov-2026 14:29:00"}
    fill = {**FILL, "timestamp": "2026-11-25 14:29:00"}
    with database.session() as s:
        book_mirror.store_orders(s, acc, order_book(order), fetched_at=evening)
        book_mirror.store_trades(s, acc, trade_book(fill), fetched_at=evening)
    with database.session() as s:
        orders = book_mirror.store_orders(s, acc, order_book(order), fetched_at=after_midnight)
        trades = book_mirror.store_trades(s, acc, trade_book(fill), fetched_at=after_midnight)
    assert (orders.inserted, orders.updated, trades.inserted, trades.updated) == (0, 1, 0, 1)
    with database.session() as s:
        assert s.scalars(select(Order)).one().updated_at == after_midnight
        assert s.scalars(select(Trade)).one().updated_at == after_midnight


def test_store_orders_when_a_stale_book_says_open_after_complete_keeps_complete(database: Database) -> None:
    acc = make_account(database)
    working = {"orderid": "9", "symbol": "NIFTY01DEC2626000CE", "exchange": "NFO", "action": "BUY",
               "quantity": "65", "price": "10", "pricetype": "LIMIT", "product": "NRML",
               "order_status": "open", "filled_quantity": "0",
               "timestamp": "25-Nov-2026 10:31:00"}  # fmt: skip
    filled = {**working, "order_status": "complete", "filled_quantity": "65", "average_price": "9.9875"}
    with database.session() as s:
        book_mirror.store_orders(
            s,
            acc,
            wire.Orderbook.parse({"status": "success", "data": {"orders": [filled]}}).orders,
            fetched_at=T0,
        )
    with database.session() as s:
        # A read that left the broker before the fill, answered after it was stored.
        counts = book_mirror.store_orders(
            s,
            acc,
            wire.Orderbook.parse({"status": "success", "data": {"orders": [working]}}).orders,
            fetched_at=T1,
        )
    with database.session() as s:
        order = s.scalars(select(Order)).one()
    assert counts.skipped == 1
    assert (order.status, order.filled_quantity, order.average_price) == ("complete", 65, Decimal("9.9875"))
