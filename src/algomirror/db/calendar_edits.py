"""Edits of the trading calendar (PRODUCT §8): validation, writes and the holiday CSV, without the web.

Every write function validates first and raises :class:`EditError` (field → message) before touching a
row, so a refused edit changes nothing. A successful one adds its rows and bumps the calendar revision
in the caller's transaction (:func:`~algomirror.db.calendar_store.bump_calendar_revision`); the caller
logs the activity and commits. All dates are IST calendar dates, all times IST wall-clock times.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, time

from sqlalchemy import select
from sqlalchemy.orm import Session

from algomirror.broker.wire.calendar import SPECIAL_SESSION, TRADING_HOLIDAY, ExchangeHoliday
from algomirror.db.calendar_store import bump_calendar_revision
from algomirror.db.models.calendar import MarketHoliday, SpecialTradingSession
from algomirror.domain.calendar import TradingCalendar
from algomirror.domain.timeutil import to_ist

#: The exchanges a holiday or special session can name (OpenAlgo codes), in display order.
MARKETS: tuple[str, ...] = ("NSE", "BSE", "NFO", "BFO", "MCX", "CDS", "BCD")
NAME_MAX = 100
CSV_HEADER = ("date", "name", "markets")
#: A holiday CSV larger than this is refused unread (a year's list is a few kilobytes).
CSV_MAX_BYTES = 256 * 1024
CSV_MAX_ROWS = 2000


class EditError(Exception):
    """A refused edit: ``errors`` maps a form field name to the message shown beside it."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


@dataclass(frozen=True)
class HolidayEntry:
    """One holiday as the pages and the CSV see it: a date, a name and its markets (one row each)."""

    day: date
    name: str
    markets: tuple[str, ...]


@dataclass(frozen=True)
class RowError:
    """A bad CSV row: its 1-based line number in the file, the field and why."""

    line: int
    field: str
    message: str


def weekend_error(day: date) -> str | None:
    """Why ``day`` cannot be a holiday (it is a Saturday or Sunday: no regular session to close), or
    None."""
    if day.weekday() >= 5:
        return f"{day:%a %d %b %Y} is a {day:%A}: the exchanges are closed on weekends anyway."
    return None


def clean_markets(markets: Iterable[str]) -> tuple[str, ...]:
    """``markets`` upper-cased, deduplicated, in :data:`MARKETS` order (unknown codes kept at the end)."""
    wanted = {m.strip().upper() for m in markets if m and m.strip()}
    known = tuple(m for m in MARKETS if m in wanted)
    return known + tuple(sorted(wanted - set(MARKETS)))


def _check_name(name: str, errors: dict[str, str], *, required: bool = True) -> str:
    cleaned = (name or "").strip()
    if required and not cleaned:
        errors["name"] = "Enter a name."
    elif len(cleaned) > NAME_MAX:
        errors["name"] = f"The name must be at most {NAME_MAX} characters."
    elif any(ord(c) < 32 or ord(c) == 127 for c in cleaned):
        errors["name"] = "The name must not contain control characters."
    return cleaned


def _check_markets(markets: Sequence[str], errors: dict[str, str]) -> tuple[str, ...]:
    cleaned = clean_markets(markets)
    unknown = [m for m in cleaned if m not in MARKETS]
    if not cleaned:
        errors["markets"] = "Choose at least one market."
    elif unknown:
        errors["markets"] = f"Unknown market {', '.join(unknown)}: use {', '.join(MARKETS)}."
    return cleaned


# --- holidays ----------------------------------------------------------------------------------------------


def holiday_entries(session: Session, year: int | None = None) -> list[tuple[int, HolidayEntry]]:
    """Holidays grouped by (date, name), ascending, each with the id of its first row (the id the pages
    use to address the group)."""
    query = select(MarketHoliday).order_by(MarketHoliday.date, MarketHoliday.name, MarketHoliday.id)
    if year is not None:
        query = query.where(MarketHoliday.date >= date(year, 1, 1), MarketHoliday.date <= date(year, 12, 31))
    groups: dict[tuple[date, str], list[MarketHoliday]] = {}
    for row in session.scalars(query):
        groups.setdefault((row.date, row.name or ""), []).append(row)
    return [
        (rows[0].id, HolidayEntry(day, name, clean_markets(r.market for r in rows)))
        for (day, name), rows in groups.items()
    ]


