"""What resolving a strategy found (:class:`Resolution`): each leg as resolved, each selected account
with its funds or the reason it is skipped, and each leg × account cell with its lots, slices and
estimated margin; the preview's JSON (:meth:`Resolution.to_json`) and the pairs an Execute plans
(:meth:`Resolution.planned`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from algomirror.domain.sizing import AccountFunds
from algomirror.engine.planning import PlannedExecution
from algomirror.engine.resolution_snapshot import SnapshotAccount, SnapshotLeg


def decimal_text(value: Decimal | None) -> str | None:
    """A decimal as its plain string (``"26200.05"``), None as None: amounts and prices in JSON."""
    return None if value is None else format(value, "f")


@dataclass
class LegResult:
    """One leg as resolved for every account (same contract everywhere, PRODUCT §5.2)."""

    leg: SnapshotLeg
    exchange: str | None = None
    expiry: date | None = None
    strike: Decimal | None = None
    symbol: str | None = None
    ltp: Decimal | None = None
    lot_size: int | None = None
    freeze: int | None = None
    error: str | None = None  # the leg fails on every account
    blocked: str | None = None  # resolved, but cannot be placed now (market closed)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and self.symbol is not None and self.lot_size is not None


@dataclass
class AccountResult:
    """One selected account: why it is skipped (None = planned), its funds and warnings."""

    account_id: int
    name: str
    reason: str | None = None
    funds: AccountFunds | None = None
    available: Decimal | None = None
    margin: Decimal | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class Cell:
    """One leg × account: lots, quantity, slices, estimated margin, and why it is not placed."""

    leg_id: int
    account_id: int
    lots: int = 0
    quantity: int = 0
    slices: list[int] = field(default_factory=list)
    margin: Decimal | None = None
    status: str = "ok"  # ok | skipped | failed
    reason: str | None = None


@dataclass
class Resolution:
    """What resolving a strategy found; ``errors`` refuse the whole Execute."""

    strategy_id: int
    strategy_name: str
    resolved_at: datetime
    product: str
    feed: SnapshotAccount | None = None
    spot: dict[str, Decimal] = field(default_factory=dict)
    atm: dict[str, Decimal] = field(default_factory=dict)
    instrument_errors: dict[str, str] = field(default_factory=dict)
    legs: list[LegResult] = field(default_factory=list)
    accounts: list[AccountResult] = field(default_factory=list)
    cells: list[Cell] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    open_run: int | None = None

    def planned(self) -> list[PlannedExecution]:
        """The leg × account pairs an Execute plans (every ``ok`` cell)."""
        legs = {r.leg.id: r for r in self.legs}
        out = []
        for cell in self.cells:
            leg = legs[cell.leg_id]
            if cell.status == "ok" and leg.symbol and leg.exchange:
                out.append(
                    PlannedExecution(
                        cell.leg_id,
                        cell.account_id,
                        leg.symbol,
                        leg.exchange,
                        self.product,
                        cell.quantity,
                        leg.leg.instrument,
                    )
                )
        return out

    def skipped(self) -> list[tuple[int, str]]:
        """(account id, reason) of every selected account an Execute leaves out."""
        return [(a.account_id, a.reason) for a in self.accounts if a.reason is not None]

    def reasons(self) -> list[str]:
        """Every reason nothing (or not everything) is placed, for a failed command's error."""
        out = list(self.errors)
        out += [f"leg {r.leg.number}: {r.error}" for r in self.legs if r.error]
        out += [f"leg {r.leg.number}: {r.blocked}" for r in self.legs if r.blocked and not r.error]
        out += [f"{a.name}: {a.reason}" for a in self.accounts if a.reason]
        return list(dict.fromkeys(out))

    def to_json(self) -> dict[str, Any]:
        """The preview as JSON (amounts and prices as decimal strings, dates ISO)."""
        names = {a.account_id: a.name for a in self.accounts}
        return {
            "strategy_id": self.strategy_id,
            "strategy_name": self.strategy_name,
            "resolved_at": self.resolved_at.isoformat(),
            "feed_account": None if self.feed is None else {"id": self.feed.id, "name": self.feed.name},
            "instruments": {
                name: {
                    "spot": decimal_text(self.spot.get(name)),
                    "atm": decimal_text(self.atm.get(name)),
                    "error": self.instrument_errors.get(name),
                }
                for name in sorted({r.leg.instrument for r in self.legs})
            },
            "legs": [
                {
                    "leg_id": r.leg.id,
                    "leg_number": r.leg.number,
                    "instrument": r.leg.instrument,
                    "action": r.leg.action,
                    "kind": r.leg.kind,
                    "selection": r.leg.selection,
                    "exchange": r.exchange,
                    "expiry": r.expiry.isoformat() if r.expiry else None,
                    "strike": decimal_text(r.strike),
                    "symbol": r.symbol,
                    "ltp": decimal_text(r.ltp),
                    "lot_size": r.lot_size,
                    "freeze": r.freeze,
                    "error": r.error,
                    "blocked": r.blocked,
                    "warnings": r.warnings,
                }
                for r in self.legs
            ],
            "accounts": [
                {
                    "account_id": a.account_id,
                    "name": a.name,
                    "status": "skipped" if a.reason else "ok",
                    "reason": a.reason,
                    "available_funds": decimal_text(a.available),
                    "estimated_margin": decimal_text(a.margin),
                    "warnings": a.warnings,
                }
                for a in self.accounts
            ],
            "rows": [
                {
                    "leg_id": c.leg_id,
                    "account_id": c.account_id,
                    "account_name": names.get(c.account_id, ""),
                    "lots": c.lots,
                    "quantity": c.quantity,
                    "slices": c.slices,
                    "estimated_margin": decimal_text(c.margin),
                    "status": c.status,
                    "reason": c.reason,
                }
                for c in self.cells
            ],
            "errors": self.errors,
            "warnings": self.warnings,
            "open_run": self.open_run,
            "plannable": len(self.planned()),
        }


__all__ = ["AccountResult", "Cell", "LegResult", "Resolution", "decimal_text"]
