"""Margins pages (PRODUCT §9.4–9.5): the calculator's numbers and messages, and the tracker in every state,
on SQLite and PostgreSQL through the real app."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from algomirror.db.models import MarginRequirement, MarginTracker, TradeQuality
from tests.factories import make_account, make_funds
from tests.integration.web_support import START, WebEnv, make_env, signed_in


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> WebEnv:
    return make_env(db_url, tmp_path)


def _user_id(env: WebEnv, name: str) -> int:
    return env.user(name).id


def _calc(client: Any, **args: str) -> tuple[int, str]:
    response = client.get("/margins/", query_string=args)
    return response.status_code, response.get_data(as_text=True)


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).replace("&#39;", "'")


def test_seller_grade_single_sell_on_an_amount(env: WebEnv) -> None:
    client = signed_in(env, "alice")
    status, html = _calc(
        client, base_source="amount", amount="10,00,000", instrument="NIFTY", trade="single_sell", grade="A"
    )
    assert status == 200
    text = _text(html)
    # 95% of ₹10,00,000 = ₹9,50,000; other-day single sell ₹2,50,000 per lot → 3 lots, ₹7,50,000 used.
    assert "3 lots" in text
    assert "₹10,00,000.00 × 95.00% = ₹9,50,000.00" in text
    assert "⌊₹9,50,000.00 ÷ ₹2,50,000.00⌋ = 3" in text
    assert "3 × ₹2,50,000.00 = ₹7,50,000.00" in text
    assert "₹10,00,000.00 − ₹7,50,000.00 = ₹2,50,000.00" in text


def test_pair_sell_expiry_day_and_futures_use_their_columns(env: WebEnv) -> None:
    client = signed_in(env, "alice")
    _, html = _calc(
        client,
        base_source="amount",
        amount="1000000",
        instrument="SENSEX",
        trade="pair_sell",
        grade="B",
        expiry_day="y",
    )
    # 65% of 10 lakh = 6,50,000; SENSEX pair on expiry day 2,25,000 → 2 lots.
    assert "2 lots" in _text(html) and "₹2,25,000.00" in html
    _, html = _calc(
        client, base_source="amount", amount="1000000", instrument="NIFTY", trade="futures", grade="C"
    )
    # 36% = 3,60,000; futures 2,15,000 → 1 lot.
    assert "1 lot" in _text(html) and "₹2,15,000.00" in html


def test_cash_grade_sizes_option_buying_from_the_buyer_base_of_an_account(env: WebEnv) -> None:
    client = signed_in(env, "alice")
    uid = _user_id(env, "alice")
    with env.database.session() as s:
        s.add(
            TradeQuality(
                user_id=uid,
                quality_grade="BUY",
                margin_percentage=Decimal(50),
                source="cash",
                risk_level="moderate",
            )
        )
        account = make_account(s, uid, "Main", collateral_included=True)
        make_funds(s, account.id, available_cash=Decimal("300000.00"), collateral=Decimal("100000.00"))
        account_id = account.id
    status, html = _calc(
        client,
        base_source=str(account_id),
        instrument="NIFTY",
        trade="option_buy",
        grade="BUY",
        premium="12000",
    )
    assert status == 200
    text = _text(html)
    # Buyer base = 3,00,000 − 1,00,000 = 2,00,000; 50% = 1,00,000; ÷ 12,000 → 8 lots, 96,000 used.
    assert "8 lots" in text and "Main's buyer base" in text
    assert "8 × ₹12,000.00 = ₹96,000.00" in text
    # Without a premium the instrument's buying premium per lot (₹20,000) applies → 5 lots.
    _, html = _calc(client, base_source=str(account_id), instrument="NIFTY", trade="option_buy", grade="BUY")
    assert "5 lots" in _text(html)
    # A cash grade never sizes a SELL.
    _, html = _calc(client, base_source=str(account_id), instrument="NIFTY", trade="single_sell", grade="BUY")
    assert "cash (buyer) grade" in _text(html) and 'id="calc-answer"' not in html


def test_missing_margin_row_is_a_message_not_zero_lots(env: WebEnv) -> None:
    client = signed_in(env, "alice")
    uid = _user_id(env, "alice")
    with env.database.session() as s:
        s.execute(update(MarginRequirement).where(MarginRequirement.user_id == uid).values(is_active=False))
    status, html = _calc(client, base_source="amount", amount="100000", instrument="NIFTY", grade="A")
    text = _text(html)
    assert "no margin table rows" in text and 'id="calc-answer"' not in html
    assert status == 200


def test_bad_input_is_an_inline_error_naming_the_field(env: WebEnv) -> None:
    client = signed_in(env, "alice")
    for amount, words in (
        ("-5", "Amount must be at least ₹0"),
        ("lots", "Amount must be a number of rupees"),
        ("", "Enter an amount"),
        ("1.005", "at most two decimals"),
    ):
        status, html = _calc(client, base_source="amount", amount=amount, instrument="NIFTY", grade="A")
        assert status == 400, amount
        assert words in html and 'aria-invalid="true"' in html and 'id="calc-answer"' not in html
    status, html = _calc(client, base_source="amount", amount="100000", instrument="NIFTY", grade="Z")
    assert status == 400 and "Not a valid choice" in html


def test_another_users_account_is_not_a_choice(env: WebEnv) -> None:
    bob = signed_in(env, "bob")
    with env.database.session() as s:
        bobs_account = make_account(s, _user_id(env, "bob"), "Bob main").id
    alice = signed_in(env, "alice")
    status, _ = _calc(alice, base_source=str(bobs_account), instrument="NIFTY", grade="A")
    assert status == 400
    assert alice.get(f"/margins/tracker/{bobs_account}").status_code == 404
    assert bob.get(f"/margins/tracker/{bobs_account}").status_code == 200


def test_tracker_renders_every_state(env: WebEnv) -> None:
    client = signed_in(env, "alice")
    assert "No accounts yet" in client.get("/margins/tracker").get_data(as_text=True)
    uid = _user_id(env, "alice")
    with env.database.session() as s:
        fresh = make_account(s, uid, "Fresh")
        synced = make_account(s, uid, "Synced", collateral_included=False)
        make_funds(s, synced.id, available_cash=Decimal("250000.00"), collateral=Decimal("50000.00"))
        s.add(
            MarginTracker(
                account_id=synced.id,
                total_available_margin=Decimal("300000.00"),
                used_margin=Decimal("12000.00"),
                free_margin=Decimal("60000.00"),
                # Two runs' entries still going in (domain.reservations' shape).
                allocated_margins={
                    "run:12": {"amount": "160000.00", "reserved_at": START.isoformat(), "entered_at": None},
                    "run:14": {"amount": "80000.00", "reserved_at": START.isoformat(), "entered_at": None},
                },
                last_updated=START - timedelta(seconds=42),
                update_count=7,
            )
        )
        ids = fresh.id, synced.id
    response = client.get("/margins/tracker")
    assert response.status_code == 200
    text = _text(response.get_data(as_text=True))
    assert "not synced yet" in text
    # Collateral left out of available cash: seller base adds it (3,00,000), buyer base is the cash.
    assert "₹3,00,000.00" in text and "₹2,50,000.00" in text and "₹12,000.00" in text
    assert "42 s ago" in text and "collateral not in available cash" in text
    # Reserved: ₹2,40,000 by runs 12 and 14, so ₹60,000 free.
    assert "₹2,40,000.00" in text and "run 12, run 14" in text and "₹60,000.00" in text
    one = client.get(f"/margins/tracker/{ids[1]}")
    assert one.status_code == 200 and "Fresh" not in one.get_data(as_text=True)
    with env.database.session() as s:
        assert s.scalar(select(MarginTracker.update_count).where(MarginTracker.account_id == ids[1])) == 7
