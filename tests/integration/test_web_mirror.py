"""Mirror order and mirror check pages, on SQLite and PostgreSQL: the form with inline errors, the
review with each account's lots and quantity, one command per page token, the live result page; the
mirror check's missing / extra / different / unknown rows, Accept hiding exactly that drift, Bring in
line queueing the right ``mirror_order``; sign-in, CSRF and other users' ids (404)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import select

from algomirror.db.models import (
    EngineCommand,
    MirrorAcceptance,
    Position,
    Strategy,
    StrategyExecution,
    StrategyLeg,
    StrategyRun,
    TradingAccount,
)
from algomirror.domain.mirror import MirrorRow
from algomirror.engine import book_mirror
from algomirror.web.mirror_check import check_runs
from tests.factories import make_account, make_position
from tests.integration.web_support import START, WebEnv, csrf_token, login, make_env, signed_in

PE = "NIFTY01DEC2625500PE"
CE = "NIFTY01DEC2626500CE"
FRESH = START - timedelta(seconds=5)
TOKEN_RE = re.compile(r'name="command_token" value="([^"]+)"')


@dataclass
class Setup:
    env: WebEnv
    client: FlaskClient
    user_id: int
    accounts: list[int]
    other_account: int
    other_run: int


def setup(db_url: str, tmp_path: Path) -> Setup:
    env = make_env(db_url, tmp_path)
    client = signed_in(env, "alice")
    signed_in(env, "bob")
    alice, bob = env.user("alice").id, env.user("bob").id
    with env.database.session() as s:
        accounts = [
            make_account(s, alice, f"Acct {i}", last_sync_at=FRESH, allocation_multiplier=Decimal(m)).id
            for i, m in enumerate(("1", "2", "0.5"), start=1)
        ]
        other = make_account(s, bob, "Bob's", last_sync_at=FRESH).id
    other_run = make_run(env, bob, [(other, "BUY", PE, "active", 65, 0)])
    return Setup(env, client, alice, accounts, other, other_run)


def make_run(env: WebEnv, user_id: int, legs: list[tuple[int, str, str, str, int, int]]) -> int:
    """An open run with one execution per (account, action, symbol, status, quantity, exited)."""
    with env.database.session() as s:
        strategy = Strategy(user_id=user_id, name=f"S{user_id}-{len(legs)}")
        s.add(strategy)
        s.flush()
        run = StrategyRun(strategy_id=strategy.id, status="active", started_at=START)
        s.add(run)
        s.flush()
        for n, (account_id, action, symbol, status, quantity, exited) in enumerate(legs, start=1):
            leg = StrategyLeg(
                strategy_id=strategy.id,
                leg_number=n,
                instrument="NIFTY",
                product_type="options",
                expiry="current_week",
                action=action,
                option_type=symbol[-2:],
                order_type="MARKET",
                lots=1,
            )
            s.add(leg)
            s.flush()
            s.add(
                StrategyExecution(
                    strategy_id=strategy.id,
                    account_id=account_id,
                    leg_id=leg.id,
                    run_id=run.id,
                    symbol=symbol,
                    exchange="NFO",
                    product="NRML",
                    planned_quantity=quantity,
                    filled_quantity=0 if status == "pending" else quantity,
                    exited_quantity=exited,
                    status=status,
                )
            )
        return run.id


def commands(env: WebEnv) -> list[EngineCommand]:
    with env.database.session_factory() as s:
        return list(s.scalars(select(EngineCommand).order_by(EngineCommand.id)))


def order_form(s: Setup, **overrides: Any) -> dict[str, Any]:
    form: dict[str, Any] = {
        "symbol": PE.lower(),
        "exchange": "NFO",
        "side": "BUY",
        "lots": "3",
        "order_type": "MARKET",
        "price": "",
        "trigger_price": "",
        "product": "NRML",
        "csrf_token": csrf_token(s.client, "/mirror"),
    }
    for account_id, multiplier in zip(s.accounts, ("1", "2", "0.5"), strict=True):
        form[f"acct-{account_id}"] = "on"
        form[f"mult-{account_id}"] = multiplier
    form.update(overrides)
    return form


def test_mirror_order_review_send_once_and_result_page(db_url: str, tmp_path: Path) -> None:
    s = setup(db_url, tmp_path)
    page = s.client.get("/mirror").get_data(as_text=True)
    positions = s.client.get("/positions").get_data(as_text=True)
    assert 'id="mirror-order-link" href="/mirror"' in positions and 'href="/mirror/check"' in positions
    second = s.accounts[1]
    assert f'id="mult-{second}" name="mult-{second}" inputmode="decimal" size="6" value="2"' in page
    assert f"mult-{s.other_account}" not in page  # another user's account is never offered

    review = s.client.post("/mirror/review", data=order_form(s))
    html = review.get_data(as_text=True)
    assert review.status_code == 200, html[:3000]
    rows = re.findall(
        r'id="c-acct-(\d+)">.*?<td class="num" data-label="Multiplier">([^<]*)</td>'
        r'<td class="num" data-label="Lots">(\d+)</td><td class="num" data-label="Quantity">(\d+)</td>',
        html,
        re.S,
    )
    assert [(int(a), m, int(lots), int(q)) for a, m, lots, q in rows] == [
        (s.accounts[0], "1", 3, 195),
        (s.accounts[1], "2", 6, 390),
        (s.accounts[2], "0.5", 1, 65),
    ]
    assert commands(s.env) == [], "the review must not request anything"
    match = TOKEN_RE.search(html)
    assert match
    form = order_form(s, command_token=match.group(1))
    first = s.client.post("/mirror/send", data=form)
    second = s.client.post("/mirror/send", data=form)  # a double submit of one page
    assert first.status_code == second.status_code == 303
    assert first.headers["Location"] == second.headers["Location"]
    [command] = commands(s.env)
    assert command.kind == "mirror_order" and command.user_id == s.user_id and command.status == "pending"
    assert command.payload == {
        "symbol": PE,
        "exchange": "NFO",
        "product": "NRML",
        "side": "BUY",
        "lots": 3,
        "order_type": "MARKET",
        "price": None,
        "trigger_price": None,
        "accounts": [
            {"account_id": s.accounts[0], "multiplier": "1"},
            {"account_id": s.accounts[1], "multiplier": "2"},
            {"account_id": s.accounts[2], "multiplier": "0.5"},
        ],
    }
    result = s.client.get(first.headers["Location"]).get_data(as_text=True)
    assert "Waiting for the engine" in result and f'hx-get="/mirror/orders/{command.id}/live"' in result
    # The engine reports: the live region shows each account's outcome and stops polling (286).
    with s.env.database.session() as session:
        row = session.get(EngineCommand, command.id)
        assert row is not None
        row.status = "done"
        row.result = {
            "accounts": [
                {
                    "account_id": s.accounts[0],
                    "lots": 3,
                    "quantity": 195,
                    "orders": ["X1"],
                    "filled": 195,
                    "average": "101.5",
                    "status": "filled",
                    "errors": [],
                },
                {
                    "account_id": s.accounts[1],
                    "lots": 6,
                    "quantity": 390,
                    "orders": [],
                    "filled": 0,
                    "average": None,
                    "status": "rejected",
                    "errors": ["RMS: margin exceeds"],
                },
            ]
        }
    live = s.client.get(f"/mirror/orders/{command.id}/live")
    assert live.status_code == 286
    text = live.get_data(as_text=True)
    assert "X1" in text and "101.5" in text and "RMS: margin exceeds" in text and "Finished" in text

    bob = s.env.client()
    login(bob, "bob")
    assert bob.get(f"/mirror/orders/{command.id}").status_code == 404
    assert bob.get(f"/mirror/orders/{command.id}/live").status_code == 404


def test_mirror_order_form_errors_inline_csrf_and_sign_in(db_url: str, tmp_path: Path) -> None:
    s = setup(db_url, tmp_path)
    bad = order_form(s, order_type="LIMIT", price="", lots="0", **{f"mult-{s.accounts[0]}": "abc"})
    reply = s.client.post("/mirror/review", data=bad)
    html = reply.get_data(as_text=True)
    assert reply.status_code == 400
    assert "A limit or stop-loss limit order needs a limit price." in html
    assert "Lots must be a whole number" in html and "Multiplier: a number from 0 to 100" in html
    wrong_exchange = s.client.post("/mirror/review", data=order_form(s, exchange="BFO"))
    assert wrong_exchange.status_code == 400 and "NIFTY trades on NFO." in wrong_exchange.get_data(
        as_text=True
    )
    off_tick = s.client.post("/mirror/review", data=order_form(s, order_type="LIMIT", price="10.03"))
    assert "Prices must be on the 0.05 tick." in off_tick.get_data(as_text=True)
    no_csrf = order_form(s, command_token="t-1")
    del no_csrf["csrf_token"]
    assert s.client.post("/mirror/send", data=no_csrf).status_code == 400
    assert commands(s.env) == []
    # Another user's account smuggled into the form is not one of the choices: ignored, so none chosen.
    smuggled = {k: v for k, v in order_form(s).items() if not k.startswith(("acct-", "mult-"))}
    smuggled[f"acct-{s.other_account}"] = "on"
    assert s.client.post("/mirror/review", data=smuggled).status_code == 400
    anonymous = s.env.client()
    for path in ("/mirror", "/mirror/check", f"/mirror/check/{s.other_run}/fix?account=1"):
        assert anonymous.get(path).status_code in (302, 303), path


def _kinds(rows: list[MirrorRow]) -> dict[tuple[int, str], tuple[str, bool, int, int | None]]:
    return {(r.account_id, r.symbol): (r.kind, r.accepted, r.intended, r.broker) for r in rows}


def test_mirror_check_detects_drifts_and_acts_on_them(db_url: str, tmp_path: Path) -> None:
    s = setup(db_url, tmp_path)
    a1, a2, a3 = s.accounts
    run_id = make_run(
        s.env,
        s.user_id,
        [
            (a1, "BUY", PE, "active", 65, 0),  # in line
            (a1, "SELL", CE, "active", 130, 0),  # broker −65: different
            (a2, "BUY", PE, "active", 130, 0),  # broker holds nothing: missing
            (a2, "SELL", CE, "exited", 65, 65),  # broker still −65: extra
            (a3, "BUY", PE, "pending", 65, 0),  # stale snapshot: unknown
        ],
    )
    with s.env.database.session() as session:
        make_position(session, a1, PE, quantity=65, updated_at=FRESH)
        make_position(session, a1, CE, quantity=-65, updated_at=FRESH)
        make_position(session, a2, CE, quantity=-65, updated_at=FRESH)
        make_position(session, a2, "BANKNIFTY01DEC2655000CE", quantity=30, updated_at=FRESH)  # not the run's
        make_position(session, a3, PE, quantity=65, updated_at=START - timedelta(days=1))
        stale = session.get(TradingAccount, a3)
        assert stale is not None
        stale.last_sync_at = START - timedelta(days=1)

    def rows() -> list[MirrorRow]:
        with s.env.database.session_factory() as session:
            [check] = check_runs(
                session, s.user_id, now=START, stale_after=timedelta(minutes=1), run_id=run_id
            )
            return check.rows

    assert _kinds(rows()) == {
        (a1, PE): ("ok", False, 65, 65),
        (a1, CE): ("different", False, -130, -65),
        (a2, PE): ("missing", False, 130, 0),
        (a2, CE): ("extra", False, 0, -65),
        (a3, PE): ("unknown", False, 65, None),
    }
    listing = s.client.get("/strategies/", follow_redirects=True).get_data(as_text=True)
    assert f'href="/mirror/check?run={run_id}"' in listing  # linked from the running strategy
    page = s.client.get(f"/mirror/check?run={run_id}").get_data(as_text=True)
    assert page.count(">Bring in line</a>") == 3 and page.count(">Accept</a>") == 3
    assert "stale or missing: unknown, not compared" in page and "BANKNIFTY" not in page
    assert s.client.get(f"/mirror/check/live?run={run_id}").status_code == 200

    # Bring in line the missing leg: the confirmation names the exact order, the POST queues it.
    target = f"/mirror/check/{run_id}/fix?account={a2}&symbol={PE}&exchange=NFO&product=NRML"
    confirm = s.client.get(target).get_data(as_text=True)
    assert "BUY</span> 130" in confirm and commands(s.env) == []
    token = TOKEN_RE.search(confirm)
    assert token
    form = {
        "csrf_token": csrf_token(s.client, "/mirror"),
        "command_token": token.group(1),
        "account": str(a2),
        "symbol": PE,
        "exchange": "NFO",
        "product": "NRML",
        "broker": "0",
        "intended": "130",
    }
    assert s.client.post(f"/mirror/check/{run_id}/fix", data=form).status_code == 303
    [command] = commands(s.env)
    assert command.kind == "mirror_order" and command.payload is not None
    assert {k: command.payload[k] for k in ("side", "quantity", "lots", "accounts", "run_id", "reason")} == {
        "side": "BUY",
        "quantity": 130,
        "lots": 2,
        "accounts": [{"account_id": a2, "multiplier": "1"}],
        "run_id": run_id,
        "reason": "mirror_check",
    }
    # Until the correction shows in the synced positions it is not offered again (no double correction).
    listed = s.client.get(f"/mirror/check/live?run={run_id}").get_data(as_text=True)
    assert f'id="mc-correction-{command.id}"' in listed and listed.count(">Bring in line</a>") == 2
    again = s.client.get(target).get_data(as_text=True)
    assert "already requested" in again and "Yes, send" not in again
    assert (
        s.client.post(
            f"/mirror/check/{run_id}/fix", data={**form, "command_token": "another-page"}
        ).status_code
        == 409
    )
    assert len(commands(s.env)) == 1
    with s.env.database.session() as session:
        done = session.get(EngineCommand, command.id)
        assert done is not None
        # Finished on the wall clock 80 min "later" than the paper clock the positions are stamped by:
        # only the result's market-clock stamp counts. 5 s before the last positions fetch: that read may
        # have been in flight during the correction, so it is still shown as requested.
        done.status, done.finished_at = "done", FRESH + timedelta(minutes=80)
        done.result = {"accounts": [], "market_finished_at": (FRESH - timedelta(seconds=5)).isoformat()}
    listed = s.client.get(f"/mirror/check/live?run={run_id}").get_data(as_text=True)
    assert f'id="mc-correction-{command.id}"' in listed and listed.count(">Bring in line</a>") == 2
    with s.env.database.session() as session:
        done = session.get(EngineCommand, command.id)
        assert done is not None
        # Finished well before the newest positions fetch (more than a read's timeout): in the positions.
        done.result = {"accounts": [], "market_finished_at": (FRESH - timedelta(seconds=30)).isoformat()}
    assert (
        s.client.get(f"/mirror/check/live?run={run_id}").get_data(as_text=True).count(">Bring in line</a>")
        == 3
    )
    # The extra short is bought back: BUY 65.
    extra = f"/mirror/check/{run_id}/fix?account={a2}&symbol={CE}&exchange=NFO&product=NRML"
    assert "BUY</span> 65" in s.client.get(extra).get_data(as_text=True)

    # Accept the "different" one: exactly that drift is hidden, the others stay.
    accept = {**form, "symbol": CE, "account": str(a1), "broker": "-65", "intended": "-130"}
    del accept["command_token"]
    assert (
        s.client.post(f"/mirror/check/{run_id}/accept", data={**accept, "broker": "-130"}).status_code == 303
    )
    assert not _accepted(s.env), "confirmed quantities that are no longer current accept nothing"
    assert s.client.post(f"/mirror/check/{run_id}/accept", data=accept).status_code == 303
    assert [(a.account_id, a.symbol, a.broker_quantity, a.intended_quantity) for a in _accepted(s.env)] == [
        (a1, CE, -65, -130)
    ]
    kinds = _kinds(rows())
    assert kinds[(a1, CE)] == ("different", True, -130, -65)
    assert kinds[(a2, PE)][:2] == ("missing", False) and kinds[(a2, CE)][:2] == ("extra", False)
    assert s.client.get(f"/mirror/check?run={run_id}").get_data(as_text=True).count(">Accept</a>") == 2
    # The broker's quantity changes: the drift shows again.
    _set_quantity(s.env, a1, CE, -195)
    assert _kinds(rows())[(a1, CE)] == ("different", False, -130, -195)

    # While a run is still entering, its drifts are shown but not acted on.
    with s.env.database.session() as session:
        entering = session.get(StrategyRun, run_id)
        assert entering is not None
        entering.status = "entering"
    assert ">Bring in line</a>" not in s.client.get(f"/mirror/check/live?run={run_id}").get_data(as_text=True)
    assert (
        s.client.post(f"/mirror/check/{run_id}/fix", data={**form, "command_token": "p-3"}).status_code == 409
    )
    assert "still entering" in s.client.get(extra).get_data(as_text=True)
    # Another user's run, an account not in the row: 404; CSRF required.
    assert s.client.get(f"/mirror/check?run={s.other_run}").status_code == 404
    other = f"/mirror/check/{s.other_run}/fix?account={s.other_account}&symbol={PE}&exchange=NFO&product=NRML"
    assert s.client.get(other).status_code == 404
    assert s.client.get(f"/mirror/check/{s.other_run}/accept?account={s.other_account}").status_code == 404
    assert (
        s.client.get(f"/mirror/check/{run_id}/fix?account={s.other_account}&symbol={PE}").status_code == 404
    )
    no_csrf = {k: v for k, v in accept.items() if k != "csrf_token"}
    assert s.client.post(f"/mirror/check/{run_id}/accept", data=no_csrf).status_code == 400


def _accepted(env: WebEnv) -> list[MirrorAcceptance]:
    with env.database.session_factory() as session:
        return list(session.scalars(select(MirrorAcceptance).order_by(MirrorAcceptance.id)))


def _set_quantity(env: WebEnv, account_id: int, symbol: str, quantity: int) -> None:
    with env.database.session() as session:
        row = session.scalar(
            select(Position).where(Position.account_id == account_id, Position.symbol == symbol)
        )
        assert row is not None
        row.quantity = quantity
        row.updated_at = FRESH


# ------------------------------------------------------------------ regressions (issue 11 review)


def _rename(env: WebEnv, run_id: int, name: str) -> None:
    with env.database.session() as session:
        run = session.get(StrategyRun, run_id)
        assert run is not None
        strategy = session.get(Strategy, run.strategy_id)
        assert strategy is not None
        strategy.name = name


def _fix_form(s: Setup, account: int, symbol: str, broker: int, intended: int) -> dict[str, str]:
    return {
        "csrf_token": csrf_token(s.client, "/mirror"),
        "command_token": f"fix-{account}-{symbol}-{broker}",
        "account": str(account),
        "symbol": symbol,
        "exchange": "NFO",
        "product": "NRML",
        "broker": str(broker),
        "intended": str(intended),
    }


def _row_html(page: str, run_id: int, account: int, symbol: str) -> str:
    match = re.search(rf'<tr id="mc-{run_id}-{account}-{symbol}-NRML".*?</tr>', page, re.S)
    assert match, page[-3000:]
    return match.group(0)


def test_two_open_runs_on_one_account_share_the_position(db_url: str, tmp_path: Path) -> None:
    s = setup(db_url, tmp_path)
    a1 = s.accounts[0]
    first = make_run(s.env, s.user_id, [(a1, "BUY", PE, "active", 65, 0)])
    second = make_run(s.env, s.user_id, [(a1, "BUY", PE, "active", 65, 0), (a1, "SELL", CE, "active", 65, 0)])
    _rename(s.env, first, "Hedge A")
    _rename(s.env, second, "Hedge B")
    with s.env.database.session() as session:
        make_position(session, a1, PE, quantity=130, updated_at=FRESH)
        make_position(session, a1, CE, quantity=-65, updated_at=FRESH)
    page = s.client.get("/mirror/check").get_data(as_text=True)
    # Each run's share: 130 − the other's 65 = 65, in line for both (not two "different" drifts).
    for run_id in (first, second):
        row = _row_html(page, run_id, a1, PE)
        assert 'data-kind="ok"' in row and "shared with" in row
    assert _row_html(page, second, a1, CE).count('data-kind="ok"') == 1
    # One run's leg is closed at the broker: the drift shows, but Bring in line would touch the other
    # strategy's position: not offered, refused on POST.
    _set_quantity(s.env, a1, PE, 65)
    page = s.client.get("/mirror/check").get_data(as_text=True)
    for run_id, other in ((first, "Hedge B"), (second, "Hedge A")):
        row = _row_html(page, run_id, a1, PE)
        assert 'data-kind="missing"' in row and f"shared with {other}" in row
        assert "Bring in line" not in row and "Accept" not in row
    target = f"/mirror/check/{first}/fix?account={a1}&symbol={PE}&exchange=NFO&product=NRML"
    confirm = s.client.get(target).get_data(as_text=True)
    assert "shared with Hedge B" in confirm and "Yes, send" not in confirm
    assert s.client.post(f"/mirror/check/{first}/fix", data=_fix_form(s, a1, PE, 0, 65)).status_code == 409
    accept = {k: v for k, v in _fix_form(s, a1, PE, 0, 65).items() if k != "command_token"}
    assert s.client.post(f"/mirror/check/{first}/accept", data=accept).status_code == 409
    assert commands(s.env) == [] and _accepted(s.env) == []


def test_no_correction_while_an_exit_or_orders_are_in_flight(db_url: str, tmp_path: Path) -> None:
    s = setup(db_url, tmp_path)
    a1, a2 = s.accounts[0], s.accounts[1]
    run_id = make_run(
        s.env, s.user_id, [(a1, "BUY", PE, "exiting", 65, 0), (a2, "BUY", PE, "pending", 65, 0)]
    )
    with s.env.database.session() as session:
        # The positionbooks already show the exit's fill (flat) and not yet the entry: both "missing".
        make_position(session, a1, PE, quantity=0, updated_at=FRESH)
        make_position(session, a2, PE, quantity=0, updated_at=FRESH)
    page = s.client.get(f"/mirror/check?run={run_id}").get_data(as_text=True)
    row1, row2 = _row_html(page, run_id, a1, PE), _row_html(page, run_id, a2, PE)
    assert 'data-kind="missing"' in row1 and "exit in progress" in row1
    assert 'data-kind="missing"' in row2 and "orders in flight" in row2
    assert ">Bring in line</a>" not in page and ">Accept</a>" not in page
    for account in (a1, a2):
        form = _fix_form(s, account, PE, 0, 65)
        assert s.client.post(f"/mirror/check/{run_id}/fix", data=form).status_code == 409
    # The whole run exiting: nothing is offered on any of its rows either.
    with s.env.database.session() as session:
        run = session.get(StrategyRun, run_id)
        assert run is not None
        run.status = "exiting"
        for execution in session.scalars(select(StrategyExecution).where(StrategyExecution.run_id == run_id)):
            execution.status, execution.filled_quantity = "active", 65
    page = s.client.get(f"/mirror/check?run={run_id}").get_data(as_text=True)
    assert page.count("exit in progress") == 2 and ">Bring in line</a>" not in page
    assert s.client.post(f"/mirror/check/{run_id}/fix", data=_fix_form(s, a2, PE, 0, 65)).status_code == 409
    assert commands(s.env) == []


def test_leg_in_error_is_held_and_points_to_the_run_page(db_url: str, tmp_path: Path) -> None:
    s = setup(db_url, tmp_path)
    a1 = s.accounts[0]
    run_id = make_run(s.env, s.user_id, [(a1, "BUY", PE, "error", 65, 0), (a1, "SELL", CE, "active", 65, 0)])
    with s.env.database.session() as session:
        run = session.get(StrategyRun, run_id)
        assert run is not None
        run.status = "error"
        strategy_id = run.strategy_id
        make_position(session, a1, PE, quantity=65, updated_at=FRESH)
        make_position(session, a1, CE, quantity=-130, updated_at=FRESH)
        execution_id = session.scalar(
            select(StrategyExecution.id).where(
                StrategyExecution.run_id == run_id, StrategyExecution.status == "error"
            )
        )
    page = s.client.get("/mirror/check").get_data(as_text=True)
    # The run in error is checked; its failed exit still holds 65 (in line, not an "extra").
    row = _row_html(page, run_id, a1, PE)
    assert 'data-kind="ok"' in row and "Bring in line" not in row
    retry = f"/strategies/{strategy_id}/run/{run_id}/retry-exit?execution_id={execution_id}"
    closed = f"/strategies/{strategy_id}/run/{run_id}/closed-outside?execution_id={execution_id}"
    assert f'href="{retry}"' in row and f'href="{closed}"' in row
    # The broker closed it meanwhile: a drift, still resolved on the run page, never with an order.
    _set_quantity(s.env, a1, PE, 0)
    row = _row_html(s.client.get("/mirror/check").get_data(as_text=True), run_id, a1, PE)
    assert 'data-kind="missing"' in row and f'href="{retry}"' in row and "Bring in line" not in row
    assert s.client.post(f"/mirror/check/{run_id}/fix", data=_fix_form(s, a1, PE, 0, 65)).status_code == 409
    assert "Retry exit" in s.client.get(
        f"/mirror/check/{run_id}/fix?account={a1}&symbol={PE}&exchange=NFO&product=NRML"
    ).get_data(as_text=True)
    assert commands(s.env) == []
    # The CE leg of the same run (active, broker −130 for −65) is still corrected as usual.
    assert ">Bring in line</a>" in _row_html(page, run_id, a1, CE)


def test_freshness_is_the_positionbook_fetch_not_last_sync(db_url: str, tmp_path: Path) -> None:
    s = setup(db_url, tmp_path)
    a1, a2 = s.accounts[0], s.accounts[1]
    run_id = make_run(s.env, s.user_id, [(a1, "BUY", PE, "active", 65, 0), (a2, "BUY", PE, "active", 65, 0)])
    with s.env.database.session() as session:
        # a1: last_sync_at is fresh (funds answered) but the positionbook was refused (429) for a day.
        make_position(session, a1, PE, quantity=0, updated_at=START - timedelta(days=1))
        # a2: last_sync_at fresh, no positionbook ever stored: nothing says it is flat.
    page = s.client.get(f"/mirror/check?run={run_id}").get_data(as_text=True)
    for account in (a1, a2):
        row = _row_html(page, run_id, account, PE)
        assert 'data-kind="unknown"' in row and "Bring in line" not in row
    assert page.count("stale or missing: unknown, not compared") == 2


def test_an_empty_positionbook_read_just_now_shows_the_legs_missing(db_url: str, tmp_path: Path) -> None:
    # A flat account stores no positions row: only the read's own time (positions_synced_at, 0008)
    # tells "flat, read just now" (missing legs, correctable) from "never read" (unknown).
    s = setup(db_url, tmp_path)
    a1, a2 = s.accounts[0], s.accounts[1]
    run_id = make_run(s.env, s.user_id, [(a1, "BUY", PE, "active", 65, 0), (a2, "BUY", PE, "active", 65, 0)])
    with s.env.database.session() as session:
        book_mirror.store_positions(session, a1, [], fetched_at=FRESH)
        session.commit()
    page = s.client.get(f"/mirror/check?run={run_id}").get_data(as_text=True)
    assert 'data-kind="missing"' in _row_html(page, run_id, a1, PE)
    assert 'data-kind="unknown"' in _row_html(page, run_id, a2, PE)


def test_review_resubmitted_is_one_order_and_skips_halted_accounts(db_url: str, tmp_path: Path) -> None:
    s = setup(db_url, tmp_path)
    with s.env.database.session() as session:
        off = make_account(session, s.user_id, "Off", is_active=False, last_sync_at=FRESH).id
        halted = make_account(
            session, s.user_id, "Halted", entries_halted_reason="funds gap", last_sync_at=FRESH
        ).id
    page = s.client.get("/mirror").get_data(as_text=True)
    token = TOKEN_RE.search(page)
    assert token, "the form carries the send token from GET /mirror"
    form = order_form(s, command_token=token.group(1))
    form.update({f"acct-{off}": "on", f"mult-{off}": "1", f"acct-{halted}": "on", f"mult-{halted}": "1"})
    tokens = []
    for _ in range(2):  # the browser's "resubmit the form?" on Back / reload of the review page
        review = s.client.post("/mirror/review", data=form).get_data(as_text=True)
        found = TOKEN_RE.search(review)
        assert found
        tokens.append(found.group(1))
    assert tokens == [token.group(1)] * 2
    off_row = re.search(rf'<tr id="c-acct-{off}">.*?</tr>', review, re.S)
    halted_row = re.search(rf'<tr id="c-acct-{halted}">.*?</tr>', review, re.S)
    assert off_row and "Skipped:" in off_row.group(0) and "inactive" in off_row.group(0)
    assert (
        halted_row
        and "Skipped:" in halted_row.group(0)
        and "entries halted: funds gap" in halted_row.group(0)
    )
    assert "Yes, send to 3 account(s)" in review
    for sent in tokens:
        assert s.client.post("/mirror/send", data={**form, "command_token": sent}).status_code == 303
    assert len(commands(s.env)) == 1


def test_correction_result_shows_its_quantity_and_old_corrections_are_not_read(
    db_url: str, tmp_path: Path
) -> None:
    s = setup(db_url, tmp_path)
    a1 = s.accounts[0]
    run_id = make_run(s.env, s.user_id, [(a1, "BUY", PE, "active", 95, 0)])
    with s.env.database.session() as session:
        make_position(session, a1, PE, quantity=65, updated_at=FRESH)
        payload = {
            "symbol": PE,
            "exchange": "NFO",
            "product": "NRML",
            "side": "BUY",
            "lots": 1,
            "quantity": 30,
            "order_type": "MARKET",
            "accounts": [{"account_id": a1, "multiplier": "1"}],
            "run_id": run_id,
            "reason": "mirror_check",
        }
        # A correction stuck "running" from two days ago (wall clock) is not this drift's correction.
        old = EngineCommand(
            user_id=s.user_id,
            kind="mirror_order",
            token="old-fix",
            status="running",
            payload=payload,
            created_at=START - timedelta(days=2),
            updated_at=START - timedelta(days=2),
        )
        session.add(old)
        session.flush()
        old_id = old.id
    result = s.client.get(f"/mirror/orders/{old_id}").get_data(as_text=True)
    assert "30 units of" in result and "lot(s)" not in result
    page = s.client.get(f"/mirror/check?run={run_id}").get_data(as_text=True)
    row = _row_html(page, run_id, a1, PE)
    assert "correction requested" not in row and ">Bring in line</a>" in row
