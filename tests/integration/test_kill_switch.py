"""The kill switch against the paper exchange over loopback, on SQLite and PostgreSQL: the risk engine's
part of the day P&L comes from a fake source (its ``runs`` and ``account_open_pnl``), exits
go through the real ExitExecutor, and orders are counted at the exchange.

Covered: a breached daily loss limit → one exit order per open execution of that account only, one
``kill_switch`` risk event each, the latch and entry halt persisted, entries refused, a restart (new
component) neither trips nor requests again; unknown P&L (no mark, a run the risk engine has not
loaded, no risk engine) never trips; realised P&L of today's closed executions (sign per side, other
days excluded) trips at exactly −limit; a reset clears the latch and only the kill switch's part of
the halt, then waits until the P&L is above −limit before arming again (also across a restart); the
global switch flattens every account and its reset clears them all. A run carried over from yesterday
counts only its change since its last sample before today's session (open, or ended today with a leg
exited on either day); without that sample, or on two accounts, it is unknown and nothing trips.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, update

from algomirror.db.models import (
    ActivityLog,
    EngineAlert,
    EngineCommand,
    RiskEvent,
    RunPnlSample,
    StrategyExecution,
    StrategyRun,
    TradingAccount,
)
from algomirror.engine.exit_planning import request_exit
from algomirror.engine.exits import ExitExecutor
from algomirror.engine.factory import build_engine, find_component
from algomirror.engine.kill_switch import KillSwitch, KillSwitchConfig, pnl_source, queue_command
from algomirror.engine.marks import Mark, MarkBook
from algomirror.engine.risk import RiskConfig, RiskEngine
from tests.helpers import eventually_async
from tests.integration.execution_support import World, executor_of, make_world
from tests.integration.web_support import make_env
from tests.sim_fixtures import SimHandle

STRANGLE = (("SELL", "26200CE"), ("SELL", "25800PE"))
QTY = 65


@dataclass
class FakeSource:
    """The risk engine as the kill switch reads it: the runs it holds and each account's open P&L."""

    runs: dict[int, object] = field(default_factory=dict)
    open_pnl: dict[int, Decimal | None] = field(default_factory=dict)

    def account_open_pnl(self, account_id: int) -> Decimal | None:
        return self.open_pnl.get(account_id, Decimal(0))


@dataclass
class RecordingBus:
    messages: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def publish(self, topic: str, event: str, data: dict[str, Any]) -> None:
        self.messages.append((topic, event, data))

    def events(self, event: str) -> list[dict[str, Any]]:
        return [d for _, e, d in self.messages if e == event]


@asynccontextmanager
async def switch_of(
    world: World, source: FakeSource | None
) -> AsyncIterator[tuple[KillSwitch, RecordingBus]]:
    """A KillSwitch (driven by hand) with a real ExitExecutor to hand its exits to."""
    entry, registry = world.executor()
    exits = ExitExecutor(
        world.database, registry, world.box.decrypt, epoch=world.epoch, clock=world.clock, config=entry.config
    )
    bus = RecordingBus()
    switch = KillSwitch(world.database, source, exits=exits, bus=bus, clock=world.clock)
    try:
        yield switch, bus
    finally:
        await switch.drain()
        await registry.aclose()


async def entered(world: World) -> int:
    run_id, _ = world.plan(quantity=QTY)
    async with executor_of(world) as executor:
        assert await executor.process_once() == 1
    assert {e.status for e in world.executions(run_id)} == {"active"}
    return run_id


def set_limit(world: World, index: int, limit: str | None) -> None:
    with world.database.session() as session:
        session.execute(
            update(TradingAccount)
            .where(TradingAccount.id == world.account_ids[index])
            .values(daily_loss_limit=None if limit is None else Decimal(limit))
        )


def account(world: World, index: int) -> TradingAccount:
    with world.database.session_factory() as session:
        row = session.get(TradingAccount, world.account_ids[index])
        assert row is not None
        return row


def rows_of(world: World, model: Any, *where: Any) -> list[Any]:
    with world.database.session_factory() as session:
        return list(session.scalars(select(model).where(*where).order_by(model.id)))


