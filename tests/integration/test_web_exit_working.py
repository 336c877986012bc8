"""Review regression (issue 11): "closed outside" on a leg whose exit order of ours is still working
is refused on the page itself, inline, naming the order — never a 500, nothing written."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from algomirror.db.models import OrderIntent, StrategyExecution
from algomirror.domain import order_state
from tests.integration.test_web_strategy_runs import (
    execution,
    in_error,
    make_run,
    resolve_form,
    set_run,
)
from tests.integration.web_support import WebEnv, make_env, signed_in


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Iterator[WebEnv]:
    web = make_env(db_url, tmp_path)
    yield web
    web.database.dispose()


@pytest.fixture
def alice(env: WebEnv) -> FlaskClient:
    return signed_in(env, "alice")


def test_closed_outside_refused_inline_while_an_exit_order_of_ours_works(
    env: WebEnv, alice: FlaskClient
) -> None:
    run = make_run(env, "alice", "Working", accounts=1)
    short = run.executions[(0, 1)]
    in_error(env, short, "20.00", quantity=50)
    set_run(env, run.run_id, status="error")
    with env.database.session() as s:
        row = s.get(StrategyExecution, short)
        assert row is not None
        intent = OrderIntent(
            key=f"exec:{short}:exit:1:1",
            execution_id=short,
            account_id=row.account_id,
            purpose="exit",
            symbol=row.symbol or "X",
            exchange="NFO",
            product="NRML",
            side="BUY",
            quantity=50,
            order_type="MARKET",
            order_id="ORD-STILL-OPEN",
            filled_quantity=25,
        )
        s.add(intent)
        s.flush()
        for state in (order_state.SENT, order_state.ACKNOWLEDGED):  # the journal's path: one step each
            intent.state = state
            s.flush()
    path = f"{run.page}/closed-outside"
    fields = resolve_form(alice, f"{path}?execution_id={short}")
    reply = alice.post(path, data={**fields, "price": "23.45"})
    text = reply.get_data(as_text=True)
    assert reply.status_code == 409
    assert 'id="exit-error"' in text and "ORD-STILL-OPEN" in text and "still working" in text
    after = execution(env, short)
    assert (after.status, after.exit_price, after.exited_quantity) == ("error", None, 0)
