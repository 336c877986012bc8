"""What the database itself enforces, on SQLite and PostgreSQL: cascades, uniques, checks, the partial
unique indexes, exact money, aware UTC timestamps, updated_at, and the per-user defaults."""

from __future__ import annotations

import datetime as dt
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session

from algomirror.db.defaults import seed_user_defaults
from algomirror.db.models import (
    AccountFunds,
    ActivityLog,
    Base,
    EngineCommand,
    FailoverEvent,
    Holding,
    MarginRequirement,
    MarginTracker,
    MarketHoliday,
    Order,
    OrderIntent,
    Position,
    RiskEvent,
    Strategy,
    StrategyExecution,
    StrategyLeg,
    StrategyRun,
    Trade,
    TradeQuality,
    TradingAccount,
    TradingSetting,
    User,
    WebSocketConnection,
    WebSocketSession,
    make_trade_key,
)
from algomirror.domain.timeutil import IST

T0 = datetime(2026, 1, 5, 4, 0, tzinfo=UTC)


# --- small factories ---------------------------------------------------------------------------------


def make_user(session: Session, name: str = "alice") -> User:
    user = User(username=name, email=f"{name}@example.com", password_hash="x" * 20)
    session.add(user)
    session.flush()
    return user


def make_account(
    session: Session, user: User, name: str = "acct-1", *, primary: bool = False
) -> TradingAccount:
    account = TradingAccount(user_id=user.id, account_name=name, broker="sandbox", is_primary=primary)
    session.add(account)
    session.flush()
    return account


def make_order(account: TradingAccount, order_id: str = "25112201234567", **kw: Any) -> Order:
    values: dict[str, Any] = {
        "account_id": account.id,
        "order_id": order_id,
        "symbol": "NIFTY30DEC2526000CE",
        "exchange": "NFO",
        "action": "BUY",
        "quantity": 65,
        "order_type": "MARKET",
        "product": "MIS",
        "status": "complete",
        "average_price": Decimal("112.45"),
        "placed_at": T0,
    }
    values.update(kw)
    return Order(**values)


def make_strategy_tree(session: Session, user: User, account: TradingAccount) -> StrategyExecution:
    strategy = Strategy(user_id=user.id, name="Iron fly")
    strategy.legs.append(
        StrategyLeg(
            leg_number=1,
            instrument="NIFTY",
            product_type="options",
            expiry="current_week",
            action="SELL",
            option_type="CE",
            strike_selection="ATM",
            order_type="MARKET",
        )
    )
    session.add(strategy)
    session.flush()
    run = StrategyRun(strategy_id=strategy.id, spot={"NIFTY": "24025.00"}, atm={"NIFTY": "24050"})
    session.add(run)
    session.flush()
    execution = StrategyExecution(
        strategy_id=strategy.id,
        account_id=account.id,
        leg_id=strategy.legs[0].id,
        run_id=run.id,
        symbol="NIFTY30DEC2524050CE",
        exchange="NFO",
        product="MIS",
        status="active",
        planned_quantity=65,
        filled_quantity=65,
        entry_price=Decimal("120.50"),
    )
    session.add(execution)
    session.flush()
    session.add_all(
        [
            OrderIntent(
                key=f"exec:{execution.id}:entry:1",
                execution_id=execution.id,
                account_id=account.id,
                symbol=execution.symbol,
                exchange="NFO",
                product="MIS",
                side="SELL",
                quantity=65,
            ),
            RiskEvent(
                strategy_execution_id=execution.id,
                run_id=run.id,
                event_type="max_loss",
                action_taken="exit_initiated",
                trigger_value=Decimal("-5000.00"),
                threshold_value=Decimal("5000.00"),
            ),
        ]
    )
    session.flush()
    return execution


def count(session: Session, model: type[Base]) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


def expect_integrity_error(session: Session, *objects: Base) -> None:
    """Adding ``objects`` must be refused by the database; the session stays usable afterwards."""
    with pytest.raises(IntegrityError), session.begin_nested():
        session.add_all(objects)
        session.flush()


