"""The Execution page (issue 11 item 11) and its exit buttons (item 7) through the Flask client, on SQLite
and PostgreSQL: runs are planned with plan_run and their executions set as the engine would leave them;
the page and its live fragment show every status with its text, exact P&L, the run's commands; an exit
POST queues exactly one ``exit`` command per page token with the right scope and ids; another user's ids
are 404; CSRF is refused; "exit all" lists what it acts on; the strategy list shows state and today's P&L;
a leg in error offers "Retry exit" (one command per token, which the engine's claim takes to ``exiting``)
and "Closed outside…" (a checked price; the leg exited ``closed_externally`` with its P&L, the run closed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from algomirror.db.models import EngineCommand, Strategy, StrategyExecution, StrategyLeg, StrategyRun
from algomirror.engine.exit_records import claim_exit, target_states
from algomirror.engine.exits import parse_scope
from algomirror.engine.planning import PlannedExecution, plan_run, request_execute
from tests.factories import make_account, make_position
from tests.integration.web_support import START, WebEnv, add_user, csrf_token, make_env, signed_in

POLL = {"HX-Request": "true", "X-AlgoMirror-Poll": "1"}


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> WebEnv:
    web = make_env(db_url, tmp_path)
    yield web
    web.database.dispose()


@pytest.fixture
def alice(env: WebEnv) -> FlaskClient:
    return signed_in(env, "alice")


@dataclass
class Run:
    strategy_id: int
    run_id: int
    accounts: list[int]
    legs: list[int]
    # (account index, leg index) -> execution id
    executions: dict[tuple[int, int], int]

    @property
    def page(self) -> str:
        return f"/strategies/{self.strategy_id}/run/{self.run_id}"


def make_run(
    env: WebEnv,
    username: str,
    name: str,
    *,
    accounts: int = 2,
    started: Any = None,
    skipped: bool = False,
    token: str | None = None,
) -> Run:
    """A strategy with a BUY PE hedge and a SELL CE leg, planned on ``accounts`` accounts (pending)."""
    uid = env.user(username).id
    with env.database.session() as s:
        account_ids = [make_account(s, uid, f"{name} acct {i}").id for i in range(accounts)]
        strategy = Strategy(user_id=uid, name=name)
        strategy.legs.append(
            StrategyLeg(
                leg_number=1, instrument="NIFTY", product_type="options", action="BUY", option_type="PE"
            )
        )
        strategy.legs.append(
            StrategyLeg(
                leg_number=2, instrument="NIFTY", product_type="options", action="SELL", option_type="CE"
            )
        )
        s.add(strategy)
        s.flush()
        legs = [leg.id for leg in strategy.legs]
        skip_id = make_account(s, uid, f"{name} skipped").id if skipped else None
        planned = [
            PlannedExecution(
                leg_id=leg,
                account_id=account,
                symbol=f"NIFTY25NOV24000{'PE' if i == 0 else 'CE'}",
                exchange="NFO",
                product="MIS",
                quantity=75,
            )
            for account in account_ids
            for i, leg in enumerate(legs)
        ]
        run = plan_run(
            s,
            strategy.id,
            planned,
            now=started or START,
            skipped=[(skip_id, "funds unavailable: the funds read failed")] if skip_id else (),
        )
        request_execute(s, user_id=uid, run_id=run.id, token=token or f"run-{name}")
        executions = {
            (account_ids.index(e.account_id), legs.index(e.leg_id)): e.id
            for e in s.scalars(select(StrategyExecution).where(StrategyExecution.run_id == run.id))
        }
        s.commit()
        return Run(strategy.id, run.id, account_ids, legs, executions)


def set_execution(env: WebEnv, execution_id: int, **fields: Any) -> None:
    with env.database.session() as s:
        row = s.get(StrategyExecution, execution_id)
        assert row is not None
        for key, value in fields.items():
            setattr(row, key, value)
        s.commit()


def set_run(env: WebEnv, run_id: int, **fields: Any) -> None:
    with env.database.session() as s:
        row = s.get(StrategyRun, run_id)
        assert row is not None
        for key, value in fields.items():
            setattr(row, key, value)
        s.commit()


def exits(env: WebEnv) -> list[EngineCommand]:
    with env.database.session_factory() as s:
        return list(
            s.scalars(select(EngineCommand).where(EngineCommand.kind == "exit").order_by(EngineCommand.id))
        )


def row_html(page: str, execution_id: int) -> str:
    match = re.search(rf'<tr id="ex-{execution_id}".*?</tr>', page, re.S)
    assert match, f"no row for execution {execution_id}"
    return match.group(0)


def active(env: WebEnv, execution_id: int, entry: str, quantity: int = 75, **more: Any) -> None:
    set_execution(
        env,
        execution_id,
        status="active",
        filled_quantity=quantity,
        quantity=quantity,
        entry_price=Decimal(entry),
        entry_time=START,
        **more,
    )


def test_page_and_fragment_show_every_status_with_its_text(env: WebEnv, alice: FlaskClient) -> None:
    run = make_run(env, "alice", "Condor", accounts=3, skipped=True)
    ex = run.executions
    now = env.clock.now()
    # Account 0: an active hedge with a fresh mark, an exited short.
    active(
        env,
        ex[(0, 0)],
        "10.50",
        last_price=Decimal("12.00"),
        last_price_updated=now,
        last_price_source="ws",
        order_id="ORD-H1",
        entry_order_ids=["ORD-H1"],
    )
    set_execution(
        env,
        ex[(0, 1)],
        status="exited",
        filled_quantity=75,
        entry_price=Decimal("100.00"),
        exited_quantity=75,
        exit_price=Decimal("80.25"),
        exit_reason="manual",
        exit_reason_detail="exit of one leg",
        entry_order_ids=["ORD-S1"],
        exit_order_ids=["ORD-X1"],
    )
    # Account 1: a refused hedge; the short left in error without a mark.
    set_execution(env, ex[(1, 0)], status="failed", error_message="RMS: insufficient margin for NIFTY PE")
    set_execution(
        env,
        ex[(1, 1)],
        status="error",
        filled_quantity=50,
        entry_price=Decimal("20.00"),
        error_message="exit not filled: the position is still open",
    )
    # Account 2: an exiting short valued at the synced position's LTP, and a pending entry.
    set_execution(env, ex[(2, 1)], status="exiting", filled_quantity=25, entry_price=Decimal("30.00"))
    with env.database.session() as s:
        make_position(
            s, run.accounts[2], "NIFTY25NOV24000CE", exchange="NFO", quantity=-25, ltp=Decimal("28.00")
        )
        s.commit()
    set_execution(env, ex[(2, 0)], broker_order_status="open")
    set_run(
        env,
        run.run_id,
        spot={"NIFTY": "24025.00"},
        atm={"NIFTY": "24000"},
        base_premium=Decimal("89.50"),
        result={
            "skipped": [
                {
                    "account_id": env.accounts("alice")[-1].id,
                    "reason": "funds unavailable: the funds read failed",
                }
            ],
            "warnings": ["NIFTY spot quote was 4 s old"],
            "failures": [{"execution_id": ex[(1, 0)], "error": "RMS: insufficient margin for NIFTY PE"}],
        },
    )

    response = alice.get(run.page)
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    statuses = {key: re.search(r'data-status="([a-z]+)"', row_html(page, i)) for key, i in ex.items()}
    assert {k: m.group(1) for k, m in statuses.items() if m} == {
        (0, 0): "active",
        (0, 1): "exited",
        (1, 0): "failed",
        (1, 1): "error",
        (2, 0): "pending",
        (2, 1): "exiting",
    }
    hedge = row_html(page, ex[(0, 0)])
    assert '<span class="positive">112.50</span>' in hedge and "unrealised" in hedge
    assert "ws · 0 s ago" in hedge and "ORD-H1" in hedge
    assert f"scope=execution&amp;execution_id={ex[(0, 0)]}" in hedge  # the only row with an Exit
    short = row_html(page, ex[(0, 1)])
    assert '<span class="positive">1,481.25</span>' in short and "realised" in short
    assert "manual: exit of one leg" in short and "ORD-X1" in short and "80.25" in short
    assert "RMS: insufficient margin for NIFTY PE" in row_html(page, ex[(1, 0)])
    error_row = row_html(page, ex[(1, 1)])
    assert "the position is still open" in error_row and 'title="unknown"' in error_row
    exiting = row_html(page, ex[(2, 1)])
    assert '<span class="positive">50.00</span>' in exiting and "positions ·" in exiting
    assert "open" in row_html(page, ex[(2, 0)])
    for key, execution_id in ex.items():
        has_exit = "scope=execution" in row_html(page, execution_id)
        assert has_exit == (key == (0, 0)), key
    # Subtotals: account 0 known, account 1 unknown (no mark for 50 open units), run unknown.
    sub0 = re.search(rf'<tr class="subtotal" id="acct-sub-{run.accounts[0]}".*?</tr>', page, re.S)
    assert sub0 and "₹1,593.75" in sub0.group(0) and "Exit account" in sub0.group(0)
    # Account 1: its leg in error still has 50 units open, and a person's account exit retries it.
    sub1 = re.search(rf'<tr class="subtotal" id="acct-sub-{run.accounts[1]}".*?</tr>', page, re.S)
    assert sub1 and 'title="unknown"' in sub1.group(0) and "Exit account" in sub1.group(0)
    # "Retry exit" and "Closed outside…" only on the row in error.
    for key, execution_id in ex.items():
        html = row_html(page, execution_id)
        assert ("Retry exit" in html, "Closed outside…" in html) == ((key == (1, 1),) * 2), key
    error_row = row_html(page, ex[(1, 1)])
    assert f"/retry-exit?execution_id={ex[(1, 1)]}" in error_row
    assert f"/closed-outside?execution_id={ex[(1, 1)]}" in error_row
    total = re.search(r'<tr class="run-total".*?</tr>', page, re.S)
    assert total and 'title="unknown"' in total.group(0) and "Exit strategy" in total.group(0)
    assert "P&amp;L unknown: 1 open leg(s) without a fresh price" in page
    # Header: spot/ATM, base premium, skipped account with its reason, warning, failure, the entry command.
    assert "NIFTY 24025.00 / 24000" in page and "₹89.50" in page
    assert "Condor skipped" in page and "funds unavailable: the funds read failed" in page
    assert "NIFTY spot quote was 4 s old" in page and 'id="run-failures"' in page
    assert "Place the entry orders" in page and 'data-command-status="pending"' in page
    assert 'hx-swap="morph"' in page and "X-AlgoMirror-Poll" in page

    live = alice.get(f"{run.page}/live", headers=POLL)
    assert live.status_code == 200
    fragment = live.get_data(as_text=True)
    assert "<html" not in fragment and 'id="as-of"' in fragment
    assert row_html(fragment, ex[(0, 0)]) == hedge
    # The engine moves on: the fragment shows it without a reload.
    set_execution(
        env,
        ex[(0, 0)],
        status="exited",
        exited_quantity=75,
        exit_price=Decimal("11.00"),
        exit_reason="manual",
        exit_reason_detail="exit of one leg",
    )
    with env.database.session() as s:
        command = s.scalars(select(EngineCommand).where(EngineCommand.kind == "execute_run")).one()
        command.status, command.error = "failed", "attempts exhausted: 1 order unknown"
        s.commit()
    fragment = alice.get(f"{run.page}/live", headers=POLL).get_data(as_text=True)
    hedge = row_html(fragment, ex[(0, 0)])
    assert 'data-status="exited"' in hedge and '<span class="positive">37.50</span>' in hedge
    assert "scope=execution" not in hedge
    assert "attempts exhausted: 1 order unknown" in fragment and 'data-command-status="failed"' in fragment

    # Signed out: the poll gets 401 + HX-Redirect back to the page, never the login form.
    anonymous = env.client()
    gone = anonymous.get(
        f"{run.page}/live", headers={**POLL, "HX-Current-URL": f"http://localhost{run.page}"}
    )
    assert gone.status_code == 401 and "/login?next=" in gone.headers["HX-Redirect"]
    assert anonymous.get(run.page).status_code == 302


def test_run_page_picks_the_open_run_and_lists_past_runs_with_final_pnl(
    env: WebEnv, alice: FlaskClient
) -> None:
    first = make_run(env, "alice", "Straddle", accounts=1)
    for key, execution_id in first.executions.items():
        set_execution(
            env,
            execution_id,
            status="exited",
            filled_quantity=75,
            entry_price=Decimal("100.00"),
            exited_quantity=75,
            exit_price=Decimal("90.00") if key[1] == 1 else Decimal("95.00"),
            exit_reason="max_loss",
        )
    set_run(
        env,
        first.run_id,
        status="closed",
        ended_at=START + timedelta(hours=2),
        exit_reason="max_loss",
        final_pnl=Decimal("375.00"),
    )
    base = f"/strategies/{first.strategy_id}/run"
    page = alice.get(base).get_data(as_text=True)  # the latest run when none is open
    assert f"run #{first.run_id}" in page
    # BUY hedge 100 → 95 on 75: −375.00; SELL short 100 → 90 on 75: +750.00; run +375.00 (realised).
    assert '<span class="negative">-375.00</span>' in row_html(page, first.executions[(0, 0)])
    assert '<span class="positive">750.00</span>' in row_html(page, first.executions[(0, 1)])
    assert re.search(r'id="run-total-pnl"><span class="positive">₹375.00</span>', page)
    assert "Exit strategy" not in page and "Exit account" not in page
    # A second run opens: the bare URL shows it, and the first is listed with its final P&L.
    with env.database.session() as s:
        strategy = s.get(Strategy, first.strategy_id)
        assert strategy is not None
        account = first.accounts[0]
        second = plan_run(
            s,
            strategy.id,
            [PlannedExecution(first.legs[1], account, "NIFTY25NOV24100CE", "NFO", "MIS", 75)],
            now=START + timedelta(hours=3),
        )
        s.commit()
        second_id = second.id
    page = alice.get(base).get_data(as_text=True)
    assert f"run #{second_id}" in page
    past = re.search(rf'<tr id="past-{first.run_id}".*?</tr>', page, re.S)
    assert past and "375.00" in past.group(0) and "max loss" in past.group(0)
    assert f'href="/strategies/{first.strategy_id}/run/{first.run_id}"' in past.group(0)
    assert alice.get(f"/strategies/{first.strategy_id}/run/{second_id}").status_code == 200
    never = make_run(env, "alice", "Other", accounts=1)
    with env.database.session() as s:
        lonely = Strategy(user_id=env.user("alice").id, name="Never ran")
        s.add(lonely)
        s.commit()
        lonely_id = lonely.id
    assert "no run yet" in alice.get(f"/strategies/{lonely_id}/run").get_data(as_text=True)
    assert never.run_id != second_id


def exit_form(client: FlaskClient, run: Run, query: str) -> dict[str, str]:
    """The hidden fields of the confirm page's form (CSRF and command token included)."""
    page = client.get(f"{run.page}/exit?{query}").get_data(as_text=True)
    form = re.search(r'<form method="post".*?</form>', page, re.S)
    assert form, page[:2000]
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form.group(0)))


