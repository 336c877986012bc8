"""Trading calendar: weekday sessions per exchange, pre-open windows, holidays per exchange and special
sessions, with ONE open rule.

PRODUCT §8: an exchange is open at an IST instant when a weekday session contains it and the date is not
that exchange's holiday, **or** a special session (e.g. Muhurat) for that exchange contains it. Sessions are
half-open intervals [open, close). Everything is built from plain data so an admin page or a database can
supply it (:func:`algomirror.db.calendar_store.load_calendar`); :func:`default_calendar` gives the built-in
NSE 2025/2026 lists and the seed's market templates.

Weekday sessions are per exchange (the equity, commodity and currency templates); an exchange no template
lists follows the default week (Mon–Fri 09:15–15:30 unless the caller says otherwise). A pre-open window
(equity cash and futures: 09:00–09:08 order entry) is reported by :meth:`TradingCalendar.pre_open` and is
*not* part of the session: options have no pre-open, so :meth:`TradingCalendar.is_open` stays the regular
session and no option order goes out before 09:15:00.

Quote-only index exchanges follow their cash exchange (``NSE_INDEX`` → ``NSE``, ``BSE_INDEX`` → ``BSE``).
"Trading day" means a *regular* session day (weekday session, not a holiday); a special session on a
holiday (Muhurat) does not make it a trading day, which is what expiry holiday shifts need.

Live edits: a calendar keeps all its data in one immutable :class:`CalendarSnapshot`. :meth:`adopt`
swaps in another calendar's snapshot with one assignment, so the engine's single shared instance follows
admin edits while every component holds the same object, and each query reads one consistent snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from types import MappingProxyType

from algomirror.domain.contract_specs import ContractSpecs, ExpiryKind, default_specs
from algomirror.domain.instruments import underlying_spec
from algomirror.domain.timeutil import ist_combine, to_ist

DEFAULT_EXCHANGES: frozenset[str] = frozenset({"NSE", "BSE", "NFO", "BFO"})
EXCHANGE_ALIASES: dict[str, str] = {"NSE_INDEX": "NSE", "BSE_INDEX": "BSE"}
EXPIRY_CUTOFF = time(15, 30)  # contracts expire at the normal close (IST)

_SEARCH_DAYS = 400  # how far next/previous searches look before giving up

WeekHours = Mapping[int, tuple[time, time]]  # weekday (0 = Monday) → (start, end) IST


@dataclass(frozen=True, slots=True)
class SessionTimes:
    """Open/close IST wall-clock times of one session, [open, close)."""

    open: time
    close: time


@dataclass(frozen=True, slots=True)
class SpecialSession:
    """A one-off session (Muhurat, Budget Saturday) that opens the listed exchanges even on a holiday."""

    day: date
    open: time
    close: time
    exchanges: frozenset[str]
    name: str = ""


@dataclass(frozen=True, slots=True)
class Holiday:
    day: date
    exchanges: frozenset[str]
    name: str = ""


def _frozen(mapping: Mapping[int, SessionTimes] | None = None) -> Mapping[int, SessionTimes]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True, slots=True)
class ExchangeHours:
    """One exchange's regular week: weekday (0 = Monday) → session, and weekday → pre-open window."""

    sessions: Mapping[int, SessionTimes]
    pre_open: Mapping[int, SessionTimes] = field(default_factory=_frozen)


@dataclass(frozen=True, slots=True, eq=False)
class CalendarSnapshot:
    """Everything a :class:`TradingCalendar` knows, immutable (read-only mappings of private copies).

    ``hours`` holds the exchanges with their own week (normalised codes); any other exchange follows
    ``default_hours``. ``holiday_names`` are per date, ``market_names`` per (date, exchange).
    """

    holidays: frozenset[tuple[date, str]]
    holiday_names: Mapping[date, str]
    market_names: Mapping[tuple[date, str], str]
    default_hours: ExchangeHours
    hours: Mapping[str, ExchangeHours]
    special: Mapping[date, tuple[SpecialSession, ...]]

    def hours_for(self, exchange: str) -> ExchangeHours:
        """The week of ``exchange`` (already normalised)."""
        return self.hours.get(exchange, self.default_hours)


def _norm(exchange: str) -> str:
    upper = exchange.upper()
    return EXCHANGE_ALIASES.get(upper, upper)