def buys_at_exchange(world: World) -> dict[int, list[str]]:
    """Per account index, the symbols of BUY orders (buy-backs of the shorts) at the exchange."""
    return {
        i: sorted(o.symbol for o in world.exchange_orders(i) if o.action == "BUY")
        for i in range(len(world.account_ids))
    }


async def exited(world: World, run_id: int, account_index: int) -> None:
    async def done() -> bool:
        rows = [e for e in world.executions(run_id) if e.account_id == world.account_ids[account_index]]
        return {e.status for e in rows} == {"exited"}

    await eventually_async(done, timeout=20, what=f"account {account_index + 1} exited")


async def test_a_breached_limit_exits_that_account_once_and_a_restart_adds_nothing(
    db_url: str, simulator_session: SimHandle
) -> None:
    world = make_world(db_url, simulator_session, accounts=2, legs=STRANGLE)
    run_id = await entered(world)
    set_limit(world, 0, "1000")
    set_limit(world, 1, "1000")
    first, second = world.account_ids
    source = FakeSource(
        runs={run_id: object()}, open_pnl={first: Decimal("-999.99"), second: Decimal("-200")}
    )

    async with switch_of(world, source) as (switch, bus):
        assert await switch.check() == []  # one paisa short of the limit
        assert switch.last[first].total == Decimal("-999.99")
        source.open_pnl[first] = Decimal("-1000")  # inclusive
        assert await switch.check() == [first]
        await switch.drain()
        await exited(world, run_id, 0)
        assert await switch.check() == []  # latched: checked no more
    assert switch.tripped == 1
    assert buys_at_exchange(world) == {0: sorted(world.leg_symbols), 1: []}
    assert {e.status for e in world.executions(run_id) if e.account_id == second} == {"active"}

    commands = rows_of(world, EngineCommand, EngineCommand.kind == "exit")
    assert len(commands) == 1 and commands[0].status == "done"
    assert commands[0].payload == {
        "scope": "account",
        "reason": "kill_switch",
        "run_id": run_id,
        "account_id": first,
    }
    assert commands[0].token.startswith("kill:a") and commands[0].token.endswith(f":{first}:{run_id}")
    events = rows_of(world, RiskEvent, RiskEvent.run_id == run_id)
    mine = sorted(e.id for e in world.executions(run_id) if e.account_id == first)
    assert sorted(e.strategy_execution_id for e in events) == mine
    assert {(e.event_type, e.action_taken, e.trigger_value, e.threshold_value) for e in events} == {
        ("kill_switch", "exit_initiated", Decimal("-1000.00"), Decimal("1000.00"))
    }
    assert {e.exit_reason for e in world.executions(run_id) if e.account_id == first} == {"kill_switch"}

    row = account(world, 0)
    assert row.kill_switch_at == world.clock.now()
    assert row.kill_switch_reason is not None and "daily loss limit" in row.kill_switch_reason
    assert row.entries_halted_reason is not None and row.entries_halted_reason.startswith("kill switch: ")
    assert account(world, 1).kill_switch_at is None and account(world, 1).entries_halted_reason is None
    executor, registry = world.executor()
    try:
        blocks = executor.entry_blocks([first, second])
    finally:
        await registry.aclose()
    assert (blocks[first] or "").startswith("entries are halted on this account: kill switch")
    assert blocks[second] is None
    [alert] = rows_of(world, EngineAlert, EngineAlert.kind == "kill_switch")
    assert alert.severity == "critical" and alert.account_id == first
    assert [(d["account_id"], "daily loss limit" in d["reason"]) for d in bus.events("kill_switch")] == [
        (first, True)
    ]
    assert {d["account_id"] for d in bus.events("pnl")} == {first, second}
    tripped = rows_of(world, ActivityLog, ActivityLog.action == "kill_switch_tripped")
    assert [a.account_id for a in tripped] == [first]

    # A restart: a new component on the same database, the loss unchanged.
    world.clock.advance(timedelta(seconds=5))
    async with switch_of(world, source) as (again, _):
        assert await again.check() == []
        assert await again.process_commands() == 0
    assert again.tripped == 0
    assert len(rows_of(world, EngineCommand, EngineCommand.kind == "exit")) == 1
    assert len(rows_of(world, RiskEvent, RiskEvent.run_id == run_id)) == 2
    assert account(world, 0).kill_switch_at == row.kill_switch_at