# --- cascades --------------------------------------------------------------------------------------


def test_delete_user_when_it_owns_everything_removes_owned_rows(session: Session) -> None:
    user = make_user(session)
    account = make_account(session, user, primary=True)
    session.add_all(
        [
            make_order(account),
            Position(
                account_id=account.id,
                symbol="NIFTY30DEC2526000CE",
                exchange="NFO",
                product="MIS",
                quantity=-65,
                average_price=Decimal("118.20"),
            ),
            Holding(
                account_id=account.id,
                symbol="RELIANCE",
                exchange="NSE",
                quantity=10,
                average_price=Decimal(1),
            ),
            Trade(
                account_id=account.id,
                order_id="1",
                trade_key="#1",
                symbol="X",
                exchange="NSE",
                action="BUY",
                quantity=1,
            ),
            AccountFunds(account_id=account.id, available_cash=Decimal("320150.66"), fetched_at=T0),
            MarginTracker(account_id=account.id),
            WebSocketConnection(account_id=account.id, connection_id="c1"),
            WebSocketSession(session_id="s1", user_id=user.id, account_id=account.id),
            EngineCommand(user_id=user.id, kind="execute_strategy", token="tok-1"),
        ]
    )
    strategy = Strategy(user_id=user.id, name="Never traded")
    strategy.legs.append(StrategyLeg(leg_number=1, instrument="NIFTY", action="SELL", option_type="CE"))
    session.add(strategy)
    seed_user_defaults(session, user)
    session.commit()

    session.execute(delete(User).where(User.id == user.id))
    session.commit()
    session.expunge_all()

    for model in (
        TradingAccount,
        Order,
        Position,
        Holding,
        Trade,
        AccountFunds,
        MarginTracker,
        WebSocketConnection,
        WebSocketSession,
        EngineCommand,
        Strategy,
        StrategyLeg,
        StrategyRun,
        StrategyExecution,
        OrderIntent,
        RiskEvent,
        MarginRequirement,
        TradeQuality,
        TradingSetting,
    ):
        assert count(session, model) == 0, model.__tablename__


def test_delete_user_when_activity_logged_keeps_rows_with_null_user(session: Session) -> None:
    user = make_user(session)
    account = make_account(session, user)
    session.add(ActivityLog(user_id=user.id, account_id=account.id, action="login", ip_address="127.0.0.1"))
    session.commit()

    session.execute(delete(User).where(User.id == user.id))
    session.commit()
    session.expunge_all()

    log = session.scalars(select(ActivityLog)).one()
    assert (log.user_id, log.account_id, log.action) == (None, None, "login")


def test_delete_account_when_referenced_by_feed_rows_sets_them_null(session: Session) -> None:
    user = make_user(session)
    a = make_account(session, user, "acct-a", primary=True)
    b = make_account(session, user, "acct-b")
    session.add_all(
        [
            FailoverEvent(from_account_id=a.id, to_account_id=b.id, reason="silent feed"),
            WebSocketSession(session_id="s1", user_id=user.id, account_id=a.id),
        ]
    )
    session.commit()

    session.execute(delete(TradingAccount).where(TradingAccount.id == a.id))
    session.commit()
    session.expunge_all()

    event = session.scalars(select(FailoverEvent)).one()
    assert (event.from_account_id, event.to_account_id) == (None, b.id)
    assert session.scalars(select(WebSocketSession.account_id)).one() is None


def _journal_counts(session: Session) -> dict[str, int]:
    return {
        m.__tablename__: count(session, m)
        for m in (
            StrategyRun,
            StrategyExecution,
            OrderIntent,
            RiskEvent,
            StrategyLeg,
            Strategy,
            TradingAccount,
        )
    }


