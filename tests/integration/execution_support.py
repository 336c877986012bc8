"""Helpers for the entry-path tests: a user with paper-exchange accounts (real API keys, encrypted), a
strategy with legs, a planned run with its ``execute_run`` command, an EntryExecutor on the same
database, and the exchange's own view of the orders."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from cryptography.fernet import Fernet
from sqlalchemy import select

from algomirror.broker.client import RetryPolicy, Timeouts
from algomirror.broker.registry import ClientRegistry
from algomirror.db.models import (
    EngineCommand,
    OrderIntent,
    Strategy,
    StrategyExecution,
    StrategyLeg,
    StrategyRun,
)
from algomirror.db.session import Database
from algomirror.domain.timeutil import FakeClock
from algomirror.engine.entry_records import strategy_tag
from algomirror.engine.execution import EntryExecutor, ExecutionConfig
from algomirror.engine.exits import ExitExecutor, ExitRetry
from algomirror.engine.fencing import take_epoch
from algomirror.engine.journal import IntentSpec, IntentView, Journal
from algomirror.engine.order_driver import DriverConfig
from algomirror.engine.planning import PlannedExecution, plan_run, request_execute
from algomirror.security import SecretBox
from algomirror.simulator.exchange import Order as SimOrder
from tests.factories import make_account, make_user
from tests.sim_fixtures import SimHandle

X = TypeVar("X", bound=ExitExecutor)

T0 = datetime(2026, 11, 25, 5, 0, tzinfo=UTC)  # the test exchange's start: Wed 25 Nov 2026 10:30 IST
EXPIRY = "01DEC26"

# An iron condor: hedges (BUY) far out, shorts (SELL) nearer; leg number → (action, strike + type).
IRON_CONDOR: tuple[tuple[str, str], ...] = (
    ("BUY", "25500PE"),
    ("BUY", "26500CE"),
    ("SELL", "25800PE"),
    ("SELL", "26200CE"),
)


def nifty(strike_type: str) -> str:
    return f"NIFTY{EXPIRY}{strike_type}"


@dataclass
class World:
    """One user, accounts on the paper exchange (index i uses ``sim.api_keys[i]``), one strategy."""

    database: Database
    sim: SimHandle
    box: SecretBox
    clock: FakeClock
    epoch: int
    user_id: int
    account_ids: list[int]
    strategy_id: int
    leg_ids: list[int]
    leg_symbols: list[str]

    def executor(
        self, *, order_timeout: float = 5.0, registry: ClientRegistry | None = None, **driver: Any
    ) -> tuple[EntryExecutor, ClientRegistry]:
        registry = registry or ClientRegistry(
            timeouts=Timeouts(connect=2.0, read=5.0, order=order_timeout), retry=RetryPolicy(attempts=1)
        )
        settings: dict[str, Any] = {
            "fill_timeout": 5.0,
            "status_interval": 0.05,
            "resolve_seconds": 3.0,
            "resolve_interval": 0.1,
            "send_retry_delay": 0.05,
            **driver,
        }
        config = ExecutionConfig(poll_seconds=0.05, retry_delay=0.0, driver=DriverConfig(**settings))
        executor = EntryExecutor(
            self.database, registry, self.box.decrypt, epoch=self.epoch, clock=self.clock, config=config
        )
        return executor, registry

    def exit_executor(
        self,
        retry: ExitRetry | None = None,
        *,
        cls: type[X] = ExitExecutor,
        **options: Any,  # type: ignore[assignment]
    ) -> tuple[X, ClientRegistry]:
        """An exit executor of class ``cls`` with ``retry`` on the config :meth:`executor` builds from
        ``options``, and its registry (the caller closes it)."""
        entry, registry = self.executor(**options)
        exits = cls(
            self.database,
            registry,
            self.box.decrypt,
            epoch=self.epoch,
            clock=self.clock,
            config=entry.config,
            retry=retry,
        )
        return exits, registry

    def plan(
        self,
        symbols: dict[tuple[int, int], str] | None = None,
        *,
        quantity: int = 65,
        token: str = "tok-1",
        accounts: Sequence[int] | None = None,
    ) -> tuple[int, int]:
        """Plan a run of every leg on every account (``symbols[(leg index, account index)]`` overrides a
        symbol) and queue its command; returns (run id, command id)."""
        chosen = list(range(len(self.account_ids))) if accounts is None else list(accounts)
        with self.database.session() as session:
            planned = []
            for li, leg_id in enumerate(self.leg_ids):
                for ai in chosen:
                    symbol = (symbols or {}).get((li, ai), self.leg_symbols[li])
                    planned.append(
                        PlannedExecution(
                            leg_id, self.account_ids[ai], symbol, "NFO", "NRML", quantity, "NIFTY"
                        )
                    )
            run = plan_run(session, self.strategy_id, planned, now=self.clock.now())
            command = request_execute(session, user_id=self.user_id, run_id=run.id, token=token)
            return run.id, command.id

    def command(self, command_id: int) -> EngineCommand:
        with self.database.session_factory() as session:
            row = session.get(EngineCommand, command_id)
            assert row is not None
            return row

    def add_command(self, run_id: int, token: str) -> int:
        with self.database.session() as session:
            return request_execute(session, user_id=self.user_id, run_id=run_id, token=token).id

    def run(self, run_id: int) -> StrategyRun:
        with self.database.session_factory() as session:
            row = session.get(StrategyRun, run_id)
            assert row is not None
            return row

    def executions(self, run_id: int) -> list[StrategyExecution]:
        with self.database.session_factory() as session:
            return list(
                session.scalars(
                    select(StrategyExecution)
                    .where(StrategyExecution.run_id == run_id)
                    .order_by(StrategyExecution.leg_id, StrategyExecution.account_id)
                )
            )

    def journal(self) -> Journal:
        """A journal writing under this world's epoch and clock (what a live engine would use)."""
        return Journal(self.database, epoch=self.epoch, clock=self.clock)

    def record_intent(
        self, key: str, execution_id: int, *, side: str, quantity: int, purpose: str = "entry"
    ) -> IntentView:
        """What an engine leaves behind when it recorded an intent for the first leg's symbol on the
        first account, and died before sending it."""
        return self.journal().record(
            IntentSpec(
                key=key,
                account_id=self.account_ids[0],
                symbol=self.leg_symbols[0],
                exchange="NFO",
                product="NRML",
                side=side,
                quantity=quantity,
                strategy_tag=strategy_tag(self.strategy_id),
                execution_id=execution_id,
                purpose=purpose,
            )
        )

    def intents(self) -> list[OrderIntent]:
        with self.database.session_factory() as session:
            return list(session.scalars(select(OrderIntent).order_by(OrderIntent.id)))

    def exchange_orders(self, account_index: int) -> list[SimOrder]:
        """The exchange's own order records of one account, in placement order."""
        account = self.sim.running.core.exchange.accounts[self.sim.api_keys[account_index]]
        return sorted(account.orders.values(), key=lambda o: o.orderid)

    def all_exchange_orders(self) -> list[SimOrder]:
        return [o for i in range(len(self.account_ids)) for o in self.exchange_orders(i)]


