"""Strategies and everything a strategy produces: legs, runs, executions, order intents, risk events."""

from __future__ import annotations

from datetime import datetime, time
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    Time,
    UniqueConstraint,
    false,
    text,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship, validates

from algomirror.db.base import Base, CreatedAtMixin, TimestampMixin
from algomirror.db.models.enums import (
    ACTIONS,
    ALLOCATION_TYPES,
    EXECUTION_STATUSES,
    EXIT_REASONS,
    INSTRUMENT_PRODUCT_TYPES,
    INTENT_PURPOSES,
    INTENT_STATES,
    LEG_EXPIRIES,
    LEG_FAILURE_POLICIES,
    LEG_LEVEL_TYPES,
    LEG_ORDER_TYPES,
    LEG_TRAILING_TYPES,
    LEGACY_RISK_PROFILES,
    MARKET_CONDITIONS,
    OPTION_TYPES,
    ORDER_TYPES,
    PRICE_CONDITIONS,
    PRODUCTS,
    RISK_EVENT_ACTIONS,
    RISK_EVENT_TYPES,
    RISK_SCOPES,
    RUN_STATUSES,
    STRATEGY_PRODUCTS,
    STRIKE_SELECTIONS,
    SUPERTREND_EXIT_TYPES,
    SUPERTREND_TIMEFRAMES,
    TRAILING_SL_TYPES,
    in_check,
)
from algomirror.db.types import Money, Price, UTCDateTime, money_default
from algomirror.domain.order_state import check_transition
from algomirror.domain.timeutil import utcnow


class Strategy(TimestampMixin, Base):
    """A saved strategy configuration (PRODUCT §4.1). Times are IST wall-clock times."""

    __tablename__ = "strategies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    market_condition: Mapped[str] = mapped_column(
        String(50), default="any", server_default="any", nullable=False
    )
    # fixed_lots, grade_<X>, or a legacy name (aggressive -> A, balanced -> B, conservative -> C).
    risk_profile: Mapped[str] = mapped_column(
        String(50), default="fixed_lots", server_default="fixed_lots", nullable=False
    )
    is_active: Mapped[bool] = mapped_column(
        Boolean, default=True, server_default=true(), nullable=False, index=True
    )
    is_template: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false(), nullable=False)
    # Set instead of deleting a strategy that has runs: hidden from lists, its history kept.
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    entry_time: Mapped[time | None] = mapped_column(Time)
    exit_time: Mapped[time | None] = mapped_column(Time)
    square_off_time: Mapped[time | None] = mapped_column(Time)

    # Rupees; NULL = off.
    max_loss: Mapped[Decimal | None] = mapped_column(Money())
    max_profit: Mapped[Decimal | None] = mapped_column(Money())
    trailing_sl: Mapped[Decimal | None] = mapped_column(Money())
    risk_monitoring_enabled: Mapped[bool] = mapped_column(
        Boolean, default=True, server_default=true(), nullable=False
    )
    # Seconds between risk sweeps.
    risk_check_interval: Mapped[int] = mapped_column(Integer, default=1, server_default="1", nullable=False)
    auto_exit_on_max_loss: Mapped[bool] = mapped_column(
        Boolean, default=True, server_default=true(), nullable=False
    )
    auto_exit_on_max_profit: Mapped[bool] = mapped_column(
        Boolean, default=True, server_default=true(), nullable=False
    )
    trailing_sl_type: Mapped[str] = mapped_column(
        String(20), default="percentage", server_default="percentage", nullable=False
    )
    risk_scope: Mapped[str] = mapped_column(
        String(20), default="aggregate", server_default="aggregate", nullable=False
    )

    supertrend_exit_enabled: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false(), nullable=False
    )
    supertrend_exit_type: Mapped[str | None] = mapped_column(String(20))
    supertrend_period: Mapped[int] = mapped_column(Integer, default=7, server_default="7", nullable=False)
    supertrend_multiplier: Mapped[Decimal] = mapped_column(
        Money(5, 2), default=Decimal("3.00"), server_default=money_default("3.00"), nullable=False
    )
    supertrend_timeframe: Mapped[str] = mapped_column(
        String(10), default="5m", server_default="5m", nullable=False
    )
    # Seed column. The latch now lives on the run (strategy_runs.supertrend_triggered_at); kept for
    # display of the last run's state only.
    supertrend_exit_triggered: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false(), nullable=False
    )

    product_order_type: Mapped[str] = mapped_column(
        String(10), default="MIS", server_default="MIS", nullable=False
    )
    # [{"account_id": 3, "multiplier": "1.5"}, ...] (multiplier optional, as a string).
    selected_accounts: Mapped[list[Any] | None] = mapped_column(JSON)
    allocation_type: Mapped[str] = mapped_column(
        String(50), default="equal", server_default="equal", nullable=False
    )
    on_leg_failure: Mapped[str] = mapped_column(
        String(10), default="unwind", server_default="unwind", nullable=False
    )

    legs: Mapped[list[StrategyLeg]] = relationship(
        back_populates="strategy",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="StrategyLeg.leg_number",
    )

    __table_args__ = (
        # Names are unique among a user's live strategies; an archived one frees its name.
        Index(
            "uq_strategies_user_id_name",
            "user_id",
            "name",
            unique=True,
            postgresql_where=text("archived_at IS NULL"),
            sqlite_where=text("archived_at IS NULL"),
        ),
        in_check("market_condition", MARKET_CONDITIONS),
        CheckConstraint(
            "risk_profile = 'fixed_lots'"
            " OR (substr(risk_profile, 1, 6) = 'grade_' AND length(risk_profile) > 6)"
            f" OR risk_profile IN ({', '.join(repr(p) for p in LEGACY_RISK_PROFILES)})",
            name="risk_profile_values",
        ),
        in_check("trailing_sl_type", TRAILING_SL_TYPES),
        in_check("risk_scope", RISK_SCOPES),
        in_check("supertrend_exit_type", SUPERTREND_EXIT_TYPES),
        in_check("supertrend_timeframe", SUPERTREND_TIMEFRAMES),
        in_check("product_order_type", STRATEGY_PRODUCTS),
        in_check("allocation_type", ALLOCATION_TYPES),
        in_check("on_leg_failure", LEG_FAILURE_POLICIES),
        CheckConstraint("max_loss > 0", name="max_loss_positive"),
        CheckConstraint("max_profit > 0", name="max_profit_positive"),
        CheckConstraint("trailing_sl > 0", name="trailing_sl_positive"),
        CheckConstraint("risk_check_interval >= 1", name="risk_check_interval_positive"),
        CheckConstraint("supertrend_period >= 1", name="supertrend_period_positive"),
        CheckConstraint("supertrend_multiplier > 0", name="supertrend_multiplier_positive"),
        CheckConstraint("length(name) >= 1", name="name_not_empty"),
    )


