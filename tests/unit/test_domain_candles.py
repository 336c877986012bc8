from __future__ import annotations

import random
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from algomirror.domain.candles import (
    TIMEFRAMES,
    Candle,
    CandleBuilder,
    aggregate,
    candle_end,
    candle_start,
    combined_premium,
)
from algomirror.domain.timeutil import ist_combine

D = Decimal
DAY = date(2026, 1, 5)


def ist(hh: int, mm: int, ss: int = 0, day: date = DAY) -> datetime:
    return ist_combine(day, time(hh, mm, ss))


def c(at: datetime, o: str, h: str, lo: str, cl: str) -> Candle:
    return Candle(at, D(o), D(h), D(lo), D(cl))


@pytest.mark.parametrize(
    ("at", "minutes", "expected"),
    [
        (ist(9, 15), 5, ist(9, 15)),
        (ist(9, 19, 59), 5, ist(9, 15)),
        (ist(9, 20), 5, ist(9, 20)),
        (ist(9, 17, 59), 3, ist(9, 15)),
        (ist(9, 18), 3, ist(9, 18)),
        (ist(10, 0), 15, ist(10, 0)),
        (ist(15, 25), 10, ist(15, 25)),
        (ist(15, 29, 59), 10, ist(15, 25)),
        (ist(15, 29, 59), 15, ist(15, 15)),
        (ist(15, 30), 10, None),
        (ist(9, 14, 59), 1, None),
        (ist(2, 0), 5, None),
    ],
)
def test_candle_start_anchored_at_0915_ist(at: datetime, minutes: int, expected: datetime | None) -> None:
    start = candle_start(at, minutes)
    assert start == expected
    if start is not None:
        assert start.tzinfo == UTC


def test_last_10m_candle_is_cut_at_close() -> None:
    assert candle_end(ist(15, 25), TIMEFRAMES["10m"]) == ist(15, 30)
    assert candle_end(ist(15, 15), TIMEFRAMES["15m"]) == ist(15, 30)
    assert candle_end(ist(9, 15), TIMEFRAMES["5m"]) == ist(9, 20)


def test_candle_start_rejects_naive_and_bad_minutes() -> None:
    with pytest.raises(ValueError, match="naive"):
        candle_start(datetime(2026, 1, 5, 10, 0), 5)
    with pytest.raises(ValueError, match="minutes"):
        candle_start(ist(10, 0), 0)


def test_builder_closes_on_next_window_tick_without_fake_candles_in_gaps() -> None:
    b = CandleBuilder(5)
    assert b.add(ist(9, 15, 1), D("100")) == []
    assert b.add(ist(9, 16), D("104")) == []
    assert b.add(ist(9, 19, 59), D("99")) == []
    assert b.forming == c(ist(9, 15), "100", "104", "99", "99")
    closed = b.add(ist(9, 31), D("101"))  # 09:20 and 09:25 had no ticks: no candles
    assert closed == [c(ist(9, 15), "100", "104", "99", "99")]
    assert b.forming == c(ist(9, 30), "101", "101", "101", "101")
    assert b.add(ist(9, 29), D("1")) == []  # late tick for a past window is ignored
    assert b.forming == c(ist(9, 30), "101", "101", "101", "101")


def test_close_due_closes_a_window_that_ended_without_a_tick() -> None:
    b = CandleBuilder(5)
    b.add(ist(9, 16), D("100"))
    assert b.close_due(ist(9, 19, 59)) == []
    assert b.close_due(ist(9, 20)) == [c(ist(9, 15), "100", "100", "100", "100")]
    assert b.forming is None
    assert b.close_due(ist(9, 40)) == []
    assert b.add(ist(9, 19), D("5")) == []  # a late tick never reopens a closed window
    assert b.forming is None


def test_session_boundary_closes_the_last_candle() -> None:
    b = CandleBuilder(10)
    b.add(ist(15, 26), D("50"))
    b.add(ist(15, 29, 59), D("52"))
    assert b.close_due(ist(15, 29, 59)) == []
    assert b.close_due(ist(15, 30)) == [c(ist(15, 25), "50", "52", "50", "52")]
    b2 = CandleBuilder(10)
    b2.add(ist(15, 27), D("50"))
    assert b2.add(ist(15, 31), D("60")) == [c(ist(15, 25), "50", "50", "50", "50")]  # post-close tick
    assert b2.forming is None
    nxt = ist(9, 15, 5, day=DAY + timedelta(days=1))
    assert b2.add(nxt, D("61")) == []
    assert b2.forming == Candle(ist(9, 15, day=DAY + timedelta(days=1)), D("61"), D("61"), D("61"), D("61"))


