"""The risk engine's in-memory state (PRODUCT §6): configuration, the open runs and their executions as
the engine holds them, the breach a rule reports, and the protocols of the live bus and of added run
rules. Money is Decimal rupees, quantities int units, times aware UTC (``*_at`` on the market clock) or
monotonic seconds (throttles).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, Protocol

from algomirror.domain.risk import TrailingState

# Executions whose units count in the run's P&L (open units at the mark, exited ones realised).
HELD = ("pending", "active", "exiting", "exited", "error")
# Executions a rule may still claim (not yet owned by an exit).
CLAIMABLE = ("pending", "active")
# Run latch columns per run rule: (triggered_at, value).
LATCHES: dict[str, tuple[str, str]] = {
    "max_loss": ("max_loss_triggered_at", "max_loss_value"),
    "max_profit": ("max_profit_triggered_at", "max_profit_value"),
    "trailing_stop": ("trailing_triggered_at", "trailing_value"),
    "supertrend_exit": ("supertrend_triggered_at", "supertrend_value"),
}
RISK_ALERT_KIND = "risk"


class LiveBus(Protocol):
    """The part of the live bus this component uses (``algomirror.live``)."""

    def publish(self, topic: str, event: str, data: dict[str, Any]) -> None: ...


@dataclass(frozen=True, slots=True)
class RiskConfig:
    """Seconds. ``tick``: the sweep loop's step (a run is swept every ``risk_check_interval`` of its
    strategy, at least one step); ``reload_seconds``: how often open runs are re-read (changed ones
    only); ``persist_seconds``: throttle of trailing-state and leg-level writes (a firing always writes
    them first; short, because a crash loses the peak progress since the last write);
    ``unknown_alert_seconds``: P&L unknown this long in market hours → an alert;
    ``snapshot_seconds``: the least gap between two live snapshots of a run whose marks changed, and
    ``heartbeat_seconds`` the most (monotonic); ``sample_seconds``: the least gap between two stored P&L
    samples of a run (market clock)."""

    tick: float = 0.5
    reload_seconds: float = 2.0
    persist_seconds: float = 1.0
    unknown_alert_seconds: float = 15.0
    snapshot_seconds: float = 0.25
    heartbeat_seconds: float = 2.0
    sample_seconds: float = 10.0


@dataclass(frozen=True, slots=True)
class Breach:
    """A run rule that fired: ``code`` (risk event type = exit reason), the P&L (₹) it fired at, the
    threshold (₹) and whether it exits (False: ``alert_only``)."""

    code: str
    pnl: Decimal
    threshold: Decimal | None
    detail: str
    auto_exit: bool = True


@dataclass(slots=True)
class ExecutionState:
    """One execution of an open run, as the risk engine holds it (prices ₹, quantities units)."""

    id: int
    run_id: int
    account_id: int
    leg_id: int
    symbol: str
    exchange: str
    side: Literal["BUY", "SELL"]
    status: str
    filled: int
    exited: int
    entry_price: Decimal | None
    exit_price: Decimal | None
    monitored: bool
    # Leg rule configuration (the strategy leg) and levels (stored on the execution).
    sl_type: str | None = None
    sl_value: Decimal | None = None
    tp_type: str | None = None
    tp_value: Decimal | None = None
    trailing_kind: str | None = None
    trailing_value: Decimal | None = None
    stop_loss: Decimal | None = None
    target: Decimal | None = None
    best: Decimal | None = None
    hit: bool = False
    levels_dirty: bool = False
    # The leg's rule settings could not be evaluated (logged once; its leg rules are off).
    leg_error: bool = False

    @property
    def open_units(self) -> int:
        return max(self.filled - self.exited, 0)


@dataclass(slots=True)
class RunState:
    """One open run and its strategy's risk settings (₹; ``interval`` seconds)."""

    id: int
    strategy_id: int
    user_id: int
    name: str
    status: str
    signature: tuple[Any, ...]
    monitoring: bool
    scope: str
    interval: float
    max_loss: Decimal | None
    max_profit: Decimal | None
    auto_exit_loss: bool
    auto_exit_profit: bool
    trailing_kind: str
    trailing_value: Decimal | None
    entry_completed: bool
    executions: dict[int, ExecutionState] = field(default_factory=dict)
    trailing: TrailingState | None = None
    trailing_stored: TrailingState | None = None
    trailing_written: float = 0.0
    # (rule code, account id or None) that fired in this run; execution ids claimed by a rule.
    fired: set[tuple[str, int | None]] = field(default_factory=set)
    claimed: set[int] = field(default_factory=set)
    last_sweep: float = 0.0
    unknown_since: datetime | None = None
    unknown_alerted: bool = False
    last_pnl: Decimal | None = None
    # Live snapshot throttle (monotonic seconds of the last one; marks changed since) and the market
    # time of the run's newest stored P&L sample.
    snapshot_at: float | None = None
    marks_changed: bool = True
    flush_pending: bool = False
    sample_at: datetime | None = None


class RunRule(Protocol):
    """A run rule (the hook for Supertrend): ``check`` is called on the engine loop with the view's
    known P&L (₹; ``account_id`` None = the whole run) and must not do I/O; a Breach fires it. A rule
    evaluated only at candle closes may instead call :meth:`RiskEngine.fire` itself."""

    code: str

    def check(self, run: RunState, pnl: Decimal, account_id: int | None) -> Breach | None: ...


__all__ = [
    "CLAIMABLE",
    "HELD",
    "LATCHES",
    "RISK_ALERT_KIND",
    "Breach",
    "ExecutionState",
    "LiveBus",
    "RiskConfig",
    "RunRule",
    "RunState",
]
