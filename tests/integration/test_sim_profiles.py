"""The paper exchange's two profiles over real loopback HTTP: the reply bodies each one sends.

The `openalgo-paper` bodies are the ones a real OpenAlgo server sent in its paper (analyzer) mode (issue 8
item 11; OpenAlgo's services/sandbox_service.py and sandbox/position_manager.py). Stub market: the NIFTY
01-Dec 26000 CE quotes 100.00 with a one-tick spread and moves only when told.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from algomirror.cli import main
from algomirror.simulator.contracts import MarketModel
from algomirror.simulator.core import SimulatorConfig
from algomirror.simulator.profiles import SMART_NOOP_MATCHED, SMART_NOOP_NO_OPEN_POSITION
from tests.sim_fixtures import SIM_PROFILES, SimHandle, on_both_profiles
from tests.sim_stub_market import StubMarket

CE = "NIFTY01DEC2626000CE"
LOT = 65


def stub_market(_: SimulatorConfig, start: datetime) -> MarketModel:
    return StubMarket(start)


@pytest.fixture
def sim(make_simulator: Callable[..., SimHandle]) -> SimHandle:
    return make_simulator(market_factory=stub_market)


def call(sim: SimHandle, endpoint: str, **body: Any) -> tuple[int, dict[str, Any]]:
    response = httpx.post(f"{sim.api_url}/{endpoint}", json={"apikey": sim.api_keys[0], **body}, timeout=10)
    data: dict[str, Any] = response.json()
    return response.status_code, data


def order_fields(action: str = "BUY", quantity: int = LOT) -> dict[str, str]:
    return {
        "strategy": "profiles",
        "exchange": "NFO",
        "symbol": CE,
        "action": action,
        "quantity": str(quantity),
        "pricetype": "MARKET",
        "product": "NRML",
    }


def smart(sim: SimHandle, position_size: int, quantity: int = 0) -> tuple[int, dict[str, Any]]:
    return call(sim, "placesmartorder", **order_fields(quantity=quantity), position_size=str(position_size))


def orders(sim: SimHandle) -> list[dict[str, Any]]:
    status, body = call(sim, "orderbook")
    assert status == 200
    rows: list[dict[str, Any]] = body["data"]["orders"]
    return rows


def flat_exit_text(profile: str) -> str:
    return SMART_NOOP_NO_OPEN_POSITION if profile == "openalgo-paper" else SMART_NOOP_MATCHED


@on_both_profiles
def test_smart_order_when_exiting_a_flat_position_answers_the_profiles_noop_and_books_nothing(
    sim: SimHandle, sim_profile: str
) -> None:
    assert sim.profile == sim_profile

    status, body = smart(sim, position_size=0, quantity=0)

    assert (status, body) == (200, {"status": "success", "message": flat_exit_text(sim_profile)})
    assert orders(sim) == []


@on_both_profiles
def test_smart_order_when_matched_long_with_quantity_zero_answers_the_profiles_noop(
    sim: SimHandle, sim_profile: str
) -> None:
    status, placed = call(sim, "placeorder", **order_fields())
    assert status == 200 and placed["orderid"]

    status, body = smart(sim, position_size=LOT, quantity=0)

    # The sandbox picks its text by the request's quantity alone, so a matched long gets the
    # "no open position" text too.
    assert (status, body) == (200, {"status": "success", "message": flat_exit_text(sim_profile)})
    assert [row["orderid"] for row in orders(sim)] == [placed["orderid"]]


@on_both_profiles
def test_smart_order_when_matched_with_nonzero_quantity_answers_already_matched(sim: SimHandle) -> None:
    assert call(sim, "placeorder", **order_fields())[0] == 200

    status, body = smart(sim, position_size=LOT, quantity=LOT)

    assert (status, body) == (200, {"status": "success", "message": SMART_NOOP_MATCHED})
    assert len(orders(sim)) == 1


@on_both_profiles
def test_positionbook_when_round_trip_closed_reports_realized_as_the_profile_does(
    sim: SimHandle, sim_profile: str
) -> None:
    assert call(sim, "placeorder", **order_fields("BUY"))[0] == 200  # fills at the ask, 100.05
    sim.control.set_price(CE, "NFO", 110)
    assert call(sim, "placeorder", **order_fields("SELL"))[0] == 200  # fills at the bid, 109.95

    status, body = call(sim, "positionbook")

    assert status == 200
    (row,) = body["data"]
    realized = 643.5  # (109.95 − 100.05) × 65
    assert (row["quantity"], row["today_realized_pnl"], row["pnl"]) == (0, realized, realized)
    assert row["unrealized_pnl"] == (realized if sim_profile == "openalgo-paper" else 0.0)
    assert (body["total_unrealized_pnl"], body["total_today_realized_pnl"]) == (0.0, realized)


@on_both_profiles
def test_sim_state_when_running_reports_the_profile(sim: SimHandle, sim_profile: str) -> None:
    assert sim.control.state()["profile"] == sim_profile


def test_cli_when_profile_unknown_refuses_to_start() -> None:
    result = CliRunner().invoke(main, ["simulator", "--profile", "paper", "--port", "0", "--ws-port", "0"])

    assert result.exit_code == 2
    assert "Invalid value for '--profile'" in result.output


def test_cli_when_profile_given_serves_that_profile() -> None:
    exe = Path(sys.executable).with_name("algomirror")
    command = [str(exe), "simulator", "--port", "0", "--ws-port", "0", "--clock", "manual", "--control"]
    proc = subprocess.Popen(
        [*command, "--accounts", "1", "--profile", SIM_PROFILES[1]],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(6)]
        rest = lines[0].split()[-1].removesuffix("/api/v1/")
        assert lines[3].startswith("control token")
        assert f"profile {SIM_PROFILES[1]}" in lines[4]
        headers = {"X-Sim-Token": lines[3].split()[-1]}
        state = httpx.get(rest + "/sim/state", headers=headers, timeout=5)
        assert state.json()["profile"] == "openalgo-paper"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
    assert proc.returncode == 0


# --- the quirks a client must survive (OPENALGO-PROTOCOL.md §8) -----------------------------------------


def limit_fields(action: str, price: str, **extra: str) -> dict[str, str]:
    return {**order_fields(action), "pricetype": "LIMIT", "price": price, **extra}


def stop_fields(action: str, trigger: str, price: str) -> dict[str, str]:
    return {**order_fields(action), "pricetype": "SL", "price": price, "trigger_price": trigger}


def order_status(sim: SimHandle, orderid: str) -> dict[str, Any]:
    status, body = call(sim, "orderstatus", strategy="profiles", orderid=orderid)
    assert status == 200
    data: dict[str, Any] = body["data"]
    return data


def place(sim: SimHandle, fields: dict[str, str]) -> str:
    status, body = call(sim, "placeorder", **fields)
    assert status == 200, body
    orderid: str = body["orderid"]
    return orderid


@on_both_profiles
def test_cancelallorder_when_a_stop_order_waits_cancels_it_only_on_live_like(
    sim: SimHandle, sim_profile: str
) -> None:
    limit = place(sim, limit_fields("BUY", "90"))
    stop = place(sim, stop_fields("SELL", trigger="90", price="89.5"))
    assert order_status(sim, stop)["order_status"] == "trigger pending"

    status, body = call(sim, "cancelallorder", strategy="profiles")

    assert status == 200
    paper = sim_profile == "openalgo-paper"
    assert body["canceled_orders"] == ([limit] if paper else [limit, stop])
    assert body["failed_cancellations"] == []
    assert order_status(sim, limit)["order_status"] == "cancelled"
    assert order_status(sim, stop)["order_status"] == ("trigger pending" if paper else "cancelled")


@on_both_profiles
def test_modifyorder_when_price_type_changes_answers_modified_but_paper_changes_nothing(
    sim: SimHandle, sim_profile: str
) -> None:
    stop = place(sim, stop_fields("SELL", trigger="90", price="89.5"))

    status, body = call(
        sim,
        "modifyorder",
        **limit_fields("SELL", "120", orderid=stop, disclosed_quantity="0", trigger_price="0"),
    )

    assert (status, body["status"], body["orderid"]) == (200, "success", stop)
    assert body["message"] == "Order modified successfully"
    row = order_status(sim, stop)
    if sim_profile == "openalgo-paper":
        assert (row["pricetype"], row["order_status"]) == ("SL", "trigger pending")
        assert (row["price"], row["trigger_price"]) == (89.5, 90.0)
    else:
        assert (row["pricetype"], row["order_status"]) == ("LIMIT", "open")
        assert (row["price"], row["trigger_price"]) == (120.0, 0.0)


@on_both_profiles
def test_modifyorder_when_price_type_kept_changes_the_price_on_both(sim: SimHandle) -> None:
    limit = place(sim, limit_fields("BUY", "90"))

    status, _ = call(
        sim,
        "modifyorder",
        **limit_fields("BUY", "91", orderid=limit, disclosed_quantity="0", trigger_price="0"),
    )

    assert status == 200
    assert (order_status(sim, limit)["price"], order_status(sim, limit)["order_status"]) == (91.0, "open")


@on_both_profiles
def test_smart_order_when_limit_below_the_market_rests_on_live_like_and_fills_at_market_on_paper(
    sim: SimHandle, sim_profile: str
) -> None:
    status, body = call(sim, "placesmartorder", **limit_fields("BUY", "90"), position_size=str(LOT))

    assert status == 200
    row = order_status(sim, body["orderid"])
    if sim_profile == "openalgo-paper":
        assert (row["order_status"], row["average_price"]) == ("complete", 100.05)  # the ask
    else:
        assert (row["order_status"], row["price"]) == ("open", 90.0)


@on_both_profiles
def test_funds_when_one_option_lot_sold_block_span_on_live_like_and_premium_on_paper(
    sim: SimHandle, sim_profile: str
) -> None:
    place(sim, order_fields("SELL"))  # fills at the bid, 99.95

    status, body = call(sim, "funds")

    assert status == 200
    premium = 6496.75  # 99.95 × 65
    expected = premium if sim_profile == "openalgo-paper" else 250_000.0  # NIFTY, one side, one lot
    assert float(body["data"]["utiliseddebits"]) == expected
    # The margin calculator answers from the margin settings on both profiles.
    status, margin = call(
        sim,
        "margin",
        positions=[{k: v for k, v in order_fields("SELL").items() if k != "strategy"} | {"price": "99.95"}],
    )
    assert status == 200
    assert float(margin["data"]["total_margin_required"]) == 250_000.0