def test_exit_queues_one_command_per_token_with_scope_and_ids(env: WebEnv, alice: FlaskClient) -> None:
    run = make_run(env, "alice", "Spread")
    ex = run.executions
    for execution_id in ex.values():
        active(env, execution_id, "50.00")
    uid = env.user("alice").id

    confirm = alice.get(f"{run.page}/exit?scope=execution&execution_id={ex[(0, 1)]}")
    assert confirm.status_code == 200 and "Yes, exit" in confirm.get_data(as_text=True)
    assert exits(env) == [], "the confirm page queues nothing"
    form = exit_form(alice, run, f"scope=execution&execution_id={ex[(0, 1)]}")
    first = alice.post(f"{run.page}/exit", data=form)
    assert first.status_code == 303 and first.headers["Location"].endswith(run.page)
    again = alice.post(f"{run.page}/exit", data=form)  # a double click: the same token
    assert again.status_code == 303
    [command] = exits(env)
    assert (command.user_id, command.status, command.token) == (uid, "pending", form["command_token"])
    # A person's exit (reason manual) also retries legs in error (exit_planning.request_exit).
    assert command.payload == {
        "scope": "execution",
        "reason": "manual",
        "retry_errors": True,
        "execution_id": ex[(0, 1)],
        "run_id": run.run_id,
        "account_id": run.accounts[0],
    }
    page = alice.get(run.page).get_data(as_text=True)
    assert "queued (1 open execution(s))" in page or "This exit is already requested." in page
    assert "Exit one leg" in page  # the command's progress on the page

    form = exit_form(alice, run, f"scope=account&account_id={run.accounts[1]}")
    assert alice.post(f"{run.page}/exit", data=form).status_code == 303
    assert exits(env)[-1].payload == {
        "scope": "account",
        "reason": "manual",
        "retry_errors": True,
        "run_id": run.run_id,
        "account_id": run.accounts[1],
    }
    form = exit_form(alice, run, "scope=run")
    alice.post(f"{run.page}/exit", data=form)
    alice.post(f"{run.page}/exit", data=form)
    assert [c.payload for c in exits(env)][2:] == [
        {"scope": "run", "reason": "manual", "retry_errors": True, "run_id": run.run_id}
    ]
    assert len({c.token for c in exits(env)}) == 3
    assert env.actions("alice").count("strategy_exit_requested") == 3

    # Nothing open on an execution: no command, a warning.
    set_execution(env, ex[(1, 0)], status="exited", exited_quantity=75, exit_price=Decimal("40"))
    form = exit_form(alice, run, f"scope=account&account_id={run.accounts[0]}")
    form_exited = dict(form, scope="execution", execution_id=str(ex[(1, 0)]))
    form_exited.pop("account_id")
    done = alice.post(f"{run.page}/exit", data=form_exited)
    assert done.status_code == 303 and len(exits(env)) == 3
    assert "has no open position" in alice.get(run.page).get_data(as_text=True)
    # A missing or over-long token: the confirm page again (400), nothing queued.
    for bad in ("", "x" * 101):
        reply = alice.post(f"{run.page}/exit", data=dict(form, command_token=bad))
        assert reply.status_code == 400 and "out of date" in reply.get_data(as_text=True)
    assert alice.post(f"{run.page}/exit", data=dict(form, scope="everything")).status_code == 400
    assert len(exits(env)) == 3