@pytest.mark.parametrize("target", ["user", "account", "strategy", "leg", "run", "execution"])
def test_delete_parent_when_journal_rows_exist_is_refused_by_the_database(
    session: Session, target: str
) -> None:
    user = make_user(session)
    account = make_account(session, user)
    execution = make_strategy_tree(session, user, account)
    session.commit()
    before = _journal_counts(session)
    statement = {
        "user": delete(User).where(User.id == user.id),
        "account": delete(TradingAccount).where(TradingAccount.id == account.id),
        "strategy": delete(Strategy).where(Strategy.id == execution.strategy_id),
        "leg": delete(StrategyLeg).where(StrategyLeg.id == execution.leg_id),
        "run": delete(StrategyRun).where(StrategyRun.id == execution.run_id),
        "execution": delete(StrategyExecution).where(StrategyExecution.id == execution.id),
    }[target]

    with pytest.raises(IntegrityError):
        session.execute(statement)
    session.rollback()
    session.expunge_all()

    assert _journal_counts(session) == before
    assert all(n >= 1 for n in before.values())


def test_insert_execution_when_same_run_leg_and_account_is_refused(session: Session) -> None:
    user = make_user(session)
    account = make_account(session, user)
    first = make_strategy_tree(session, user, account)
    session.commit()
    twin = StrategyExecution(
        strategy_id=first.strategy_id, account_id=account.id, leg_id=first.leg_id, run_id=first.run_id
    )

    expect_integrity_error(session, twin)
    assert count(session, StrategyExecution) == 1


def test_insert_execution_when_run_missing_is_refused(session: Session) -> None:
    user = make_user(session)
    account = make_account(session, user)
    first = make_strategy_tree(session, user, account)
    session.commit()
    orphan = StrategyExecution(strategy_id=first.strategy_id, account_id=account.id, leg_id=first.leg_id)

    expect_integrity_error(session, orphan)


def test_insert_intent_when_broker_order_already_adopted_is_refused(session: Session) -> None:
    user = make_user(session)
    account = make_account(session, user)
    execution = make_strategy_tree(session, user, account)
    session.commit()

    def slice_intent(n: int, order_id: str | None) -> OrderIntent:
        return OrderIntent(
            key=f"exec:{execution.id}:entry:{n}",
            execution_id=execution.id,
            account_id=account.id,
            symbol="NIFTY30DEC2524050CE",
            exchange="NFO",
            product="MIS",
            side="SELL",
            quantity=65,
            order_id=order_id,
        )

    # Slices whose order is not known yet may coexist; two slices can never own one broker order.
    session.add_all([slice_intent(2, None), slice_intent(3, None), slice_intent(4, "2501")])
    session.flush()
    expect_integrity_error(session, slice_intent(5, "2501"))


# --- unique keys (upsert targets) ----------------------------------------------------------------------


def test_insert_order_when_same_account_and_order_id_is_refused(session: Session) -> None:
    user = make_user(session)
    account = make_account(session, user)
    other = make_account(session, user, "acct-2")
    session.add_all([make_order(account), make_order(other)])
    session.flush()

    expect_integrity_error(session, make_order(account, status="open"))
    assert count(session, Order) == 2


def test_insert_position_when_same_symbol_exchange_product_is_refused(session: Session) -> None:
    user = make_user(session)
    account = make_account(session, user)

    def position(exchange: str, product: str) -> Position:
        return Position(
            account_id=account.id,
            symbol="RELIANCE",
            exchange=exchange,
            product=product,
            quantity=1,
            average_price=Decimal("2500.00"),
        )

    session.add_all([position("NSE", "MIS"), position("BSE", "MIS"), position("NSE", "CNC")])
    session.flush()
    expect_integrity_error(session, position("NSE", "MIS"))


def test_insert_trade_when_same_order_and_trade_key_is_refused(session: Session) -> None:
    user = make_user(session)
    account = make_account(session, user)

    def trade(key: str) -> Trade:
        return Trade(
            account_id=account.id,
            order_id="25112201234567",
            trade_key=key,
            symbol="NIFTY30DEC2526000CE",
            exchange="NFO",
            action="BUY",
            quantity=65,
        )

    session.add_all([trade("#1"), trade("#2")])
    session.flush()
    expect_integrity_error(session, trade("#1"))


