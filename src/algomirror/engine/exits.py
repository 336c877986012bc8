"""The engine's exit path: ``exit`` commands from the web (one leg, one account of a run, a run, or
everything of the user), each open leg exited exactly once (PRODUCT §6.7; DESIGN §3).

:class:`ExitExecutor` is the entry executor's command machinery (claim ``pending → running`` once,
retry with backoff, recovery after a crash) with its own command kind. For each command:

1. **Targets**: the user's open executions in the scope (:func:`~algomirror.engine.exit_records.
   target_states`). Executions of a run that is still ``entering`` are not exited yet: their working
   entry orders (acknowledged, tagged) are cancelled one by one — ``cancelallorder`` leaves SL orders
   alive — and followed with ``orderstatus`` until the broker confirms the end; the command is retried
   until the entry has finished, so no hedge is sold while the entry may still send its short.
2. **One owner**: each ``active`` execution is claimed ``active → exiting`` with a new attempt number
   ``n`` (:func:`~algomirror.engine.exit_records.claim_exit`); an execution another caller claimed is
   left to it. An ``exiting`` execution found by a retry of the command (the engine died after the
   claim) is continued with its stored ``n``: its intents' keys are the same, so nothing is sent twice.
   An exit with ``retry_errors`` in the payload (a person's, the scheduled square-off, an entry
   unwind's hand-over) also claims an ``error`` execution: "retry exit", attempt ``n`` = the first of
   the next round. Only a person's may close a lost-mid-send intent as not placed on a clean broker
   view (:meth:`~algomirror.engine.exit_work.ExitWork._verify`).
   The first attempt of the legs a command can send at once is claimed, recorded and sent for all of
   them together (:mod:`~algomirror.engine.exit_first`); the legs it leaves out go one by one.
3. **Orders**: the opposite side for the open quantity (filled − exited), MARKET, the execution's
   product, in freeze slices, each recorded first as ``exec:{id}:exit:{n}:{slice}`` with the strategy's
   tag and driven by :class:`~algomirror.engine.order_driver.OrderDriver` at EXIT priority (unknown
   outcomes resolved from the orderbook, never re-sent).
4. **Hedges last**: per account, the SELL legs (shorts) are bought back first; the BUY legs are sold only
   once every short of the scope on that account is flat, else they stay open and say why.
5. **Retry** (PRODUCT §6.7 step 6): a rejected, unfilled or unresolved attempt stays ``exiting``
   under its owner. After a capped backoff (:class:`ExitRetry`, first wait 10 s) the owner re-follows
   its own orders, then verifies at the broker (:mod:`~algomirror.engine.exit_verify`, EXIT priority):
   a working order of ours → wait; a failed read → wait and read again; an order of ours lost
   mid-send (``unknown``, no order id) → wait for the driver's lost-order rule (``unplaced_after``:
   never in a clean orderbook, the broker's net what our fills make it → ``cancelled``, not placed;
   verification waits that long even past its own timeout); else attempt ``n + 1``
   (:func:`~algomirror.engine.exit_records.next_attempt`, one winner) with new keys, for exactly what
   both our fills and the broker's net say is open. The last attempt of a round (5) failing, or an
   outcome that cannot be established in time → ``error`` + a critical ``exit_failed`` alert.
6. **Outcome**: ``exited`` with exit price (weighted average of exit fills), quantity, order ids, time,
   reason and realised P&L (never a reversed position). A run whose executions are all exited is
   ``closed``; a run with an ``error`` execution shows ``error``.

**Modules.** This one is the component (commands, targets, the accounts' locks, closing runs);
:mod:`~algomirror.engine.exit_work` is one command's work on the legs.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from algomirror.broker.registry import ClientRegistry
from algomirror.db.models import StrategyExecution
from algomirror.db.session import Database
from algomirror.domain.timeutil import Clock, to_ist
from algomirror.engine.concurrency import BusyLock
from algomirror.engine.entry_records import RunPlan, load_plan
from algomirror.engine.execution import EntryExecutor, ExecuteOutcome, ExecutionConfig, settled
from algomirror.engine.exit_first import first_specs
from algomirror.engine.exit_planning import EXIT_COMMAND
from algomirror.engine.exit_records import (
    ExitState,
    claim_first_exits,
    close_runs,
    stuck_shorts,
    target_states,
    unclosed_runs,
)
from algomirror.engine.exit_work import ExitRetry, ExitScope, ExitWork, parse_scope
from algomirror.engine.journal import ClaimedIntent, IntentSpec, Journal
from algomirror.engine.order_driver import OrderDriver

log = logging.getLogger(__name__)


class ExitExecutor(EntryExecutor):
    """The engine component that exits executions; see the module docstring. Constructed like
    :class:`~algomirror.engine.execution.EntryExecutor`; tests drive it with :meth:`process_once`,
    :meth:`run_command` and :meth:`exit_scope`."""

    name = "exits"
    kind = EXIT_COMMAND
    recover_note = "the engine stopped while exiting; it is resumed (nothing already sent is sent again)"

    def __init__(
        self,
        database: Database,
        registry: ClientRegistry,
        decrypt: Callable[[str], str],
        *,
        epoch: int | Callable[[], int | None],
        clock: Clock | None = None,
        config: ExecutionConfig | None = None,
        retry: ExitRetry | None = None,
        market_clock: Clock | None = None,
    ) -> None:
        super().__init__(
            database, registry, decrypt, epoch=epoch, clock=clock, config=config, market_clock=market_clock
        )
        self.retry = retry or ExitRetry()
        # See _exit_run; a closed run's idle locks are dropped (_forget_idle).
        self._account_locks: defaultdict[tuple[int, int | None], BusyLock] = defaultdict(BusyLock)
        self._released: defaultdict[int, int] = defaultdict(int)  # account locks of a run released
        self._closed: set[int] = set()  # runs this executor closed (their idle locks are dropped)

    async def perform(self, user_id: int, payload: dict[str, Any]) -> ExecuteOutcome:
        """Run one claimed ``exit`` command."""
        return await self.exit_scope(user_id, parse_scope(payload))

    async def exit_scope(self, user_id: int, scope: ExitScope) -> ExecuteOutcome:
        """Exit everything ``scope`` covers of ``user_id``; safe to call any number of times."""
        if scope.run_id is not None:
            # One run (a run's or an account's exit: every risk breach): _exit_run's own read is the
            # one that counts, so the targets are not read twice before the first order.
            run_ids = [scope.run_id]
        else:
            states = await asyncio.to_thread(self._targets, user_id, scope)
            if not states:
                await asyncio.to_thread(self._close_settled, user_id, scope)
                return _nothing_open(scope)
            run_ids = sorted({s.run_id for s in states})
        driver = OrderDriver(self.database, self._journal(), self.config.driver)
        work = ExitWork(self, driver, scope, {})
        # Each run under its own accounts' locks, runs in parallel: a run whose exit is waiting to retry
        # (minutes at most) does not hold up an "exit all" of the user's other runs (see _exit_run for
        # why no deadlock).
        ended = await settled(*(self._exit_run(user_id, scope, run_id, work) for run_id in run_ids))
        if not work.seen:
            return _nothing_open(scope)
        closed = [run_id for run_id in ended if run_id is not None]
        result = work.summary(closed)
        if result["open"] or result["entering"]:
            # Orders of ours unsettled, or an entry to wait for: never given up (see ExecuteOutcome).
            return ExecuteOutcome(
                "retry",
                result,
                error="exit orders of unknown outcome, or entries still running",
                unresolved=True,
            )
        if result["unreachable"]:
            # No order can go to the account (no account, no usable key): retried, then given up.
            return ExecuteOutcome("retry", result, error="an account of the exit cannot be reached")
        return ExecuteOutcome("done", result)

    async def _exit_run(self, user_id: int, scope: ExitScope, run_id: int, work: ExitWork) -> int | None:
        """The scope's part in one run, under its accounts' locks; the run id when the run closed.

        Each account's exit is one command's at a time (BUY-first holds within an account: its shorts
        before its hedges), under that account's lock. An exit of one account's legs (an account's
        exit, a person's retry of one leg) holds that lock alone, so such commands on different
        accounts of a run go in parallel. An exit of the whole run (every run-wide risk breach, exit
        all) takes the lock of every account of the run that is free at once and exits those together
        (one read, their first wave in one transaction); an account whose lock another command holds
        (an account's exit waiting between its attempts, say) is exited after that command, on its
        own, so it never holds up the others. A task waits for one lock at a time and takes free ones
        only without waiting, so no two tasks can wait for each other (no deadlock)."""
        if scope.kind in ("run", "all"):
            return await self._exit_whole_run(user_id, scope, run_id, work)
        account_id = scope.account_id
        if account_id is None:
            account_id = await asyncio.to_thread(self._account_of, scope)
        async with self._account_lock(run_id, account_id):
            return await self._exit_locked(user_id, scope, run_id, work)

    async def _exit_whole_run(
        self, user_id: int, scope: ExitScope, run_id: int, work: ExitWork
    ) -> int | None:
        """:meth:`_exit_run` of a run or exit-all scope: the accounts whose locks are free together,
        and each busy one as soon as its holder is done, at the same time."""
        released = self._released[run_id]
        now = await asyncio.to_thread(self._run_now, user_id, scope, run_id)
        busy: list[int] = []
        free: set[int] = set()
        async with AsyncExitStack() as held:
            for account_id in sorted(_accounts_of(now)):
                if self._account_locks[(run_id, account_id)].busy():
                    busy.append(account_id)
                else:  # free: taken without waiting (nothing else runs on the loop meanwhile)
                    await held.enter_async_context(self._account_lock(run_id, account_id))
                    free.add(account_id)
            if free and self._released[run_id] != released:
                # An exit of this run ended on one of its accounts while it was read: read again, now
                # under the free accounts' locks, so that nothing below works from a state it changed.
                now = await asyncio.to_thread(self._run_now, user_id, scope, run_id)
            account_of = _account_by_execution(now)
            states = [s for s in now.states if account_of.get(s.execution_id) in free]

            async def free_part() -> None:
                try:
                    if states:
                        work.seen = True
                        work.plans.update(now.plans)
                        await work.run(states, now.stuck)
                finally:
                    await held.aclose()  # the free accounts' locks back once their part is done

            if busy:
                log.info(
                    "exit of run %s: accounts %s wait for the exit already running on them", run_id, busy
                )
            await settled(
                free_part(), *(self._exit_account_after(user_id, scope, run_id, a, work) for a in busy)
            )
        closed = await self._close_run(scope, run_id)
        self._forget_idle(run_id)
        return closed

    async def _close_run(self, scope: ExitScope, run_id: int) -> int | None:
        """:func:`close_runs` of ``run_id`` with the scope's reason; the run id when it closed now."""
        closed = await asyncio.to_thread(
            close_runs, self.database, [run_id], scope.reason, scope.detail, self.market_clock.now()
        )
        self._closed.update(closed)
        return closed[0] if closed else None

    def _forget_idle(self, run_id: int) -> None:
        """Drop the account locks of run ``run_id``, once this executor has seen it closed, that nobody
        holds or waits for: a long-lived engine keeps locks only for runs that can still be exited.
        Safe on the loop: a lock that is not busy has no holder and no waiter, and a later command on
        the run (which finds nothing open) simply makes a new one. The run's release count and closed
        mark stay (an int each per run): a whole-run exit compares the count across its read, and a
        dropped count could make a change look like none."""
        if run_id not in self._closed:
            return
        for key in [k for k in self._account_locks if k[0] == run_id]:
            if not self._account_locks[key].busy():
                del self._account_locks[key]

    async def _exit_account_after(
        self, user_id: int, scope: ExitScope, run_id: int, account_id: int, work: ExitWork
    ) -> None:
        """One busy account's part of a run exit, once the command holding its lock is done: read again
        under the lock and exited as an account's exit would be, with the run exit's reason."""
        part = replace(scope, kind="account", run_id=run_id, account_id=account_id)
        async with self._account_lock(run_id, account_id):
            await self._exit_locked(user_id, scope, run_id, work, targets=part)

    @asynccontextmanager
    async def _account_lock(self, run_id: int, account_id: int | None) -> AsyncIterator[None]:
        """Hold the lock of ``account_id``'s part of run ``run_id``; each release is counted per run,
        so that an exit of the whole run knows when one ended while it read (see
        :meth:`_exit_whole_run`)."""
        try:
            async with self._account_locks[(run_id, account_id)]:
                try:
                    yield
                finally:
                    self._released[run_id] += 1
        finally:
            self._forget_idle(run_id)

    def _account_of(self, scope: ExitScope) -> int | None:
        """The account of the scope's one execution (None for none: nothing is exited then)."""
        with self.database.session_factory() as session:
            return session.scalar(
                select(StrategyExecution.account_id).where(StrategyExecution.id == scope.execution_id)
            )

    async def _exit_locked(
        self, user_id: int, scope: ExitScope, run_id: int, work: ExitWork, *, targets: ExitScope | None = None
    ) -> int | None:
        """:meth:`_exit_run`'s work once its lock is held: exit the executions of the run that
        ``targets`` (default: ``scope``) covers as stored now, then close the run if nothing of it is
        left open (with ``scope``'s reason)."""
        # Read again under the lock: a command that ran meanwhile has moved them on.
        now = await asyncio.to_thread(self._run_now, user_id, targets or scope, run_id)
        if now.states:
            work.seen = True
            work.plans.update(now.plans)
            await work.run(now.states, now.stuck)
        # With nothing left to exit too: an engine that died between the legs' exit writes and the
        # run's close left the run open with every leg exited, and closing it is this command's to finish.
        return await self._close_run(scope, run_id)

    def claim_first_exits(
        self,
        journal: Journal,
        plans: dict[int, Callable[[int], list[IntentSpec]]],
        reason: str,
        detail: str,
    ) -> dict[int, list[ClaimedIntent]]:
        """The fast first attempt's one transaction (:func:`~algomirror.engine.exit_records.
        claim_first_exits`); runs in a worker thread. Raises what that raises."""
        return claim_first_exits(journal, plans, reason, detail)

    def rehearse(self, rehearsal: Database, user_id: int, run_id: int, reason: str) -> int:
        """The fast first attempt of a breach's exit of run ``run_id`` up to its send, on
        ``rehearsal`` (:meth:`~algomirror.db.session.Database.rehearsal`: everything written is rolled
        back) and without sending: the run's read and the claim transaction of its shorts, so that the
        first real breach after a start does not pay for compiling their statements (about 20 ms
        here). Worker thread. Returns the number of executions the rolled-back claim took. Raises
        SQLAlchemyError and FencedOutError."""
        scope = parse_scope({"scope": "run", "run_id": run_id, "reason": reason})
        now = self._run_now(user_id, scope, run_id)
        plan = now.plans.get(run_id)
        if plan is None:
            return 0
        today = to_ist(self.market_clock.now()).date()
        active = {s.execution_id for s in now.states if s.status == "active"}
        legs = [leg for leg in plan.legs if leg.execution_id in active]
        shorts = [leg for leg in legs if leg.side == "SELL"] or legs
        journal = Journal(rehearsal, epoch=self._journal().epoch, clock=self.market_clock)
        specs = {leg.execution_id: first_specs(plan, leg, today) for leg in shorts}
        claimed = claim_first_exits(journal, specs, reason, "")
        return len(claimed)

    def _close_settled(self, user_id: int, scope: ExitScope) -> list[int]:
        """Close the scope's open runs whose legs are all exited or failed (what a crash before the
        run's close leaves); the runs closed."""
        with self.database.session_factory() as session:
            run_ids = unclosed_runs(session, user_id, execution_id=scope.execution_id)
        if not run_ids:
            return []
        return close_runs(self.database, run_ids, scope.reason, scope.detail, self.market_clock.now())

    def _targets(self, user_id: int, scope: ExitScope) -> list[ExitState]:
        with self.database.session_factory() as session:
            return self._targets_on(session, user_id, scope)

    @staticmethod
    def _targets_on(session: Session, user_id: int, scope: ExitScope) -> list[ExitState]:
        return target_states(
            session,
            user_id,
            scope=scope.kind,
            run_id=scope.run_id,
            account_id=scope.account_id,
            execution_id=scope.execution_id,
            with_errors=scope.retry_errors,
        )

    def _run_now(self, user_id: int, scope: ExitScope, run_id: int) -> _RunNow:
        """The scope's executions of ``run_id``, the run's plan and its stuck shorts, as stored now (one
        worker hop, one read transaction)."""
        with self.database.session_factory() as session:
            states = [s for s in self._targets_on(session, user_id, scope) if s.run_id == run_id]
            if not states:
                return _RunNow([], {}, set())
            plan = load_plan(session, run_id, user_id)
            # A person's exit of one leg may sell a hedge whatever else is stuck (PRODUCT §6.7 step 4).
            personal = scope.kind == "execution" and scope.reason == "manual"
            stuck = set() if personal else stuck_shorts(session, [run_id], [s.execution_id for s in states])
        return _RunNow(states, {} if plan is None else {run_id: plan}, stuck)


def _account_by_execution(now: _RunNow) -> dict[int, int]:
    """Execution id → account id, for the run ``now`` read (empty without its plan)."""
    return {leg.execution_id: leg.account_id for plan in now.plans.values() for leg in plan.legs}


def _accounts_of(now: _RunNow) -> set[int]:
    """The accounts of the executions ``now`` read to exit."""
    account_of = _account_by_execution(now)
    return {account_of[s.execution_id] for s in now.states if s.execution_id in account_of}


def _nothing_open(scope: ExitScope) -> ExecuteOutcome:
    return ExecuteOutcome("done", {"scope": scope.kind, "exited": 0, "note": "nothing open to exit"})


@dataclass(frozen=True, slots=True)
class _RunNow:
    """One run's part of a scope as stored now: its target executions, its plan, and the (run,
    account) pairs whose shorts are stuck in ``error`` (their hedges stay)."""

    states: list[ExitState]
    plans: dict[int, RunPlan]
    stuck: set[tuple[int, int]]


__all__ = ["ExitExecutor", "ExitRetry", "parse_scope"]
