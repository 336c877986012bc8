"""Retiring accounts and strategies: the journal outlives them.

An account or strategy with anything live or unresolved — an execution that is pending, active, exiting
or in ``error`` (its position may still be open), an order intent whose outcome is not final, a run that
has not ended — cannot be retired at all: :class:`StillTradingError` says what is in the way and what to
do. Otherwise one that has trading records (executions, intents, runs, broker orders or trades) is
**archived**: hidden, inactive, its name freed, every row of its history kept. Only one that never
traded is deleted outright. The database backs this up: foreign keys into the journal are RESTRICT, so
even a delete that raced past these checks fails rather than erase history.

Callers pass a write session (``Database.session()`` or a web request session) and commit.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import exists, func, select, update
from sqlalchemy.orm import Session

from algomirror.db.models import (
    OrderIntent,
    Strategy,
    StrategyExecution,
    StrategyLeg,
    StrategyRun,
    TradingAccount,
)
from algomirror.db.models.books import Order, OrderArchive, Trade, TradeArchive
from algomirror.db.models.enums import OPEN_RUN_STATUSES
from algomirror.domain.order_state import UNRESOLVED_STATES
from algomirror.domain.timeutil import ensure_aware

# Executions whose position may be open or whose outcome is not established.
LIVE_EXECUTION_STATUSES = ("pending", "active", "exiting", "error")
_SHOWN = 10


class Retired(enum.Enum):
    DELETED = "deleted"
    ARCHIVED = "archived"


@dataclass(frozen=True, slots=True)
class Blocker:
    """One live thing in the way: ``kind`` is execution, intent or run; ``status`` its state."""

    kind: str
    id: int
    status: str

    def __str__(self) -> str:
        return f"{self.kind} #{self.id} ({self.status})"


class StillTradingError(Exception):
    """Retiring was refused: ``blockers`` lists what is live. ``str(exc)`` is the user-facing reason,
    with what to do about it."""

    def __init__(self, what: str, blockers: list[Blocker]) -> None:
        listed = ", ".join(str(b) for b in blockers[:_SHOWN])
        more = f" and {len(blockers) - _SHOWN} more" if len(blockers) > _SHOWN else ""
        super().__init__(
            f"{what} still has {len(blockers)} live or unresolved item(s): {listed}{more}. Exit the "
            "open positions and let the engine resolve every order (an execution in error needs its "
            "position checked and closed at the broker first); deactivate it meanwhile if you want "
            "it left alone."
        )
        self.blockers = blockers


def _lock(session: Session, model: type[TradingAccount] | type[Strategy], row_id: int) -> None:
    """Take the row's lock before checking, so the check and the delete/archive are one step against a
    concurrent writer.

    PostgreSQL: ``SELECT … FOR UPDATE`` — the only row lock that conflicts with the ``FOR KEY SHARE``
    lock a new child row (an execution, an intent) takes on its parent, so the engine's insert waits.
    (A no-op ``UPDATE`` would not: it leaves the key unchanged and takes a weaker lock.) SQLite: a write
    statement, which takes the database write lock that every other writer waits for.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(model.id).where(model.id == row_id).with_for_update())
    else:
        session.execute(update(model).where(model.id == row_id).values(id=model.id))


def account_blockers(session: Session, account_id: int) -> list[Blocker]:
    """Live executions and unresolved intents of one account, oldest first."""
    executions = session.execute(
        select(StrategyExecution.id, StrategyExecution.status)
        .where(
            StrategyExecution.account_id == account_id,
            StrategyExecution.status.in_(LIVE_EXECUTION_STATUSES),
        )
        .order_by(StrategyExecution.id)
    ).all()
    intents = session.execute(
        select(OrderIntent.id, OrderIntent.state)
        .where(OrderIntent.account_id == account_id, OrderIntent.state.in_(sorted(UNRESOLVED_STATES)))
        .order_by(OrderIntent.id)
    ).all()
    return [Blocker("execution", int(i), str(s)) for i, s in executions] + [
        Blocker("order intent", int(i), str(s)) for i, s in intents
    ]


