"""The paper exchange's market model (algomirror.simulator.market.Market)."""

from __future__ import annotations

import itertools
import math
import threading
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from algomirror.domain.instruments import future_symbol, option_symbol
from algomirror.domain.pricing import VolSmile, bs_price, forward_price, years_to_expiry
from algomirror.domain.strikes import atm_strike
from algomirror.domain.timeutil import IST
from algomirror.simulator.contracts import MarketModel, Quote
from algomirror.simulator.market import Market, UnknownInstrument

TICK = Decimal("0.05")
RATE = 0.065


def ist(year: int, month: int, day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=IST).astimezone(UTC)


WED_1030 = ist(2026, 11, 25, 10, 30)  # Wed 25 Nov 2026, in session
NIFTY_WEEKLY = date(2026, 12, 1)


def make(seed: int = 7, start: datetime = WED_1030, **kwargs: object) -> Market:
    return Market(seed=seed, start=start, **kwargs)  # type: ignore[arg-type]


def atm_symbols(market: Market, expiry: date = NIFTY_WEEKLY) -> tuple[Decimal, str, str]:
    atm = atm_strike(market.spot("NIFTY"), Decimal(50))
    return atm, option_symbol("NIFTY", expiry, atm, "CE"), option_symbol("NIFTY", expiry, atm, "PE")


def snapshot(market: Market, symbols: list[tuple[str, str]]) -> list[Quote | None]:
    return [market.quote(s, e) for s, e in symbols]


def test_market_when_checked_against_protocol_is_a_market_model() -> None:
    market: MarketModel = make()
    assert market.now() == WED_1030


def test_path_when_same_seed_and_same_advances_gives_identical_quotes() -> None:
    a, b = make(seed=11), make(seed=11)
    _, ce, pe = atm_symbols(a)
    symbols = [("NIFTY", "NSE_INDEX"), ("SENSEX", "BSE_INDEX"), (ce, "NFO"), (pe, "NFO")]
    symbols.append((future_symbol("NIFTY", a.expiries("NIFTY", "NFO", "futures")[0]), "NFO"))
    target = WED_1030 + timedelta(minutes=10)
    a.advance_to(target)
    instant = WED_1030
    while instant < target:  # the same path however the clock is chunked
        instant = min(target, instant + timedelta(seconds=7.3))
        b.advance_to(instant)
    assert snapshot(a, symbols) == snapshot(b, symbols)
    assert a.quote("NIFTY", "NSE_INDEX") != make(seed=11).quote("NIFTY", "NSE_INDEX")  # it did move


def test_path_when_queries_and_listeners_interleave_is_unchanged() -> None:
    a, b = make(seed=5), make(seed=5)
    _, ce, _ = atm_symbols(b)
    b.watch(ce, "NFO")
    seen: list[Quote] = []
    b.add_listener(seen.append)
    for step in range(1, 121):
        b.advance_to(WED_1030 + timedelta(seconds=step))
        b.quote(ce, "NFO")
    a.advance_to(WED_1030 + timedelta(seconds=120))
    assert a.quote("NIFTY", "NSE_INDEX") == b.quote("NIFTY", "NSE_INDEX")
    assert seen


def test_path_when_seed_differs_gives_different_prices() -> None:
    a, b = make(seed=1), make(seed=2)
    a.advance_to(WED_1030 + timedelta(minutes=5))
    b.advance_to(WED_1030 + timedelta(minutes=5))
    quote_a, quote_b = a.quote("NIFTY", "NSE_INDEX"), b.quote("NIFTY", "NSE_INDEX")
    assert quote_a is not None and quote_b is not None
    assert quote_a.ltp != quote_b.ltp


def test_spots_when_default_config_start_near_documented_levels() -> None:
    market = make()
    expected = {"NIFTY": 26000, "BANKNIFTY": 59000, "SENSEX": 85000, "FINNIFTY": 27500, "MIDCPNIFTY": 13500}
    for name, level in expected.items():
        assert market.spot(name) == level
    custom = make(spot={"NIFTY": Decimal(24000)})
    assert custom.spot("NIFTY") == 24000


def test_index_when_market_closed_does_not_move() -> None:
    market = make(start=ist(2026, 11, 25, 15, 45))
    before = market.quote("NIFTY", "NSE_INDEX")
    _, ce, _ = atm_symbols(market)
    option_before = market.quote(ce, "NFO")
    market.advance_to(ist(2026, 11, 26, 9, 14, 59))  # overnight
    after = market.quote("NIFTY", "NSE_INDEX")
    assert before is not None and after is not None and option_before is not None
    assert after.ltp == before.ltp
    option_after = market.quote(ce, "NFO")
    assert option_after is not None and option_after.ltp == option_before.ltp


