"""Request schemas reproducing OpenAlgo's validation: field names, coercion (§1.2) and error texts.

A schema maps field names to :class:`Field` objects. :func:`load` returns ``(values, errors)``; errors are a
dict ``field -> [message]`` (nested lists: ``field -> {index: {field: [message]}}``), exactly the shape
OpenAlgo's marshmallow schemas produce, so the REST layer can render each error family (§1.3):

* order family: ``message`` = ``str(errors)`` (a Python-style dict in a string);
* data family: ``message`` = the errors object;
* options family: ``message`` = ``"Validation error"`` plus ``errors``.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

MISSING = "Missing data for required field."
UNKNOWN = "Unknown field."
NOT_NULL = "Field may not be null."
NOT_STRING = "Not a valid string."
NOT_INT = "Not a valid integer."
NOT_NUMBER = "Not a valid number."
NOT_BOOL = "Not a valid boolean."
NOT_LIST = "Not a valid list."
NOT_DICT = "Invalid input type."
SPECIAL_NUMBER = "Special numeric values (nan or infinity) are not permitted."

Errors = dict[str, Any]


class Field(ABC):
    def __init__(self, *, required: bool = False, default: Any = None) -> None:
        self.required = required
        self.default = default

    @abstractmethod
    def convert(self, value: Any) -> tuple[Any, list[str] | Errors | None]:
        """The coerced value and no error, or (None, the field's error messages)."""


class Str(Field):
    def __init__(
        self,
        *,
        required: bool = False,
        default: Any = None,
        choices: tuple[str, ...] | None = None,
        upper: bool = False,
        length: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(required=required, default=default)
        self.choices = choices
        self.upper = upper
        self.length = length

    def convert(self, value: Any) -> tuple[Any, list[str] | Errors | None]:
        if not isinstance(value, str):
            return None, [NOT_STRING]
        if self.length is not None:
            lo, hi = self.length
            if not lo <= len(value) <= hi:
                return None, [f"Length must be between {lo} and {hi}."]
        if self.choices is not None:
            candidate = value.upper() if self.upper else value
            if candidate not in self.choices:
                return None, [f"Must be one of: {', '.join(self.choices)}."]
            return candidate, None
        return value, None


def _number_text(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return value.strip()
    return None


def _finite_number(value: Any) -> tuple[Decimal | None, list[str] | None]:
    """A number or numeric string as Decimal (marshmallow's Number parsing, shared by Quantity and Num).

    Returns ``(number, None)``, or ``(None, [message])``: NOT_NUMBER for anything unreadable (booleans
    included), SPECIAL_NUMBER for nan or infinity.
    """
    text = _number_text(value)
    if text is None:
        return None, [NOT_NUMBER]
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None, [NOT_NUMBER]
    if not number.is_finite():
        return None, [SPECIAL_NUMBER]
    return number, None


class Int(Field):
    """Takes 5, "5", 5.0; truncates 5.5; rejects "5.0" and booleans (marshmallow's Integer)."""

    def __init__(
        self,
        *,
        required: bool = False,
        default: Any = None,
        min_value: int | None = None,
        max_value: int | None = None,
        positive_message: str | None = None,
    ) -> None:
        super().__init__(required=required, default=default)
        self.min_value = min_value
        self.max_value = max_value
        self.positive_message = positive_message

    def convert(self, value: Any) -> tuple[Any, list[str] | Errors | None]:
        if isinstance(value, bool) or value is None:
            return None, [NOT_INT]
        if isinstance(value, float):
            if math.isnan(value) or math.isinf(value):
                return None, [NOT_INT]
            number = int(value)
        elif isinstance(value, int):
            number = value
        elif isinstance(value, str):
            try:
                number = int(value.strip())
            except ValueError:
                return None, [NOT_INT]
        else:
            return None, [NOT_INT]
        if self.min_value is not None and number < self.min_value:
            return None, [self.positive_message or f"Must be greater than or equal to {self.min_value}."]
        if self.max_value is not None and number > self.max_value:
            return None, [f"Must be less than or equal to {self.max_value}."]
        return number, None


class Quantity(Field):
    """Order quantity in units: a whole number > 0 (fractional quantities are refused)."""

    def __init__(self, *, required: bool = True, default: Any = None, allow_zero: bool = False) -> None:
        super().__init__(required=required, default=default)
        self.allow_zero = allow_zero

    def convert(self, value: Any) -> tuple[Any, list[str] | Errors | None]:
        number, err = _finite_number(value)
        if number is None:
            return None, err
        if number < 0 or (number == 0 and not self.allow_zero):
            return None, ["Quantity must be a positive number."]
        if number != number.to_integral_value():
            return None, ["Quantity must be a whole number."]
        return int(number), None


class Num(Field):
    """Float: numbers or numeric strings, returned as Decimal (money never goes through float)."""

    def __init__(
        self, *, required: bool = False, default: Any = None, min_value: Decimal | None = None
    ) -> None:
        super().__init__(required=required, default=default)
        self.min_value = min_value

    def convert(self, value: Any) -> tuple[Any, list[str] | Errors | None]:
        number, err = _finite_number(value)
        if number is None:
            return None, err
        if abs(number) > Decimal("1e15"):
            return None, [NOT_NUMBER]
        if self.min_value is not None and number < self.min_value:
            return None, [f"Must be greater than or equal to {self.min_value}."]
        return number, None


class Bool(Field):
    TRUE = frozenset({"true", "t", "yes", "y", "on", "1"})
    FALSE = frozenset({"false", "f", "no", "n", "off", "0"})

    def convert(self, value: Any) -> tuple[Any, list[str] | Errors | None]:
        if isinstance(value, bool):
            return value, None
        if isinstance(value, int) and value in (0, 1):
            return bool(value), None
        if isinstance(value, str) and value.lower() in self.TRUE:
            return True, None
        if isinstance(value, str) and value.lower() in self.FALSE:
            return False, None
        return None, [NOT_BOOL]


class Pattern(Str):
    def __init__(self, regex: str, message: str, *, required: bool = False, default: Any = None) -> None:
        super().__init__(required=required, default=default)
        self.regex = re.compile(regex)
        self.message = message

    def convert(self, value: Any) -> tuple[Any, list[str] | Errors | None]:
        result, err = super().convert(value)
        if err:
            return result, err
        if not self.regex.fullmatch(result):
            return None, [self.message]
        return result, None


class ListOf(Field):
    def __init__(
        self, item: Schema, *, required: bool = False, min_len: int = 0, max_len: int | None = None
    ) -> None:
        super().__init__(required=required, default=None)
        self.item = item
        self.min_len = min_len
        self.max_len = max_len

    def convert(self, value: Any) -> tuple[Any, list[str] | Errors | None]:
        if not isinstance(value, list):
            return None, [NOT_LIST]
        if len(value) < self.min_len or (self.max_len is not None and len(value) > self.max_len):
            if self.max_len is None:
                return None, [f"Shorter than minimum length {self.min_len}."]
            return None, [f"Length must be between {self.min_len} and {self.max_len}."]
        out: list[dict[str, Any]] = []
        errors: dict[int, Errors] = {}
        for i, item in enumerate(value):
            values, err = load(self.item, item)
            if err:
                errors[i] = err
            else:
                out.append(values)
        if errors:
            return None, errors  # type: ignore[return-value]
        return out, None


@dataclass(frozen=True)
class Schema:
    fields: dict[str, Field]


def load(schema: Schema, data: Any) -> tuple[dict[str, Any], Errors]:
    """Validate and coerce ``data``; returns (values, errors). Unknown keys are errors."""
    if not isinstance(data, dict):
        return {}, {"_schema": [NOT_DICT]}
    values: dict[str, Any] = {}
    errors: Errors = {}
    for key in data:
        if key not in schema.fields:
            errors[str(key)] = [UNKNOWN]
    for name, field in schema.fields.items():
        if name not in data:
            if field.required:
                errors[name] = [MISSING]
            else:
                values[name] = field.default
            continue
        raw = data[name]
        if raw is None:
            errors[name] = [NOT_NULL]
            continue
        value, err = field.convert(raw)
        if err:
            errors[name] = err
        else:
            values[name] = value
    return values, errors


# --- enumerations ---------------------------------------------------------------------------------

ORDER_EXCHANGES = ("NSE", "NFO", "CDS", "BSE", "BFO", "BCD", "MCX", "NCDEX")
DATA_EXCHANGES = (*ORDER_EXCHANGES, "NSE_INDEX", "BSE_INDEX", "MCX_INDEX", "GLOBAL_INDEX")
EXPIRY_EXCHANGES = ("NFO", "BFO", "MCX", "CDS", "NCO", "BCD", "NCDEX", "CRYPTO")
OPTION_UNDERLYING_EXCHANGES = ("NSE_INDEX", "BSE_INDEX", "NSE", "BSE", "NFO", "BFO", "MCX", "CDS")
ACTIONS = ("BUY", "SELL")
PRICETYPES = ("MARKET", "LIMIT", "SL", "SL-M")
PRODUCTS = ("MIS", "NRML", "CNC")
OPTION_PRODUCTS = ("MIS", "NRML")
OPTION_TYPES = ("CE", "PE")
INSTRUMENT_KINDS = ("futures", "options")
HISTORY_INTERVALS = (
    "1s",
    "5s",
    "10s",
    "15s",
    "30s",
    "45s",
    "1m",
    "2m",
    "3m",
    "5m",
    "10m",
    "15m",
    "20m",
    "30m",
    "1h",
    "2h",
    "3h",
    "4h",
    "D",
    "W",
    "M",
    "Q",
    "Y",
)
OFFSET_RE = r"ATM|(?:ITM|OTM)(?:[1-9]|[1-4][0-9]|50)"
OFFSET_MESSAGE = "Invalid offset. Must be ATM, ITM1-ITM50, or OTM1-OTM50."
EXPIRY_RE = r"\d{2}(?:JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC)\d{2}"
DATE_RE = r"\d{4}-\d{2}-\d{2}"


def _apikey() -> Str:
    return Str(required=True, length=(1, 256))


def _order_fields(*, exchange_required: bool = True) -> dict[str, Field]:
    return {
        "apikey": _apikey(),
        "strategy": Str(required=True),
        "exchange": Str(required=exchange_required, choices=ORDER_EXCHANGES),
        "symbol": Str(required=True),
        "action": Str(required=True, choices=ACTIONS, upper=True),
        "quantity": Quantity(),
        "pricetype": Str(default="MARKET", choices=PRICETYPES),
        "product": Str(default="MIS", choices=PRODUCTS),
        "price": Num(default=Decimal(0), min_value=Decimal(0)),
        "trigger_price": Num(default=Decimal(0), min_value=Decimal(0)),
        "disclosed_quantity": Int(default=0, min_value=0),
    }


def _basket_item() -> Schema:
    f = _order_fields()
    del f["apikey"], f["strategy"]
    return Schema(f)


def _option_leg() -> Schema:
    return Schema(
        {
            "offset": Pattern(OFFSET_RE, OFFSET_MESSAGE, required=True),
            "option_type": Str(required=True, choices=OPTION_TYPES, upper=True),
            "action": Str(required=True, choices=ACTIONS, upper=True),
            "quantity": Quantity(),
            "expiry_date": Pattern(EXPIRY_RE, "Invalid expiry date format. Use DDMMMYY (e.g., 25NOV25)."),
            "splitsize": Int(default=0, min_value=0),
            "pricetype": Str(default="MARKET", choices=PRICETYPES),
            "product": Str(default="MIS", choices=OPTION_PRODUCTS),
            "price": Num(default=Decimal(0), min_value=Decimal(0)),
            "trigger_price": Num(default=Decimal(0), min_value=Decimal(0)),
            "disclosed_quantity": Int(default=0, min_value=0),
        }
    )


def _options_base() -> dict[str, Field]:
    return {
        "apikey": _apikey(),
        "underlying": Str(required=True),
        "exchange": Str(required=True, choices=OPTION_UNDERLYING_EXCHANGES),
        "expiry_date": Pattern(EXPIRY_RE, "Invalid expiry date format. Use DDMMMYY (e.g., 25NOV25)."),
        "strike_int": Int(min_value=1),
    }


def _symbol_exchange() -> Schema:
    return Schema({"symbol": Str(required=True), "exchange": Str(required=True, choices=DATA_EXCHANGES)})


def _margin_position() -> Schema:
    return Schema(
        {
            "symbol": Str(required=True),
            "exchange": Str(required=True, choices=ORDER_EXCHANGES),
            "action": Str(required=True, choices=ACTIONS, upper=True),
            "quantity": Str(required=True),
            "product": Str(required=True, choices=PRODUCTS),
            "pricetype": Str(required=True, choices=PRICETYPES),
            "price": Str(default="0"),
            "trigger_price": Str(default="0"),
        }
    )


def _build() -> dict[str, Schema]:
    only_key = Schema({"apikey": _apikey()})
    smart = _order_fields()
    smart["quantity"] = Quantity(allow_zero=True)
    smart["position_size"] = Int(required=True)
    split = _order_fields()
    split["splitsize"] = Int(required=True, min_value=1, positive_message="Split size must be at least 1.")
    modify = {
        "apikey": _apikey(),
        "strategy": Str(required=True),
        "exchange": Str(required=True, choices=ORDER_EXCHANGES),
        "symbol": Str(required=True),
        "orderid": Str(required=True),
        "action": Str(required=True, choices=ACTIONS, upper=True),
        "product": Str(required=True, choices=PRODUCTS),
        "pricetype": Str(required=True, choices=PRICETYPES),
        "price": Num(required=True, min_value=Decimal(0)),
        "quantity": Quantity(),
        "disclosed_quantity": Int(required=True, min_value=0),
        "trigger_price": Num(required=True, min_value=Decimal(0)),
    }
    options_order = {
        **_options_base(),
        "strategy": Str(required=True),
        "offset": Pattern(OFFSET_RE, OFFSET_MESSAGE, required=True),
        "option_type": Str(required=True, choices=OPTION_TYPES, upper=True),
        "action": Str(required=True, choices=ACTIONS, upper=True),
        "quantity": Quantity(),
        "splitsize": Int(default=0, min_value=0),
        "pricetype": Str(default="MARKET", choices=PRICETYPES),
        "product": Str(default="MIS", choices=OPTION_PRODUCTS),
        "price": Num(default=Decimal(0), min_value=Decimal(0)),
        "trigger_price": Num(default=Decimal(0), min_value=Decimal(0)),
        "disclosed_quantity": Int(default=0, min_value=0),
    }
    option_symbol = {
        **_options_base(),
        "strategy": Str(),
        "offset": Pattern(OFFSET_RE, OFFSET_MESSAGE, required=True),
        "option_type": Str(required=True, choices=OPTION_TYPES, upper=True),
    }
    multi = {
        **_options_base(),
        "strategy": Str(required=True),
        "legs": ListOf(_option_leg(), required=True, min_len=1, max_len=20),
    }
    chain = {
        **_options_base(),
        "expiry_date": Pattern(
            EXPIRY_RE, "Invalid expiry date format. Use DDMMMYY (e.g., 25NOV25).", required=True
        ),
        "strike_count": Int(min_value=1, max_value=100),
        "with_greeks": Bool(default=False),
        "interest_rate": Num(),
    }
    return {
        "ping": only_key,
        "funds": only_key,
        "orderbook": only_key,
        "tradebook": only_key,
        "positionbook": only_key,
        "holdings": only_key,
        "intervals": only_key,
        "placeorder": Schema(_order_fields()),
        "placesmartorder": Schema(smart),
        "splitorder": Schema(split),
        "basketorder": Schema(
            {
                "apikey": _apikey(),
                "strategy": Str(required=True),
                "orders": ListOf(_basket_item(), required=True, min_len=1, max_len=100),
            }
        ),
        "modifyorder": Schema(modify),
        "cancelorder": Schema(
            {"apikey": _apikey(), "strategy": Str(required=True), "orderid": Str(required=True)}
        ),
        "cancelallorder": Schema({"apikey": _apikey(), "strategy": Str(required=True)}),
        "closeposition": Schema({"apikey": _apikey(), "strategy": Str(required=True)}),
        "orderstatus": Schema(
            {"apikey": _apikey(), "strategy": Str(required=True), "orderid": Str(required=True)}
        ),
        "openposition": Schema(
            {
                "apikey": _apikey(),
                "strategy": Str(required=True),
                "symbol": Str(required=True),
                "exchange": Str(required=True, choices=ORDER_EXCHANGES),
                "product": Str(required=True, choices=PRODUCTS),
            }
        ),
        "quotes": Schema({"apikey": _apikey(), **_symbol_exchange().fields}),
        "depth": Schema({"apikey": _apikey(), **_symbol_exchange().fields}),
        "symbol": Schema({"apikey": _apikey(), **_symbol_exchange().fields}),
        "multiquotes": Schema(
            {
                "apikey": _apikey(),
                "symbols": ListOf(_symbol_exchange(), required=True, min_len=1, max_len=500),
            }
        ),
        "history": Schema(
            {
                "apikey": _apikey(),
                "symbol": Str(required=True),
                "exchange": Str(required=True, choices=DATA_EXCHANGES),
                "interval": Str(required=True, choices=HISTORY_INTERVALS),
                "start_date": Pattern(DATE_RE, "Not a valid date.", required=True),
                "end_date": Pattern(DATE_RE, "Not a valid date.", required=True),
                "source": Str(default="api", choices=("api", "db")),
            }
        ),
        "search": Schema(
            {"apikey": _apikey(), "query": Str(required=True), "exchange": Str(choices=DATA_EXCHANGES)}
        ),
        "expiry": Schema(
            {
                "apikey": _apikey(),
                "symbol": Str(required=True),
                "exchange": Str(required=True, choices=EXPIRY_EXCHANGES),
                "instrumenttype": Str(required=True, choices=INSTRUMENT_KINDS),
            }
        ),
        "optionsorder": Schema(options_order),
        "optionsymbol": Schema(option_symbol),
        "optionsmultiorder": Schema(multi),
        "optionchain": Schema(chain),
        "optiongreeks": Schema(
            {
                "apikey": _apikey(),
                "symbol": Str(required=True),
                "exchange": Str(required=True, choices=("NFO", "BFO", "CDS", "MCX")),
                "interest_rate": Num(min_value=Decimal(0)),
                "forward_price": Num(min_value=Decimal(0)),
                "underlying_symbol": Str(),
                "underlying_exchange": Str(choices=DATA_EXCHANGES),
                "expiry_time": Pattern(r"\d{1,2}:\d{2}", "Use HH:MM (e.g., 15:30)."),
            }
        ),
        "margin": Schema(
            {
                "apikey": _apikey(),
                "positions": ListOf(_margin_position(), required=True, min_len=1, max_len=50),
            }
        ),
        "analyzer": only_key,
        "analyzer/toggle": Schema({"apikey": _apikey(), "mode": Bool(required=True)}),
        "market/holidays": Schema({"apikey": Str(), "year": Int(min_value=1900, max_value=2200)}),
        "market/timings": Schema(
            {"apikey": Str(), "date": Pattern(DATE_RE, "Not a valid date.", required=True)}
        ),
    }


SCHEMAS: dict[str, Schema] = _build()

ORDER_FAMILY = frozenset(
    {
        "placeorder",
        "placesmartorder",
        "modifyorder",
        "cancelorder",
        "cancelallorder",
        "closeposition",
        "basketorder",
        "splitorder",
        "orderstatus",
        "openposition",
        "margin",
    }
)
OPTIONS_FAMILY = frozenset({"optionsorder", "optionsmultiorder", "optionsymbol", "optionchain"})
GREEKS_FAMILY = frozenset({"optiongreeks"})


def error_body(endpoint: str, errors: Errors) -> dict[str, Any]:
    """The 400 body for schema ``errors`` in the endpoint's family (OPENALGO-PROTOCOL.md §1.3)."""
    if endpoint in ORDER_FAMILY:
        return {"status": "error", "message": str(errors)}
    if endpoint in GREEKS_FAMILY:
        return {"status": "error", "message": "Validation failed", "errors": _jsonable(errors)}
    if endpoint in OPTIONS_FAMILY:
        return {"status": "error", "message": "Validation error", "errors": _jsonable(errors)}
    return {"status": "error", "message": _jsonable(errors)}


def _jsonable(errors: Any) -> Any:
    if isinstance(errors, dict):
        return {str(k): _jsonable(v) for k, v in errors.items()}
    return errors
