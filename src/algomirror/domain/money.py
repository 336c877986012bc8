"""Money and quantity coercion.

Gateway numbers may be strings, numbers, "" or null: unknown is None, never 0.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

PAISA = Decimal("0.01")


def to_decimal(value: object) -> Decimal | None:
    """Coerce a gateway value to Decimal. Empty, null, bool or unparseable -> None (unknown)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if isinstance(value, int | float):
        text = repr(value) if isinstance(value, float) else str(value)
    elif isinstance(value, str):
        text = value.strip().replace(",", "")
        if not text:
            return None
    else:
        return None
    try:
        result = Decimal(text)
    except InvalidOperation:
        return None
    return result if result.is_finite() else None


def to_money(value: object) -> Decimal | None:
    """Like :func:`to_decimal`, rounded half-up to the paisa."""
    result = to_decimal(value)
    return None if result is None else result.quantize(PAISA, rounding=ROUND_HALF_UP)


def to_quantity(value: object) -> int | None:
    """Coerce a gateway quantity to int. Fractional or unparseable -> None."""
    result = to_decimal(value)
    if result is None or result != result.to_integral_value():
        return None
    return int(result)


def format_inr(value: Decimal | int | None, *, places: int = 2) -> str:
    """Indian digit grouping with the rupee sign: 123456.5 -> '₹1,23,456.50'. None -> '—'."""
    if value is None:
        return "—"
    amount = Decimal(value).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    sign = "-" if amount < 0 else ""
    text = f"{abs(amount):.{places}f}"
    whole, _, frac = text.partition(".")
    if len(whole) > 3:
        head, tail = whole[:-3], whole[-3:]
        groups: list[str] = []
        while len(head) > 2:
            groups.insert(0, head[-2:])
            head = head[:-2]
        if head:
            groups.insert(0, head)
        whole = ",".join([*groups, tail])
    return f"{sign}₹{whole}" + (f".{frac}" if places else "")
