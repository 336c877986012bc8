"""Allowed values of the enum-like string columns, and a helper that turns them into CHECK constraints.

The values are the OpenAlgo wire values where one exists (``BUY``, ``MIS``, ``SL-M``) and lower-case
codes otherwise. They live here, not in ``algomirror.domain``, because the database is their enforcer;
code elsewhere may import these tuples to validate before writing.
"""

from __future__ import annotations

from sqlalchemy import CheckConstraint

from algomirror.domain import order_state

ACTIONS = ("BUY", "SELL")
PRODUCTS = ("MIS", "NRML", "CNC")
STRATEGY_PRODUCTS = ("MIS", "NRML")
# OpenAlgo ``pricetype`` values.
ORDER_TYPES = ("MARKET", "LIMIT", "SL", "SL-M")
# OpenAlgo ``order_status`` normalised: "trigger pending" -> trigger_pending, "expired" -> cancelled;
# ``unknown`` is ours (still working at the close, or the outcome could not be established).
ORDER_STATUSES = ("open", "trigger_pending", "complete", "rejected", "cancelled", "unknown")

MARKET_CONDITIONS = ("non_expiry", "expiry", "any")
LEGACY_RISK_PROFILES = ("aggressive", "balanced", "conservative")
ALLOCATION_TYPES = ("equal", "custom", "proportional")
TRAILING_SL_TYPES = ("percentage", "amount", "points")
RISK_SCOPES = ("aggregate", "per_account")
LEG_FAILURE_POLICIES = ("unwind", "keep")
SUPERTREND_EXIT_TYPES = ("breakout", "breakdown")
SUPERTREND_TIMEFRAMES = ("3m", "5m", "10m", "15m")

INSTRUMENT_PRODUCT_TYPES = ("options", "futures", "equity")
LEG_EXPIRIES = ("current_week", "next_week", "current_month", "next_month")
OPTION_TYPES = ("CE", "PE")
STRIKE_SELECTIONS = ("ATM", "ITM", "OTM", "strike_price", "premium_near")
LEG_ORDER_TYPES = ("MARKET", "LIMIT", "SL-LMT", "SL-MKT")
PRICE_CONDITIONS = ("ABOVE", "BELOW")
LEG_LEVEL_TYPES = ("percentage", "points", "premium")
LEG_TRAILING_TYPES = ("points", "percentage")

# PRODUCT §5.10; the seeds' ``stopped`` is never produced.
EXECUTION_STATUSES = ("pending", "active", "exiting", "exited", "failed", "error")
RUN_STATUSES = ("entering", "active", "exiting", "closed", "failed", "error")
# A run that has not ended (``ended_at IS NULL``: at most one per strategy): every status but closed and
# failed. ``error`` is open too: an exit of it gave up and its positions are still there.
OPEN_RUN_STATUSES = ("entering", "active", "exiting", "error")
# The journal's state machine lives in the domain (order_state); the database enforces its vocabulary.
INTENT_STATES = order_state.INTENT_STATES
INTENT_PURPOSES = ("entry", "exit", "manual")
COMMAND_STATUSES = ("pending", "running", "done", "failed")

# PRODUCT §6.9.
RISK_EVENT_TYPES = (
    "max_loss",
    "max_profit",
    "trailing_stop",
    "supertrend_exit",
    "stop_loss",
    "take_profit",
    "leg_trailing_stop",
    "time_exit",
    "square_off",
    "kill_switch",
)
RISK_EVENT_ACTIONS = ("exit_initiated", "exit_completed", "exit_failed", "retry_limit_exceeded", "alert_only")
EXIT_REASONS = (
    *RISK_EVENT_TYPES,
    "manual",
    "entry_unwind",
    "manual_cancel",
    "webhook",
    "closed_externally",
    "exit_all",
)

GRADE_SOURCES = ("available", "cash")
RISK_LEVELS = ("conservative", "moderate", "aggressive")
WS_SESSION_TYPES = ("option_chain", "position_monitor")
WS_CONNECTION_STATUSES = ("connecting", "connected", "authenticated", "disconnected", "failed", "error")


def in_check(column: str, values: tuple[str, ...], name: str | None = None) -> CheckConstraint:
    """``CHECK (column IN (...))``; NULL passes (SQL three-valued logic), so nullable columns stay nullable.

    The constraint is named ``<column>_values`` unless ``name`` is given; the metadata naming convention
    prefixes it with ``ck_<table>_``.
    """
    for value in values:
        if "'" in value:
            raise ValueError(f"quote in enum value {value!r}")
    listed = ", ".join(f"'{v}'" for v in values)
    return CheckConstraint(f"{column} IN ({listed})", name=name or f"{column}_values")
