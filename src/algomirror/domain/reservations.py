"""Margin reservations (PRODUCT §9.5): what an Execute sizes against while another run's entry is
still going into the same account.

A broker's funds show a run's margin only once its orders have filled. Between one Execute's sizing and
that moment, a second Execute on the same account would size against funds the first one is about to
use. So each planned run reserves its estimated margin on every account it enters (the account's
margin tracker, ``allocated_margins``: ``{"run:12": {"amount": "320000.00", "reserved_at": "…",
"entered_at": null}}``, amounts as strings), sizing subtracts every other run's reservation from the
account's cash, and a reservation is released by the first funds read taken after its run's entry ended
(``entered_at``): from then on the broker's own figures hold that margin. Plain data in, plain data out;
no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from algomirror.domain.sizing import AccountFunds

_PREFIX = "run:"


def reservation_key(run_id: int) -> str:
    """The key of run ``run_id``'s reservation in ``allocated_margins``."""
    return f"{_PREFIX}{run_id}"


def _amount(entry: object) -> Decimal | None:
    if not isinstance(entry, Mapping):
        return None
    try:
        amount = Decimal(str(entry.get("amount")))
    except (InvalidOperation, ValueError):
        return None
    return amount if amount.is_finite() and amount > 0 else None


def reserved(allocated: Mapping[str, Any] | None, *, excluding_run: int | None = None) -> Decimal:
    """Σ of the reservations in ``allocated`` (₹), leaving out ``excluding_run``'s; an entry whose amount
    cannot be read (or is not positive) counts nothing."""
    skip = None if excluding_run is None else reservation_key(excluding_run)
    total = Decimal(0)
    for key, entry in (allocated or {}).items():
        amount = _amount(entry)
        if key != skip and amount is not None:
            total += amount
    return total


def reserve(
    allocated: Mapping[str, Any] | None, run_id: int, amount: Decimal, at: datetime
) -> dict[str, Any]:
    """A new ``allocated_margins`` with run ``run_id`` reserving ``amount`` (₹, > 0) from ``at`` (aware);
    a reservation of the same run is replaced. Raises ValueError for an amount ≤ 0 or a naive time."""
    if not amount.is_finite() or amount <= 0:
        raise ValueError(f"a reservation must be a positive amount, not {amount}")
    if at.tzinfo is None:
        raise ValueError("reservation times are aware")
    fresh = dict(allocated or {})
    fresh[reservation_key(run_id)] = {
        "amount": str(amount),
        "reserved_at": at.isoformat(),
        "entered_at": None,
    }
    return fresh


def entered(allocated: Mapping[str, Any] | None, run_id: int, at: datetime) -> dict[str, Any] | None:
    """A new ``allocated_margins`` with run ``run_id``'s entry marked ended at ``at`` (aware), or None
    when the run holds no reservation there (nothing to write)."""
    key = reservation_key(run_id)
    entry = (allocated or {}).get(key)
    if not isinstance(entry, Mapping):
        return None
    fresh = dict(allocated or {})
    fresh[key] = {**entry, "entered_at": at.isoformat()}
    return fresh


def released(allocated: Mapping[str, Any] | None, fetched_at: datetime) -> dict[str, Any]:
    """``allocated_margins`` as a funds read taken at ``fetched_at`` (aware) leaves it: the reservations
    of runs whose entry ended before that read are gone (the read holds their margin), the others and
    any entry this module did not write stay as they are."""
    kept: dict[str, Any] = {}
    for key, entry in (allocated or {}).items():
        ended = entry.get("entered_at") if isinstance(entry, Mapping) else None
        if key.startswith(_PREFIX) and isinstance(ended, str):
            try:
                if datetime.fromisoformat(ended) < fetched_at:
                    continue
            except ValueError:
                pass  # unreadable: kept, and counted while it is
        kept[key] = entry
    return kept


def funds_left(funds: AccountFunds, reservation: Decimal) -> AccountFunds:
    """``funds`` with ``reservation`` (₹ other runs hold on the account) taken from its cash: what
    sizing may still use. Unknown cash stays unknown."""
    if funds.available_cash is None or reservation <= 0:
        return funds
    return AccountFunds(funds.available_cash - reservation, funds.collateral, funds.collateral_included)


__all__ = ["entered", "funds_left", "released", "reservation_key", "reserve", "reserved"]
