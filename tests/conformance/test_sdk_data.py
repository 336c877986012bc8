"""The official SDK drives the market-data, instrument, options, margin and calendar endpoints."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pandas as pd
import pytest
from openalgo import api

from tests.sim_fixtures import SimHandle

CE = "NIFTY01DEC2626000CE"
# The SDK's own pandas call is deprecated in pandas 3; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword")


@pytest.fixture
def client(simulator_session: SimHandle) -> api:
    s = simulator_session
    return api(api_key=s.api_keys[0], host=s.rest_url, ws_url=s.ws_url, timeout=10)


def test_quotes_when_option_has_spread_inside_day_range(client: api) -> None:
    q = client.quotes(symbol=CE, exchange="NFO")["data"]
    assert set(q) >= {"ltp", "open", "high", "low", "prev_close", "bid", "ask", "volume", "oi"}
    assert 0 < q["bid"] < q["ask"]
    assert q["bid"] <= q["ltp"] <= q["ask"]
    assert q["low"] <= q["ltp"] <= q["high"]


def test_quotes_when_index_moves_after_set_price(client: api, simulator_session: SimHandle) -> None:
    simulator_session.control.set_price("NIFTY", "NSE_INDEX", 26123.45)
    assert client.quotes(symbol="NIFTY", exchange="NSE_INDEX")["data"]["ltp"] == 26123.45


def test_quotes_when_unknown_symbol_is_400_with_exact_text(client: api) -> None:
    r = client.quotes(symbol="NIFTY01DEC2699999CE", exchange="NFO")
    assert r["code"] == 400
    assert (
        "Symbol 'NIFTY01DEC2699999CE' not found for exchange 'NFO'. Please verify the symbol name and ensure "
        "master contracts are downloaded." in r["message"]
    )


def test_multiquotes_when_one_invalid_lists_it_first(client: api) -> None:
    r = client.multiquotes(
        symbols=[{"symbol": "NIFTY", "exchange": "NSE_INDEX"}, {"symbol": "BAD", "exchange": "NFO"}]
    )
    assert r["status"] == "success"
    assert r["results"][0]["symbol"] == "BAD" and "error" in r["results"][0]
    assert r["results"][1]["data"]["ltp"] > 0


def test_depth_when_option_has_five_levels_each_side(client: api) -> None:
    data = client.depth(symbol=CE, exchange="NFO")["data"]
    assert len(data["bids"]) == 5 and len(data["asks"]) == 5
    assert data["bids"][0]["price"] < data["asks"][0]["price"]
    assert data["totalbuyqty"] == sum(x["quantity"] for x in data["bids"])


def test_history_when_intraday_returns_ist_dataframe_of_5m_bars(client: api) -> None:
    df = client.history(
        symbol="NIFTY", exchange="NSE_INDEX", interval="5m", start_date="2026-11-23", end_date="2026-11-25"
    )
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == ["open", "high", "low", "close", "volume", "oi"]
    assert str(df.index.tz) == "Asia/Kolkata"
    assert df.index[0].strftime("%Y-%m-%d %H:%M") == "2026-11-23 09:15"  # bars stamped at their start
    assert df.index.is_monotonic_increasing and not df.index.has_duplicates
    assert (df["high"] >= df["low"]).all()
    assert "2026-11-24" not in set(df.index.strftime("%Y-%m-%d"))  # a holiday has no bars


def test_history_when_daily_bars_are_stamped_midnight_utc(client: api) -> None:
    df = client.history(
        symbol="NIFTY", exchange="NSE_INDEX", interval="D", start_date="2026-11-16", end_date="2026-11-20"
    )
    assert [t.strftime("%Y-%m-%d %H:%M") for t in df.index] == [
        f"2026-11-{day} 00:00" for day in (16, 17, 18, 19, 20)
    ]


def test_intervals_when_called_lists_minutes(client: api) -> None:
    data = client.intervals()["data"]
    assert "1m" in data["minutes"] and data["days"] == ["D"]


def test_symbol_when_option_describes_contract(client: api) -> None:
    data = client.symbol(symbol=CE, exchange="NFO")["data"]
    assert data["symbol"] == CE and data["name"] == "NIFTY" and data["exchange"] == "NFO"
    assert data["expiry"] == "01-DEC-26" and data["strike"] == 26000.0 and data["instrumenttype"] == "CE"
    assert data["lotsize"] == 65 and data["tick_size"] == 0.05 and data["freeze_qty"] == 1800


def test_symbol_when_unknown_is_404_with_exact_text(client: api) -> None:
    r = client.symbol(symbol="NOPE", exchange="NFO")
    assert r["code"] == 404 and "Symbol NOPE not found in exchange NFO" in r["message"]


def test_search_when_terms_given_filters_symbols(client: api) -> None:
    r = client.search(query="NIFTY 26000 01DEC26 CE", exchange="NFO")
    assert r["message"] == "Found 1 matching symbols"
    assert [x["symbol"] for x in r["data"]] == [CE]


def test_expiry_when_nifty_options_lists_weekly_tuesdays_ascending(client: api) -> None:
    r = client.expiry(symbol="NIFTY", exchange="NFO", instrumenttype="options")
    assert r["data"][:3] == ["01-DEC-26", "08-DEC-26", "15-DEC-26"]
    dates = [datetime.strptime(x, "%d-%b-%y") for x in r["data"]]
    assert dates == sorted(dates)
    futures = client.expiry(symbol="NIFTY", exchange="NFO", instrumenttype="futures")["data"]
    assert futures[0] == "29-DEC-26"


def test_optionsymbol_when_itm2_ce_resolves_two_strikes_below_atm(
    client: api, simulator_session: SimHandle
) -> None:
    simulator_session.control.set_price("NIFTY", "NSE_INDEX", 26010)
    r = client.optionsymbol(
        underlying="NIFTY", exchange="NSE_INDEX", expiry_date="01DEC26", offset="ITM2", option_type="CE"
    )
    assert r["symbol"] == "NIFTY01DEC2625900CE" and r["exchange"] == "NFO"
    assert r["lotsize"] == 65 and r["underlying_ltp"] == 26010.0


def test_optionsymbol_when_ltp_between_strikes_tie_goes_lower(
    client: api, simulator_session: SimHandle
) -> None:
    simulator_session.control.set_price("NIFTY", "NSE_INDEX", 26025)
    r = client.optionsymbol(
        underlying="NIFTY", exchange="NSE_INDEX", expiry_date="01DEC26", offset="ATM", option_type="PE"
    )
    assert r["symbol"] == "NIFTY01DEC2626000PE"


def test_optionsorder_when_otm1_pe_buy_places_and_reports_resolution(client: api) -> None:
    r = client.optionsorder(
        strategy="conf",
        underlying="NIFTY",
        exchange="NSE_INDEX",
        expiry_date="01DEC26",
        offset="OTM1",
        option_type="PE",
        action="BUY",
        quantity=65,
        product="NRML",
    )
    assert r["status"] == "success"
    assert r["symbol"] == "NIFTY01DEC2625950PE" and r["offset"] == "OTM1" and r["underlying"] == "NIFTY"
    assert client.orderstatus(order_id=r["orderid"], strategy="conf")["data"]["order_status"] == "complete"


def test_optionsorder_when_no_expiry_is_400(client: api) -> None:
    r = client.optionsorder(
        strategy="conf",
        underlying="NIFTY",
        exchange="NSE_INDEX",
        offset="ATM",
        option_type="CE",
        action="BUY",
        quantity=65,
    )
    assert r["code"] == 400 and "Expiry date required." in r["message"]


def test_optionsmultiorder_when_iron_condor_runs_buys_first(client: api) -> None:
    r = client.optionsmultiorder(
        strategy="ic",
        underlying="NIFTY",
        exchange="NSE_INDEX",
        expiry_date="01DEC26",
        legs=[
            {"offset": "OTM4", "option_type": "CE", "action": "SELL", "quantity": 65},
            {"offset": "OTM4", "option_type": "PE", "action": "SELL", "quantity": 65},
            {"offset": "OTM8", "option_type": "CE", "action": "BUY", "quantity": 65},
            {"offset": "OTM8", "option_type": "PE", "action": "BUY", "quantity": 65},
        ],
    )
    assert r["status"] == "success"
    assert [x["leg"] for x in r["results"]] == [3, 4, 1, 2]
    assert all(x["status"] == "success" for x in r["results"])
    assert r["results"][0]["symbol"] == "NIFTY01DEC2626400CE"


def test_optionchain_when_strike_count_2_labels_itm_otm(client: api) -> None:
    r = client.optionchain(underlying="NIFTY", exchange="NSE_INDEX", expiry_date="01DEC26", strike_count=2)
    assert r["status"] == "success" and r["atm_strike"] == 26000.0 and r["expiry_date"] == "01DEC26"
    assert [row["strike"] for row in r["chain"]] == [25900.0, 25950.0, 26000.0, 26050.0, 26100.0]
    assert [row["ce"]["label"] for row in r["chain"]] == ["ITM2", "ITM1", "ATM", "OTM1", "OTM2"]
    assert [row["pe"]["label"] for row in r["chain"]] == ["OTM2", "OTM1", "ATM", "ITM1", "ITM2"]
    calls = [row["ce"]["ltp"] for row in r["chain"]]
    assert calls == sorted(calls, reverse=True)  # deeper ITM calls cost more
    assert r["expiry_ts"] == int(datetime(2026, 12, 1, 10, 0, tzinfo=UTC).timestamp())


def test_margin_when_straddle_sold_uses_pair_rate(client: api) -> None:
    r = client.margin(
        positions=[
            {
                "symbol": CE,
                "exchange": "NFO",
                "action": "SELL",
                "quantity": "65",
                "product": "NRML",
                "pricetype": "MARKET",
            },
            {
                "symbol": "NIFTY01DEC2626000PE",
                "exchange": "NFO",
                "action": "SELL",
                "quantity": "65",
                "product": "NRML",
                "pricetype": "MARKET",
            },
        ]
    )
    data = r["data"]
    assert data["total_margin_required"] == 320000.0
    assert Decimal(str(data["span_margin"])) + Decimal(str(data["exposure_margin"])) == Decimal(320000)


def test_holidays_when_2026_lists_gurpurb_closed(client: api) -> None:
    r = client.holidays(year=2026)
    assert r["year"] == 2026 and r["timezone"] == "Asia/Kolkata"
    row = next(x for x in r["data"] if x["date"] == "2026-11-24")
    assert row["holiday_type"] == "TRADING_HOLIDAY" and "NFO" in row["closed_exchanges"]


def test_timings_when_weekday_nfo_closes_1540_and_weekend_only_crypto(client: api) -> None:
    data = client.timings(date="2026-11-25")["data"]
    nfo = next(x for x in data if x["exchange"] == "NFO")
    assert nfo["start_time"] == int(datetime(2026, 11, 25, 3, 45, tzinfo=UTC).timestamp() * 1000)
    assert nfo["end_time"] == int(datetime(2026, 11, 25, 10, 10, tzinfo=UTC).timestamp() * 1000)
    assert [x["exchange"] for x in client.timings(date="2026-11-28")["data"]] == ["CRYPTO"]
    holiday = {x["exchange"] for x in client.timings(date="2026-11-24")["data"]}
    assert holiday.isdisjoint({"NSE", "BSE", "NFO", "BFO"}) and "MCX" in holiday  # only the open ones


def test_instruments_when_nfo_requested_returns_dataframe_of_contracts(client: api) -> None:
    df = client.instruments(exchange="NFO")
    assert isinstance(df, pd.DataFrame)
    assert {"symbol", "lotsize", "expiry", "strike", "instrumenttype", "tick_size"} <= set(df.columns)
    assert CE in set(df["symbol"]) and set(df["exchange"]) == {"NFO"}


def test_optiongreeks_when_atm_call_has_sane_greeks(client: api) -> None:
    r = client.optiongreeks(symbol=CE, exchange="NFO", interest_rate=0)
    assert r["status"] == "success" and r["option_type"] == "CE" and r["strike"] == 26000.0
    assert r["expiry_date"] == "01-Dec-2026" and 6 < r["days_to_expiry"] < 6.5
    assert 5 < r["implied_volatility"] < 40
    g = r["greeks"]
    assert 0.3 < g["delta"] < 0.7 and g["gamma"] > 0 and g["theta"] < 0 and g["vega"] > 0


def test_optiongreeks_when_bad_key_is_401(simulator_session: SimHandle) -> None:
    bad = api(api_key="e" * 64, host=simulator_session.rest_url)
    assert bad.optiongreeks(symbol=CE, exchange="NFO")["code"] == 401


def test_optionchain_when_with_greeks_puts_are_negative_delta(client: api) -> None:
    r = client.optionchain(
        underlying="NIFTY", exchange="NSE_INDEX", expiry_date="01DEC26", strike_count=1, with_greeks=True
    )
    assert r["greeks_included"] is True and abs(r["forward_price"] - r["underlying_ltp"]) < 100
    for row in r["chain"]:
        assert 0 < row["ce"]["delta"] < 1 and -1 < row["pe"]["delta"] < 0
        assert row["ce"]["implied_volatility"] > 0
