"""Matching, positions, P&L, funds and the day cycle of the paper exchange, on a fully predictable market.

The stub market quotes every derivative with a one-tick spread (bid = ltp − 0.05, ask = ltp + 0.05) and moves
only when told; the NIFTY 26000 CE starts at 100.00 with spot 26,000.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from algomirror.simulator.exchange import (
    AUTO_SQUARE_OFF,
    Account,
    Exchange,
    ExchangeConfig,
    ExchangeError,
    OrderRequest,
)
from algomirror.simulator.faults import FaultState
from tests.sim_stub_market import StubMarket

CE = "NIFTY01DEC2626000CE"
CE_HEDGE = "NIFTY01DEC2626100CE"
PE = "NIFTY01DEC2626000PE"
FUT = "NIFTY29DEC26FUT"
CAPITAL = Decimal(10_000_000)
D = Decimal


def setup(capital: Decimal = CAPITAL) -> tuple[StubMarket, Exchange, Account]:
    market = StubMarket()
    exchange = Exchange(market, FaultState(), ExchangeConfig(capital=capital))
    market.add_listener(exchange.on_quote)
    return market, exchange, exchange.add_account("k" * 64, "u1")


def req(symbol: str = CE, action: str = "BUY", qty: int = 65, **kw: object) -> OrderRequest:
    return OrderRequest(strategy="t", exchange="NFO", symbol=symbol, action=action, quantity=qty, **kw)  # type: ignore[arg-type]


def conserved(exchange: Exchange, acct: Account) -> bool:
    return exchange.available_cash(acct) + exchange.used_margin(acct) == acct.capital + acct.realized_total


# --- matching table ---------------------------------------------------------------------------------------

PRODUCTS = ["MIS", "NRML"]


@pytest.mark.parametrize("product", PRODUCTS)
@pytest.mark.parametrize(("action", "price"), [("BUY", D("100.05")), ("SELL", D("99.95"))])
def test_market_when_placed_fills_at_touch(product: str, action: str, price: Decimal) -> None:
    _, ex, acct = setup()
    order = ex.place(acct, req(action=action, product=product))
    assert (order.status, order.average_price, order.filled_quantity) == ("complete", price, 65)


@pytest.mark.parametrize("product", PRODUCTS)
@pytest.mark.parametrize(
    ("action", "marketable_limit", "resting_limit", "cross_at"),
    [("BUY", D(101), D(90), D(89)), ("SELL", D(99), D(110), D(111))],
)
def test_limit_when_marketable_fills_at_ltp_else_rests_and_fills_at_limit(
    product: str, action: str, marketable_limit: Decimal, resting_limit: Decimal, cross_at: Decimal
) -> None:
    market, ex, acct = setup()
    now = ex.place(acct, req(action=action, product=product, pricetype="LIMIT", price=marketable_limit))
    assert (now.status, now.average_price) == ("complete", D(100))
    rest = ex.place(acct, req(action=action, product=product, pricetype="LIMIT", price=resting_limit))
    assert rest.status == "open"
    market.set_price(CE, "NFO", (D(100) + resting_limit) / 2)  # moved toward the limit, not across it
    assert rest.status == "open"
    market.set_price(CE, "NFO", cross_at)
    assert (rest.status, rest.average_price) == ("complete", resting_limit)


@pytest.mark.parametrize("product", PRODUCTS)
@pytest.mark.parametrize(
    ("action", "trigger", "near", "hit"), [("BUY", D(105), D(104), D(105)), ("SELL", D(95), D(96), D(95))]
)
def test_slm_when_ltp_reaches_trigger_fills_at_ltp(
    product: str, action: str, trigger: Decimal, near: Decimal, hit: Decimal
) -> None:
    market, ex, acct = setup()
    order = ex.place(acct, req(action=action, product=product, pricetype="SL-M", trigger_price=trigger))
    assert order.status == "trigger pending"
    market.set_price(CE, "NFO", near)
    assert order.status == "trigger pending"
    market.set_price(CE, "NFO", hit)
    assert (order.status, order.average_price) == ("complete", hit)


@pytest.mark.parametrize("product", PRODUCTS)
@pytest.mark.parametrize(
    ("action", "trigger", "limit", "jump", "back"),
    [("BUY", D(105), D(105), D(107), D(104)), ("SELL", D(95), D(95), D(93), D(96))],
)
def test_sl_when_triggered_beyond_limit_becomes_open_then_fills_at_limit(
    product: str, action: str, trigger: Decimal, limit: Decimal, jump: Decimal, back: Decimal
) -> None:
    market, ex, acct = setup()
    order = ex.place(
        acct, req(action=action, product=product, pricetype="SL", trigger_price=trigger, price=limit)
    )
    assert order.status == "trigger pending"
    market.set_price(CE, "NFO", jump)
    assert order.status == "open" and order.filled_quantity == 0
    market.set_price(CE, "NFO", back)
    assert (order.status, order.average_price) == ("complete", limit)


@pytest.mark.parametrize(
    ("action", "trigger", "limit", "hit"), [("BUY", D(105), D(106), D(105)), ("SELL", D(95), D(94), D(95))]
)
def test_sl_when_triggered_within_limit_fills_at_ltp(
    action: str, trigger: Decimal, limit: Decimal, hit: Decimal
) -> None:
    market, ex, acct = setup()
    order = ex.place(
        acct, req(action=action, product="NRML", pricetype="SL", trigger_price=trigger, price=limit)
    )
    market.set_price(CE, "NFO", hit)
    assert (order.status, order.average_price) == ("complete", hit)


def test_market_when_slippage_configured_moves_fill_against_taker() -> None:
    market = StubMarket()
    ex = Exchange(market, FaultState(), ExchangeConfig(slippage_ticks=2))
    acct = ex.add_account("s" * 64, "u")
    assert ex.place(acct, req(action="BUY")).average_price == D("100.15")
    assert ex.place(acct, req(action="SELL")).average_price == D("99.85")


# --- refusals ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (req(qty=60), "Quantity must be in multiples of lot size 65"),
        (req(pricetype="LIMIT", price=D("100.03")), "Price 100.03 is not a multiple of the tick size 0.05"),
        (req(pricetype="LIMIT"), "Price must be greater than 0 for LIMIT orders"),
        (req(pricetype="SL-M"), "Trigger price must be greater than 0 for SL-M orders"),
        (req(product="CNC"), "CNC product is not allowed for NFO derivatives. Use NRML or MIS."),
        (req(symbol="NOSUCH"), "Symbol NOSUCH not found on NFO"),
    ],
)
def test_place_when_invalid_raises_400_with_text(request_: OrderRequest, message: str) -> None:
    _, ex, acct = setup()
    with pytest.raises(ExchangeError) as err:
        ex.place(acct, request_)
    assert (err.value.status, err.value.message) == (400, message)
    assert acct.orders == {}


def test_place_when_above_freeze_is_rejected_in_book_with_orderid() -> None:
    _, ex, acct = setup()
    with pytest.raises(ExchangeError) as err:
        ex.place(acct, req(qty=65 * 28))
    orderid = err.value.extra["orderid"]
    assert acct.orders[orderid].status == "rejected"
    assert "exceeds the freeze limit of 1800" in acct.orders[orderid].rejection_reason
    assert "slices of at most 1755" in err.value.message


def test_place_when_funds_short_is_400_with_exact_amounts() -> None:
    _, ex, acct = setup(capital=D(100_000))
    with pytest.raises(ExchangeError) as err:
        ex.place(acct, req(action="SELL", product="NRML"))
    assert err.value.message == (
        "Insufficient funds. Required: ₹250,000.00, Available: ₹100,000.00, Shortage: ₹150,000.00"
    )


def test_modify_and_cancel_when_terminal_are_refused_and_unknown_is_404() -> None:
    _, ex, acct = setup()
    done = ex.place(acct, req())
    with pytest.raises(ExchangeError, match="Cannot modify order in complete status"):
        ex.modify(
            acct,
            done.orderid,
            pricetype="LIMIT",
            quantity=65,
            price=D(1),
            trigger_price=D(0),
            disclosed_quantity=0,
        )
    with pytest.raises(ExchangeError, match="Cannot cancel order in complete status"):
        ex.cancel(acct, done.orderid)
    with pytest.raises(ExchangeError) as err:
        ex.cancel(acct, "26112599999999")
    assert (err.value.status, err.value.message) == (404, "Order 26112599999999 not found")


def test_modify_when_price_on_market_or_trigger_on_limit_is_refused() -> None:
    _, ex, acct = setup()
    order = ex.place(acct, req(pricetype="LIMIT", price=D(50)))
    with pytest.raises(ExchangeError, match="Price must be 0 for MARKET orders"):
        ex.modify(
            acct,
            order.orderid,
            pricetype="MARKET",
            quantity=65,
            price=D(50),
            trigger_price=D(0),
            disclosed_quantity=0,
        )
    with pytest.raises(ExchangeError, match="Trigger price must be 0 for LIMIT orders"):
        ex.modify(
            acct,
            order.orderid,
            pricetype="LIMIT",
            quantity=65,
            price=D(50),
            trigger_price=D(5),
            disclosed_quantity=0,
        )
    ex.modify(
        acct,
        order.orderid,
        pricetype="LIMIT",
        quantity=130,
        price=D(101),
        trigger_price=D(0),
        disclosed_quantity=0,
    )
    assert (order.status, order.quantity, order.average_price) == ("complete", 130, D(100))


# --- positions, P&L, funds --------------------------------------------------------------------------------


def test_pnl_when_adding_reducing_and_reversing_is_exact_to_the_paisa() -> None:
    market, ex, acct = setup()
    ex.place(acct, req(qty=130))  # 130 @ 100.05
    market.set_price(CE, "NFO", D(110))
    ex.place(acct, req(qty=65))  # 65 @ 110.05 -> average re-weighted
    pos = acct.positions[(CE, "NFO", "MIS")]
    assert pos.quantity == 195
    assert pos.average_price.quantize(D("0.0001")) == D("103.3833")
    market.set_price(CE, "NFO", D(120))
    ex.place(acct, req(action="SELL", qty=260))  # closes 195 @ 119.95, opens -65 @ 119.95
    assert pos.today_realized == D("3230.50")  # 195 × 119.95 − (130 × 100.05 + 65 × 110.05)
    assert (pos.quantity, pos.average_price) == (-65, D("119.95"))  # reversal starts a new average
    market.set_price(CE, "NFO", D(100))
    assert ex.unrealized(pos) == D("1296.75")  # (100 − 119.95) × −65
    assert ex.used_margin(acct) == D(250_000)  # one short lot, one side
    assert ex.available_cash(acct) == CAPITAL + D("3230.50") - D(250_000)
    ex.place(acct, req(qty=65))  # buy back at 100.05
    assert pos.quantity == 0 and pos.average_price == 0
    assert pos.today_realized == D("3230.50") + D("1293.50")
    assert ex.used_margin(acct) == 0 and conserved(ex, acct)


def test_margin_when_short_is_hedged_or_paired_uses_benefit() -> None:
    _, ex, acct = setup()
    ex.place(acct, req(action="SELL", product="NRML"))
    assert ex.used_margin(acct) == D(250_000)
    ex.place(acct, req(symbol=PE, action="SELL", product="NRML"))
    assert ex.used_margin(acct) == D(320_000)  # straddle: pair rate
    hedge = ex.place(acct, req(symbol=CE_HEDGE, action="BUY", product="NRML"))
    premium = hedge.average_price * 65
    # CE short covered (25 % of one-side), PE short alone (one-side), plus the hedge's premium.
    assert ex.used_margin(acct) == D(62_500) + D(250_000) + premium
    ex.place(acct, req(symbol=FUT, action="BUY", qty=130, product="NRML"))
    assert ex.used_margin(acct) == D(62_500) + D(250_000) + premium + D(430_000)
    assert conserved(ex, acct)


def test_margin_when_limit_order_rests_blocks_its_premium_and_reducing_blocks_nothing() -> None:
    _, ex, acct = setup()
    ex.place(acct, req(pricetype="LIMIT", price=D(50), qty=130))
    assert ex.used_margin(acct) == D(6500)  # 130 × 50
    ex.place(acct, req(symbol=FUT, qty=65, product="NRML"))
    before = ex.used_margin(acct)
    ex.place(acct, req(symbol=FUT, action="SELL", qty=65, product="NRML", pricetype="LIMIT", price=D(99_000)))
    assert ex.used_margin(acct) == before  # a reducing order blocks nothing


# --- day cycle --------------------------------------------------------------------------------------------


def test_mis_when_square_off_time_passes_is_closed_and_tagged() -> None:
    market, ex, acct = setup()
    ex.place(acct, req(product="MIS"))
    resting = ex.place(acct, req(product="MIS", pricetype="LIMIT", price=D(1)))
    market.advance_to(datetime(2026, 11, 25, 9, 45, tzinfo=UTC))  # 15:15 IST
    ex.on_time(market.now())
    assert acct.positions[(CE, "NFO", "MIS")].quantity == 0
    assert resting.status == "cancelled"
    closing = [o for o in acct.orders.values() if o.strategy == AUTO_SQUARE_OFF]
    assert [(o.action, o.status) for o in closing] == [("SELL", "complete")]
    with pytest.raises(ExchangeError) as err:
        ex.place(acct, req(product="MIS"))
    assert err.value.message == (
        "MIS orders cannot be placed after square-off time (15:15 IST). Trading resumes at 09:00 AM IST."
    )
    assert ex.place(acct, req(product="NRML")).status == "complete"  # NRML is not affected


def test_day_reset_when_0300_ist_passes_clears_books_and_carries_nrml() -> None:
    market, ex, acct = setup()
    ex.place(acct, req(product="NRML"))
    ex.place(acct, req(product="NRML", pricetype="LIMIT", price=D(1)))
    market.advance_to(datetime(2026, 11, 25, 21, 31, tzinfo=UTC))  # 26 Nov 03:01 IST
    ex.on_time(market.now())
    assert acct.orders == {} and acct.trades == []
    pos = acct.positions[(CE, "NFO", "NRML")]
    assert (pos.quantity, pos.average_price, pos.today_realized) == (65, D("100.05"), 0)
    assert acct.reset_count == 1


# --- properties -------------------------------------------------------------------------------------------

steps = st.lists(
    st.tuples(
        st.sampled_from([CE, PE, FUT]),
        st.sampled_from(["BUY", "SELL"]),
        st.integers(1, 4),
        st.integers(-40, 40),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(steps)
def test_property_positions_pnl_and_cash_when_random_fills(script: list[tuple[str, str, int, int]]) -> None:
    market, ex, acct = setup()
    prices = {CE: D(100), PE: D(100), FUT: D(26060)}
    for symbol, action, lots, move in script:
        prices[symbol] = max(prices[symbol] + D(move) / 4, D(1))
        market.set_price(symbol, "NFO", prices[symbol])
        try:
            ex.place(acct, req(symbol=symbol, action=action, qty=65 * lots, product="NRML"))
        except ExchangeError as exc:  # only funds may refuse, and then nothing changed
            assert exc.message.startswith("Insufficient funds")
        assert conserved(ex, acct)
    for symbol in prices:
        signed = sum(
            t.quantity * (1 if t.action == "BUY" else -1) for t in acct.trades if t.contract.symbol == symbol
        )
        pos = acct.positions.get((symbol, "NFO", "NRML"))
        assert (pos.quantity if pos else 0) == signed
        if pos is None:
            continue
        mark = ex.ltp(pos.contract)
        trade_pnl = sum(
            (mark - t.price) * t.quantity * (1 if t.action == "BUY" else -1)
            for t in acct.trades
            if t.contract.symbol == symbol
        )
        closing_fills = len([t for t in acct.trades if t.contract.symbol == symbol])
        assert (
            abs(pos.today_realized + (mark - pos.average_price) * pos.quantity - trade_pnl)
            <= D("0.005") * closing_fills
        )
    assert acct.realized_total == sum((p.today_realized for p in acct.positions.values()), D(0))


def test_day_reset_when_contract_expired_settles_at_last_price() -> None:
    market, ex, acct = setup()
    sensex_ce = "SENSEX26NOV2685000CE"
    order = ex.place(acct, OrderRequest("t", "BFO", sensex_ce, "SELL", 40, product="NRML"))
    market.set_price(sensex_ce, "BFO", D(30))
    market.advance_to(datetime(2026, 11, 26, 21, 31, tzinfo=UTC))  # Fri 27 Nov 03:01 IST, after expiry
    ex.on_time(market.now())
    assert (sensex_ce, "BFO", "NRML") not in acct.positions
    assert acct.realized_total == (order.average_price - D(30)) * 40
    assert ex.used_margin(acct) == 0 and conserved(ex, acct)
