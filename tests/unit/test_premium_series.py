"""The combined-premium series builder (PRODUCT §6.5 "Series") against a fake gateway history."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from decimal import Decimal

import pytest

from algomirror.domain.calendar import default_calendar
from algomirror.domain.candles import candle_end
from algomirror.domain.supertrend import warmup_bars
from algomirror.domain.timeutil import FakeClock, ist_combine
from algomirror.engine.premium_series import (
    PremiumSeriesBuilder,
    SeriesLeg,
    TickCandles,
    first_day,
    legs_of,
    sessions_for,
)
from tests.premium_support import FakeHistory, flat

D = Decimal
DAY = date(2026, 12, 2)  # a Wednesday
CE, PE, HEDGE = "NIFTY08DEC2626200CE", "NIFTY08DEC2625800PE", "NIFTY08DEC2626500CE"
LOT = 65


def ist(hh: int, mm: int, ss: int = 0, day: date = DAY) -> datetime:
    return ist_combine(day, time(hh, mm, ss))


def strangle(lots: int = 1) -> list[SeriesLeg]:
    return [SeriesLeg(CE, "NFO", "SELL", LOT * lots), SeriesLeg(PE, "NFO", "SELL", LOT * lots)]


def test_the_trading_days_are_plain() -> None:
    calendar = default_calendar()
    assert all(calendar.is_trading_day("NSE", DAY - timedelta(days=d)) for d in range(3))


async def test_weighted_sell_minus_buy_per_lot_and_the_forming_candle_is_dropped() -> None:
    clock = FakeClock(ist(10, 32, 10))
    source = FakeHistory(clock, {CE: flat("120"), PE: flat("110"), HEDGE: flat("30")})
    legs = [*strangle(lots=2), SeriesLeg(HEDGE, "NFO", "BUY", LOT * 2)]
    series = await PremiumSeriesBuilder().build(legs, "5m", clock.now(), source, period=7)
    assert series.state == "ok" and series.message is None
    last = series.candles[-1]
    # 10:30–10:35 is still forming at 10:32:10 (the gateway serves it): the last closed one is 10:25.
    assert last.start == ist(10, 25)
    assert all(candle_end(c.start, 5) <= clock.now() for c in series.candles)
    # 2 lots × (120 + 110 − 30) = 400 per lot set, whatever the lot size.
    assert last.close == D("400")
    assert series.complete_at(ist(10, 25)) and not series.complete_at(ist(10, 30))


async def test_a_timeframe_the_gateway_lacks_is_aggregated_from_one_minute_bars() -> None:
    clock = FakeClock(ist(11, 0, 3))
    paths = {CE: lambda at: D(100) + D(at.minute), PE: flat("90")}
    direct = await PremiumSeriesBuilder().build(
        strangle(), "10m", clock.now(), FakeHistory(clock, paths), period=7
    )
    lacking = FakeHistory(clock, paths, listed=("1m", "5m"))
    built = await PremiumSeriesBuilder().build(strangle(), "10m", clock.now(), lacking, period=7)
    assert {interval for _, interval, _, _ in lacking.calls} == {"1m"}
    assert built.candles == direct.candles and built.candles[-1].start == ist(10, 45)


async def test_a_listed_timeframe_that_fails_falls_back_to_one_minute_bars() -> None:
    clock = FakeClock(ist(11, 0, 3))
    source = FakeHistory(clock, {CE: flat("100"), PE: flat("90")})

    async def listed() -> object:
        class Listed:
            all = ("1m", "15m")

        return Listed()

    source.listed = ("1m",)  # /history refuses 15m ...
    source.intervals = listed  # type: ignore[method-assign]  # ... though /intervals lists it
    series = await PremiumSeriesBuilder().build(strangle(), "15m", clock.now(), source, period=7)
    assert series.state == "ok"
    assert [i for _, i, _, _ in source.calls].count("15m") >= 1 and "1m" in {i for _, i, _, _ in source.calls}


async def test_history_missing_for_a_leg_is_unknown_with_no_substitute_series() -> None:
    clock = FakeClock(ist(11, 0, 3))
    source = FakeHistory(clock, {CE: flat("100"), PE: flat("90")}, missing={PE})
    series = await PremiumSeriesBuilder().build(strangle(), "5m", clock.now(), source, period=7)
    assert series.state == "unknown" and series.candles == ()
    assert series.message is not None and PE in series.message


async def test_no_legs_is_unknown() -> None:
    clock = FakeClock(ist(11, 0, 3))
    series = await PremiumSeriesBuilder().build([], "5m", clock.now(), FakeHistory(clock, {}), period=7)
    assert (series.state, series.message) == ("unknown", "no open legs")


async def test_warm_up_counts_candles_over_sessions() -> None:
    # 09:40 today holds 5 closed 5m candles (09:15–09:35); the 70 of period 7 come from the sessions before.
    clock = FakeClock(ist(9, 40, 3))
    source = FakeHistory(clock, {CE: flat("100"), PE: flat("90")})
    series = await PremiumSeriesBuilder().build(strangle(), "5m", clock.now(), source, period=7)
    assert series.state == "ok" and len(series.candles) >= warmup_bars(7)
    assert min(start for _, _, start, _ in source.calls) < DAY
    # Symbols listed only today: 5 candles, warming up.
    young = FakeHistory(clock, {CE: flat("100"), PE: flat("90")}, since={CE: ist(9, 15), PE: ist(9, 15)})
    warming = await PremiumSeriesBuilder().build(strangle(), "5m", clock.now(), young, period=7)
    assert warming.state == "warming" and len(warming.candles) == 5
    assert warming.message == "warming up: 5 of 70 closed candles"


async def test_candles_before_every_leg_has_data_are_dropped() -> None:
    clock = FakeClock(ist(11, 0, 3))
    source = FakeHistory(clock, {CE: flat("100"), PE: flat("90")}, since={CE: ist(9, 15), PE: ist(10, 0)})
    series = await PremiumSeriesBuilder().build(strangle(), "5m", clock.now(), source, period=7)
    assert series.candles[0].start == ist(10, 0) and series.candles[0].close == D("190")


async def test_past_sessions_are_read_once_and_today_every_time() -> None:
    clock = FakeClock(ist(11, 0, 3))
    source = FakeHistory(clock, {CE: flat("100"), PE: flat("90")})
    builder = PremiumSeriesBuilder()
    await builder.build(strangle(), "5m", clock.now(), source, source_key=1, period=7)
    first = len(source.calls)
    clock.advance(timedelta(minutes=5))
    await builder.build(strangle(), "5m", clock.now(), source, source_key=1, period=7)
    later = source.calls[first:]
    assert len(later) == 2 and all(start == end == DAY for _, _, start, end in later)


async def test_ticks_continue_a_late_history() -> None:
    clock = FakeClock(ist(11, 5, 3))
    source = FakeHistory(clock, {CE: flat("100"), PE: flat("90")}, lag=600)  # 10 minutes behind
    ticks = TickCandles()
    ticks.watch({(CE, "NFO", 5), (PE, "NFO", 5)})
    for second in range(0, 300, 10):
        at = ist(11, 0) + timedelta(seconds=second)
        ticks.on_mark(CE, "NFO", at, D("101"))
        ticks.on_mark(PE, "NFO", at, D("92"))
    series = await PremiumSeriesBuilder(ticks=ticks).build(strangle(), "5m", clock.now(), source, period=7)
    assert series.candles[-1].start == ist(11, 0) and series.candles[-1].close == D("193")
    assert series.candles[-2].close == D("190")  # history up to 10:55:03
    # Without ticks the same history stops at 10:55 (served up to 10:55:03).
    plain = await PremiumSeriesBuilder().build(strangle(), "5m", clock.now(), source, period=7)
    assert plain.candles[-1].start == ist(10, 55)
    assert not plain.complete_at(ist(11, 0))


def test_legs_sum_units_over_accounts_and_skip_closed_executions() -> None:
    rows = [
        (CE, "NFO", "SELL", 65, 0),
        (CE, "NFO", "SELL", 130, 0),
        (PE, "NFO", "SELL", 65, 65),  # exited
        (HEDGE, "NFO", "BUY", 65, 0),
        (None, "NFO", "BUY", 65, 0),
    ]
    assert legs_of(rows) == [SeriesLeg(CE, "NFO", "SELL", 195), SeriesLeg(HEDGE, "NFO", "BUY", 65)]


@pytest.mark.parametrize(("period", "minutes", "sessions"), [(7, 5, 2), (7, 15, 4), (10, 3, 2), (40, 5, 7)])
def test_sessions_cover_the_warm_up(period: int, minutes: int, sessions: int) -> None:
    assert sessions_for(period, minutes) == sessions
    assert sessions_for(period, minutes, days=9) == 9


def test_first_day_skips_weekends() -> None:
    monday = date(2026, 11, 30)
    assert first_day(monday, 2, default_calendar()) == date(2026, 11, 27)  # the Friday before
