"""Effective-dated contract rules: lot sizes, freeze limits and expiry weekdays (MARKET-FACTS §1.1–§1.3).

Everything an exchange can revise is a *row of data* with an effective date range, held in a
:class:`ContractSpecs` object; the logic only looks rows up. :func:`default_specs` returns the rows known
today; a revision (new lot size, new weekday) is a new row, not a code change, and a caller can build its
own :class:`ContractSpecs` (e.g. from a database table) with the same shape.

Lookup rules:

* **Lot size** belongs to a contract, keyed by its **expiry date**: the row whose expiry range contains
  the contract's expiry applies. This is a simplification of the exchanges' "contracts introduced after
  X" phasing (e.g. the NIFTY January 2025 monthly really stayed at 25); the instrument master of a real
  gateway is the truth, these rows drive the paper exchange and fallbacks.
* **Freeze quantity** (largest allowed units per order) is keyed by the **trading date**.
* **Expiry weekday** rules are keyed by the **nominal expiry date** (before any holiday shift): a weekly
  rule yields that weekday of every week in its range, a monthly rule the last such weekday of each month.
  Holiday shifts to the previous trading day are applied by :func:`algomirror.domain.calendar.expiry_dates`.
"""

from __future__ import annotations

import calendar as _stdlib_calendar
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

from algomirror.domain.errors import InvalidQuantity, NoRuleInForce

ExpiryKind = Literal["weekly", "monthly"]

MON, TUE, WED, THU, FRI = 0, 1, 2, 3, 4


@dataclass(frozen=True, slots=True)
class LotSizeRule:
    """``lot`` units per lot for contracts of ``underlying`` expiring in [expiry_from, expiry_to] (inclusive;
    None = open-ended)."""

    underlying: str
    lot: int
    expiry_from: date | None
    expiry_to: date | None
    source: str = ""


@dataclass(frozen=True, slots=True)
class FreezeRule:
    """Largest allowed units per order for ``underlying`` on trading dates in [effective_from, effective_to]
    (inclusive; None = open-ended)."""

    underlying: str
    freeze_qty: int
    effective_from: date | None
    effective_to: date | None
    source: str = ""


@dataclass(frozen=True, slots=True)
class ExpiryRule:
    """Weekly: every ``weekday`` (0 = Monday); monthly: the last ``weekday`` of each month — for nominal
    expiry dates in [effective_from, effective_to] (inclusive; None = open-ended)."""

    underlying: str
    kind: ExpiryKind
    weekday: int
    effective_from: date | None
    effective_to: date | None
    source: str = ""


def _covers(start: date | None, end: date | None, day: date) -> bool:
    return (start is None or start <= day) and (end is None or day <= end)


class ContractSpecs:
    """A queryable set of effective-dated rules. Overlapping rows: the first matching row wins."""

    def __init__(
        self,
        *,
        lot_sizes: Iterable[LotSizeRule],
        freezes: Iterable[FreezeRule],
        expiry_rules: Iterable[ExpiryRule],
    ) -> None:
        self.lot_sizes: tuple[LotSizeRule, ...] = tuple(lot_sizes)
        self.freezes: tuple[FreezeRule, ...] = tuple(freezes)
        self.expiry_rules: tuple[ExpiryRule, ...] = tuple(expiry_rules)

    def lot_size(self, underlying: str, expiry: date) -> int:
        """Units per lot of the ``underlying`` contract expiring on ``expiry``. Raises NoRuleInForce."""
        name = underlying.upper()
        for rule in self.lot_sizes:
            if rule.underlying == name and _covers(rule.expiry_from, rule.expiry_to, expiry):
                return rule.lot
        raise NoRuleInForce(f"no lot size for {name} expiring {expiry.isoformat()}")

    def freeze_qty(self, underlying: str, on: date) -> int:
        """Largest allowed units per order on trading date ``on``. Raises NoRuleInForce."""
        name = underlying.upper()
        for rule in self.freezes:
            if rule.underlying == name and _covers(rule.effective_from, rule.effective_to, on):
                return rule.freeze_qty
        raise NoRuleInForce(f"no freeze quantity for {name} on {on.isoformat()}")

    def rules_for(self, underlying: str, kind: ExpiryKind) -> list[ExpiryRule]:
        name = underlying.upper()
        return [r for r in self.expiry_rules if r.underlying == name and r.kind == kind]

    def has_weeklies(self, underlying: str, on: date) -> bool:
        """Whether a weekly-expiry rule is in force on ``on``."""
        return any(
            _covers(r.effective_from, r.effective_to, on) for r in self.rules_for(underlying, "weekly")
        )

    def nominal_expiries(self, underlying: str, kind: ExpiryKind, start: date, end: date) -> list[date]:
        """Expiry dates by the weekday rules alone (no holiday shift), within [start, end], ascending."""
        result: set[date] = set()
        for rule in self.rules_for(underlying, kind):
            lo = max(start, rule.effective_from) if rule.effective_from else start
            hi = min(end, rule.effective_to) if rule.effective_to else end
            if lo > hi:
                continue
            if kind == "weekly":
                day = lo + timedelta(days=(rule.weekday - lo.weekday()) % 7)
                while day <= hi:
                    result.add(day)
                    day += timedelta(days=7)
            else:
                year, month = lo.year, lo.month
                while date(year, month, 1) <= hi:
                    day = last_weekday_of_month(year, month, rule.weekday)
                    if lo <= day <= hi:
                        result.add(day)
                    year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        return sorted(result)


