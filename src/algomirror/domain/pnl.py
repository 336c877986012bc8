"""P&L per execution (leg × account) and per strategy run, from fills (PRODUCT §6.1).

Execution P&L = sign × (mark − entry average) × open qty + sign × (exit average − entry average) × exited
qty, sign +1 for a BUY leg and −1 for a SELL leg. Entries and exits are fills (one per slice: its filled
quantity and average price). Every execution state reduces to quantities: ``pending`` with part fills and
``exiting`` / ``error`` rows hold open units valued at the mark until flat; ``failed`` has no fills (0);
``exited`` is flat (realised only).

Unknown is never 0 (§6.1): open units without a usable mark — or a fill whose price is still pending
(§5.11) — make the execution's total, its account's and the run's total ``None``; no rule may fire on it.
A mark ≤ 0 is treated as missing: gateways report 0 for "no trade", and valuing a short at 0 would look
like its whole premium earned.

Arithmetic is exact on fill values (Σ price × qty); averages are reported at 4 decimals (like
:func:`algomirror.db.types.Price`) and money at the paisa, both half up, each rounded once from the exact
value. So a run's total is the rounded exact sum and may differ by a paisa from the sum of rounded parts;
a P&L recomputed from 4-decimal averages may differ likewise.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

from algomirror.domain.errors import InvalidFill
from algomirror.domain.money import PAISA

Side = Literal["BUY", "SELL"]
RiskScope = Literal["aggregate", "per_account"]

AVERAGE_QUANTUM = Decimal("0.0001")
# Exited units' share of the entry cost is cut here so that exited + open cost add up to the entry value
# exactly (realised + unrealised is then exact); far below the paisa.
_COST_QUANTUM = Decimal("1E-12")


@dataclass(frozen=True, slots=True)
class Fill:
    """One filled slice: units and their average price. ``price`` None = "price pending" (§5.11)."""

    quantity: int
    price: Decimal | None

    def __post_init__(self) -> None:
        if isinstance(self.quantity, bool) or not isinstance(self.quantity, int) or self.quantity <= 0:
            raise InvalidFill(f"fill quantity must be a positive integer, not {self.quantity!r}")
        if self.price is not None and (
            not isinstance(self.price, Decimal) or not self.price.is_finite() or self.price < 0
        ):
            raise InvalidFill(f"fill price must be a finite Decimal ≥ 0, not {self.price!r}")


@dataclass(frozen=True, slots=True)
class ExecutionFills:
    """What P&L needs of one execution: its run, account, leg, entry side, fills and current mark (LTP).

    ``mark`` is the caller's *usable* mark (healthy feed or a fresh REST quote, §6.1) or None.
    """

    run_id: int
    account_id: int
    leg_id: int
    side: Side
    entries: Sequence[Fill] = ()
    exits: Sequence[Fill] = ()
    mark: Decimal | None = None

    def __post_init__(self) -> None:
        if self.side not in ("BUY", "SELL"):
            raise InvalidFill(f"side must be BUY or SELL, not {self.side!r}")


@dataclass(frozen=True, slots=True)
class ExecutionPnl:
    """One execution's P&L. ``None`` in a money field = unknown (never 0)."""

    run_id: int
    account_id: int
    leg_id: int
    entry_quantity: int
    exit_quantity: int
    open_quantity: int
    entry_average: Decimal | None  # 4 dp; None without entries or with a price pending
    exit_average: Decimal | None
    realised: Decimal | None  # on exited units; 0 when nothing exited
    unrealised: Decimal | None  # on open units at the mark; 0 when flat
    total: Decimal | None
    # Exact values behind the rounded ones, for sums (rounded only at the end).
    exact_realised: Decimal | None = field(repr=False, compare=False, default=None)
    exact_unrealised: Decimal | None = field(repr=False, compare=False, default=None)

    @property
    def is_flat(self) -> bool:
        return self.open_quantity == 0

    @property
    def is_known(self) -> bool:
        return self.total is not None


@dataclass(frozen=True, slots=True)
class PnlTotals:
    """Realised, unrealised and total of a group of executions (an account, or the whole run)."""

    realised: Decimal | None
    unrealised: Decimal | None
    total: Decimal | None

    @property
    def is_known(self) -> bool:
        return self.total is not None