def test_csrf_is_refused(env: WebEnv, alice: FlaskClient) -> None:
    run = make_run(env, "alice", "Guarded", accounts=1)
    active(env, run.executions[(0, 0)], "10.00")
    form = exit_form(alice, run, "scope=run")
    del form["csrf_token"]
    assert alice.post(f"{run.page}/exit", data=form).status_code == 400
    assert alice.post(f"{run.page}/exit", data=dict(form, csrf_token="forged")).status_code == 400
    page = alice.get("/strategies/exit-all").get_data(as_text=True)
    token = re.search(r'name="command_token" value="([^"]+)"', page)
    assert token
    assert alice.post("/strategies/exit-all", data={"command_token": token.group(1)}).status_code == 400
    assert exits(env) == []


def test_another_users_strategy_run_execution_or_account_is_404(env: WebEnv, alice: FlaskClient) -> None:
    bob_client = signed_in(env, "bob")
    mine = make_run(env, "alice", "Mine")
    other = make_run(env, "alice", "Second of mine", accounts=1)
    bob = make_run(env, "bob", "Bobs")
    for run in (mine, other, bob):
        for execution_id in run.executions.values():
            active(env, execution_id, "10.00")
    assert bob_client.get(bob.page).status_code == 200
    form = exit_form(alice, mine, "scope=run")
    gets = [
        f"/strategies/{bob.strategy_id}/run",
        bob.page,
        f"{bob.page}/live",
        f"/strategies/{mine.strategy_id}/run/{bob.run_id}",
        f"/strategies/{mine.strategy_id}/run/{other.run_id}",  # my run, but of another strategy
        f"{mine.page}/exit?scope=execution&execution_id={bob.executions[(0, 0)]}",
        f"{mine.page}/exit?scope=execution&execution_id={other.executions[(0, 0)]}",
        f"{mine.page}/exit?scope=account&account_id={bob.accounts[0]}",
        f"{mine.page}/exit?scope=account&account_id={other.accounts[0]}",
        f"{mine.page}/exit?scope=execution&execution_id=99999999",
        f"{bob.page}/exit?scope=run",
    ]
    for path in gets:
        assert alice.get(path).status_code == 404, path
    posts = [
        (f"{bob.page}/exit", {"scope": "run"}),
        (f"{mine.page}/exit", {"scope": "execution", "execution_id": str(bob.executions[(0, 1)])}),
        (f"{mine.page}/exit", {"scope": "account", "account_id": str(bob.accounts[0])}),
    ]
    for path, fields in posts:
        data = {"csrf_token": form["csrf_token"], "command_token": f"t-{len(fields)}-{path}"[:90], **fields}
        assert alice.post(path, data=data).status_code == 404, (path, fields)
    assert exits(env) == []
    assert "Bobs" not in alice.get("/strategies/exit-all").get_data(as_text=True)


