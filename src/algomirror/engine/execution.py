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

**Modules.** This one is the component (its command machinery, which the exit, mirror and resolution
components reuse) and the account pre-checks; :mod:`~algomirror.engine.entry_run` is one attempt at
entering one run (the phases, the policy, the unwind).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from algomirror.broker.client import OpenAlgoClient
from algomirror.broker.registry import ClientRegistry
from algomirror.db.models import EngineAlert, EngineCommand, TradingAccount
from algomirror.db.session import Database
from algomirror.domain.timeutil import Clock, SystemClock
from algomirror.engine.alerts import raise_alert
from algomirror.engine.command_rows import (
    InFlight,
    attempts_of,
    claim_command,
    end_values,
    pause,
    retry_delay,
    rowcount,
)
from algomirror.engine.concurrency import settled
from algomirror.engine.entry_records import AccountInfo, RunPlan, finish_run, load_plan
from algomirror.engine.entry_run import RunEntry, intents_of
from algomirror.engine.fencing import FencedOutError
from algomirror.engine.halts import entries_halted
from algomirror.engine.journal import Journal
from algomirror.engine.order_driver import DriverConfig, OrderDriver
from algomirror.engine.planning import EXECUTE_RUN
from algomirror.host_settings import load_host_policy

log = logging.getLogger(__name__)

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
            entry = RunEntry(self, plan, driver)
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


__all__ = [
    "EXECUTE_RUN",
    "EntryExecutor",
    "ExecuteOutcome",
    "ExecutionConfig",
    "ExecutionError",
    "intents_of",
    "settled",
]
