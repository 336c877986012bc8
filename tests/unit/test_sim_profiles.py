"""The paper exchange's profiles: names, quirk flags, and the positionbook body each profile builds.

Stub market (tests/sim_stub_market.py): NIFTY 01-Dec 26000 CE quotes 100.00 with a one-tick spread, so a
MARKET BUY fills at 100.05 and a MARKET SELL at the bid.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest

from algomirror.simulator.core import SimulatorConfig, SimulatorCore
from algomirror.simulator.exchange import Account, Exchange, ExchangeConfig, OrderRequest
from algomirror.simulator.faults import FaultState
from algomirror.simulator.profiles import PROFILES, Quirks, parse_profile, quirks_for
from algomirror.simulator.wire import positionbook
from tests.sim_stub_market import StubMarket

CE = "NIFTY01DEC2626000CE"


def setup() -> tuple[StubMarket, Exchange, Account]:
    market = StubMarket()
    exchange = Exchange(market, FaultState(), ExchangeConfig(capital=Decimal(10_000_000)))
    market.add_listener(exchange.on_quote)
    return market, exchange, exchange.add_account("k" * 64, "u1")


def trade(exchange: Exchange, acct: Account, action: str, qty: int = 65) -> None:
    request = OrderRequest(
        strategy="t", exchange="NFO", symbol=CE, action=action, quantity=qty, product="NRML"
    )
    assert exchange.place(acct, request).status == "complete"


def round_trip(market: StubMarket, exchange: Exchange, acct: Account) -> Decimal:
    """Buy 1 lot at 100.05, sell it at 109.95: the realised P&L (643.50)."""
    trade(exchange, acct, "BUY")
    market.set_price(CE, "NFO", Decimal(110))
    trade(exchange, acct, "SELL")
    return acct.positions[(CE, "NFO", "NRML")].today_realized


def test_parse_profile_when_name_known_returns_it() -> None:
    assert [parse_profile(name) for name in ("live-like", "openalgo-paper")] == list(PROFILES)


@pytest.mark.parametrize("name", ["", "paper", "Live-Like", "openalgo_paper"])
def test_parse_profile_when_name_unknown_raises_value_error(name: str) -> None:
    with pytest.raises(ValueError, match="unknown simulator profile"):
        parse_profile(name)


def test_quirks_when_live_like_are_all_off_and_paper_all_on() -> None:
    assert quirks_for("live-like") == Quirks()
    paper = quirks_for("openalgo-paper")
    assert all(getattr(paper, flag.name) is True for flag in dataclasses.fields(Quirks))


def test_simulator_core_when_profile_unknown_raises_value_error() -> None:
    config = SimulatorConfig(clock="manual", profile="paper", market_factory=lambda c, s: StubMarket(s))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown simulator profile 'paper'"):
        SimulatorCore(config)


def test_simulator_config_when_profile_not_given_is_live_like() -> None:
    core = SimulatorCore(SimulatorConfig(clock="manual", market_factory=lambda c, s: StubMarket(s)))
    assert (core.config.profile, core.quirks) == ("live-like", Quirks())


@pytest.mark.parametrize(("paper", "shown"), [(False, Decimal(0)), (True, Decimal("643.50"))])
def test_positionbook_when_row_closed_shows_realized_in_unrealized_only_on_paper(
    paper: bool, shown: Decimal
) -> None:
    market, exchange, acct = setup()
    realized = round_trip(market, exchange, acct)
    assert realized == Decimal("643.50")

    body = positionbook(acct, exchange, closed_realized_in_unrealized=paper)

    (row,) = body["data"]
    assert row["quantity"] == 0
    assert (row["today_realized_pnl"], row["pnl"], row["total_pnl_today"]) == (643.5, 643.5, 643.5)
    assert row["unrealized_pnl"] == float(shown)
    assert row["pnlpercent"] == 0.0
    # The sandbox counts only open rows as unrealised in its totals.
    assert (body["total_unrealized_pnl"], body["total_today_realized_pnl"], body["total_pnl"]) == (
        0.0,
        643.5,
        643.5,
    )


@pytest.mark.parametrize("paper", [False, True])
def test_positionbook_when_row_open_after_partial_close_is_the_same_on_both_profiles(paper: bool) -> None:
    market, exchange, acct = setup()
    trade(exchange, acct, "BUY", qty=130)
    market.set_price(CE, "NFO", Decimal(110))
    trade(exchange, acct, "SELL", qty=65)  # realises (109.95 − 100.05) × 65; 65 stay open at 100.05

    (row,) = positionbook(acct, exchange, closed_realized_in_unrealized=paper)["data"]

    assert row["quantity"] == 65
    assert row["today_realized_pnl"] == 643.5
    assert row["unrealized_pnl"] == 646.75  # (110 − 100.05) × 65: the open part, not the realised part
    assert row["pnl"] == 1290.25