def _week(sessions: WeekHours, what: str) -> dict[int, SessionTimes]:
    """Validated weekday → SessionTimes (ValueError naming ``what`` and the weekday)."""
    week: dict[int, SessionTimes] = {}
    for weekday, (start, end) in sessions.items():
        if not 0 <= weekday <= 6 or start >= end:
            raise ValueError(f"bad {what} {weekday}: {start}-{end}")
        week[weekday] = SessionTimes(start, end)
    return week


def _hours(sessions: WeekHours, pre_open: WeekHours | None, exchange: str) -> ExchangeHours:
    label = f"weekday session for {exchange}" if exchange else "weekday session"
    week = _week(sessions, label)
    windows = _week(pre_open or {}, f"pre-open window for {exchange or 'default'} on weekday")
    for weekday, window in windows.items():
        regular = week.get(weekday)
        # A pre-open belongs to a session day and ends by its open (it is never part of the session).
        if regular is None or window.close > regular.open:
            raise ValueError(
                f"bad pre-open window for {exchange or 'default'} on weekday {weekday}: "
                f"{window.open}-{window.close} must end by that day's open"
            )
    return ExchangeHours(_frozen(week), _frozen(windows))


def _sessions(snap: CalendarSnapshot, ex: str, day: date) -> list[tuple[datetime, datetime]]:
    found: list[tuple[datetime, datetime]] = []
    if _is_trading_day(snap, ex, day):
        regular = snap.hours_for(ex).sessions[day.weekday()]
        found.append((ist_combine(day, regular.open), ist_combine(day, regular.close)))
    for special in snap.special.get(day, ()):
        if ex in special.exchanges:
            found.append((ist_combine(day, special.open), ist_combine(day, special.close)))
    return sorted(found)


def _is_trading_day(snap: CalendarSnapshot, ex: str, day: date) -> bool:
    return day.weekday() in snap.hours_for(ex).sessions and (day, ex) not in snap.holidays