def make_world(
    db_url: str,
    sim: SimHandle,
    *,
    accounts: int = 3,
    legs: Sequence[tuple[str, str]] = IRON_CONDOR,
    on_leg_failure: str = "unwind",
) -> World:
    """A user ``trader`` with ``accounts`` paper accounts and a strategy with MARKET ``legs`` (action,
    strike + option type of the test expiry), one lot each."""
    database = Database(db_url)
    box = SecretBox(Fernet.generate_key())
    clock = FakeClock(T0)
    with database.session() as session:
        epoch = take_epoch(session, holder="test:1", now=T0)
        user = make_user(session, "trader")
        account_ids = [
            make_account(
                session,
                user.id,
                f"Paper {i + 1}",
                host_url=sim.rest_url,
                api_key_encrypted=box.encrypt(sim.api_keys[i]),
            ).id
            for i in range(accounts)
        ]
        strategy = Strategy(user_id=user.id, name="Condor", on_leg_failure=on_leg_failure)
        session.add(strategy)
        session.flush()
        leg_rows = []
        for n, (action, strike) in enumerate(legs, start=1):
            leg = StrategyLeg(
                strategy_id=strategy.id,
                leg_number=n,
                instrument="NIFTY",
                product_type="options",
                expiry="current_week",
                action=action,
                option_type=strike[-2:],
                order_type="MARKET",
                lots=1,
            )
            session.add(leg)
            leg_rows.append(leg)
        session.flush()
        leg_ids = [leg.id for leg in leg_rows]
        strategy_id = strategy.id
    symbols = [nifty(strike) for _, strike in legs]
    return World(database, sim, box, clock, epoch, user.id, account_ids, strategy_id, leg_ids, symbols)


@asynccontextmanager
async def executor_of(world: World, **options: Any) -> AsyncIterator[EntryExecutor]:
    executor, registry = world.executor(**options)
    try:
        yield executor
    finally:
        await registry.aclose()
