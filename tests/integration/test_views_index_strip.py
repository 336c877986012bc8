"""The header's index strip, web side: ``/header/live`` and the ``index_strip_rows()`` template helper
show NIFTY, BANKNIFTY and SENSEX from the signed-in user's own primary account only (SQLite and
PostgreSQL, Flask test client)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from flask import g, render_template_string
from flask.testing import FlaskClient
from sqlalchemy import event
from sqlalchemy.orm import Session

from algomirror.db.models import IndexQuote
from algomirror.web.context import SessionUser
from algomirror.web.market_strip import IndexRow, index_strip
from tests.factories import make_account, make_user
from tests.integration.web_support import START, WebEnv, make_env, signed_in

EMPTY = "No index prices yet — set a primary account"


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> WebEnv:
    return make_env(db_url, tmp_path)


@pytest.fixture
def alice(env: WebEnv) -> FlaskClient:
    return signed_in(env, "alice")


def add_quote(
    session: Session,
    account_id: int,
    symbol: str,
    ltp: str,
    prev_close: str | None,
    quoted_at: datetime,
) -> None:
    exchange = "BSE_INDEX" if symbol == "SENSEX" else "NSE_INDEX"
    session.add(
        IndexQuote(
            account_id=account_id,
            exchange=exchange,
            symbol=symbol,
            ltp=Decimal(ltp),
            prev_close=None if prev_close is None else Decimal(prev_close),
            quoted_at=quoted_at,
        )
    )
    session.flush()


def add_three(session: Session, account_id: int, quoted_at: datetime, scale: str = "1") -> None:
    k = Decimal(scale)
    add_quote(
        session, account_id, "NIFTY", str(Decimal("26105.35") * k), str(Decimal("26073.90") * k), quoted_at
    )
    add_quote(session, account_id, "BANKNIFTY", str(Decimal("59000.00") * k), "59122.15", quoted_at)
    add_quote(session, account_id, "SENSEX", str(Decimal("85000.00") * k), None, quoted_at)


def text(fragment: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", fragment)).strip()


def item(html: str, symbol: str) -> str:
    return html.split(f'<li data-index="{symbol}">', 1)[1].split("</li>", 1)[0]


def strip(client: FlaskClient) -> str:
    """The strip part of the header's live fragment (the market clock left out)."""
    response = client.get("/header/live", headers={"HX-Request": "true"})
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    return re.sub(r'<span class="market-clock[^"]*"[^>]*>.*?</time></span>', "", html, count=1, flags=re.S)


def test_strip_when_primary_has_quotes_shows_levels_change_percent_and_age(
    env: WebEnv, alice: FlaskClient
) -> None:
    uid = env.user("alice").id
    with env.database.session() as s:
        primary = make_account(s, uid, "Alpha main", is_primary=True)
        add_three(s, primary.id, START - timedelta(seconds=4))

    html = strip(alice)

    assert html.count("<li data-index=") == 3
    assert (
        html.index('data-index="NIFTY"')
        < html.index('data-index="BANKNIFTY"')
        < html.index('data-index="SENSEX"')
    )
    nifty, bank, sensex = item(html, "NIFTY"), item(html, "BANKNIFTY"), item(html, "SENSEX")
    # 31.45 / 26073.90 = 0.1206…%; -122.15 / 59122.15 = -0.2066…%.
    assert text(nifty) == "NIFTY 26,105.35 +31.45 (+0.12%) 4 s ago"
    assert 'class="index-change positive"' in nifty
    assert text(bank) == "BANKNIFTY 59,000.00 -122.15 (-0.21%) 4 s ago"
    assert 'class="index-change negative"' in bank
    # No previous close: the change is unknown, not 0.
    assert text(sensex) == "SENSEX 85,000.00 — 4 s ago"
    assert 'class="index-change unknown"' in sensex
    assert "stale" not in html and "₹" not in html
    title = html.split('<ul class="index-strip" title="', 1)[1].split('"', 1)[0]
    assert title == "Index levels from your primary account Alpha main, quoted 23 Nov 09:29:56 IST"


def test_strip_when_quote_is_older_than_two_sync_intervals_marks_it_stale(
    env: WebEnv, alice: FlaskClient
) -> None:
    uid = env.user("alice").id
    with env.database.session() as s:
        primary = make_account(s, uid, "Alpha main", is_primary=True)
        add_quote(s, primary.id, "NIFTY", "26000", "26000", START - timedelta(minutes=10))
        add_quote(s, primary.id, "SENSEX", "85000", "84000", START - timedelta(seconds=10))

    html = strip(alice)

    nifty = item(html, "NIFTY")
    assert text(nifty) == "NIFTY 26,000.00 0.00 (0.00%) 10 min ago"
    assert 'class="index-change zero"' in nifty and 'class="index-age stale"' in nifty
    # Exactly two 5 s intervals old: not yet stale (the market is open at 09:30 IST).
    assert 'class="index-age"' in item(html, "SENSEX") and "+1,000.00 (+1.19%)" in text(item(html, "SENSEX"))
    # An index without a stored quote is shown as unknown, in its place.
    assert text(item(html, "BANKNIFTY")) == "BANKNIFTY — — —"