def last_weekday_of_month(year: int, month: int, weekday: int) -> date:
    """The last ``weekday`` (0 = Monday) of the month."""
    last = date(year, month, _stdlib_calendar.monthrange(year, month)[1])
    return last - timedelta(days=(last.weekday() - weekday) % 7)


def freeze_slices(quantity: int, freeze: int, lot: int) -> list[int]:
    """Split ``quantity`` units into exchange-acceptable orders (MARKET-FACTS §4, PRODUCT §5.8).

    Slice S = ⌊freeze / lot⌋ · lot; the result is ⌊Q/S⌋ slices of S plus the remainder Q mod S if non-zero
    (NIFTY 6500 units, freeze 1800, lot 65 → [1755, 1755, 1755, 1235]). Callers treat an OpenAlgo
    ``freeze_qty ≤ lotsize`` as unknown before calling.

    Raises :class:`InvalidQuantity` if ``lot`` ≤ 0, ``quantity`` is not a positive multiple of ``lot``, or
    ``freeze`` is below one lot.
    """
    if lot <= 0:
        raise InvalidQuantity(f"lot size must be positive, got {lot}")
    if quantity <= 0 or quantity % lot:
        raise InvalidQuantity(f"quantity {quantity} is not a positive multiple of the lot size {lot}")
    size = (freeze // lot) * lot
    if size <= 0:
        raise InvalidQuantity(f"freeze quantity {freeze} is below one lot ({lot})")
    full, rest = divmod(quantity, size)
    return [size] * full + ([rest] if rest else [])


# --- the rows known today -----------------------------------------------------------------------------------

_NOV24 = "NSE circular 18 Oct 2024 / BSE notice Oct 2024"
_JAN26 = "NSE/FAOP/70616 (3 Oct 2025): Jan 2026 series on"
_D = date

DEFAULT_LOT_SIZES: tuple[LotSizeRule, ...] = (
    LotSizeRule("NIFTY", 25, None, _D(2024, 12, 31), "pre-Nov 2024"),
    LotSizeRule("NIFTY", 75, _D(2025, 1, 1), _D(2025, 12, 30), _NOV24),
    LotSizeRule("NIFTY", 65, _D(2025, 12, 31), None, _JAN26),
    LotSizeRule("BANKNIFTY", 15, None, _D(2024, 12, 31), "pre-Nov 2024"),
    LotSizeRule(
        "BANKNIFTY", 30, _D(2025, 1, 1), _D(2025, 6, 30), _NOV24 + "; Apr-Jun 2025 monthlies stayed 30"
    ),
    LotSizeRule(
        "BANKNIFTY", 35, _D(2025, 7, 1), _D(2025, 12, 30), "NSE circular Mar 2025: first 31 Jul 2025"
    ),
    LotSizeRule("BANKNIFTY", 30, _D(2025, 12, 31), None, _JAN26),
    LotSizeRule("SENSEX", 10, None, _D(2024, 12, 31), "pre-Nov 2024"),
    LotSizeRule("SENSEX", 20, _D(2025, 1, 1), None, _NOV24),
    LotSizeRule("FINNIFTY", 25, None, _D(2024, 12, 31), "pre-Nov 2024"),
    LotSizeRule("FINNIFTY", 65, _D(2025, 1, 1), _D(2025, 12, 30), _NOV24),
    LotSizeRule("FINNIFTY", 60, _D(2025, 12, 31), None, _JAN26),
    LotSizeRule("MIDCPNIFTY", 50, None, _D(2024, 12, 31), "pre-Nov 2024"),
    LotSizeRule("MIDCPNIFTY", 120, _D(2025, 1, 1), _D(2025, 6, 30), _NOV24),
    LotSizeRule("MIDCPNIFTY", 140, _D(2025, 7, 1), _D(2025, 12, 30), "NSE: Jul 2025 series"),
    LotSizeRule("MIDCPNIFTY", 120, _D(2025, 12, 31), None, _JAN26),
    LotSizeRule("BANKEX", 15, None, _D(2024, 12, 31), "pre-Nov 2024"),
    LotSizeRule("BANKEX", 30, _D(2025, 1, 1), None, _NOV24),
)

DEFAULT_FREEZES: tuple[FreezeRule, ...] = (
    FreezeRule("NIFTY", 1800, None, None, "NSE/FAOP/67775; unchanged 2024-2026"),
    FreezeRule("BANKNIFTY", 900, None, _D(2025, 6, 30), "NSE"),
    FreezeRule("BANKNIFTY", 600, _D(2025, 7, 1), _D(2025, 8, 31), "NSE, 1 Jul 2025"),
    FreezeRule("BANKNIFTY", 900, _D(2025, 9, 1), _D(2025, 11, 2), "NSE, 1 Sep 2025"),
    FreezeRule("BANKNIFTY", 600, _D(2025, 11, 3), None, "NSE, 3 Nov 2025"),
    FreezeRule("SENSEX", 1000, None, None, "BSE"),
    FreezeRule("FINNIFTY", 1800, None, None, "NSE (1200 reported for Dec 2025-Jan 2026, unverified)"),
    FreezeRule("MIDCPNIFTY", 2800, None, None, "NSE (4200 reported in Mar 2025, unverified)"),
    FreezeRule("BANKEX", 900, None, None, "BSE"),
)

_SEP25 = "SEBI May 2025 Tue/Thu rule; NSE/FAOP/68747, BSE Jun 2025"
_JAN25 = "NSE circular 29 Nov 2024 / BSE notice 28 Nov 2024"

DEFAULT_EXPIRY_RULES: tuple[ExpiryRule, ...] = (
    # weeklies (one benchmark per exchange since 20 Nov 2024)
    ExpiryRule("NIFTY", "weekly", THU, None, _D(2025, 9, 1), "NSE"),
    ExpiryRule("NIFTY", "weekly", TUE, _D(2025, 9, 2), None, _SEP25),
    ExpiryRule(
        "BANKNIFTY", "weekly", WED, None, _D(2024, 11, 13), "NSE 10 Oct 2024: last weekly 13 Nov 2024"
    ),
    ExpiryRule("FINNIFTY", "weekly", TUE, None, _D(2024, 11, 19), "NSE 10 Oct 2024: last weekly 19 Nov 2024"),
    ExpiryRule(
        "MIDCPNIFTY", "weekly", MON, None, _D(2024, 11, 18), "NSE 10 Oct 2024: last weekly 18 Nov 2024"
    ),
    ExpiryRule("SENSEX", "weekly", FRI, None, _D(2025, 1, 3), "BSE"),
    ExpiryRule("SENSEX", "weekly", TUE, _D(2025, 1, 4), _D(2025, 8, 31), _JAN25),
    ExpiryRule("SENSEX", "weekly", THU, _D(2025, 9, 1), None, _SEP25),
    # monthlies
    ExpiryRule("NIFTY", "monthly", THU, None, _D(2025, 8, 31), "NSE"),
    ExpiryRule("NIFTY", "monthly", TUE, _D(2025, 9, 1), None, _SEP25),
    ExpiryRule("BANKNIFTY", "monthly", WED, None, _D(2024, 12, 31), "NSE"),
    ExpiryRule("BANKNIFTY", "monthly", THU, _D(2025, 1, 1), _D(2025, 8, 31), _JAN25),
    ExpiryRule("BANKNIFTY", "monthly", TUE, _D(2025, 9, 1), None, _SEP25),
    ExpiryRule("FINNIFTY", "monthly", TUE, None, _D(2024, 12, 31), "NSE"),
    ExpiryRule("FINNIFTY", "monthly", THU, _D(2025, 1, 1), _D(2025, 8, 31), _JAN25),
    ExpiryRule("FINNIFTY", "monthly", TUE, _D(2025, 9, 1), None, _SEP25),
    ExpiryRule("MIDCPNIFTY", "monthly", MON, None, _D(2024, 12, 31), "NSE"),
    ExpiryRule("MIDCPNIFTY", "monthly", THU, _D(2025, 1, 1), _D(2025, 8, 31), _JAN25),
    ExpiryRule("MIDCPNIFTY", "monthly", TUE, _D(2025, 9, 1), None, _SEP25),
    ExpiryRule("SENSEX", "monthly", FRI, None, _D(2024, 12, 31), "BSE"),
    ExpiryRule("SENSEX", "monthly", TUE, _D(2025, 1, 1), _D(2025, 8, 31), _JAN25),
    ExpiryRule("SENSEX", "monthly", THU, _D(2025, 9, 1), None, _SEP25),
    ExpiryRule("BANKEX", "monthly", MON, None, _D(2024, 12, 31), "BSE"),
    ExpiryRule("BANKEX", "monthly", TUE, _D(2025, 1, 1), _D(2025, 8, 31), _JAN25),
    ExpiryRule("BANKEX", "monthly", THU, _D(2025, 9, 1), None, _SEP25),
)


def default_specs() -> ContractSpecs:
    """The rules known as of early 2026 (MARKET-FACTS §1.1–§1.3)."""
    return ContractSpecs(
        lot_sizes=DEFAULT_LOT_SIZES, freezes=DEFAULT_FREEZES, expiry_rules=DEFAULT_EXPIRY_RULES
    )


_DEFAULT = default_specs()


def lot_size(underlying: str, expiry: date) -> int:
    """Lot size of a contract by its expiry, from the default rows. Raises NoRuleInForce."""
    return _DEFAULT.lot_size(underlying, expiry)


def freeze_qty(underlying: str, on: date) -> int:
    """Freeze quantity on a trading date, from the default rows. Raises NoRuleInForce."""
    return _DEFAULT.freeze_qty(underlying, on)
