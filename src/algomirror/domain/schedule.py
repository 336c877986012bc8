"""What a strategy's schedule makes due at one instant (PRODUCT §4.1 times, §6.10 square-off, §8 jobs).

Pure decisions over plain facts; the engine's scheduler (:mod:`algomirror.engine.scheduler`) gathers the
facts (calendar, open run, products) and turns each :class:`Due` into a command or an activity row.

Rules, all times IST wall-clock on the IST date of ``now``:

* **entry** at ``entry_time`` on a regular trading day whose market condition matches, when no run is
  open, before the exit and square-off times, and at most ``grace`` after ``entry_time``. Later than
  that (the engine was down) the entry is *missed*, never sent late: one ``entry_missed`` with the reason.
  An entry at or after the square-off time (or the exit time) is missed at once: §6.10 blocks entries
  for the rest of the day. A run still open from before the entry time only waits out the grace window;
  a run started at or after it is the day's entry (nothing more is decided).
* **exit** of an open run at ``exit_time`` (``time_exit``); **square-off** of an open run holding an
  intraday (MIS) execution at ``square_off_time``. Both apply to the latest such instant on a trading
  day that is not in the future, when the run started before it: an instant missed while the engine was
  down (even the previous trading day's) is due at once. They are only due while the market is open
  (an order outside the session would only be rejected); a square-off due at the same time as an exit
  replaces it.
* **mis_warning** in the last 10 minutes of the session for an open MIS run of a strategy without a
  square-off time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Literal

from algomirror.domain.calendar import TradingCalendar
from algomirror.domain.contract_specs import ContractSpecs
from algomirror.domain.errors import DomainError
from algomirror.domain.expiry_choice import EXPIRY_CHOICES, calendar_listed_expiries, resolve_expiry
from algomirror.domain.timeutil import ensure_aware, ist_combine, ist_today

DueKind = Literal["entry", "entry_missed", "exit", "square_off", "mis_warning"]
MIS_WARNING_LEAD = timedelta(minutes=10)
# How far ahead the listed expiries are predicted: enough for a next_month choice late in a month.
_LISTING_DAYS = 120
# The instant a day's "traded contract" is resolved at: the open, so today's expiry is still live.
_RESOLVE_AT = time(9, 15)


@dataclass(frozen=True, slots=True)
class Schedule:
    """A strategy's IST times; None = off."""

    entry: time | None = None
    exit: time | None = None
    square_off: time | None = None


@dataclass(frozen=True, slots=True)
class OpenRun:
    """The strategy's open run: when it started (aware) and whether it holds an open MIS execution."""

    run_id: int
    started_at: datetime
    has_mis: bool


@dataclass(frozen=True, slots=True)
class DayFacts:
    """Calendar facts of the IST date ``today`` for the strategy's exchanges.

    ``trading_day``: a regular session day (not a holiday or weekend); ``condition_matches``: the
    strategy's market condition holds today; ``in_session``: the market is open at ``now``; ``close``:
    today's last close (aware UTC) or None; ``previous_trading_day``: the last trading day before
    ``today`` (None when unknown), where a missed exit of a previous day is looked for.
    """

    today: date
    trading_day: bool
    condition_matches: bool
    in_session: bool
    close: datetime | None
    previous_trading_day: date | None


@dataclass(frozen=True, slots=True)
class Due:
    """One action due now: ``day`` is the IST date it belongs to (part of its once-only token), ``at``
    the scheduled instant (aware UTC), ``reason`` a readable why (for ``entry_missed``)."""

    kind: DueKind
    day: date
    at: datetime
    run_id: int | None = None
    reason: str = ""


def market_condition_matches(condition: str, expiry_day: bool) -> bool:
    """``any`` always; ``expiry`` on an expiry day; ``non_expiry`` on any other day. Raises ValueError
    for an unknown condition."""
    if condition == "any":
        return True
    if condition == "expiry":
        return expiry_day
    if condition == "non_expiry":
        return not expiry_day
    raise ValueError(f"unknown market condition {condition!r}")


@dataclass(frozen=True, slots=True)
class LegContract:
    """What a leg trades, for the expiry-day test: instrument, ``options``/``futures``/``equity`` and the
    expiry choice (``current_week`` …)."""

    instrument: str | None
    product_type: str | None
    expiry: str | None