def test_insert_holding_when_same_symbol_is_refused(session: Session) -> None:
    user = make_user(session)
    account = make_account(session, user)

    def holding() -> Holding:
        return Holding(
            account_id=account.id, symbol="TCS", exchange="NSE", quantity=1, average_price=Decimal(1)
        )

    session.add(holding())
    session.flush()
    expect_integrity_error(session, holding())


def test_insert_per_user_rows_when_key_repeats_is_refused(session: Session) -> None:
    user = make_user(session)
    account = make_account(session, user)
    seed_user_defaults(session, user)
    session.add(Strategy(user_id=user.id, name="Straddle"))
    session.add(AccountFunds(account_id=account.id, fetched_at=T0))
    session.add(EngineCommand(user_id=user.id, kind="exit_strategy", token="tok-9"))
    session.flush()

    expect_integrity_error(session, Strategy(user_id=user.id, name="Straddle"))
    expect_integrity_error(session, MarginRequirement(user_id=user.id, instrument="NIFTY"))
    expect_integrity_error(
        session, TradeQuality(user_id=user.id, quality_grade="A", margin_percentage=Decimal(50))
    )
    expect_integrity_error(session, TradingSetting(user_id=user.id, symbol="SENSEX"))
    expect_integrity_error(session, AccountFunds(account_id=account.id, fetched_at=T0))
    expect_integrity_error(
        session, MarginTracker(account_id=account.id), MarginTracker(account_id=account.id)
    )
    expect_integrity_error(session, EngineCommand(user_id=user.id, kind="exit_strategy", token="tok-9"))
    # Another user may reuse the strategy name.
    other = make_user(session, "bob")
    session.add(Strategy(user_id=other.id, name="Straddle"))
    session.flush()


def test_insert_intent_when_key_exists_is_refused(session: Session) -> None:
    user = make_user(session)
    account = make_account(session, user)
    execution = make_strategy_tree(session, user, account)

    duplicate = OrderIntent(
        key=f"exec:{execution.id}:entry:1",
        account_id=account.id,
        symbol="X",
        exchange="NFO",
        product="MIS",
        side="SELL",
        quantity=65,
    )
    expect_integrity_error(session, duplicate)


def test_insert_holiday_when_date_and_market_exist_is_refused_but_other_market_allowed(
    session: Session,
) -> None:
    expect_integrity_error(session, MarketHoliday(date=dt.date(2025, 2, 26), market="NSE", name="again"))
    with session.begin_nested() as nested:
        session.add(MarketHoliday(date=dt.date(2025, 2, 26), market="MCX", name="Mahashivratri"))
        session.flush()
        nested.rollback()  # reference data is shared between PostgreSQL tests


# --- primary account and open run ---------------------------------------------------------------------


def test_set_second_primary_when_user_has_one_is_refused(session: Session) -> None:
    alice = make_user(session)
    bob = make_user(session, "bob")
    make_account(session, alice, "acct-a", primary=True)
    make_account(session, alice, "acct-b")
    make_account(session, alice, "acct-c")
    make_account(session, bob, "acct-a", primary=True)

    expect_integrity_error(
        session, TradingAccount(user_id=alice.id, account_name="acct-d", broker="sandbox", is_primary=True)
    )


def test_start_run_when_strategy_has_open_run_is_refused(session: Session) -> None:
    user = make_user(session)
    account = make_account(session, user)
    execution = make_strategy_tree(session, user, account)
    sid = execution.strategy_id

    expect_integrity_error(session, StrategyRun(strategy_id=sid))

    session.execute(
        update(StrategyRun).where(StrategyRun.strategy_id == sid).values(ended_at=T0, status="closed")
    )
    session.add(StrategyRun(strategy_id=sid))
    session.flush()
    assert count(session, StrategyRun) == 2


