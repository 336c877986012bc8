"""The engine's entry path: ``execute_run`` commands from the web, every order journaled first, sent
exactly once (PRODUCT §5.1, §5.9–5.11; DESIGN §3).

A run and its ``pending`` executions are planned beforehand (:mod:`algomirror.engine.planning`, in the
web's transaction together with the command). :class:`EntryExecutor` claims the command
(``pending → running``, one winner, as :class:`~algomirror.engine.commands.CommandProcessor` does) and
enters the run:

1. **Every order is an intent first.** Per execution and freeze slice the intent
   ``exec:{execution_id}:entry:{slice}`` is recorded before anything is sent, tagged with the strategy's
   stable tag (``AM-S{strategy_id}``); the send itself is claimed (``created → sent``) by one caller
   (:mod:`algomirror.engine.order_driver`). A retried command, a second command for the same run, or a
   restarted engine finds the intents and drives them on — unknown outcomes are resolved from the
   orderbook, acknowledged orders followed — and never sends a second order for one key.
2. **Hedges first.** The BUY legs of every account go first (accounts in parallel, each through its own
   rate scheduler at ENTRY priority); once they have all ended, each account whose BUY legs all filled
   sends its SELL legs.
3. **Pre-checks per account** before its entries: entries halted (:func:`~algomirror.engine.halts.
   entries_halted`, or on this account: ``entries_halted_reason``), the account inactive, archived,
   without a readable key or with its key refused: the account's unsent legs end ``failed`` with that
   reason; orders already sent are still resolved.
4. **Leg failure policy.** A leg that ends ``failed`` on an account (nothing filled, or the BUY legs
   not all filled so its SELL legs were not sent) applies the strategy's ``on_leg_failure``: ``unwind``
   (the default) exits that account's filled legs — shorts bought back before hedges are sold — with
   MARKET orders through the same journal (``exec:{id}:exit:1:{slice}``, EXIT priority), exit reason
   ``entry_unwind`` and the failed leg named; ``keep`` leaves them and says so on the run's result.
   An unwind that does not close (its sale refused or part filled: the leg is ``error``) is handed to
   the exit function, as every exit is (:mod:`algomirror.engine.exits`): one ``exit`` command of the
   account's part of the run, reason ``entry_unwind``, token ``unwind:{run}:{account}``, which verifies
   at the broker, retries with capped backoff and ends in ``error`` with an alert only after that.
5. **Outcome.** Fills go onto the executions (entry price = weighted average of the slices' fills,
   filled quantity, order ids, ``active`` / ``failed`` + error), the run becomes ``active``, ``closed``
   (everything unwound), ``failed`` (nothing filled) or ``error`` (an unwind that did not close), and
   its ``result`` holds the counts and reasons. While an order's outcome is still unknown, or an order
   is still working, the executions stay ``pending`` and the command is retried (resolving, never
   re-sending) up to its attempt limit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence, Sized
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, TypeVar

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from algomirror.broker.client import OpenAlgoClient
from algomirror.broker.registry import ClientRegistry, Priority
from algomirror.db.models import EngineAlert, EngineCommand, OrderIntent, StrategyExecution, TradingAccount
from algomirror.db.session import Database
from algomirror.domain.timeutil import Clock, SystemClock, to_ist
from algomirror.engine.alerts import raise_alert
from algomirror.engine.command_rows import (
    MAX_ERROR,
    InFlight,
    attempts_of,
    claim_command,
    end_values,
    pause,
    retry_delay,
    rowcount,
)
from algomirror.engine.concurrency import settled
from algomirror.engine.entry_records import (
    AccountInfo,
    EntryLeg,
    RunPlan,
    finish_entries,
    finish_entry,
    finish_exit,
    finish_run,
    load_plan,
    mark_failed,
    slice_quantities,
)
from algomirror.engine.exit_planning import request_exit
from algomirror.engine.fencing import FencedOutError
from algomirror.engine.group_commit import GroupCommit
from algomirror.engine.halts import entries_halted
from algomirror.engine.journal import (
    Advance,
    ClaimedIntent,
    IntentExistsError,
    IntentSpec,
    IntentView,
    Journal,
)
from algomirror.engine.order_driver import DriverConfig, IntentRow, OrderDriver
from algomirror.engine.planning import EXECUTE_RUN
from algomirror.host_settings import load_host_policy

log = logging.getLogger(__name__)

T = TypeVar("T")

_PRICE = Decimal("0.01")
# The alert of a command that gave up (an entry, exit or mirror order it could not finish).
COMMAND_FAILED_ALERT = "command_failed"


@dataclass(frozen=True, slots=True)
class ExecutionConfig:
    """Seconds unless noted. ``poll_seconds``: how often pending ``execute_run`` commands are looked
    for; ``max_attempts``: runs of one command before it ends ``failed`` (count); ``retry_delay``: wait
    before a command returned to pending runs again; ``driver``: order following and resolution."""

    poll_seconds: float = 0.3
    batch: int = 10
    max_attempts: int = 5
    retry_delay: float = 1.0
    driver: DriverConfig = field(default_factory=DriverConfig)


@dataclass(frozen=True, slots=True)
class ExecuteOutcome:
    """``done``/``failed`` end the command; ``retry`` returns it to ``pending``, at most
    ``max_attempts`` times — unless ``unresolved``: orders of ours are of unknown outcome or still
    working (or an exit waits for its run's entry). Such a command is never given up, because giving
    up would leave a run half entered or a position unprotected with nothing driving it; past
    ``max_attempts`` it raises a critical alert and goes on at the capped retry delay until the
    journal's resolution (the orderbook, the lost-order rule) settles its orders."""

    status: Literal["done", "failed", "retry"]
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    unresolved: bool = False


class ExecutionError(Exception):
    """A command that cannot run as given (bad payload, a run that is not the user's)."""


LegState = Literal["filled", "failed", "open"]


class EntryExecutor:
    """The engine component that enters strategy runs; see the module docstring.

    ``registry`` is the engine-wide client registry; ``decrypt`` turns ``api_key_encrypted`` into the
    key (ValueError when it cannot); ``epoch`` is the fencing epoch of the engine's lock (an int, or a
    callable read when a command starts: None while the lock is not held, and then nothing runs).
    Tests drive it with :meth:`recover`, :meth:`process_once`, :meth:`run_command` and
    :meth:`execute_run`.
    """

    name = "execution"
    # The command kind this component claims (a subclass for exits claims its own).
    kind = EXECUTE_RUN
    recover_note = "the engine stopped while entering this run; it is resumed"

    def __init__(
        self,
        database: Database,
        registry: ClientRegistry,
        decrypt: Callable[[str], str],
        *,
        epoch: int | Callable[[], int | None],
        clock: Clock | None = None,
        config: ExecutionConfig | None = None,
        market_clock: Clock | None = None,
    ) -> None:
        self.database = database
        self.registry = registry
        self.config = config or ExecutionConfig()
        # Two clocks: ``clock`` stamps the command rows (the web's requests, on the real clock like
        # every other command); ``market_clock`` stamps trading records (intents, fills, runs) and
        # decides "today", so they agree with the books the sync stamps (the demo's simulated clock).
        self.clock = clock or SystemClock()
        self.market_clock = market_clock or self.clock
        self._decrypt = decrypt
        self._epoch = epoch
        self._run_locks: defaultdict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._not_before: dict[int, float] = {}
        self._in_flight = InFlight()
        # Commands this executor is running now, however they were claimed (its poll, or a risk
        # breach's own transaction): recovery after a component restart must not return them to pending.
        self._running_here: set[int] = set()
        self._fenced: FencedOutError | None = None
        # Decrypted API keys by their stored ciphertext: a fan-out over 100 accounts would otherwise
        # decrypt every key once per phase. The registry's clients hold the same keys in memory.
        self._keys: dict[str, str] = {}
        self.ran = 0

    # ------------------------------------------------------------------------------- lifecycle

    async def run(self, stop: asyncio.Event) -> None:
        """Recover commands a dead engine left ``running``, then poll until ``stop`` is set; commands in
        flight are awaited when stopping (a cancelled send would leave its outcome unknown)."""
        try:
            await asyncio.to_thread(self.recover)
            while not stop.is_set():
                if self._fenced is not None:
                    raise self._fenced  # a newer engine holds the epoch: the service stops this one
                try:
                    for command_id in await asyncio.to_thread(self._due_ids):
                        if command_id not in self._in_flight:
                            self._in_flight.start(command_id, self._run_logged(command_id))
                except SQLAlchemyError as exc:
                    log.warning("execution: database error: %s", str(exc).splitlines()[0])
                await pause(stop, self.config.poll_seconds)
        finally:
            await self._in_flight.drain()

    async def _run_logged(self, command_id: int) -> bool:
        try:
            return await self.run_command(command_id)
        except FencedOutError as exc:
            self._fenced = exc
            return False
        except SQLAlchemyError as exc:
            log.warning("execute command %s: database error: %s", command_id, str(exc).splitlines()[0])
            return False

    def recover(self) -> int:
        """Return ``running`` ``execute_run`` rows (an engine died while entering) to ``pending``; each
        counts as an attempt. Safe: the run's intents exist, so the next run resolves, never re-sends."""
        now = self.clock.now()
        with self.database.session() as session:
            found = session.execute(
                select(EngineCommand.id, EngineCommand.result).where(
                    EngineCommand.status == "running", EngineCommand.kind == self.kind
                )
            ).all()
            # Not those this process runs (a restarted component's recovery).
            rows = [(i, result) for i, result in found if i not in self._running_here]
            for command_id, result in rows:
                attempts = attempts_of(result) + 1
                session.execute(
                    update(EngineCommand)
                    .where(EngineCommand.id == command_id, EngineCommand.status == "running")
                    .values(
                        status="pending",
                        result={"attempts": attempts},
                        error=self.recover_note,
                        started_at=None,
                        updated_at=now,
                    )
                    .execution_options(synchronize_session=False)
                )
        return len(rows)

    def _due_ids(self) -> list[int]:
        with self.database.session_factory() as session:
            ids = session.scalars(
                select(EngineCommand.id)
                .where(EngineCommand.status == "pending", EngineCommand.kind == self.kind)
                .order_by(EngineCommand.created_at, EngineCommand.id)
                .limit(self.config.batch * 4)
            ).all()
        now = time.monotonic()
        return [i for i in ids if self._not_before.get(i, 0.0) <= now][: self.config.batch]

    async def process_once(self) -> int:
        """Claim and run every due ``execute_run`` command now; returns how many this executor ran."""
        ids = await asyncio.to_thread(self._due_ids)
        return sum(await asyncio.gather(*(self.run_command(i) for i in ids)))

    # --------------------------------------------------------------------------------- commands

    async def run_command(self, command_id: int) -> bool:
        """Claim one ``execute_run`` command and run it to its outcome. False when it was not pending
        (claimed elsewhere, or ended), or while this engine holds no fencing epoch (nothing is claimed
        then: no order could be journaled)."""
        if self._current_epoch() is None:
            return False
        claimed = await asyncio.to_thread(self._claim, command_id)
        if claimed is None:
            return False
        user_id, payload, attempts = claimed
        await self.run_claimed(command_id, user_id, payload, attempts=attempts)
        return True

    def holds_epoch(self) -> bool:
        """Whether this executor may claim and run commands now (its engine holds the fencing epoch)."""
        return self._current_epoch() is not None

    async def run_claimed(
        self, command_id: int, user_id: int, payload: dict[str, Any], *, attempts: int
    ) -> None:
        """Run command ``command_id`` that its caller claimed (``running``: its own transaction, as a
        risk breach's does) to its outcome; ``attempts``: how many attempts ended before this one.
        Raises FencedOutError (the command is ended ``retry``) and what ending it raises."""
        self.ran += 1
        self._running_here.add(command_id)
        try:
            await self._run_claimed(command_id, user_id, payload, attempts)
        finally:
            self._running_here.discard(command_id)

    async def _run_claimed(
        self, command_id: int, user_id: int, payload: dict[str, Any], attempts: int
    ) -> None:
        try:
            outcome = await self.perform(user_id, payload)
        except ExecutionError as exc:
            outcome = ExecuteOutcome("failed", error=str(exc))
        except FencedOutError:
            await asyncio.to_thread(self._end, command_id, attempts, ExecuteOutcome("retry", error="fenced"))
            raise
        except SQLAlchemyError as exc:
            outcome = ExecuteOutcome("retry", error=f"database error: {str(exc).splitlines()[0]}")
        except Exception as exc:  # a bug must end the command visibly, not leave it running
            log.exception("execute command %s crashed", command_id)
            outcome = ExecuteOutcome("failed", error=f"internal error ({type(exc).__name__}); see the log")
        await asyncio.to_thread(self._end, command_id, attempts, outcome)

    async def perform(self, user_id: int, payload: dict[str, Any]) -> ExecuteOutcome:
        """Run one claimed command's payload (here ``execute_run``); raises ExecutionError for a bad one."""
        run_id = payload.get("run_id")
        if not isinstance(run_id, int) or isinstance(run_id, bool):
            raise ExecutionError("malformed execute_run payload (run_id)")
        return await self.execute_run(run_id, user_id=user_id)

    def _claim(self, command_id: int) -> tuple[int, dict[str, Any], int] | None:
        now = self.clock.now()
        with self.database.session() as session:
            if not claim_command(session, command_id, now, kind=self.kind):
                return None
            row = session.execute(
                select(EngineCommand.user_id, EngineCommand.payload, EngineCommand.result).where(
                    EngineCommand.id == command_id
                )
            ).one()
            payload = row.payload if isinstance(row.payload, dict) else {}
            return row.user_id, payload, attempts_of(row.result)

    def _end(self, command_id: int, attempts_before: int, outcome: ExecuteOutcome) -> None:
        now = self.clock.now()
        attempts = attempts_before + 1
        unresolved = outcome.status == "retry" and outcome.unresolved
        values = end_values(
            outcome.status,
            result=outcome.result,
            error=outcome.error,
            attempts=attempts,
            max_attempts=None if unresolved else self.config.max_attempts,
            now=now,
            retry_result=outcome.result,
        )
        if values["status"] == "pending":
            self._not_before[command_id] = time.monotonic() + retry_delay(self.config.retry_delay, attempts)
        with self.database.session() as session:
            ended = session.execute(
                update(EngineCommand)
                .where(EngineCommand.id == command_id, EngineCommand.status == "running")
                .values(updated_at=now, **values)
                .execution_options(synchronize_session=False)
            )
            if values["status"] == "failed" and rowcount(ended) == 1:
                self._alert_failed(session, command_id, str(values.get("error") or "failed"), now)
            elif unresolved and attempts >= self.config.max_attempts and rowcount(ended) == 1:
                why = f"still unresolved after {attempts} attempts ({outcome.error}); retried every 30 s"
                self._alert_failed(session, command_id, why, now, gave_up=False)

    def _alert_failed(
        self, session: Session, command_id: int, error: str, now: datetime, *, gave_up: bool = True
    ) -> None:
        """A command that ended ``failed`` may leave its run part-way (an entry with orders of unknown
        outcome, an exit not done), and one that is still unresolved after its attempts (``gave_up``
        False) holds a run or a position in that state for longer than it should: neither is only a
        status on a page, each raises a critical alert naming the run (when the payload has one) until
        a person acknowledges it (the second kind once per command)."""
        row = session.execute(
            select(EngineCommand.user_id, EngineCommand.kind, EngineCommand.payload).where(
                EngineCommand.id == command_id
            )
        ).one()
        payload = row.payload if isinstance(row.payload, dict) else {}
        run_id = payload.get("run_id") if isinstance(payload.get("run_id"), int) else None
        what = f"run {run_id}" if run_id is not None else f"command {command_id}"
        title = f"{row.kind} of {what} gave up"
        if not gave_up:
            # Once per command, acknowledged or not: it is retried every 30 s and would raise it again.
            title = f"{row.kind} (command {command_id}) of {what} is not finished"
            raised = session.scalar(
                select(EngineAlert.id).where(
                    EngineAlert.user_id == row.user_id,
                    EngineAlert.kind == COMMAND_FAILED_ALERT,
                    EngineAlert.title == title,
                )
            )
            if raised is not None:
                return
        raise_alert(
            session,
            user_id=row.user_id,
            kind=COMMAND_FAILED_ALERT,
            title=title,
            details=f"{error}; check the account(s) at the broker before acting",
            now=now,
            severity="critical",
            run_id=run_id,
        )

    # ------------------------------------------------------------------------------------ entry

    def _current_epoch(self) -> int | None:
        return self._epoch() if callable(self._epoch) else self._epoch

    def _journal(self) -> Journal:
        epoch = self._current_epoch()
        if epoch is None:
            raise FencedOutError("the engine does not hold its lock: no order may be recorded")
        return Journal(self.database, epoch=epoch, clock=self.market_clock)

    async def execute_run(self, run_id: int, *, user_id: int) -> ExecuteOutcome:
        """Enter run ``run_id`` of ``user_id`` (see the module docstring); safe to call any number of
        times. Raises :class:`ExecutionError` for a run that is not the user's."""
        async with self._run_locks[run_id]:
            plan = await asyncio.to_thread(self._load, run_id, user_id)
            if plan.status != "entering":
                return ExecuteOutcome("done", {"run_id": run_id, "status": plan.status, "note": "entered"})
            driver = OrderDriver(self.database, self._journal(), self.config.driver)
            entry = _RunEntry(self, plan, driver)
            await entry.enter()
            summary = await asyncio.to_thread(finish_run, self.database, run_id, self.market_clock.now())
            if summary.get("open"):
                return ExecuteOutcome(
                    "retry", summary, error="orders of unknown or open outcome remain", unresolved=True
                )
            return ExecuteOutcome("done", summary)

    def _load(self, run_id: int, user_id: int) -> RunPlan:
        with self.database.session() as session:
            self.registry.set_host_policy(load_host_policy(session))
            plan = load_plan(session, run_id, user_id)
        if plan is None:
            raise ExecutionError(f"run {run_id} not found")
        return plan

    def client_for(self, account: AccountInfo) -> tuple[OpenAlgoClient | None, str | None]:
        """The account's client, or None and the reason no order may go to it."""
        if not account.api_key_encrypted:
            return None, "the account has no API key"
        key = self._keys.get(account.api_key_encrypted)
        if key is None:
            try:
                key = self._decrypt(account.api_key_encrypted)
            except ValueError:
                return None, "the account's stored API key cannot be read; save the key again"
            if len(self._keys) >= 10_000:
                self._keys.clear()
            self._keys[account.api_key_encrypted] = key
        try:
            client = self.registry.client(account.id, account.host_url, key, name=account.account_name)
        except ValueError as exc:
            return None, f"the account's host URL is invalid: {exc}"
        if client.halted is not None:
            return None, f"the broker rejected the account's API key ({client.halted.message})"
        return client, None

    def entry_block(self, account: AccountInfo) -> str | None:
        """Why no new entry may go to ``account`` now (entries halted, inactive, archived), else None."""
        return self.entry_blocks([account.id])[account.id]

    def entry_blocks(self, account_ids: list[int]) -> dict[int, str | None]:
        """:meth:`entry_block` of several accounts, read in one go (the halt flag once)."""
        with self.database.session_factory() as session:
            halted = entries_halted(session)
            rows = {
                r.id: r
                for r in session.execute(
                    select(
                        TradingAccount.id,
                        TradingAccount.entries_halted_reason,
                        TradingAccount.archived_at,
                        TradingAccount.is_active,
                        TradingAccount.connection_status,
                    ).where(TradingAccount.id.in_(account_ids))
                )
            }
        return {a: _block_of(halted, rows.get(a)) for a in account_ids}


class _RunEntry:
    """One attempt at entering one run: the two phases, the policy, the records."""

    def __init__(self, executor: EntryExecutor, plan: RunPlan, driver: OrderDriver) -> None:
        self.x = executor
        self.plan = plan
        self.driver = driver
        self.today = to_ist(executor.market_clock.now()).date()
        # The accounts of a phase finish their rounds within moments of each other: their journal
        # writes and execution writes go in shared transactions (group commit), not one per account.
        self._advances: GroupCommit[list[Advance], list[IntentView]] = GroupCommit(self._advance_groups)
        self._finishes: GroupCommit[list[tuple[EntryLeg, list[IntentRow]]], list[LegState]] = GroupCommit(
            self._finish_groups
        )

    def _advance_groups(self, groups: Sequence[list[Advance]]) -> list[list[IntentView]]:
        views = self.driver.journal.advance_many([change for group in groups for change in group])
        return _split(views, groups)

    def _finish_groups(
        self, groups: Sequence[list[tuple[EntryLeg, list[IntentRow]]]]
    ) -> list[list[LegState]]:
        items = [item for group in groups for item in group]
        return _split(finish_entries(self.x.database, items, self.x.market_clock.now()), groups)

    async def enter(self) -> None:
        accounts = sorted({leg.account_id for leg in self.plan.legs})
        buys = await self._phase(accounts, "BUY")
        # Accounts whose hedges all filled send their SELL legs together (one journal transaction
        # records them all); each account's policy runs as soon as its own SELL legs have ended.
        ready = [a for a, states in zip(accounts, buys, strict=True) if not {"open", "failed"} & set(states)]
        others = [(a, states) for a, states in zip(accounts, buys, strict=True) if a not in set(ready)]
        await settled(
            self._phase(ready, "SELL", then=self._after_sells),
            *(self._after_buys(a, states) for a, states in others),
        )

    def _legs(self, account_id: int, side: str) -> list[EntryLeg]:
        return [leg for leg in self.plan.legs if leg.account_id == account_id and leg.side == side]

    async def _phase(
        self,
        account_ids: list[int],
        side: str,
        *,
        then: Callable[[int, list[LegState]], Awaitable[None]] | None = None,
    ) -> list[list[LegState]]:
        """Enter the ``side`` legs of every account in ``account_ids`` (accounts in parallel); the
        legs' states per account, in order; ``then(account, states)`` runs for each account as soon as
        its own legs have ended.

        The hot path: the intents of every sendable leg of every account are written and their sends
        claimed in ONE journal transaction before any order leaves (:meth:`Journal.record_and_claim`);
        each account then places its orders, follows them with one orderbook read per round and writes
        their outcomes in one transaction per round, and its executions in one more. Legs that cannot
        take that path (not pending, blocked, unsliceable) go one by one as before
        (:meth:`_enter_leg`)."""
        work: list[tuple[int, list[EntryLeg], OpenAlgoClient | None, str | None]] = []
        for account_id in account_ids:
            account = self.plan.accounts.get(account_id)
            client, reason = (None, "account not found") if account is None else self.x.client_for(account)
            work.append((account_id, self._legs(account_id, side), client, reason))
        readable = [a for a, legs, client, _ in work if legs and client is not None]
        blocks = await asyncio.to_thread(self.x.entry_blocks, readable) if readable else {}
        fast: dict[int, list[tuple[EntryLeg, list[IntentSpec]]]] = defaultdict(list)
        for account_id, legs, client, _ in work:
            if client is None or blocks.get(account_id) is not None:
                continue
            for leg in legs:
                if leg.status != "pending":
                    continue
                try:
                    slices = slice_quantities(leg, self.today)
                except ValueError:
                    continue  # _enter_leg says why (or drives what an earlier attempt recorded)
                fast[account_id].append((leg, self._specs(leg, slices, "entry", leg.side)))
        specs = [spec for items in fast.values() for _, leg_specs in items for spec in leg_specs]
        claimed: dict[str, ClaimedIntent] = {}
        if specs:
            try:
                found = await asyncio.to_thread(self.driver.journal.record_and_claim, specs)
            except IntegrityError:
                fast.clear()  # another writer raced us to a key: every leg one by one, as before
            else:
                claimed = {c.view.key: c for c in found}

        async def account_phase(
            account_id: int, legs: list[EntryLeg], client: OpenAlgoClient | None, reason: str | None
        ) -> list[LegState]:
            if not legs:
                return []
            block = reason if client is None else blocks.get(account_id)
            mine = fast.get(account_id, [])
            fast_ids = {leg.execution_id for leg, _ in mine}
            slow = [leg for leg in legs if leg.execution_id not in fast_ids]
            states: dict[int, LegState] = {}
            slow_states, fast_states = await settled(
                self._enter_slow(client, slow, block),
                self._enter_claimed(client, mine, claimed) if mine and client is not None else _none(),
            )
            states.update({leg.execution_id: st for leg, st in zip(slow, slow_states, strict=True)})
            states.update({leg.execution_id: st for (leg, _), st in zip(mine, fast_states, strict=True)})
            result = [states[leg.execution_id] for leg in legs]
            if then is not None:
                await then(account_id, result)
            return result

        return list(await settled(*(account_phase(*item) for item in work)))

    async def _enter_slow(
        self, client: OpenAlgoClient | None, legs: list[EntryLeg], block: str | None
    ) -> list[LegState]:
        return list(await settled(*(self._enter_leg(client, leg, block) for leg in legs)))

    async def _enter_claimed(
        self,
        client: OpenAlgoClient,
        items: list[tuple[EntryLeg, list[IntentSpec]]],
        claimed: dict[str, ClaimedIntent],
    ) -> list[LegState]:
        """One account's legs whose intents :meth:`_phase` recorded and claimed: the won sends are
        placed at once and followed together (:meth:`OrderDriver.follow_many`); an intent an earlier
        attempt left (not won) is driven on from its stored state, never sent again."""
        rows: dict[str, IntentRow] = {}
        won: list[IntentRow] = []
        others: list[IntentRow] = []
        for _, specs in items:
            for spec in specs:
                c = claimed[spec.key]
                row = _row_of(spec, c)
                rows[spec.key] = row
                (won if c.won else others).append(row)

        driven = await self.driver.send_claimed(
            client, won, others, priority=Priority.ENTRY, write=self._advances.submit
        )
        for row in driven:
            rows[row.key] = row
        return await self._finishes.submit(
            [(leg, [rows[spec.key] for spec in specs]) for leg, specs in items]
        )

    async def _after_sells(self, account_id: int, sells: list[LegState]) -> None:
        if "failed" in sells:
            await self._apply_policy(account_id)

    async def _after_buys(self, account_id: int, buys: list[LegState]) -> None:
        if "open" in buys:
            return  # hedges of unknown outcome: no SELL and no unwind until they are resolved
        sells: list[LegState]
        if "failed" in buys:
            note = "not placed: a BUY leg of this account failed, so its SELL legs were not sent"
            await asyncio.to_thread(self._fail_unsent, self._legs(account_id, "SELL"), note)
            sells = ["failed"]
        else:
            sells = (await self._phase([account_id], "SELL"))[0]
        if "failed" in sells or "failed" in buys:
            await self._apply_policy(account_id)

    def _fail_unsent(self, legs: list[EntryLeg], note: str) -> None:
        for leg in legs:
            if leg.status == "pending" and not intents_of(self.x.database, leg.execution_id, "entry"):
                mark_failed(self.x.database, leg.execution_id, note)

    async def _enter_leg(self, client: OpenAlgoClient | None, leg: EntryLeg, block: str | None) -> LegState:
        if leg.status != "pending":
            return "filled" if leg.status == "active" and leg.filled_all else "failed"
        intents = await asyncio.to_thread(intents_of, self.x.database, leg.execution_id, "entry")
        if client is not None and block is None:
            # Every slice's intent, also after an attempt that died between two of them: recording is
            # idempotent (an existing key is kept as stored).
            try:
                slices = slice_quantities(leg, self.today)
            except ValueError as exc:
                if not intents:
                    await asyncio.to_thread(mark_failed, self.x.database, leg.execution_id, str(exc))
                    return "failed"
            else:
                intents = await asyncio.to_thread(self._record, leg, slices, "entry", leg.side)
        elif not intents:
            note = f"not placed: {block}"
            await asyncio.to_thread(mark_failed, self.x.database, leg.execution_id, note)
            return "failed"
        if client is None:
            # Orders may exist but the account cannot be read: leave them for the next attempt.
            return "open"
        send = block is None
        rows = await settled(
            *(self.driver.drive(client, i, allow_send=send, priority=Priority.ENTRY) for i in intents)
        )
        state = await asyncio.to_thread(finish_entry, self.x.database, leg, rows, self.x.market_clock.now())
        return state

    def _specs(self, leg: EntryLeg, slices: list[int], purpose: str, side: str) -> list[IntentSpec]:
        """The intents of every slice of ``leg`` (``exec:{id}:entry:{n}``, or ``exec:{id}:exit:1:{n}``
        MARKET for an unwind)."""
        prefix = "entry" if purpose == "entry" else "exit:1"
        market = purpose != "entry"
        return [
            IntentSpec(
                key=f"exec:{leg.execution_id}:{prefix}:{n}",
                account_id=leg.account_id,
                symbol=leg.symbol,
                exchange=leg.exchange,
                product=leg.product,
                side=side,
                quantity=quantity,
                order_type="MARKET" if market else leg.order_type,
                price=None if market else leg.price,
                trigger_price=None if market else leg.trigger_price,
                strategy_tag=self.plan.tag,
                execution_id=leg.execution_id,
                purpose=purpose,
            )
            for n, quantity in enumerate(slices, start=1)
        ]

    def _record(self, leg: EntryLeg, slices: list[int], purpose: str, side: str) -> list[IntentRow]:
        """Write the intents of every slice (an existing key is kept as it is), return them as stored."""
        journal = self.driver.journal
        for spec in self._specs(leg, slices, purpose, side):
            try:
                journal.record(spec)
            except IntentExistsError:
                pass  # written by an earlier attempt: driven from its stored state
        return intents_of(self.x.database, leg.execution_id, purpose)

    # ----------------------------------------------------------------------------------- policy

    async def _apply_policy(self, account_id: int) -> None:
        legs = await asyncio.to_thread(self._current_legs, account_id)
        failed = [
            leg for leg in legs if leg.status == "failed" or (leg.status == "active" and not leg.filled_all)
        ]
        # While the run enters, a leg can only be exiting, in error or exited through this policy (an
        # exit command waits for the entry): an unwind an earlier attempt began goes on even when the
        # leg that failed was the part-filled one, now being unwound itself.
        unwinding = [leg for leg in legs if leg.status in ("exiting", "error", "exited")]
        held = [leg for leg in legs if leg.status in ("active", "exiting")]
        if not failed and not unwinding:
            return
        # A begun unwind is finished whatever the policy reads now: a person switching the strategy to
        # ``keep`` while it entered would otherwise stop it half-way (a buy-back no longer followed, the
        # run entering for ever).
        unwind = self.plan.policy == "unwind" or bool(unwinding)
        if not held:
            if unwind:
                # Nothing left to send here; a leg an earlier attempt's unwind left in error (the engine
                # stopped before handing it over) is still handed over.
                await asyncio.to_thread(self._hand_over_unwind, account_id)
            return
        why = (
            "; ".join(
                f"leg {leg.leg_number} ({leg.symbol}) failed: {leg.error or 'not filled'}" for leg in failed
            )
            or "the unwind of this account, begun by an earlier attempt of the entry"
        )
        if not unwind:
            await asyncio.to_thread(self._note_kept, held, why)
            return
        account = self.plan.accounts.get(account_id)
        client, reason = (None, "account not found") if account is None else self.x.client_for(account)
        if client is None:
            await asyncio.to_thread(self._note_kept, held, f"{why}; unwind not possible: {reason}")
            await asyncio.to_thread(self._hand_over_unwind, account_id)
            return
        # Shorts are bought back before their hedges are sold: a short is never left uncovered. That
        # includes a short of this account that is not in hand: one whose entry's outcome is not known
        # yet (``pending``: it may have filled) and one whose buy-back gave up (``error``, an earlier
        # attempt's): the hedges wait for both.
        shorts = [leg for leg in held if leg.side == "SELL"]
        longs = [leg for leg in held if leg.side == "BUY"]
        unsettled = [leg for leg in legs if leg.side == "SELL" and leg.status in ("pending", "error")]
        closed = await settled(*(self._unwind(client, leg, why) for leg in shorts))
        if all(closed) and not unsettled:
            await settled(*(self._unwind(client, leg, why) for leg in longs))
        elif kept := [leg for leg in longs if leg.status == "active"]:
            note = f"{why}; hedge kept open: a short leg of this account is not bought back"
            await asyncio.to_thread(self._note_kept, kept, note)
        await asyncio.to_thread(self._hand_over_unwind, account_id)

    def _hand_over_unwind(self, account_id: int) -> None:
        """An unwind that left a leg of ``account_id`` in ``error`` (its one attempt refused or part
        filled) goes on through the exit function, like every other exit (PRODUCT §6.7): one ``exit``
        command of the account's part of the run, reason ``entry_unwind``, retrying the legs in error —
        verified at the broker before anything is re-sent, retried with capped backoff, shorts before
        hedges — under the token ``unwind:{run}:{account}``, so once however often the entry retries.
        An unwind whose outcome is only unknown (still ``exiting``) is left to the entry's next attempt."""
        run_id = self.plan.run_id
        token = f"unwind:{run_id}:{account_id}"
        try:
            with self.x.database.session() as session:
                stuck = session.scalar(
                    select(StrategyExecution.id).where(
                        StrategyExecution.run_id == run_id,
                        StrategyExecution.account_id == account_id,
                        StrategyExecution.status == "error",
                    )
                )
                if stuck is None:
                    return
                if session.scalar(select(EngineCommand.id).where(EngineCommand.token == token)) is not None:
                    return
                request_exit(
                    session,
                    user_id=self.plan.user_id,
                    scope="account",
                    run_id=run_id,
                    account_id=account_id,
                    reason="entry_unwind",
                    retry_errors=True,
                    token=token,
                )
        except IntegrityError:
            return  # queued meanwhile by another attempt of this entry: once is all it needs
        log.warning(
            "run %s: the unwind of account %s did not close; handed to the exit function (%s)",
            run_id,
            account_id,
            token,
        )

    def _current_legs(self, account_id: int) -> list[EntryLeg]:
        with self.x.database.session_factory() as session:
            fresh = load_plan(session, self.plan.run_id, self.plan.user_id)
        assert fresh is not None
        return [leg for leg in fresh.legs if leg.account_id == account_id]

    def _note_kept(self, legs: list[EntryLeg], why: str) -> None:
        with self.x.database.session() as session:
            for leg in legs:
                row = session.get(StrategyExecution, leg.execution_id)
                if row is not None:
                    row.error_message = f"kept open: {why}"[:MAX_ERROR]

    async def _unwind(self, client: OpenAlgoClient, leg: EntryLeg, why: str) -> bool:
        """Exit one filled leg (claimed ``active → exiting``); True once it is flat."""
        claimed = leg.status != "active" or await asyncio.to_thread(
            _claim_exit, self.x.database, leg.execution_id
        )
        if not claimed:
            return False
        intents = await asyncio.to_thread(intents_of, self.x.database, leg.execution_id, "exit")
        if not intents:
            slices = slice_quantities(leg, self.today, quantity=leg.filled_quantity)
            opposite = "BUY" if leg.side == "SELL" else "SELL"
            intents = await asyncio.to_thread(self._record, leg, slices, "exit", opposite)
        rows = await settled(
            *(self.driver.drive(client, i, allow_send=True, priority=Priority.EXIT) for i in intents)
        )
        return await asyncio.to_thread(
            finish_exit, self.x.database, leg, rows, why, self.x.market_clock.now()
        )


def _block_of(halted: str | None, current: Any) -> str | None:
    """Why no new entry may go to an account (its ``entry_blocks`` row, None when it is gone)."""
    if halted is not None:
        return f"entries are halted: {halted}"
    if current is not None and current.entries_halted_reason is not None:
        return f"entries are halted on this account: {current.entries_halted_reason}"
    if current is None or current.archived_at is not None:
        return "the account is archived"
    if not current.is_active:
        return "the account is inactive"
    if current.connection_status == "auth_failed":
        return "the account's API key was refused by the broker; fix the key first"
    return None


def _split(flat: Sequence[T], groups: Sequence[Sized]) -> list[list[T]]:
    """``flat`` cut back into the groups whose items it holds, in order."""
    out: list[list[T]] = []
    at = 0
    for group in groups:
        out.append(list(flat[at : at + len(group)]))
        at += len(group)
    return out


async def _none() -> list[LegState]:
    return []


def _row_of(spec: IntentSpec, claimed: ClaimedIntent) -> IntentRow:
    """The driver's row of an intent :meth:`Journal.record_and_claim` returned (its terms are the
    spec's: the key names the execution and slice, so an earlier attempt wrote the same terms)."""
    view = claimed.view
    return IntentRow(
        id=view.id,
        key=view.key,
        account_id=spec.account_id,
        symbol=spec.symbol,
        exchange=spec.exchange,
        product=spec.product,
        side=spec.side,
        quantity=spec.quantity,
        order_type=spec.order_type,
        price=spec.price,
        trigger_price=spec.trigger_price,
        strategy_tag=spec.strategy_tag or "",
        state=view.state,
        order_id=view.order_id,
        filled_quantity=view.filled_quantity,
        average_price=view.average_price,
        rejection_reason=claimed.rejection_reason,
    )


def intents_of(database: Database, execution_id: int, purpose: str) -> list[IntentRow]:
    """The journal's intents of one execution for ``purpose`` ("entry" or "exit"), oldest first."""
    with database.session_factory() as session:
        rows = session.scalars(
            select(OrderIntent)
            .where(OrderIntent.execution_id == execution_id, OrderIntent.purpose == purpose)
            .order_by(OrderIntent.id)
        ).all()
        return [IntentRow.of(r) for r in rows]


def _claim_exit(database: Database, execution_id: int) -> bool:
    with database.session() as session:
        won = session.execute(
            update(StrategyExecution)
            .where(StrategyExecution.id == execution_id, StrategyExecution.status == "active")
            .values(status="exiting")
            .execution_options(synchronize_session=False)
        )
        return getattr(won, "rowcount", 0) == 1


__all__ = [
    "EXECUTE_RUN",
    "EntryExecutor",
    "ExecuteOutcome",
    "ExecutionConfig",
    "ExecutionError",
    "intents_of",
    "settled",
]
