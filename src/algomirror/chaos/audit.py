"""The chaos auditor (issue 13, Deliver 2): the paper exchange's own ledger against AlgoMirror's records.

The exchange's orders and trades (``GET /sim/ledger`` on its control API) are the ground truth. The audit
checks, per account, that every intended order reached the exchange at most once, that no position of a run
crossed zero (an exit never oversells or overbuys), that entry BUY legs were filled before any entry SELL
leg was sent, and (at the end, engine idle) that every opened position was closed exactly once or is
visibly in error with an alert, that AlgoMirror's realised P&L equals the exchange's to the paisa, and that
nothing was left in an in-between state without an alert. :func:`render` prints the table and the one-line
summary the chaos command ends with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from algomirror.db.session import Database


@dataclass(frozen=True)
class LedgerOrder:
    """One order as the paper exchange holds it. ``strategy`` is the tag sent with it (``AM-S{strategy_id}``
    for a run's orders, ``AM-M{command_id}`` for a manual one); ``created`` is aware UTC (exchange clock)."""

    account_key: str
    orderid: str
    strategy: str
    symbol: str
    exchange: str
    product: str
    action: str  # BUY | SELL
    quantity: int
    filled_quantity: int
    average_price: Decimal | None
    status: str
    created: datetime


@dataclass(frozen=True)
class LedgerTrade:
    """One fill at the exchange (``price`` in rupees, ``timestamp`` aware UTC on the exchange clock)."""

    account_key: str
    tradeid: str
    orderid: str
    symbol: str
    exchange: str
    product: str
    action: str
    quantity: int
    price: Decimal
    timestamp: datetime


@dataclass(frozen=True)
class Ledger:
    """Every account's orders and trades at the exchange at one instant."""

    orders: tuple[LedgerOrder, ...]
    trades: tuple[LedgerTrade, ...]


def fetch_ledger(control_url: str, token: str, *, timeout: float = 10.0) -> Ledger:
    """``GET {control_url}/sim/ledger`` with the control token; the exchange's orders and trades.

    ``control_url`` is the exchange's REST base (``http://127.0.0.1:PORT``), ``timeout`` in seconds.
    Raises ``httpx.HTTPError`` when the exchange cannot be reached or answers other than 200, and
    ``ValueError`` when the answer is not a ledger.
    """
    raise NotImplementedError


@dataclass
class AuditReport:
    """What the audit found; each list holds one human-readable line per finding (account, symbol, ids)."""

    orders: int  # exchange orders carrying an AlgoMirror tag
    duplicates: list[str]
    missed_exits: list[str]
    reversed_positions: list[str]
    pnl_mismatches: list[str]
    unexplained: list[str]
    buy_first_violations: list[str]  # an entry SELL leg sent on an account before its BUY legs filled

    @property
    def defects(self) -> int:
        """The number of findings of every kind."""
        return (
            len(self.duplicates)
            + len(self.missed_exits)
            + len(self.reversed_positions)
            + len(self.pnl_mismatches)
            + len(self.unexplained)
            + len(self.buy_first_violations)
        )

    @property
    def ok(self) -> bool:
        """True when nothing was found."""
        return self.defects == 0


def audit(database: Database, ledger: Ledger, *, account_keys: Mapping[int, str], final: bool) -> AuditReport:
    """Compare ``ledger`` (the exchange) with the journal, executions, runs, commands and alerts in
    ``database``.

    ``account_keys`` maps ``trading_accounts.id`` to that account's API key at the exchange; exchange
    orders of other keys are ignored. ``final=False`` (after a restart, the engine possibly mid-work)
    checks only what must hold at every instant: duplicates, reversed positions, BUY-first order.
    ``final=True`` (engine idle, every cycle finished) checks everything. Raises only on database errors.
    """
    raise NotImplementedError


@dataclass(frozen=True)
class RunStats:
    """Figures of one chaos run for the table (``seconds`` is wall-clock duration)."""

    seed: int
    database: str
    cycles: int
    strategy_account_cycles: int
    kills: int
    kills_by_point: Mapping[str, int]
    faults: Mapping[str, int]
    orders: int
    seconds: float


def render(report: AuditReport, stats: RunStats) -> str:
    """The table (cycles, faults by kind, kills by point, orders, then each kind of finding with its lines)
    and, last, exactly
    ``chaos: C cycles, K kills, duplicates D, missed exits M, reversed R, pnl mismatches P, unexplained U``.
    """
    raise NotImplementedError
