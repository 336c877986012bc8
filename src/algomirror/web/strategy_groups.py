"""Positions grouped by the strategy leg they belong to, for the Positions page's "By strategy" card.

A broker position (``positions``) belongs to a strategy leg when one of the user's strategies has a live
run (``ended_at IS NULL`` and a live run status) with a live execution on the same account, symbol and
exchange, and the same product (an execution whose product is not known yet matches any product). Live
execution statuses are :data:`algomirror.db.retirement.LIVE_EXECUTION_STATUSES`: ``pending`` (entry
orders working, part may be filled), ``active``, ``exiting`` and ``error`` (the exit failed or its
outcome is not established: the position may still be open and needs the trader's eye). ``exited`` and
``failed`` are finished: their leg is closed, so a position of the same symbol left at the broker is not
the strategy's any more.

A broker position is netted per (symbol, exchange, product), so two live legs can match one position; it
is then shown once, under the execution created first, and :attr:`GroupedPosition.shared` says how many
other legs also hold it (never counted twice in the totals).

Every query joins ``trading_accounts`` on the user and the strategy on the user too: another user's
strategies and positions are never read. Two queries per call whatever the number of rows. Totals are
:class:`~algomirror.web.queries.Sum`: a NULL amount is unknown, never 0; Python sums the exact Decimals
the money columns return, and the one SQL sum is typed as the column (exact on SQLite and PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from algomirror.db.models import (
    Position,
    Strategy,
    StrategyExecution,
    StrategyLeg,
    StrategyRun,
    TradingAccount,
)
from algomirror.db.models.enums import OPEN_RUN_STATUSES
from algomirror.db.retirement import LIVE_EXECUTION_STATUSES
from algomirror.domain.money import format_inr
from algomirror.web.queries import ZERO, Sum

SEPARATOR = " · "


@dataclass
class Totals:
    """Aggregates of a set of positions: count, net (signed) quantity and the three P&L sums."""

    count: int = 0
    quantity: int = 0
    pnl: Sum = field(default_factory=Sum)
    realized_pnl: Sum = field(default_factory=Sum)
    unrealized_pnl: Sum = field(default_factory=Sum)

    def add(self, position: GroupedPosition) -> None:
        """Count one position in."""
        self.count += 1
        self.quantity += position.quantity
        self.pnl.add(position.pnl)
        self.realized_pnl.add(position.realized_pnl)
        self.unrealized_pnl.add(position.unrealized_pnl)

    def merge(self, other: Totals) -> None:
        """Fold another set's totals into this one."""
        self.count += other.count
        self.quantity += other.quantity
        self.pnl.merge(other.pnl)
        self.realized_pnl.merge(other.realized_pnl)
        self.unrealized_pnl.merge(other.unrealized_pnl)


@dataclass
class GroupedPosition:
    """One broker position row under a leg, with the account it is on."""

    id: int
    account_id: int
    account_name: str
    symbol: str
    exchange: str
    product: str
    quantity: int
    average_price: Decimal
    ltp: Decimal | None
    pnl: Decimal | None
    realized_pnl: Decimal | None
    unrealized_pnl: Decimal | None
    execution_id: int
    execution_status: str
    # Other live legs that match the same (netted) broker position.
    shared: int = 0


@dataclass
class LegGroup:
    """One leg of a strategy and its positions (account creation order, then symbol)."""

    leg_id: int
    leg_number: int
    label: str
    positions: list[GroupedPosition] = field(default_factory=list)
    totals: Totals = field(default_factory=Totals)


@dataclass
class StrategyGroup:
    """One strategy with a live run, its legs (leg number order) and their totals."""

    strategy_id: int
    name: str
    run_id: int
    run_status: str
    legs: list[LegGroup] = field(default_factory=list)
    totals: Totals = field(default_factory=Totals)