def _merged(found: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    """Overlapping or touching sessions as one open stretch (a special session inside the regular one)."""
    merged: list[tuple[datetime, datetime]] = []
    for start, end in found:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


class TradingCalendar:
    """Sessions and holidays from plain data.

    ``holidays``: (date, exchange) pairs; ``weekday_sessions``: weekday (0 = Monday) → (open, close) IST,
    the default week of every exchange not in ``exchange_sessions`` (exchange → its own week);
    ``pre_open``: exchange → weekday → (start, end) IST pre-open order-entry window, ending by that day's
    open; ``special_sessions``: extra windows; ``holiday_names``: optional display names per date,
    ``holiday_market_names`` per (date, exchange). Raises ValueError for an empty or reversed session.
    """

    def __init__(
        self,
        *,
        holidays: Iterable[tuple[date, str]] = (),
        weekday_sessions: WeekHours | None = None,
        special_sessions: Iterable[SpecialSession] = (),
        holiday_names: Mapping[date, str] | None = None,
        exchange_sessions: Mapping[str, WeekHours] | None = None,
        pre_open: Mapping[str, WeekHours] | None = None,
        holiday_market_names: Mapping[tuple[date, str], str] | None = None,
    ) -> None:
        default_week = weekday_sessions if weekday_sessions is not None else default_weekday_sessions()
        windows = {_norm(ex): week for ex, week in (pre_open or {}).items()}
        weeks = {_norm(ex): week for ex, week in (exchange_sessions or {}).items()}
        hours: dict[str, ExchangeHours] = {}
        for ex in sorted(set(weeks) | set(windows)):
            hours[ex] = _hours(weeks.get(ex, default_week), windows.get(ex), ex)
        special: dict[date, list[SpecialSession]] = {}
        for s in special_sessions:
            if s.open >= s.close:
                raise ValueError(f"bad special session on {s.day}: {s.open}-{s.close}")
            normalised = SpecialSession(
                s.day, s.open, s.close, frozenset(_norm(e) for e in s.exchanges), s.name
            )
            special.setdefault(s.day, []).append(normalised)
        self._snap = CalendarSnapshot(
            holidays=frozenset((d, _norm(ex)) for d, ex in holidays),
            holiday_names=MappingProxyType(dict(holiday_names or {})),
            market_names=MappingProxyType(
                {(d, _norm(ex)): name for (d, ex), name in (holiday_market_names or {}).items()}
            ),
            default_hours=_hours(default_week, None, ""),
            hours=MappingProxyType(hours),
            special=MappingProxyType(
                {d: tuple(sorted(ss, key=lambda s: s.open)) for d, ss in special.items()}
            ),
        )

    # --- live updates --------------------------------------------------------------------------------

    @property
    def snapshot(self) -> CalendarSnapshot:
        """The data currently answered from (immutable)."""
        return self._snap

    def adopt(self, other: TradingCalendar) -> None:
        """Answer from ``other``'s data from now on: one assignment, so a concurrent query sees either
        the old or the new calendar, never a mix. Every holder of this instance follows."""
        self._snap = other._snap

    # --- data access -------------------------------------------------------------------------------------

    def is_holiday(self, exchange: str, day: date) -> bool:
        return (day, _norm(exchange)) in self._snap.holidays

    def holiday_name(self, exchange: str, day: date) -> str | None:
        """The holiday's name for ``exchange`` on ``day`` ("" when unnamed), or None when not a holiday."""
        snap = self._snap
        ex = _norm(exchange)
        if (day, ex) not in snap.holidays:
            return None
        return snap.market_names.get((day, ex)) or snap.holiday_names.get(day, "")

    def holidays(self, year: int | None = None) -> list[Holiday]:
        """Holidays grouped by date (ascending), optionally for one year."""
        snap = self._snap
        grouped: dict[date, set[str]] = {}
        for day, exchange in snap.holidays:
            if year is None or day.year == year:
                grouped.setdefault(day, set()).add(exchange)
        found: list[Holiday] = []
        for day, exchanges in sorted(grouped.items()):
            name = snap.holiday_names.get(day) or next(
                (
                    snap.market_names[(day, ex)]
                    for ex in sorted(exchanges)
                    if snap.market_names.get((day, ex))
                ),
                "",
            )
            found.append(Holiday(day, frozenset(exchanges), name))
        return found

    def special_sessions(self, year: int | None = None) -> list[SpecialSession]:
        found = [s for d, ss in self._snap.special.items() if year is None or d.year == year for s in ss]
        return sorted(found, key=lambda s: (s.day, s.open))

    def regular_hours(self, exchange: str) -> dict[int, tuple[time, time]]:
        """The regular week of ``exchange``: weekday (0 = Monday) → (open, close) IST."""
        week = self._snap.hours_for(_norm(exchange)).sessions
        return {wd: (s.open, s.close) for wd, s in sorted(week.items())}

    # --- the rule ----------------------------------------------------------------------------------------

    def is_trading_day(self, exchange: str, day: date) -> bool:
        """A regular session day: a weekday session exists and ``day`` is not the exchange's holiday."""
        return _is_trading_day(self._snap, _norm(exchange), day)

    def sessions(self, exchange: str, day: date) -> list[tuple[datetime, datetime]]:
        """All sessions of ``exchange`` on IST date ``day`` as aware-UTC [open, close) pairs, ascending."""
        return _sessions(self._snap, _norm(exchange), day)

    def is_open(self, exchange: str, instant: datetime) -> bool:
        """PRODUCT §8's single rule, evaluated at an aware instant (converted to IST). The pre-open is
        not part of it."""
        local = to_ist(instant)
        return any(start <= instant < end for start, end in self.sessions(exchange, local.date()))

    def pre_open(self, exchange: str, day: date) -> tuple[datetime, datetime] | None:
        """The pre-open order-entry window [start, end) of ``exchange`` on IST date ``day`` (aware UTC),
        or None: no window for the exchange that weekday, or not a regular trading day (a holiday, also
        one with a special session). Options have none whatever this says (MARKET-FACTS §2)."""
        snap = self._snap
        ex = _norm(exchange)
        window = snap.hours_for(ex).pre_open.get(day.weekday())
        if window is None or not _is_trading_day(snap, ex, day):
            return None
        return ist_combine(day, window.open), ist_combine(day, window.close)

    def session_bounds(self, exchange: str, day: date) -> tuple[datetime, datetime] | None:
        """(first open, last close) of ``day`` in aware UTC, or None when the exchange has no session."""
        found = self.sessions(exchange, day)
        if not found:
            return None
        return found[0][0], max(end for _, end in found)

    def current_session(self, exchange: str, instant: datetime) -> tuple[datetime, datetime] | None:
        """The session containing ``instant``, or None when closed."""
        for start, end in self.sessions(exchange, to_ist(instant).date()):
            if start <= instant < end:
                return start, end
        return None

    def next_session_start(self, exchange: str, instant: datetime) -> datetime:
        """The earliest session open at or after ``instant`` (aware UTC).

        Raises LookupError when no session starts within ~400 days (an empty calendar).
        """
        snap = self._snap
        ex = _norm(exchange)
        day = to_ist(instant).date()
        for offset in range(_SEARCH_DAYS):
            for start, _ in _sessions(snap, ex, day + timedelta(days=offset)):
                if start >= instant:
                    return start
        raise LookupError(f"no session for {exchange} within {_SEARCH_DAYS} days of {instant.isoformat()}")

    def next_session_end(self, exchange: str, instant: datetime) -> datetime:
        """The next close after ``instant`` (aware UTC): the end of the open stretch containing it (a
        special session inside or touching the regular one counts as one stretch), else the close of the
        next session. A close exactly at ``instant`` is past (sessions are half-open).

        Raises LookupError when no session ends within ~400 days (an empty calendar).
        """
        snap = self._snap
        ex = _norm(exchange)
        day = to_ist(instant).date()
        for offset in range(_SEARCH_DAYS):
            for _, end in _merged(_sessions(snap, ex, day + timedelta(days=offset))):
                if end > instant:
                    return end
        raise LookupError(f"no session for {exchange} within {_SEARCH_DAYS} days of {instant.isoformat()}")

    def previous_trading_day(self, exchange: str, day: date) -> date:
        """The last regular trading day strictly before ``day``. Raises LookupError if none in ~400 days."""
        snap = self._snap
        ex = _norm(exchange)
        for offset in range(1, _SEARCH_DAYS):
            candidate = day - timedelta(days=offset)
            if _is_trading_day(snap, ex, candidate):
                return candidate
        raise LookupError(f"no trading day for {exchange} before {day.isoformat()}")

    def next_trading_day(self, exchange: str, day: date) -> date:
        """The first regular trading day strictly after ``day``. Raises LookupError if none in ~400 days."""
        snap = self._snap
        ex = _norm(exchange)
        for offset in range(1, _SEARCH_DAYS):
            candidate = day + timedelta(days=offset)
            if _is_trading_day(snap, ex, candidate):
                return candidate
        raise LookupError(f"no trading day for {exchange} after {day.isoformat()}")

    def adjust_to_trading_day(self, exchange: str, day: date) -> date:
        """``day`` itself if it is a trading day, else the previous trading day (the expiry holiday shift)."""
        snap = self._snap
        ex = _norm(exchange)
        if _is_trading_day(snap, ex, day):
            return day
        for offset in range(1, _SEARCH_DAYS):
            candidate = day - timedelta(days=offset)
            if _is_trading_day(snap, ex, candidate):
                return candidate
        raise LookupError(f"no trading day for {exchange} before {day.isoformat()}")


def expiry_dates(
    underlying: str,
    kind: ExpiryKind,
    start: date,
    end: date,
    calendar: TradingCalendar,
    specs: ContractSpecs | None = None,
) -> list[date]:
    """Expiries of ``underlying`` whose (holiday-shifted) date falls in [start, end], ascending.

    Nominal dates come from the weekday rule in force on each date; an expiry falling on a holiday of the
    underlying's F&O exchange moves to the previous trading day (Tue 21 Oct 2025 → Mon 20 Oct 2025).
    Raises :class:`~algomirror.domain.errors.UnknownUnderlying` for an unknown underlying.
    """
    exchange = underlying_spec(underlying).fo_exchange
    rules = specs or default_specs()
    # A shift only moves a date earlier, so nominal dates up to a week past ``end`` may land inside.
    nominal = rules.nominal_expiries(underlying, kind, start, end + timedelta(days=7))
    shifted = {calendar.adjust_to_trading_day(exchange, d) for d in nominal}
    return sorted(d for d in shifted if start <= d <= end)


def is_expired(expiry: date, instant: datetime) -> bool:
    """Whether a contract expiring on ``expiry`` is past at ``instant`` (after 15:30 IST on its date)."""
    return instant >= ist_combine(expiry, EXPIRY_CUTOFF)


def default_weekday_sessions() -> dict[int, tuple[time, time]]:
    """Mon–Fri 09:15–15:30 IST."""
    return {weekday: (time(9, 15), time(15, 30)) for weekday in range(5)}


NSE_HOLIDAYS: dict[date, str] = {
    date(2024, 11, 1): "Diwali Laxmi Pujan",
    date(2025, 2, 26): "Mahashivratri",
    date(2025, 3, 14): "Holi",
    date(2025, 3, 31): "Id-Ul-Fitr (Ramadan Eid)",
    date(2025, 4, 10): "Shri Mahavir Jayanti",
    date(2025, 4, 14): "Dr. Baba Saheb Ambedkar Jayanti",
    date(2025, 4, 18): "Good Friday",
    date(2025, 5, 1): "Maharashtra Day",
    date(2025, 8, 15): "Independence Day",
    date(2025, 8, 27): "Ganesh Chaturthi",
    date(2025, 10, 2): "Mahatma Gandhi Jayanti / Dussehra",
    date(2025, 10, 21): "Diwali Laxmi Pujan",
    date(2025, 10, 22): "Diwali Balipratipada",
    date(2025, 11, 5): "Prakash Gurpurb Sri Guru Nanak Dev",
    date(2025, 12, 25): "Christmas",
    date(2026, 1, 26): "Republic Day",
    date(2026, 3, 3): "Holi",
    date(2026, 3, 26): "Shri Ram Navami",
    date(2026, 3, 31): "Shri Mahavir Jayanti",
    date(2026, 4, 3): "Good Friday",
    date(2026, 4, 14): "Dr. Baba Saheb Ambedkar Jayanti",
    date(2026, 5, 1): "Maharashtra Day",
    date(2026, 5, 28): "Bakri Id",
    date(2026, 6, 26): "Muharram",
    date(2026, 9, 14): "Ganesh Chaturthi",
    date(2026, 10, 2): "Mahatma Gandhi Jayanti",
    date(2026, 10, 20): "Dussehra",
    date(2026, 11, 10): "Diwali Balipratipada",
    date(2026, 11, 24): "Prakash Gurpurb Sri Guru Nanak Dev",
    date(2026, 12, 25): "Christmas",
}

MUHURAT_SESSIONS: tuple[SpecialSession, ...] = (
    SpecialSession(date(2024, 11, 1), time(18, 0), time(19, 0), DEFAULT_EXCHANGES, "Muhurat trading"),
    SpecialSession(date(2025, 10, 21), time(13, 45), time(14, 45), DEFAULT_EXCHANGES, "Muhurat trading"),
)


#: The seed's templates beyond equity (migration 0001): exchange → (open, close) IST, Mon–Fri.
DEFAULT_MARKET_HOURS: dict[str, tuple[time, time]] = {
    "MCX": (time(9, 0), time(23, 30)),  # non-agri while the US is on daylight time (MARKET-FACTS §2)
    "CDS": (time(9, 0), time(17, 0)),
    "BCD": (time(9, 0), time(17, 0)),
}
#: The equity pre-open order-entry window (cash and futures; options have none).
EQUITY_PRE_OPEN: tuple[time, time] = (time(9, 0), time(9, 8))


def default_calendar() -> TradingCalendar:
    """NSE 2025 + 2026 trading holidays (PRODUCT §8) applied to NSE/BSE/NFO/BFO, Mon–Fri 09:15–15:30 IST
    with the 09:00–09:08 pre-open, MCX 09:00–23:30 and CDS/BCD 09:00–17:00 (the seed's templates), and the
    2024/2025 Muhurat sessions. Years without data are treated as having no holidays. The fallback when
    the database's calendar cannot be read."""
    return TradingCalendar(
        holidays=[(day, exchange) for day in NSE_HOLIDAYS for exchange in sorted(DEFAULT_EXCHANGES)],
        weekday_sessions=default_weekday_sessions(),
        special_sessions=MUHURAT_SESSIONS,
        holiday_names=NSE_HOLIDAYS,
        exchange_sessions={ex: dict.fromkeys(range(5), hours) for ex, hours in DEFAULT_MARKET_HOURS.items()},
        pre_open={ex: dict.fromkeys(range(5), EQUITY_PRE_OPEN) for ex in sorted(DEFAULT_EXCHANGES)},
    )