def test_index_when_session_opens_moves_and_rolls_day_stats() -> None:
    market = make(start=ist(2026, 11, 25, 15, 45))
    last_close = market.quote("NIFTY", "NSE_INDEX")
    market.advance_to(ist(2026, 11, 26, 9, 30))
    quote = market.quote("NIFTY", "NSE_INDEX")
    assert last_close is not None and quote is not None
    assert quote.ltp != last_close.ltp
    assert quote.prev_close == last_close.ltp
    assert quote.low <= quote.ltp <= quote.high
    assert quote.low <= quote.open <= quote.high


def test_advance_when_instant_in_past_is_a_no_op() -> None:
    market = make()
    market.advance_to(WED_1030 + timedelta(seconds=30))
    price = market.spot("NIFTY")
    market.advance_to(WED_1030)
    assert market.now() == WED_1030 + timedelta(seconds=30)
    assert market.spot("NIFTY") == price


def test_listeners_when_ticking_get_indices_and_watched_only() -> None:
    market = make()
    _, ce, pe = atm_symbols(market)
    assert market.watch(ce, "NFO")
    assert not market.watch("NIFTY01DEC2699999CE", "NFO")
    seen: list[Quote] = []
    market.add_listener(seen.append)
    market.advance_to(WED_1030 + timedelta(seconds=5))
    symbols = {q.symbol for q in seen}
    assert {"NIFTY", "SENSEX", "BANKNIFTY", ce} <= symbols
    assert pe not in symbols
    assert sum(1 for q in seen if q.symbol == "NIFTY") == 5
    assert all(q.timestamp <= market.now() for q in seen)
    market.remove_listener(seen.append)
    market.unwatch(ce, "NFO")
    count = len(seen)
    market.advance_to(WED_1030 + timedelta(seconds=8))
    assert len(seen) == count


def test_quotes_when_options_priced_respect_put_call_parity_within_spread() -> None:
    market = make()
    market.advance_to(WED_1030 + timedelta(minutes=3))
    atm, _, _ = atm_symbols(market)
    spot = market.fair_value("NIFTY", "NSE_INDEX")
    years = years_to_expiry(market.now(), NIFTY_WEEKLY)
    for k in range(-6, 7):
        strike = atm + k * 50
        call = market.quote(option_symbol("NIFTY", NIFTY_WEEKLY, strike, "CE"), "NFO")
        put = market.quote(option_symbol("NIFTY", NIFTY_WEEKLY, strike, "PE"), "NFO")
        assert call is not None and put is not None
        mid_diff = float((call.bid + call.ask) / 2 - (put.bid + put.ask) / 2)
        parity = spot - float(strike) * math.exp(-RATE * years)
        tolerance = float((call.ask - call.bid) + (put.ask - put.bid)) / 2 + 0.1
        assert abs(mid_diff - parity) <= tolerance, (strike, mid_diff, parity)


def test_quotes_when_any_listed_option_bid_below_ask_and_at_least_one_tick() -> None:
    market = make()
    for expiry in market.expiries("NIFTY", "NFO", "options")[:2]:
        for strike in market.strikes("NIFTY", "NFO", expiry)[::4]:
            for kind in ("CE", "PE"):
                quote = market.quote(option_symbol("NIFTY", expiry, strike, kind), "NFO")
                assert quote is not None
                assert TICK <= quote.bid < quote.ask
                assert quote.bid <= quote.ltp <= quote.ask
                assert quote.ltp % TICK == 0 and quote.bid % TICK == 0
                assert quote.low <= quote.ltp <= quote.high


def test_depth_when_quoted_has_five_ordered_levels_each_side() -> None:
    market = make()
    _, ce, _ = atm_symbols(market)
    quote = market.quote(ce, "NFO")
    assert quote is not None
    assert len(quote.bids) == 5 and len(quote.asks) == 5
    assert [lvl.price for lvl in quote.bids] == sorted((lvl.price for lvl in quote.bids), reverse=True)
    assert [lvl.price for lvl in quote.asks] == sorted(lvl.price for lvl in quote.asks)
    assert quote.bids[0].price == quote.bid and quote.asks[0].price == quote.ask
    assert quote.bid_qty == quote.bids[0].quantity
    assert all(
        lvl.quantity > 0 and lvl.quantity % 65 == 0 and lvl.orders >= 1 for lvl in quote.bids + quote.asks
    )
    index = market.quote("NIFTY", "NSE_INDEX")
    assert index is not None and len(index.bids) == 5 and index.bid == 0


