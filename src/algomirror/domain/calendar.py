"""Trading calendar: weekday sessions, holidays per exchange and special sessions, with ONE open rule.

PRODUCT §8: an exchange is open at an IST instant when a weekday session contains it and the date is not
that exchange's holiday, **or** a special session (e.g. Muhurat) for that exchange contains it. Sessions are
half-open intervals [open, close). Everything is built from plain data so an admin page or a database can
supply it; :func:`default_calendar` gives the NSE 2025/2026 lists.

Quote-only index exchanges follow their cash exchange (``NSE_INDEX`` → ``NSE``, ``BSE_INDEX`` → ``BSE``).
"Trading day" means a *regular* session day (weekday session, not a holiday); a special session on a
holiday (Muhurat) does not make it a trading day, which is what expiry holiday shifts need.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from algomirror.domain.contract_specs import ContractSpecs, ExpiryKind, default_specs
from algomirror.domain.instruments import underlying_spec
from algomirror.domain.timeutil import ist_combine, to_ist

DEFAULT_EXCHANGES: frozenset[str] = frozenset({"NSE", "BSE", "NFO", "BFO"})
EXCHANGE_ALIASES: dict[str, str] = {"NSE_INDEX": "NSE", "BSE_INDEX": "BSE"}
EXPIRY_CUTOFF = time(15, 30)  # contracts expire at the normal close (IST)

_SEARCH_DAYS = 400  # how far next/previous searches look before giving up


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


def _norm(exchange: str) -> str:
    upper = exchange.upper()
    return EXCHANGE_ALIASES.get(upper, upper)


class TradingCalendar:
    """Sessions and holidays from plain data.

    ``holidays``: (date, exchange) pairs; ``weekday_sessions``: weekday (0 = Monday) → (open, close) IST,
    applied to every exchange; ``special_sessions``: extra windows; ``holiday_names``: optional display names.
    """

    def __init__(
        self,
        *,
        holidays: Iterable[tuple[date, str]] = (),
        weekday_sessions: Mapping[int, tuple[time, time]] | None = None,
        special_sessions: Iterable[SpecialSession] = (),
        holiday_names: Mapping[date, str] | None = None,
    ) -> None:
        self._holidays: frozenset[tuple[date, str]] = frozenset((d, _norm(ex)) for d, ex in holidays)
        sessions = weekday_sessions if weekday_sessions is not None else default_weekday_sessions()
        for weekday, (start, end) in sessions.items():
            if not 0 <= weekday <= 6 or start >= end:
                raise ValueError(f"bad weekday session {weekday}: {start}-{end}")
        self._weekday: dict[int, SessionTimes] = {wd: SessionTimes(o, c) for wd, (o, c) in sessions.items()}
        self._special: dict[date, list[SpecialSession]] = {}
        for special in special_sessions:
            if special.open >= special.close:
                raise ValueError(f"bad special session on {special.day}: {special.open}-{special.close}")
            normalised = SpecialSession(
                special.day,
                special.open,
                special.close,
                frozenset(_norm(e) for e in special.exchanges),
                special.name,
            )
            self._special.setdefault(special.day, []).append(normalised)
        for day_sessions in self._special.values():
            day_sessions.sort(key=lambda s: s.open)
        self._names: dict[date, str] = dict(holiday_names or {})

    # --- data access -------------------------------------------------------------------------------------

    def is_holiday(self, exchange: str, day: date) -> bool:
        return (day, _norm(exchange)) in self._holidays

    def holidays(self, year: int | None = None) -> list[Holiday]:
        """Holidays grouped by date (ascending), optionally for one year."""
        grouped: dict[date, set[str]] = {}
        for day, exchange in self._holidays:
            if year is None or day.year == year:
                grouped.setdefault(day, set()).add(exchange)
        return [Holiday(d, frozenset(ex), self._names.get(d, "")) for d, ex in sorted(grouped.items())]

    def special_sessions(self, year: int | None = None) -> list[SpecialSession]:
        found = [s for d, ss in self._special.items() if year is None or d.year == year for s in ss]
        return sorted(found, key=lambda s: (s.day, s.open))

    # --- the rule ----------------------------------------------------------------------------------------

    def is_trading_day(self, exchange: str, day: date) -> bool:
        """A regular session day: a weekday session exists and ``day`` is not the exchange's holiday."""
        return day.weekday() in self._weekday and not self.is_holiday(exchange, day)

    def sessions(self, exchange: str, day: date) -> list[tuple[datetime, datetime]]:
        """All sessions of ``exchange`` on IST date ``day`` as aware-UTC [open, close) pairs, ascending."""
        ex = _norm(exchange)
        found: list[tuple[datetime, datetime]] = []
        if self.is_trading_day(ex, day):
            regular = self._weekday[day.weekday()]
            found.append((ist_combine(day, regular.open), ist_combine(day, regular.close)))
        for special in self._special.get(day, ()):
            if ex in special.exchanges:
                found.append((ist_combine(day, special.open), ist_combine(day, special.close)))
        return sorted(found)

    def is_open(self, exchange: str, instant: datetime) -> bool:
        """PRODUCT §8's single rule, evaluated at an aware instant (converted to IST)."""
        local = to_ist(instant)
        return any(start <= instant < end for start, end in self.sessions(exchange, local.date()))

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
        day = to_ist(instant).date()
        for offset in range(_SEARCH_DAYS):
            for start, _ in self.sessions(exchange, day + timedelta(days=offset)):
                if start >= instant:
                    return start
        raise LookupError(f"no session for {exchange} within {_SEARCH_DAYS} days of {instant.isoformat()}")

    def previous_trading_day(self, exchange: str, day: date) -> date:
        """The last regular trading day strictly before ``day``. Raises LookupError if none in ~400 days."""
        for offset in range(1, _SEARCH_DAYS):
            candidate = day - timedelta(days=offset)
            if self.is_trading_day(exchange, candidate):
                return candidate
        raise LookupError(f"no trading day for {exchange} before {day.isoformat()}")

    def next_trading_day(self, exchange: str, day: date) -> date:
        """The first regular trading day strictly after ``day``. Raises LookupError if none in ~400 days."""
        for offset in range(1, _SEARCH_DAYS):
            candidate = day + timedelta(days=offset)
            if self.is_trading_day(exchange, candidate):
                return candidate
        raise LookupError(f"no trading day for {exchange} after {day.isoformat()}")

    def adjust_to_trading_day(self, exchange: str, day: date) -> date:
        """``day`` itself if it is a trading day, else the previous trading day (the expiry holiday shift)."""
        return day if self.is_trading_day(exchange, day) else self.previous_trading_day(exchange, day)


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


def default_calendar() -> TradingCalendar:
    """NSE 2025 + 2026 trading holidays (PRODUCT §8) applied to NSE/BSE/NFO/BFO, Mon–Fri 09:15–15:30 IST,
    and the 2024/2025 Muhurat sessions. Years without data are treated as having no holidays."""
    return TradingCalendar(
        holidays=[(day, exchange) for day in NSE_HOLIDAYS for exchange in sorted(DEFAULT_EXCHANGES)],
        weekday_sessions=default_weekday_sessions(),
        special_sessions=MUHURAT_SESSIONS,
        holiday_names=NSE_HOLIDAYS,
    )