async def test_unknown_pnl_never_trips(db_url: str, simulator_session: SimHandle) -> None:
    world = make_world(db_url, simulator_session, accounts=1, legs=STRANGLE)
    run_id = await entered(world)
    set_limit(world, 0, "1")
    [first] = world.account_ids

    no_mark = FakeSource(runs={run_id: object()}, open_pnl={first: None})
    not_loaded = FakeSource(runs={}, open_pnl={first: Decimal("-5000")})
    reasons = []
    for source in (no_mark, not_loaded, None):
        async with switch_of(world, source) as (switch, bus):
            for _ in range(3):
                assert await switch.check() == []
        value = switch.last[first]
        assert value.total is None
        reasons.append(value.unknown_reason or "")
        assert [d["pnl"] for d in bus.events("pnl")] == [None] * 3
        assert [d["unknown_reason"] for d in bus.events("pnl")] == [value.unknown_reason] * 3
    assert "no usable price" in reasons[0]
    assert f"run {run_id} is not valued yet" in reasons[1]
    assert "no risk engine" in reasons[2]
    assert account(world, 0).kill_switch_at is None
    assert rows_of(world, EngineCommand, EngineCommand.kind == "exit") == []
    assert {e.status for e in world.executions(run_id)} == {"active"}


async def closed_with_loss(world: World) -> int:
    """Enter, exit everything, then store each exit 10 points worse than its entry: a SELL leg loses
    ₹650 (10 × 65), so the account's realised day P&L is −₹1,300."""
    run_id = await entered(world)
    with world.database.session() as session:
        request_exit(session, user_id=world.user_id, scope="run", token="out", run_id=run_id)
    entry, registry = world.executor()
    exits = ExitExecutor(
        world.database, registry, world.box.decrypt, epoch=world.epoch, clock=world.clock, config=entry.config
    )
    try:
        assert await exits.process_once() == 1
    finally:
        await registry.aclose()
    assert world.run(run_id).ended_at is not None
    with world.database.session() as session:
        for e in session.scalars(select(StrategyExecution).where(StrategyExecution.run_id == run_id)):
            assert e.entry_price is not None and e.status == "exited"
            e.exit_price = e.entry_price + 10
            e.exit_time = world.clock.now()
    return run_id


async def test_realised_loss_of_today_trips_at_the_limit_and_a_reset_waits_to_rearm(
    db_url: str, simulator_session: SimHandle
) -> None:
    world = make_world(db_url, simulator_session, accounts=1, legs=STRANGLE)
    run_id = await closed_with_loss(world)
    [first] = world.account_ids
    source = FakeSource()
    async with switch_of(world, source) as (switch, bus):
        # Without a limit the account is valued (for the page) and never trips.
        assert await switch.check() == []
        assert switch.last[first].total == Decimal("-1300.00")
        assert bus.events("pnl")[-1]["limit"] is None and bus.events("pnl")[-1]["pnl"] == "-1300.00"
        set_limit(world, 0, "1300.01")
        assert await switch.check() == []
        assert switch.last[first].realised == Decimal("-1300.00")
        # An exit on an earlier IST day does not count today.
        with world.database.session() as session:
            session.execute(
                update(StrategyExecution)
                .where(StrategyExecution.run_id == run_id, StrategyExecution.leg_id == world.leg_ids[0])
                .values(exit_time=world.clock.now() - timedelta(days=1))
            )
        assert await switch.check() == []
        assert switch.last[first].realised == Decimal("-650.00")
        with world.database.session() as session:
            session.execute(
                update(StrategyExecution)
                .where(StrategyExecution.run_id == run_id)
                .values(exit_time=world.clock.now())
            )
        set_limit(world, 0, "1300")
        # Another cause halted entries before: a reset must keep that halt.
        with world.database.session() as session:
            session.execute(
                update(TradingAccount)
                .where(TradingAccount.id == first)
                .values(entries_halted_reason="reconciliation mismatch", entries_halted_at=world.clock.now())
            )
        assert await switch.check() == [first]
        row = account(world, 0)
        assert row.kill_switch_at is not None
        assert row.entries_halted_reason is not None and row.entries_halted_reason.startswith(
            "reconciliation mismatch; kill switch: daily loss limit"
        )
        assert rows_of(world, EngineCommand, EngineCommand.kind == "exit", EngineCommand.token != "out") == []

        with world.database.session() as session:
            command_id = queue_command(
                session, user_id=world.user_id, action="reset", token="reset-1", account_id=first
            ).id
        assert await switch.process_commands() == 1
        assert world.command(command_id).status == "done"
        row = account(world, 0)
        assert row.kill_switch_at is None and row.kill_switch_reason is None
        assert row.entries_halted_reason == "reconciliation mismatch"
        assert [a.action for a in rows_of(world, ActivityLog, ActivityLog.action.like("kill_switch%"))] == [
            "kill_switch_tripped",
            "kill_switch_reset",
        ]
        assert await switch.check() == []  # still −₹1,300: waits until the P&L is above −limit

    async with switch_of(world, source) as (again, _):  # across a restart too
        assert await again.check() == []
        source.open_pnl[first] = Decimal("0.01")  # −₹1,299.99: armed again
        assert await again.check() == []
        source.open_pnl[first] = Decimal("0")
        assert await again.check() == [first]
    actions = [a.action for a in rows_of(world, ActivityLog, ActivityLog.action.like("kill_switch%"))]
    assert actions == [
        "kill_switch_tripped",
        "kill_switch_reset",
        "kill_switch_rearmed",
        "kill_switch_tripped",
    ]


