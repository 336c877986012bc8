"""Positions grouped by strategy and leg (web/strategy_groups.py): which positions belong to a live leg,
exact per-leg and per-strategy totals, the "not in a strategy" remainder, the page's filters, per-user
isolation, a fixed number of queries, and the "By strategy" card's markup."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from flask import render_template
from flask.testing import FlaskClient
from sqlalchemy import event
from sqlalchemy.orm import Session

from algomirror.db.models import Strategy, StrategyExecution, StrategyLeg, StrategyRun
from algomirror.web.queries import Sum
from algomirror.web.strategy_groups import PositionGroups, leg_label, position_groups
from tests.factories import BASE_TIME, make_account, make_position
from tests.integration.web_support import WebEnv, make_env, signed_in

CE = "NIFTY01DEC2626000CE"
PE = "NIFTY01DEC2625800PE"
UNRELATED = "BANKNIFTY30DEC2652000PE"
OLD_RUN = "NIFTY01DEC2624000CE"
EXITED = "SENSEX04DEC2680000CE"
FAILED = "NIFTY01DEC2626200PE"


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> WebEnv:
    return make_env(db_url, tmp_path)


@pytest.fixture
def alice(env: WebEnv) -> FlaskClient:
    return signed_in(env, "alice")


@pytest.fixture
def bob(env: WebEnv) -> FlaskClient:
    return signed_in(env, "bob")


def _strategy(s: Session, user_id: int, name: str, legs: list[dict[str, Any]]) -> Strategy:
    strategy = Strategy(user_id=user_id, name=name)
    for number, fields in enumerate(legs, start=1):
        strategy.legs.append(
            StrategyLeg(leg_number=number, instrument="NIFTY", product_type="options", **fields)
        )
    s.add(strategy)
    s.flush()
    return strategy


def _run(s: Session, strategy: Strategy, *, status: str = "active", ended: bool = False) -> StrategyRun:
    run = StrategyRun(strategy_id=strategy.id, status=status, started_at=BASE_TIME)
    if ended:
        run.ended_at = BASE_TIME
    s.add(run)
    s.flush()
    return run


def _execution(
    s: Session,
    run: StrategyRun,
    leg: StrategyLeg,
    account_id: int,
    symbol: str,
    *,
    status: str = "active",
    exchange: str = "NFO",
    product: str | None = "NRML",
) -> StrategyExecution:
    execution = StrategyExecution(
        strategy_id=run.strategy_id,
        run_id=run.id,
        leg_id=leg.id,
        account_id=account_id,
        symbol=symbol,
        exchange=exchange,
        product=product,
        status=status,
    )
    s.add(execution)
    s.flush()
    return execution


@dataclass
class Book:
    uid: int
    alpha: int
    beta: int
    bob_account: int
    strategy: int
    run: int
    leg1: int
    leg2: int
    positions: dict[str, int]


@pytest.fixture
def book(env: WebEnv, alice: FlaskClient, bob: FlaskClient) -> Book:
    """Alice: a short strangle (two legs, live run) on Alpha and Beta, plus positions that must stay out
    of it (other product, an ended run, an exited and a failed execution, another user's strategy).
    Amounts chosen so float addition would be off by a paisa."""
    uid = env.user("alice").id
    bob_id = env.user("bob").id
    with env.database.session() as s:
        alpha = make_account(s, uid, "Alpha — a rather long account name for the ellipsis", is_primary=True)
        beta = make_account(s, uid, "Beta")
        bobs = make_account(s, bob_id, "Bob main", is_primary=True)
        strangle = _strategy(
            s,
            uid,
            "Short strangle",
            [
                {"action": "SELL", "option_type": "CE", "strike_selection": "ATM"},
                {"action": "SELL", "option_type": "PE", "strike_selection": "OTM", "strike_offset": 2},
            ],
        )
        leg1, leg2 = strangle.legs
        run = _run(s, strangle)
        _execution(s, run, leg1, alpha.id, CE)
        _execution(s, run, leg1, beta.id, CE, status="exiting", product=None)  # any product matches
        _execution(s, run, leg2, alpha.id, PE, status="pending")
        _execution(s, run, leg2, beta.id, PE, status="error")  # exit failed: position still the leg's
        p: dict[str, int] = {}
        p["alpha_ce"] = make_position(
            s,
            alpha.id,
            CE,
            quantity=-75,
            pnl=Decimal("0.10"),
            realized_pnl=Decimal("0.00"),
            unrealized_pnl=Decimal("0.10"),
        ).id
        p["beta_ce"] = make_position(
            s,
            beta.id,
            CE,
            quantity=-150,
            pnl=Decimal("0.20"),
            realized_pnl=None,
            unrealized_pnl=Decimal("0.20"),
        ).id
        p["beta_ce_mis"] = make_position(
            s,
            beta.id,
            CE,
            product="MIS",
            quantity=0,
            pnl=Decimal("0.30"),
            realized_pnl=Decimal("0.30"),
            unrealized_pnl=Decimal("0.00"),
        ).id
        p["alpha_pe"] = make_position(
            s,
            alpha.id,
            PE,
            quantity=-75,
            pnl=Decimal("-1234567.89"),
            realized_pnl=Decimal("-1234567.89"),
            unrealized_pnl=Decimal("0.00"),
        ).id
        p["beta_pe"] = make_position(
            s, beta.id, PE, quantity=-150, pnl=None, realized_pnl=None, unrealized_pnl=None
        ).id
        # Not in a strategy: an unrelated symbol, the CE under another product than the execution's.
        p["unrelated"] = make_position(s, alpha.id, UNRELATED, pnl=Decimal("5.55")).id
        p["alpha_ce_mis"] = make_position(s, alpha.id, CE, product="MIS", pnl=Decimal("0.01")).id
        # A live execution of an ended run, an exited and a failed execution of a live run.
        old = _strategy(
            s, uid, "Old fly", [{"action": "BUY", "option_type": "CE", "strike_selection": "ATM"}]
        )
        _execution(s, _run(s, old, status="closed", ended=True), old.legs[0], alpha.id, OLD_RUN)
        p["old_run"] = make_position(s, alpha.id, OLD_RUN, pnl=None).id
        done = _strategy(
            s,
            uid,
            "Done today",
            [{"action": "SELL", "option_type": "CE"}, {"action": "SELL", "option_type": "PE"}],
        )
        done_run = _run(s, done)
        _execution(s, done_run, done.legs[0], alpha.id, EXITED, status="exited", exchange="BFO")
        _execution(s, done_run, done.legs[1], alpha.id, FAILED, status="failed")
        p["exited"] = make_position(s, alpha.id, EXITED, exchange="BFO", pnl=Decimal("1.00")).id
        p["failed"] = make_position(s, alpha.id, FAILED, pnl=Decimal("-0.02")).id
        # Bob: his own strategy on the same symbol, and one whose execution names Alice's account.
        bobs_strategy = _strategy(s, bob_id, "Bob's strangle", [{"action": "SELL", "option_type": "CE"}])
        bobs_run = _run(s, bobs_strategy)
        _execution(s, bobs_run, bobs_strategy.legs[0], bobs.id, CE)
        _execution(s, bobs_run, bobs_strategy.legs[0], alpha.id, UNRELATED, product=None)
        p["bob_ce"] = make_position(s, bobs.id, CE, pnl=Decimal("1000.00")).id
        return Book(uid, alpha.id, beta.id, bobs.id, strangle.id, run.id, leg1.id, leg2.id, p)


def _groups(env: WebEnv, user_id: int, **filters: Any) -> PositionGroups:
    with env.database.session_factory() as s:
        return position_groups(s, user_id, **filters)


def _sum(value: Sum) -> tuple[Decimal | None, int]:
    """(value, unknown count): a Sum compared exactly."""
    return value.value, value.unknown


def test_groups_when_two_legs_on_two_accounts_totals_are_exact(env: WebEnv, book: Book) -> None:
    groups = _groups(env, book.uid)
    assert [(g.name, g.strategy_id, g.run_id) for g in groups.strategies] == [
        ("Short strangle", book.strategy, book.run)
    ]
    strangle = groups.strategies[0]
    leg1, leg2 = strangle.legs
    assert (leg1.leg_id, leg1.label) == (book.leg1, "Leg 1 · SELL NIFTY CE ATM")
    assert (leg2.leg_id, leg2.label) == (book.leg2, "Leg 2 · SELL NIFTY PE OTM 2")
    p = book.positions
    assert [x.id for x in leg1.positions] == [p["alpha_ce"], p["beta_ce"], p["beta_ce_mis"]]
    assert [x.id for x in leg2.positions] == [p["alpha_pe"], p["beta_pe"]]
    assert leg1.positions[0].account_name.startswith("Alpha")
    assert [x.account_id for x in leg1.positions] == [book.alpha, book.beta, book.beta]

    assert (leg1.totals.count, leg1.totals.quantity) == (3, -225)
    assert _sum(leg1.totals.pnl) == (Decimal("0.60"), 0)
    assert _sum(leg1.totals.realized_pnl) == (Decimal("0.30"), 1)
    assert _sum(leg1.totals.unrealized_pnl) == (Decimal("0.30"), 0)
    assert (leg2.totals.count, leg2.totals.quantity) == (2, -225)
    assert _sum(leg2.totals.pnl) == (Decimal("-1234567.89"), 1)
    assert _sum(leg2.totals.unrealized_pnl) == (Decimal("0.00"), 1)

    assert (strangle.totals.count, strangle.totals.quantity) == (5, -450)
    assert _sum(strangle.totals.pnl) == (Decimal("-1234567.29"), 1)
    assert _sum(strangle.totals.realized_pnl) == (Decimal("-1234567.59"), 2)
    assert _sum(strangle.totals.unrealized_pnl) == (Decimal("0.30"), 1)
    assert strangle.totals.pnl.partial


def test_groups_when_position_outside_live_legs_counts_as_not_in_a_strategy(env: WebEnv, book: Book) -> None:
    groups = _groups(env, book.uid)
    grouped = {x.id for g in groups.strategies for leg in g.legs for x in leg.positions}
    p = book.positions
    # Other product than the execution's, an ended run, an exited and a failed execution, and an
    # execution of another user's strategy: none of them is grouped.
    for key in ("unrelated", "alpha_ce_mis", "old_run", "exited", "failed"):
        assert p[key] not in grouped, key
    assert [g.name for g in groups.strategies] == ["Short strangle"]
    assert groups.grouped_count == 5
    assert groups.ungrouped_count == 5
    assert _sum(groups.ungrouped_pnl) == (Decimal("6.54"), 1)


def test_groups_when_other_user_never_sees_alices_and_alice_never_sees_bobs(env: WebEnv, book: Book) -> None:
    alices = _groups(env, book.uid)
    seen = {x.id for g in alices.strategies for leg in g.legs for x in leg.positions}
    assert book.positions["bob_ce"] not in seen
    assert "Bob's strangle" not in [g.name for g in alices.strategies]

    bob_id = env.user("bob").id
    bobs = _groups(env, bob_id)
    assert [g.name for g in bobs.strategies] == ["Bob's strangle"]
    assert [x.id for g in bobs.strategies for leg in g.legs for x in leg.positions] == [
        book.positions["bob_ce"]
    ]
    assert bobs.ungrouped_count == 0  # Alice's account never counts for Bob, not even as ungrouped
    # Bob's own account id asked for by Alice matches nothing of hers and shows nothing of his.
    foreign = _groups(env, book.uid, account_id=book.bob_account)
    assert not foreign and foreign.ungrouped_count == 0


def test_groups_when_filtered_by_account_or_symbol_apply_like_the_positions_page(
    env: WebEnv, book: Book
) -> None:
    p = book.positions
    beta = _groups(env, book.uid, account_id=book.beta)
    legs = beta.strategies[0].legs
    assert [[x.id for x in leg.positions] for leg in legs] == [
        [p["beta_ce"], p["beta_ce_mis"]],
        [p["beta_pe"]],
    ]
    assert _sum(beta.strategies[0].totals.pnl) == (Decimal("0.50"), 1)
    assert (beta.ungrouped_count, _sum(beta.ungrouped_pnl)) == (0, (Decimal("0.00"), 0))

    calls = _groups(env, book.uid, symbol="  ce ")
    assert [leg.leg_id for leg in calls.strategies[0].legs] == [book.leg1]
    assert _sum(calls.strategies[0].totals.pnl) == (Decimal("0.60"), 0)
    # Alpha's MIS call, the ended run's call and the exited SENSEX call.
    assert (calls.ungrouped_count, _sum(calls.ungrouped_pnl)) == (3, (Decimal("1.01"), 1))

    assert not _groups(env, book.uid, symbol="%")  # LIKE wildcards are literal text
    assert not _groups(env, book.uid, account_id=book.alpha, symbol="26000CE").strategies[0].legs[1:]


def test_groups_when_run_ends_or_execution_exits_position_leaves_the_group(env: WebEnv, book: Book) -> None:
    with env.database.session() as s:
        execution = s.query(StrategyExecution).filter_by(leg_id=book.leg2, account_id=book.alpha).one()
        execution.status = "exited"
    groups = _groups(env, book.uid)
    assert [x.id for x in groups.strategies[0].legs[1].positions] == [book.positions["beta_pe"]]
    assert groups.ungrouped_count == 6

    # A run is over once it has an end time, or once its status is final: either alone is enough.
    for status, ended_at in (("exiting", BASE_TIME), ("failed", None), ("closed", BASE_TIME)):
        with env.database.session() as s:
            run = s.get(StrategyRun, book.run)
            assert run is not None
            run.status, run.ended_at = status, ended_at
        ended = _groups(env, book.uid)
        assert not ended and ended.strategies == [], status
        assert (ended.ungrouped_count, _sum(ended.ungrouped_pnl)) == (10, (Decimal("-1234560.75"), 2))


def test_groups_when_two_live_legs_hold_one_netted_position_counts_it_once(env: WebEnv, book: Book) -> None:
    with env.database.session() as s:
        hedge = _strategy(
            s, book.uid, "A hedge", [{"action": "BUY", "option_type": "CE", "strike_selection": "ATM"}]
        )
        _execution(s, _run(s, hedge), hedge.legs[0], book.alpha, CE)
    groups = _groups(env, book.uid)
    assert [g.name for g in groups.strategies] == ["Short strangle"]  # its execution came first
    shown = [x for g in groups.strategies for leg in g.legs for x in leg.positions]
    assert [x.id for x in shown].count(book.positions["alpha_ce"]) == 1
    assert next(x for x in shown if x.id == book.positions["alpha_ce"]).shared == 1
    assert _sum(groups.strategies[0].totals.pnl) == (Decimal("-1234567.29"), 1)


@contextmanager
def _statements(env: WebEnv) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(*args: Any) -> None:
        # SQLite's explicit BEGIN (db/session.py) is transaction control, not a query.
        if not args[2].lstrip().upper().startswith("BEGIN"):
            seen.append(args[2])

    event.listen(env.database.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(env.database.engine, "before_cursor_execute", record)


def _cost(env: WebEnv, uid: int, accounts: list[int], strategies: int, legs: int) -> int:
    """Statements of one position_groups call after adding ``strategies`` × ``legs`` × accounts grouped
    positions (and as many in no strategy)."""
    with env.database.session() as s:
        for n in range(strategies):
            strategy = _strategy(
                s, uid, f"S{len(accounts)}-{n}", [{"action": "SELL", "option_type": "CE"}] * legs
            )
            run = _run(s, strategy)
            for leg in strategy.legs:
                for account in accounts:
                    symbol = f"NIFTY01DEC26{run.id:03d}{leg.id:03d}CE"
                    _execution(s, run, leg, account, symbol)
                    make_position(s, account, symbol, pnl=Decimal("0.01"))
                    make_position(s, account, symbol + "X", pnl=Decimal("0.01"))  # in no strategy
    with env.database.session_factory() as s, _statements(env) as seen:
        groups = position_groups(s, uid)
    assert groups.grouped_count == groups.ungrouped_count
    return len(seen)


def test_groups_when_2_or_20_positions_costs_the_same_number_of_queries(
    env: WebEnv, alice: FlaskClient
) -> None:
    uid = env.user("alice").id
    with env.database.session() as s:
        accounts = [make_account(s, uid, f"Acct {i}").id for i in range(2)]
    few = _cost(env, uid, accounts[:1], 1, 2)  # 2 positions in a strategy
    many = _cost(env, uid, accounts, 3, 3)  # 18 more: 20 in 4 strategies
    assert few == many == 2


def test_leg_label_when_fields_vary_describes_the_leg() -> None:
    base = {"leg_number": 3, "action": "BUY", "instrument": "BANKNIFTY"}
    assert leg_label({**base, "product_type": "futures"}) == "Leg 3 · BUY BANKNIFTY FUT"
    assert leg_label({**base, "product_type": "equity", "option_type": "CE"}) == "Leg 3 · BUY BANKNIFTY"
    strike = {
        **base,
        "option_type": "PE",
        "strike_selection": "strike_price",
        "strike_price": Decimal("52000.00"),
    }
    assert leg_label(strike) == "Leg 3 · BUY BANKNIFTY PE 52000"
    premium = {
        **base,
        "option_type": "CE",
        "strike_selection": "premium_near",
        "premium_value": Decimal("50"),
    }
    assert leg_label(premium) == "Leg 3 · BUY BANKNIFTY CE near ₹50.00"
    assert leg_label({**base, "option_type": "CE", "strike_selection": "ITM", "strike_offset": 0}) == (
        "Leg 3 · BUY BANKNIFTY CE ITM"
    )
    assert leg_label({"leg_number": 1}) == "Leg 1"


# -------------------------------------------------------------------------------------------- markup


def _render(env: WebEnv, groups: PositionGroups, **context: Any) -> str:
    with env.app.test_request_context("/positions"):
        return render_template("books/_strategy_groups.html", groups=groups, **context)


def _row(html: str, row_id: str) -> str:
    match = re.search(rf'<tr[^>]*\sid="{re.escape(row_id)}"[^>]*>(.*?)</tr>', html, re.S)
    assert match, f"no row {row_id}"
    return match.group(0)


def _cell(row: str, key: str) -> str:
    match = re.search(rf'data-(?:key|col)="{re.escape(key)}"[^>]*>(.*?)</td>', row, re.S)
    assert match, key
    return re.sub(r"<[^>]+>", "", match.group(1)).strip()


def test_card_when_positions_in_a_strategy_renders_group_leg_and_account_rows(
    env: WebEnv, book: Book
) -> None:
    html = _render(env, _groups(env, book.uid), overview_prefix="/accounts/")
    assert '<section class="card" aria-labelledby="groups-title" id="groups-card">' in html
    assert '<table class="table book groups" id="strategy-groups">' in html
    sid = f"grp-s{book.strategy}"
    head = _row(html, sid)
    assert 'class="group-head"' in head and f'data-strategy-id="{book.strategy}"' in head
    assert "Short strangle" in head
    assert (_cell(head, "quantity"), _cell(head, "pnl"), _cell(head, "realized_pnl")) == (
        "-450",
        "-₹12,34,567.29*",
        "-₹12,34,567.59*",
    )
    leg = _row(html, f"{sid}-l{book.leg1}")
    assert 'class="leg-row"' in leg and f'data-leg-id="{book.leg1}"' in leg
    assert "Leg 1 · SELL NIFTY CE ATM" in leg
    assert (_cell(leg, "quantity"), _cell(leg, "pnl"), _cell(leg, "unrealized_pnl")) == (
        "-225",
        "₹0.60",
        "₹0.30",
    )
    row = _row(html, f"{sid}-l{book.leg2}-a{book.beta}-{book.positions['beta_pe']}")
    assert (_cell(row, "symbol"), _cell(row, "quantity"), _cell(row, "pnl")) == (PE, "-150", "—")
    alpha_row = _row(html, f"{sid}-l{book.leg1}-a{book.alpha}-{book.positions['alpha_ce']}")
    assert '<span class="ellipsis" title="Alpha — a rather long account name for the ellipsis">' in alpha_row
    assert f'href="/accounts/{book.alpha}/overview"' in alpha_row
    assert (_cell(alpha_row, "average_price"), _cell(alpha_row, "ltp")) == ("₹100.00", "₹100.00")
    footer = re.sub(r"<[^>]+>", "", _row(html, "grp-none"))
    assert "Not in a strategy: 5 positions · P&amp;L ₹6.54*" in footer
    ids = re.findall(r'<tr[^>]*\sid="([^"]+)"', html)
    assert len(ids) == len(set(ids)) == html.count("<tr") - 1  # every body/foot row has a unique id
    assert all("num" in td for td in re.findall(r"<td[^>]*data-key[^>]*>", html))


def test_card_when_no_position_in_a_strategy_renders_nothing(env: WebEnv, alice: FlaskClient) -> None:
    uid = env.user("alice").id
    with env.database.session() as s:
        make_position(s, make_account(s, uid, "Solo").id, UNRELATED)
    groups = _groups(env, uid)
    assert not groups and groups.ungrouped_count == 1
    assert _render(env, groups).strip() == ""


def test_positions_page_and_live_fragment_when_groups_in_context_still_render(
    alice: FlaskClient, book: Book
) -> None:
    for path in (
        "/positions",
        "/positions/live",
        f"/positions/live?account={book.beta}&symbol=ce",
        "/orders/live",
    ):
        response = alice.get(path)
        assert response.status_code == 200, path
    assert alice.get(f"/positions/live?account={book.bob_account}").status_code == 404
