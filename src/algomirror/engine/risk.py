"""The risk engine: strategy and leg protection evaluated from ticks, in the engine (PRODUCT §6.1–§6.6,
§6.9; DESIGN §3 "Risk from ticks", "One exit owner").

**State in memory.** The open runs (``ended_at IS NULL``) with their executions of the current run only
(never closed history), indexed by (symbol, exchange). They are loaded at start and reloaded every
``reload_seconds`` — cheaply: one grouped query gives a signature per open run (status, execution count,
newest execution and strategy ``updated_at``), and only runs whose signature changed are read again. A
reload keeps what only memory knows (trailing peaks and leg bests that are ahead of the stored values,
rules fired, executions claimed).

**Evaluation.** :class:`RiskEngine` is a :class:`~algomirror.engine.marks.MarkBook` listener: every
accepted mark re-evaluates only the runs holding that symbol, synchronously on the engine loop and
without a database read. A sweep evaluates every run each ``strategy.risk_check_interval`` seconds as
well. P&L is :func:`~algomirror.domain.pnl.run_pnl` over the current run's fills at *usable* marks
(§6.1); while any open execution lacks one the run's P&L is unknown and no run rule fires (an alert
after ``unknown_alert_seconds`` in market hours); a leg's own rules still run on its own usable mark. The
rules are :func:`~algomirror.domain.risk_rules.evaluate_rules`: per view (the whole run, or each account
when ``risk_scope == 'per_account'``) max loss, max profit, then the trailing stop (whole run), then the
leg rules (SL / target / trailing, §6.6) per execution; a rule that exits claims its executions and later
rules skip them. Added rules (Supertrend, :meth:`RiskEngine.add_rule`) come last, on what is unclaimed.
One run's failure is logged and does not stop the others; a leg whose settings cannot apply loses only its
own rules. Live ``snapshot`` events, ``run_pnl_samples`` rows and :meth:`RiskEngine.account_open_pnl` are
computed from the same state and marks.

**Exactly once.** A breach is claimed in memory at once (a second tick or rule does nothing), then one
transaction writes: the latch (a conditional UPDATE that only succeeds while the latch is NULL; a leg's
``sl_hit_at`` / ``tp_hit_at`` likewise), the trailing state, one ``risk_events`` row per affected
execution (``exit_initiated``; a single ``alert_only`` row when auto-exit is off), an activity entry,
an alert, and the durable ``exit`` command (:func:`~algomirror.engine.exit_planning.request_exit`,
token ``risk:{run}:{rule}`` / ``risk:{run}:{account}:{rule}`` / ``risk:exec:{execution}:{rule}``, unique).
The same transaction claims the command (``running``) for this engine's
:class:`~algomirror.engine.exits.ExitExecutor` when it holds the fencing epoch, and after the commit the
command runs at once (``run_claimed``; else ``run_command``, which claims ``pending → running`` once,
so the executor's own poll cannot run it twice). If the engine dies after the commit, the command is
``running`` (or pending), which the exit executor's recovery at start returns to pending, and it runs
then; the executions' ``active → exiting`` claim keeps one exit per leg whatever else asks for it.

**Modules.** This one is the component (loop, tick path, evaluation, firing tasks, live snapshots, P&L
samples, account P&L); :mod:`~algomirror.engine.risk_state` holds the state and configuration (all
re-exported here), :mod:`~algomirror.engine.risk_loading` reads the open runs,
:mod:`~algomirror.engine.risk_records` writes breaches and state, :mod:`~algomirror.engine.risk_snapshot`
builds the live snapshot; the rules themselves are :func:`algomirror.domain.risk_rules.evaluate_rules`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy.exc import SQLAlchemyError

from algomirror.db.session import Database
from algomirror.domain.calendar import TradingCalendar, default_calendar
from algomirror.domain.errors import InvalidFill
from algomirror.domain.pnl import RunPnl
from algomirror.domain.risk_rules import Breach as RuleBreach
from algomirror.domain.risk_rules import (
    LegRiskSettings,
    OpenExecution,
    RunDecision,
    RunRiskSettings,
    evaluate_rules,
)
from algomirror.domain.timeutil import Clock, SystemClock
from algomirror.engine.command_rows import pause
from algomirror.engine.fencing import FencedOutError
from algomirror.engine.marks import Mark, MarkBook
from algomirror.engine.risk_loading import merge_memory, read_runs, read_signatures
from algomirror.engine.risk_records import (
    BreachCommand,
    BreachWrite,
    levels_of,
    write_alert,
    write_breach,
    write_state,
)
from algomirror.engine.risk_snapshot import SNAPSHOT_EVENT, build_snapshot, risk_topic, run_pnl_at
from algomirror.engine.risk_state import (
    CLAIMABLE,
    Breach,
    ExecutionState,
    LiveBus,
    RiskConfig,
    RunRule,
    RunState,
)

log = logging.getLogger(__name__)


class RiskEngine:
    """The engine component ``risk``; see the module docstring.

    ``marks`` is the engine's shared MarkBook; ``exits`` the ExitExecutor a breach's command is handed
    to at once (None: its poll picks it up); ``bus`` the live bus (None: nothing is published);
    ``clock`` the market clock (mark ages, latch times, P&L sample times, market hours by ``calendar``);
    ``timer`` the monotonic seconds of the throttles (default :func:`time.monotonic`).
    Tests drive it with :meth:`load`, :meth:`on_mark` (through ``marks.update``) and :meth:`sweep`.
    """

    name = "risk"

    def __init__(
        self,
        database: Database,
        marks: MarkBook,
        *,
        exits: Any | None = None,
        bus: LiveBus | None = None,
        clock: Clock | None = None,
        config: RiskConfig | None = None,
        calendar: TradingCalendar | None = None,
        timer: Callable[[], float] | None = None,
    ) -> None:
        self.database = database
        self.marks = marks
        self.exits = exits
        self.bus = bus
        self.clock = clock or SystemClock()
        self.config = config or RiskConfig()
        self.calendar = calendar or default_calendar()
        # Monotonic seconds for throttles (reload, sweep, persist, live snapshots); tests inject a fake.
        self._timer: Callable[[], float] = timer or time.monotonic
        self._loaded = False
        self.runs: dict[int, RunState] = {}
        self._index: dict[tuple[str, str], set[tuple[int, int]]] = {}
        # Rules added after the built-in ones (max loss, max profit, trailing stop, leg rules: those are
        # domain.risk_rules.evaluate_rules).
        self.rules: list[RunRule] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_reload = 0.0
        self._last_persist = 0.0
        self.fired = 0
        self.rehearsed = False  # see rehearse

    # ------------------------------------------------------------------------------ lifecycle

    def add_rule(self, rule: RunRule) -> None:
        """Add a run rule after the built-in ones (PRODUCT §6.2 order: Supertrend comes last)."""
        self.rules.append(rule)

    async def run(self, stop: asyncio.Event) -> None:
        """Load, listen to marks, sweep until ``stop``; then write the trailing state and leg levels
        and wait for the firings in flight."""
        self._loop = asyncio.get_running_loop()
        await self.load()
        self.marks.add_listener(self._listener)
        try:
            while not stop.is_set():
                try:
                    await self.sweep()
                    if not self.rehearsed:
                        await self.rehearse()
                except SQLAlchemyError as exc:
                    log.warning("risk: database error: %s", str(exc).splitlines()[0])
                await pause(stop, self.config.tick)
        finally:
            self.marks.remove_listener(self._listener)
            try:
                await asyncio.to_thread(self._persist, force=True)
            except SQLAlchemyError as exc:
                log.warning("risk: could not write the trailing state on stop: %s", str(exc).splitlines()[0])
            await self.drain()

    async def drain(self) -> None:
        """Wait for every firing and dispatched exit in flight."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def load(self) -> None:
        """(Re)load the open runs whose signature changed; forget closed ones."""
        self._loop = self._loop or asyncio.get_running_loop()
        signatures = await asyncio.to_thread(read_signatures, self.database)
        changed = [
            rid for rid, sig in signatures.items() if rid not in self.runs or self.runs[rid].signature != sig
        ]
        loaded = await asyncio.to_thread(read_runs, self.database, changed, signatures) if changed else {}
        for run_id in list(self.runs):
            if run_id not in signatures:
                self._drop(run_id)
        for fresh in loaded.values():
            self._merge(fresh)
        self._last_reload = self._timer()
        self._loaded = True

    async def rehearse(self) -> None:
        """Once per start, as soon as a run is open: a breach of it written and its exit claimed up to
        the send in transactions that are rolled back (:meth:`Database.rehearsal`), nothing sent, so
        that the first real breach finds the statements of its path compiled (the first breach after a
        start took about 35 ms to its first exit order against 14 ms for the next ones)."""
        run = next((r for r in self.runs.values() if self._claimable(r, None)), None)
        if run is None or self.exits is None or not self.exits.holds_epoch():
            return
        self.rehearsed = True
        breach = Breach("max_loss", Decimal(0), Decimal(0), "rehearsal (rolled back)")
        write = BreachWrite(
            run, breach, self._claimable(run, None), None, None, None, None, {}, self.clock.now()
        )
        try:
            await asyncio.to_thread(self._rehearse, write)
        except (SQLAlchemyError, FencedOutError) as exc:
            log.info("risk: the rehearsal of run %s did not complete: %s", run.id, str(exc).splitlines()[0])
        except Exception:
            # Only a warm-up: whatever it meets must not stop the protection loop (nothing was
            # committed); logged with its trace so the cause is seen.
            log.exception("risk: the rehearsal of run %s failed", run.id)

    def _rehearse(self, write: BreachWrite) -> None:
        assert self.exits is not None
        rehearsal = self.database.rehearsal()
        write_breach(rehearsal, self.clock.now(), write)
        self.exits.rehearse(rehearsal, write.run.user_id, write.run.id, write.breach.code)

    async def sweep(self) -> None:
        """One step of the loop: reload when due, evaluate the runs whose interval has passed, alert on
        long-unknown P&L, write throttled state."""
        now_m = self._timer()
        if now_m - self._last_reload >= self.config.reload_seconds:
            try:
                await self.load()
            except SQLAlchemyError as exc:
                # Evaluate what memory holds anyway (a breach is written when the database answers); the
                # reload is tried again after reload_seconds.
                self._last_reload = now_m
                log.warning("risk: cannot reload the open runs: %s", str(exc).splitlines()[0])
        for run in list(self.runs.values()):
            if now_m - run.last_sweep >= max(run.interval, self.config.tick):
                run.last_sweep = now_m
                self._evaluate_isolated(run.id)
        await self._unknown_alerts()
        self.publish_snapshots()
        if now_m - self._last_persist >= self.config.persist_seconds:
            self._last_persist = now_m
            await asyncio.to_thread(self._persist, samples=self._due_samples())

    # ----------------------------------------------------------------------------- tick path

    def _listener(self, symbol: str, exchange: str, mark: Mark) -> None:
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is not None and running is not loop:
            loop.call_soon_threadsafe(self.on_mark, symbol, exchange, mark)
            return
        self.on_mark(symbol, exchange, mark)

    def on_mark(self, symbol: str, exchange: str, mark: Mark) -> None:
        """An accepted mark: re-evaluate the runs holding (symbol, exchange). No database read."""
        for run_id in sorted({run_id for run_id, _ in self._index.get((symbol, exchange), ())}):
            self._evaluate_isolated(run_id)
            run = self.runs.get(run_id)
            if run is not None:
                run.marks_changed = True
                self._snapshot(run, self._timer())

    # ---------------------------------------------------------------------- live snapshots

    def publish_snapshots(self) -> int:
        """Publish the due ``snapshot`` of every open run (marks changed and ``snapshot_seconds`` since
        the last one, or a heartbeat after ``heartbeat_seconds``); returns how many were published."""
        now_m = self._timer()
        return sum(self._snapshot(run, now_m) for run in list(self.runs.values()))

    def _snapshot(self, run: RunState, now_m: float) -> bool:
        if self.bus is None:
            return False
        since = None if run.snapshot_at is None else now_m - run.snapshot_at
        due = (
            since is None
            or since >= self.config.heartbeat_seconds
            or (run.marks_changed and since >= self.config.snapshot_seconds)
        )
        if not due:
            if run.marks_changed and not run.flush_pending and self._loop is not None and since is not None:
                # Publish the change once its throttle has passed, not only at the next sweep step.
                run.flush_pending = True
                delay = max(self.config.snapshot_seconds - since, 0.0)
                self._loop.call_later(delay, self._flush_snapshot, run.id)
            return False
        run.snapshot_at, run.marks_changed = now_m, False
        try:
            payload = build_snapshot(run, self.marks, self.clock.now())
        except (InvalidFill, ValueError):  # display only: logged with its trace, protection goes on
            log.exception("risk: cannot build the snapshot of run %s", run.id)
            return False
        self._publish(risk_topic(run.id), SNAPSHOT_EVENT, payload)
        return True

    def _flush_snapshot(self, run_id: int) -> None:
        run = self.runs.get(run_id)
        if run is not None:
            run.flush_pending = False
            self._snapshot(run, self._timer())

    # --------------------------------------------------- account P&L (account_open_pnl), P&L samples

    def account_open_pnl(self, account_id: int) -> Decimal | None:
        """Σ P&L (₹, realised + unrealised, at usable marks now) of ``account_id``'s executions in the open
        runs held in memory; ``Decimal('0.00')`` when it has none; None when any of them has no usable
        mark (or a fill price pending), and None before the open runs are first loaded. Engine loop only.
        """
        if not self._loaded:
            return None
        now = self.clock.now()
        total = Decimal("0.00")
        for run in list(self.runs.values()):
            if not any(e.account_id == account_id for e in run.executions.values()):
                continue
            marks = {e.id: self._mark(e, now) for e in run.executions.values() if e.account_id == account_id}
            totals = self.pnl_of(run, marks).per_account.get(account_id)
            if totals is None:
                continue  # nothing filled yet in this run
            if totals.total is None:
                return None
            total += totals.total
        return total

    def _due_samples(self) -> dict[int, tuple[datetime, Decimal]]:
        """Per open run with a known P&L whose last sample is ``sample_seconds`` old: (now, P&L ₹)."""
        now = self.clock.now()
        gap = timedelta(seconds=self.config.sample_seconds)
        due: dict[int, tuple[datetime, Decimal]] = {}
        for run in list(self.runs.values()):
            if run.sample_at is not None and now - run.sample_at < gap:
                continue
            total = self.pnl_of(
                run, {e.id: self._mark(e, now) for e in run.executions.values()}
            ).aggregate.total
            if total is not None:
                due[run.id] = (now, total)
        return due

    def _evaluate_isolated(self, run_id: int) -> None:
        """:meth:`evaluate`, so that one run's failure (logged with its trace) cannot stop the evaluation
        of the other runs on this tick or sweep."""
        try:
            self.evaluate(run_id)
        except Exception:
            log.exception("risk: evaluating run %s failed", run_id)

    def evaluate(self, run_id: int) -> None:
        """Evaluate one run's rules now (engine loop, no I/O; a firing is written by a task): the built-in
        rules by :func:`~algomirror.domain.risk_rules.evaluate_rules` on the run's exact P&L, then the
        added rules (:meth:`add_rule`) on what is left unclaimed."""
        run = self.runs.get(run_id)
        if run is None or not run.monitoring:
            return
        now = self.clock.now()
        marks = {e.id: self._mark(e, now) for e in run.executions.values()}
        pnl = self.pnl_of(run, marks)
        total = None if pnl.unknown else pnl.aggregate.total
        decision = evaluate_rules(
            self._settings(run),
            [self._open_execution(run, e) for e in run.executions.values()],
            marks,
            pnl=total,
            account_pnl={a: t.total for a, t in pnl.per_account.items()},
            latched=frozenset(run.fired),
            # A leg's own usable price decides its rules even while another leg has none.
            leg_rules_when_unknown=True,
        )
        self._apply(run, decision)
        for breach in decision.breaches:
            self._fire_decided(run, breach)
        if total is None:
            if run.unknown_since is None:
                run.unknown_since = now
            return
        run.unknown_since, run.unknown_alerted = None, False
        run.last_pnl = total
        if self.rules:
            self._added_rules(run, pnl)

    @staticmethod
    def _settings(run: RunState) -> RunRiskSettings:
        return RunRiskSettings(
            max_loss=run.max_loss,
            max_profit=run.max_profit,
            scope="per_account" if run.scope == "per_account" else "aggregate",
            trailing=run.trailing,
            auto_exit_loss=run.auto_exit_loss,
            auto_exit_profit=run.auto_exit_profit,
        )

    @staticmethod
    def _open_execution(run: RunState, e: ExecutionState) -> OpenExecution:
        """The execution as the rules see it: claimable (pending/active with something to exit) or owned by
        an exit already (``exiting``: claimed by a rule here, or not claimable in its stored state)."""
        claimable = (
            e.status in CLAIMABLE and e.id not in run.claimed and (e.status == "pending" or e.open_units > 0)
        )
        status: Literal["pending", "active", "exiting"] = (
            "exiting" if not claimable else ("pending" if e.status == "pending" else "active")
        )
        legs = (
            status == "active"
            and e.monitored
            and not e.hit
            and not e.leg_error
            and e.entry_price is not None
            and (e.sl_type is not None or e.tp_type is not None or e.trailing_kind is not None)
        )
        return OpenExecution(
            id=e.id,
            account_id=e.account_id,
            action=e.side,
            entry_average=e.entry_price if e.entry_price is not None else Decimal(0),
            open_quantity=e.open_units,
            status=status,
            stop_loss=e.stop_loss,
            target=e.target,
            trailing_best=e.best,
            leg=LegRiskSettings(
                sl_type=e.sl_type,
                sl_value=e.sl_value,
                tp_type=e.tp_type,
                tp_value=e.tp_value,
                trailing_kind=e.trailing_kind,
                trailing_value=e.trailing_value,
            )
            if legs
            else None,
        )

    @staticmethod
    def _apply(run: RunState, decision: RunDecision) -> None:
        """Keep what the evaluation moved: the trailing state and the leg trailing levels."""
        if run.trailing is not None and decision.trailing is not None:
            run.trailing = decision.trailing
        for execution_id, moved in decision.leg_updates.items():
            e = run.executions[execution_id]
            if (moved.trailing_best, moved.stop_loss) != (e.best, e.stop_loss):
                e.best, e.stop_loss, e.levels_dirty = moved.trailing_best, moved.stop_loss, True
        for execution_id, text in decision.leg_errors.items():
            e = run.executions[execution_id]
            if not e.leg_error:
                # This leg's rules are off (logged once); the run's rules and the other legs go on.
                e.leg_error = True
                log.warning("risk: execution %s: leg rules not evaluated: %s", execution_id, text)

    def _fire_decided(self, run: RunState, decided: RuleBreach) -> None:
        """Fire a breach of the built-in rules with the engine's record of it (threshold, detail)."""
        if decided.scope == "execution":
            e = run.executions[decided.execution_ids[0]]
            code, ltp, level = decided.rule, decided.value, decided.threshold
            e.hit = True
            detail = f"{code.replace('_', ' ')}: LTP {ltp} vs {level} ({e.symbol})"
            self.fire(run, Breach(code, ltp, level, detail), [e.id], execution=e, price=ltp)
            return
        pnl = decided.value
        if decided.rule == "max_loss":
            threshold = run.max_loss
            detail = f"max loss: P&L {pnl} <= -{run.max_loss}"
        elif decided.rule == "max_profit":
            threshold = run.max_profit
            detail = f"max profit: P&L {pnl} >= {run.max_profit}"
        else:
            threshold = decided.threshold
            peak = run.trailing.peak if run.trailing is not None else None
            detail = f"trailing stop: P&L {pnl} <= stop {threshold} (peak {peak})"
        breach = Breach(decided.rule, pnl, threshold, detail, auto_exit=not decided.alert_only)
        self.fire(run, breach, decided.execution_ids, account_id=decided.account_id)

    def _added_rules(self, run: RunState, pnl: RunPnl) -> None:
        """The added rules, in order, per view (each account alone in ``per_account`` scope, except rules
        marked ``whole_run``; the whole run otherwise) on what no rule claimed; the first firing wins."""
        per_account = run.scope == "per_account"
        views: list[tuple[int | None, Decimal | None]] = [(None, pnl.aggregate.total)]
        if per_account:
            views = [(a, t.total) for a, t in pnl.per_account.items()] + views
        for account_id, total in views:
            targets = self._claimable(run, account_id)
            if total is None or not targets:
                continue  # nothing left here that is not already exiting under an owner
            for rule in self.rules:
                if per_account and (account_id is None) != bool(getattr(rule, "whole_run", False)):
                    continue
                if (rule.code, account_id) in run.fired:
                    continue
                breach = rule.check(run, total, account_id)
                if breach is not None:
                    self.fire(run, breach, targets, account_id=account_id)
                    break

    def _mark(self, execution: ExecutionState, now: datetime) -> Decimal | None:
        mark = self.marks.usable(execution.symbol, execution.exchange, now)
        return None if mark is None else mark.ltp

    @staticmethod
    def pnl_of(run: RunState, marks: dict[int, Decimal | None]) -> RunPnl:
        """The run's P&L (₹) at ``marks`` (execution id → usable LTP or None); current run only."""
        return run_pnl_at(run, marks)

    def _claimable(self, run: RunState, account_id: int | None) -> list[int]:
        return sorted(
            e.id
            for e in run.executions.values()
            if e.status in CLAIMABLE
            and e.id not in run.claimed
            and (e.status == "pending" or e.open_units > 0)
            and (account_id is None or e.account_id == account_id)
        )

    # --------------------------------------------------------------------------------- firing

    def fire(
        self,
        run: RunState,
        breach: Breach,
        execution_ids: Sequence[int],
        *,
        account_id: int | None = None,
        execution: ExecutionState | None = None,
        price: Decimal | None = None,
    ) -> None:
        """Claim ``execution_ids`` for ``breach`` in memory now and write + dispatch it in a task (the
        Supertrend rule, evaluated at candle closes, calls this too). An exiting breach skips the
        executions another rule already claimed, and does nothing when none is left. Engine loop only."""
        if breach.auto_exit:
            execution_ids = [i for i in execution_ids if i not in run.claimed]
            if not execution_ids:
                log.info("risk: %s of run %s: every execution is already claimed", breach.code, run.id)
                return
        if execution is None:
            run.fired.add((breach.code, account_id))
        if breach.auto_exit:
            run.claimed.update(execution_ids)
        self.fired += 1
        self._track(self._fire(run, breach, list(execution_ids), account_id, execution, price))

    def _track(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` as a task drained on stop; an exception it lets out is logged with its trace."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("risk: task %s failed", task.get_name(), exc_info=exc)

    async def _fire(
        self,
        run: RunState,
        breach: Breach,
        execution_ids: list[int],
        account_id: int | None,
        execution: ExecutionState | None,
        price: Decimal | None,
    ) -> None:
        # The breach's transaction also claims its exit command for this engine's executor (one hop
        # fewer before the first exit order), unless that executor cannot run it now (no fencing epoch).
        claim_at = self.exits.clock.now() if self.exits is not None and self.exits.holds_epoch() else None
        write = BreachWrite(
            run, breach, execution_ids, account_id, execution, price, run.trailing, levels_of(run), claim_at
        )
        try:
            written = await asyncio.to_thread(self._write_breach, write)
        except Exception as exc:
            # Nothing was committed (the transaction is undone): let a later evaluation try again. An
            # error nobody expected is logged with its trace; the protection is retried, not dropped.
            if isinstance(exc, SQLAlchemyError | ValueError):
                log.warning(
                    "risk: could not record %s of run %s: %s", breach.code, run.id, str(exc).splitlines()[0]
                )
            else:
                log.exception("risk: could not record %s of run %s", breach.code, run.id)
            run.fired.discard((breach.code, account_id))
            run.claimed.difference_update(execution_ids)
            if execution is not None:
                execution.hit = False
            return
        if written is None:
            log.info("risk: %s of run %s was already recorded (or nothing left to exit)", breach.code, run.id)
            return
        command, payload = written
        if write.trailing is not None:
            run.trailing_stored = write.trailing
        for e in run.executions.values():
            # Only what was written: a stop that trailed on during the write stays to be written.
            if e.id in write.levels and (e.stop_loss, e.best) == write.levels[e.id]:
                e.levels_dirty = False
        self._publish(f"run:{run.id}:risk", breach.code, payload)
        self._publish(f"user:{run.user_id}:alerts", "risk", payload)
        if command is not None and self.exits is not None:
            self._track(self._dispatch(command, run.user_id))

    async def _dispatch(self, command: BreachCommand, user_id: int) -> None:
        """Run the breach's exit command now: claimed by the breach's transaction, or else through the
        exit executor's claim (``pending → running``, one winner), which makes a concurrent poll of the
        same command a no-op. A failure here leaves the command to that poll (pending) or to its
        recovery at start (running)."""
        assert self.exits is not None
        try:
            if command.claimed:
                await self.exits.run_claimed(command.id, user_id, command.payload, attempts=0)
            else:
                await self.exits.run_command(command.id)
        except (FencedOutError, SQLAlchemyError) as exc:
            log.warning("risk: exit command %s not run here: %s", command.id, str(exc).splitlines()[0])

    def _write_breach(self, write: BreachWrite) -> tuple[BreachCommand | None, dict[str, Any]] | None:
        """:func:`~algomirror.engine.risk_records.write_breach` now (worker thread)."""
        return write_breach(self.database, self.clock.now(), write)

    def _publish(self, topic: str, event: str, data: dict[str, Any]) -> None:
        if self.bus is None:
            return
        try:
            self.bus.publish(topic, event, data)
        except Exception:  # the bus is display only: a broken one must not stop protection
            log.exception("risk: could not publish %s on %s", event, topic)

    def _persist(
        self, *, force: bool = False, samples: dict[int, tuple[datetime, Decimal]] | None = None
    ) -> None:
        """Write trailing states that moved, leg levels that trailed and the due P&L ``samples`` (run id →
        (market time, ₹)) in one transaction (throttled by the caller)."""
        samples = samples or {}
        trailing = {
            r.id: r.trailing
            for r in list(self.runs.values())
            if r.trailing is not None and r.trailing != r.trailing_stored
        }
        levels: dict[int, tuple[Decimal | None, Decimal | None]] = {}
        for r in list(self.runs.values()):
            levels.update(levels_of(r))
        if not trailing and not levels and not samples:
            return
        write_state(self.database, trailing, levels, samples)
        for run_id, (at, _) in samples.items():
            if run_id in self.runs:
                self.runs[run_id].sample_at = at
        for run_id, state in trailing.items():
            if run_id in self.runs:
                self.runs[run_id].trailing_stored = state
        for r in list(self.runs.values()):
            for e in list(r.executions.values()):
                if e.id in levels and (e.stop_loss, e.best) == levels[e.id]:
                    e.levels_dirty = False

    async def _unknown_alerts(self) -> None:
        now = self.clock.now()
        limit = timedelta(seconds=self.config.unknown_alert_seconds)
        due = [
            r
            for r in self.runs.values()
            if r.unknown_since is not None and not r.unknown_alerted and now - r.unknown_since >= limit
        ]
        if not due or not self.calendar.is_open("NFO", now):
            return
        for run in due:
            run.unknown_alerted = True
            title = f"{run.name}: P&L unknown (no usable price)"
            seconds = int(limit.total_seconds())
            text = f"run {run.id}: an open leg has no usable price for {seconds} s; no risk rule can fire"
            await asyncio.to_thread(write_alert, self.database, run, title, text, now)
            self._publish(f"user:{run.user_id}:alerts", "risk_unknown", {"run_id": run.id, "message": text})

    def _merge(self, fresh: RunState) -> None:
        """Install a reloaded run, keeping what only memory knows."""
        old = self.runs.get(fresh.id)
        if old is not None:
            merge_memory(old, fresh)
            self._unindex(old)
        self.runs[fresh.id] = fresh
        for e in fresh.executions.values():
            self._index.setdefault((e.symbol, e.exchange), set()).add((fresh.id, e.id))

    def _unindex(self, run: RunState) -> None:
        for e in run.executions.values():
            key = (e.symbol, e.exchange)
            entries = self._index.get(key)
            if entries is not None:
                entries.discard((run.id, e.id))
                if not entries:
                    del self._index[key]

    def _drop(self, run_id: int) -> None:
        run = self.runs.pop(run_id, None)
        if run is not None:
            self._unindex(run)

    def symbols(self) -> set[tuple[str, str]]:
        """Every (symbol, exchange) an open run holds (what the feed should subscribe)."""
        return set(self._index)


__all__ = [
    "Breach",
    "ExecutionState",
    "LiveBus",
    "RiskConfig",
    "RiskEngine",
    "RunRule",
    "RunState",
]
