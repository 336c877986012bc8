"""Time helpers. Storage and code use aware UTC; IST (Asia/Kolkata, UTC+05:30) only at the edges."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Protocol

IST = timezone(timedelta(hours=5, minutes=30), "IST")


def utcnow() -> datetime:
    """The current instant as an aware UTC datetime."""
    return datetime.now(UTC)


def ensure_aware(value: datetime) -> datetime:
    """Return ``value`` in UTC. Raises ValueError for a naive datetime (its zone is unknowable)."""
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise ValueError("naive datetime: pass an aware datetime (UTC in storage, IST at the edges)")
    return value.astimezone(UTC)


def to_ist(value: datetime) -> datetime:
    return ensure_aware(value).astimezone(IST)


def ist_today(now: datetime) -> date:
    """The IST calendar date of an aware instant (IST midnight is 18:30 UTC the day before)."""
    return to_ist(now).date()


def ist_combine(day: date, at: time) -> datetime:
    """An aware UTC instant for an IST wall-clock time on an IST date."""
    return datetime.combine(day, at, tzinfo=IST).astimezone(UTC)


def format_ist(value: datetime | None, fmt: str = "%d %b %Y %H:%M:%S") -> str:
    """Display form of an instant in IST; empty for None."""
    if value is None:
        return ""
    return to_ist(value).strftime(fmt) + " IST"


class Clock(Protocol):
    """Injected everywhere time matters; tests use :class:`FakeClock`."""

    def now(self) -> datetime: ...


def clock_speed(clock: object | None) -> float:
    """How many seconds ``clock`` advances per wall-clock second: a simulated clock's ``speed``
    attribute, else 1 (a real or fake clock)."""
    speed = getattr(clock, "speed", None)
    return float(speed) if isinstance(speed, int | float) and speed > 0 else 1.0


class SystemClock:
    def now(self) -> datetime:
        return utcnow()


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: datetime) -> None:
        self._now = ensure_aware(start)

    def now(self) -> datetime:
        return self._now

    def set(self, value: datetime) -> None:
        self._now = ensure_aware(value)

    def advance(self, delta: timedelta) -> datetime:
        self._now += delta
        return self._now