@dataclass
class PositionGroups:
    """The user's positions by strategy and leg, plus the positions in no strategy (count and P&L).

    False when no position belongs to a strategy (the card is then not shown).
    """

    strategies: list[StrategyGroup]
    ungrouped_count: int
    ungrouped_pnl: Sum

    def __bool__(self) -> bool:
        return bool(self.strategies)

    @property
    def grouped_count(self) -> int:
        """How many positions are shown under a leg."""
        return sum(group.totals.count for group in self.strategies)


def _number(value: Decimal) -> str:
    """A strike as a trader writes it: ``24000``, ``24012.5``."""
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def leg_label(leg: Mapping[Any, Any]) -> str:
    """A leg's short description, e.g. "Leg 1 · SELL NIFTY CE ATM", "Leg 2 · BUY NIFTY PE OTM 2",
    "Leg 3 · SELL BANKNIFTY FUT". ``leg`` has StrategyLeg's column names; unset fields are left out."""
    parts: list[str] = [str(leg[key]) for key in ("action", "instrument") if leg.get(key)]
    product_type = leg.get("product_type")
    if product_type == "futures":
        parts.append("FUT")
    elif product_type != "equity":
        if leg.get("option_type"):
            parts.append(str(leg["option_type"]))
        selection = leg.get("strike_selection")
        offset = int(leg.get("strike_offset") or 0)
        if selection in ("ITM", "OTM") and offset:
            parts.append(f"{selection} {offset}")
        elif selection == "strike_price" and leg.get("strike_price") is not None:
            parts.append(_number(leg["strike_price"]))
        elif selection == "premium_near" and leg.get("premium_value") is not None:
            parts.append(f"near {format_inr(leg['premium_value'])}")
        elif selection in ("ATM", "ITM", "OTM"):
            parts.append(str(selection))
    head = f"Leg {leg['leg_number']}"
    return SEPARATOR.join([head, " ".join(parts)]) if parts else head


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _position_conditions(user_id: int, account_id: int | None, symbol: str) -> list[ColumnElement[bool]]:
    """The Positions page's filters: the user's live (not archived) accounts, one account, a symbol
    substring (case-insensitive)."""
    conditions: list[ColumnElement[bool]] = [
        TradingAccount.user_id == user_id,
        TradingAccount.archived_at.is_(None),
    ]
    if account_id is not None:
        conditions.append(TradingAccount.id == account_id)
    needle = (symbol or "").strip().upper()
    if needle:
        conditions.append(func.upper(Position.symbol).like(f"%{_like_escape(needle)}%", escape="\\"))
    return conditions


def _live_leg_match(user_id: int) -> list[ColumnElement[bool]]:
    """A live execution of one of the user's live runs holds the position (``Position`` correlated)."""
    return [
        StrategyExecution.account_id == Position.account_id,
        StrategyExecution.symbol == Position.symbol,
        StrategyExecution.exchange == Position.exchange,
        or_(StrategyExecution.product.is_(None), StrategyExecution.product == Position.product),
        StrategyExecution.status.in_(LIVE_EXECUTION_STATUSES),
        StrategyRun.ended_at.is_(None),
        StrategyRun.status.in_(OPEN_RUN_STATUSES),
        Strategy.user_id == user_id,
    ]