async def test_the_global_switch_flattens_every_account_and_its_reset_clears_them(
    db_url: str, simulator_session: SimHandle
) -> None:
    world = make_world(db_url, simulator_session, accounts=2, legs=STRANGLE)
    run_id = await entered(world)
    source = FakeSource(runs={run_id: object()})
    with world.database.session() as session:
        command_id = queue_command(session, user_id=world.user_id, action="trip_all", token="all-1").id
    async with switch_of(world, source) as (switch, bus):
        assert await switch.process_commands() == 1
        await switch.drain()
        await exited(world, run_id, 0)
        await exited(world, run_id, 1)
        assert await switch.process_commands() == 0
    command = world.command(command_id)
    assert command.status == "done" and command.result is not None
    assert command.result["tripped"] == world.account_ids
    assert buys_at_exchange(world) == {0: sorted(world.leg_symbols), 1: sorted(world.leg_symbols)}
    assert world.run(run_id).status == "closed" and world.run(run_id).exit_reason == "kill_switch"
    assert len(rows_of(world, EngineCommand, EngineCommand.kind == "exit")) == 2
    for i in range(2):
        row = account(world, i)
        assert row.kill_switch_at is not None and "flatten everything" in (row.kill_switch_reason or "")
        assert (row.entries_halted_reason or "").startswith("kill switch: ")
    assert [d["account_id"] for d in bus.events("kill_switch")] == [None]

    with world.database.session() as session:
        queue_command(session, user_id=world.user_id, action="reset_all", token="all-reset")
    async with switch_of(world, source) as (switch, reset_bus):
        assert await switch.process_commands() == 1
    for i in range(2):
        row = account(world, i)
        assert row.kill_switch_at is None and row.entries_halted_reason is None
    # The page refreshes its state on the reset too: one event per account reset.
    resets = reset_bus.events("kill_switch")
    assert [(d["account_id"], d["reason"]) for d in resets] == [(a, "reset") for a in world.account_ids]
    runs = rows_of(world, StrategyRun, StrategyRun.id == run_id)
    assert runs[0].ended_at is not None


async def test_a_command_for_another_users_account_fails_and_changes_nothing(
    db_url: str, simulator_session: SimHandle
) -> None:
    world = make_world(db_url, simulator_session, accounts=1, legs=STRANGLE)
    with world.database.session() as session:
        from tests.factories import make_account, make_user

        other = make_user(session, "other")
        theirs = make_account(session, other.id, "Theirs").id
        command_id = queue_command(
            session, user_id=world.user_id, action="trip", token="x", account_id=theirs
        ).id
    async with switch_of(world, FakeSource()) as (switch, _):
        assert await switch.process_commands() == 1
    command = world.command(command_id)
    assert command.status == "failed" and "not found" in (command.error or "")
    with world.database.session_factory() as session:
        row = session.get(TradingAccount, theirs)
        assert row is not None and row.kill_switch_at is None