@dataclass(frozen=True, slots=True)
class RunPnl:
    """A run's P&L: ``aggregate`` (all accounts) and ``per_account`` views, and each execution's figures.

    ``unknown`` lists the executions whose P&L is unknown (for the "no mark" alert).
    """

    run_id: int
    aggregate: PnlTotals
    per_account: dict[int, PnlTotals]
    executions: tuple[ExecutionPnl, ...]
    unknown: tuple[ExecutionPnl, ...]

    def for_scope(self, scope: RiskScope) -> dict[int | None, PnlTotals]:
        """The values a risk rule evaluates: ``{None: aggregate}`` or ``{account_id: totals}``."""
        if scope == "aggregate":
            return {None: self.aggregate}
        if scope == "per_account":
            views: dict[int | None, PnlTotals] = dict(self.per_account.items())
            return views
        raise ValueError(f"unknown risk scope {scope!r}")


def _money(value: Decimal | None) -> Decimal | None:
    return None if value is None else value.quantize(PAISA, rounding=ROUND_HALF_UP)


def _totals(fills: Iterable[Fill]) -> tuple[int, Decimal | None]:
    """(Σ quantity, Σ price × quantity); the value is None when any price is pending."""
    quantity = 0
    value: Decimal | None = Decimal(0)
    for fill in fills:
        quantity += fill.quantity
        if fill.price is None:
            value = None
        elif value is not None:
            value += fill.price * fill.quantity
    return quantity, value


def _average(quantity: int, value: Decimal | None) -> Decimal | None:
    if quantity == 0 or value is None:
        return None
    return (value / quantity).quantize(AVERAGE_QUANTUM, rounding=ROUND_HALF_UP)


def execution_pnl(execution: ExecutionFills) -> ExecutionPnl:
    """P&L of one execution (PRODUCT §6.1). Raises :class:`InvalidFill` when exits exceed entries."""
    entry_qty, entry_value = _totals(execution.entries)
    exit_qty, exit_value = _totals(execution.exits)
    open_qty = entry_qty - exit_qty
    if open_qty < 0:
        raise InvalidFill(
            f"execution leg {execution.leg_id} account {execution.account_id}: exits {exit_qty} exceed "
            f"entries {entry_qty}"
        )
    sign = 1 if execution.side == "BUY" else -1
    mark = execution.mark if execution.mark is not None and execution.mark > 0 else None

    realised: Decimal | None = Decimal(0)
    unrealised: Decimal | None = Decimal(0)
    if entry_qty:
        if entry_value is None:
            realised = None if exit_qty else realised
            unrealised = None if open_qty else unrealised
        else:
            exited_cost = (entry_value * exit_qty / entry_qty).quantize(_COST_QUANTUM, ROUND_HALF_UP)
            open_cost = entry_value - exited_cost
            if exit_qty:
                realised = None if exit_value is None else sign * (exit_value - exited_cost)
            if open_qty:
                unrealised = None if mark is None else sign * (mark * open_qty - open_cost)
    total = None if realised is None or unrealised is None else realised + unrealised
    return ExecutionPnl(
        run_id=execution.run_id,
        account_id=execution.account_id,
        leg_id=execution.leg_id,
        entry_quantity=entry_qty,
        exit_quantity=exit_qty,
        open_quantity=open_qty,
        entry_average=_average(entry_qty, entry_value),
        exit_average=_average(exit_qty, exit_value),
        realised=_money(realised),
        unrealised=_money(unrealised),
        total=_money(total),
        exact_realised=realised,
        exact_unrealised=unrealised,
    )


def _sum(values: Iterable[Decimal | None]) -> Decimal | None:
    result = Decimal(0)
    for value in values:
        if value is None:
            return None
        result += value
    return result


def _group_totals(rows: Sequence[ExecutionPnl]) -> PnlTotals:
    realised = _sum(r.exact_realised for r in rows)
    unrealised = _sum(r.exact_unrealised for r in rows)
    total = None if realised is None or unrealised is None else realised + unrealised
    return PnlTotals(_money(realised), _money(unrealised), _money(total))


def run_pnl(executions: Iterable[ExecutionFills], run_id: int) -> RunPnl:
    """Strategy P&L of run ``run_id``: executions of other runs are ignored (§6.1: the current run only —
    yesterday's loss must not trip today's stop). An empty run is a known 0."""
    rows = tuple(execution_pnl(e) for e in executions if e.run_id == run_id)
    by_account: dict[int, list[ExecutionPnl]] = {}
    for row in rows:
        by_account.setdefault(row.account_id, []).append(row)
    return RunPnl(
        run_id=run_id,
        aggregate=_group_totals(rows),
        per_account={account: _group_totals(group) for account, group in sorted(by_account.items())},
        executions=rows,
        unknown=tuple(r for r in rows if r.total is None),
    )


__all__ = [
    "AVERAGE_QUANTUM",
    "ExecutionFills",
    "ExecutionPnl",
    "Fill",
    "PnlTotals",
    "RiskScope",
    "RunPnl",
    "Side",
    "execution_pnl",
    "run_pnl",
]
