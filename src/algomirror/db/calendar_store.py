"""The trading calendar in the database: load it into the pure :class:`TradingCalendar`, and the revision
counter every change bumps so running processes reload without a restart (PRODUCT §8).

Writers (the calendar pages, the holiday import) change the rows and call :func:`bump_calendar_revision`
in the same transaction. Readers compare :func:`calendar_revision` with the revision they loaded.
"""

from __future__ import annotations

import logging
from datetime import date, time

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from algomirror.db.models.app_settings import CALENDAR_REVISION, AppSetting
from algomirror.db.models.calendar import (
    MarketHoliday,
    SpecialTradingSession,
    TradingHoursTemplate,
)
from algomirror.domain.calendar import (
    DEFAULT_EXCHANGES,
    SpecialSession,
    TradingCalendar,
    default_weekday_sessions,
)

log = logging.getLogger(__name__)

#: The template whose week is the default for exchanges no template lists (and NSE's, normally).
EQUITY_TEMPLATE = "equity"
#: The exchange that identifies the equity template when it was renamed.
EQUITY_MARKET = "NSE"

Week = dict[int, tuple[time, time]]


def calendar_revision(session: Session) -> int:
    """The stored revision (0 when the calendar was never edited). Raises only SQLAlchemyError."""
    value = session.scalar(select(AppSetting.value).where(AppSetting.key == CALENDAR_REVISION))
    try:
        return int(value) if value is not None else 0
    except ValueError:
        return 0


def bump_calendar_revision(session: Session) -> int:
    """Move the revision on by one (the caller commits, with the calendar change) and return it."""
    row = session.scalar(select(AppSetting).where(AppSetting.key == CALENDAR_REVISION).with_for_update())
    if row is None:
        session.add(AppSetting(key=CALENDAR_REVISION, value="1"))
        return 1
    try:
        current = int(row.value)
    except ValueError:
        current = 0
    row.value = str(current + 1)
    return current + 1


def _template_week(template: TradingHoursTemplate) -> tuple[Week, Week]:
    """(weekday sessions, pre-open windows) of ``template``: its trading_sessions rows (a closed day or a
    day without a row has no session), or Mon–Fri at the template's hours when it has no rows at all. A
    day's pre-market window is the row's when it sets one, else the template's pre-open."""
    template_pre = (
        (template.pre_open_start, template.pre_open_end)
        if template.pre_open_start is not None and template.pre_open_end is not None
        else None
    )
    sessions: Week = {}
    pre_open: Week = {}
    if not template.sessions:
        for weekday in range(5):
            sessions[weekday] = (template.market_open, template.market_close)
            if template_pre is not None and template_pre[0] < template_pre[1] <= template.market_open:
                pre_open[weekday] = template_pre
        if template.market_close <= template.market_open:
            log.error("calendar: template %r closes before it opens; it has no sessions", template.name)
            return {}, {}
        return sessions, pre_open
    for row in template.sessions:
        if not row.is_trading_day or row.market_open is None or row.market_close is None:
            continue
        if not 0 <= row.day_of_week <= 6 or row.market_close <= row.market_open:
            # One bad row must not stop every calendar update: that day is closed, loudly.
            log.error(
                "calendar: template %r day %s has session %s-%s; the day is treated as closed",
                template.name,
                row.day_of_week,
                row.market_open,
                row.market_close,
            )
            continue
        sessions[row.day_of_week] = (row.market_open, row.market_close)
        window = (
            (row.pre_market_start, row.pre_market_end)
            if row.pre_market_start is not None and row.pre_market_end is not None
            else template_pre
        )
        if window is None:
            continue
        if window[0] < window[1] <= row.market_open:
            pre_open[row.day_of_week] = window
        else:
            log.error(
                "calendar: template %r day %s has pre-open %s-%s, not ending by its open %s; ignored",
                template.name,
                row.day_of_week,
                window[0],
                window[1],
                row.market_open,
            )
    return sessions, pre_open


def _markets(value: object) -> list[str]:
    """A JSON ``markets`` value as exchange codes (anything else in it is ignored)."""
    if not isinstance(value, list):
        return []
    return [str(item).strip().upper() for item in value if isinstance(item, str) and item.strip()]


def load_calendar(session: Session) -> TradingCalendar:
    """The calendar the database holds (PRODUCT §8).

    * Each **active** template's week (its trading_sessions rows; ``is_trading_day`` False = closed) and
      pre-open windows apply to the exchanges in its ``markets``; an exchange listed by two templates
      keeps the first (by id). The equity template's week (named ``equity``, else the one listing NSE)
      is also the default for exchanges no template lists; without one, Mon–Fri 09:15–15:30.
    * Holidays per (date, market), with their names.
    * Special sessions with their markets (NULL or empty: NSE/BSE/NFO/BFO).

    A row the calendar cannot hold (a session closing before it opens, a pre-open not ending by the
    open) is left out and logged as an error, so one bad row never stops every later update. Raises
    SQLAlchemyError when the tables cannot be read (callers keep the calendar they had).
    """
    templates = session.scalars(
        select(TradingHoursTemplate)
        .where(TradingHoursTemplate.is_active.is_(True))
        .options(selectinload(TradingHoursTemplate.sessions))
        .order_by(TradingHoursTemplate.id)
    ).all()
    default_week: Week | None = None
    exchange_sessions: dict[str, Week] = {}
    pre_open: dict[str, Week] = {}
    equity = next((t for t in templates if t.name.lower() == EQUITY_TEMPLATE), None) or next(
        (t for t in templates if EQUITY_MARKET in _markets(t.markets)), None
    )
    for template in templates:
        week, windows = _template_week(template)
        if template is equity:
            default_week = week
        for market in _markets(template.markets):
            if market in exchange_sessions:
                log.warning(
                    "calendar: %s is listed by more than one active template; %r is ignored for it",
                    market,
                    template.name,
                )
                continue
            exchange_sessions[market] = week
            if windows:
                pre_open[market] = windows

    holidays: list[tuple[date, str]] = []
    names: dict[tuple[date, str], str] = {}
    for holiday in session.scalars(select(MarketHoliday).order_by(MarketHoliday.date, MarketHoliday.market)):
        market = holiday.market.strip().upper()
        holidays.append((holiday.date, market))
        if holiday.name:
            names[(holiday.date, market)] = holiday.name

    specials: list[SpecialSession] = []
    for row in session.scalars(select(SpecialTradingSession).order_by(SpecialTradingSession.date)):
        markets = frozenset(_markets(row.markets)) or DEFAULT_EXCHANGES
        if row.market_close <= row.market_open:
            log.error(
                "calendar: special session %r on %s closes before it opens; ignored", row.name, row.date
            )
            continue
        specials.append(SpecialSession(row.date, row.market_open, row.market_close, markets, row.name or ""))

    return TradingCalendar(
        holidays=holidays,
        weekday_sessions=default_week if default_week is not None else default_weekday_sessions(),
        special_sessions=specials,
        exchange_sessions=exchange_sessions,
        pre_open=pre_open,
        holiday_market_names=names,
    )


__all__ = ["bump_calendar_revision", "calendar_revision", "load_calendar"]