def test_premium_when_clock_reaches_expiry_cutoff_time_value_vanishes() -> None:
    market = make(seed=3, start=ist(2026, 12, 1, 9, 15))
    atm, ce, _ = atm_symbols(market)
    otm = option_symbol("NIFTY", NIFTY_WEEKLY, atm + 200, "CE")

    def time_value(symbol: str, strike: Decimal) -> float:
        quote = market.quote(symbol, "NFO")
        assert quote is not None
        intrinsic = max(market.fair_value("NIFTY", "NSE_INDEX") - float(strike), 0.0)
        return float(quote.ltp) - intrinsic

    market.advance_to(ist(2026, 12, 1, 9, 20))
    morning = time_value(ce, atm)
    assert morning > 15
    market.advance_to(ist(2026, 12, 1, 15, 29))
    assert -0.05 <= time_value(ce, atm) < 5
    market.advance_to(ist(2026, 12, 1, 15, 30))
    assert abs(time_value(ce, atm)) <= 0.05
    assert abs(time_value(otm, atm + 200)) <= 0.05 or market.fair_value("NIFTY", "NSE_INDEX") > float(
        atm + 200
    )
    assert NIFTY_WEEKLY not in market.expiries("NIFTY", "NFO", "options")
    settled = market.quote(ce, "NFO")
    market.advance_to(ist(2026, 12, 2, 11, 0))  # settles at the expiry close, not today's spot
    assert market.quote(ce, "NFO") is not None
    assert market.quote(ce, "NFO").ltp == settled.ltp  # type: ignore[union-attr]


def test_future_when_priced_is_spot_carried_at_rate() -> None:
    market = make()
    expiry = market.expiries("NIFTY", "NFO", "futures")[0]
    quote = market.quote(future_symbol("NIFTY", expiry), "NFO")
    assert quote is not None
    expected = market.fair_value("NIFTY", "NSE_INDEX") * math.exp(
        RATE * years_to_expiry(market.now(), expiry)
    )
    assert abs(float(quote.ltp) - expected) <= 0.05


def test_set_price_when_index_forced_options_and_futures_follow() -> None:
    market = make()
    _, ce, pe = atm_symbols(market)
    call_before, put_before = market.quote(ce, "NFO"), market.quote(pe, "NFO")
    forced = market.spot("NIFTY") + 300
    market.set_price("NIFTY", "NSE_INDEX", forced)
    call_after, put_after = market.quote(ce, "NFO"), market.quote(pe, "NFO")
    assert call_before and put_before and call_after and put_after
    assert call_after.ltp > call_before.ltp + 150  # delta well above ½ for a 300-point rally
    assert put_after.ltp < put_before.ltp
    index = market.quote("NIFTY", "NSE_INDEX")
    assert index is not None and index.ltp == forced and index.high >= forced
    future = market.quote(future_symbol("NIFTY", market.expiries("NIFTY", "NFO", "futures")[0]), "NFO")
    assert future is not None and future.ltp > forced


def test_set_price_when_option_forced_quotes_that_price_now() -> None:
    market = make()
    _, ce, _ = atm_symbols(market)
    seen: list[Quote] = []
    market.add_listener(seen.append)
    market.set_price(ce, "NFO", Decimal("123.45"))
    quote = market.quote(ce, "NFO")
    assert quote is not None and quote.ltp == Decimal("123.45")
    assert [q.ltp for q in seen if q.symbol == ce] == [Decimal("123.45")]
    market.clear_override(ce, "NFO")
    assert market.quote(ce, "NFO").ltp != Decimal("123.45")  # type: ignore[union-attr]
    with pytest.raises(UnknownInstrument):
        market.set_price("NIFTY01DEC2699999CE", "NFO", Decimal(1))
    with pytest.raises(ValueError):
        market.set_price(ce, "NFO", Decimal(0))


def test_ramp_when_index_ramped_moves_linearly_then_resumes() -> None:
    market = make(start=ist(2026, 11, 25, 16, 0))  # after hours: only the ramp moves the index
    start = market.fair_value("NIFTY", "NSE_INDEX")
    market.ramp_price("NIFTY", "NSE_INDEX", Decimal(27000), 100)
    market.advance_to(market.now() + timedelta(seconds=50))
    assert market.fair_value("NIFTY", "NSE_INDEX") == pytest.approx((start + 27000) / 2)
    market.advance_to(market.now() + timedelta(seconds=60))
    assert market.spot("NIFTY") == 27000
    market.advance_to(market.now() + timedelta(hours=1))
    assert market.spot("NIFTY") == 27000
    with pytest.raises(ValueError):
        market.ramp_price(option_symbol("NIFTY", NIFTY_WEEKLY, 26000, "CE"), "NFO", Decimal(1), 10)