def test_exit_all_lists_what_it_exits_and_queues_one_command(env: WebEnv, alice: FlaskClient) -> None:
    first = make_run(env, "alice", "Alpha")
    second = make_run(env, "alice", "Beta", accounts=1)
    add_user(env, "bob")
    bob = make_run(env, "bob", "Bobs", accounts=1)
    for execution_id in list(first.executions.values()) + list(bob.executions.values()):
        active(env, execution_id, "10.00")
    set_execution(env, first.executions[(1, 0)], status="exited", exited_quantity=75, exit_price=Decimal(9))
    # Beta's executions stay pending (entry orders working): exit all cancels them first.
    assert 'id="exit-all-link"' in alice.get("/").get_data(as_text=True)
    assert 'id="exit-all-link"' in alice.get("/positions").get_data(as_text=True)
    page = alice.get("/strategies/exit-all?back=/positions").get_data(as_text=True)
    assert "5 open execution(s) in 2 strategies" in page
    counts = dict(re.findall(r'<tr id="(xa-s\d+-a\d+)">.*?<td class="num">(\d+)</td>', page, re.S))
    assert counts == {
        f"xa-s{first.strategy_id}-a{first.accounts[0]}": "2",
        f"xa-s{first.strategy_id}-a{first.accounts[1]}": "1",
        f"xa-s{second.strategy_id}-a{second.accounts[0]}": "2",
    }
    assert "Bobs" not in page
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page))
    assert fields["back"] == "/positions"
    done = alice.post("/strategies/exit-all", data=fields)
    assert done.status_code == 303 and done.headers["Location"].endswith("/positions")
    alice.post("/strategies/exit-all", data=fields)
    [command] = exits(env)
    assert command.payload == {"scope": "all", "reason": "exit_all", "retry_errors": True}
    assert command.user_id == env.user("alice").id
    assert "Exit all queued: 5 open execution(s)" in alice.get("/positions").get_data(as_text=True)
    assert "Exit all" in alice.get(first.page).get_data(as_text=True)  # shown among the run's commands
    bad = alice.post("/strategies/exit-all", data=dict(fields, back="//evil.example/"))
    assert bad.headers["Location"].endswith("/")  # an off-site back is ignored
    assert len(exits(env)) == 1


