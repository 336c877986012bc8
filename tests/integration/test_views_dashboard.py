"""Dashboard and account overview: totals, cards (role, status, data age, stale warning), NULL funds,
live fragment, users without accounts, connection history."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from algomirror.web import queries
from algomirror.web.context import log_activity
from tests.factories import make_account, make_funds, make_order, make_position
from tests.integration.web_support import START, WebEnv, make_env, signed_in


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> WebEnv:
    return make_env(db_url, tmp_path)


@pytest.fixture
def alice(env: WebEnv) -> FlaskClient:
    return signed_in(env, "alice")


def _card(html: str, account_id: int) -> str:
    return html.split(f'data-account-id="{account_id}"', 1)[1].split("</li>", 1)[0]


def _text(fragment: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", fragment)).strip()


def _total(html: str, key: str) -> str:
    return _text(html.split(f'data-total="{key}">', 1)[1].split("</dd>", 1)[0])


def _field(card: str, key: str) -> str:
    return _text(card.split(f'data-field="{key}">', 1)[1].split("</dd>", 1)[0])


def test_dashboard_when_user_has_no_accounts_redirects_to_add_account(alice: FlaskClient) -> None:
    response = alice.get("/")
    assert response.status_code == 303
    assert response.headers["Location"].endswith("/accounts/new")


def test_dashboard_when_signed_out_redirects_to_login(env: WebEnv) -> None:
    signed_in(env, "alice")  # a user exists, so the landing page is the login
    assert env.client().get("/").headers["Location"].endswith("/login")
    assert env.client().get("/dashboard/live").status_code == 302


def test_dashboard_when_three_accounts_totals_are_exact_and_counts_open_items(
    env: WebEnv, alice: FlaskClient
) -> None:
    uid = env.user("alice").id
    with env.database.session() as s:
        a = make_account(s, uid, "Alpha", is_primary=True, last_sync_at=START)
        b = make_account(s, uid, "Beta", last_sync_at=START)
        c = make_account(s, uid, "Gamma", last_sync_at=START)
        make_funds(
            s,
            a.id,
            available_cash=Decimal("0.10"),
            collateral=Decimal("100000.00"),
            utilised_debits=Decimal("12345.67"),
            m2m_realized=Decimal("-0.10"),
            m2m_unrealized=Decimal("1500.25"),
        )
        make_funds(
            s,
            b.id,
            available_cash=Decimal("0.20"),
            collateral=Decimal("0.00"),
            utilised_debits=Decimal("0.33"),
            m2m_realized=Decimal("0.30"),
            m2m_unrealized=Decimal("-2000.50"),
        )
        make_funds(
            s,
            c.id,
            available_cash=Decimal("9876543.21"),
            collateral=None,
            utilised_debits=Decimal("0"),
            m2m_realized=Decimal("0"),
            m2m_unrealized=Decimal("0"),
        )
        make_position(s, a.id, "P1", quantity=75)
        make_position(s, a.id, "P2", quantity=0)  # closed: not open
        make_position(s, b.id, "P3", quantity=-65)
        make_order(s, a.id, "1", status="open")
        make_order(s, b.id, "2", status="trigger_pending")
        make_order(s, c.id, "3", status="complete")
        ids = (a.id, b.id, c.id)
    html = alice.get("/").get_data(as_text=True)
    assert _total(html, "available_cash") == "₹98,76,543.51"
    assert _total(html, "collateral") == "₹1,00,000.00*"
    assert _total(html, "utilised") == "₹12,346.00"
    assert _total(html, "m2m_realized") == "₹0.20"
    assert _total(html, "m2m_unrealized") == "-₹500.25"
    assert _total(html, "open_positions") == "2"
    assert _total(html, "open_orders") == "2"
    assert _field(_card(html, ids[0]), "open_positions") == "1"
    assert _field(_card(html, ids[2]), "collateral") == "—"
    assert 'hx-get="/dashboard/live"' in html and 'hx-trigger="every 3s"' in html


def test_dashboard_when_accounts_listed_roles_follow_creation_order(env: WebEnv, alice: FlaskClient) -> None:
    uid = env.user("alice").id
    with env.database.session() as s:
        first = make_account(s, uid, "First")
        primary = make_account(s, uid, "Chosen", is_primary=True)
        off = make_account(s, uid, "Off", is_active=False)
        last = make_account(s, uid, "Last")
        ids = (first.id, primary.id, off.id, last.id)
    html = alice.get("/dashboard/live").get_data(as_text=True)
    roles = [_text(_card(html, i).split("data-role>", 1)[1].split("</span>", 1)[0]) for i in ids]
    assert roles == ["Backup 1", "Primary", "Inactive", "Backup 2"]


def test_dashboard_when_data_older_than_two_intervals_warns_stale(env: WebEnv, alice: FlaskClient) -> None:
    # START is Mon 23 Nov 2026 09:30 IST: market open, sync every 5 s, stale after 10 s.
    uid = env.user("alice").id
    with env.database.session() as s:
        fresh = make_account(s, uid, "Fresh", is_primary=True, last_sync_at=START - timedelta(seconds=4))
        old = make_account(s, uid, "Old", last_sync_at=START - timedelta(seconds=11))
        never = make_account(s, uid, "Never", connection_status="error", last_error="timed out after 8 s")
        ids = (fresh.id, old.id, never.id)
    html = alice.get("/dashboard/live").get_data(as_text=True)
    assert "Market open" in alice.get("/").get_data(as_text=True)
    fresh_card, old_card, never_card = (_card(html, i) for i in ids)
    assert "updated 4 s ago" in _text(fresh_card) and "stale" not in fresh_card
    assert (
        "updated 11 s ago · stale" in _text(old_card)
        and "is-stale" in html.split(f'data-account-id="{ids[1]}"')[0][-80:]
    )
    assert "never synced" in _text(never_card) and "timed out after 8 s" in never_card
    assert "2 account(s) have data older than two sync intervals" in html
    env.clock.advance(timedelta(seconds=7))
    later = alice.get("/dashboard/live").get_data(as_text=True)
    assert "updated 11 s ago · stale" in _text(_card(later, ids[0]))


def test_dashboard_when_market_closed_uses_closed_interval(env: WebEnv) -> None:
    # Sat 28 Nov 2026 12:00 IST: closed, sync every 60 s, stale only after 120 s.
    env.clock.set(START + timedelta(days=5, hours=2, minutes=30))
    alice = signed_in(env, "alice")
    uid = env.user("alice").id
    with env.database.session() as s:
        make_account(s, uid, "Weekend", is_primary=True, last_sync_at=env.clock.now() - timedelta(seconds=90))
    page = alice.get("/").get_data(as_text=True)
    assert "Market closed · next session Mon 30 Nov 09:15 IST" in page
    assert "updated 1 min ago" in _text(page) and "is-stale" not in page


def test_dashboard_totals_when_every_value_unknown_shows_dash(env: WebEnv) -> None:
    with env.database.session() as s:
        user = signed_in(env, "bob") and env.user("bob")
        account = make_account(s, user.id, "Empty", is_primary=True)
        make_funds(s, account.id, available_cash=None)
    with env.database.session_factory() as s:
        cards = queries.account_cards(s, user.id, now=START, stale_after=timedelta(seconds=10))
    totals = queries.dashboard_totals(cards)
    assert totals.available_cash.value is None and totals.available_cash.unknown == 1
    assert totals.collateral.value == Decimal("0.00")


def test_overview_when_account_has_history_shows_funds_positions_orders_and_events(
    env: WebEnv, alice: FlaskClient
) -> None:
    uid = env.user("alice").id
    with env.database.session() as s:
        account = make_account(s, uid, "Solo", is_primary=True, last_sync_at=START)
        other = make_account(s, uid, "Other")
        make_funds(s, account.id, available_cash=Decimal("4321.09"))
        make_position(s, account.id, "NIFTY01DEC2626000CE", pnl=Decimal("-12.34"))
        make_position(s, other.id, "OTHERSYMBOL", pnl=Decimal("1"))
        make_order(s, account.id, "OID-77", status="open")
        log_activity(s, "connection_lost", user_id=uid, account_id=account.id, details="timeout")
        log_activity(s, "connection_restored", user_id=uid, account_id=account.id)
        log_activity(s, "login_success", user_id=uid, account_id=account.id)
        aid = account.id
    page = alice.get(f"/accounts/{aid}/overview").get_data(as_text=True)
    assert "₹4,321.09" in page and "NIFTY01DEC2626000CE" in page and "OID-77" in page
    assert "OTHERSYMBOL" not in page
    assert "connection lost" in page and "connection restored" in page and "login success" not in page
    assert f'action="/accounts/{aid}/test"' in page
    live = alice.get(f"/accounts/{aid}/overview/live").get_data(as_text=True)
    assert "<html" not in live and "-₹12.34" in live
    # The account page links here.
    assert f'href="/accounts/{aid}/overview"' in alice.get(f"/accounts/{aid}").get_data(as_text=True)


def test_dashboard_when_market_clock_given_judges_market_hours_by_it(env: WebEnv) -> None:
    # Demo mode: the wall clock says Saturday, the paper exchange's simulated clock says Monday 09:30 IST.
    from algomirror.domain.timeutil import FakeClock

    env.clock.set(START + timedelta(days=5, hours=2, minutes=30))
    alice = signed_in(env, "alice")
    uid = env.user("alice").id
    with env.database.session() as s:
        make_account(s, uid, "Demo", is_primary=True, last_sync_at=env.clock.now() - timedelta(seconds=3))
    assert "Market closed" in alice.get("/").get_data(as_text=True)
    market = FakeClock(START)
    env.app.extensions["algomirror"].market_clock = market
    with env.database.session() as s:
        # The demo's engine stamps its rows by the market clock too: one clock for every time shown.
        make_account(s, uid, "Demo 2", last_sync_at=market.now() - timedelta(seconds=7))
    page = alice.get("/").get_data(as_text=True)
    assert "Market open · closes 15:30 IST" in page
    text = _text(page)
    assert "updated 7 s ago" in text
    # The header and the "as of" line say which clock it is.
    assert "Demo market 09:30 IST" in text
    assert "As of 09:30:00 IST on the demo market clock" in text