def position_groups(
    session: Session, user_id: int, *, account_id: int | None = None, symbol: str = ""
) -> PositionGroups:
    """The user's positions matching the Positions page's filters, grouped by strategy (name order) and
    leg (leg number order), with per-leg and per-strategy totals, and the count and P&L of the matching
    positions in no strategy.

    An ``account_id`` that is not the user's matches nothing (the page answers 404 before asking). Two
    queries.
    """
    filters = _position_conditions(user_id, account_id, symbol)
    match = _live_leg_match(user_id)
    query = (
        select(
            Position.id,
            Position.account_id,
            TradingAccount.account_name,
            Position.symbol,
            Position.exchange,
            Position.product,
            Position.quantity,
            Position.average_price,
            Position.ltp,
            Position.pnl,
            Position.realized_pnl,
            Position.unrealized_pnl,
            StrategyExecution.id.label("execution_id"),
            StrategyExecution.status.label("execution_status"),
            Strategy.id.label("strategy_id"),
            Strategy.name.label("strategy_name"),
            StrategyRun.id.label("run_id"),
            StrategyRun.status.label("run_status"),
            StrategyLeg.id.label("leg_id"),
            StrategyLeg.leg_number,
            StrategyLeg.action,
            StrategyLeg.instrument,
            StrategyLeg.product_type,
            StrategyLeg.option_type,
            StrategyLeg.strike_selection,
            StrategyLeg.strike_offset,
            StrategyLeg.strike_price,
            StrategyLeg.premium_value,
        )
        .select_from(Position)
        .join(TradingAccount, TradingAccount.id == Position.account_id)
        .join(StrategyExecution, and_(*match[:5]))
        .join(StrategyRun, StrategyRun.id == StrategyExecution.run_id)
        .join(Strategy, Strategy.id == StrategyExecution.strategy_id)
        .join(
            StrategyLeg,
            and_(StrategyLeg.id == StrategyExecution.leg_id, StrategyLeg.strategy_id == Strategy.id),
        )
        .where(*filters, *match[5:])
        .order_by(
            Strategy.name,
            Strategy.id,
            StrategyLeg.leg_number,
            StrategyLeg.id,
            TradingAccount.created_at,
            TradingAccount.id,
            Position.symbol,
            Position.id,
        )
    )
    rows = session.execute(query).mappings().all()

    # A position matched by several live legs goes under the execution created first.
    owner: dict[int, int] = {}
    matches: dict[int, int] = {}
    for row in rows:
        pid = row["id"]
        matches[pid] = matches.get(pid, 0) + 1
        owner[pid] = min(owner.get(pid, row["execution_id"]), row["execution_id"])

    strategies: list[StrategyGroup] = []
    legs: dict[int, LegGroup] = {}
    for row in rows:
        pid = row["id"]
        if owner[pid] != row["execution_id"]:
            continue
        if not strategies or strategies[-1].strategy_id != row["strategy_id"]:
            strategies.append(
                StrategyGroup(row["strategy_id"], row["strategy_name"], row["run_id"], row["run_status"])
            )
        group = strategies[-1]
        leg = legs.get(row["leg_id"])
        if leg is None:
            leg = legs[row["leg_id"]] = LegGroup(row["leg_id"], row["leg_number"], leg_label(row))
            group.legs.append(leg)
        position = GroupedPosition(
            id=pid,
            account_id=row["account_id"],
            account_name=row["account_name"],
            symbol=row["symbol"],
            exchange=row["exchange"],
            product=row["product"],
            quantity=row["quantity"],
            average_price=row["average_price"],
            ltp=row["ltp"],
            pnl=row["pnl"],
            realized_pnl=row["realized_pnl"],
            unrealized_pnl=row["unrealized_pnl"],
            execution_id=row["execution_id"],
            execution_status=row["execution_status"],
            shared=matches[pid] - 1,
        )
        leg.positions.append(position)
        leg.totals.add(position)
        group.totals.add(position)

    in_a_leg = exists(
        select(StrategyExecution.id)
        .join(StrategyRun, StrategyRun.id == StrategyExecution.run_id)
        .join(Strategy, Strategy.id == StrategyExecution.strategy_id)
        .join(
            StrategyLeg,
            and_(StrategyLeg.id == StrategyExecution.leg_id, StrategyLeg.strategy_id == Strategy.id),
        )
        .where(*match)
    )
    # Σ typed as the column: integer units on SQLite, NUMERIC on PostgreSQL, an exact Decimal on both.
    count, pnl_sum, pnl_known = session.execute(
        select(
            func.count(Position.id), func.sum(Position.pnl, type_=Position.pnl.type), func.count(Position.pnl)
        )
        .select_from(Position)
        .join(TradingAccount, TradingAccount.id == Position.account_id)
        .where(*filters, ~in_a_leg)
    ).one()
    ungrouped = Sum(pnl_sum if pnl_sum is not None else ZERO, int(pnl_known), int(count) - int(pnl_known))
    return PositionGroups(strategies=strategies, ungrouped_count=int(count), ungrouped_pnl=ungrouped)
