"""The §3.7 day cycle when the clock jumps over 15:15 and 03:00 IST in one step (stub market, no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from algomirror.simulator.exchange import Exchange, ExchangeConfig, OrderRequest
from algomirror.simulator.faults import FaultState
from tests.sim_stub_market import StubMarket

CE = "NIFTY01DEC2626000CE"


def test_day_reset_when_clock_jumps_past_square_off_realises_open_mis_pnl_first() -> None:
    market = StubMarket()
    exchange = Exchange(market, FaultState(), ExchangeConfig(capital=Decimal(10_000_000)))
    market.add_listener(exchange.on_quote)
    acct = exchange.add_account("k" * 64, "u1")
    order = exchange.place(
        acct, OrderRequest(strategy="t", exchange="NFO", symbol=CE, action="BUY", quantity=65, product="MIS")
    )
    assert order.average_price == Decimal("100.05")  # the ask
    market.set_price(CE, "NFO", Decimal(120))
    # One step from 25 Nov 10:30 IST to 26 Nov 04:00 IST: the 15:15 square-off was never seen on its own.
    market.advance_to(datetime(2026, 11, 25, 22, 30, tzinfo=UTC))
    exchange.on_time(market.now())
    assert acct.reset_count == 1 and acct.positions == {}
    # The MIS long was squared off at the bid (119.95), not silently dropped: (119.95 − 100.05) × 65.
    assert acct.realized_total == Decimal("1293.50")
    assert exchange.available_cash(acct) == Decimal("10001293.50")
