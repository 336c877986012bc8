"""Resolution of saved strategies on the paper exchange over loopback, on SQLite and PostgreSQL:
``preview_strategy`` (expiry, strikes around ATM, symbols, quantities, freeze slices, margins, warnings,
skipped accounts with their reasons) and ``execute_strategy`` (one run planned in one transaction and
entered by the EntryExecutor; a double Execute gives one run and one set of orders)."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy import inspect as sa_inspect

from algomirror.broker.registry import ClientRegistry
from algomirror.broker.wire import Funds
from algomirror.db.models import (
    EngineCommand,
    MarginTracker,
    Strategy,
    StrategyLeg,
    StrategyRun,
    TradingAccount,
)
from algomirror.domain.contract_specs import freeze_qty, lot_size
from algomirror.domain.instruments import option_symbol
from algomirror.domain.money import format_inr
from algomirror.domain.strikes import select_premium_near
from algomirror.engine.book_mirror import store_funds
from algomirror.engine.commands import CommandProcessor
from algomirror.engine.factory import build_engine
from algomirror.engine.resolution import EXECUTE_STRATEGY, PREVIEW_STRATEGY, StrategyResolver
from tests.helpers import eventually_async
from tests.integration.execution_support import World, executor_of
from tests.integration.resolution_support import (
    CONDOR,
    STRADDLE,
    LegDef,
    commands_of,
    preview,
    queue,
    resolution_world,
    resolver_of,
    rows_of,
)
from tests.integration.web_support import make_env
from tests.sim_fixtures import SimHandle

EXPIRY = date(2026, 12, 1)  # the nearest weekly NIFTY expiry the test exchange lists on 25 Nov 2026
LOT = lot_size("NIFTY", EXPIRY)
ONE_SECOND = timedelta(seconds=1)


def _spot_and_atm(result: dict[str, object]) -> tuple[Decimal, Decimal]:
    nifty = result["instruments"]["NIFTY"]  # type: ignore[index]
    return Decimal(nifty["spot"]), Decimal(nifty["atm"])


async def test_short_straddle_preview_on_three_accounts(db_url: str, simulator_session: SimHandle) -> None:
    sim = simulator_session
    world = resolution_world(db_url, sim, STRADDLE)
    result = await preview(world)

    assert result["errors"] == [], result["errors"]
    assert result["feed_account"]["id"] == world.account_ids[0]
    spot, atm = _spot_and_atm(result)
    assert abs(spot - atm) <= 25 and atm % 50 == 0
    legs = {leg["leg_number"]: leg for leg in result["legs"]}
    assert legs[1]["symbol"] == option_symbol("NIFTY", EXPIRY, atm, "CE")
    assert legs[2]["symbol"] == option_symbol("NIFTY", EXPIRY, atm, "PE")
    assert legs[1]["expiry"] == EXPIRY.isoformat() and legs[1]["lot_size"] == LOT
    assert Decimal(legs[1]["ltp"]) > 0
    # Two SELL legs without hedges: both are naked shorts.
    assert all(any("naked short" in w for w in leg["warnings"]) for leg in legs.values())
    rows = rows_of(result)
    assert set(rows) == {(n, a) for n in (1, 2) for a in world.account_ids}
    for row in rows.values():
        assert row["status"] == "ok", row
        assert row["lots"] == 1 and row["quantity"] == LOT and row["slices"] == [LOT]
        # A pair: half the pair rate of a normal day on each SELL leg (seed NIFTY ₹3,20,000 per pair).
        assert Decimal(row["estimated_margin"]) == Decimal(160000)
    accounts = {a["account_id"]: a for a in result["accounts"]}
    assert all(a["status"] == "ok" and Decimal(a["estimated_margin"]) == 320000 for a in accounts.values())
    assert all(Decimal(a["available_funds"]) > 320000 for a in accounts.values())


async def test_iron_condor_preview_with_freeze_slices(db_url: str, simulator_session: SimHandle) -> None:
    sim = simulator_session
    legs = tuple(LegDef(d.action, d.option_type, d.selection, d.offset, lots=28) for d in CONDOR)
    world = resolution_world(db_url, sim, legs)
    result = await preview(world)

    assert result["errors"] == []
    _, atm = _spot_and_atm(result)
    by_number = {leg["leg_number"]: leg for leg in result["legs"]}
    # OTM k counted in listed strikes (50 apart near the money): CE above the ATM, PE below.
    assert by_number[1]["strike"] == str(atm + 200) and by_number[2]["strike"] == str(atm - 200)
    assert by_number[3]["strike"] == str(atm + 100) and by_number[4]["strike"] == str(atm - 100)
    assert not any("naked" in w for leg in by_number.values() for w in leg["warnings"])
    quantity = 28 * LOT  # more than one freeze slice (27 lots of 65)
    size = (freeze_qty("NIFTY", EXPIRY) // LOT) * LOT
    expected = [size] * (quantity // size) + ([quantity % size] if quantity % size else [])
    for row in result["rows"]:
        assert row["status"] == "ok", row
        assert row["quantity"] == quantity and row["slices"] == expected and len(expected) == 2
    # SELL legs: the pair rate (half each); BUY legs: their premium (LTP × quantity).
    for account in result["accounts"]:
        rows = [r for r in result["rows"] if r["account_id"] == account["account_id"]]
        total = sum(Decimal(r["estimated_margin"]) for r in rows)
        assert Decimal(account["estimated_margin"]) == total
    sells = [r for r in result["rows"] if by_number[_number(result, r)]["action"] == "SELL"]
    assert all(Decimal(r["estimated_margin"]) == 28 * Decimal(160000) for r in sells)
    buys = [r for r in result["rows"] if by_number[_number(result, r)]["action"] == "BUY"]
    for r in buys:
        ltp = Decimal(by_number[_number(result, r)]["ltp"])
        assert Decimal(r["estimated_margin"]) == ltp * quantity


def _number(result: dict[str, object], row: dict[str, object]) -> int:
    return next(leg["leg_number"] for leg in result["legs"] if leg["leg_id"] == row["leg_id"])  # type: ignore[attr-defined, index]


async def test_premium_near_picks_the_nearest_premium_and_warns_when_far(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    legs = (
        LegDef("BUY", "CE", "premium_near", premium=Decimal("50")),
        LegDef("BUY", "PE", "premium_near", premium=Decimal("0.01")),  # nothing prices this low
    )
    world = resolution_world(db_url, sim, legs, accounts=1)
    result = await preview(world)
    _, atm = _spot_and_atm(result)
    near, far = result["legs"]
    market = sim.running.core.market
    for leg, option_type, target in ((near, "CE", Decimal(50)), (far, "PE", Decimal("0.01"))):
        assert leg["error"] is None, leg
        # The exchange's own prices of the scan (ATM ± 20 steps): the engine picked the nearest premium.
        quotes = {}
        for k in range(-20, 21):
            strike = atm + 50 * k
            quote = market.quote(option_symbol("NIFTY", EXPIRY, strike, option_type), "NFO")
            if quote is not None:
                quotes[strike] = quote.ltp
        expected = select_premium_near(target, quotes, atm)
        assert Decimal(leg["strike"]) == expected.strike and Decimal(leg["ltp"]) == expected.ltp
        assert leg["symbol"] == option_symbol("NIFTY", EXPIRY, expected.strike, option_type)
        assert any("from the target" in w for w in leg["warnings"]) == expected.warning
    assert any("from the target" in w for w in far["warnings"]), far["warnings"]


async def test_grade_sizing_sizes_each_account_from_its_own_funds(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = resolution_world(db_url, sim, STRADDLE, accounts=2, risk_profile="grade_B")
    result = await preview(world)
    assert result["errors"] == []
    rows = rows_of(result)
    for account in result["accounts"]:
        # Grade B: 65 % of the seller base; a NIFTY pair costs ₹3,20,000 on a normal day.
        budget = Decimal(account["available_funds"]) * Decimal("0.65")
        lots = int(budget // 320000)
        assert lots > 1
        for number in (1, 2):
            row = rows[(number, account["account_id"])]
            assert row["status"] == "ok" and row["lots"] == lots and row["quantity"] == lots * LOT


async def test_an_account_short_of_margin_is_skipped_with_the_figures(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    poor = sim.control.add_account(capital=100000)
    world = resolution_world(db_url, sim, STRADDLE, accounts=2, extra_keys=[poor])
    result = await preview(world)
    accounts = {a["account_id"]: a for a in result["accounts"]}
    skipped = accounts[world.account_ids[2]]
    assert skipped["status"] == "skipped"
    assert skipped["reason"] == (
        f"insufficient margin: needs {format_inr(Decimal(320000))}, "
        f"{format_inr(Decimal(skipped['available_funds']))} available"
    )
    assert [a["status"] for a in accounts.values()] == ["ok", "ok", "skipped"]
    assert all(r["status"] == "skipped" for r in result["rows"] if r["account_id"] == world.account_ids[2])


async def test_a_failed_funds_read_skips_that_account(db_url: str, simulator_session: SimHandle) -> None:
    sim = simulator_session
    world = resolution_world(db_url, sim, STRADDLE)
    sim.control.status_next(500, 5, endpoint="funds", apikey=sim.api_keys[1])
    result = await preview(world)
    accounts = {a["account_id"]: a for a in result["accounts"]}
    assert accounts[world.account_ids[1]]["reason"].startswith("funds unavailable")
    assert accounts[world.account_ids[0]]["status"] == accounts[world.account_ids[2]]["status"] == "ok"


async def test_a_failed_expiry_read_fails_the_leg_on_every_account(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = resolution_world(db_url, sim, STRADDLE)
    sim.control.status_next(500, 5, endpoint="expiry", apikey=sim.api_keys[0])
    result = await preview(world)
    assert all(leg["error"].startswith("could not resolve expiry") for leg in result["legs"])
    assert all(r["status"] == "failed" for r in result["rows"])
    assert all(r["reason"].startswith("could not resolve expiry") for r in result["rows"])
    assert result["plannable"] == 0


async def test_execute_plans_one_run_and_the_entry_fills_it(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = resolution_world(db_url, sim, CONDOR, accounts=2)
    command_id = queue(world, EXECUTE_STRATEGY, "page-1")
    async with resolver_of(world) as resolver:
        assert await resolver.run_command(command_id)
    command = world.command(command_id)
    assert command.status == "done", command.error
    assert command.result is not None
    run_id = command.result["run_id"]
    run = world.run(run_id)
    assert run.status == "entering" and run.spot is not None and run.atm is not None
    assert set(run.spot) == {"NIFTY"}
    executions = world.executions(run_id)
    assert len(executions) == 8 and {e.quantity or e.planned_quantity for e in executions} == {LOT}
    entries = commands_of(world, "execute_run")
    assert [c.token for c in entries] == [f"run-of:{command_id}"]

    async with executor_of(world) as executor:
        assert await executor.process_once() == 1
    assert world.command(entries[0].id).status == "done"
    orders = world.all_exchange_orders()
    assert len(orders) == 8 and all(o.status == "complete" for o in orders)
    assert {o.symbol for o in orders} == {e.symbol for e in executions}
    assert world.run(run_id).status == "active"


async def test_double_execute_gives_one_run_and_one_set_of_orders(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = resolution_world(db_url, sim, STRADDLE, accounts=2)
    first = queue(world, EXECUTE_STRATEGY, "page-a")
    second = queue(world, EXECUTE_STRATEGY, "page-b")  # another tab's Execute while the first is open
    async with resolver_of(world) as one, resolver_of(world) as two:
        await asyncio.gather(one.process_once(), two.process_once(), one.run_command(first))
    statuses = sorted([world.command(first).status, world.command(second).status])
    assert statuses == ["done", "failed"]
    loser = world.command(first if world.command(first).status == "failed" else second)
    # The second was queued while the first was in flight (refused as such), or lost on the open run.
    assert "still in progress" in (loser.error or "") or "open run" in (loser.error or ""), loser.error
    with world.database.session_factory() as session:
        assert session.scalar(select(func.count()).select_from(StrategyRun)) == 1
    async with executor_of(world) as executor:
        await executor.process_once()
    assert len(world.all_exchange_orders()) == 4
    # A preview while the run is open says Execute is refused.
    result = await preview(world, token="pv-open")
    assert result["open_run"] is not None and any("open" in w for w in result["warnings"])
    assert PREVIEW_STRATEGY in {c.kind for c in commands_of(world, PREVIEW_STRATEGY)}
    # So while it shows error (an exit of it gave up: its positions are still there): it is still open.
    with world.database.session() as session:
        run = session.scalars(select(StrategyRun)).one()
        run.status = "error"
    result = await preview(world, token="pv-error")
    assert result["open_run"] == run.id and any("open" in w for w in result["warnings"])


async def test_an_execute_queued_while_another_was_in_flight_plans_nothing_even_after_its_run_closed(
    db_url: str, simulator_session: SimHandle
) -> None:
    """Two Executes of one strategy queued before the first planned: the first's run closes fast (every
    entry rejected), and the second must still not plan (the open-run index no longer stands in its
    way). One queued later, after the first finished, plans as usual."""
    sim = simulator_session
    world = resolution_world(db_url, sim, STRADDLE, accounts=1)
    first = queue(world, EXECUTE_STRATEGY, "page-1")
    second = queue(world, EXECUTE_STRATEGY, "page-2")
    async with resolver_of(world) as resolver:
        # While the first is still pending, the second (claimed first) plans nothing.
        assert await resolver.run_command(second)
        refused = world.command(second)
        assert refused.status == "failed" and f"command #{first}" in (refused.error or ""), refused.error
        assert commands_of(world, "execute_run") == []

        with world.database.session() as session:
            row = session.get(EngineCommand, second)
            assert row is not None
            row.status, row.error, row.result = "pending", None, None  # as if still waiting
        assert await resolver.run_command(first)
        assert world.command(first).status == "done"
        run_id = world.command(first).result["run_id"]  # type: ignore[index]
        with world.database.session() as session:  # every entry rejected: the run closed at once
            run = session.get(StrategyRun, run_id)
            assert run is not None
            run.status, run.ended_at = "failed", world.clock.now()
        assert await resolver.run_command(second)
        late = world.command(second)
        assert late.status == "failed" and "still in progress" in (late.error or ""), late.error
        assert [c.token for c in commands_of(world, "execute_run")] == [f"run-of:{first}"]

        third = queue(world, EXECUTE_STRATEGY, "page-3")  # a new Execute after the first finished
        assert await resolver.run_command(third)
        assert world.command(third).status == "done", world.command(third).error
    with world.database.session_factory() as session:
        assert session.scalar(select(func.count()).select_from(StrategyRun)) == 2


async def test_execute_with_nothing_plannable_fails_with_every_reason(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = resolution_world(db_url, sim, STRADDLE, accounts=2)
    sim.control.status_next(500, 5, endpoint="expiry", apikey=sim.api_keys[0])
    command_id = queue(world, EXECUTE_STRATEGY, "page-x")
    async with resolver_of(world) as resolver:
        assert await resolver.run_command(command_id)
    command = world.command(command_id)
    assert command.status == "failed"
    assert command.error is not None and "leg 1: could not resolve expiry" in command.error
    assert command.result is not None and len(command.result["reasons"]) >= 2
    assert command.result["error"] == command.error
    with world.database.session_factory() as session:
        assert session.scalar(select(func.count()).select_from(StrategyRun)) == 0
    assert commands_of(world, "execute_run") == []


async def test_a_command_left_running_by_a_dead_engine_is_resolved_again_once(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = resolution_world(db_url, sim, STRADDLE, accounts=1)
    command_id = queue(world, EXECUTE_STRATEGY, "page-r")
    with world.database.session() as session:
        row = session.get(EngineCommand, command_id)
        assert row is not None
        row.status = "running"  # claimed, then the engine died before planning
    async with resolver_of(world) as resolver:
        assert resolver.recover() == 1
        assert world.command(command_id).status == "pending"
        assert await resolver.process_once() == 1
        assert await resolver.process_once() == 0
    command = world.command(command_id)
    assert command.status == "done" and command.result is not None
    with world.database.session_factory() as session:
        assert session.scalar(select(func.count()).select_from(StrategyRun)) == 1
    assert len(commands_of(world, "execute_run")) == 1


async def test_the_resolver_loop_runs_both_kinds_and_build_engine_has_it(
    db_url: str, tmp_path: Path, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = resolution_world(db_url, sim, STRADDLE, accounts=1)
    preview_id = queue(world, PREVIEW_STRATEGY, "loop-p")
    execute_id = queue(world, EXECUTE_STRATEGY, "loop-e")
    # The generic command processor leaves both kinds alone (never failed as "unknown").
    registry = ClientRegistry()
    try:
        processor = CommandProcessor(world.database, registry, world.box.decrypt, clock=world.clock)
        assert await processor.process_once() == 0
    finally:
        await registry.aclose()

    async with resolver_of(world) as resolver:
        stop = asyncio.Event()
        loop = asyncio.create_task(resolver.run(stop))

        async def both_done() -> bool:
            return {world.command(preview_id).status, world.command(execute_id).status} == {"done"}

        try:
            await eventually_async(both_done, timeout=20, what="preview and execute done")
        finally:
            stop.set()
            await asyncio.wait_for(loop, 20)

    # The engine as built for `algomirror engine` (and the demo) has the component on the shared
    # registry; it claims nothing before the service has taken the lock.
    service = build_engine(make_env(db_url, tmp_path).state.settings, world.database)
    [resolution] = [c for c in service.components if c.name == "resolution"]
    [commands] = [c for c in service.components if c.name == "commands"]
    assert isinstance(resolution, StrategyResolver) and isinstance(commands, CommandProcessor)
    assert resolution.preview.registry is commands.registry
    waiting = queue(world, PREVIEW_STRATEGY, "loop-p2")
    assert await resolution.run_command(waiting) is False
    assert world.command(waiting).status == "pending"
    await commands.registry.aclose()


async def test_pre_checks_name_each_skipped_account_and_refuse_an_inactive_strategy(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = resolution_world(db_url, sim, STRADDLE)
    with world.database.session() as session:
        inactive = session.get(TradingAccount, world.account_ids[1])
        refused = session.get(TradingAccount, world.account_ids[2])
        assert inactive is not None and refused is not None
        inactive.is_active = False
        refused.connection_status = "auth_failed"
    result = await preview(world)
    accounts = {a["account_id"]: a for a in result["accounts"]}
    assert accounts[world.account_ids[0]]["status"] == "ok"
    assert accounts[world.account_ids[1]]["reason"] == "the account is inactive"
    assert "API key was refused" in accounts[world.account_ids[2]]["reason"]
    assert result["plannable"] == 2 and result["errors"] == []

    with world.database.session() as session:
        strategy = session.get(Strategy, world.strategy_id)
        assert strategy is not None
        strategy.is_active = False
    command_id = queue(world, EXECUTE_STRATEGY, "page-off")
    async with resolver_of(world) as resolver:
        assert await resolver.run_command(command_id)
    command = world.command(command_id)
    assert command.status == "failed" and "the strategy is inactive" in (command.error or "")
    assert commands_of(world, "execute_run") == []


async def test_outside_the_session_every_leg_is_resolved_but_nothing_is_placed(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = resolution_world(db_url, sim, STRADDLE, accounts=1)
    world.clock.set(datetime(2026, 11, 25, 10, 45, tzinfo=UTC))  # 16:15 IST, after the close
    result = await preview(world)
    assert all(
        leg["symbol"] and leg["blocked"] == "NFO is not in session now (16:15 IST)" for leg in result["legs"]
    )
    assert all(r["status"] == "failed" for r in result["rows"]) and result["plannable"] == 0
    command_id = queue(world, EXECUTE_STRATEGY, "page-late")
    async with resolver_of(world) as resolver:
        assert await resolver.run_command(command_id)
    assert "not in session" in (world.command(command_id).error or "")


async def test_a_futures_leg_trades_the_nearest_monthly_future(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = resolution_world(db_url, sim, (LegDef("SELL", "CE"),), accounts=1)
    with world.database.session() as session:
        leg = session.get(StrategyLeg, world.leg_ids[0])
        assert leg is not None
        leg.product_type, leg.option_type, leg.expiry, leg.action = "futures", None, "current_month", "BUY"
    result = await preview(world)
    [leg_result] = result["legs"]
    assert leg_result["error"] is None, leg_result
    assert leg_result["symbol"] == f"NIFTY{date.fromisoformat(leg_result['expiry']):%d%b%y}FUT".upper()
    assert leg_result["strike"] is None and Decimal(leg_result["ltp"]) > 0
    [row] = result["rows"]
    assert row["status"] == "ok" and Decimal(row["estimated_margin"]) == Decimal(215000)  # seed futures rate


async def test_a_short_is_never_planned_without_its_hedge(db_url: str, simulator_session: SimHandle) -> None:
    sim = simulator_session
    unlisted = LegDef("BUY", "CE", "strike_price", strike=Decimal("26025"))  # not a listed strike
    legs = (
        unlisted,
        LegDef("BUY", "PE", "OTM", 4),
        LegDef("SELL", "CE", "OTM", 2),
        LegDef("SELL", "PE", "OTM", 2),
    )
    # keep: the failed CE hedge fails alone, its short is not placed without it, the PE side goes ahead.
    world = resolution_world(db_url, sim, legs, accounts=2, on_leg_failure="keep")
    result = await preview(world)
    rows = rows_of(result)
    for account_id in world.account_ids:
        assert rows[(1, account_id)]["status"] == "failed" and "not listed" in rows[(1, account_id)]["reason"]
        assert rows[(3, account_id)]["status"] == "skipped"
        assert rows[(3, account_id)]["reason"] == "its hedge (leg 1) is not placed on this account"
        assert rows[(2, account_id)]["status"] == rows[(4, account_id)]["status"] == "ok"
    assert {a["status"] for a in result["accounts"]} == {"ok"} and result["plannable"] == 4
    command_id = queue(world, EXECUTE_STRATEGY, "page-keep")
    async with resolver_of(world) as resolver:
        assert await resolver.run_command(command_id)
    run = world.run(world.command(command_id).result["run_id"])  # type: ignore[index]
    assert len(world.executions(run.id)) == 4 and run.result is not None
    assert any("leg 3 not placed: its hedge (leg 1)" in w for w in run.result["warnings"])
    async with executor_of(world) as executor:  # the PE side is entered; close it before the next part
        await executor.process_once()
    with world.database.session() as session:
        open_run = session.get(StrategyRun, run.id)
        assert open_run is not None
        open_run.status = "closed"
    # unwind (the default): the entry would unwind the account anyway, so nothing of it is planned.
    with world.database.session() as session:
        strategy = session.get(Strategy, world.strategy_id)
        assert strategy is not None
        strategy.on_leg_failure = "unwind"
    result = await preview(world, token="pv-unwind")
    assert result["plannable"] == 0
    assert all("unwinds an account on a failed leg" in a["reason"] for a in result["accounts"])


def reservations_of(world: World, account_id: int) -> dict[str, Any]:
    with world.database.session_factory() as session:
        tracker = session.scalar(select(MarginTracker).where(MarginTracker.account_id == account_id))
        return dict(tracker.allocated_margins or {}) if tracker is not None else {}


async def test_a_planned_run_reserves_its_margin_until_a_funds_read_after_its_entry_holds_it(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    world = resolution_world(db_url, sim, STRADDLE, accounts=1)
    [account] = world.account_ids
    before = (await preview(world, "pv-before"))["accounts"][0]
    command_id = queue(world, EXECUTE_STRATEGY, "page-1")
    async with resolver_of(world) as resolver:
        assert await resolver.run_command(command_id)
    run_id = world.command(command_id).result["run_id"]  # type: ignore[index]
    # The plan reserved the run's estimated margin (a NIFTY pair: ₹3,20,000) on the account.
    [(key, held)] = reservations_of(world, account).items()
    assert key == f"run:{run_id}" and Decimal(held["amount"]) == Decimal(320000)
    assert held["entered_at"] is None

    # While the entry has not gone in, another Execute on the account sizes against the rest.
    during = (await preview(world, "pv-during"))["accounts"][0]
    assert Decimal(during["available_funds"]) == Decimal(before["available_funds"]) - 320000
    assert any("reserved by runs still entering" in w for w in during["warnings"])

    async with executor_of(world) as executor:
        assert await executor.process_once() == 1
    ended = reservations_of(world, account)[f"run:{run_id}"]["entered_at"]
    assert ended is not None  # the entry is over: the next funds read holds its margin
    ended_at = datetime.fromisoformat(ended)
    funds = Funds(Decimal(900000), Decimal(0), Decimal(0), Decimal(0), Decimal(320000))
    with world.database.session() as session:  # a read taken before the entry ended keeps it
        store_funds(session, account, funds, None, collateral_included=True, fetched_at=ended_at)
    assert list(reservations_of(world, account)) == [f"run:{run_id}"]
    with world.database.session() as session:
        store_funds(session, account, funds, None, collateral_included=True, fetched_at=ended_at + ONE_SECOND)
    assert reservations_of(world, account) == {}
    with world.database.session_factory() as session:
        tracker = session.scalar(select(MarginTracker).where(MarginTracker.account_id == account))
        assert tracker is not None and tracker.free_margin == tracker.total_available_margin == Decimal(
            900000
        )


def second_strategy(world: World) -> int:
    """A copy of the world's strategy and its legs under another name; its id."""
    with world.database.session() as session:
        source = session.get(Strategy, world.strategy_id)
        assert source is not None
        copied = {a.key: getattr(source, a.key) for a in sa_inspect(Strategy).column_attrs if a.key != "id"}
        other = Strategy(**{**copied, "name": f"{source.name} (second)"})
        session.add(other)
        session.flush()
        for leg in session.scalars(select(StrategyLeg).where(StrategyLeg.strategy_id == source.id)):
            values = {
                a.key: getattr(leg, a.key) for a in sa_inspect(StrategyLeg).column_attrs if a.key != "id"
            }
            session.add(StrategyLeg(**{**values, "strategy_id": other.id}))
        return other.id


async def test_two_executes_of_one_user_at_the_same_instant_never_size_against_the_same_cash(
    db_url: str, simulator_session: SimHandle
) -> None:
    sim = simulator_session
    # One straddle's margin (₹3,20,000) fits the small account once, not twice.
    small = sim.control.add_account(capital=500000)
    world = resolution_world(db_url, sim, STRADDLE, accounts=1, extra_keys=[small])
    big, tight = world.account_ids
    other = second_strategy(world)
    first = queue(world, EXECUTE_STRATEGY, "page-a")
    second = queue(world, EXECUTE_STRATEGY, "page-b", strategy_id=other)
    async with resolver_of(world) as resolver:
        assert await asyncio.gather(resolver.run_command(first), resolver.run_command(second)) == [True, True]
    runs = [world.command(c).result["run_id"] for c in (first, second)]  # type: ignore[index]
    on_tight = [r for r in runs if any(e.account_id == tight for e in world.executions(r))]
    assert len(on_tight) == 1  # the later Execute read the first one's reservation and skipped it
    assert list(reservations_of(world, tight)) == [f"run:{on_tight[0]}"]
    assert all(any(e.account_id == big for e in world.executions(r)) for r in runs)
