"""``GET /risk/runs/<id>/premium.json`` through the Flask client against the paper exchange's
history, on SQLite and PostgreSQL: the owner gets the run's combined-premium candles (closed ones only,
the shown session) and the Supertrend line; another user's run and a missing one are 404; signed out is
a redirect to sign-in; a leg without history is ``unknown`` with a message and no candles; bad
parameters are 400."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from algomirror.db.models import Strategy, StrategyExecution, StrategyLeg
from algomirror.domain.candles import candle_end
from algomirror.engine.planning import PlannedExecution, plan_run
from tests.factories import make_account
from tests.integration.execution_support import T0, nifty
from tests.integration.web_support import WebEnv, make_env, signed_in
from tests.sim_fixtures import SimHandle

NOW = T0 + timedelta(minutes=12, seconds=3)  # 10:42:03 IST on the paper exchange's first day


@pytest.fixture
def env(db_url: str, tmp_path: Path, simulator_session: SimHandle) -> Iterator[WebEnv]:
    web = make_env(db_url, tmp_path)
    simulator_session.control.advance_to(NOW)
    web.clock.set(NOW)
    yield web
    web.database.dispose()


def make_run(env: WebEnv, sim: SimHandle, username: str, *, symbols: tuple[str, str]) -> int:
    """A short strangle of ``symbols`` on one paper account of ``username``, both legs active."""
    uid = env.user(username).id
    with env.database.session() as s:
        account = make_account(
            s,
            uid,
            f"{username} paper",
            host_url=sim.rest_url,
            api_key_encrypted=env.state.box.encrypt(sim.api_keys[0]),
            is_primary=True,
        )
        strategy = Strategy(
            user_id=uid,
            name=f"{username} strangle",
            supertrend_exit_enabled=True,
            supertrend_exit_type="breakout",
            supertrend_period=3,
            supertrend_multiplier=Decimal("2"),
            supertrend_timeframe="5m",
        )
        for number, option in enumerate(("CE", "PE"), start=1):
            strategy.legs.append(
                StrategyLeg(
                    leg_number=number,
                    instrument="NIFTY",
                    product_type="options",
                    action="SELL",
                    option_type=option,
                )
            )
        s.add(strategy)
        s.flush()
        planned = [
            PlannedExecution(leg.id, account.id, symbol, "NFO", "NRML", 65, "NIFTY")
            for leg, symbol in zip(strategy.legs, symbols, strict=True)
        ]
        run = plan_run(s, strategy.id, planned, now=T0)
        for row in s.scalars(select(StrategyExecution).where(StrategyExecution.run_id == run.id)):
            row.status, row.filled_quantity, row.entry_price = "active", 65, Decimal("100.00")
        run.status = "active"
        s.commit()
        return run.id


STRANGLE = (nifty("26200CE"), nifty("25800PE"))


def get(client: Any, url: str) -> Any:
    return client.get(url, headers={"Accept": "application/json"})


def test_the_owner_gets_candles_and_the_line_and_another_user_gets_404(
    env: WebEnv, simulator_session: SimHandle
) -> None:
    alice = signed_in(env, "alice")
    bob = signed_in(env, "bob")
    run_id = make_run(env, simulator_session, "alice", symbols=STRANGLE)
    response = get(alice, f"/risk/runs/{run_id}/premium.json")
    assert response.status_code == 200
    body = response.get_json()
    assert body["timeframe"] == "5m" and body["state"] == "ok" and body["message"] is None
    assert (body["period"], body["multiplier"], body["exit_type"]) == (3, 2.0, "breakout")
    candles = body["candles"]
    # Closed candles only, of today's session: 09:15 … 10:35 (10:40 is still forming at 10:42:03).
    times = [c["time"] for c in candles]
    assert times == sorted(times) and len(times) == len(set(times))
    assert times[-1] == int((T0 + timedelta(minutes=5)).timestamp())
    assert times[0] == int((T0 - timedelta(minutes=75)).timestamp())  # 09:15 IST
    assert all(
        c["low"] <= min(c["open"], c["close"]) <= max(c["open"], c["close"]) <= c["high"] for c in candles
    )
    line = body["supertrend"]
    assert line and {p["direction"] for p in line} <= {1, -1}
    assert {p["time"] for p in line} <= set(times) and line[-1]["time"] == times[-1]
    assert all(candle_end(datetime.fromtimestamp(t, UTC), 5) <= NOW for t in times)

    assert get(bob, f"/risk/runs/{run_id}/premium.json").status_code == 404
    assert get(alice, f"/risk/runs/{run_id + 999}/premium.json").status_code == 404
    signed_out = env.client().get(f"/risk/runs/{run_id}/premium.json")
    assert signed_out.status_code in (302, 303) and "/login" in signed_out.headers["Location"]


def test_days_and_timeframe_and_bad_parameters(env: WebEnv, simulator_session: SimHandle) -> None:
    alice = signed_in(env, "alice")
    run_id = make_run(env, simulator_session, "alice", symbols=STRANGLE)
    one = get(alice, f"/risk/runs/{run_id}/premium.json?timeframe=15m").get_json()
    two = get(alice, f"/risk/runs/{run_id}/premium.json?timeframe=15m&days=2").get_json()
    assert one["timeframe"] == "15m" and len(two["candles"]) > len(one["candles"]) > 0
    for query in ("timeframe=7m", "days=0", "days=6", "period=x", "multiplier=-1", "multiplier=nan"):
        assert get(alice, f"/risk/runs/{run_id}/premium.json?{query}").status_code == 400, query


def test_a_leg_without_history_is_unknown_with_no_candles(env: WebEnv, simulator_session: SimHandle) -> None:
    alice = signed_in(env, "alice")
    run_id = make_run(env, simulator_session, "alice", symbols=(STRANGLE[0], nifty("99000CE")))
    body = get(alice, f"/risk/runs/{run_id}/premium.json").get_json()
    assert body["state"] == "unknown" and body["candles"] == [] and body["supertrend"] == []
    assert nifty("99000CE") in body["message"]
