"""Sizing settings pages (PRODUCT §9.1, §9.2, §10): edits validated field by field (nothing changed on a
bad one), another user's rows 404, activity rows, and a change used by the engine's next command."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from algomirror.db import sizing_edits as edits
from algomirror.db.instrument_settings import effective_settings
from algomirror.db.models import ActivityLog, Strategy
from algomirror.db.models.sizing import (
    MarginRequirement,
    TradeQuality,
    TradingSetting,
    TradingSettingRevision,
)
from tests.integration.resolution_support import STRADDLE, preview, resolution_world, rows_of
from tests.integration.web_support import WebEnv, make_env, post_form, signed_in
from tests.sim_fixtures import SimHandle


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> WebEnv:
    return make_env(db_url, tmp_path)


def _setting(env: WebEnv, user: str, symbol: str) -> TradingSetting:
    with env.database.session_factory() as s:
        row = s.scalar(
            select(TradingSetting).where(
                TradingSetting.user_id == env.user(user).id, TradingSetting.symbol == symbol
            )
        )
        assert row is not None
        s.expunge(row)
        return row


def _post(client: FlaskClient, path: str, data: dict[str, Any]) -> Any:
    return post_form(client, path, data, page="/sizing/")


def _actions(env: WebEnv, user: str) -> list[tuple[str, str | None]]:
    with env.database.session_factory() as s:
        return [
            (a.action, a.details)
            for a in s.scalars(
                select(ActivityLog)
                .where(ActivityLog.user_id == env.user(user).id, ActivityLog.action.like("sizing_%"))
                .order_by(ActivityLog.id)
            )
        ]


def test_page_renders_the_seeded_defaults(env: WebEnv) -> None:
    client = signed_in(env, "alice")
    html = client.get("/sizing/").get_data(as_text=True)
    assert "NIFTY" in html and "BANKNIFTY" in html and "SENSEX" in html
    # NIFTY lot 65 with freeze 1,800 slices at 27 lots = 1,755.
    assert "27 lots · 1,755" in html
    assert "(system)" in html


def test_instrument_edit_saves_and_logs(env: WebEnv) -> None:
    client = signed_in(env, "alice")
    row = _setting(env, "alice", "BANKNIFTY")
    response = _post(
        client,
        f"/sizing/instruments/{row.id}",
        {"lot_size": "30", "next_month_lot_size": "35", "freeze_quantity": "900", "is_active": "y"},
    )
    assert response.status_code == 303
    saved = _setting(env, "alice", "BANKNIFTY")
    assert (saved.freeze_quantity, saved.next_month_lot_size, saved.max_lots_per_order) == (900, 35, 30)
    assert _actions(env, "alice")[-1] == (
        "sizing_setting_changed",
        "Instrument BANKNIFTY: next-month lot size: 30 → 35; freeze quantity: 600 → 900;"
        " max lots per order: 20 → 30",
    )


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"lot_size": "0"}, "lot_size", "Lot size must be from 1 to 1,000"),
        ({"lot_size": "abc"}, "lot_size", "whole number"),
        ({"freeze_quantity": "20"}, "freeze_quantity", "below the lot size"),
        ({"freeze_quantity": "60000"}, "freeze_quantity", "from 1 to 50,000"),
        ({"next_month_lot_size": "1001"}, "next_month_lot_size", "Next-month lot size must be from 1"),
    ],
)
def test_bad_instrument_input_changes_nothing(
    env: WebEnv, fields: dict[str, str], field: str, words: str
) -> None:
    client = signed_in(env, "alice")
    row = _setting(env, "alice", "NIFTY")
    data = {"lot_size": "65", "freeze_quantity": "1800", "confirm_slice": "y", "is_active": "y", **fields}
    response = _post(client, f"/sizing/instruments/{row.id}", data)
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert words in html and f'id="setting-{row.id}-{field}-error"' in html
    after = _setting(env, "alice", "NIFTY")
    assert (after.lot_size, after.freeze_quantity, after.next_month_lot_size) == (65, 1800, 65)
    assert _actions(env, "alice") == []


def test_freeze_not_a_multiple_of_the_lot_needs_confirmation(env: WebEnv) -> None:
    client = signed_in(env, "alice")
    row = _setting(env, "alice", "SENSEX")
    data = {"lot_size": "20", "freeze_quantity": "1010", "is_active": "y"}
    response = _post(client, f"/sizing/instruments/{row.id}", data)
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "1,010 is not a multiple of lot 20: orders will be sliced at 1,000 (50 lots)" in html
    assert 'name="confirm_slice"' in html
    assert _setting(env, "alice", "SENSEX").freeze_quantity == 1000
    response = _post(client, f"/sizing/instruments/{row.id}", {**data, "confirm_slice": "y"})
    assert response.status_code == 303
    assert _setting(env, "alice", "SENSEX").freeze_quantity == 1010


def test_another_users_rows_are_404(env: WebEnv) -> None:
    signed_in(env, "bob")
    bob_row = _setting(env, "bob", "NIFTY")
    with env.database.session_factory() as s:
        bob_grade = s.scalar(select(TradeQuality.id).where(TradeQuality.user_id == env.user("bob").id))
        bob_margin = s.scalar(
            select(MarginRequirement.id).where(MarginRequirement.user_id == env.user("bob").id)
        )
    alice = signed_in(env, "alice")
    data = {"lot_size": "1", "freeze_quantity": "1", "is_active": "y"}
    assert _post(alice, f"/sizing/instruments/{bob_row.id}", data).status_code == 404
    assert _post(alice, f"/sizing/margins/{bob_margin}", {}).status_code == 404
    assert _post(alice, f"/sizing/grades/{bob_grade}", {}).status_code == 404
    assert alice.get(f"/sizing/grades/{bob_grade}/delete").status_code == 404
    assert _setting(env, "bob", "NIFTY").lot_size == 65


def test_grades_add_edit_refuse_and_delete(env: WebEnv) -> None:
    client = signed_in(env, "alice")
    base = {"risk_level": "moderate", "source": "available", "description": "half"}
    over = _post(client, "/sizing/grades/new", {**base, "quality_grade": "H", "margin_percentage": "101"})
    assert over.status_code == 400 and "must not exceed 100 %" in over.get_data(as_text=True)
    assert (
        _post(
            client, "/sizing/grades/new", {**base, "quality_grade": "H", "margin_percentage": "50"}
        ).status_code
        == 303
    )
    dup = _post(client, "/sizing/grades/new", {**base, "quality_grade": "H", "margin_percentage": "50"})
    assert dup.status_code == 400 and "exists already" in dup.get_data(as_text=True)
    uid = env.user("alice").id
    with env.database.session_factory() as s:
        grades = {
            g.quality_grade: g.id for g in s.scalars(select(TradeQuality).where(TradeQuality.user_id == uid))
        }
    # A system grade is not deletable; a grade in use is not either.
    assert "cannot be deleted" in client.get(f"/sizing/grades/{grades['A']}/delete").get_data(as_text=True)
    refused = _post(client, f"/sizing/grades/{grades['A']}/delete", {})
    assert refused.status_code == 303
    with env.database.session() as s:
        s.add(Strategy(user_id=uid, name="Iron H", risk_profile="grade_H"))
    page = client.get(f"/sizing/grades/{grades['H']}/delete").get_data(as_text=True)
    assert "Iron H" in page
    _post(client, f"/sizing/grades/{grades['H']}/delete", {})
    with env.database.session_factory() as s:
        left = set(s.scalars(select(TradeQuality.quality_grade).where(TradeQuality.user_id == uid)))
        assert {"A", "H"} <= left
        s.query(Strategy).filter(Strategy.user_id == uid).delete()
        s.commit()
    assert _post(client, f"/sizing/grades/{grades['H']}/delete", {}).status_code == 303
    with env.database.session_factory() as s:
        assert "H" not in set(
            s.scalars(select(TradeQuality.quality_grade).where(TradeQuality.user_id == uid))
        )
    assert [a for a, _ in _actions(env, "alice")] == ["sizing_grade_added", "sizing_grade_deleted"]


def test_margin_edit_refuses_bad_figures_and_resets(env: WebEnv) -> None:
    client = signed_in(env, "alice")
    uid = env.user("alice").id
    with env.database.session_factory() as s:
        row = s.scalar(
            select(MarginRequirement).where(
                MarginRequirement.user_id == uid, MarginRequirement.instrument == "NIFTY"
            )
        )
        assert row is not None
        good = {
            "ce_pe_sell_expiry": "210000",
            "ce_pe_sell_non_expiry": "250000",
            "ce_and_pe_sell_expiry": "250000",
            "ce_and_pe_sell_non_expiry": "320000",
            "futures_expiry": "215000",
            "futures_non_expiry": "215000",
            "buying_premium_per_lot": "20000",
            "is_active": "y",
        }
        row_id = row.id
    bad = _post(client, f"/sizing/margins/{row_id}", {**good, "futures_expiry": "-1"})
    assert bad.status_code == 400 and "must be above 0" in bad.get_data(as_text=True)
    assert _post(client, f"/sizing/margins/{row_id}", good).status_code == 303
    with env.database.session_factory() as s:
        assert s.get(MarginRequirement, row_id).ce_pe_sell_expiry == Decimal("210000")  # type: ignore[union-attr]
    assert _post(client, "/sizing/margins/reset", {}).status_code == 303
    with env.database.session_factory() as s:
        nifty = s.scalar(
            select(MarginRequirement).where(
                MarginRequirement.user_id == uid, MarginRequirement.instrument == "NIFTY"
            )
        )
        assert nifty is not None and nifty.ce_pe_sell_expiry == Decimal("205000")


def test_csrf_is_required(env: WebEnv) -> None:
    client = signed_in(env, "alice")
    row = _setting(env, "alice", "NIFTY")
    response = client.post(
        f"/sizing/instruments/{row.id}", data={"lot_size": "75", "freeze_quantity": "1800"}
    )
    assert response.status_code == 400
    assert _setting(env, "alice", "NIFTY").lot_size == 65


async def test_a_grade_saved_through_the_edits_is_used_by_the_next_preview(
    db_url: str, simulator_session: SimHandle
) -> None:
    """The resolver keeps running between the two previews: the change reaches it without a restart."""
    world = resolution_world(db_url, simulator_session, STRADDLE, accounts=1, risk_profile="grade_B")
    first = await preview(world, token="pv-before")
    account = first["accounts"][0]
    funds = Decimal(account["available_funds"])
    assert rows_of(first)[(1, world.account_ids[0])]["lots"] == int(funds * Decimal("0.65") // 320000)
    with world.database.session() as s:
        grade = s.scalar(
            select(TradeQuality).where(
                TradeQuality.user_id == world.user_id, TradeQuality.quality_grade == "B"
            )
        )
        assert grade is not None
        edits.update_grade(
            grade,
            {"margin_percentage": "20", "risk_level": "moderate", "source": "available", "is_active": "y"},
        )
    second = await preview(world, token="pv-after")
    assert rows_of(second)[(1, world.account_ids[0])]["lots"] == int(funds * Decimal("0.20") // 320000)


def test_revisions_take_effect_on_their_date(env: WebEnv) -> None:
    client = signed_in(env, "alice")
    row = _setting(env, "alice", "NIFTY")
    uid = env.user("alice").id
    bad = _post(
        client, f"/sizing/instruments/{row.id}/revisions", {"effective_from": "1 Jan", "lot_size": "75"}
    )
    html = bad.get_data(as_text=True)
    assert (
        bad.status_code == 400
        and "Effective date must be a date" in html
        and "Freeze quantity is required" in html
    )
    data = {"effective_from": "2027-01-01", "lot_size": "75", "freeze_quantity": "1800"}
    assert _post(client, f"/sizing/instruments/{row.id}/revisions", data).status_code == 303
    later = {"effective_from": "2027-06-01", "lot_size": "50", "freeze_quantity": "1800"}
    assert _post(client, f"/sizing/instruments/{row.id}/revisions", later).status_code == 303
    dup = _post(client, f"/sizing/instruments/{row.id}/revisions", data)
    assert dup.status_code == 400 and "already has a revision on 2027-01-01" in dup.get_data(as_text=True)
    with env.database.session_factory() as s:
        assert effective_settings(s, uid, date(2026, 12, 31))["NIFTY"].lot_size == 65
        on = effective_settings(s, uid, date(2027, 1, 1))["NIFTY"]
        assert (on.lot_size, on.max_lots_per_order, on.effective_from) == (75, 24, date(2027, 1, 1))
        assert effective_settings(s, uid, date(2027, 7, 1))["NIFTY"].lot_size == 50
        assert effective_settings(s, uid, date(2027, 7, 1))["BANKNIFTY"].effective_from is None
        first = s.scalar(
            select(TradingSettingRevision.id).where(TradingSettingRevision.effective_from == date(2027, 1, 1))
        )
    bob = signed_in(env, "bob")
    assert _post(bob, f"/sizing/revisions/{first}/delete", {}).status_code == 404
    assert _post(bob, f"/sizing/instruments/{row.id}/revisions", later).status_code == 404
    assert _post(client, f"/sizing/revisions/{first}/delete", {}).status_code == 303
    with env.database.session_factory() as s:
        assert effective_settings(s, uid, date(2027, 2, 1))["NIFTY"].lot_size == 65
    assert [a for a, _ in _actions(env, "alice")] == [
        "sizing_revision_added",
        "sizing_revision_added",
        "sizing_revision_deleted",
    ]


# --- review regressions (issue 14): revisions in force, reset, bad digits, grades in use, freeze rules


def _add_revision(env: WebEnv, setting_id: int, day: date, lot: int, freeze: int) -> int:
    with env.database.session() as s:
        row = TradingSettingRevision(
            setting_id=setting_id,
            effective_from=day,
            lot_size=lot,
            freeze_quantity=freeze,
            max_lots_per_order=edits.slice_of(lot, freeze)[0],
        )
        s.add(row)
        s.flush()
        return row.id


def _in_force(env: WebEnv, user: str, symbol: str) -> Any:
    with env.database.session_factory() as s:
        # The web clock's IST date (web_support.START: 23 Nov 2026).
        return effective_settings(s, env.user(user).id, date(2026, 11, 23))[symbol]


def test_a_base_row_edit_is_refused_while_a_revision_is_in_force(env: WebEnv) -> None:
    client = signed_in(env, "alice")
    row = _setting(env, "alice", "NIFTY")
    _add_revision(env, row.id, date(2026, 1, 1), 75, 1800)
    html = client.get("/sizing/").get_data(as_text=True)
    # The table shows the figures in force today and names their revision.
    assert "from the revision dated 2026-01-01" in html
    assert f'id="setting-{row.id}-lot_size" form="setting-{row.id}" name="lot_size"' in html
    assert 'name="lot_size" type="text" inputmode="numeric" size="5" value="75"' in html
    assert "24 lots · 1,800" in html
    data = {"lot_size": "70", "freeze_quantity": "1800", "confirm_slice": "y", "is_active": "y"}
    refused = _post(client, f"/sizing/instruments/{row.id}", data)
    text = refused.get_data(as_text=True)
    assert refused.status_code == 400
    assert "A revision dated 2026-01-01 is in force: add a revision dated today, or delete that one." in text
    assert f'id="setting-{row.id}-in_force-error"' in text
    after = _setting(env, "alice", "NIFTY")
    assert (after.lot_size, after.freeze_quantity, after.is_active) == (65, 1800, True)
    assert (_in_force(env, "alice", "NIFTY").lot_size, _actions(env, "alice")) == (75, [])
    # The figures shown, unchanged, save the row's own active flag only.
    off = {"lot_size": "75", "freeze_quantity": "1800", "is_active_present": "1"}
    assert _post(client, f"/sizing/instruments/{row.id}", off).status_code == 303
    after = _setting(env, "alice", "NIFTY")
    assert (after.lot_size, after.is_active) == (65, False)
    # Without a revision in force (a scheduled one does not count) the edit reaches the engine's view.
    bank = _setting(env, "alice", "BANKNIFTY")
    _add_revision(env, bank.id, date(2027, 1, 1), 35, 700)
    data = {"lot_size": "30", "next_month_lot_size": "30", "freeze_quantity": "900", "is_active": "y"}
    assert _post(client, f"/sizing/instruments/{bank.id}", data).status_code == 303
    now = _in_force(env, "alice", "BANKNIFTY")
    assert (now.freeze_quantity, now.max_lots_per_order, now.effective_from) == (900, 30, None)


def test_reset_to_defaults_keeps_row_ids_and_revisions(env: WebEnv) -> None:
    client = signed_in(env, "alice")
    uid = env.user("alice").id
    with env.database.session_factory() as s:
        ids_before = {
            r.symbol: r.id for r in s.scalars(select(TradingSetting).where(TradingSetting.user_id == uid))
        }
    nifty = ids_before["NIFTY"]
    data = {"lot_size": "75", "freeze_quantity": "1800", "confirm_slice": "y", "is_active": "y"}
    assert _post(client, f"/sizing/instruments/{nifty}", data).status_code == 303
    revision = _add_revision(env, nifty, date(2027, 1, 1), 50, 1800)
    assert _post(client, "/sizing/instruments/reset", {}).status_code == 303
    with env.database.session_factory() as s:
        rows = {r.symbol: r for r in s.scalars(select(TradingSetting).where(TradingSetting.user_id == uid))}
        assert {k: r.id for k, r in rows.items()} == ids_before
        assert (rows["NIFTY"].lot_size, rows["NIFTY"].max_lots_per_order) == (65, 27)
        assert s.get(TradingSettingRevision, revision) is not None
    assert _actions(env, "alice")[-1] == (
        "sizing_settings_reset",
        "Instrument settings reset to defaults: NIFTY: lot size: 75 → 65;"
        " NIFTY: next-month lot size: None → 65; NIFTY: max lots per order: 24 → 27",
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("lot_size", "6²"),
        ("lot_size", "٦٥"),
        ("next_month_lot_size", "6⁵"),
        ("freeze_quantity", "1800²"),
    ],
)
@pytest.mark.parametrize("form", ["setting", "revision"])
def test_non_ascii_digits_are_a_field_error(env: WebEnv, form: str, field: str, value: str) -> None:
    client = signed_in(env, "alice")
    row = _setting(env, "alice", "SENSEX")
    data = {"effective_from": "2027-01-01", "lot_size": "20", "freeze_quantity": "1000", "is_active": "y"}
    data[field] = value
    path = f"/sizing/instruments/{row.id}" + ("/revisions" if form == "revision" else "")
    response = _post(client, path, data)
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "must be a whole number" in html and f'id="{form}-{row.id}-{field}-error"' in html
    after = _setting(env, "alice", "SENSEX")
    assert (after.lot_size, after.next_month_lot_size, after.freeze_quantity) == (20, 20, 1000)
    with env.database.session_factory() as s:
        assert s.scalar(select(TradingSettingRevision.id)) is None
    assert _actions(env, "alice") == []


def _grade(env: WebEnv, user: str, name: str) -> TradeQuality:
    with env.database.session_factory() as s:
        row = s.scalar(
            select(TradeQuality).where(
                TradeQuality.user_id == env.user(user).id, TradeQuality.quality_grade == name
            )
        )
        assert row is not None
        s.expunge(row)
        return row


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"is_active_present": "1"}, "is_active", "to switch it off"),
        ({"is_active": "y", "source": "cash"}, "source", "to change its source"),
    ],
)
def test_a_grade_in_use_keeps_its_source_and_stays_on(
    env: WebEnv, change: dict[str, str], field: str, words: str
) -> None:
    client = signed_in(env, "alice")
    uid = env.user("alice").id
    with env.database.session() as s:
        s.add_all(
            [
                Strategy(user_id=uid, name="Straddle B", risk_profile="grade_B"),
                Strategy(user_id=uid, name="Condor B", risk_profile="grade_B"),
            ]
        )
    grade = _grade(env, "alice", "B")
    base = {"margin_percentage": str(grade.margin_percentage), "risk_level": grade.risk_level or "moderate"}
    data = {**base, "source": grade.source, "description": grade.description or "", **change}
    response = _post(client, f"/sizing/grades/{grade.id}", data)
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert f'id="grade-{grade.id}-{field}-error"' in html
    assert f"Grade B is used by Condor B, Straddle B: change those strategies first {words}." in html
    after = _grade(env, "alice", "B")
    assert (after.is_active, after.source) == (True, grade.source)
    assert _actions(env, "alice") == []
    # A grade no strategy uses can be switched off and rebased.
    c = _grade(env, "alice", "C")
    free = {**data, "margin_percentage": str(c.margin_percentage), **change}
    assert _post(client, f"/sizing/grades/{c.id}", free).status_code == 303


@pytest.mark.parametrize("form", ["setting", "revision"])
def test_freeze_below_the_next_month_lot_is_refused(env: WebEnv, form: str) -> None:
    client = signed_in(env, "alice")
    row = _setting(env, "alice", "BANKNIFTY")
    data = {
        "effective_from": "2027-01-01",
        "lot_size": "30",
        "next_month_lot_size": "700",
        "freeze_quantity": "600",
        "is_active": "y",
    }
    path = f"/sizing/instruments/{row.id}" + ("/revisions" if form == "revision" else "")
    response = _post(client, path, data)
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "Freeze quantity 600 is below the next-month lot size 700." in html
    assert f'id="{form}-{row.id}-freeze_quantity-error"' in html
    assert _setting(env, "alice", "BANKNIFTY").next_month_lot_size == 30
    with env.database.session_factory() as s:
        assert s.scalar(select(TradingSettingRevision.id)) is None


def test_an_unchanged_lot_and_freeze_need_no_slice_confirmation(env: WebEnv) -> None:
    client = signed_in(env, "alice")
    row = _setting(env, "alice", "NIFTY")  # seeded 65 / 1,800: not a whole number of lots
    data = {"lot_size": "65", "next_month_lot_size": "75", "freeze_quantity": "1800", "is_active": "y"}
    assert _post(client, f"/sizing/instruments/{row.id}", data).status_code == 303
    assert _setting(env, "alice", "NIFTY").next_month_lot_size == 75
    # A changed freeze that is not a whole number of lots still asks.
    asked = _post(client, f"/sizing/instruments/{row.id}", {**data, "freeze_quantity": "1700"})
    assert asked.status_code == 400 and "not a multiple of lot 65" in asked.get_data(as_text=True)


def test_a_form_without_the_active_box_leaves_the_flag(env: WebEnv) -> None:
    client = signed_in(env, "alice")
    row = _setting(env, "alice", "SENSEX")
    html = client.get("/sizing/").get_data(as_text=True)
    assert f'form="setting-{row.id}" name="is_active_present" value="1"' in html
    data = {"lot_size": "20", "freeze_quantity": "1200"}
    assert _post(client, f"/sizing/instruments/{row.id}", data).status_code == 303
    after = _setting(env, "alice", "SENSEX")
    assert (after.freeze_quantity, after.is_active) == (1200, True)
    # The page's form carries the marker: an unticked box there switches the row off.
    off = {**data, "is_active_present": "1"}
    assert _post(client, f"/sizing/instruments/{row.id}", off).status_code == 303
    assert _setting(env, "alice", "SENSEX").is_active is False