# --- check constraints -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("status", "PENDING"),
        ("status", "trigger pending"),
        ("action", "buy"),
        ("product", "BO"),
        ("order_type", "SL-LMT"),
    ],
)
def test_insert_order_when_enum_value_not_allowed_is_refused(
    session: Session, field: str, value: str
) -> None:
    user = make_user(session)
    account = make_account(session, user)
    expect_integrity_error(session, make_order(account, **{field: value}))


def test_insert_strategy_rows_when_values_out_of_range_are_refused(session: Session) -> None:
    user = make_user(session)
    account = make_account(session, user)
    execution = make_strategy_tree(session, user, account)
    sid = execution.strategy_id

    expect_integrity_error(session, Strategy(user_id=user.id, name="s1", risk_profile="grade_"))
    expect_integrity_error(session, Strategy(user_id=user.id, name="s2", risk_scope="global"))
    expect_integrity_error(session, Strategy(user_id=user.id, name="s3", max_loss=Decimal(0)))
    expect_integrity_error(session, Strategy(user_id=user.id, name="s4", supertrend_timeframe="1h"))
    expect_integrity_error(session, StrategyLeg(strategy_id=sid, leg_number=2, lots=0))
    expect_integrity_error(session, StrategyLeg(strategy_id=sid, leg_number=2, expiry="weekly"))
    expect_integrity_error(session, StrategyLeg(strategy_id=sid, leg_number=2, option_type="CALL"))
    expect_integrity_error(
        session,
        StrategyExecution(strategy_id=sid, account_id=account.id, leg_id=execution.leg_id, status="stopped"),
    )
    expect_integrity_error(
        session, RiskEvent(strategy_execution_id=execution.id, event_type="max_loss", action_taken="panic")
    )
    expect_integrity_error(
        session, TradeQuality(user_id=user.id, quality_grade="Z", margin_percentage=Decimal(101))
    )
    expect_integrity_error(
        session, TradingSetting(user_id=user.id, symbol="FINNIFTY", lot_size=65, freeze_quantity=10)
    )
    expect_integrity_error(session, EngineCommand(user_id=user.id, kind="x", token="t", status="queued"))

    # Accepted values of the same columns.
    session.add_all(
        [
            Strategy(user_id=user.id, name="ok-1", risk_profile="grade_B", risk_scope="per_account"),
            Strategy(user_id=user.id, name="ok-2", risk_profile="balanced", on_leg_failure="keep"),
            StrategyLeg(strategy_id=sid, leg_number=2, expiry="next_month", order_type="SL-MKT"),
        ]
    )
    session.flush()


# --- types -------------------------------------------------------------------------------------------


def test_money_when_round_tripped_is_exact_decimal(session: Session) -> None:
    user = make_user(session)
    account = make_account(session, user)
    session.add(
        AccountFunds(
            account_id=account.id,
            available_cash=Decimal("12345678.05"),
            collateral=Decimal("-0.01"),
            m2m_realized=Decimal("999999999999.99"),
            fetched_at=T0,
        )
    )
    session.add(
        Position(
            account_id=account.id,
            symbol="X",
            exchange="NFO",
            product="NRML",
            quantity=-65,
            average_price=Decimal("0.05"),
            pnl_percent=Decimal("1234.56"),
        )
    )
    session.commit()
    session.expunge_all()

    funds = session.scalars(select(AccountFunds)).one()
    assert funds.available_cash == Decimal("12345678.05")
    assert str(funds.available_cash) == "12345678.05"
    assert funds.collateral == Decimal("-0.01")
    assert funds.m2m_realized == Decimal("999999999999.99")
    assert funds.m2m_unrealized is None  # unknown stays unknown, never 0
    position = session.scalars(select(Position)).one()
    assert (position.average_price, position.pnl_percent) == (Decimal("0.05"), Decimal("1234.56"))


def test_money_when_float_given_is_refused(session: Session) -> None:
    user = make_user(session)
    account = make_account(session, user)
    session.add(AccountFunds(account_id=account.id, available_cash=0.1, fetched_at=T0))  # type: ignore[arg-type]
    with pytest.raises(StatementError, match="float"):
        session.flush()
    session.rollback()


