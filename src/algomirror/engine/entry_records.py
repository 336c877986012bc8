"""The entry path's database side: what a run's entry reads (:func:`load_plan`) and how its outcome is
written onto executions and the run (:func:`finish_entry`, :func:`finish_exit`, :func:`finish_run`).

Each writer is one short transaction that reads the row ``FOR UPDATE`` and only moves it forward
(``pending → active | failed``, ``exiting → exited | error``), so a second attempt that drives the same
intents again writes nothing twice. Fill prices are weighted averages of the intents' fills, never a
quote.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal, cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session

from algomirror.db.instrument_settings import effective_settings
from algomirror.db.models import (
    MarginTracker,
    Strategy,
    StrategyExecution,
    StrategyLeg,
    StrategyRun,
    TradingAccount,
)
from algomirror.db.session import Database
from algomirror.domain.contract_specs import freeze_slices, lot_size
from algomirror.domain.errors import InvalidQuantity, NoRuleInForce
from algomirror.domain.instruments import parse_symbol
from algomirror.domain.reservations import entered
from algomirror.domain.resolution import freeze_limit
from algomirror.domain.timeutil import to_ist
from algomirror.engine.order_driver import IntentRow

_MAX_ERROR = 2000
_AVERAGE = Decimal("0.0001")
# The builder's order types on the wire (OpenAlgo pricetype).
_WIRE_ORDER_TYPES = {"MARKET": "MARKET", "LIMIT": "LIMIT", "SL-LMT": "SL", "SL-MKT": "SL-M"}


def strategy_tag(strategy_id: int) -> str:
    """The one stable OpenAlgo ``strategy`` tag of every order of a strategy (PRODUCT §5.9). Short on
    purpose: gateways store it in narrow columns."""
    return f"AM-S{strategy_id}"


@dataclass(frozen=True, slots=True)
class AccountInfo:
    """The account fields the entry path needs, read once per attempt."""

    id: int
    account_name: str
    host_url: str
    api_key_encrypted: str | None


@dataclass(frozen=True, slots=True)
class EntryLeg:
    """One execution (leg × account) of the run, with its leg's order terms."""

    execution_id: int
    leg_number: int
    account_id: int
    side: str
    symbol: str
    exchange: str
    product: str
    planned_quantity: int
    order_type: str
    price: Decimal | None
    trigger_price: Decimal | None
    status: str
    filled_quantity: int
    entry_price: Decimal | None
    error: str | None
    # The user's instrument-settings freeze for the symbol's underlying: the fallback when no contract
    # data covers it, as in the preview (domain.resolution.freeze_limit).
    settings_freeze: int | None = None

    @property
    def filled_all(self) -> bool:
        return self.filled_quantity >= self.planned_quantity


@dataclass(frozen=True, slots=True)
class RunPlan:
    """A run as its entry sees it: its status, the strategy's tag and leg-failure policy, the user's
    accounts it uses, and every execution."""

    run_id: int
    strategy_id: int
    user_id: int
    status: str
    tag: str
    policy: str
    accounts: dict[int, AccountInfo]
    legs: list[EntryLeg]


def load_plan(session: Session, run_id: int, user_id: int) -> RunPlan | None:
    """The run if it belongs to ``user_id`` (else None). Accounts of another user are left out (their
    legs then fail as "account not found"). Reads columns, not ORM objects: a run of 100 accounts has
    hundreds of executions and this is read on every attempt."""
    found = session.execute(
        select(
            StrategyRun.id,
            StrategyRun.status,
            StrategyRun.started_at,
            Strategy.id.label("strategy_id"),
            Strategy.on_leg_failure,
        )
        .join(Strategy, Strategy.id == StrategyRun.strategy_id)
        .where(StrategyRun.id == run_id, Strategy.user_id == user_id)
    ).first()
    if found is None:
        return None
    pairs = session.execute(
        select(
            StrategyExecution.id,
            StrategyExecution.account_id,
            StrategyExecution.symbol,
            StrategyExecution.exchange,
            StrategyExecution.product,
            StrategyExecution.planned_quantity,
            StrategyExecution.status,
            StrategyExecution.filled_quantity,
            StrategyExecution.entry_price,
            StrategyExecution.error_message,
            StrategyLeg.leg_number,
            StrategyLeg.action,
            StrategyLeg.order_type,
            StrategyLeg.limit_price,
            StrategyLeg.trigger_price,
        )
        .join(StrategyLeg, StrategyLeg.id == StrategyExecution.leg_id)
        .where(StrategyExecution.run_id == run_id)
        .order_by(StrategyLeg.leg_number, StrategyExecution.account_id)
    ).all()
    # The freeze limits in force on the run's day (IST): a revision dated later applies to later runs.
    freezes = {
        symbol: setting.freeze_quantity
        for symbol, setting in effective_settings(session, user_id, to_ist(found.started_at).date()).items()
    }
    legs = [_entry_leg(row, freezes) for row in pairs]
    ids = {leg.account_id for leg in legs}
    accounts = session.execute(
        select(
            TradingAccount.id,
            TradingAccount.account_name,
            TradingAccount.host_url,
            TradingAccount.api_key_encrypted,
        ).where(TradingAccount.id.in_(ids), TradingAccount.user_id == user_id)
    ).all()
    return RunPlan(
        run_id=found.id,
        strategy_id=found.strategy_id,
        user_id=user_id,
        status=found.status,
        tag=strategy_tag(found.strategy_id),
        policy=found.on_leg_failure,
        accounts={a.id: AccountInfo(a.id, a.account_name, a.host_url, a.api_key_encrypted) for a in accounts},
        legs=legs,
    )


