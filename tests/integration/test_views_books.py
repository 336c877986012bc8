"""Positions, Orders, Trades, Holdings, Funds pages: aggregates to the paisa, filters, sorting, CSV,
NULL shown as unknown."""

from __future__ import annotations

import csv
import io
import re
from decimal import Decimal
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from algomirror.web import queries
from tests.factories import (
    BASE_TIME,
    make_account,
    make_funds,
    make_holding,
    make_order,
    make_position,
    make_trade,
)
from tests.integration.web_support import WebEnv, make_env, signed_in


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> WebEnv:
    return make_env(db_url, tmp_path)


@pytest.fixture
def alice(env: WebEnv) -> FlaskClient:
    return signed_in(env, "alice")


@pytest.fixture
def books(env: WebEnv, alice: FlaskClient) -> dict[str, int]:
    """Two accounts with amounts chosen so float addition would be off by a paisa."""
    uid = env.user("alice").id
    with env.database.session() as s:
        a = make_account(s, uid, "Alpha", is_primary=True)
        b = make_account(s, uid, "Beta")
        make_position(
            s,
            a.id,
            "NIFTY01DEC2626000CE",
            pnl=Decimal("0.10"),
            realized_pnl=Decimal("0.10"),
            unrealized_pnl=Decimal("0.00"),
            quantity=75,
        )
        make_position(
            s,
            a.id,
            "NIFTY01DEC2626000PE",
            pnl=Decimal("0.20"),
            realized_pnl=None,
            unrealized_pnl=Decimal("0.20"),
            quantity=-75,
        )
        make_position(s, a.id, "BANKNIFTY30DEC2652000CE", pnl=Decimal("-1234567.89"), quantity=0)
        make_position(s, b.id, "NIFTY01DEC2626100CE", pnl=Decimal("9999999.99"), quantity=150)
        make_position(s, b.id, "SENSEX04DEC2680000CE", pnl=None, quantity=20, exchange="BFO")
        make_order(s, a.id, "A1", action="BUY", status="open")
        make_order(
            s, a.id, "A2", action="SELL", status="trigger_pending", order_type="SL", trigger_price="90"
        )
        make_order(s, a.id, "A3", action="SELL", status="complete", average_price="101.25")
        make_order(s, b.id, "B1", action="BUY", status="rejected", rejection_reason="RMS: margin")
        make_order(s, b.id, "B2", action="BUY", status="cancelled")
        make_trade(s, a.id, "A3", action="SELL", quantity=75, average_price="101.25", trade_value="7593.75")
        make_trade(s, a.id, "A9", action="BUY", quantity=65, average_price="0.05", trade_value=None)
        make_trade(s, b.id, "B9", action="BUY", quantity=1, average_price=None, trade_value=None)
        make_holding(s, a.id, "INFY", invested_value="10000.10", current_value="11000.20", pnl="1000.10")
        make_holding(s, b.id, "TCS", invested_value="20000.20", current_value="19000.00", pnl="-1000.20")
        make_funds(
            s,
            a.id,
            available_cash=Decimal("0.10"),
            collateral=Decimal("50000.00"),
            utilised_debits=Decimal("0.20"),
            m2m_realized=Decimal("-0.30"),
            m2m_unrealized=None,
        )
        make_funds(
            s,
            b.id,
            available_cash=Decimal("1234567.89"),
            collateral=None,
            utilised_debits=Decimal("0.10"),
            m2m_realized=Decimal("0.30"),
            m2m_unrealized=Decimal("5"),
        )
        return {"a": a.id, "b": b.id, "uid": uid}


def _cells(html: str, table_id: str, key: str) -> list[str]:
    """Text of the cells with ``data-key``/``data-col`` = key in a table (tags stripped)."""
    table = html.split(f'id="{table_id}"', 1)[1].split("</table>", 1)[0]
    found = re.findall(rf'<td[^>]*data-(?:key|col)="{re.escape(key)}"[^>]*>(.*?)</td>', table, re.S)
    return [re.sub(r"<[^>]+>", "", c).strip() for c in found]


def _grand(html: str, key: str) -> str:
    return _cells(html, "subtotals", key)[-1]


