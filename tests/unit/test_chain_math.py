"""The option chain's math (engine.chain): the window around ATM and its re-centring, ATM/ITM k/OTM k
tags from each side's view, PCR by OI and volume (unknown never 0), and the ``chain`` event's payload."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from algomirror.engine.chain import (
    SideQuote,
    build_window,
    chain_payload,
    chain_topic,
    moneyness_tag,
    pcr,
    recentre,
)

D = Decimal
AT = datetime(2026, 11, 25, 5, 0, tzinfo=UTC)


def test_window_is_atm_plus_minus_count_steps() -> None:
    window = build_window(D("26012.40"), D(50), 20)
    assert window.atm == D(26000)
    assert len(window.strikes) == 41
    assert window.strikes[0] == D(25000) and window.strikes[-1] == D(27000)
    assert window.strikes[20] == window.atm
    assert all(b - a == D(50) for a, b in zip(window.strikes, window.strikes[1:], strict=False))


def test_atm_rounds_half_up_to_the_step() -> None:
    assert build_window(D("26025"), D(50), 1).atm == D(26050)
    assert build_window(D("26024.95"), D(50), 1).atm == D(26000)
    assert build_window(D("59949.99"), D(100), 2).strikes == (
        D(59700),
        D(59800),
        D(59900),
        D(60000),
        D(60100),
    )


def test_window_leaves_out_non_positive_strikes() -> None:
    window = build_window(D(120), D(50), 5)
    assert window.strikes[0] == D(50)
    assert all(s > 0 for s in window.strikes)


@pytest.mark.parametrize("bad", [(D(0), D(50), 3), (D(100), D(0), 3), (D(100), D(50), 0)])
def test_window_refuses_bad_arguments(bad: tuple[Decimal, Decimal, int]) -> None:
    with pytest.raises(ValueError):
        build_window(*bad)


def test_recentre_keeps_the_window_while_atm_holds_and_moves_with_it() -> None:
    first = recentre(None, D("26010"), D(50), 3)
    assert recentre(first, D("26024.90"), D(50), 3) is first  # same ATM: nothing to re-subscribe
    moved = recentre(first, D("26025"), D(50), 3)
    assert moved is not first and moved.atm == D(26050)
    assert moved.strikes == (D(25900), D(25950), D(26000), D(26050), D(26100), D(26150), D(26200))
    wider = recentre(moved, D("26030"), D(50), 5)
    assert wider is not moved and len(wider.strikes) == 11


@pytest.mark.parametrize(
    ("strike", "side", "tag"),
    [
        (26000, "CE", "ATM"),
        (26000, "PE", "ATM"),
        (25900, "CE", "ITM 2"),
        (25900, "PE", "OTM 2"),
        (26050, "CE", "OTM 1"),
        (26050, "PE", "ITM 1"),
        (27000, "CE", "OTM 20"),
        (25000, "PE", "OTM 20"),
    ],
)
def test_tags_from_each_sides_view(strike: int, side: str, tag: str) -> None:
    assert moneyness_tag(D(strike), D(26000), D(50), side) == tag  # type: ignore[arg-type]


def test_pcr_by_totals_rounded_and_unknown_never_zero() -> None:
    assert pcr([300, 200], [100, 150]) == D("2.00")
    assert pcr([1], [3]) == D("0.33")
    assert pcr([2], [3]) == D("0.67")
    assert pcr([0, 0], [5, 5]) == D("0.00")
    assert pcr([10, None], [5, 5]) is None  # one side unknown: the ratio is unknown
    assert pcr([10], [None]) is None
    assert pcr([10], [0]) is None
    assert pcr([], []) is None


def test_spread_needs_both_sides() -> None:
    assert SideQuote(bid=D("10.05"), ask=D("10.40")).spread == D("0.35")
    assert SideQuote(bid=None, ask=D("10.40")).spread is None
    assert SideQuote(bid=D(0), ask=D("10.40")).spread is None


def test_payload_rows_tags_and_pcr() -> None:
    window = build_window(D("26010"), D(50), 1)
    expiry = date(2026, 12, 1)
    quotes = {
        "NIFTY01DEC2625950CE": SideQuote(D("120.5"), D("120.4"), D("120.6"), 75, 150, 1000, 500, "ws", AT),
        "NIFTY01DEC2625950PE": SideQuote(D("60"), None, None, None, None, 3000, 1500, "rest", AT),
        "NIFTY01DEC2626000CE": SideQuote(D("80"), volume=2000, oi=500, source="ws", at=AT),
        "NIFTY01DEC2626000PE": SideQuote(D("75"), volume=1000, oi=1000, source="ws", at=AT),
        "NIFTY01DEC2626050CE": SideQuote(D("50"), volume=1000, oi=1000, source="ws", at=AT),
        "NIFTY01DEC2626050PE": SideQuote(D("110"), volume=1000, oi=500, source="ws", at=AT),
    }
    spot = SideQuote(D("26010"), source="ws", at=AT)
    data = chain_payload(
        user_id=7, instrument="nifty", expiry=expiry, count=1, at=AT, spot=spot, window=window, quotes=quotes
    )
    assert data["instrument"] == "NIFTY" and data["expiry"] == "2026-12-01" and data["atm"] == "26000"
    assert data["spot"] == "26010" and data["step"] == "50" and data["strike_count"] == 1
    assert [r["strike"] for r in data["rows"]] == ["25950", "26000", "26050"]
    first = data["rows"][0]
    assert first["ce"]["tag"] == "ITM 1" and first["pe"]["tag"] == "OTM 1"
    assert first["ce"]["spread"] == "0.2" and first["ce"]["bid_qty"] == 75
    assert first["pe"]["source"] == "rest" and first["pe"]["bid"] is None
    assert data["rows"][1]["atm"] is True and data["rows"][1]["ce"]["tag"] == "ATM"
    # PCR: OI (1500+1000+500)/(500+500+1000) = 1.5; volume (3000+1000+1000)/(1000+2000+1000) = 1.25.
    assert data["pcr_oi"] == "1.50" and data["pcr_volume"] == "1.25"


def test_payload_without_spot_has_no_rows_and_unknown_pcr() -> None:
    data = chain_payload(
        user_id=1,
        instrument="SENSEX",
        expiry=date(2026, 12, 3),
        count=20,
        at=AT,
        spot=None,
        window=None,
        quotes={},
    )
    assert data["rows"] == [] and data["spot"] is None and data["pcr_oi"] is None and data["atm"] is None


def test_payload_with_a_missing_quote_keeps_the_row_and_makes_pcr_unknown() -> None:
    window = build_window(D("26000"), D(50), 1)
    data = chain_payload(
        user_id=1,
        instrument="NIFTY",
        expiry=date(2026, 12, 1),
        count=1,
        at=AT,
        spot=SideQuote(D("26000")),
        window=window,
        quotes={},
    )
    assert len(data["rows"]) == 3 and data["rows"][0]["ce"]["ltp"] is None
    assert data["pcr_oi"] is None and data["pcr_volume"] is None


def test_topic_matches_the_live_blueprints_pattern() -> None:
    from algomirror.web.live import _CHAIN_TOPIC

    topic = chain_topic(12, "banknifty", "2026-12-29")
    assert topic == "chain:12:BANKNIFTY:2026-12-29"
    assert _CHAIN_TOPIC.fullmatch(topic) is not None