def holiday_group(session: Session, holiday_id: int) -> list[MarketHoliday]:
    """The rows of the holiday ``holiday_id`` belongs to (same date and name), or [] when there is none."""
    row = session.get(MarketHoliday, holiday_id)
    if row is None:
        return []
    name_match = MarketHoliday.name.is_(None) if row.name is None else MarketHoliday.name == row.name
    return list(
        session.scalars(
            select(MarketHoliday).where(MarketHoliday.date == row.date, name_match).order_by(MarketHoliday.id)
        )
    )


def holiday_years(session: Session) -> list[int]:
    """The years that have at least one holiday, ascending."""
    return sorted({d.year for d in session.scalars(select(MarketHoliday.date).distinct())})


def save_holiday(
    session: Session,
    day: date,
    name: str,
    markets: Sequence[str],
    *,
    replacing: Sequence[MarketHoliday] = (),
) -> HolidayEntry:
    """Add the holiday (one row per market), replacing the rows of ``replacing`` (an edit).

    Raises EditError for a weekend date, an empty or over-long name, no or unknown markets, or a market
    that already has a holiday that date (outside ``replacing``); nothing is changed then.
    """
    errors: dict[str, str] = {}
    weekend = weekend_error(day)
    if weekend:
        errors["date"] = weekend
    cleaned_name = _check_name(name, errors)
    cleaned = _check_markets(markets, errors)
    own = {r.id for r in replacing}
    if "markets" not in errors and cleaned:
        taken = [
            f"{r.market} ({r.name or 'unnamed'})"
            for r in session.scalars(
                select(MarketHoliday).where(MarketHoliday.date == day, MarketHoliday.market.in_(cleaned))
            )
            if r.id not in own
        ]
        if taken:
            errors["markets"] = f"{day:%d %b %Y} is already a holiday of {', '.join(sorted(taken))}."
    if errors:
        raise EditError(errors)
    for row in replacing:
        session.delete(row)
    session.flush()
    for market in cleaned:
        session.add(MarketHoliday(date=day, name=cleaned_name, market=market))
    session.flush()
    bump_calendar_revision(session)
    return HolidayEntry(day, cleaned_name, cleaned)


def delete_holiday(session: Session, rows: Sequence[MarketHoliday]) -> None:
    """Delete a holiday's rows (one group) and bump the revision."""
    for row in rows:
        session.delete(row)
    session.flush()
    bump_calendar_revision(session)


def import_holidays(session: Session, entries: Sequence[HolidayEntry]) -> tuple[int, int]:
    """Add the (already validated) ``entries``' (date, market) rows that are missing.

    Returns (added, already present). A present row keeps its name. Bumps the revision when it added any.
    """
    existing = {(d, m) for d, m in session.execute(select(MarketHoliday.date, MarketHoliday.market))}
    added = present = 0
    for entry in entries:
        for market in entry.markets:
            if (entry.day, market) in existing:
                present += 1
                continue
            session.add(MarketHoliday(date=entry.day, name=entry.name, market=market))
            existing.add((entry.day, market))
            added += 1
    if added:
        session.flush()
        bump_calendar_revision(session)
    return added, present