def _entry_leg(row: Any, freezes: dict[str, int]) -> EntryLeg:
    """An :class:`EntryLeg` from one row of :func:`load_plan`'s execution × leg columns; ``freezes``:
    the user's instrument-settings freeze by underlying."""
    order_type = _WIRE_ORDER_TYPES.get(row.order_type or "MARKET", "MARKET")
    parsed = parse_symbol(row.symbol) if row.symbol else None
    return EntryLeg(
        execution_id=row.id,
        leg_number=row.leg_number,
        account_id=row.account_id,
        side=(row.action or "").upper(),
        symbol=row.symbol or "",
        exchange=row.exchange or "",
        product=row.product or "MIS",
        planned_quantity=row.planned_quantity or 0,
        order_type=order_type,
        price=row.limit_price if order_type in ("LIMIT", "SL") else None,
        trigger_price=row.trigger_price if order_type in ("SL", "SL-M") else None,
        status=row.status,
        filled_quantity=row.filled_quantity,
        entry_price=row.entry_price,
        error=row.error_message,
        settings_freeze=freezes.get(parsed.base.upper()) if parsed is not None else None,
    )


def slice_quantities(leg: EntryLeg, today: date, *, quantity: int | None = None) -> list[int]:
    """The leg's quantity (or ``quantity``) as freeze slices (PRODUCT §5.8): lot size by the symbol's
    contract, freeze limit in force ``today`` (contract data, else the user's instrument settings:
    :func:`~algomirror.domain.resolution.freeze_limit`, as the preview). One order when the symbol is
    not a known derivative, its lot size is not in the contract data, or no freeze is known.
    Raises ValueError for a leg that cannot be sent (no side, no symbol, a
    quantity that is not a whole number of lots)."""
    units = leg.planned_quantity if quantity is None else quantity
    if leg.side not in ("BUY", "SELL"):
        raise ValueError(f"leg {leg.leg_number} has no action (BUY or SELL)")
    if not leg.symbol or not leg.exchange or units <= 0:
        raise ValueError(f"leg {leg.leg_number} has no symbol, exchange or quantity to send")
    parsed = parse_symbol(leg.symbol)
    if parsed is None:
        return [units]
    try:
        lot = lot_size(parsed.base, parsed.expiry)
    except NoRuleInForce:
        return [units]
    # The same freeze as the preview's (contract data, else the user's settings): what it shows is sent.
    freeze = freeze_limit(parsed.base, today, lot, leg.settings_freeze)
    if freeze is None:
        return [units]
    try:
        return freeze_slices(units, freeze, lot)
    except InvalidQuantity as exc:
        raise ValueError(f"leg {leg.leg_number}: {exc}") from exc


def _average(rows: Sequence[IntentRow]) -> Decimal | None:
    priced = [(r.average_price, r.filled_quantity) for r in rows if r.filled_quantity and r.average_price]
    units = sum(q for _, q in priced)
    if not units:
        return None
    total = sum((p * q for p, q in priced), Decimal(0))
    return (total / units).quantize(_AVERAGE, rounding=ROUND_HALF_UP)


def _reasons(rows: Sequence[IntentRow]) -> str:
    texts = [r.rejection_reason for r in rows if r.rejection_reason and r.filled_quantity < r.quantity]
    return "; ".join(dict.fromkeys(t for t in texts if t))


