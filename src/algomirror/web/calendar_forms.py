"""Forms of the trading calendar pages (PRODUCT §8). Flask-WTF, so each carries the CSRF token; the
rules that need the database (duplicates, overlaps) live in :mod:`algomirror.db.calendar_edits`.

Dates and times are text fields (``type=date`` / ``type=time`` in the browser) parsed here, so a bad
value gets an inline error naming the field; the markets are one checkbox each.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, time
from typing import Any

from flask_wtf import FlaskForm
from wtforms import BooleanField, StringField
from wtforms.fields.core import Field
from wtforms.form import BaseForm
from wtforms.validators import DataRequired, Length, StopValidation

from algomirror.db.calendar_edits import MARKETS, NAME_MAX
from algomirror.web.forms import no_control_characters


def _strip(value: object) -> object:
    return value.strip() if isinstance(value, str) else value


def parse_day(text: str | None) -> date | None:
    """A YYYY-MM-DD date, or None."""
    try:
        return date.fromisoformat((text or "").strip())
    except ValueError:
        return None


def parse_clock(text: str | None) -> time | None:
    """An HH:MM (or HH:MM:SS) time, or None."""
    for pattern in ("%H:%M", "%H:%M:%S"):
        try:
            return datetime.strptime((text or "").strip(), pattern).time()
        except ValueError:
            continue
    return None


def _date_check(label: str) -> Callable[[BaseForm, Field], None]:
    def check(_form: BaseForm, field: Field) -> None:
        if parse_day(field.data) is None:
            raise StopValidation(f"{label} must be a date like 2026-01-26.")

    return check


def _time_check(label: str, *, required: bool = True) -> Callable[[BaseForm, Field], None]:
    def check(_form: BaseForm, field: Field) -> None:
        if not field.data:
            if required:
                raise StopValidation(f"Enter the {label.lower()} (HH:MM).")
            return
        if parse_clock(field.data) is None:
            raise StopValidation(f"{label} must be a time like 09:15.")

    return check


def date_field(label: str = "Date") -> StringField:
    """A required YYYY-MM-DD field (a date picker in the browser)."""
    return StringField(
        label,
        filters=[_strip],
        validators=[DataRequired("Enter the date (YYYY-MM-DD)."), _date_check(label)],
        render_kw={"type": "date"},
    )


def time_field(label: str, *, required: bool = True) -> StringField:
    """An HH:MM IST field (a time picker in the browser)."""
    return StringField(
        label,
        filters=[_strip],
        validators=[_time_check(label, required=required)],
        render_kw={"type": "time"},
    )


def _name_field() -> StringField:
    return StringField(
        "Name",
        filters=[_strip],
        validators=[
            DataRequired("Enter a name."),
            Length(max=NAME_MAX, message=f"The name must be at most {NAME_MAX} characters."),
            no_control_characters("The name"),
        ],
    )


class MarketsForm(FlaskForm):
    """One checkbox per market (``market_NSE`` …); :meth:`chosen_markets` lists the ticked ones and
    ``markets_errors`` holds the messages about them."""

    market_NSE = BooleanField("NSE")
    market_BSE = BooleanField("BSE")
    market_NFO = BooleanField("NFO")
    market_BFO = BooleanField("BFO")
    market_MCX = BooleanField("MCX")
    market_CDS = BooleanField("CDS")
    market_BCD = BooleanField("BCD")

    markets_errors: list[str]

    def market_fields(self) -> list[BooleanField]:
        """The checkboxes in display order."""
        return [getattr(self, f"market_{m}") for m in MARKETS]

    def chosen_markets(self) -> list[str]:
        """The ticked markets."""
        return [m for m in MARKETS if getattr(self, f"market_{m}").data]

    def set_markets(self, markets: list[str]) -> None:
        """Tick exactly ``markets``."""
        for m in MARKETS:
            getattr(self, f"market_{m}").data = m in markets

    def validate(self, extra_validators: Mapping[str, Sequence[Any]] | None = None) -> bool:
        """The fields' checks, and at least one market ticked."""
        ok = super().validate(extra_validators)
        self.markets_errors = [] if self.chosen_markets() else ["Choose at least one market."]
        return ok and not self.markets_errors


class HolidayForm(MarketsForm):
    """A holiday: its date, name and the markets it closes (one row per market)."""

    day = date_field()
    name = _name_field()


class SpecialSessionForm(MarketsForm):
    """A special session (Muhurat, a budget Saturday): date, name, IST window and markets."""

    day = date_field()
    name = _name_field()
    market_open = time_field("Open (IST)")
    market_close = time_field("Close (IST)")