def test_datetime_when_read_back_is_aware_utc(session: Session) -> None:
    user = make_user(session)
    account = make_account(session, user)
    placed_ist = datetime(2026, 1, 5, 10, 2, 11, tzinfo=IST)
    session.add(make_order(account, placed_at=placed_ist))
    session.commit()
    session.expunge_all()

    order = session.scalars(select(Order)).one()
    assert order.placed_at == datetime(2026, 1, 5, 4, 32, 11, tzinfo=UTC)
    assert order.placed_at.tzinfo == UTC
    assert order.created_at.tzinfo == UTC
    # Comparisons in SQL see the same instant.
    assert session.scalar(select(func.count()).select_from(Order).where(Order.placed_at < placed_ist)) == 0


def test_datetime_when_naive_given_is_refused(session: Session) -> None:
    user = make_user(session)
    account = make_account(session, user)
    session.add(make_order(account, placed_at=datetime(2026, 1, 5, 10, 2)))
    with pytest.raises(StatementError, match="naive"):
        session.flush()
    session.rollback()


def test_update_row_when_changed_refreshes_updated_at(session: Session) -> None:
    user = make_user(session)
    account = make_account(session, user)
    old = datetime(2020, 1, 1, tzinfo=UTC)
    order = make_order(account, status="open", created_at=old, updated_at=old)
    session.add(order)
    session.commit()

    order.status = "complete"
    session.commit()
    session.expunge_all()

    stored = session.scalars(select(Order)).one()
    assert stored.created_at == old
    assert stored.updated_at > old


def test_time_columns_when_read_are_wall_clock_times(session: Session) -> None:
    user = make_user(session)
    strategy = Strategy(
        user_id=user.id, name="timed", entry_time=dt.time(9, 20), square_off_time=dt.time(15, 15)
    )
    session.add(strategy)
    session.commit()
    session.expunge_all()

    stored = session.scalars(select(Strategy)).one()
    assert (stored.entry_time, stored.square_off_time, stored.exit_time) == (
        dt.time(9, 20),
        dt.time(15, 15),
        None,
    )
    assert stored.supertrend_multiplier == Decimal("3.00")
    assert (stored.supertrend_period, stored.supertrend_timeframe) == (7, "5m")
    assert (stored.product_order_type, stored.allocation_type, stored.risk_scope) == (
        "MIS",
        "equal",
        "aggregate",
    )
    assert (stored.trailing_sl_type, stored.on_leg_failure, stored.risk_profile) == (
        "percentage",
        "unwind",
        "fixed_lots",
    )


# --- per-user defaults ---------------------------------------------------------------------------------


def test_seed_user_defaults_when_new_user_creates_product_values(session: Session) -> None:
    user = make_user(session)

    counts = seed_user_defaults(session, user)
    session.commit()

    assert (counts.margin_requirements, counts.trade_qualities, counts.trading_settings) == (3, 3, 3)
    margins = {m.instrument: m for m in session.scalars(select(MarginRequirement))}
    assert set(margins) == {"NIFTY", "BANKNIFTY", "SENSEX"}
    nifty, sensex = margins["NIFTY"], margins["SENSEX"]
    assert (nifty.ce_pe_sell_expiry, nifty.ce_pe_sell_non_expiry) == (Decimal(205000), Decimal(250000))
    assert (nifty.ce_and_pe_sell_expiry, nifty.ce_and_pe_sell_non_expiry) == (
        Decimal(250000),
        Decimal(320000),
    )
    assert (sensex.ce_pe_sell_expiry, sensex.ce_and_pe_sell_non_expiry) == (Decimal(180000), Decimal(290000))
    assert (sensex.futures_expiry, sensex.futures_non_expiry) == (Decimal(185000), Decimal(185000))
    assert {m.buying_premium_per_lot for m in margins.values()} == {Decimal("20000.00")}

    grades = {
        g.quality_grade: (g.margin_percentage, g.risk_level, g.source, g.is_system)
        for g in session.scalars(select(TradeQuality))
    }
    assert grades == {
        "A": (Decimal("95.00"), "aggressive", "available", True),
        "B": (Decimal("65.00"), "moderate", "available", True),
        "C": (Decimal("36.00"), "conservative", "available", True),
    }

    settings = {
        s.symbol: (s.lot_size, s.next_month_lot_size, s.freeze_quantity, s.max_lots_per_order)
        for s in session.scalars(select(TradingSetting))
    }
    assert settings == {
        "NIFTY": (65, 65, 1800, 27),
        "BANKNIFTY": (30, 30, 600, 20),
        "SENSEX": (20, 20, 1000, 50),
    }