def mark_failed(database: Database, execution_id: int, message: str) -> None:
    """A ``pending`` execution that will place nothing ends ``failed`` with ``message``."""
    with database.session() as session:
        row = session.get(StrategyExecution, execution_id, with_for_update=True)
        if row is not None and row.status == "pending":
            row.status = "failed"
            row.error_message = message[:_MAX_ERROR]


def finish_entry(
    database: Database, leg: EntryLeg, rows: Sequence[IntentRow], now: datetime
) -> Literal["filled", "failed", "open"]:
    """Write the entry's outcome once every slice is terminal; ``open`` (nothing written) while one is
    not. ``filled`` means the planned quantity filled."""
    waiting = [r for r in rows if not r.terminal]
    with database.session() as session:
        row = session.get(StrategyExecution, leg.execution_id, with_for_update=True)
        if row is None:
            return "failed"
        row.attempts = max(row.attempts, len(rows))
        if waiting:
            states = ", ".join(sorted({r.state for r in waiting}))
            row.error_message = f"waiting for {len(waiting)} order(s) ({states}) to be resolved"
            return "open"
        if row.status != "pending":
            done = row.status == "active" and row.filled_quantity >= leg.planned_quantity
            return "filled" if done else "failed"
        order_ids = [r.order_id for r in rows if r.order_id]
        filled = sum(r.filled_quantity for r in rows)
        row.entry_order_ids = order_ids or None
        row.order_id = order_ids[0] if order_ids else None
        reasons = _reasons(rows)
        if filled:
            row.status = "active"
            row.filled_quantity = filled
            row.quantity = filled
            row.entry_price = _average(rows)
            row.entry_time = now
            row.broker_order_status = "complete" if filled >= leg.planned_quantity else "partial"
            short = filled < leg.planned_quantity
            row.error_message = f"filled {filled} of {leg.planned_quantity}: {reasons}" if short else None
            return "filled" if filled >= leg.planned_quantity else "failed"
        row.status = "failed"
        row.broker_order_status = "rejected" if any(r.state == "rejected" for r in rows) else "cancelled"
        row.error_message = (reasons or "not filled")[:_MAX_ERROR]
        return "failed"


_E = cast(Table, StrategyExecution.__table__)
# finish_entries' statements, built once (the entry fan-out writes hundreds of executions at a time).
_EXECUTIONS = (
    select(_E.c.id, _E.c.status, _E.c.filled_quantity, _E.c.attempts)
    .where(_E.c.id.in_(bindparam("ids", expanding=True)))
    .with_for_update()
)
_ATTEMPTS = update(_E).where(_E.c.id == bindparam("b_id")).values(attempts=bindparam("b_attempts"))
_WAITING = (
    update(_E)
    .where(_E.c.id == bindparam("b_id"))
    .values(attempts=bindparam("b_attempts"), error_message=bindparam("b_error"))
)
_ENTERED = (
    update(_E)
    .where(_E.c.id == bindparam("b_id"), _E.c.status == "pending")
    .values(
        attempts=bindparam("b_attempts"),
        status=bindparam("b_status"),
        entry_order_ids=bindparam("b_order_ids"),
        order_id=bindparam("b_order_id"),
        filled_quantity=bindparam("b_filled"),
        quantity=bindparam("b_quantity"),
        entry_price=bindparam("b_price"),
        entry_time=bindparam("b_time"),
        broker_order_status=bindparam("b_broker_status"),
        error_message=bindparam("b_error"),
    )
)
_FAILED = (
    update(_E)
    .where(_E.c.id == bindparam("b_id"), _E.c.status == "pending")
    .values(
        attempts=bindparam("b_attempts"),
        status="failed",
        entry_order_ids=bindparam("b_order_ids"),
        order_id=bindparam("b_order_id"),
        broker_order_status=bindparam("b_broker_status"),
        error_message=bindparam("b_error"),
    )
)


