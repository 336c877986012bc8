"""Helpers for the resolution tests: a paper-exchange world (execution_support.World) whose strategy
selects its accounts and carries resolvable legs (ATM / OTM k / premium-near), the user's seeded margin
table, grades and instrument settings, and a StrategyResolver on the same database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, select

from algomirror.broker.client import RetryPolicy, Timeouts
from algomirror.broker.registry import ClientRegistry
from algomirror.db.defaults import seed_user_defaults
from algomirror.db.models import EngineCommand, Strategy, StrategyLeg, User
from algomirror.engine.execution import ExecutionConfig
from algomirror.engine.resolution import EXECUTE_STRATEGY, PREVIEW_STRATEGY, StrategyResolver
from tests.factories import make_account
from tests.integration.execution_support import World, make_world
from tests.sim_fixtures import SimHandle


@dataclass(frozen=True)
class LegDef:
    action: str
    option_type: str
    selection: str = "ATM"
    offset: int = 0
    lots: int = 1
    premium: Decimal | None = None
    strike: Decimal | None = None


STRADDLE = (LegDef("SELL", "CE"), LegDef("SELL", "PE"))
CONDOR = (
    LegDef("BUY", "CE", "OTM", 4),
    LegDef("BUY", "PE", "OTM", 4),
    LegDef("SELL", "CE", "OTM", 2),
    LegDef("SELL", "PE", "OTM", 2),
)


def resolution_world(
    db_url: str,
    sim: SimHandle,
    legs: Sequence[LegDef],
    *,
    accounts: int = 3,
    risk_profile: str = "fixed_lots",
    extra_keys: Sequence[str] = (),
    on_leg_failure: str = "unwind",
) -> World:
    """A world whose strategy (MIS, ``risk_profile``) selects every account, with ``legs`` on NIFTY
    current week. ``extra_keys`` adds accounts on further paper API keys (``sim.control.add_account``)."""
    world = make_world(db_url, sim, accounts=accounts, legs=(), on_leg_failure=on_leg_failure)
    with world.database.session() as session:
        user = session.get(User, world.user_id)
        assert user is not None
        seed_user_defaults(session, user)
        for n, key in enumerate(extra_keys, start=1):
            world.account_ids.append(
                make_account(
                    session,
                    world.user_id,
                    f"Extra {n}",
                    host_url=sim.rest_url,
                    api_key_encrypted=world.box.encrypt(key),
                ).id
            )
        strategy = session.get(Strategy, world.strategy_id)
        assert strategy is not None
        strategy.selected_accounts = [{"account_id": a} for a in world.account_ids]
        strategy.risk_profile = risk_profile
        strategy.product_order_type = "MIS"
        strategy.square_off_time = None
        session.execute(delete(StrategyLeg).where(StrategyLeg.strategy_id == world.strategy_id))
        rows = []
        for n, leg in enumerate(legs, start=1):
            row = StrategyLeg(
                strategy_id=world.strategy_id,
                leg_number=n,
                instrument="NIFTY",
                product_type="options",
                expiry="current_week",
                action=leg.action,
                option_type=leg.option_type,
                strike_selection=leg.selection,
                strike_offset=leg.offset,
                strike_price=leg.strike,
                premium_value=leg.premium,
                order_type="MARKET",
                lots=leg.lots,
            )
            session.add(row)
            rows.append(row)
        session.flush()
        world.leg_ids = [r.id for r in rows]
    return world


def queue(world: World, kind: str, token: str, **payload: Any) -> int:
    """Queue a ``preview_strategy`` / ``execute_strategy`` command as the web does; its id."""
    body = {"strategy_id": world.strategy_id, **payload}
    if kind == EXECUTE_STRATEGY:
        body.setdefault("source", "manual")
        body.setdefault("scheduled_for", None)
    with world.database.session() as session:
        row = EngineCommand(user_id=world.user_id, kind=kind, payload=body, token=token, status="pending")
        session.add(row)
        session.flush()
        return row.id


@asynccontextmanager
async def resolver_of(world: World) -> AsyncIterator[StrategyResolver]:
    registry = ClientRegistry(
        timeouts=Timeouts(connect=2.0, read=5.0, order=5.0), retry=RetryPolicy(attempts=1)
    )
    resolver = StrategyResolver(
        world.database,
        registry,
        world.box.decrypt,
        epoch=world.epoch,
        clock=world.clock,
        config=ExecutionConfig(poll_seconds=0.05, retry_delay=0.0),
    )
    try:
        yield resolver
    finally:
        await registry.aclose()


async def preview(world: World, token: str = "pv-1") -> dict[str, Any]:
    """Queue a preview, run it, return its ``preview`` JSON (asserts the command ended done)."""
    command_id = queue(world, PREVIEW_STRATEGY, token)
    async with resolver_of(world) as resolver:
        assert await resolver.run_command(command_id)
    command = world.command(command_id)
    assert command.status == "done", command.error
    assert isinstance(command.result, dict)
    result: dict[str, Any] = command.result["preview"]
    return result


def rows_of(result: dict[str, Any]) -> dict[tuple[int, int], dict[str, Any]]:
    """(leg number, account id) → the preview's row."""
    numbers = {leg["leg_id"]: leg["leg_number"] for leg in result["legs"]}
    return {(numbers[r["leg_id"]], r["account_id"]): r for r in result["rows"]}


def commands_of(world: World, kind: str) -> list[EngineCommand]:
    with world.database.session_factory() as session:
        return list(session.scalars(select(EngineCommand).where(EngineCommand.kind == kind)))