def build(ticks: list[tuple[datetime, Decimal]], minutes: int, end: datetime) -> list[Candle]:
    b = CandleBuilder(minutes)
    out: list[Candle] = []
    for at, price in ticks:
        out += b.add(at, price)
    out += b.close_due(end)
    return out


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), minutes=st.sampled_from([3, 5, 10, 15]))
def test_aggregate_1m_equals_building_from_ticks(seed: int, minutes: int) -> None:
    rng = random.Random(seed)
    at = ist(9, 15)
    close = ist(15, 30)
    ticks: list[tuple[datetime, Decimal]] = []
    price = D("100")
    while True:
        # mostly dense ticks with occasional multi-minute gaps
        at += timedelta(seconds=rng.choice([1, 7, 30, 59]) if rng.random() > 0.02 else rng.randint(60, 1800))
        if at >= close:
            break
        price = max(D("0.05"), price + D(rng.randint(-20, 20)) / 20)
        ticks.append((at, price))
    one_minute = build(ticks, 1, close)
    assert aggregate(one_minute, minutes) == build(ticks, minutes, close)


def test_aggregate_drops_out_of_session_bars_and_keeps_gaps() -> None:
    bars = [
        c(ist(9, 14), "1", "1", "1", "1"),
        c(ist(9, 15), "10", "12", "9", "11"),
        c(ist(9, 17), "11", "15", "11", "14"),
        c(ist(9, 30), "20", "21", "19", "20"),
    ]
    assert aggregate(bars, 5) == [c(ist(9, 15), "10", "15", "9", "14"), c(ist(9, 30), "20", "21", "19", "20")]


def test_combined_premium_credit_spread() -> None:
    t = [ist(9, 15), ist(9, 20), ist(9, 25)]
    sell_ce = [
        c(t[0], "120", "125", "118", "122"),
        c(t[1], "122", "124", "110", "111"),
        c(t[2], "111", "112", "100", "101"),
    ]
    buy_ce = [c(t[1], "30", "31", "27", "28"), c(t[2], "28", "29", "26", "27")]  # no data at 09:15
    sell_pe = [c(t[0], "110", "112", "108", "109"), c(t[1], "109", "115", "108", "114")]  # no 09:25 candle
    series = combined_premium([("SELL", 2, sell_ce), ("BUY", 2, buy_ce), ("SELL", 2, sell_pe)])
    assert [s.start for s in series] == [t[1], t[2]]  # 09:15 dropped: the hedge had no data yet
    # 09:20: 2*(122+109-30)=402 open, H 2*(124+115-31)=416, L 2*(110+108-27)=382, C 2*(111+114-28)=394
    assert series[0] == c(t[1], "402", "416", "382", "394")
    # 09:25: PE repeats its close 114 on every price
    assert series[1] == c(t[2], "394", "394", "376", "376")


def test_combined_premium_debit_takes_absolute_values_and_swaps_high_low() -> None:
    t0 = ist(9, 15)
    series = combined_premium(
        [("BUY", 1, [c(t0, "50", "55", "45", "52")]), ("SELL", 1, [c(t0, "20", "21", "18", "19")])]
    )
    # −(50−20)=−30 → 30; H: 21−55=−34 → 34; L: 18−45=−27 → 27 (already H ≥ L); C 33
    assert series == [c(t0, "30", "34", "27", "33")]
    swapped = combined_premium(
        [("BUY", 1, [c(t0, "10", "12", "9", "11")]), ("SELL", 1, [c(t0, "5", "8", "1", "6")])]
    )
    # O −5 → 5; H 8−12=−4 → 4; L 1−9=−8 → 8; so H/L swap to H 8, L 4; C −5 → 5
    assert swapped == [c(t0, "5", "8", "4", "5")]
    one_side = combined_premium([("BUY", 3, [c(t0, "10", "12", "9", "11")])])
    assert one_side == [c(t0, "30", "36", "27", "33")]  # only BUY legs: that side's premium


def test_combined_premium_errors_and_empty() -> None:
    assert combined_premium([]) == []
    with pytest.raises(ValueError, match="action"):
        combined_premium([("buy", 1, [])])
    with pytest.raises(ValueError, match="lots"):
        combined_premium([("SELL", 0, [])])
