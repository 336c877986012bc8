"""Protocol review of the paper exchange: client input that is absurd but well-formed must get a 4xx in
OpenAlgo's shape, never a 500 (the request pipeline runs in-process, no sockets)."""

from __future__ import annotations

from typing import Any

import pytest

from algomirror.simulator.core import SimulatorCore
from algomirror.simulator.rest import _dispatch
from tests.sim_fixtures import default_test_config

CE = "NIFTY01DEC2626000CE"


@pytest.fixture(scope="module")
def core() -> SimulatorCore:
    return SimulatorCore(default_test_config(control=False))


def call(core: SimulatorCore, endpoint: str, **body: Any) -> tuple[int, dict[str, Any]]:
    body.setdefault("apikey", core.api_keys[0])
    return _dispatch(core, endpoint, body)


def margin_position(**changes: Any) -> dict[str, Any]:
    position = {
        "symbol": CE,
        "exchange": "NFO",
        "action": "BUY",
        "quantity": "65",
        "product": "NRML",
        "pricetype": "LIMIT",
        "price": "100",
    }
    return {**position, **changes}


@pytest.mark.parametrize(
    ("changes", "field"),
    [({"quantity": "9" * 200}, "quantity"), ({"price": "1e400"}, "price"), ({"price": "-5"}, "price")],
)
def test_margin_when_values_out_of_range_answers_400_naming_the_field(
    core: SimulatorCore, changes: dict[str, Any], field: str
) -> None:
    status, body = call(core, "margin", positions=[margin_position(**changes)])
    assert status == 400 and body["status"] == "error"
    # Order family: the schema error is a string holding a Python-style dict.
    assert isinstance(body["message"], str) and f"{{0: {{'{field}': [" in body["message"]


def test_margin_when_values_ordinary_still_answers_200(core: SimulatorCore) -> None:
    status, body = call(core, "margin", positions=[margin_position()])
    assert status == 200 and body["data"]["total_margin_required"] == 6500.0


@pytest.mark.parametrize("interval", ["D", "1m"])
def test_history_when_end_date_is_last_calendar_day_answers_400_not_500(
    core: SimulatorCore, interval: str
) -> None:
    status, body = call(
        core,
        "history",
        symbol="NIFTY",
        exchange="NSE_INDEX",
        interval=interval,
        start_date="9999-12-25",
        end_date="9999-12-31",
    )
    assert status == 400 and body["status"] == "error"


def test_timings_when_date_is_first_calendar_day_answers_400_data_family(core: SimulatorCore) -> None:
    # 0001-01-01 00:00 IST lies before datetime.min in UTC.
    status, body = call(core, "market/timings", date="0001-01-01")
    assert status == 400 and body == {"status": "error", "message": {"date": ["Not a valid date."]}}


def test_optionchain_when_interest_rate_absurd_answers_400_options_family(core: SimulatorCore) -> None:
    status, body = call(
        core,
        "optionchain",
        underlying="NIFTY",
        exchange="NSE_INDEX",
        expiry_date="01DEC26",
        strike_count=2,
        with_greeks=True,
        interest_rate="1e14",
    )
    assert status == 400 and body["message"] == "Validation error" and "interest_rate" in body["errors"]


def test_optiongreeks_when_interest_rate_absurd_answers_400_greeks_family(core: SimulatorCore) -> None:
    status, body = call(core, "optiongreeks", symbol=CE, exchange="NFO", interest_rate="1e14")
    assert status == 400 and body["message"] == "Validation failed" and "interest_rate" in body["errors"]


def test_funds_when_sl_order_rests_blocks_margin_at_trigger_price() -> None:
    # §3.5: the margin reference price is the trigger for SL orders (the limit only for LIMIT orders).
    core = SimulatorCore(default_test_config(control=False))
    status, body = call(
        core,
        "placeorder",
        strategy="s",
        exchange="NFO",
        symbol=CE,
        action="BUY",
        quantity=65,
        product="NRML",
        pricetype="SL",
        trigger_price="300",
        price="310",
    )
    assert status == 200, body
    order = call(core, "orderstatus", strategy="s", orderid=body["orderid"])[1]["data"]
    assert order["order_status"] == "trigger pending"
    # A long option blocks its full premium: 65 × ₹300.
    assert call(core, "funds")[1]["data"]["utiliseddebits"] == 19500.0