def test_strip_when_user_has_no_primary_or_no_quote_shows_one_muted_line(
    env: WebEnv, alice: FlaskClient
) -> None:
    uid = env.user("alice").id
    with env.database.session() as s:
        other = make_account(s, uid, "Not primary")
        # A former primary's quotes are not the primary's.
        add_three(s, other.id, START)
    assert text(strip(alice)) == EMPTY

    with env.database.session() as s:
        make_account(s, uid, "Now primary", is_primary=True)
    html = strip(alice)
    assert text(html) == EMPTY and 'class="index-strip-empty"' in html and "<li" not in html


def test_strip_when_another_user_has_quotes_never_shows_them(env: WebEnv, alice: FlaskClient) -> None:
    with env.database.session() as s:
        bob = make_user(s, "bob")
        bobs = make_account(s, bob.id, "Bob primary", is_primary=True)
        add_three(s, bobs.id, START, scale="1.5")
    assert text(strip(alice)) == EMPTY

    uid = env.user("alice").id
    with env.database.session() as s:
        mine = make_account(s, uid, "Alpha main", is_primary=True)
        add_three(s, mine.id, START)
    html = strip(alice)
    assert "Bob primary" not in html and "39,158.03" not in html  # 26105.35 × 1.5 would be Bob's
    assert text(item(html, "NIFTY")).startswith("NIFTY 26,105.35 ")
    assert "Alpha main" in html


def test_strip_when_primary_is_inactive_shows_nothing_of_it(env: WebEnv, alice: FlaskClient) -> None:
    uid = env.user("alice").id
    with env.database.session() as s:
        off = make_account(s, uid, "Switched off", is_primary=True, is_active=False)
        add_three(s, off.id, START)
    assert text(strip(alice)) == EMPTY


def test_strip_when_signed_out_htmx_poll_gets_401_with_redirect_to_login(env: WebEnv) -> None:
    signed_in(env, "alice")
    client = env.client()
    response = client.get("/header/live", headers={"HX-Request": "true"})
    assert response.status_code == 401
    assert response.headers["HX-Redirect"] == "/login"
    plain = client.get("/header/live")
    assert plain.status_code == 302 and "/login" in plain.headers["Location"]


def test_strip_when_included_twice_in_a_page_reads_the_quotes_once(env: WebEnv) -> None:
    signed_in(env, "alice")
    uid = env.user("alice").id
    with env.database.session() as s:
        primary = make_account(s, uid, "Alpha main", is_primary=True)
        add_three(s, primary.id, START)
    user = SessionUser(env.user("alice"))  # what Flask-Login would have loaded for the request
    statements: list[str] = []

    def spy(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(env.database.engine, "before_cursor_execute", spy)
    try:
        with env.app.test_request_context("/"):
            g._login_user = user
            html = render_template_string(
                '{% include "_index_strip.html" %}|{% include "_index_strip.html" %}'
            )
    finally:
        event.remove(env.database.engine, "before_cursor_execute", spy)

    first, second = html.split("|")
    assert first == second and first.count("<li data-index=") == 3
    queries = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    # The market status beside the strip loads the process's trading calendar on its first use
    # (web/calendar_cache.py): those reads are the calendar's, once per process, not the strip's.
    calendar = ("app_settings", "trading_hours_templates", "trading_sessions", "market_holidays", "special_")
    strip = [q for q in queries if not any(f"FROM {table}" in q for table in calendar)]
    assert len(strip) == 1 and "index_quotes" in strip[0]


def test_strip_when_rendered_signed_out_is_empty(env: WebEnv) -> None:
    with env.app.test_request_context("/login"):
        assert render_template_string('{% include "_index_strip.html" %}').strip() == ""


def test_index_strip_when_called_directly_returns_rows_in_order_for_that_user_only(env: WebEnv) -> None:
    with env.database.session() as s:
        alice, bob = make_user(s, "alice"), make_user(s, "bob")
        a = make_account(s, alice.id, "Alpha main", is_primary=True)
        b = make_account(s, bob.id, "Bob primary", is_primary=True)
        add_quote(s, a.id, "SENSEX", "85000", "85100", START - timedelta(seconds=3))
        add_three(s, b.id, START)
        alice_id = alice.id
    with env.database.session_factory() as s:
        rows = index_strip(s, alice_id, START, stale_after=timedelta(seconds=10))
    assert [(r.symbol, r.ltp, r.change, r.change_pct, r.age_seconds, r.account_name) for r in rows] == [
        ("NIFTY", None, None, None, None, "Alpha main"),
        ("BANKNIFTY", None, None, None, None, "Alpha main"),
        ("SENSEX", Decimal("85000.0000"), Decimal("-100.0000"), Decimal("-0.12"), 3, "Alpha main"),
    ]


def test_index_row_when_previous_close_is_zero_has_no_percent() -> None:
    row = IndexRow("NIFTY", "NSE_INDEX", Decimal("10"), Decimal("0"), START, 0, "x")
    assert (row.change, row.change_pct, row.pct_text, row.sign_class) == (
        Decimal("10"),
        None,
        "—",
        "positive",
    )