async def test_with_the_real_risk_engine_a_losing_tick_trips_the_account(
    db_url: str, simulator_session: SimHandle
) -> None:
    world = make_world(db_url, simulator_session, accounts=1, legs=STRANGLE)
    run_id = await entered(world)
    set_limit(world, 0, "1000")
    [first] = world.account_ids
    prices = {e.symbol: e.entry_price for e in world.executions(run_id)}
    ce, pe = world.leg_symbols
    book = MarkBook()
    entry, registry = world.executor()
    exits = ExitExecutor(
        world.database, registry, world.box.decrypt, epoch=world.epoch, clock=world.clock, config=entry.config
    )
    risk = RiskEngine(
        world.database,
        book,
        exits=exits,
        clock=world.clock,
        config=RiskConfig(tick=0.05, reload_seconds=0.1, persist_seconds=0.1),
    )
    switch = KillSwitch(
        world.database,
        lambda: pnl_source([risk]),
        exits=exits,
        clock=world.clock,
        config=KillSwitchConfig(check_seconds=0.05, poll_seconds=0.05),
    )

    def tick(symbol: str, price: Decimal) -> None:
        assert book.update(
            symbol, "NFO", Mark(ltp=price, at=world.clock.now(), source="rest", account_id=None)
        )

    async def day_pnl(expected: Decimal | None) -> bool:
        value = switch.last.get(first)
        return value is not None and value.total == expected

    stop = asyncio.Event()
    tasks = [asyncio.create_task(risk.run(stop)), asyncio.create_task(switch.run(stop))]
    try:
        await eventually_async(lambda: day_pnl(None), timeout=10, what="no marks yet: unknown")
        assert switch.last[first].unknown_reason
        entry_ce, entry_pe = prices[ce], prices[pe]
        assert entry_ce is not None and entry_pe is not None
        tick(ce, entry_ce)
        tick(pe, entry_pe)
        await eventually_async(lambda: day_pnl(Decimal("0.00")), timeout=10, what="flat at the entry prices")
        assert account(world, 0).kill_switch_at is None
        tick(ce, entry_ce + 20)  # −₹1,300 on the short call
        await exited(world, run_id, 0)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await registry.aclose()
    assert switch.tripped == 1 and account(world, 0).kill_switch_at is not None
    [command] = rows_of(world, EngineCommand, EngineCommand.kind == "exit")
    assert command.token.startswith("kill:a") and command.payload["reason"] == "kill_switch"
    events = rows_of(world, RiskEvent, RiskEvent.run_id == run_id)
    assert len(events) == 2 and {e.event_type for e in events} == {"kill_switch"}
    assert all(e.trigger_value is not None and e.trigger_value <= Decimal("-1000") for e in events)
    assert buys_at_exchange(world) == {0: sorted(world.leg_symbols)}


def test_build_engine_runs_the_kill_switch_on_its_risk_engine(db_url: str, tmp_path: Path) -> None:
    env = make_env(db_url, tmp_path)
    try:
        service = build_engine(env.state.settings, env.database)
        switch = find_component(service, "kill_switch")
        assert isinstance(switch, KillSwitch)
        risk = find_component(service, "risk")
        assert risk is not None and switch.source is risk
        names = [c.name for c in service.components]
        assert names.index("kill_switch") == names.index("risk") + 1
    finally:
        env.database.dispose()


def carried_over(world: World, run_id: int, *samples: tuple[timedelta, str]) -> None:
    """Make the run start yesterday and give it P&L samples at T0 + offset (₹)."""
    now = world.clock.now()
    with world.database.session() as session:
        session.execute(
            update(StrategyRun).where(StrategyRun.id == run_id).values(started_at=now - timedelta(days=1))
        )
        session.add_all(RunPnlSample(run_id=run_id, at=now + at, pnl=Decimal(pnl)) for at, pnl in samples)


# T0 is 10:30 IST: yesterday's close (15:29 IST) is T0 − 19 h 01 min; today's session started at T0 − 75 min.
CLOSE = -timedelta(hours=19, minutes=1)


