"""The paper exchange's request validation reproduces OpenAlgo's coercion rules and error shapes."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from algomirror.simulator.ratelimit import Limit, RateLimitConfig, RateLimiter
from algomirror.simulator.validation import SCHEMAS, error_body, load

KEY = "a" * 64
ORDER = {"apikey": KEY, "strategy": "s", "exchange": "NFO", "symbol": "X", "action": "BUY", "quantity": "65"}


def place(**changes: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    body = {**ORDER, **changes}
    return load(SCHEMAS["placeorder"], {k: v for k, v in body.items() if v is not ...})


@pytest.mark.parametrize(("raw", "expected"), [(65, 65), ("65", 65), (65.0, 65)])
def test_quantity_when_int_like_is_coerced(raw: object, expected: int) -> None:
    values, errors = place(quantity=raw)
    assert errors == {} and values["quantity"] == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (0, "Quantity must be a positive number."),
        (-65, "Quantity must be a positive number."),
        (6.5, "Quantity must be a whole number."),
        ("abc", "Not a valid number."),
        (True, "Not a valid number."),
    ],
)
def test_quantity_when_not_positive_whole_is_refused(raw: object, message: str) -> None:
    assert place(quantity=raw)[1] == {"quantity": [message]}


@pytest.mark.parametrize(
    ("raw", "ok"), [(5, True), ("5", True), (5.0, True), (5.5, True), ("5.0", False), (True, False)]
)
def test_int_when_marshmallow_rules_apply(raw: object, ok: bool) -> None:
    values, errors = place(disclosed_quantity=raw)
    assert (errors == {}) is ok
    if ok:
        assert values["disclosed_quantity"] == 5  # 5.5 truncates


def test_price_when_string_or_number_becomes_decimal() -> None:
    assert place(price="101.35")[0]["price"] == Decimal("101.35")
    assert place(price=101.35)[0]["price"] == Decimal("101.35")
    assert place(price="x")[1] == {"price": ["Not a valid number."]}
    assert place(price=-1)[1] == {"price": ["Must be greater than or equal to 0."]}


def test_strings_when_numbers_or_null_are_refused() -> None:
    assert place(symbol=123)[1] == {"symbol": ["Not a valid string."]}
    assert place(strategy=None)[1] == {"strategy": ["Field may not be null."]}


def test_enums_when_case_differs_only_action_is_lenient() -> None:
    assert place(action="sell")[0]["action"] == "SELL"
    assert place(product="nrml")[1] == {"product": ["Must be one of: MIS, NRML, CNC."]}
    assert place(exchange="NSE_INDEX")[1] == {
        "exchange": ["Must be one of: NSE, NFO, CDS, BSE, BFO, BCD, MCX, NCDEX."]
    }


def test_missing_and_unknown_fields_when_present_are_listed() -> None:
    _, errors = place(symbol=..., target="5")
    assert errors == {"symbol": ["Missing data for required field."], "target": ["Unknown field."]}


def test_defaults_when_optional_fields_absent() -> None:
    values, _ = place()
    assert (values["pricetype"], values["product"], values["price"], values["trigger_price"]) == (
        "MARKET",
        "MIS",
        Decimal(0),
        Decimal(0),
    )


def test_error_body_when_family_differs_uses_its_envelope() -> None:
    errors = {"quantity": ["Quantity must be a positive number."]}
    assert error_body("placeorder", errors) == {
        "status": "error",
        "message": "{'quantity': ['Quantity must be a positive number.']}",
    }
    assert error_body("quotes", errors) == {"status": "error", "message": errors}
    assert error_body("optionsorder", errors) == {
        "status": "error",
        "message": "Validation error",
        "errors": errors,
    }


def test_nested_list_when_item_invalid_reports_index() -> None:
    _, errors = load(
        SCHEMAS["basketorder"], {"apikey": KEY, "strategy": "s", "orders": [{**ORDER, "apikey": None}]}
    )
    assert errors == {"orders": {0: {"apikey": ["Unknown field."], "strategy": ["Unknown field."]}}}


def test_rate_limit_text_when_parsed_matches_flask_limiter() -> None:
    assert Limit.parse("10 per 1 second").text == "10 per 1 second"
    assert Limit.parse("50/second").text == "50 per 1 second"
    with pytest.raises(ValueError, match="bad rate limit"):
        Limit.parse("often")


def test_rate_limiter_when_window_moves_admits_again() -> None:
    clock = [0.0]
    limiter = RateLimiter(RateLimitConfig(), now=lambda: clock[0])
    assert all(limiter.hit("k", "placeorder") is None for _ in range(10))
    assert limiter.hit("k", "placeorder") is not None
    assert limiter.hit("k2", "placeorder") is None  # per key
    assert limiter.hit("k", "funds") is None  # per route
    clock[0] = 1.01
    assert limiter.hit("k", "placeorder") is None
