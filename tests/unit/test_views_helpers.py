"""Pure helpers of the dashboard and book pages: sums with unknowns, percentages, roles, data age,
market status, cell formatting."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from algomirror.domain.calendar import default_calendar
from algomirror.web.dashboard import age_text, market_status
from algomirror.web.queries import Column, Subtotal, Sum, percent, roles
from algomirror.web.viewfmt import amount, cell, row_cells, subtotal_rows, total


def test_sum_when_some_values_unknown_is_partial_and_exact() -> None:
    s = Sum()
    for v in ("0.10", "0.20", None, "-0.30", "1234567.89"):
        s.add(None if v is None else Decimal(v))
    assert s.value == Decimal("1234567.89") and s.partial and s.unknown == 1


def test_sum_when_every_value_unknown_is_none_and_empty_is_zero() -> None:
    unknown = Sum()
    unknown.add(None)
    assert unknown.value is None and not unknown.partial
    assert Sum().value == Decimal("0.00")


def test_percent_when_denominator_zero_or_unknown_is_none_and_never_negative_zero() -> None:
    assert percent(Decimal("1"), Decimal("0")) is None
    assert percent(None, Decimal("5")) is None
    assert percent(Decimal("-0.10"), Decimal("30000.30")) == Decimal("0.00")
    assert str(percent(Decimal("-0.10"), Decimal("30000.30"))) == "0.00"
    assert percent(Decimal("1000.10"), Decimal("10000.10")) == Decimal("10.00")


def test_roles_when_primary_not_first_backups_count_active_in_creation_order() -> None:
    labels = roles([(1, False, True), (2, True, True), (3, False, False), (4, False, True)])
    assert labels == {1: "Backup 1", 2: "Primary", 3: "Inactive", 4: "Backup 2"}


def test_age_text_when_various_ages_reads_naturally() -> None:
    assert [age_text(s) for s in (None, 0, 4, 59, 60, 3599, 3600, 90000)] == [
        "never", "0 s ago", "4 s ago", "59 s ago", "1 min ago", "59 min ago", "1 h ago", "1 d ago"
    ]  # fmt: skip


def test_market_status_when_open_closed_or_holiday_names_next_session() -> None:
    calendar = default_calendar()  # a page passes the database's (web_calendar); here the built-in one
    open_now = market_status(datetime(2026, 11, 23, 4, 0, tzinfo=UTC), calendar)  # Mon 09:30 IST
    assert open_now.is_open and open_now.text == "Market open · closes 15:30 IST"
    evening = market_status(datetime(2026, 11, 23, 12, 0, tzinfo=UTC), calendar)  # Tue is a holiday
    assert not evening.is_open
    assert evening.text == "Market closed · next session Wed 25 Nov 09:15 IST"


def test_amount_and_total_when_unknown_render_dash_not_zero() -> None:
    assert "—" in amount(None) and "0" not in amount(None)
    assert amount(Decimal("123456.5")) == "₹1,23,456.50"
    assert 'class="negative"' in amount(Decimal("-1"), True)
    partial = Sum()
    partial.add(Decimal("5"))
    partial.add(None)
    assert total(partial).startswith("₹5.00") and "*" in total(partial)


def test_cells_when_text_contains_html_are_escaped() -> None:
    row = {"account_id": 3, "account": "<b>x</b>", "symbol": "<script>", "action": "BUY", "pnl": None}
    cols = (Column("account", "Account"), Column("symbol", "Symbol"), Column("action", "Side", "side"),
            Column("pnl", "P&L", "pnl"))  # fmt: skip
    html = str(row_cells(row, cols, "/accounts/"))
    assert "<script>" not in html and "&lt;script&gt;" in html and "&lt;b&gt;x&lt;/b&gt;" in html
    assert 'href="/accounts/3/overview"' in html
    assert "side-buy" in str(cell("BUY", "side"))
    sub = Subtotal(7, "A&B <i>")
    rows = str(subtotal_rows([sub], (("Positions", "n", ""),), "/positions?symbol=a&sort=pnl"))
    assert 'href="/positions?symbol=a&amp;sort=pnl&amp;account=7"' in rows and "A&amp;B &lt;i&gt;" in rows