def test_strategy_list_shows_state_and_todays_pnl(env: WebEnv, alice: FlaskClient) -> None:
    day = START  # 09:30 IST on the test clock's day
    entering = make_run(env, "alice", "Entering", accounts=1)
    live = make_run(env, "alice", "Live", accounts=1)
    closed = make_run(env, "alice", "Closed", accounts=1)
    failed = make_run(env, "alice", "Failed", accounts=1)
    unknown = make_run(env, "alice", "Unknown", accounts=1)
    yesterday = make_run(env, "alice", "Yesterday", accounts=1, started=day - timedelta(days=1))
    now = env.clock.now()
    # Live: BUY 10 → mark 12 on 75 (+150.00), SELL 50 → mark 45 on 75 (+375.00).
    active(env, live.executions[(0, 0)], "10.00", last_price=Decimal(12), last_price_updated=now)
    active(env, live.executions[(0, 1)], "50.00", last_price=Decimal(45), last_price_updated=now)
    set_run(env, live.run_id, status="active")
    # Closed: SELL 50 → 40 on 75 realised (+750.00), the hedge BUY 10 → 8 (−150.00).
    for key, (entry, out) in {(0, 0): ("10", "8"), (0, 1): ("50", "40")}.items():
        set_execution(
            env,
            closed.executions[key],
            status="exited",
            filled_quantity=75,
            entry_price=Decimal(entry),
            exited_quantity=75,
            exit_price=Decimal(out),
        )
    set_run(env, closed.run_id, status="closed", ended_at=now, final_pnl=Decimal("600.00"))
    for execution_id in failed.executions.values():
        set_execution(env, execution_id, status="failed", error_message="rejected")
    set_run(env, failed.run_id, status="failed", ended_at=now)
    # Unknown: an open short whose mark is too old to use.
    active(
        env,
        unknown.executions[(0, 1)],
        "50.00",
        last_price=Decimal(45),
        last_price_updated=now - timedelta(hours=1),
    )
    set_run(env, unknown.run_id, status="active")
    # Carried over from yesterday, still open: its hedge BUY 10 → 8 exited yesterday (−150.00, yesterday's),
    # the short SELL 50 → mark 45 on 75 open (+375.00 unrealised, today's).
    active(env, yesterday.executions[(0, 1)], "50.00", last_price=Decimal(45), last_price_updated=now)
    set_execution(
        env,
        yesterday.executions[(0, 0)],
        status="exited",
        filled_quantity=75,
        entry_price=Decimal(10),
        exited_quantity=75,
        exit_price=Decimal(8),
        exit_time=day - timedelta(days=1, hours=-4),
    )
    set_run(env, yesterday.run_id, status="active")
    # Started yesterday, exited today: the short's exit today (+750.00) counts, the hedge's yesterday not.
    overnight = make_run(env, "alice", "Overnight", accounts=1, started=day - timedelta(days=1))
    for key, (entry, out, when) in {
        (0, 0): ("10", "8", day - timedelta(days=1, hours=-4)),
        (0, 1): ("50", "40", now),
    }.items():
        set_execution(
            env,
            overnight.executions[key],
            status="exited",
            filled_quantity=75,
            entry_price=Decimal(entry),
            exited_quantity=75,
            exit_price=Decimal(out),
            exit_time=when,
        )
    set_run(env, overnight.run_id, status="closed", ended_at=now, final_pnl=Decimal("600.00"))
    # Carried over with a mark too old to use: unknown, never 0.
    stale = make_run(env, "alice", "Stale", accounts=1, started=day - timedelta(days=1))
    active(
        env,
        stale.executions[(0, 1)],
        "50.00",
        last_price=Decimal(45),
        last_price_updated=now - timedelta(hours=1),
    )
    set_run(env, stale.run_id, status="active")
    # Started and closed yesterday: nothing of it is today's.
    old = make_run(env, "alice", "Old", accounts=1, started=day - timedelta(days=1))
    set_execution(
        env,
        old.executions[(0, 1)],
        status="exited",
        filled_quantity=75,
        entry_price=Decimal(50),
        exited_quantity=75,
        exit_price=Decimal(40),
        exit_time=day - timedelta(days=1, hours=-4),
    )
    for execution_id in (old.executions[(0, 0)],):
        set_execution(env, execution_id, status="failed", error_message="rejected")
    set_run(env, old.run_id, status="closed", ended_at=day - timedelta(days=1, hours=-5))
    with env.database.session() as s:
        s.add(Strategy(user_id=env.user("alice").id, name="Idle"))
        s.commit()
        idle = s.scalar(select(Strategy.id).where(Strategy.name == "Idle"))

    page = alice.get("/strategies/").get_data(as_text=True)

    def cells(strategy_id: int | None) -> tuple[str, str]:
        row = re.search(rf'<tr id="strat-{strategy_id}".*?</tr>', page, re.S)
        assert row, strategy_id
        state = re.search(r'data-run-state="([^"]+)"', row.group(0))
        pnl = re.search(r"data-today-pnl>(.*?)</td>", row.group(0), re.S)
        assert state and pnl
        return state.group(1), pnl.group(1)

    assert cells(entering.strategy_id) == ("entering", '<span class="zero">0.00</span>')
    assert cells(live.strategy_id) == ("active", '<span class="positive">525.00</span>')
    assert cells(closed.strategy_id) == ("closed", '<span class="positive">600.00</span>')
    assert cells(failed.strategy_id) == ("error", '<span class="zero">0.00</span>')
    assert cells(unknown.strategy_id) == ("active", '<span class="unknown" title="unknown">—</span>')
    # Regression: an open run carried over from an earlier day showed "—". Today's P&L = realised
    # today + unrealised of open runs.
    assert cells(yesterday.strategy_id) == ("active", '<span class="positive">375.00</span>')
    assert cells(overnight.strategy_id) == ("closed", '<span class="positive">750.00</span>')
    assert cells(stale.strategy_id) == ("active", '<span class="unknown" title="unknown">—</span>')
    assert cells(old.strategy_id) == ("closed", "—")  # no run today: no P&L for today
    assert cells(idle) == ("no run", "—")
    assert f'href="/strategies/{live.strategy_id}/run/{live.run_id}"' in page
    assert csrf_token(alice, "/strategies/")