async def test_a_carried_over_run_counts_only_todays_change(
    db_url: str, simulator_session: SimHandle
) -> None:
    world = make_world(db_url, simulator_session, accounts=1, legs=STRANGLE)
    run_id = await entered(world)
    [first] = world.account_ids
    set_limit(world, 0, "1000")
    # Yesterday it lost ₹5,000 (the last sample before today's 09:15 is the baseline; an earlier one
    # and today's are not).
    carried_over(
        world,
        run_id,
        (CLOSE - timedelta(hours=1), "-2000"),
        (CLOSE, "-5000"),
        (-timedelta(minutes=30), "-5400"),
    )
    source = FakeSource(runs={run_id: object()}, open_pnl={first: Decimal("-5999.99")})
    async with switch_of(world, source) as (switch, bus):
        assert await switch.check() == []  # yesterday's loss does not count today
        assert switch.last[first].total == Decimal("-999.99")
        assert bus.events("pnl")[-1]["pnl"] == "-999.99"
        source.open_pnl[first] = Decimal("-6000")  # today's move reaches the limit
        assert await switch.check() == [first]
        await switch.drain()
        await exited(world, run_id, 0)
    [event, _] = rows_of(world, RiskEvent, RiskEvent.run_id == run_id)
    assert event.trigger_value == Decimal("-1000.00")


async def test_a_carried_over_run_without_a_closing_sample_is_unknown(
    db_url: str, simulator_session: SimHandle
) -> None:
    world = make_world(db_url, simulator_session, accounts=2, legs=STRANGLE)
    run_id = await entered(world)
    first, second = world.account_ids
    set_limit(world, 0, "1")
    set_limit(world, 1, "1")
    carried_over(world, run_id, (-timedelta(minutes=30), "-5000"))  # today's only: no baseline
    source = FakeSource(runs={run_id: object()}, open_pnl={first: Decimal("-5000"), second: Decimal("-5000")})
    async with switch_of(world, source) as (switch, _):
        assert await switch.check() == []
        for account_id in (first, second):
            assert switch.last[account_id].total is None
            assert switch.last[account_id].unknown_reason == (
                f"no closing P&L for run {run_id} from the previous session"
            )
        # With a baseline, a run on two accounts is still unknown: the sample is the run's total.
        carried_over(world, run_id, (CLOSE, "-4000"))
        assert await switch.check() == []
        assert "spans several accounts" in (switch.last[first].unknown_reason or "")
        assert switch.last[second].total is None
    assert account(world, 0).kill_switch_at is None and account(world, 1).kill_switch_at is None
    assert rows_of(world, EngineCommand, EngineCommand.kind == "exit") == []


async def test_a_carried_over_run_ended_today_counts_its_change_since_the_baseline(
    db_url: str, simulator_session: SimHandle
) -> None:
    world = make_world(db_url, simulator_session, accounts=1, legs=STRANGLE)
    run_id = await closed_with_loss(world)  # −₹1,300 realised since entry, both legs exited today
    [first] = world.account_ids
    set_limit(world, 0, "300")
    carried_over(world, run_id, (CLOSE, "-1000.01"))
    async with switch_of(world, FakeSource()) as (switch, _):
        assert await switch.check() == []
        assert switch.last[first].realised == Decimal("-299.99")
        # A leg exited yesterday is in the baseline and in the run's realised: neither lost nor doubled.
        with world.database.session() as session:
            session.execute(
                update(StrategyExecution)
                .where(StrategyExecution.run_id == run_id, StrategyExecution.leg_id == world.leg_ids[0])
                .values(exit_time=world.clock.now() - timedelta(days=1))
            )
        assert await switch.check() == []
        assert switch.last[first].realised == Decimal("-299.99")
        with world.database.session() as session:
            session.execute(delete(RunPnlSample).where(RunPnlSample.run_id == run_id))
        assert await switch.check() == []
        assert switch.last[first].total is None
        assert f"no closing P&L for run {run_id}" in (switch.last[first].unknown_reason or "")
        carried_over(world, run_id, (CLOSE, "-1000"))
        assert await switch.check() == [first]  # −300 ≤ −300
