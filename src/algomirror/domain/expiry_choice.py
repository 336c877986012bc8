"""Resolve a leg's expiry choice against the gateway's listed expiries (PRODUCT §5.3).

The gateway's ``/expiry`` list (``DD-MMM-YY``) for (instrument, exchange, options|futures) is the truth: its
dates are already holiday-shifted. The list is parsed, de-duplicated, sorted, and contracts that are past at
the given instant (after 15:30 IST on their date, :func:`~algomirror.domain.calendar.is_expired`) are
dropped — a cached list from the morning must not hand out the contract that expired at 15:30.

"Monthly" = the last listed expiry of a calendar month. "This month" / "next month" are calendar months of
the instant's IST date, as §5.3 states them:

* options: ``current_week`` nearest; ``next_week`` second (first if only one); ``current_month`` this
  month's monthly, else next month's, else the first later month-end; ``next_month`` next month's monthly,
  else the month after, else the first later month-end;
* futures: ``current_week`` and ``current_month`` nearest; ``next_week`` and ``next_month`` second (first
  if only one).

Because every live expiry is on or after today, "this month's; else next month's; else the first later"
is the monthly of the first month from the reference month on that has a live expiry. Note the literal
reading this gives once this month's monthly is past: ``current_month`` and ``next_month`` both resolve to
next month's monthly (an options ``next_month`` never falls back to an earlier month; with nothing listed
after this month it fails).

:func:`calendar_listed_expiries` predicts such a list from the trading calendar (the paper exchange's
listing), built on :func:`~algomirror.domain.calendar.expiry_dates`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from typing import Literal

from algomirror.domain.calendar import TradingCalendar, expiry_dates, is_expired
from algomirror.domain.contract_specs import ContractSpecs
from algomirror.domain.errors import ExpiryNotResolved, InvalidSymbol
from algomirror.domain.instruments import parse_expiry_dashed
from algomirror.domain.timeutil import ist_today

ExpiryChoice = Literal["current_week", "next_week", "current_month", "next_month"]
ContractKind = Literal["options", "futures"]

EXPIRY_CHOICES: tuple[ExpiryChoice, ...] = ("current_week", "next_week", "current_month", "next_month")
CONTRACT_KINDS: tuple[ContractKind, ...] = ("options", "futures")


def live_expiries(listed: Iterable[date | str], instant: datetime) -> list[date]:
    """The listed expiries that are not past at ``instant``, de-duplicated and ascending.

    Strings are the gateway's ``DD-MMM-YY``. One unreadable entry makes the whole list unusable (a skipped
    entry could silently move "nearest" to another week): raises :class:`ExpiryNotResolved`.
    """
    parsed: set[date] = set()
    for item in listed:
        if isinstance(item, date):
            parsed.add(item)
            continue
        try:
            parsed.add(parse_expiry_dashed(item))
        except InvalidSymbol as exc:
            raise ExpiryNotResolved(f"could not resolve expiry: unreadable listed expiry {item!r}") from exc
    return sorted(d for d in parsed if not is_expired(d, instant))


def monthly_expiries(expiries: Iterable[date]) -> dict[tuple[int, int], date]:
    """(year, month) → the last of ``expiries`` in that calendar month, in ascending month order."""
    last: dict[tuple[int, int], date] = {}
    for day in sorted(expiries):
        last[(day.year, day.month)] = day
    return last


def _month_after(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def _monthly_from(monthlies: dict[tuple[int, int], date], first: tuple[int, int]) -> date | None:
    """The monthly of ``first`` if listed; else of the month after; else the first later month-end."""
    for month, day in monthlies.items():
        if month >= first:
            return day
    return None


def resolve_expiry(
    choice: ExpiryChoice | str,
    kind: ContractKind | str,
    listed: Iterable[date | str],
    instant: datetime,
) -> date:
    """The expiry a leg trades for ``choice`` and ``kind`` (options | futures) at aware ``instant``.

    Raises :class:`ExpiryNotResolved` ("could not resolve expiry": the leg fails on every account) when
    the list is empty, unreadable, has no live expiry, or has no month from the one the choice asks for;
    ValueError for an unknown choice or kind (a caller bug, not a market condition).
    """
    if choice not in EXPIRY_CHOICES:
        raise ValueError(f"unknown expiry choice {choice!r}")
    if kind not in CONTRACT_KINDS:
        raise ValueError(f"unknown contract kind {kind!r}")
    live = live_expiries(listed, instant)
    if not live:
        raise ExpiryNotResolved("could not resolve expiry: no listed expiry that is not past")
    if kind == "futures" or choice in ("current_week", "next_week"):
        # Futures lists hold monthlies only: the "month" choices are the nearest and the second contract.
        second = choice in ("next_week", "next_month")
        return live[1] if second and len(live) > 1 else live[0]
    today = ist_today(instant)
    this_month = (today.year, today.month)
    first = this_month if choice == "current_month" else _month_after(*this_month)
    picked = _monthly_from(monthly_expiries(live), first)
    if picked is None:
        raise ExpiryNotResolved(f"could not resolve expiry: nothing listed for {choice} after {today}")
    return picked


def calendar_listed_expiries(
    underlying: str,
    kind: ContractKind | str,
    start: date,
    end: date,
    calendar: TradingCalendar,
    specs: ContractSpecs | None = None,
) -> list[date]:
    """The expiries the paper exchange lists for ``underlying`` within [start, end], holiday-shifted.

    Options: weekly ∪ monthly expiries; futures: monthly only (PRODUCT §4.2). Thin composition of
    :func:`~algomirror.domain.calendar.expiry_dates`; the paper exchange further limits its window (how
    many weeks and monthlies it lists), which callers express through ``end``.
    """
    if kind not in CONTRACT_KINDS:
        raise ValueError(f"unknown contract kind {kind!r}")
    found = set(expiry_dates(underlying, "monthly", start, end, calendar, specs))
    if kind == "options":
        found |= set(expiry_dates(underlying, "weekly", start, end, calendar, specs))
    return sorted(found)


__all__ = [
    "CONTRACT_KINDS",
    "EXPIRY_CHOICES",
    "ContractKind",
    "ExpiryChoice",
    "calendar_listed_expiries",
    "live_expiries",
    "monthly_expiries",
    "resolve_expiry",
]