def test_positions_when_amounts_would_drift_as_floats_totals_are_exact(
    env: WebEnv, alice: FlaskClient, books: dict[str, int]
) -> None:
    with env.database.session_factory() as s:
        result = queries.read_book(s, books["uid"], "positions")
    alpha, beta = result.subtotals
    assert alpha.sum("pnl").value == Decimal("-1234567.59")
    assert beta.sum("pnl").value == Decimal("9999999.99") and beta.sum("pnl").partial
    assert result.total.sum("pnl").value == Decimal("8765432.40")
    assert (alpha.count, alpha.counts["open"], beta.counts["open"]) == (3, 2, 2)
    html = alice.get("/positions").get_data(as_text=True)
    assert _cells(html, "subtotals", "pnl") == ["-₹12,34,567.59", "₹99,99,999.99*", "₹87,65,432.40*"]
    assert _grand(html, "n") == "5"
    assert _grand(html, "open") == "4"
    assert _grand(html, "realized_pnl") == "₹0.10*"


def test_positions_when_pnl_unknown_shows_dash_never_zero(alice: FlaskClient, books: dict[str, int]) -> None:
    html = alice.get("/positions?symbol=SENSEX").get_data(as_text=True)
    assert _cells(html, "book-table", "pnl") == ["—"]
    assert _cells(html, "subtotals", "pnl")[1] == "—"


def test_positions_when_account_filter_shows_only_that_account(
    alice: FlaskClient, books: dict[str, int]
) -> None:
    html = alice.get(f"/positions?account={books['b']}").get_data(as_text=True)
    body = html.split('id="book-table"', 1)[1]
    assert "NIFTY01DEC2626100CE" in body and "SENSEX04DEC2680000CE" in body
    assert "NIFTY01DEC2626000CE" not in body
    assert _cells(html, "subtotals", "n") == ["2", "2"]


def test_positions_when_symbol_filter_matches_case_insensitive_substring(
    alice: FlaskClient, books: dict[str, int]
) -> None:
    html = alice.get("/positions?symbol=banknifty").get_data(as_text=True)
    assert _cells(html, "subtotals", "n") == ["1", "0", "1"]
    assert alice.get("/positions?symbol=%25").get_data(as_text=True).count("data-row-id=") == 0


def test_positions_when_sorted_by_pnl_desc_puts_unknown_last(
    alice: FlaskClient, books: dict[str, int]
) -> None:
    html = alice.get("/positions?sort=pnl&dir=desc").get_data(as_text=True)
    # The rows leave the ₹ out: the amount columns' headers carry it.
    assert _cells(html, "book-table", "pnl") == ["99,99,999.99", "0.20", "0.10", "-12,34,567.89", "—"]
    # The rows leave the ₹ out: the amount columns' headers carry it.
    assert 'aria-sort="descending"' in html
    ascending = alice.get("/positions?sort=pnl&dir=asc").get_data(as_text=True)
    assert _cells(ascending, "book-table", "pnl")[0] == "-12,34,567.89"
    assert _cells(ascending, "book-table", "pnl")[-1] == "—"


def test_positions_when_sort_param_not_whitelisted_uses_default(
    alice: FlaskClient, books: dict[str, int]
) -> None:
    response = alice.get("/positions?sort=id;drop%20table&dir=sideways")
    assert response.status_code == 200
    assert _cells(response.get_data(as_text=True), "book-table", "symbol")[0] == "BANKNIFTY30DEC2652000CE"


def test_orders_when_mixed_counts_by_side_and_status(alice: FlaskClient, books: dict[str, int]) -> None:
    html = alice.get("/orders").get_data(as_text=True)
    assert _cells(html, "subtotals", "BUY") == ["1", "2", "3"]
    assert _cells(html, "subtotals", "SELL") == ["2", "0", "2"]
    assert _cells(html, "subtotals", "open") == ["2", "0", "2"]
    assert _grand(html, "complete") == "1"
    assert _grand(html, "rejected") == "1"
    assert _grand(html, "cancelled") == "1"
    assert html.count('/cancel"') == 2  # Cancel offered only on open / trigger-pending orders