def test_master_when_built_lists_expiries_strikes_and_lots_from_specs() -> None:
    began = time.perf_counter()
    market = make(start=ist(2026, 11, 20, 10, 0))
    assert time.perf_counter() - began < 0.5
    listed = market.instruments()
    assert 1000 < len(listed) < 10000
    weeklies = market.expiries("NIFTY", "NFO", "options")
    assert weeklies[:3] == [date(2026, 11, 23), date(2026, 12, 1), date(2026, 12, 8)]  # 24 Nov is a holiday
    assert weeklies == sorted(weeklies)
    assert market.expiries("NIFTY", "NFO", "futures") == [
        date(2026, 11, 23),
        date(2026, 12, 29),
        date(2027, 1, 26),
    ]
    assert market.expiries("BANKNIFTY", "NFO", "options") == [
        date(2026, 11, 23),
        date(2026, 12, 29),
        date(2027, 1, 26),
    ]
    assert market.expiries("SENSEX", "BFO", "options")[0] == date(2026, 11, 26)
    assert market.expiries("NIFTY", "BFO", "options") == []
    strikes = market.strikes("NIFTY", "NFO", date(2026, 12, 1))
    assert len(strikes) == 81
    assert all(b - a == 50 for a, b in itertools.pairwise(strikes))
    assert strikes[40] == 26000
    contract = market.contract(option_symbol("NIFTY", date(2026, 12, 1), 26000, "CE"), "NFO")
    assert contract is not None
    assert (contract.lot_size, contract.freeze_qty, contract.tick_size) == (65, 1800, TICK)
    bank = market.contract(future_symbol("BANKNIFTY", date(2026, 12, 29)), "NFO")
    assert bank is not None and bank.lot_size == 30 and bank.freeze_qty == 600
    sensex = market.contract(option_symbol("SENSEX", date(2026, 11, 26), 85000, "PE"), "BFO")
    assert sensex is not None and sensex.lot_size == 20 and sensex.freeze_qty == 1000
    index = market.contract("NIFTY", "NSE_INDEX")
    assert index is not None and index.instrument_type == "INDEX"
    assert market.contract("NIFTY", "NFO") is None


def test_master_when_day_passes_lists_new_expiries_and_drops_expired() -> None:
    market = make(start=ist(2026, 11, 20, 10, 0), tick_interval=15.0)
    market.advance_to(ist(2026, 11, 27, 10, 0))
    options = market.expiries("NIFTY", "NFO", "options")
    assert options[0] == date(2026, 12, 1)
    assert date(2026, 11, 23) not in options
    assert max(options) >= date(2027, 1, 26)


def test_search_when_terms_given_matches_all_terms() -> None:
    market = make()
    found = market.search("NIFTY 26000 01DEC26 CE", exchange="NFO")
    assert [c.symbol for c in found] == ["NIFTY01DEC2626000CE"]
    assert len(market.search("NIFTY", limit=7)) == 7
    assert market.search("") == []


def test_history_when_past_day_gives_375_consistent_minute_bars() -> None:
    market = make()
    bars = market.history("NIFTY", "NSE_INDEX", "1m", date(2026, 11, 24), date(2026, 11, 24))
    assert bars == []  # Guru Nanak Jayanti holiday
    bars = market.history("NIFTY", "NSE_INDEX", "1m", date(2026, 11, 23), date(2026, 11, 23))
    assert bars is not None and len(bars) == 375
    assert bars[0].start == ist(2026, 11, 23, 9, 15)
    assert bars[-1].start == ist(2026, 11, 23, 15, 29)
    for bar in bars:
        assert bar.low <= min(bar.open, bar.close) <= max(bar.open, bar.close) <= bar.high
    again = make().history("NIFTY", "NSE_INDEX", "1m", date(2026, 11, 23), date(2026, 11, 23))
    assert again == bars


@pytest.mark.parametrize(
    "interval,minutes", [("3m", 3), ("5m", 5), ("10m", 10), ("15m", 15), ("30m", 30), ("1h", 60)]
)
def test_history_when_aggregated_matches_minute_bars_anchored_at_0915(interval: str, minutes: int) -> None:
    market = make()
    day = date(2026, 11, 20)
    ones = market.history("BANKNIFTY", "NSE_INDEX", "1m", day, day)
    bars = market.history("BANKNIFTY", "NSE_INDEX", interval, day, day)
    assert ones is not None and bars is not None
    assert len(bars) == math.ceil(375 / minutes)
    for n, bar in enumerate(bars):
        assert bar.start == ist(2026, 11, 20, 9, 15) + timedelta(minutes=n * minutes)
        group = ones[n * minutes : (n + 1) * minutes]
        assert bar.open == group[0].open and bar.close == group[-1].close
        assert bar.high == max(b.high for b in group) and bar.low == min(b.low for b in group)