def strategy_blockers(session: Session, strategy_id: int) -> list[Blocker]:
    """Open runs, live executions and unresolved intents of one strategy, oldest first."""
    runs = session.execute(
        select(StrategyRun.id, StrategyRun.status)
        .where(
            StrategyRun.strategy_id == strategy_id,
            (StrategyRun.ended_at.is_(None)) | StrategyRun.status.in_(OPEN_RUN_STATUSES),
        )
        .order_by(StrategyRun.id)
    ).all()
    executions = session.execute(
        select(StrategyExecution.id, StrategyExecution.status)
        .where(
            StrategyExecution.strategy_id == strategy_id,
            StrategyExecution.status.in_(LIVE_EXECUTION_STATUSES),
        )
        .order_by(StrategyExecution.id)
    ).all()
    intents = session.execute(
        select(OrderIntent.id, OrderIntent.state)
        .join(StrategyExecution, StrategyExecution.id == OrderIntent.execution_id)
        .where(
            StrategyExecution.strategy_id == strategy_id,
            OrderIntent.state.in_(sorted(UNRESOLVED_STATES)),
        )
        .order_by(OrderIntent.id)
    ).all()
    return (
        [Blocker("run", int(i), str(s)) for i, s in runs]
        + [Blocker("execution", int(i), str(s)) for i, s in executions]
        + [Blocker("order intent", int(i), str(s)) for i, s in intents]
    )


def account_has_history(session: Session, account_id: int) -> bool:
    """True when any execution, intent, broker order or trade of the account is stored, including the
    orders and trades maintenance moved to the archive tables."""
    return bool(
        session.scalar(
            select(
                exists().where(StrategyExecution.account_id == account_id)
                | exists().where(OrderIntent.account_id == account_id)
                | exists().where(Order.account_id == account_id)
                | exists().where(Trade.account_id == account_id)
                | exists().where(OrderArchive.account_id == account_id)
                | exists().where(TradeArchive.account_id == account_id)
            )
        )
    )


def strategy_has_history(session: Session, strategy_id: int) -> bool:
    """True when the strategy ever started a run."""
    return bool(session.scalar(select(exists().where(StrategyRun.strategy_id == strategy_id))))


def retire_account(session: Session, account: TradingAccount, *, now: datetime) -> Retired:
    """Delete an account that never traded, archive one that did (``now``: aware, the archive time).

    Raises :class:`StillTradingError` while anything of it is live. Archiving also deactivates it and
    drops its primary flag (the caller promotes another account). The caller commits.
    """
    _lock(session, TradingAccount, account.id)
    blockers = account_blockers(session, account.id)
    if blockers:
        raise StillTradingError(f"Account “{account.account_name}”", blockers)
    if not account_has_history(session, account.id):
        session.delete(account)
        session.flush()
        return Retired.DELETED
    account.archived_at = ensure_aware(now)
    account.is_active = False
    account.is_primary = False
    session.flush()
    return Retired.ARCHIVED


def retire_strategy(session: Session, strategy: Strategy, *, now: datetime) -> Retired:
    """Delete a strategy that never ran (with its legs), archive one that did. Raises
    :class:`StillTradingError` while a run or order of it is live. The caller commits."""
    _lock(session, Strategy, strategy.id)
    blockers = strategy_blockers(session, strategy.id)
    if blockers:
        raise StillTradingError(f"Strategy “{strategy.name}”", blockers)
    if not strategy_has_history(session, strategy.id):
        session.delete(strategy)
        session.flush()
        return Retired.DELETED
    strategy.archived_at = ensure_aware(now)
    strategy.is_active = False
    session.flush()
    return Retired.ARCHIVED


def leg_has_history(session: Session, leg: StrategyLeg) -> bool:
    """True when any execution was made from this leg: it can then never be deleted (the strategy is
    archived and cloned instead)."""
    found = session.scalar(
        select(func.count()).select_from(StrategyExecution).where(StrategyExecution.leg_id == leg.id)
    )
    return bool(found)


__all__ = [
    "LIVE_EXECUTION_STATUSES",
    "Blocker",
    "Retired",
    "StillTradingError",
    "account_blockers",
    "account_has_history",
    "leg_has_history",
    "retire_account",
    "retire_strategy",
    "strategy_blockers",
    "strategy_has_history",
]
