"""The strategy builder's form: every strategy field of PRODUCT §4.1 and a fixed number of leg rows (§4.2).

Each field parses its own text (numbers, times, choices); the rules that span fields — LIMIT needs a price,
times in order and inside the session, accounts of the user, at least one leg — run in
:meth:`StrategyForm.check`, which puts every failure beside its field so one reply names them all.
Leg rows are plain WTForms forms with the prefix ``legs-<i>-`` inside the one CSRF-protected form; a row
whose instrument is left empty is ignored.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, time
from decimal import Decimal, InvalidOperation
from typing import Any

from flask import request
from flask_wtf import FlaskForm
from wtforms import BooleanField, Field, Form, HiddenField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.form import BaseForm
from wtforms.validators import DataRequired, Length, ValidationError

from algomirror.controlchars import describe, first_control
from algomirror.db.models.enums import (
    ALLOCATION_TYPES,
    MARKET_CONDITIONS,
    RISK_SCOPES,
    STRATEGY_PRODUCTS,
    SUPERTREND_TIMEFRAMES,
    TRAILING_SL_TYPES,
)
from algomirror.domain.calendar import default_weekday_sessions
from algomirror.domain.contract_specs import default_specs
from algomirror.domain.instruments import TICK_SIZE, UNDERLYINGS
from algomirror.web.forms import no_control_characters

LEG_ROWS = 6
NAME_MAX = 100
DESCRIPTION_MAX = 2000
OFFSET_MAX = 20
LOTS_MAX = 100
PERIOD_RANGE = (5, 20)
MULTIPLIER_RANGE = (Decimal(1), Decimal(10))
# Every weekday session of the default template is the same: 09:15–15:30 IST (PRODUCT §8).
SESSION_OPEN, SESSION_CLOSE = default_weekday_sessions()[0]
MIS_SQUARE_OFF = time(15, 15)
OFF_HELP = "Empty or 0 = off."
ALERT_ONLY = "(off = alert only)"

# The builder's "contract" column: the option type, or the product type for futures and equity.
CONTRACTS = (("CE", "Call (CE)"), ("PE", "Put (PE)"), ("FUT", "Future"), ("EQ", "Equity"))
CONTRACT_PRODUCT = {"CE": "options", "PE": "options", "FUT": "futures", "EQ": "equity"}
EXPIRIES = (
    ("current_week", "Current week"),
    ("next_week", "Next week"),
    ("current_month", "Current month"),
    ("next_month", "Next month"),
)
STRIKE_CHOICES = (
    ("ATM", "ATM"),
    ("ITM", "ITM n"),
    ("OTM", "OTM n"),
    ("strike_price", "Exact strike"),
    ("premium_near", "Premium near"),
)
ORDER_TYPES = (("MARKET", "Market"), ("LIMIT", "Limit"), ("SL-LMT", "SL limit"), ("SL-MKT", "SL market"))
LEVEL_TYPES = (("", "Off"), ("percentage", "%"), ("points", "Points"), ("premium", "Premium"))
TRAILING_TYPES = (("points", "Points"), ("percentage", "%"))
_TIME_RE = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")
_NUMBER_MAX_CHARS = 20


def _choices(pairs: Sequence[tuple[str, str]]) -> list[SelectChoice]:
    return [SelectChoice(value, label) for value, label in pairs]


def _plain(values: Sequence[str]) -> list[SelectChoice]:
    return [SelectChoice(v, v.replace("_", " ").capitalize()) for v in values]


def _strip(value: object) -> object:
    return value.strip() if isinstance(value, str) else value


def add_error(field: Field, message: str) -> None:
    """Put ``message`` beside ``field`` (after any error it already has)."""
    if message not in field.errors:
        field.errors = [*field.errors, message]


class NumberText(StringField):
    """A number typed as text. ``value`` is the parsed Decimal (None when empty or invalid); a value that
    is not a plain finite number, has more than ``places`` decimals or falls outside ``minimum``..``maximum``
    gets an inline error naming ``what``."""

    value: Decimal | None

    def __init__(
        self,
        label: str,
        what: str,
        *,
        places: int = 2,
        minimum: Decimal | int | None = None,
        maximum: Decimal | int | None = None,
        positive: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            label,
            validators=[_number_check(what, places, minimum, maximum, positive)],
            filters=[_strip],
            render_kw={"inputmode": "numeric" if places == 0 else "decimal"},
            **kwargs,
        )
        self.value = None


def _number_check(
    what: str, places: int, minimum: Decimal | int | None, maximum: Decimal | int | None, positive: bool
) -> Callable[[BaseForm, Field], None]:
    def check(_form: BaseForm, field: Field) -> None:
        assert isinstance(field, NumberText)
        field.value = None
        text = str(field.data or "").replace(",", "").strip()
        if not text:
            return
        kind = "a whole number" if places == 0 else "a number"
        if len(text) > _NUMBER_MAX_CHARS:
            raise ValidationError(f"{what} is too long to be {kind}.")
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise ValidationError(f"{what} must be {kind}.") from None
        if not number.is_finite():
            raise ValidationError(f"{what} must be {kind}.")
        exponent = number.as_tuple().exponent
        if isinstance(exponent, int) and -exponent > places and number != number.to_integral_value():
            if places == 0:
                raise ValidationError(f"{what} must be a whole number.")
            raise ValidationError(f"{what} allows at most {places} decimals.")
        if minimum is not None and maximum is not None and not minimum <= number <= maximum:
            raise ValidationError(f"{what} must be {minimum}–{maximum}.")
        if positive and number <= 0:
            raise ValidationError(f"{what} must be greater than 0.")
        if number < 0:
            raise ValidationError(f"{what} must not be negative.")
        field.value = number

    return check


class TimeText(StringField):
    """An IST wall-clock time, HH:MM (a browser's time input may add :SS). ``value`` is the parsed time."""

    value: time | None

    def __init__(self, label: str, what: str, **kwargs: Any) -> None:
        super().__init__(
            label,
            validators=[_time_check(what)],
            filters=[_strip],
            render_kw={"type": "time"},
            **kwargs,
        )
        self.value = None


def _time_check(what: str) -> Callable[[BaseForm, Field], None]:
    def check(_form: BaseForm, field: Field) -> None:
        assert isinstance(field, TimeText)
        field.value = None
        text = str(field.data or "").strip()
        if not text:
            return
        match = _TIME_RE.match(text)
        parsed: time | None = None
        if match:
            hour, minute, second = (int(g) if g else 0 for g in match.groups())
            if hour < 24 and minute < 60 and second < 60:
                parsed = time(hour, minute, second)
        if parsed is None:
            raise ValidationError(f"{what} must be a time like 09:20.")
        if not SESSION_OPEN <= parsed <= SESSION_CLOSE:
            raise ValidationError(
                f"{what} must be inside the session, {SESSION_OPEN:%H:%M}–{SESSION_CLOSE:%H:%M} IST."
            )
        field.value = parsed

    return check


MULTIPLIER_MAX = Decimal(100)


def parse_multiplier(text: str) -> tuple[Decimal | None, str | None]:
    """A custom-allocation lot multiplier: (value, None), (None, None) when empty, or (None, error)."""
    text = text.strip()
    if not text:
        return None, None
    try:
        value = Decimal(text) if len(text) <= _NUMBER_MAX_CHARS else None
    except InvalidOperation:
        value = None
    if value is None or not value.is_finite():
        return None, "The multiplier must be a number, e.g. 1.5."
    if not 0 < value <= MULTIPLIER_MAX or value != value.quantize(Decimal("0.01")):
        return None, f"The multiplier must be above 0 and at most {MULTIPLIER_MAX}, with at most 2 decimals."
    return value, None


def _text_check(label: str) -> Callable[[BaseForm, Field], None]:
    """Free text that may hold line breaks and tabs but no other control character."""

    def check(_form: BaseForm, field: Field) -> None:
        value = field.data
        if isinstance(value, str):
            char = first_control(value.replace("\r", "").replace("\n", "").replace("\t", ""))
            if char is not None:
                raise ValidationError(f"{label} must not contain control characters ({describe(char)}).")

    return check


class LegForm(Form):
    """One leg row (PRODUCT §4.2). ``leg_id`` names the stored leg the row edits (empty: a new leg)."""

    leg_id = HiddenField()
    instrument = SelectField(
        "Instrument", choices=[SelectChoice("", "—"), *(SelectChoice(n) for n in UNDERLYINGS)], default=""
    )
    option_type = SelectField("Contract", choices=_choices(CONTRACTS), default="CE")
    expiry = SelectField("Expiry", choices=_choices(EXPIRIES), default="current_week")
    action = SelectField("Action", choices=[SelectChoice("BUY", "Buy"), SelectChoice("SELL", "Sell")])
    strike_selection = SelectField("Strike", choices=_choices(STRIKE_CHOICES), default="ATM")
    strike_offset = NumberText("n", "Strike offset", places=0, positive=False)
    strike_price = NumberText("Strike ₹", "Strike price")
    premium_value = NumberText("Premium ₹", "Premium")
    order_type = SelectField("Order", choices=_choices(ORDER_TYPES), default="MARKET")
    limit_price = NumberText("Limit ₹", "Limit price")
    trigger_price = NumberText("Trigger ₹", "Trigger price")
    price_condition = SelectField(
        "Condition",
        choices=[SelectChoice("", "—"), SelectChoice("ABOVE", "Above"), SelectChoice("BELOW", "Below")],
        default="",
    )
    lots = NumberText("Lots", "Lots", places=0, positive=False, default="1")
    stop_loss_type = SelectField("SL", choices=_choices(LEVEL_TYPES), default="")
    stop_loss_value = NumberText("SL value", "Stop loss")
    take_profit_type = SelectField("Target", choices=_choices(LEVEL_TYPES), default="")
    take_profit_value = NumberText("Target value", "Target")
    enable_trailing = BooleanField("Trail")
    trailing_type = SelectField("Trail by", choices=_choices(TRAILING_TYPES), default="points")
    trailing_value = NumberText("Trail value", "Trailing")

    def is_blank(self) -> bool:
        """A row without an instrument is not a leg: it is ignored."""
        return not (self.instrument.data or "")

    def number(self, name: str) -> Decimal | None:
        """The parsed value of the row's number field ``name`` (after validation)."""
        field = self[name]
        assert isinstance(field, NumberText)
        return field.value

    def values(self) -> dict[str, Any]:
        """The leg's column values (validated row): product type derived from the contract column, fields
        that do not apply to it cleared."""
        contract = self.option_type.data or "CE"
        product = CONTRACT_PRODUCT[contract]
        options = product == "options"
        selection = (self.strike_selection.data or "ATM") if options else None
        order_type = self.order_type.data or "MARKET"
        offset = self.number("strike_offset")
        sl_type = self.stop_loss_type.data or None
        tp_type = self.take_profit_type.data or None
        trailing = bool(self.enable_trailing.data)
        return {
            "instrument": self.instrument.data,
            "product_type": product,
            "expiry": None if product == "equity" else self.expiry.data,
            "action": self.action.data,
            "option_type": contract if options else None,
            "strike_selection": selection,
            "strike_offset": int(offset) if selection in ("ITM", "OTM") and offset is not None else 0,
            "strike_price": self.number("strike_price") if selection == "strike_price" else None,
            "premium_value": self.number("premium_value") if selection == "premium_near" else None,
            "order_type": order_type,
            "limit_price": self.number("limit_price") if order_type in ("LIMIT", "SL-LMT") else None,
            "trigger_price": self.number("trigger_price") if order_type.startswith("SL") else None,
            "price_condition": self.price_condition.data or None,
            "lots": int(self.number("lots") or 1),
            "stop_loss_type": sl_type,
            "stop_loss_value": self.number("stop_loss_value") if sl_type else None,
            "take_profit_type": tp_type,
            "take_profit_value": self.number("take_profit_value") if tp_type else None,
            "enable_trailing": trailing,
            "trailing_type": (self.trailing_type.data or "points") if trailing else None,
            "trailing_value": self.number("trailing_value") if trailing else None,
        }


def _row(legs: Sequence[Mapping[str, Any]], index: int) -> Mapping[str, Any] | None:
    return legs[index] if index < len(legs) else None


@dataclass(frozen=True, slots=True)
class CheckContext:
    """What the cross-field rules need from the database and the clock."""

    # The user's active accounts: id → name.
    accounts: Mapping[int, str]
    # Grade profiles whose grade is a buyer (cash) grade: no SELL or futures legs.
    cash_profiles: frozenset[str]
    # Leg ids of the strategy being edited (a row may only name one of these).
    leg_ids: frozenset[int]
    today: date


class StrategyForm(FlaskForm):
    """A strategy and its leg rows. Build it with the risk-profile choices of the user's grades; pass
    ``data`` (from :func:`algomirror.web.strategies.repo.strategy_data`) to prefill a GET."""

    name = StringField(
        "Name",
        filters=[_strip],
        validators=[
            DataRequired("Give the strategy a name."),
            no_control_characters("Name"),
            Length(max=NAME_MAX, message=f"Name must be at most {NAME_MAX} characters."),
        ],
    )
    description = TextAreaField(
        "Description",
        filters=[_strip],
        validators=[
            _text_check("Description"),
            Length(max=DESCRIPTION_MAX, message=f"Description must be at most {DESCRIPTION_MAX} characters."),
        ],
    )
    market_condition = SelectField(
        "Days", choices=_plain(MARKET_CONDITIONS), default="any", description="Which days it is meant for."
    )
    risk_profile = SelectField("Sizing", default="fixed_lots")
    allocation_type = SelectField("Allocation", choices=_plain(ALLOCATION_TYPES), default="equal")
    product_order_type = SelectField(
        "Product", choices=[SelectChoice(p) for p in STRATEGY_PRODUCTS], default="MIS"
    )
    entry_time = TimeText("Entry time", "Entry time")
    exit_time = TimeText("Exit time", "Exit time")
    square_off_time = TimeText(
        "Square-off time", "Square-off time", description="Hard cut-off; MIS strategies default to 15:15."
    )
    max_loss = NumberText("Max loss ₹", "Max loss", positive=False, description=OFF_HELP)
    max_profit = NumberText("Max profit ₹", "Max profit", positive=False, description=OFF_HELP)
    trailing_sl = NumberText(
        "Trailing stop", "Trailing stop", positive=False, description="Empty or 0 = off."
    )
    trailing_sl_type = SelectField("Trailing type", choices=_plain(TRAILING_SL_TYPES), default="percentage")
    auto_exit_on_max_loss = BooleanField(f"Exit automatically at max loss {ALERT_ONLY}", default=True)
    auto_exit_on_max_profit = BooleanField(f"Exit automatically at max profit {ALERT_ONLY}", default=True)
    risk_monitoring_enabled = BooleanField("Risk monitoring (off = no automatic exits)", default=True)
    risk_scope = SelectField("Risk scope", choices=_plain(RISK_SCOPES), default="aggregate")
    on_leg_failure = SelectField(
        "When a leg fails",
        choices=[
            SelectChoice("unwind", "Exit that account's filled legs"),
            SelectChoice("keep", "Keep, alert"),
        ],
        default="unwind",
    )
    supertrend_exit_enabled = BooleanField("Supertrend exit")
    supertrend_exit_type = SelectField(
        "Supertrend exit on",
        choices=[
            SelectChoice("", "—"),
            SelectChoice("breakout", "Breakout (net credit)"),
            SelectChoice("breakdown", "Breakdown (net debit)"),
        ],
        default="",
    )
    supertrend_period = NumberText(
        "Supertrend period",
        "Supertrend period",
        places=0,
        minimum=PERIOD_RANGE[0],
        maximum=PERIOD_RANGE[1],
        default="7",
    )
    supertrend_multiplier = NumberText(
        "Supertrend multiplier",
        "Supertrend multiplier",
        places=1,
        minimum=MULTIPLIER_RANGE[0],
        maximum=MULTIPLIER_RANGE[1],
        default="3.0",
    )
    supertrend_timeframe = SelectField(
        "Supertrend candles", choices=_plain(SUPERTREND_TIMEFRAMES), default="5m"
    )
    is_template = BooleanField("Save as template")

    def __init__(
        self,
        *,
        profiles: Sequence[tuple[str, str]],
        data: Mapping[str, Any] | None = None,
        legs: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        super().__init__(data=data)
        self.risk_profile.choices = _choices(profiles)
        formdata = request.form if self.is_submitted() else None
        self.leg_rows: list[LegForm] = [
            LegForm(
                formdata, prefix=f"legs-{i}-", data=legs[i] if i < len(legs) and formdata is None else None
            )
            for i in range(LEG_ROWS)
        ]
        self.legs_error: str | None = None
        self.accounts_error: str | None = None

    def validate_all(self, selected: Sequence[str], context: CheckContext) -> bool:
        """Every field and every rule at once (nothing stops at the first failure). ``selected``: the
        account ids the request named. True when the strategy can be saved."""
        valid = self.validate()
        for row in self.leg_rows:
            if not row.is_blank():
                valid = row.validate() and valid
        return self.check(selected, context) and valid

    def check(self, selected: Sequence[str], context: CheckContext) -> bool:
        """The rules across fields (PRODUCT §4.1–4.2); each failure is put beside its field."""
        ok = True
        entry, exit_, square = self.entry_time.value, self.exit_time.value, self.square_off_time.value
        if entry is not None and exit_ is not None and exit_ <= entry:
            add_error(self.exit_time, "Exit time must be after the entry time.")
            ok = False
        if entry is not None and square is not None and square <= entry:
            add_error(self.square_off_time, "Square-off time must be after the entry time.")
            ok = False
        if exit_ is not None and square is not None and exit_ > square:
            add_error(self.exit_time, "Exit time must not be after the square-off time.")
            ok = False
        if self.supertrend_exit_enabled.data and not self.supertrend_exit_type.data:
            add_error(self.supertrend_exit_type, "Choose breakout or breakdown for the Supertrend exit.")
            ok = False
        for name in ("supertrend_period", "supertrend_multiplier"):
            field = self[name]
            if not (field.data or "").strip() and not field.errors:
                add_error(field, f"Enter the {field.label.text.lower()}.")
                ok = False
        multiplier = self.supertrend_multiplier.value
        if multiplier is not None and (multiplier * 2) != (multiplier * 2).to_integral_value():
            add_error(self.supertrend_multiplier, "Supertrend multiplier goes in steps of 0.5.")
            ok = False

        wanted: list[int] = []
        for raw in selected:
            text = raw.strip()
            account_id = int(text) if text.isascii() and text.isdigit() and len(text) < 12 else None
            if account_id is None or account_id not in context.accounts:
                self.accounts_error = "One of the selected accounts is not one of your active accounts."
                ok = False
            elif account_id not in wanted:
                wanted.append(account_id)
        self.account_ids = wanted

        fixed = (self.risk_profile.data or "") == "fixed_lots"
        cash = (self.risk_profile.data or "") in context.cash_profiles
        used = [row for row in self.leg_rows if not row.is_blank()]
        if not used:
            self.legs_error = "Add at least one leg: choose an instrument in a row."
            ok = False
        for row in used:
            ok = _check_leg(row, context, fixed=fixed, cash=cash) and ok
        return ok


def _weeklies(instrument: str, today: date) -> bool:
    return default_specs().has_weeklies(instrument, today)


def _check_leg(row: LegForm, context: CheckContext, *, fixed: bool, cash: bool) -> bool:
    errors_before = sum(len(f.errors) for f in row)

    def need(field: Field, message: str) -> None:
        if not (field.data or "").strip() and not field.errors:
            add_error(field, message)

    instrument = row.instrument.data or ""
    contract = row.option_type.data or "CE"
    product = CONTRACT_PRODUCT.get(contract, "options")
    if row.leg_id.data and not (row.leg_id.data.isdigit() and int(row.leg_id.data) in context.leg_ids):
        add_error(row.instrument, "This row names a leg of another strategy; reload the page.")
    if product != "equity":
        expiry = row.expiry.data or ""
        weekly = expiry in ("current_week", "next_week")
        if weekly and product == "futures":
            add_error(row.expiry, "Futures are monthly: choose the current or next month.")
        elif (
            weekly
            and instrument in UNDERLYINGS
            and not default_specs().has_weeklies(instrument, context.today)
        ):
            add_error(row.expiry, f"{instrument} has no weekly contracts: choose the current or next month.")
    if product == "options":
        selection = row.strike_selection.data or "ATM"
        if selection in ("ITM", "OTM"):
            need(row.strike_offset, f"Enter how many strikes {selection} (1–{OFFSET_MAX}).")
            offset = row.number("strike_offset")
            if offset is not None and not 1 <= offset <= OFFSET_MAX:
                add_error(row.strike_offset, f"Strike offset must be 1–{OFFSET_MAX}.")
        elif selection == "strike_price":
            need(row.strike_price, "Enter the strike price.")
            strike = row.number("strike_price")
            spec = UNDERLYINGS.get(instrument)
            if strike is not None and spec is not None and strike % spec.strike_step:
                add_error(row.strike_price, f"{instrument} strikes are multiples of {spec.strike_step}.")
        elif selection == "premium_near":
            need(row.premium_value, "Enter the premium to look for.")
    if cash and (row.action.data == "SELL" or product == "futures"):
        add_error(row.action, "A buyer (cash) grade cannot hold SELL or futures legs.")

    order_type = row.order_type.data or "MARKET"
    if order_type in ("LIMIT", "SL-LMT"):
        need(row.limit_price, "A limit order needs a limit price.")
        price = row.number("limit_price")
        if price is not None and price % TICK_SIZE:
            add_error(row.limit_price, f"Limit price must be on the {TICK_SIZE} tick.")
    if order_type.startswith("SL"):
        need(row.trigger_price, "A stop-loss order needs a trigger price.")
        trigger = row.number("trigger_price")
        if trigger is not None and trigger % TICK_SIZE:
            add_error(row.trigger_price, f"Trigger price must be on the {TICK_SIZE} tick.")
    if row.price_condition.data:
        need(row.trigger_price, "A conditional entry needs a trigger price.")

    need(row.lots, "Enter the lots.")
    lots = row.number("lots")
    if lots is not None and (lots < 1 or (fixed and lots > LOTS_MAX)):
        add_error(row.lots, f"Lots must be 1–{LOTS_MAX}." if fixed else "Lots must be at least 1.")

    for kind, value, what in (
        (row.stop_loss_type, row.stop_loss_value, "stop loss"),
        (row.take_profit_type, row.take_profit_value, "target"),
    ):
        if kind.data:
            need(value, f"Enter the {what} value.")
    target = row.number("take_profit_value")
    sell_pct = row.action.data == "SELL" and row.take_profit_type.data == "percentage"
    if sell_pct and target is not None and target >= 100:
        add_error(row.take_profit_value, "A SELL leg's % target must be below 100.")
    if row.enable_trailing.data:
        need(row.trailing_value, "Enter the trailing value.")
    return sum(len(f.errors) for f in row) == errors_before


__all__ = [
    "CONTRACT_PRODUCT",
    "LEG_ROWS",
    "MIS_SQUARE_OFF",
    "CheckContext",
    "LegForm",
    "StrategyForm",
    "add_error",
    "parse_multiplier",
]