def test_bare_run_url_follows_the_execute_command_until_the_run_exists(
    env: WebEnv, alice: FlaskClient
) -> None:
    uid = env.user("alice").id
    with env.database.session() as s:
        strategy = Strategy(user_id=uid, name="Fresh")
        s.add(strategy)
        s.flush()
        sid = strategy.id
        s.add(EngineCommand(user_id=uid, kind="execute_strategy", payload={"strategy_id": sid}, token="ex-1"))
        # Another strategy's execute says nothing about this one.
        s.add(EngineCommand(user_id=uid, kind="execute_strategy", payload={"strategy_id": 0}, token="ex-0"))
        s.commit()
    page = alice.get(f"/strategies/{sid}/run").get_data(as_text=True)
    assert 'id="run-planning" data-command-status="pending"' in page and "waiting for the engine" in page
    assert '<meta http-equiv="refresh" content="3">' in page and "no run yet" in page
    with env.database.session() as s:
        command = s.scalars(select(EngineCommand).where(EngineCommand.token == "ex-1")).one()
        command.status, command.error = "failed", "no leg could be resolved: NIFTY option chain unavailable"
        s.commit()
    page = alice.get(f"/strategies/{sid}/run").get_data(as_text=True)
    assert "Execute failed" in page and "NIFTY option chain unavailable" in page
    assert "http-equiv" not in page
    # The next Execute planned a run: the page is the run's, with its entry among its commands.
    run = make_run(env, "alice", "Planned", accounts=1)
    with env.database.session() as s:
        s.add(
            EngineCommand(
                user_id=uid,
                kind="execute_strategy",
                payload={"strategy_id": run.strategy_id},
                token="ex-2",
                status="done",
                result={"run_id": run.run_id},
            )
        )
        s.commit()
    page = alice.get(f"/strategies/{run.strategy_id}/run").get_data(as_text=True)
    assert 'id="run-planning"' not in page and "Plan and execute" in page
    assert f"run #{run.run_id}" in page


# ------------------------------------------------------------------------------ out of error (§5.10)


def in_error(env: WebEnv, execution_id: int, entry: str, quantity: int = 75, **more: Any) -> None:
    """A leg whose exit used up its first round of attempts (5), as exit_records.mark_error leaves it."""
    fields: dict[str, Any] = {
        "status": "error",
        "filled_quantity": quantity,
        "quantity": quantity,
        "entry_price": Decimal(entry),
        "entry_time": START,
        "exit_retry_count": 5,
        "exit_reason": "manual",
        "error_message": "exit attempt 5 filled 0 of 75: RMS: order rejected; the position is still open",
    }
    set_execution(env, execution_id, **{**fields, **more})


def resolve_form(client: FlaskClient, path: str) -> dict[str, str]:
    """The hidden fields of a retry / closed-outside page's form."""
    page = client.get(path).get_data(as_text=True)
    form = re.search(r'<form method="post".*?</form>', page, re.S)
    assert form, page[:2000]
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form.group(0)))


def execution(env: WebEnv, execution_id: int) -> StrategyExecution:
    with env.database.session_factory() as s:
        row = s.get(StrategyExecution, execution_id)
        assert row is not None
        return row


def test_retry_exit_queues_one_command_per_token_and_the_engine_takes_the_leg_to_exiting(
    env: WebEnv, alice: FlaskClient
) -> None:
    run = make_run(env, "alice", "Stuck")
    ex = run.executions
    for execution_id in ex.values():
        active(env, execution_id, "50.00")
    in_error(env, ex[(0, 1)], "50.00")
    set_run(env, run.run_id, status="error")
    uid = env.user("alice").id
    retry = f"{run.page}/retry-exit?execution_id={ex[(0, 1)]}"

    page = alice.get(run.page).get_data(as_text=True)
    assert 'data-action="retry-exit"' in row_html(page, ex[(0, 1)])
    # The account exit counts the leg in error: a person's exit retries it.
    sub0 = exit_form(alice, run, f"scope=account&account_id={run.accounts[0]}")
    assert sub0["account_id"] == str(run.accounts[0])
    confirm_page = alice.get(f"{run.page}/exit?scope=account&account_id={run.accounts[0]}")
    assert '<dd id="exit-count">2</dd>' in confirm_page.get_data(as_text=True)
    assert "4 open execution(s) in 1 strategy" in alice.get("/strategies/exit-all").get_data(as_text=True)

    confirm = alice.get(retry).get_data(as_text=True)
    assert "Yes, retry the exit" in confirm and "RMS: order rejected" in confirm
    assert exits(env) == [], "the confirm page queues nothing"
    form = resolve_form(alice, retry)
    assert form["execution_id"] == str(ex[(0, 1)]) and form["command_token"]
    first = alice.post(f"{run.page}/retry-exit", data=form)
    assert first.status_code == 303 and first.headers["Location"].endswith(run.page)
    again = alice.post(f"{run.page}/retry-exit", data=form)  # a double click: the same token
    assert again.status_code == 303
    [command] = exits(env)
    assert (command.user_id, command.status, command.token) == (uid, "pending", form["command_token"])
    assert command.payload == {
        "scope": "execution",
        "reason": "manual",
        "retry_errors": True,
        "execution_id": ex[(0, 1)],
        "run_id": run.run_id,
        "account_id": run.accounts[0],
    }
    page = alice.get(run.page).get_data(as_text=True)
    assert "Retry of the exit of" in page or "This retry is already requested." in page
    assert env.actions("alice").count("strategy_exit_retry_requested") == 1
    assert execution(env, ex[(0, 1)]).status == "error", "the web changes no execution"

    # The engine's side of that command (exits.parse_scope → target_states → claim_exit): the leg in
    # error is taken to exiting with the first attempt of the next round, and the run is active again.
    scope = parse_scope(command.payload)
    with env.database.session_factory() as s:
        states = target_states(
            s, uid, scope=scope.kind, execution_id=scope.execution_id, with_errors=scope.retry_errors
        )
    assert [(st.execution_id, st.status) for st in states] == [(ex[(0, 1)], "error")]
    assert claim_exit(env.database, ex[(0, 1)], scope.reason, scope.detail, from_error=True) == 6
    row = execution(env, ex[(0, 1)])
    assert (row.status, row.exit_retry_count, row.error_message) == ("exiting", 6, None)
    with env.database.session_factory() as s:
        reopened = s.get(StrategyRun, run.run_id)
        assert reopened is not None and reopened.status == "active"
    page = alice.get(run.page).get_data(as_text=True)
    assert "Retry exit" not in row_html(page, ex[(0, 1)])

    # A leg not in error: nothing queued, a warning; a missing token: the page again (400).
    page = alice.get(f"{run.page}/retry-exit?execution_id={ex[(1, 1)]}").get_data(as_text=True)
    assert "not in error" in page and "Yes, retry" not in page
    token = {"csrf_token": csrf_token(alice, run.page), "command_token": "other-token"}
    done = alice.post(f"{run.page}/retry-exit", data={**token, "execution_id": str(ex[(1, 1)])})
    assert done.status_code == 303 and len(exits(env)) == 1
    assert "Nothing to retry" in alice.get(run.page).get_data(as_text=True)
    for stale in ("", "x" * 101):
        bad = alice.post(
            f"{run.page}/retry-exit", data={**token, "command_token": stale, "execution_id": str(ex[(1, 1)])}
        )
        assert bad.status_code == 400 and "out of date" in bad.get_data(as_text=True)
    assert len(exits(env)) == 1