def test_seed_user_defaults_when_called_again_adds_nothing_and_keeps_edits(session: Session) -> None:
    user = make_user(session)
    seed_user_defaults(session, user)
    session.commit()
    session.execute(
        update(TradingSetting)
        .where(TradingSetting.symbol == "NIFTY")
        .values(lot_size=75, max_lots_per_order=24)
    )
    session.execute(delete(TradeQuality).where(TradeQuality.quality_grade == "C"))
    session.commit()

    counts = seed_user_defaults(session, user)
    session.commit()

    assert (counts.margin_requirements, counts.trade_qualities, counts.trading_settings) == (0, 1, 0)
    assert count(session, MarginRequirement) == 3
    assert count(session, TradeQuality) == 3
    nifty = session.scalars(select(TradingSetting).where(TradingSetting.symbol == "NIFTY")).one()
    assert (nifty.lot_size, nifty.max_lots_per_order) == (75, 24)


def _upsert(session: Session, model: type[Base], keys: list[str], rows: list[dict[str, Any]]) -> None:
    """The sync recipe from docs/data-model.md: INSERT … ON CONFLICT (natural key) DO UPDATE."""
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = session.get_bind().dialect.name
    builder = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = builder(model).values(rows)
    updates = {c: stmt.excluded[c] for c in rows[0] if c not in keys}
    session.execute(stmt.on_conflict_do_update(index_elements=keys, set_=updates))


def test_upsert_books_when_same_rows_read_twice_updates_instead_of_duplicating(session: Session) -> None:
    user = make_user(session)
    account = make_account(session, user)
    session.commit()
    later = T0 + dt.timedelta(seconds=5)

    for fetched, qty, status in ((T0, -65, "open"), (later, -130, "complete")):
        _upsert(
            session,
            Position,
            ["account_id", "symbol", "exchange", "product"],
            [
                {
                    "account_id": account.id,
                    "symbol": "NIFTY30DEC2526000CE",
                    "exchange": "NFO",
                    "product": "NRML",
                    "quantity": qty,
                    "average_price": Decimal("118.20"),
                    "updated_at": fetched,
                }
            ],
        )
        _upsert(
            session,
            Order,
            ["account_id", "order_id"],
            [{**_order_row(account), "status": status, "updated_at": fetched}],
        )
        _upsert(
            session,
            Trade,
            ["account_id", "order_id", "trade_key"],
            [
                {
                    "account_id": account.id,
                    "order_id": "1",
                    "trade_key": make_trade_key(None, n),
                    "symbol": "X",
                    "exchange": "NFO",
                    "action": "SELL",
                    "quantity": 65,
                    "updated_at": fetched,
                }
                for n in (1, 2)
            ],
        )
        session.commit()
    session.expunge_all()

    position = session.scalars(select(Position)).one()
    assert (position.quantity, position.updated_at) == (-130, later)
    order = session.scalars(select(Order)).one()
    assert (order.status, order.updated_at) == ("complete", later)
    assert count(session, Trade) == 2


def _order_row(account: TradingAccount) -> dict[str, Any]:
    order = make_order(account)
    return {
        c.key: getattr(order, c.key) for c in Order.__table__.columns if getattr(order, c.key) is not None
    }