def finish_entries(
    database: Database, items: Sequence[tuple[EntryLeg, Sequence[IntentRow]]], now: datetime
) -> list[Literal["filled", "failed", "open"]]:
    """:func:`finish_entry` for several executions in ONE transaction (the rows read ``FOR UPDATE``,
    each moved forward only, exactly as :func:`finish_entry` moves it); results in ``items`` order.
    An execution that no longer exists is ``failed``."""
    if not items:
        return []
    with database.session() as session:
        conn = session.connection()
        ids = [leg.execution_id for leg, _ in items]
        current = {row.id: row for row in conn.execute(_EXECUTIONS, {"ids": ids})}
        plain: list[dict[str, Any]] = []
        waiting: list[dict[str, Any]] = []
        entered: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        states: list[Literal["filled", "failed", "open"]] = []
        for leg, rows in items:
            row = current.get(leg.execution_id)
            if row is None:
                states.append("failed")
                continue
            base = {"b_id": row.id, "b_attempts": max(row.attempts, len(rows))}
            open_rows = [r for r in rows if not r.terminal]
            if open_rows:
                states_text = ", ".join(sorted({r.state for r in open_rows}))
                error = f"waiting for {len(open_rows)} order(s) ({states_text}) to be resolved"
                waiting.append({**base, "b_error": error})
                states.append("open")
                continue
            if row.status != "pending":
                plain.append(base)
                done = row.status == "active" and row.filled_quantity >= leg.planned_quantity
                states.append("filled" if done else "failed")
                continue
            values, state = _entry_values(leg, rows, now)
            (entered if "b_filled" in values else failed).append({**base, **values})
            states.append(state)
        writes = ((_ATTEMPTS, plain), (_WAITING, waiting), (_ENTERED, entered), (_FAILED, failed))
        for statement, params in writes:
            if params:
                conn.execute(statement, params)
        return states


def _entry_values(
    leg: EntryLeg, rows: Sequence[IntentRow], now: datetime
) -> tuple[dict[str, Any], Literal["filled", "failed"]]:
    """The ``_ENTERED`` (something filled) or ``_FAILED`` parameters of a pending execution whose
    slices are all terminal (the values :func:`finish_entry` writes) and the leg's state."""
    order_ids = [r.order_id for r in rows if r.order_id]
    filled = sum(r.filled_quantity for r in rows)
    reasons = _reasons(rows)
    values: dict[str, Any] = {
        "b_order_ids": order_ids or None,
        "b_order_id": order_ids[0] if order_ids else None,
    }
    if filled:
        short = filled < leg.planned_quantity
        values |= {
            "b_status": "active",
            "b_filled": filled,
            "b_quantity": filled,
            "b_price": _average(rows),
            "b_time": now,
            "b_broker_status": "partial" if short else "complete",
            "b_error": f"filled {filled} of {leg.planned_quantity}: {reasons}" if short else None,
        }
        return values, "failed" if short else "filled"
    values |= {
        "b_broker_status": "rejected" if any(r.state == "rejected" for r in rows) else "cancelled",
        "b_error": (reasons or "not filled")[:_MAX_ERROR],
    }
    return values, "failed"


def finish_exit(
    database: Database, leg: EntryLeg, rows: Sequence[IntentRow], why: str, now: datetime
) -> bool:
    """Write an unwind's outcome (``exiting → exited``, or ``error`` when the exit fills do not cover
    the position); True when the leg is flat. Nothing is written while a slice is still open."""
    with database.session() as session:
        row = session.get(StrategyExecution, leg.execution_id, with_for_update=True)
        if row is None or row.status != "exiting":
            return row is not None and row.status == "exited"
        if any(not r.terminal for r in rows):
            row.error_message = "unwind order outcome not yet known; resolved before anything is re-sent"
            return False
        exited = sum(r.filled_quantity for r in rows)
        order_ids = [r.order_id for r in rows if r.order_id]
        price = _average(rows)
        row.exit_order_ids = order_ids or None
        row.exit_order_id = order_ids[0] if order_ids else None
        row.exited_quantity = exited
        row.exit_price = price
        row.exit_time = now
        row.exit_reason = "entry_unwind"
        row.exit_reason_detail = why[:_MAX_ERROR]
        row.exit_retry_count = max(row.exit_retry_count, 1)
        if exited >= row.filled_quantity:
            row.status = "exited"
            if price is not None and row.entry_price is not None:
                sign = 1 if leg.side == "BUY" else -1
                row.realized_pnl = ((price - row.entry_price) * exited * sign).quantize(Decimal("0.01"))
            return True
        row.status = "error"
        row.error_message = (
            f"unwind filled {exited} of {row.filled_quantity}: {_reasons(rows) or 'not filled'}; "
            "the position is still open"
        )[:_MAX_ERROR]
        return False


