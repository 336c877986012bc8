"""Edits of the regular trading hours (PRODUCT §8): a template's default hours, pre-open window and
markets, and its seven weekday rows (the older seed's ``trading_sessions``).

One save replaces the template's fields and all seven days at once, after every check passed, so a
refused save changes nothing. A successful one bumps the calendar revision in the caller's transaction
(running processes reload on it); the caller logs the activity and commits. Times are IST wall-clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import time

from sqlalchemy import select
from sqlalchemy.orm import Session

from algomirror.db.calendar_edits import MARKETS, EditError, clean_markets
from algomirror.db.calendar_store import bump_calendar_revision
from algomirror.db.models.calendar import TradingHoursTemplate, TradingSession

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@dataclass(frozen=True)
class DayHours:
    """One weekday of a template as the form sends it: closed (``trading`` False) or its session and
    optional pre-open window."""

    weekday: int
    trading: bool
    market_open: time | None = None
    market_close: time | None = None
    pre_start: time | None = None
    pre_end: time | None = None


@dataclass(frozen=True)
class TemplateHours:
    """A template's own fields: default session, optional pre-open, markets, active."""

    market_open: time
    market_close: time
    pre_start: time | None
    pre_end: time | None
    markets: tuple[str, ...]
    active: bool


def _window_errors(
    prefix: str, opens: time | None, closes: time | None, pre_start: time | None, pre_end: time | None
) -> dict[str, str]:
    """Checks shared by a template and a day: close after open; a pre-open given whole, ending by the
    open."""
    errors: dict[str, str] = {}
    if opens is None:
        errors[f"{prefix}market_open"] = "Enter the open (HH:MM)."
    if closes is None:
        errors[f"{prefix}market_close"] = "Enter the close (HH:MM)."
    if opens is not None and closes is not None and closes <= opens:
        errors[f"{prefix}market_close"] = "The close must be after the open."
    if (pre_start is None) != (pre_end is None):
        errors[f"{prefix}pre_start"] = "Give both ends of the pre-open window, or neither."
    elif pre_start is not None and pre_end is not None:
        if pre_end <= pre_start:
            errors[f"{prefix}pre_end"] = "The pre-open must end after it starts."
        elif opens is not None and pre_end > opens:
            errors[f"{prefix}pre_end"] = f"The pre-open must end by the open ({opens:%H:%M})."
    return errors


def day_field(weekday: int, name: str) -> str:
    """The form field of ``name`` (market_open, pre_start …) on ``weekday``'s row: ``d3_market_open``."""
    return f"d{weekday}_{name}"


def save_hours(
    session: Session, template: TradingHoursTemplate, hours: TemplateHours, days: Sequence[DayHours]
) -> None:
    """Replace ``template``'s fields and weekday rows with ``hours`` and ``days`` (all seven).

    Raises EditError (form field → message) for a close at or before an open, a pre-open given by half,
    ending after the open, no or unknown markets, a market another active template already lists, a
    template with no trading day, or days that are not Monday…Sunday once each; nothing changes then.
    """
    errors = _window_errors("", hours.market_open, hours.market_close, hours.pre_start, hours.pre_end)
    markets = clean_markets(hours.markets)
    unknown = [m for m in markets if m not in MARKETS]
    if not markets:
        errors["markets"] = "Choose at least one market."
    elif unknown:
        errors["markets"] = f"Unknown market {', '.join(unknown)}."
    elif hours.active:
        others = session.scalars(
            select(TradingHoursTemplate).where(
                TradingHoursTemplate.is_active.is_(True), TradingHoursTemplate.id != template.id
            )
        )
        for other in others:
            shared = sorted(set(markets) & {str(m).upper() for m in (other.markets or [])})
            if shared:
                errors["markets"] = f"{', '.join(shared)} already follow the {other.name} template."
                break
    if sorted(d.weekday for d in days) != list(range(7)):
        errors["days"] = "Every weekday needs exactly one row."
    for day in days:
        if day.trading:
            errors.update(
                _window_errors(
                    f"d{day.weekday}_", day.market_open, day.market_close, day.pre_start, day.pre_end
                )
            )
    if not any(d.trading for d in days):
        errors["days"] = "A template needs at least one trading day (switch it off instead)."
    if errors:
        raise EditError(errors)
    template.market_open, template.market_close = hours.market_open, hours.market_close
    template.pre_open_start, template.pre_open_end = hours.pre_start, hours.pre_end
    template.markets = list(markets)
    template.is_active = hours.active
    rows = {row.day_of_week: row for row in template.sessions}
    for day in days:
        row = rows.get(day.weekday)
        if row is None:
            row = TradingSession(template_id=template.id, day_of_week=day.weekday)
            session.add(row)
        row.is_trading_day = day.trading
        row.market_open = day.market_open if day.trading else None
        row.market_close = day.market_close if day.trading else None
        row.pre_market_start = day.pre_start if day.trading else None
        row.pre_market_end = day.pre_end if day.trading else None
    session.flush()
    bump_calendar_revision(session)


def describe(template: TradingHoursTemplate) -> str:
    """One line for the activity log: the template's hours and its trading days."""
    days = ", ".join(
        f"{WEEKDAYS[r.day_of_week][:3]} {r.market_open:%H:%M}-{r.market_close:%H:%M}"
        for r in template.sessions
        if r.is_trading_day and r.market_open is not None and r.market_close is not None
    )
    pre = (
        f", pre-open {template.pre_open_start:%H:%M}-{template.pre_open_end:%H:%M}"
        if template.pre_open_start is not None and template.pre_open_end is not None
        else ""
    )
    state = "" if template.is_active else ", off"
    return (
        f"{template.name} ({', '.join(template.markets or [])}) "
        f"{template.market_open:%H:%M}-{template.market_close:%H:%M}{pre}{state}; {days or 'no trading day'}"
    )


__all__ = ["WEEKDAYS", "DayHours", "EditError", "TemplateHours", "day_field", "describe", "save_hours"]