def test_closed_outside_checks_the_price_then_records_the_leg_and_closes_the_run(
    env: WebEnv, alice: FlaskClient
) -> None:
    run = make_run(env, "alice", "Orphan", accounts=1)
    hedge, short = run.executions[(0, 0)], run.executions[(0, 1)]
    active(env, hedge, "10.00")
    # The short's exit gave up with 50 of 50 units open: SELL at 20.00.
    in_error(env, short, "20.00", quantity=50)
    set_run(env, run.run_id, status="error")
    path = f"{run.page}/closed-outside"

    page = alice.get(f"{path}?execution_id={short}").get_data(as_text=True)
    assert "AlgoMirror will not send any order." in page and "closed at the price you enter" in page
    assert 'name="price"' in page
    fields = resolve_form(alice, f"{path}?execution_id={short}")
    assert fields["execution_id"] == str(short) and fields["csrf_token"]
    before = execution(env, short)
    for bad, why in [
        ("", "Enter the price the position was closed at."),
        ("abc", "Enter the price as a number"),
        ("NaN", "Enter the price as a number"),
        ("Infinity", "Enter the price as a number"),
        ("0", "The price must be more than 0."),
        ("-5", "The price must be more than 0."),
        ("1.23456", "Use at most 4 decimal places."),
        ("99999999", "too large"),
    ]:
        reply = alice.post(path, data={**fields, "price": bad})
        text = reply.get_data(as_text=True)
        assert reply.status_code == 400, bad
        assert 'id="closed-price-error"' in text and why in text, bad
        assert f'value="{bad}"' in text, "the form keeps what was typed"
        assert 'aria-invalid="true"' in text
    after = execution(env, short)
    assert (
        (after.status, after.exit_price, after.exited_quantity, after.realized_pnl)
        == (
            before.status,
            before.exit_price,
            before.exited_quantity,
            before.realized_pnl,
        )
        == ("error", None, 0, None)
    )

    # A good price: exited, closed externally, P&L (20.00 − 23.45) × 50 = −172.50; nothing queued.
    done = alice.post(path, data={**fields, "price": " 23.45 "})
    assert done.status_code == 303 and done.headers["Location"].endswith(run.page)
    row = execution(env, short)
    assert (row.status, row.exit_reason, row.exited_quantity) == ("exited", "closed_externally", 50)
    assert row.exit_price == Decimal("23.45") and row.realized_pnl == Decimal("-172.50")
    assert exits(env) == []
    assert env.actions("alice").count("strategy_leg_closed_outside") == 1
    with env.database.session_factory() as s:
        open_run = s.get(StrategyRun, run.run_id)
        assert open_run is not None and (open_run.status, open_run.ended_at) == ("active", None)
    page = alice.get(run.page).get_data(as_text=True)
    assert "closed outside AlgoMirror at ₹23.45" in page
    assert "closed externally" in row_html(page, short) and "Closed outside…" not in row_html(page, short)
    # A second submit of the same form: nothing written again, it says so.
    alice.post(path, data={**fields, "price": "30"})
    assert execution(env, short).exit_price == Decimal("23.45")
    assert "Already recorded" in alice.get(run.page).get_data(as_text=True)
    assert env.actions("alice").count("strategy_leg_closed_outside") == 1

    # The hedge, the last open leg: 25 of 75 sold by AlgoMirror at 12.00, then it gave up; the other 50
    # closed outside at 11.00. Exit average (25 × 12 + 50 × 11) / 75 = 11.3333; P&L
    # (11.3333 − 10.00) × 75 = 99.9975 → 100.00. The run closes with −172.50 + 100.00 = −72.50.
    in_error(env, hedge, "10.00", exited_quantity=25, exit_price=Decimal("12.00"))
    set_run(env, run.run_id, status="error")
    fields = resolve_form(alice, f"{path}?execution_id={hedge}")
    assert alice.post(path, data={**fields, "price": "11"}).status_code == 303
    row = execution(env, hedge)
    assert (row.status, row.exit_reason, row.exited_quantity) == ("exited", "closed_externally", 75)
    assert row.exit_price == Decimal("11.3333") and row.realized_pnl == Decimal("100.00")
    with env.database.session_factory() as s:
        closed = s.get(StrategyRun, run.run_id)
        assert closed is not None and closed.status == "closed" and closed.ended_at is not None
        assert closed.exit_reason == "closed_externally" and closed.final_pnl == Decimal("-72.50")
    assert exits(env) == []