def test_trades_when_value_missing_uses_quantity_times_price_else_unknown(
    alice: FlaskClient, books: dict[str, int]
) -> None:
    html = alice.get("/trades").get_data(as_text=True)
    # 65 × 0.05 = 3.25; the third trade has neither value nor price: unknown, not 0.
    assert _cells(html, "subtotals", "buy_value") == ["₹3.25", "—", "₹3.25*"]
    assert _cells(html, "subtotals", "sell_value") == ["₹7,593.75", "₹0.00", "₹7,593.75"]
    assert _grand(html, "n") == "3"


def test_holdings_when_two_accounts_totals_and_pnl_percent(alice: FlaskClient, books: dict[str, int]) -> None:
    html = alice.get("/holdings").get_data(as_text=True)
    assert _grand(html, "current_value") == "₹30,000.20"
    assert _grand(html, "invested_value") == "₹30,000.30"
    assert _grand(html, "pnl") == "-₹0.10"
    # -0.10 / 30000.30 × 100 = -0.000333… → -0.00 at 2 dp
    assert _grand(html, "pnl/invested_value") == "0.00%"
    assert _cells(html, "subtotals", "pnl/invested_value")[:2] == ["10.00%", "-5.00%"]


def test_funds_when_two_accounts_sums_cash_collateral_margin_m2m(
    alice: FlaskClient, books: dict[str, int]
) -> None:
    html = alice.get("/funds").get_data(as_text=True)
    assert _grand(html, "available_cash") == "₹12,34,567.99"
    assert _grand(html, "collateral") == "₹50,000.00*"
    assert _grand(html, "utilised_debits") == "₹0.30"
    assert _grand(html, "m2m_realized") == "₹0.00"
    assert _grand(html, "m2m_unrealized") == "₹5.00*"


def test_live_partial_when_filtered_keeps_the_filter(alice: FlaskClient, books: dict[str, int]) -> None:
    page = alice.get(f"/positions?account={books['a']}&sort=pnl&dir=asc").get_data(as_text=True)
    assert f'hx-get="/positions/live?account={books["a"]}&amp;sort=pnl&amp;dir=asc"' in page
    assert 'hx-trigger="every 3s"' in page
    live = alice.get(f"/positions/live?account={books['a']}&sort=pnl&dir=asc").get_data(as_text=True)
    assert "<html" not in live
    assert _cells(live, "book-table", "pnl")[0] == "-12,34,567.89"
    assert "NIFTY01DEC2626100CE" not in live


def _csv(client: FlaskClient, path: str) -> list[list[str]]:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["Content-Disposition"].startswith("attachment; filename=")
    assert response.mimetype == "text/csv"
    return list(csv.reader(io.StringIO(response.get_data(as_text=True).lstrip("\ufeff"))))


def test_csv_when_exporting_positions_has_account_column_and_plain_decimals(
    alice: FlaskClient, books: dict[str, int]
) -> None:
    rows = _csv(alice, "/positions.csv?sort=pnl&dir=desc")
    header, body = rows[0], rows[1:]
    assert header[:2] == ["Account", "Symbol"] and "P&L" in header
    pnl = header.index("P&L")
    assert [(r[0], r[1], r[pnl]) for r in body] == [
        ("Beta", "NIFTY01DEC2626100CE", "9999999.99"),
        ("Alpha", "NIFTY01DEC2626000PE", "0.20"),
        ("Alpha", "NIFTY01DEC2626000CE", "0.10"),
        ("Alpha", "BANKNIFTY30DEC2652000CE", "-1234567.89"),
        ("Beta", "SENSEX04DEC2680000CE", ""),
    ]


def test_csv_when_filtered_orders_export_only_matching_rows_with_ist_times(
    alice: FlaskClient, books: dict[str, int]
) -> None:
    rows = _csv(alice, f"/orders.csv?account={books['b']}")
    header = rows[0]
    assert len(rows) == 3 and {r[0] for r in rows[1:]} == {"Beta"}
    assert rows[1][header.index("Time (IST)")] == "2026-11-23 09:15:00"
    assert BASE_TIME.hour == 3  # stored UTC 03:45 → shown 09:15 IST