def test_history_when_daily_stamps_utc_midnight_and_spans_days() -> None:
    market = make()
    market.advance_to(WED_1030 + timedelta(minutes=30))
    days = market.history("NIFTY", "NSE_INDEX", "D", date(2026, 11, 16), date(2026, 11, 25))
    assert days is not None
    assert [d.start for d in days] == [
        datetime(2026, 11, d, tzinfo=UTC) for d in (16, 17, 18, 19, 20, 23, 25)
    ]
    today = market.history("NIFTY", "NSE_INDEX", "1m", date(2026, 11, 25), date(2026, 11, 25))
    assert today is not None
    assert today[-1].start == ist(2026, 11, 25, 11, 0) - timedelta(minutes=1)
    assert days[-1].close == today[-1].close == market.quote("NIFTY", "NSE_INDEX").ltp  # type: ignore[union-attr]
    assert days[-1].open == today[0].open
    assert len(today) == 105  # 09:15-10:59


def test_history_when_option_derived_from_underlying_bars() -> None:
    market = make()
    _, ce, pe = atm_symbols(market)
    calls = market.history(ce, "NFO", "5m", date(2026, 11, 23), date(2026, 11, 23))
    index = market.history("NIFTY", "NSE_INDEX", "5m", date(2026, 11, 23), date(2026, 11, 23))
    assert calls is not None and index is not None and len(calls) == len(index) == 75
    for bar in calls:
        assert TICK <= bar.low <= min(bar.open, bar.close) <= max(bar.open, bar.close) <= bar.high
        assert bar.volume > 0 and bar.oi > 0
    moves = [(c.close - c.open, i.close - i.open) for c, i in zip(calls, index, strict=True)]
    assert sum(1 for call_move, index_move in moves if call_move * index_move >= 0) > 0.8 * len(moves)
    assert market.history("NIFTY01DEC2699999CE", "NFO", "1m", date(2026, 11, 23), date(2026, 11, 23)) is None
    with pytest.raises(ValueError):
        market.history(pe, "NFO", "7s", date(2026, 11, 23), date(2026, 11, 23))


def test_advance_when_jumping_a_weekend_is_fast_and_jump_to_notifies_once() -> None:
    market = make(start=ist(2026, 11, 27, 15, 29), tick_interval=1.0)
    seen: list[Quote] = []
    market.add_listener(seen.append)
    began = time.perf_counter()
    market.jump_to(ist(2026, 11, 30, 9, 14))
    assert time.perf_counter() - began < 2.0
    assert market.now() == ist(2026, 11, 30, 9, 14)
    assert sum(1 for q in seen if q.symbol == "NIFTY") == 1


def test_fair_value_when_live_matches_domain_black_scholes_with_smile() -> None:
    market = make()
    market.advance_to(WED_1030 + timedelta(seconds=30))
    spot = market.fair_value("NIFTY", "NSE_INDEX")
    smile = VolSmile(atm_vol=0.15)
    for expiry in market.expiries("NIFTY", "NFO", "options")[:3]:
        years = years_to_expiry(market.now(), expiry)
        forward = forward_price(spot, RATE, years)
        for strike in market.strikes("NIFTY", "NFO", expiry)[::10]:
            for kind in ("CE", "PE"):
                expected = bs_price(kind, spot, float(strike), years, RATE, smile.vol(forward, float(strike)))
                got = market.fair_value(option_symbol("NIFTY", expiry, strike, kind), "NFO")
                assert got == pytest.approx(expected, abs=1e-6)


def test_queries_when_another_thread_advances_the_clock_stay_consistent() -> None:
    market = make()
    _, ce, _ = atm_symbols(market)
    market.watch(ce, "NFO")
    errors: list[BaseException] = []
    seen: list[Quote] = []
    market.add_listener(seen.append)

    def drive() -> None:
        try:
            for step in range(1, 301):
                market.advance_to(WED_1030 + timedelta(seconds=step))
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    worker = threading.Thread(target=drive)
    worker.start()
    for _ in range(300):
        quote = market.quote(ce, "NFO")
        assert quote is not None and quote.bid < quote.ask
    worker.join()
    assert errors == []
    assert market.now() == WED_1030 + timedelta(seconds=300)
    assert sum(1 for q in seen if q.symbol == "NIFTY") == 300