def test_retry_and_closed_outside_refuse_another_users_leg_and_a_missing_csrf_token(
    env: WebEnv, alice: FlaskClient
) -> None:
    mine = make_run(env, "alice", "Mine", accounts=1)
    other = make_run(env, "alice", "Second of mine", accounts=1)
    bob_client = signed_in(env, "bob")
    bob = make_run(env, "bob", "Bobs", accounts=1)
    for run in (mine, other, bob):
        for execution_id in run.executions.values():
            in_error(env, execution_id, "10.00")
    assert bob_client.get(f"{bob.page}/retry-exit?execution_id={bob.executions[(0, 0)]}").status_code == 200
    fields = resolve_form(alice, f"{mine.page}/retry-exit?execution_id={mine.executions[(0, 0)]}")
    csrf = fields["csrf_token"]
    strangers = [
        (mine.page, bob.executions[(0, 0)]),  # bob's leg on my run's URL
        (mine.page, other.executions[(0, 0)]),  # my leg, but of another run
        (bob.page, bob.executions[(0, 0)]),  # bob's run
        (mine.page, 99999999),
    ]
    for page, execution_id in strangers:
        for action in ("retry-exit", "closed-outside"):
            url = f"{page}/{action}"
            assert alice.get(f"{url}?execution_id={execution_id}").status_code == 404, url
            data = {"csrf_token": csrf, "command_token": f"t-{action}-{execution_id}", "price": "5"}
            assert alice.post(url, data={**data, "execution_id": str(execution_id)}).status_code == 404
    # CSRF: missing or forged, refused on both; nothing queued or written.
    target = mine.executions[(0, 0)]
    for action in ("retry-exit", "closed-outside"):
        for token in (None, "forged"):
            data = {"command_token": f"c-{action}-{token}", "execution_id": str(target), "price": "5"}
            if token is not None:
                data["csrf_token"] = token
            assert alice.post(f"{mine.page}/{action}", data=data).status_code == 400
    assert exits(env) == []
    for run in (mine, other, bob):
        for execution_id in run.executions.values():
            row = execution(env, execution_id)
            assert (row.status, row.exit_price, row.realized_pnl) == ("error", None, None)
    assert env.actions("alice").count("strategy_leg_closed_outside") == 0


def test_exit_strategy_sits_in_the_run_header(env: WebEnv, alice: FlaskClient) -> None:
    """Regression: "Exit strategy" was only in the table's footer, inside the scroll box (off screen on a
    long run). The header carries it (stable ids for the morph); the footer keeps its own."""
    run = make_run(env, "alice", "Head", accounts=2)
    header = re.compile(r'<section class="card run-head" id="run-header".*?</section>', re.S)
    for key in run.executions:
        active(env, run.executions[key], "10.00")
    set_run(env, run.run_id, status="active")
    for path in (run.page, f"{run.page}/live"):
        html = alice.get(path).get_data(as_text=True)
        head = header.search(html)
        assert head, path
        button = re.search(
            r'<a class="button danger" id="run-exit" href="([^"]+)"[^>]*>Exit strategy', head.group(0)
        )
        assert button and button.group(1).replace("&amp;", "&") == f"{run.page}/exit?scope=run", path
        assert "(4 open)" in head.group(0)
        assert html.index('id="run-exit"') < html.index('id="run-table"')
        assert 'id="run-total-exit"' in html
    # The header's link is the confirmation page of the run's exit.
    confirm = alice.get(f"{run.page}/exit?scope=run")
    assert confirm.status_code == 200 and "the whole strategy run" in confirm.get_data(as_text=True)
    # Nothing open: the header keeps its (empty) actions node for the morph, without the button.
    for execution_id in run.executions.values():
        set_execution(env, execution_id, status="failed", filled_quantity=0, error_message="rejected")
    set_run(env, run.run_id, status="failed", ended_at=START)
    for path in (run.page, f"{run.page}/live"):
        head = header.search(alice.get(path).get_data(as_text=True))
        assert head and '<p class="run-actions" id="run-actions"></p>' in head.group(0), path


def test_closed_outside_pnl_comes_from_the_parts_not_the_rounded_average(
    env: WebEnv, alice: FlaskClient
) -> None:
    """Regression: the P&L of a leg partly exited by AlgoMirror and the rest closed outside came from the
    exit average rounded to 4 decimals. SELL 1,950 at 100.00; 650 bought back by AlgoMirror at 120.50,
    1,300 outside at 110.07: exit value 78,325 + 1,43,091 = 2,21,416 → P&L −26,416.00 exactly. The
    average 113.546666… is stored as 113.5467 (display), which would have given −26,416.065 → −26,416.06."""
    run = make_run(env, "alice", "Parts", accounts=1)
    hedge, short = run.executions[(0, 0)], run.executions[(0, 1)]
    set_execution(
        env,
        hedge,
        status="exited",
        filled_quantity=75,
        entry_price=Decimal(10),
        exited_quantity=75,
        exit_price=Decimal(11),
        realized_pnl=Decimal("75.00"),
    )
    in_error(env, short, "100.00", quantity=1950, exited_quantity=650, exit_price=Decimal("120.50"))
    set_run(env, run.run_id, status="error")
    path = f"{run.page}/closed-outside"
    fields = resolve_form(alice, f"{path}?execution_id={short}")
    assert alice.post(path, data={**fields, "price": "110.07"}).status_code == 303
    row = execution(env, short)
    assert (row.status, row.exit_reason, row.exited_quantity) == ("exited", "closed_externally", 1950)
    assert row.exit_price == Decimal("113.5467")  # the average, for display
    assert row.realized_pnl == Decimal("-26416.00")
    with env.database.session_factory() as s:
        closed = s.get(StrategyRun, run.run_id)
        assert closed is not None and closed.status == "closed"
        assert closed.final_pnl == Decimal("-26341.00")  # −26,416.00 + 75.00