class StrategyLeg(TimestampMixin, Base):
    """One leg of a strategy (PRODUCT §4.2). Prices in rupees; ``quantity`` = lots × lot size (derived)."""

    __tablename__ = "strategy_legs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    strategy_id: Mapped[int] = mapped_column(
        ForeignKey("strategies.id", ondelete="CASCADE"), nullable=False, index=True
    )
    leg_number: Mapped[int] = mapped_column(Integer, nullable=False)

    instrument: Mapped[str | None] = mapped_column(String(50))
    product_type: Mapped[str | None] = mapped_column(String(20))
    expiry: Mapped[str | None] = mapped_column(String(50))
    action: Mapped[str | None] = mapped_column(String(10))

    option_type: Mapped[str | None] = mapped_column(String(10))
    strike_selection: Mapped[str | None] = mapped_column(String(50))
    strike_offset: Mapped[int] = mapped_column(Integer, default=0, server_default="0", nullable=False)
    strike_price: Mapped[Decimal | None] = mapped_column(Money())
    premium_value: Mapped[Decimal | None] = mapped_column(Price())

    order_type: Mapped[str | None] = mapped_column(String(20))
    limit_price: Mapped[Decimal | None] = mapped_column(Price())
    trigger_price: Mapped[Decimal | None] = mapped_column(Price())
    price_condition: Mapped[str | None] = mapped_column(String(10))
    quantity: Mapped[int | None] = mapped_column(Integer)
    lots: Mapped[int] = mapped_column(Integer, default=1, server_default="1", nullable=False)

    stop_loss_type: Mapped[str | None] = mapped_column(String(20))
    stop_loss_value: Mapped[Decimal | None] = mapped_column(Money())
    take_profit_type: Mapped[str | None] = mapped_column(String(20))
    take_profit_value: Mapped[Decimal | None] = mapped_column(Money())
    enable_trailing: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false(), nullable=False
    )
    trailing_type: Mapped[str | None] = mapped_column(String(20))
    trailing_value: Mapped[Decimal | None] = mapped_column(Money())

    # Set while the leg has executions in the open run (PRODUCT §5.1).
    is_executed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false(), nullable=False)

    strategy: Mapped[Strategy] = relationship(back_populates="legs")

    __table_args__ = (
        in_check("product_type", INSTRUMENT_PRODUCT_TYPES),
        in_check("expiry", LEG_EXPIRIES),
        in_check("action", ACTIONS),
        in_check("option_type", OPTION_TYPES),
        in_check("strike_selection", STRIKE_SELECTIONS),
        in_check("order_type", LEG_ORDER_TYPES),
        in_check("price_condition", PRICE_CONDITIONS),
        in_check("stop_loss_type", LEG_LEVEL_TYPES),
        in_check("take_profit_type", LEG_LEVEL_TYPES),
        in_check("trailing_type", LEG_TRAILING_TYPES),
        CheckConstraint("leg_number >= 1", name="leg_number_positive"),
        CheckConstraint("lots >= 1", name="lots_positive"),
        CheckConstraint("strike_offset >= 0", name="strike_offset_non_negative"),
        CheckConstraint("quantity >= 1", name="quantity_positive"),
    )