def is_expiry_day(
    legs: Iterable[LegContract],
    today: date,
    calendar: TradingCalendar,
    specs: ContractSpecs | None = None,
) -> bool:
    """Whether ``today`` is the expiry date of a contract one of ``legs`` trades (PRODUCT §4.1: the traded
    contract, resolved as §5.3 does against the calendar's predicted listing, holiday shifts included).

    Equity legs and legs whose contract cannot be resolved (unknown instrument, no rule) do not count.
    """
    at = ist_combine(today, _RESOLVE_AT)
    horizon = today + timedelta(days=_LISTING_DAYS)
    for leg in legs:
        if not leg.instrument or leg.product_type not in ("options", "futures"):
            continue
        if leg.expiry not in EXPIRY_CHOICES:
            continue
        try:
            listed = calendar_listed_expiries(
                leg.instrument, leg.product_type, today, horizon, calendar, specs
            )
            if resolve_expiry(leg.expiry, leg.product_type, listed, at) == today:
                return True
        except DomainError:
            continue  # not resolvable: this leg cannot make the day an expiry day
    return False


def _latest_instant(at: time, facts: DayFacts, now: datetime) -> datetime | None:
    """The latest instant at IST ``at`` on a trading day (today or the previous one) not after ``now``."""
    if facts.trading_day:
        today = ist_combine(facts.today, at)
        if today <= now:
            return today
    if facts.previous_trading_day is not None:
        return ist_combine(facts.previous_trading_day, at)
    return None


def _entry(
    schedule: Schedule, facts: DayFacts, run: OpenRun | None, now: datetime, grace: timedelta
) -> Due | None:
    if schedule.entry is None or not facts.trading_day or not facts.condition_matches:
        return None
    at = ist_combine(facts.today, schedule.entry)
    if now < at:
        return None
    if run is not None and run.started_at >= at:
        return None  # today's entry happened (this schedule's or a manual one): nothing to decide
    if schedule.square_off is not None and now >= ist_combine(facts.today, schedule.square_off):
        return Due("entry_missed", facts.today, at, reason="past the square-off time: entries are blocked")
    if schedule.exit is not None and now >= ist_combine(facts.today, schedule.exit):
        return Due("entry_missed", facts.today, at, reason="past the exit time")
    late = now - at
    if late <= grace:
        return None if run is not None else Due("entry", facts.today, at)
    if run is not None:
        return Due("entry_missed", facts.today, at, reason=f"run {run.run_id} was still open")
    return Due(
        "entry_missed",
        facts.today,
        at,
        reason=(
            f"not sent late: {int(late.total_seconds())} s after the entry time, beyond the grace window "
            f"of {int(grace.total_seconds())} s (the engine was not running)"
        ),
    )


def due_actions(
    schedule: Schedule,
    facts: DayFacts,
    run: OpenRun | None,
    now: datetime,
    grace: timedelta,
) -> list[Due]:
    """Everything ``schedule`` makes due at aware ``now`` (see the module docstring), in the order to
    act: exits before entries. Raises ValueError for a naive ``now`` or a negative ``grace``."""
    now = ensure_aware(now)
    if grace < timedelta(0):
        raise ValueError("grace must not be negative")
    found: list[Due] = []
    if run is not None and facts.in_session:
        square: Due | None = None
        if schedule.square_off is not None and run.has_mis:
            at = _latest_instant(schedule.square_off, facts, now)
            if at is not None and run.started_at < at:
                square = Due("square_off", ist_today(at), at, run.run_id)
                found.append(square)
        if schedule.exit is not None and square is None:
            at = _latest_instant(schedule.exit, facts, now)
            if at is not None and run.started_at < at:
                found.append(Due("exit", ist_today(at), at, run.run_id))
    if (
        run is not None
        and run.has_mis
        and schedule.square_off is None
        and facts.close is not None
        and facts.close - MIS_WARNING_LEAD <= now < facts.close
    ):
        found.append(Due("mis_warning", facts.today, facts.close - MIS_WARNING_LEAD, run.run_id))
    entry = _entry(schedule, facts, run, now, grace)
    if entry is not None:
        found.append(entry)
    return found


def next_due(schedule: Schedule, facts: DayFacts, now: datetime) -> datetime | None:
    """The earliest of today's scheduled instants (entry, exit, square-off, MIS warning) after ``now``, or
    None: when the scheduler has to look again at the latest."""
    now = ensure_aware(now)
    if not facts.trading_day:
        return None
    candidates = [
        ist_combine(facts.today, at)
        for at in (schedule.entry, schedule.exit, schedule.square_off)
        if at is not None
    ]
    if facts.close is not None:
        candidates.append(facts.close - MIS_WARNING_LEAD)
    future = [c for c in candidates if c > now]
    return min(future) if future else None


__all__ = [
    "MIS_WARNING_LEAD",
    "DayFacts",
    "Due",
    "DueKind",
    "LegContract",
    "OpenRun",
    "Schedule",
    "due_actions",
    "is_expiry_day",
    "market_condition_matches",
    "next_due",
]