def holidays_csv(entries: Iterable[HolidayEntry]) -> str:
    """The holiday CSV (``date,name,markets``; ISO dates; markets joined by ``;``)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for entry in entries:
        # A leading =, +, - or @ would be a formula to a spreadsheet; holiday names never need one.
        name = entry.name
        if name[:1] in ("=", "+", "-", "@"):
            name = "'" + name
        writer.writerow((entry.day.isoformat(), name, ";".join(entry.markets)))
    return out.getvalue()


def _parse_date(text: str) -> date | None:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        return None


def parse_holidays_csv(data: bytes) -> tuple[list[HolidayEntry], list[RowError]]:
    """Read a holiday CSV (header ``date,name,markets``; date as YYYY-MM-DD; markets separated by ``;``).

    Every row is checked: a bad date, a weekend, an empty name, no or an unknown market, a (date, market)
    repeated inside the file. Returns (entries, errors); the caller imports only when errors is empty.
    """
    if len(data) > CSV_MAX_BYTES:
        return [], [RowError(0, "file", f"The file is larger than {CSV_MAX_BYTES // 1024} KB.")]
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return [], [RowError(0, "file", "The file is not UTF-8 text.")]
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if not rows or [c.strip().lower() for c in rows[0]][:3] != list(CSV_HEADER):
        return [], [RowError(1, "header", "The first line must be the header date,name,markets.")]
    if len(rows) > CSV_MAX_ROWS + 1:
        return [], [RowError(0, "file", f"The file has more than {CSV_MAX_ROWS} rows.")]
    entries: list[HolidayEntry] = []
    errors: list[RowError] = []
    seen: dict[tuple[date, str], int] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue  # a blank line (often the last) is not a row
        if len(row) != 3:
            errors.append(RowError(line, "row", f"Expected 3 fields (date,name,markets), found {len(row)}."))
            continue
        raw_date, raw_name, raw_markets = row
        row_errors: dict[str, str] = {}
        day = _parse_date(raw_date)
        if day is None:
            row_errors["date"] = f"{raw_date.strip()!r} is not a date like 2026-01-26."
        elif weekend_error(day):
            row_errors["date"] = f"{day.isoformat()} is a {day:%A}."
        name = _check_name(raw_name.removeprefix("'"), row_errors)
        markets = _check_markets(raw_markets.split(";"), row_errors)
        if day is not None and "markets" not in row_errors:
            repeated = [m for m in markets if (day, m) in seen]
            if repeated:
                row_errors["markets"] = ", ".join(
                    f"{m} on {day.isoformat()} is also on line {seen[(day, m)]}" for m in repeated
                )
        for field, message in row_errors.items():
            errors.append(RowError(line, field, message))
        if not row_errors and day is not None:
            for market in markets:
                seen[(day, market)] = line
            entries.append(HolidayEntry(day, name, markets))
    if not entries and not errors:
        errors.append(RowError(0, "file", "The file has no holiday rows."))
    return entries, errors


# --- import from an account's OpenAlgo (market/holidays) ----------------------------------------------------


@dataclass(frozen=True)
class SpecialEntry:
    """A special session as an import proposes it (IST date and wall-clock times)."""

    day: date
    name: str
    market_open: time
    market_close: time
    markets: tuple[str, ...]


@dataclass(frozen=True)
class ImportPlan:
    """What an OpenAlgo calendar reply becomes: holidays, special sessions, and the rows left out
    (each with why)."""

    holidays: tuple[HolidayEntry, ...]
    specials: tuple[SpecialEntry, ...]
    skipped: tuple[str, ...]


def plan_openalgo_import(rows: Sequence[ExchangeHoliday], year: int) -> ImportPlan:
    """Map ``market/holidays`` rows of ``year`` to our holidays and special sessions (pure).

    A trading holiday closes its listed exchanges that we know (:data:`MARKETS`); a settlement holiday
    closes nothing (the exchanges trade), so it is left out; a special session becomes one session per
    distinct window of its open exchanges. A weekend holiday, a row of another year and a row naming no
    exchange of ours are left out, each named in ``skipped``.
    """
    holidays: list[HolidayEntry] = []
    specials: list[SpecialEntry] = []
    skipped: list[str] = []
    for row in rows:
        label = f"{row.day.isoformat()} {row.description or row.kind}"
        if row.day.year != year:
            skipped.append(f"{label}: not in {year}")
            continue
        name = (row.description or ("Special session" if row.kind == SPECIAL_SESSION else "Holiday"))[
            :NAME_MAX
        ]
        if row.kind == SPECIAL_SESSION:
            windows: dict[tuple[time, time], set[str]] = {}
            for window in row.open:
                if window.exchange not in MARKETS:
                    continue
                start, end = to_ist(window.start), to_ist(window.end)
                if start.date() != row.day or end <= start:
                    skipped.append(f"{label}: {window.exchange}'s hours are not inside the day")
                    continue
                windows.setdefault((start.time(), end.time()), set()).add(window.exchange)
            if not windows:
                skipped.append(f"{label}: no exchange of ours trades in it")
            for (start_at, end_at), markets in sorted(windows.items()):
                specials.append(SpecialEntry(row.day, name, start_at, end_at, clean_markets(markets)))
            continue
        if row.kind != TRADING_HOLIDAY:
            skipped.append(f"{label}: a {row.kind.lower().replace('_', ' ')} (the exchanges trade)")
            continue
        if weekend_error(row.day):
            skipped.append(f"{label}: a {row.day:%A}")
            continue
        closes = clean_markets(m for m in row.closed if m in MARKETS)
        if not closes:
            skipped.append(f"{label}: closes no exchange of ours")
            continue
        holidays.append(HolidayEntry(row.day, name, closes))
    return ImportPlan(tuple(holidays), tuple(specials), tuple(skipped))


def import_special_sessions(
    session: Session, calendar: TradingCalendar, entries: Sequence[SpecialEntry]
) -> tuple[int, list[str]]:
    """Add each of ``entries`` that is not there yet (same date and name) and passes the checks of
    :func:`save_special_session`. Returns (added, why each other one was not added)."""
    added = 0
    refused: list[str] = []
    for entry in entries:
        label = f"{entry.day.isoformat()} {entry.name} {entry.market_open:%H:%M}-{entry.market_close:%H:%M}"
        present = session.scalar(
            select(SpecialTradingSession.id).where(
                SpecialTradingSession.date == entry.day, SpecialTradingSession.name == entry.name
            )
        )
        if present is not None:
            refused.append(f"{label}: already there")
            continue
        try:
            with session.begin_nested():
                save_special_session(
                    session,
                    calendar,
                    day=entry.day,
                    name=entry.name,
                    market_open=entry.market_open,
                    market_close=entry.market_close,
                    markets=entry.markets,
                )
        except EditError as exc:
            refused.append(f"{label}: {'; '.join(exc.errors.values())}")
            continue
        added += 1
    return added, refused


# --- special sessions --------------------------------------------------------------------------------------


def _overlaps(a: tuple[time, time], b: tuple[time, time]) -> bool:
    """Whether half-open windows [a0, a1) and [b0, b1) share a moment."""
    return a[0] < b[1] and b[0] < a[1]


def save_special_session(
    session: Session,
    calendar: TradingCalendar,
    *,
    day: date,
    name: str,
    market_open: time,
    market_close: time,
    markets: Sequence[str],
    existing: SpecialTradingSession | None = None,
) -> SpecialTradingSession:
    """Add a special session, or change ``existing``.

    Raises EditError for a close at or before the open, an empty name, a (date, name) taken, no or
    unknown markets, an overlap with another special session of a shared market that day, or an overlap
    with a market's regular session when ``day`` is its regular trading day (per ``calendar``).
    """
    errors: dict[str, str] = {}
    cleaned_name = _check_name(name, errors)
    cleaned = _check_markets(markets, errors)
    if market_close <= market_open:
        errors["market_close"] = "The close must be after the open."
    own_id = existing.id if existing is not None else None
    others = [
        s
        for s in session.scalars(select(SpecialTradingSession).where(SpecialTradingSession.date == day))
        if s.id != own_id
    ]
    if "name" not in errors and any((s.name or "") == cleaned_name for s in others):
        errors["name"] = f"{day:%d %b %Y} already has a special session named {cleaned_name!r}."
    if "market_close" not in errors and "markets" not in errors:
        window = (market_open, market_close)
        for other in others:
            shared = set(cleaned) & {str(m).upper() for m in (other.markets or [])}
            if shared and _overlaps(window, (other.market_open, other.market_close)):
                errors["market_open"] = (
                    f"Overlaps {other.name or 'another special session'} "
                    f"({other.market_open:%H:%M}–{other.market_close:%H:%M}) of {', '.join(sorted(shared))}."
                )
                break
        if "market_open" not in errors:
            for market in cleaned:
                regular = calendar.regular_hours(market).get(day.weekday())
                if regular is None or calendar.is_holiday(market, day):
                    continue
                if _overlaps(window, regular):
                    errors["market_open"] = (
                        f"Overlaps {market}'s regular session ({regular[0]:%H:%M}–{regular[1]:%H:%M}) "
                        f"on {day:%a %d %b %Y}, a trading day."
                    )
                    break
    if errors:
        raise EditError(errors)
    row = existing if existing is not None else SpecialTradingSession()
    row.date = day
    row.name = cleaned_name
    row.market_open = market_open
    row.market_close = market_close
    row.markets = list(cleaned)
    if existing is None:
        session.add(row)
    session.flush()
    bump_calendar_revision(session)
    return row


def delete_special_session(session: Session, row: SpecialTradingSession) -> None:
    """Delete a special session and bump the revision."""
    session.delete(row)
    session.flush()
    bump_calendar_revision(session)


__all__ = [
    "CSV_HEADER",
    "MARKETS",
    "EditError",
    "HolidayEntry",
    "ImportPlan",
    "RowError",
    "SpecialEntry",
    "delete_holiday",
    "delete_special_session",
    "holiday_entries",
    "holiday_group",
    "holiday_years",
    "holidays_csv",
    "import_holidays",
    "import_special_sessions",
    "parse_holidays_csv",
    "plan_openalgo_import",
    "save_holiday",
    "save_special_session",
    "weekend_error",
]
