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


_QUANTA = {places: Decimal(1).scaleb(-places) for places in range(7)}


def format_inr(value: Decimal | int | None, *, places: int = 2, symbol: bool = True) -> str:
    """Indian digit grouping with the rupee sign: 123456.5 -> '₹1,23,456.50'. None -> '—'.

    Rounds half-up to ``places`` (0–6); ``symbol=False`` leaves the ₹ out (a table column whose
    header carries the unit). Hot in page rendering, hence the plain string slicing.
    """
    if value is None:
        return "—"
    amount = Decimal(value).quantize(_QUANTA[places], rounding=ROUND_HALF_UP)
    sign = "-" if amount < 0 else ""
    whole, dot, frac = f"{abs(amount):.{places}f}".partition(".")
    if len(whole) > 3:
        head = whole[:-3]
        cut = len(head) % 2
        groups = [head[i : i + 2] for i in range(cut, len(head), 2)]
        if cut:
            groups.insert(0, head[:cut])
        whole = ",".join(groups) + "," + whole[-3:]
    return f"{sign}{'₹' if symbol else ''}{whole}{dot}{frac}"