class StrategyRun(Base):
    """One run of a strategy: first entry order until flat (PRODUCT glossary, §5.10). Risk state lives here.

    At most one open run (``ended_at IS NULL``) per strategy, enforced by a partial unique index.
    ``spot``/``atm`` map instrument → price string, e.g. ``{"NIFTY": "24025.00"}``. Latches record the
    first time a rule fired in this run and the P&L (₹) at that moment.
    """

    __tablename__ = "strategy_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # History: a strategy with runs is archived, never deleted (RESTRICT).
    strategy_id: Mapped[int] = mapped_column(
        ForeignKey("strategies.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    status: Mapped[str] = mapped_column(
        String(20), default="entering", server_default="entering", nullable=False
    )
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    spot: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    atm: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # E of the AFL trailing stop (§6.4): |Σ BUY entry×qty − Σ SELL entry×qty|, fixed at entry completion.
    base_premium: Mapped[Decimal | None] = mapped_column(Price())
    entry_completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Trailing state: I (initial stop, ≤ 0), peak P&L P, current stop level I + P.
    trailing_initial_stop: Mapped[Decimal | None] = mapped_column(Money())
    peak_pnl: Mapped[Decimal | None] = mapped_column(Money())
    trailing_stop_level: Mapped[Decimal | None] = mapped_column(Money())

    max_loss_triggered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    max_loss_value: Mapped[Decimal | None] = mapped_column(Money())
    max_profit_triggered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    max_profit_value: Mapped[Decimal | None] = mapped_column(Money())
    trailing_triggered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    trailing_value: Mapped[Decimal | None] = mapped_column(Money())
    supertrend_triggered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    supertrend_value: Mapped[Decimal | None] = mapped_column(Money())

    final_pnl: Mapped[Decimal | None] = mapped_column(Money())
    exit_reason: Mapped[str | None] = mapped_column(String(50))
    exit_reason_detail: Mapped[str | None] = mapped_column(Text)
    # Execute result (§5.1): outcome, counts, skipped accounts with reasons, warnings.
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    executions: Mapped[list[StrategyExecution]] = relationship(back_populates="run", passive_deletes=True)

    __table_args__ = (
        in_check("status", RUN_STATUSES),
        in_check("exit_reason", EXIT_REASONS),
        Index(
            "uq_strategy_runs_one_open",
            "strategy_id",
            unique=True,
            postgresql_where=text("ended_at IS NULL"),
            sqlite_where=text("ended_at IS NULL"),
        ),
    )


class StrategyExecution(TimestampMixin, Base):
    """One leg × one account × one run (PRODUCT §5.10). Every seed column plus the run-era fields.

    ``entry_price``/``exit_price`` are the weighted averages of the entry/exit fills (never LTP);
    ``quantity`` is the filled (open) quantity once active.
    """

    __tablename__ = "strategy_executions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Executions are the journal's parents: no delete of a strategy, account, leg or run removes them.
    strategy_id: Mapped[int] = mapped_column(
        ForeignKey("strategies.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    account_id: Mapped[int] = mapped_column(
        ForeignKey("trading_accounts.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    leg_id: Mapped[int] = mapped_column(
        ForeignKey("strategy_legs.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    run_id: Mapped[int] = mapped_column(
        ForeignKey("strategy_runs.id", ondelete="RESTRICT"), nullable=False, index=True
    )

    order_id: Mapped[str | None] = mapped_column(String(100))
    exit_order_id: Mapped[str | None] = mapped_column(String(100))
    # Every child order id of the entry / exit (freeze slices, retries), in placement order.
    entry_order_ids: Mapped[list[str] | None] = mapped_column(JSON)
    exit_order_ids: Mapped[list[str] | None] = mapped_column(JSON)
    symbol: Mapped[str | None] = mapped_column(String(100))
    exchange: Mapped[str | None] = mapped_column(String(20))
    product: Mapped[str | None] = mapped_column(String(10))
    underlying_symbol: Mapped[str | None] = mapped_column(String(50))
    entry_price: Mapped[Decimal | None] = mapped_column(Price())
    exit_price: Mapped[Decimal | None] = mapped_column(Price())
    quantity: Mapped[int | None] = mapped_column(Integer)
    total_quantity: Mapped[int | None] = mapped_column(Integer)
    planned_quantity: Mapped[int | None] = mapped_column(Integer)
    filled_quantity: Mapped[int] = mapped_column(Integer, default=0, server_default="0", nullable=False)
    exited_quantity: Mapped[int] = mapped_column(Integer, default=0, server_default="0", nullable=False)

    status: Mapped[str] = mapped_column(
        String(50), default="pending", server_default="pending", nullable=False
    )
    broker_order_status: Mapped[str | None] = mapped_column(String(50))
    entry_time: Mapped[datetime | None] = mapped_column(UTCDateTime())
    exit_time: Mapped[datetime | None] = mapped_column(UTCDateTime())
    exit_reason: Mapped[str | None] = mapped_column(String(100))
    exit_reason_detail: Mapped[str | None] = mapped_column(Text)

    realized_pnl: Mapped[Decimal | None] = mapped_column(Money())
    unrealized_pnl: Mapped[Decimal | None] = mapped_column(Money())
    brokerage: Mapped[Decimal | None] = mapped_column(Money())
    error_message: Mapped[str | None] = mapped_column(Text)
    # Entry placement attempts (all slices); exit attempts are exit_retry_count.
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0", nullable=False)

    risk_monitoring_enabled: Mapped[bool] = mapped_column(
        Boolean, default=True, server_default=true(), nullable=False
    )
    max_loss_amount: Mapped[Decimal | None] = mapped_column(Money())
    max_profit_amount: Mapped[Decimal | None] = mapped_column(Money())
    trailing_sl_amount: Mapped[Decimal | None] = mapped_column(Money())
    peak_pnl: Mapped[Decimal | None] = mapped_column(Money())
    exit_retry_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0", nullable=False)

    supertrend_exit_enabled: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false(), nullable=False
    )
    supertrend_exit_type: Mapped[str | None] = mapped_column(String(20))

    last_price: Mapped[Decimal | None] = mapped_column(Price())
    last_price_updated: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Where the mark came from: "ws" or "rest" (PRODUCT §7.1).
    last_price_source: Mapped[str | None] = mapped_column(String(10))
    websocket_subscribed: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false(), nullable=False
    )

    # Leg rule levels (§6.6) as computed from the entry average; trailing moves stop_loss_price.
    stop_loss_price: Mapped[Decimal | None] = mapped_column(Price())
    take_profit_price: Mapped[Decimal | None] = mapped_column(Price())
    trailing_best_price: Mapped[Decimal | None] = mapped_column(Price())
    sl_hit_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    sl_hit_price: Mapped[Decimal | None] = mapped_column(Price())
    tp_hit_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    tp_hit_price: Mapped[Decimal | None] = mapped_column(Price())

    run: Mapped[StrategyRun] = relationship(back_populates="executions")

    __table_args__ = (
        # Intent keys derive from the execution id: a second row for the same leg, account and run
        # would be a second real order.
        UniqueConstraint("run_id", "leg_id", "account_id", name="uq_strategy_executions_run_leg_account"),
        Index("idx_strategy_execution_status", "status"),
        Index("idx_strategy_execution_active", "status", "risk_monitoring_enabled"),
        in_check("status", EXECUTION_STATUSES),
        in_check("exit_reason", EXIT_REASONS),
        in_check("product", PRODUCTS),
        in_check("supertrend_exit_type", SUPERTREND_EXIT_TYPES),
        CheckConstraint("filled_quantity >= 0", name="filled_quantity_non_negative"),
        CheckConstraint("exited_quantity >= 0", name="exited_quantity_non_negative"),
    )


class OrderIntent(TimestampMixin, Base):
    """Order journal row written before an order is sent (DESIGN §3). The unique ``key`` is the guard
    against a second send, e.g. ``exec:{execution_id}:entry:{slice}`` or
    ``exec:{execution_id}:exit:{attempt}:{slice}``.

    ``strategy_tag`` is the OpenAlgo ``strategy`` sent with the order, used to find it in the orderbook
    when the send outcome is unknown.
    """

    __tablename__ = "order_intents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(200), nullable=False, unique=True)
    execution_id: Mapped[int | None] = mapped_column(
        ForeignKey("strategy_executions.id", ondelete="RESTRICT"), index=True
    )
    account_id: Mapped[int] = mapped_column(
        ForeignKey("trading_accounts.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    purpose: Mapped[str] = mapped_column(String(10), default="entry", server_default="entry", nullable=False)
    symbol: Mapped[str] = mapped_column(String(100), nullable=False)
    exchange: Mapped[str] = mapped_column(String(20), nullable=False)
    product: Mapped[str] = mapped_column(String(10), nullable=False)
    side: Mapped[str] = mapped_column(String(10), nullable=False)
    quantity: Mapped[int] = mapped_column(Integer, nullable=False)
    order_type: Mapped[str] = mapped_column(
        String(20), default="MARKET", server_default="MARKET", nullable=False
    )
    price: Mapped[Decimal | None] = mapped_column(Price())
    trigger_price: Mapped[Decimal | None] = mapped_column(Price())
    strategy_tag: Mapped[str | None] = mapped_column(String(100))
    # Broker order id once acknowledged (or adopted from the orderbook after an unknown outcome).
    order_id: Mapped[str | None] = mapped_column(String(50), index=True)
    filled_quantity: Mapped[int] = mapped_column(Integer, default=0, server_default="0", nullable=False)
    average_price: Mapped[Decimal | None] = mapped_column(Price())
    rejection_reason: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(
        String(20), default="created", server_default="created", nullable=False
    )
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    @validates("state")
    def _forward_only(self, _key: str, new: str) -> str:
        """Every ORM write of ``state`` passes the journal's state machine: a new intent starts
        ``created`` and an existing one only moves forward (raises IllegalTransitionError)."""
        check_transition(self.state, new)
        return new

    __table_args__ = (
        # One intent per broker order: two unknown-outcome slices can never adopt the same order.
        UniqueConstraint("account_id", "order_id", name="uq_order_intents_account_order"),
        Index("idx_order_intents_account_state", "account_id", "state"),
        in_check("state", INTENT_STATES),
        in_check("purpose", INTENT_PURPOSES),
        in_check("side", ACTIONS),
        in_check("product", PRODUCTS),
        in_check("order_type", ORDER_TYPES),
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("filled_quantity >= 0 AND filled_quantity <= quantity", name="filled_quantity_range"),
    )


class RiskEvent(CreatedAtMixin, Base):
    """Audit of a risk decision (seed layout, PRODUCT §6.9), one per affected execution.

    ``trigger_value`` is the P&L (₹) that fired, ``threshold_value`` the configured level; ``details`` is a
    JSON text (run, account, marks, attempt, broker message).
    """

    __tablename__ = "risk_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    strategy_execution_id: Mapped[int] = mapped_column(
        ForeignKey("strategy_executions.id", ondelete="RESTRICT"), nullable=False
    )
    run_id: Mapped[int | None] = mapped_column(
        ForeignKey("strategy_runs.id", ondelete="RESTRICT"), index=True
    )
    event_type: Mapped[str] = mapped_column(String(50), nullable=False)
    trigger_value: Mapped[Decimal | None] = mapped_column(Money())
    threshold_value: Mapped[Decimal | None] = mapped_column(Money())
    action_taken: Mapped[str | None] = mapped_column(String(100))
    details: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("idx_risk_event_execution", "strategy_execution_id"),
        Index("idx_risk_event_type_time", "event_type", "created_at"),
        in_check("event_type", RISK_EVENT_TYPES),
        in_check("action_taken", RISK_EVENT_ACTIONS),
    )


class RunPnlSample(Base):
    """One point of a run's intraday MTM curve (the risk monitor's chart): the run's P&L (₹) at ``at``
    (aware UTC). Written by the risk engine at most once per sampling interval per run; a derived,
    append-only series, unique per (run, instant)."""

    __tablename__ = "run_pnl_samples"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("strategy_runs.id", ondelete="RESTRICT"), nullable=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    pnl: Mapped[Decimal] = mapped_column(Money(), nullable=False)

    __table_args__ = (UniqueConstraint("run_id", "at", name="uq_run_pnl_samples_run_at"),)
