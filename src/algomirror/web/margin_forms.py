"""The margin calculator's form (PRODUCT §9.4): a GET form, so plain WTForms without a CSRF token (it
changes nothing). Amounts are typed as text and parsed to exact Decimals here (see :func:`rupees`)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from wtforms import BooleanField, Form, SelectChoice, SelectField, StringField
from wtforms.validators import ValidationError

# The trade types the calculator knows: the sizing domain's three plus option buying (premium per lot).
TRADE_CHOICES: tuple[tuple[str, str], ...] = (
    ("single_sell", "One side sold (CE or PE)"),
    ("pair_sell", "CE and PE sold (per pair)"),
    ("futures", "Futures"),
    ("option_buy", "Option buying (premium per lot)"),
)
AMOUNT = "amount"
# An upper bound far above any account (₹1,000 crore) keeps absurd input out of the arithmetic.
MAX_RUPEES = Decimal("10000000000")


def rupees(text: str | None, label: str, *, positive: bool = False) -> Decimal | None:
    """``text`` as an exact rupee Decimal (commas and a leading ₹ allowed; at most 2 decimals), None when
    empty. Raises ValidationError naming ``label`` for anything else, a negative (or, with ``positive``,
    a zero) amount or one above ₹1,000 crore."""
    cleaned = (text or "").strip().replace(",", "").removeprefix("₹").strip()
    if not cleaned:
        return None
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        raise ValidationError(f"{label} must be a number of rupees, like 250000 or 2,50,000.50.") from None
    if not value.is_finite():
        raise ValidationError(f"{label} must be a number of rupees.")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -2:
        raise ValidationError(f"{label} takes at most two decimals (paise).")
    if value < 0 or (positive and value == 0):
        raise ValidationError(f"{label} must be {'above' if positive else 'at least'} ₹0.")
    if value > MAX_RUPEES:
        raise ValidationError(f"{label} must not exceed ₹1,000 crore.")
    return value


class CalculatorForm(Form):
    """Base (an amount or one of the user's accounts), instrument, trade type, grade, expiry day and an
    optional premium per lot; the choices are filled per user by the view. After ``validate()``,
    ``amount_value`` and ``premium_value`` hold the parsed Decimals."""

    base_source = SelectField("Base", choices=[SelectChoice(AMOUNT, "An amount")], default=AMOUNT)
    amount = StringField("Amount (₹)", description="Used when the base is an amount.")
    instrument = SelectField("Instrument", choices=[])
    trade = SelectField(
        "Trade type", choices=[SelectChoice(v, label) for v, label in TRADE_CHOICES], default="single_sell"
    )
    grade = SelectField("Grade", choices=[])
    premium = StringField(
        "Premium per lot (₹)",
        description="Option buying only; empty = the instrument's buying premium from the margin table.",
    )
    expiry_day = BooleanField("Expiry day (the expiry-day margin column)")

    amount_value: Decimal | None = None
    premium_value: Decimal | None = None

    def validate_amount(self, field: StringField) -> None:
        """An amount base needs a valid amount; an account base ignores the field."""
        if self.base_source.data != AMOUNT:
            return
        self.amount_value = rupees(field.data, "Amount")
        if self.amount_value is None:
            raise ValidationError("Enter an amount, or choose one of your accounts as the base.")

    def validate_premium(self, field: StringField) -> None:
        """An optional premium per lot above ₹0."""
        self.premium_value = rupees(field.data, "Premium per lot", positive=True)
