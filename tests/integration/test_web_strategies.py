"""The strategy builder through its pages: create with legs, every validation rule in one reply, other
users' accounts and strategies, edit, clone, (de)activate, delete/archive/refuse, templates."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from algomirror.db.models import Strategy, StrategyLeg, StrategyRun
from tests.factories import make_account
from tests.integration.web_support import START, WebEnv, make_env, post_form, signed_in

NEW = "/strategies/new"


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> WebEnv:
    web = make_env(db_url, tmp_path)
    yield web
    web.database.dispose()


@pytest.fixture
def alice(env: WebEnv) -> FlaskClient:
    return signed_in(env, "alice")


def account(env: WebEnv, username: str, name: str, **fields: Any) -> int:
    with env.database.session() as s:
        row = make_account(s, env.user(username).id, name, **fields)
        s.commit()
        return row.id


def leg(index: int, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "instrument": "NIFTY",
        "option_type": "CE",
        "expiry": "current_week",
        "action": "SELL",
        "strike_selection": "ATM",
        "order_type": "MARKET",
        "lots": "1",
        "trailing_type": "points",
    }
    row.update(values)
    return {f"legs-{index}-{key}": value for key, value in row.items()}


def strategy_form(name: str, *legs: dict[str, Any], **over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": name,
        "description": "",
        "market_condition": "any",
        "risk_profile": "fixed_lots",
        "allocation_type": "equal",
        "product_order_type": "MIS",
        "entry_time": "09:20",
        "exit_time": "15:00",
        "square_off_time": "15:15",
        "trailing_sl_type": "percentage",
        "auto_exit_on_max_loss": "y",
        "auto_exit_on_max_profit": "y",
        "risk_monitoring_enabled": "y",
        "risk_scope": "aggregate",
        "on_leg_failure": "unwind",
        "supertrend_period": "7",
        "supertrend_multiplier": "3.0",
        "supertrend_timeframe": "5m",
    }
    for row in legs or (leg(0),):
        data.update(row)
    data.update(over)
    return data


def save(client: FlaskClient, data: dict[str, Any], path: str = NEW) -> Any:
    return post_form(client, path, data, page=NEW)


def strategies(env: WebEnv, username: str = "alice") -> list[Strategy]:
    with env.database.session_factory() as s:
        rows = s.scalars(
            select(Strategy).where(Strategy.user_id == env.user(username).id).order_by(Strategy.id)
        ).all()
        for row in rows:
            _ = list(row.legs)
        s.expunge_all()
        return list(rows)


def only(env: WebEnv, name: str) -> Strategy:
    found = [s for s in strategies(env) if s.name == name and s.archived_at is None]
    assert len(found) == 1, [s.name for s in strategies(env)]
    return found[0]


def test_create_with_legs_and_accounts(env: WebEnv, alice: FlaskClient) -> None:
    main = account(env, "alice", "Main")
    response = save(
        alice,
        strategy_form(
            "Straddle",
            leg(0, option_type="CE", action="SELL", order_type="LIMIT", limit_price="120.05"),
            leg(
                2,
                instrument="BANKNIFTY",
                option_type="PE",
                expiry="current_month",
                action="BUY",
                strike_selection="OTM",
                strike_offset="3",
                lots="2",
                stop_loss_type="percentage",
                stop_loss_value="30",
                enable_trailing="y",
                trailing_type="points",
                trailing_value="5",
            ),
            accounts=[str(main)],
            **{f"mult-{main}": "1.5"},
            allocation_type="custom",
            max_loss="5000",
            max_profit="0",
            is_template="y",
        ),
    )
    assert response.status_code == 303, re.findall(
        r"class=\"error\"[^>]*>([^<]*)", response.get_data(as_text=True)
    )
    saved = only(env, "Straddle")
    assert saved.is_active and saved.is_template and saved.user_id == env.user("alice").id
    assert saved.selected_accounts == [{"account_id": main, "multiplier": "1.5"}]
    assert f'name="mult-{main}" id="mult-{main}" value="1.5"' in alice.get(
        f"/strategies/{saved.id}/edit"
    ).get_data(as_text=True)
    assert saved.max_loss == Decimal("5000") and saved.max_profit is None
    assert saved.entry_time is not None and saved.entry_time.strftime("%H:%M") == "09:20"
    first, second = saved.legs
    assert (first.leg_number, first.option_type, first.product_type) == (1, "CE", "options")
    assert (
        first.order_type == "LIMIT" and first.limit_price == Decimal("120.05") and first.trigger_price is None
    )
    assert (second.leg_number, second.instrument, second.strike_selection, second.strike_offset) == (
        2,
        "BANKNIFTY",
        "OTM",
        3,
    )
    assert (
        second.lots == 2 and second.stop_loss_value == Decimal("30") and second.trailing_value == Decimal("5")
    )
    assert "strategy_created" in env.actions("alice")
    page = alice.get("/strategies/").get_data(as_text=True)
    assert f'id="strat-{saved.id}"' in page and "NIFTY, BANKNIFTY" in page
    assert 'id="tpl-u' in page  # its own template is offered


def test_every_rule_is_reported_in_one_reply(env: WebEnv, alice: FlaskClient) -> None:
    response = save(
        alice,
        strategy_form(
            "x" * 101,
            leg(0, order_type="LIMIT"),
            leg(1, order_type="SL-MKT"),
            leg(2, strike_selection="OTM", strike_offset="25"),
            leg(3, lots="0"),
            leg(4, lots="101", instrument="BANKNIFTY", expiry="next_week"),
            leg(5, strike_selection="premium_near", option_type="FUT", expiry="current_week"),
            entry_time="09:00",
            exit_time="15:45",
            square_off_time="10:00",
            supertrend_multiplier="3.3",
            max_loss="-5",
            description="d" * 2001,
        ),
    )
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    for message in (
        "Name must be at most 100 characters.",
        "Description must be at most 2000 characters.",
        "A limit order needs a limit price.",
        "A stop-loss order needs a trigger price.",
        "Strike offset must be 1–20.",
        "Lots must be 1–100.",
        "BANKNIFTY has no weekly contracts",
        "Futures are monthly",
        "Entry time must be inside the session, 09:15–15:30 IST.",
        "Exit time must be inside the session",
        "Supertrend multiplier goes in steps of 0.5.",
        "Max loss must not be negative.",
    ):
        assert message in page, message
    assert page.count("Lots must be 1–100.") == 2
    assert "maxlength" not in page
    assert strategies(env) == []


def test_time_order_strike_step_premium_and_no_legs(env: WebEnv, alice: FlaskClient) -> None:
    data = strategy_form(
        "Times",
        leg(0, instrument="", strike_selection="premium_near"),  # a blank row is ignored
        entry_time="11:00",
        exit_time="10:30",
        square_off_time="10:00",
    )
    page = save(alice, data).get_data(as_text=True)
    assert "Exit time must be after the entry time." in page
    assert "Square-off time must be after the entry time." in page
    assert "Add at least one leg" in page
    data = strategy_form(
        "Strikes",
        leg(0, strike_selection="strike_price", strike_price="24010"),
        leg(1, strike_selection="premium_near"),
        leg(2, order_type="SL-LMT", trigger_price="10.02", limit_price="abc"),
    )
    response = save(alice, data)
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "NIFTY strikes are multiples of 50." in page
    assert "Enter the premium to look for." in page
    assert "Trigger price must be on the 0.05 tick." in page and "Limit price must be a number." in page
    assert strategies(env) == []


def test_accounts_of_another_user_or_inactive_are_refused(env: WebEnv, alice: FlaskClient) -> None:
    signed_in(env, "bob")
    bobs = account(env, "bob", "Bob main")
    idle = account(env, "alice", "Idle", is_active=False)
    mine = account(env, "alice", "Mine")
    for wrong in (bobs, idle, "abc"):
        response = save(alice, strategy_form("S", accounts=[str(mine), str(wrong)]))
        assert response.status_code == 400
        assert "is not one of your active accounts" in response.get_data(as_text=True)
    response = save(alice, strategy_form("S", accounts=[str(mine)], **{f"mult-{mine}": "-2"}))
    assert response.status_code == 400 and "The multiplier must be above 0" in response.get_data(as_text=True)
    assert strategies(env) == []
    page = alice.get(NEW).get_data(as_text=True)
    assert "Mine" in page and "Idle" not in page and "Bob main" not in page


def test_another_users_strategy_is_404_everywhere(env: WebEnv, alice: FlaskClient) -> None:
    bob = signed_in(env, "bob")
    assert save(bob, strategy_form("Bob's", is_template="y")).status_code == 303
    theirs = strategies(env, "bob")[0].id
    for path in (f"/strategies/{theirs}/edit", f"/strategies/{theirs}/delete", f"{NEW}?template={theirs}"):
        assert alice.get(path).status_code == 404, path
    for action in ("edit", "clone", "activate", "deactivate", "delete"):
        response = post_form(alice, f"/strategies/{theirs}/{action}", strategy_form("Mine"), page=NEW)
        assert response.status_code == 404, action
    assert alice.get("/strategies/99999999999/edit").status_code == 404
    kept = strategies(env, "bob")[0]
    assert kept.name == "Bob's" and kept.is_active and kept.archived_at is None and len(strategies(env)) == 0
    assert "Bob&#39;s" not in alice.get("/strategies/").get_data(as_text=True)


def test_edit_updates_changes_adds_and_removes_legs(env: WebEnv, alice: FlaskClient) -> None:
    save(alice, strategy_form("Edit me", leg(0), leg(1, option_type="PE")))
    saved = only(env, "Edit me")
    first, second = saved.legs
    page = alice.get(f"/strategies/{saved.id}/edit").get_data(as_text=True)
    assert f'value="{first.id}"' in page and 'value="Edit me"' in page
    data = strategy_form(
        "Edited",
        leg(0, leg_id=str(second.id), option_type="PE", lots="3"),
        leg(1, option_type="FUT", expiry="current_month", action="BUY"),
        product_order_type="NRML",
        entry_time="",
        exit_time="",
        square_off_time="",
    )
    response = save(alice, data, f"/strategies/{saved.id}/edit")
    assert response.status_code == 303, re.findall(
        r"class=\"error\"[^>]*>([^<]*)", response.get_data(as_text=True)
    )
    edited = only(env, "Edited")
    assert edited.id == saved.id and edited.product_order_type == "NRML" and edited.entry_time is None
    assert [(leg.id == second.id, leg.leg_number, leg.lots) for leg in edited.legs] == [
        (True, 1, 3),
        (False, 2, 1),
    ]
    future = edited.legs[1]
    assert (future.product_type, future.option_type, future.strike_selection) == ("futures", None, None)
    assert "strategy_updated" in env.actions("alice")


def test_duplicate_name_is_an_inline_error(
    env: WebEnv, alice: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert save(alice, strategy_form("Same")).status_code == 303
    response = save(alice, strategy_form("Same"))
    assert response.status_code == 400
    assert "You already have a strategy with this name." in response.get_data(as_text=True)
    # The database's partial unique index has the last word (two saves racing past the check).
    from algomirror.web.strategies import repo

    monkeypatch.setattr(repo, "name_taken", lambda *a, **k: False)
    response = save(alice, strategy_form("Same"))
    assert response.status_code == 400
    assert "You already have a strategy with this name." in response.get_data(as_text=True)
    assert len(strategies(env)) == 1


def test_clone_copies_legs_inactive_and_numbers_copies(env: WebEnv, alice: FlaskClient) -> None:
    main = account(env, "alice", "Main")
    save(alice, strategy_form("Base", leg(0), leg(1, option_type="PE", lots="4"), accounts=[str(main)]))
    base = only(env, "Base")
    assert post_form(alice, f"/strategies/{base.id}/clone", page="/strategies/").status_code == 303
    assert post_form(alice, f"/strategies/{base.id}/clone", page="/strategies/").status_code == 303
    copy, second = only(env, "Base (copy)"), only(env, "Base (copy 2)")
    assert not copy.is_active and not second.is_active
    assert copy.selected_accounts == [{"account_id": main}]
    assert [(leg.option_type, leg.lots) for leg in copy.legs] == [("CE", 1), ("PE", 4)]
    assert {leg.id for leg in copy.legs}.isdisjoint(leg.id for leg in base.legs)
    assert env.actions("alice").count("strategy_cloned") == 2


def test_activate_deactivate_and_csrf(env: WebEnv, alice: FlaskClient) -> None:
    save(alice, strategy_form("Toggle"))
    sid = only(env, "Toggle").id
    assert alice.post(f"/strategies/{sid}/deactivate").status_code == 400  # no CSRF token
    assert only(env, "Toggle").is_active
    post_form(alice, f"/strategies/{sid}/deactivate", page="/strategies/")
    assert not only(env, "Toggle").is_active
    post_form(alice, f"/strategies/{sid}/activate", page="/strategies/")
    assert only(env, "Toggle").is_active
    assert env.actions("alice")[-2:] == ["strategy_deactivated", "strategy_activated"]


def test_delete_deletes_archives_or_refuses(env: WebEnv, alice: FlaskClient) -> None:
    for name in ("Fresh", "Ran", "Running"):
        save(alice, strategy_form(name))
    fresh, ran, running = only(env, "Fresh"), only(env, "Ran"), only(env, "Running")
    with env.database.session() as s:
        s.add(
            StrategyRun(
                strategy_id=ran.id, status="closed", started_at=START, ended_at=START + timedelta(hours=1)
            )
        )
        s.add(StrategyRun(strategy_id=running.id, status="active", started_at=START))
        s.commit()
    assert "never ran" in alice.get(f"/strategies/{fresh.id}/delete").get_data(as_text=True)
    assert "archived" in alice.get(f"/strategies/{ran.id}/delete").get_data(as_text=True)
    assert "cannot be deleted" in alice.get(f"/strategies/{running.id}/delete").get_data(as_text=True)
    for row in (fresh, ran, running):
        assert post_form(alice, f"/strategies/{row.id}/delete", page="/strategies/").status_code == 303
    remaining = {s.name: s for s in strategies(env)}
    assert "Fresh" not in remaining
    assert remaining["Ran"].archived_at is not None and not remaining["Ran"].is_active
    assert remaining["Running"].archived_at is None
    with env.database.session_factory() as s:
        assert s.scalar(select(StrategyLeg.id).where(StrategyLeg.strategy_id == fresh.id)) is None
    page = alice.get("/strategies/").get_data(as_text=True)
    assert "still has 1 live or unresolved item(s)" in page
    assert f'id="strat-{ran.id}"' not in page and f'id="strat-{running.id}"' in page
    assert alice.get(f"/strategies/{ran.id}/edit").status_code == 404
    assert save(alice, strategy_form("Ran")).status_code == 303  # an archived strategy frees its name
    assert {"strategy_deleted", "strategy_archived"} <= set(env.actions("alice"))


def _selected(page: str, name: str) -> str | None:
    select_html = re.search(rf'<select[^>]*name="{re.escape(name)}".*?</select>', page, re.S)
    assert select_html, name
    chosen = re.search(
        r'<option selected value="([^"]*)"|<option value="([^"]*)" selected', select_html.group(0)
    )
    return next((g for g in chosen.groups() if g is not None), None) if chosen else None


def test_ready_and_user_templates_prefill_the_create_form(env: WebEnv, alice: FlaskClient) -> None:
    index = alice.get("/strategies/").get_data(as_text=True)
    for key in ("short_straddle", "short_strangle", "iron_condor", "bull_put_spread"):
        assert f"?template={key}" in index
    page = alice.get(f"{NEW}?template=iron_condor").get_data(as_text=True)
    assert 'value="Iron condor"' in page
    assert [_selected(page, f"legs-{i}-action") for i in range(4)] == ["BUY", "BUY", "SELL", "SELL"]
    assert [_selected(page, f"legs-{i}-instrument") for i in range(5)] == ["NIFTY"] * 4 + [""]
    assert 'name="legs-2-strike_offset" type="text" value="2"' in page or 'value="2"' in page
    assert alice.get(f"{NEW}?template=nonsense").status_code == 404
    assert not strategies(env)
    save(alice, strategy_form("Mine", leg(0, option_type="PE", lots="7"), is_template="y"))
    mine = only(env, "Mine")
    page = alice.get(f"{NEW}?template={mine.id}").get_data(as_text=True)
    assert 'value="Mine (copy)"' in page and _selected(page, "legs-0-option_type") == "PE"
    leg_ids = re.findall(r'name="legs-\d-leg_id" type="hidden" value="([^"]*)"', page)
    assert leg_ids == [""] * 6  # the copy's rows are new legs


def test_legs_in_an_open_run_or_with_history_are_protected(env: WebEnv, alice: FlaskClient) -> None:
    main = account(env, "alice", "Main")
    save(alice, strategy_form("Live", leg(0), leg(1, option_type="PE"), accounts=[str(main)]))
    live = only(env, "Live")
    first, second = live.legs
    with env.database.session() as s:
        s.get(StrategyLeg, first.id).is_executed = True  # type: ignore[union-attr]
        s.commit()
    path = f"/strategies/{live.id}/edit"
    changed = strategy_form("Live", leg(0, leg_id=str(first.id), lots="5"), leg(1, leg_id=str(second.id)))
    response = save(alice, changed, path)
    assert response.status_code == 400
    assert "This leg is in the open run and cannot change." in response.get_data(as_text=True)
    dropped = strategy_form("Live", leg(0, leg_id=str(second.id), option_type="PE"))
    assert "has executions and cannot be removed" in save(alice, dropped, path).get_data(as_text=True)
    assert [leg.lots for leg in only(env, "Live").legs] == [1, 1]
    # Unchanged executed leg plus a late hedge: allowed (PRODUCT §4.2).
    late = strategy_form(
        "Live",
        leg(0, leg_id=str(first.id)),
        leg(1, leg_id=str(second.id), option_type="PE"),
        leg(2, action="BUY", strike_selection="OTM", strike_offset="5"),
        accounts=[str(main)],
    )
    assert save(alice, late, path).status_code == 303
    assert len(only(env, "Live").legs) == 3
    # An account deactivated since is announced, then left out on save.
    with env.database.session() as s:
        from algomirror.db.models import TradingAccount

        s.get(TradingAccount, main).is_active = False  # type: ignore[union-attr]
        s.commit()
    assert 'id="accounts-dropped"' in alice.get(path).get_data(as_text=True)


def test_grade_profiles_are_offered_and_a_cash_grade_refuses_sell_legs(
    env: WebEnv, alice: FlaskClient
) -> None:
    from algomirror.db.models.sizing import TradeQuality

    with env.database.session() as s:
        uid = env.user("alice").id
        s.add(
            TradeQuality(user_id=uid, quality_grade="Y", margin_percentage=Decimal("65"), source="available")
        )
        s.add(TradeQuality(user_id=uid, quality_grade="Z", margin_percentage=Decimal("40"), source="cash"))
        s.commit()
    page = alice.get(NEW).get_data(as_text=True)
    assert 'value="grade_Y"' in page and 'value="grade_Z"' in page
    response = save(alice, strategy_form("Buyer", leg(0, action="SELL"), risk_profile="grade_Z"))
    assert response.status_code == 400
    assert "A buyer (cash) grade cannot hold SELL or futures legs." in response.get_data(as_text=True)
    assert save(alice, strategy_form("Seller", leg(0, lots="150"), risk_profile="grade_Y")).status_code == 303
    assert only(env, "Seller").risk_profile == "grade_Y" and only(env, "Seller").legs[0].lots == 150
    response = save(alice, strategy_form("Unknown", risk_profile="grade_Q"))
    assert response.status_code == 400 and "Not a valid choice" in response.get_data(as_text=True)