def test_csv_when_text_starts_like_a_formula_is_quoted(env: WebEnv, alice: FlaskClient) -> None:
    with env.database.session() as s:
        account = make_account(s, env.user("alice").id, "=HYPERLINK(1)", is_primary=True)
        make_position(s, account.id, "+SUM(A1)", pnl=Decimal("-5.00"))
    rows = _csv(alice, "/positions.csv")
    assert rows[1][0] == "'=HYPERLINK(1)" and rows[1][1] == "'+SUM(A1)"
    assert "-5.00" in rows[1]


def test_books_when_more_rows_than_a_page_paginates_but_totals_cover_all(
    env: WebEnv, alice: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from algomirror.web import books as books_module

    with env.database.session() as s:
        account = make_account(s, env.user("alice").id, "Big", is_primary=True)
        for i in range(7):
            make_position(s, account.id, f"SYM{i}", pnl=Decimal("1.01"))
    monkeypatch.setattr(books_module, "PAGE_SIZE", 5)
    first = alice.get("/positions?sort=symbol").get_data(as_text=True)
    assert _cells(first, "book-table", "symbol") == [f"SYM{i}" for i in range(5)]
    assert _grand(first, "pnl") == "₹7.07"
    assert "1–5 of 7" in first and "Page 1 of 2" in first
    assert 'href="/positions?sort=symbol&amp;page=2"' in first
    second = alice.get("/positions/live?sort=symbol&page=2").get_data(as_text=True)
    assert _cells(second, "book-table", "symbol") == ["SYM5", "SYM6"]
    assert _grand(second, "pnl") == "₹7.07"
    assert "6–7 of 7" in second


def test_csv_when_average_has_four_decimals_exports_them_all(env: WebEnv, alice: FlaskClient) -> None:
    with env.database.session() as s:
        account = make_account(s, env.user("alice").id, "Main", is_primary=True)
        make_position(
            s, account.id, "NIFTY01DEC2626000CE", average_price=Decimal("123.4567"), pnl=Decimal("5")
        )
    rows = _csv(alice, "/positions.csv")
    header = rows[0]
    average = next(i for i, name in enumerate(header) if "Avg" in name or "Average" in name)
    assert rows[1][average] == "123.4567"
    assert rows[1][header.index("P&L")] == "5.00"


def test_orders_when_market_order_has_zero_or_no_price_shows_dash_not_zero_rupees(
    env: WebEnv, alice: FlaskClient
) -> None:
    with env.database.session() as s:
        a = make_account(s, env.user("alice").id, "Alpha", is_primary=True)
        make_order(s, a.id, "M0", symbol="NIFTYMKTZERO", order_type="MARKET", price="0", trigger_price="0")
        make_order(s, a.id, "MN", symbol="NIFTYMKTNULL", order_type="MARKET", price=None, trigger_price=None)
        make_order(s, a.id, "L1", symbol="NIFTYLIMIT", price="9695796.50", trigger_price="0")
    for symbol in ("NIFTYMKTZERO", "NIFTYMKTNULL"):
        html = alice.get(f"/orders?symbol={symbol}").get_data(as_text=True)
        assert _cells(html, "book-table", "price") == ["—"]
        assert _cells(html, "book-table", "trigger_price") == ["—"]
    html = alice.get("/orders?symbol=NIFTYLIMIT").get_data(as_text=True)
    assert _cells(html, "book-table", "price") == ["96,95,796.50"]
    # A limit order's price is a price even when it is zero; only a MARKET order has none.
    assert _cells(html, "book-table", "trigger_price") == ["0.00"]


def test_cancel_page_when_market_order_has_zero_price_shows_no_rupee_price(
    env: WebEnv, alice: FlaskClient
) -> None:
    with env.database.session() as s:
        a = make_account(s, env.user("alice").id, "Alpha", is_primary=True)
        pk = make_order(s, a.id, "M1", order_type="MARKET", price="0", trigger_price="0", status="open").id
    response = alice.get(f"/orders/{pk}/cancel")
    page = response.get_data(as_text=True)
    assert response.status_code == 200 and "MARKET" in page
    assert "₹0.00" not in page