def _entered(session: Session, run_id: int, account_ids: set[int], now: datetime) -> None:
    """Mark run ``run_id``'s margin reservations on ``account_ids`` as entered at ``now``: the next funds
    read of each account holds the run's margin and releases them (PRODUCT §9.5)."""
    for tracker in session.scalars(select(MarginTracker).where(MarginTracker.account_id.in_(account_ids))):
        marked = entered(tracker.allocated_margins, run_id, now)
        if marked is not None:
            tracker.allocated_margins = marked


def finish_run(database: Database, run_id: int, now: datetime) -> dict[str, Any]:
    """The run's status and ``result`` from its executions (PRODUCT §5.1), once none is ``pending`` or
    ``exiting``; returns the summary (``open`` = executions still in either, when the run is left
    ``entering`` for the next attempt)."""
    with database.session() as session:
        run = session.get(StrategyRun, run_id, with_for_update=True)
        assert run is not None
        # Columns, not ORM objects: hundreds of executions per run, read on every attempt.
        rows = session.execute(
            select(
                StrategyExecution.id,
                StrategyExecution.status,
                StrategyExecution.leg_id,
                StrategyExecution.account_id,
                StrategyExecution.attempts,
                StrategyExecution.error_message,
                StrategyExecution.entry_price,
                StrategyExecution.filled_quantity,
                StrategyExecution.realized_pnl,
            ).where(StrategyExecution.run_id == run_id)
        ).all()
        counts: dict[str, int] = {}
        for r in rows:
            counts[r.status] = counts.get(r.status, 0) + 1
        previous = run.result if isinstance(run.result, dict) else {}
        summary: dict[str, Any] = {
            "run_id": run_id,
            "legs": len({r.leg_id for r in rows}),
            "accounts": len({r.account_id for r in rows}),
            "placed": counts.get("active", 0) + counts.get("exiting", 0),
            "failed": counts.get("failed", 0),
            "unwound": counts.get("exited", 0),
            "errors": counts.get("error", 0),
            "attempts": sum(r.attempts for r in rows),
            "failures": [
                {"execution_id": r.id, "account_id": r.account_id, "error": r.error_message}
                for r in rows
                if r.status in ("failed", "error") and r.error_message
            ],
            "skipped": previous.get("skipped", []),
        }
        # An unwind whose orders are still unresolved is as open as an entry: resolved on the next attempt.
        pending = counts.get("pending", 0) + counts.get("exiting", 0)
        if pending:
            summary["open"] = pending
            return summary
        if run.status != "entering":
            summary["status"] = run.status
            return summary
        if counts.get("error"):
            run.status = "error"
        elif summary["placed"]:
            run.status = "active"
        elif counts.get("exited"):
            run.status, run.exit_reason, run.ended_at = "closed", "entry_unwind", now
            # Closed like any exit's run: its final P&L is what the unwound legs realised.
            run.final_pnl = sum((r.realized_pnl or Decimal(0) for r in rows), Decimal(0))
        else:
            run.status, run.ended_at = "failed", now
        if summary["placed"] == len(rows):
            summary["outcome"] = "success"
        elif summary["placed"]:
            summary["outcome"] = "partial"
        else:
            summary["outcome"] = "error"
        run.entry_completed_at = now
        _entered(session, run_id, {r.account_id for r in rows}, now)
        legs = {
            leg.id: leg
            for leg in session.scalars(
                select(StrategyLeg).where(StrategyLeg.id.in_({r.leg_id for r in rows}))
            )
        }
        held = [r for r in rows if r.status == "active"]
        if held:
            run.base_premium = _base_premium(held, legs)
        for leg_id, leg in legs.items():
            # PRODUCT §5.1: a leg is executed while it has a position in the open run.
            leg.is_executed = any(r.leg_id == leg_id for r in held)
        summary["status"] = run.status
        run.result = summary
        return summary


def _base_premium(held: Sequence[Any], legs: dict[int, StrategyLeg]) -> Decimal:
    """E (PRODUCT §6.4): |Σ entry × qty of BUY executions − Σ entry × qty of SELL executions|, ₹."""
    net = Decimal(0)
    for r in held:
        if r.entry_price is None:
            continue
        value = r.entry_price * r.filled_quantity
        net += value if (legs[r.leg_id].action or "").upper() == "BUY" else -value
    return abs(net).quantize(Decimal("0.01"))


__all__ = [
    "AccountInfo",
    "EntryLeg",
    "RunPlan",
    "finish_entries",
    "finish_entry",
    "finish_exit",
    "finish_run",
    "load_plan",
    "mark_failed",
    "slice_quantities",
    "strategy_tag",
]
