"""The chaos driver (issue 13, Deliver 1 and 4): ``algomirror chaos`` and :func:`run`.

It starts the paper exchange (in this process, accelerated ×1 from Wed 25 Nov 2026 10:30 IST, control
API and rate limits on), a fresh database migrated to head (SQLite file, or a new PostgreSQL database
dropped afterwards), one user with ``accounts`` paper accounts and ``strategies`` strategies, and the real
engine as a subprocess (``python -m algomirror.chaos.engine_proc``) on the exchange's clock, with its
exit waits scaled down and its seeded crash points armed. Then, round after round (the plan of
:mod:`algomirror.chaos.schedule`):

1. **entry**: the round's entry faults are armed, every strategy's run is planned on every account and
   its ``execute_run`` command queued (as the web's Execute does); wait until no run is ``entering``;
2. **exit**: the exit faults are armed and each entered run gets its ending — a risk breach (its short
   leg's price moved through the max loss with ``POST /sim/price``), a person's exit of the run, a
   scheduled square-off (MIS run, ``square_off_time`` a few seconds ahead of the exchange's clock) or a
   kill-switch trip of one of its accounts (then a person's exit of the rest); wait until every run is
   flat (closed or failed), a person retrying each leg left in ``error`` (as the run page's button);
3. clean-up: faults cleared, tripped kill switches reset, prices moved back, square-off times cleared.

In either phase the engine is ``kill -9``-ed at the plan's moment (and kills itself at its crash
points); every death is followed by a restart and ``audit(final=False)``. Every wait has a bound: a run
that does not get where it was going in time is a finding (unexplained, with what was waited for), then
a person's exit is tried so the run can go on; the whole run has a wall-clock cap. At the end the faults
are cleared, the engine is let finish and stopped, ``audit(final=True)`` runs, :func:`render` prints the
table and a failed run prints the exact command that replays it.
"""

from __future__ import annotations

import math
import shlex
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import TextIO

from sqlalchemy import func, select, update

from algomirror.chaos import audit as auditing
from algomirror.chaos.schedule import Fault, Phase, Plan, RunPlan, build_plan
from algomirror.chaos.world import (
    BREACH,
    DEFAULT_PG_URL,
    LOT,
    SYNC_SECONDS,
    EngineProcess,
    Exchange,
    Seeded,
    database_url,
    exchange,
    new_box,
    seed_world,
)
from algomirror.config import Settings
from algomirror.db.models import (
    EngineCommand,
    OrderIntent,
    Strategy,
    StrategyExecution,
    StrategyRun,
    TradingAccount,
)
from algomirror.db.session import Database
from algomirror.domain.timeutil import IST
from algomirror.engine.exit_planning import request_exit, retry_exit
from algomirror.engine.halts import entries_halted, resume_account_entries, resume_entries
from algomirror.engine.kill_switch import queue_command
from algomirror.engine.planning import PlannedExecution, plan_run, request_execute

POLL = 0.2  # wall seconds between looks at the database
# A clean entry takes a second or two; hangs (5 s), 429 back-offs and an engine restart (~3 s) a few more;
# an order whose send got no answer and that is not in the orderbook is given up 30 s after it was sent.
ENTRY_BOUND = 75.0  # how long the runs of a round may take to enter (wall seconds)
_TRAIL_WORDS = ("exit", "risk:", "scheduler", "square")  # the engine log lines a late run's finding quotes
ENDING_BOUND = 60.0  # how long an ending may take to make its run flat before a person steps in
FLAT_BOUND = 30.0  # and how much longer after that
RESET_BOUND = 30.0  # a kill-switch reset to be done
IDLE_BOUND = 60.0  # the engine to finish its work at the end
MAX_RETRIES = 5  # a person's retries of one leg in error
SQUARE_OFF_LEAD = timedelta(seconds=4)  # a square-off time this far ahead of the exchange's clock
_OPEN_EXECUTIONS = ("pending", "active", "exiting", "error")
_FLAT_RUNS = ("closed", "failed")


class CapExceeded(Exception):
    """The run's wall-clock cap was reached."""


@dataclass(frozen=True)
class ChaosConfig:
    """A chaos run's shape. ``cycles``: strategy-account cycles wanted (one strategy on one account from
    entry to flat), rounded up to whole rounds of ``accounts`` × ``strategies``; ``kill_rate``: the
    probability of an external ``kill -9`` in each phase; ``crash_rate``: the probability of a kill at
    each crash point the engine reaches; ``max_seconds``: the wall-clock cap (None: derived from the
    rounds); ``workdir``: where the database file, crash log and engine logs go (None: a temporary
    directory, removed afterwards unless ``keep``)."""

    seed: int = 1
    cycles: int = 96
    accounts: int = 8
    strategies: int = 2
    kill_rate: float = 0.3
    crash_rate: float = 0.005
    database: str = "sqlite"
    postgres_url: str = DEFAULT_PG_URL
    keep: bool = False
    workdir: Path | None = None
    max_seconds: float | None = None

    @property
    def rounds(self) -> int:
        return max(1, math.ceil(self.cycles / (self.accounts * self.strategies)))

    @property
    def cap_seconds(self) -> float:
        return self.max_seconds if self.max_seconds is not None else 120.0 + 90.0 * self.rounds

    def command_line(self) -> str:
        """The ``algomirror chaos`` command that replays this run (same seed, same shape)."""
        parts = [
            "algomirror", "chaos", "--seed", str(self.seed), "--cycles", str(self.cycles),
            "--accounts", str(self.accounts), "--strategies", str(self.strategies),
            "--kill-rate", repr(self.kill_rate), "--crash-rate", repr(self.crash_rate),
            "--database", self.database,
        ]  # fmt: skip
        if self.database == "postgresql" and self.postgres_url != DEFAULT_PG_URL:
            parts += ["--postgres-url", self.postgres_url]
        return shlex.join(parts)


@dataclass
class ChaosResult:
    """What :func:`run` found: the merged audit report, the figures, the printed text."""

    report: auditing.AuditReport
    stats: auditing.RunStats
    text: str

    @property
    def ok(self) -> bool:
        return self.report.ok


@dataclass
class _Cycle:
    """One strategy's run in the current round."""

    plan: RunPlan
    run_id: int
    strategy_id: int
    product: str
    breached: tuple[str, Decimal] | None = None  # (symbol, how far it was moved up)
    ended: bool = False  # the ending was applied
    escalated: bool = False
    followed_up: bool = False  # the kill switch's follow-up exit was queued
    retries: Counter[int] = field(default_factory=Counter)


class Driver:
    """One chaos run against an exchange, a database and an engine (see the module docstring)."""

    def __init__(
        self,
        config: ChaosConfig,
        plan: Plan,
        ex: Exchange,
        database: Database,
        seeded: Seeded,
        engine: EngineProcess,
        say: Callable[[str], None],
    ) -> None:
        self.config = config
        self.plan = plan
        self.ex = ex
        self.database = database
        self.seeded = seeded
        self.engine = engine
        self.say = say
        self.account_keys = seeded.account_keys(ex.api_keys)
        self.began = time.monotonic()
        self.faults: Counter[str] = Counter()
        self.kills: Counter[str] = Counter()
        self.endings: Counter[str] = Counter()
        self.retries = 0
        self.escalations = 0
        self.resumes: list[str] = []
        self.findings: dict[str, list[str]] = {
            "duplicates": [],
            "missed_exits": [],
            "reversed_positions": [],
            "pnl_mismatches": [],
            "unexplained": [],
            "buy_first_violations": [],
        }
        self.completed_runs = 0
        self.skipped = 0
        self.orders = 0
        self._lock_refusals = 0
        self.finishing = False

    # -- engine ----------------------------------------------------------------------------------

    def supervise(self) -> None:
        """Restart an engine that ended; after a kill, ``audit(final=False)``. A refused lock (status 2:
        the dead engine's PostgreSQL session may outlive it a moment) is retried; any other exit that is
        not a SIGKILL is a finding."""
        death = self.engine.reap()
        if death is None:
            return
        if death.point is not None:
            self.kills[death.point] += 1
            self._lock_refusals = 0
        elif death.returncode == 2 and self._lock_refusals < 50:
            self._lock_refusals += 1
            time.sleep(0.3)
        else:
            self.findings["unexplained"].append(
                f"engine start {death.start + 1} exited with status {death.returncode}: "
                + self.engine.log_tail(death.start, 600).replace("\n", " | ")
            )
        self.engine.start()
        if death.point is not None:
            self.interim_audit(f"after kill {sum(self.kills.values())} ({death.point})")

    def interim_audit(self, when: str) -> None:
        """``audit(final=False)``: what must hold at every instant; findings are kept for the end."""
        ledger = auditing.fetch_ledger(self.ex.rest_url, self.ex.token)
        report = auditing.audit(self.database, ledger, account_keys=self.account_keys, final=False)
        self._merge(report, f"[{when}] ")

    def _merge(self, report: auditing.AuditReport, prefix: str = "") -> None:
        for name, found in self.findings.items():
            for line in getattr(report, name):
                text = prefix + line
                if line not in {f.split("] ", 1)[-1] for f in found}:
                    found.append(text)

    def check_cap(self) -> None:
        if not self.finishing and time.monotonic() - self.began > self.config.cap_seconds:
            raise CapExceeded(f"the run's wall-clock cap of {self.config.cap_seconds:.0f} s was reached")

    def wait(
        self,
        done: Callable[[], bool],
        bound: float,
        phase: Phase,
        started: float,
        step: Callable[[], None] | None = None,
    ) -> bool:
        """Poll ``done`` (restarting a dead engine, running ``step`` each time) until it holds or
        ``bound`` wall seconds pass (False). The phase's external kill happens at its moment, or at once
        when ``done`` holds first (so the plan's kills all happen)."""
        deadline = time.monotonic() + bound
        killed = phase.kill_after is None
        while True:
            self.check_cap()
            self.supervise()
            if not killed and time.monotonic() - started >= (phase.kill_after or 0.0):
                killed = True
                self._kill()
            if step is not None:
                step()
            if done():
                if not killed:
                    self._kill()
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(POLL)

    def _kill(self) -> None:
        if self.engine.kill():
            self.supervise()

    # -- faults ----------------------------------------------------------------------------------

    def arm(self, faults: tuple[Fault, ...]) -> None:
        """Arm each fault through the control API (counted by kind)."""
        control = self.ex.control
        for fault in faults:
            key = None if fault.account is None else self.ex.api_keys[fault.account]
            p = fault.param
            kind = fault.kind
            if kind == "http_429":
                control.post("faults/ratelimit", count=p("count"), endpoint=p("endpoint"), apikey=key)
            elif kind in ("http_5xx", "rest_fail"):
                control.post(
                    "faults/status", status=p("status"), count=p("count"), endpoint=p("endpoint"), apikey=key
                )
            elif kind in ("timeout_before_accept", "timeout_after_accept"):
                control.post(
                    "faults/hang",
                    count=1,
                    seconds=p("seconds"),
                    execute=kind == "timeout_after_accept",
                    endpoint=p("endpoint"),
                    apikey=key,
                )
            elif kind == "reject":
                control.post("faults/reject", count=p("count"), mode=p("mode"), apikey=key)
            elif kind == "partial_fill":
                control.post("faults/partial", count=p("count"), fraction=p("fraction"), apikey=key)
            elif kind == "cancel_fill":
                control.post("faults/cancel_fill", count=p("count"), apikey=key)
            elif kind == "latency":
                control.post("faults/latency", ms=p("ms"), endpoint=p("endpoint"), apikey=key)
            elif kind == "ws_drop":
                control.post("ws/drop")
            elif kind == "ws_silent":
                control.post("ws/silent", enabled=True)
            elif kind == "ws_zero":
                control.post("ws/zero", count=p("count"))
            elif kind == "ws_stale":
                control.post("ws/stale", count=p("count"))
            else:
                raise ValueError(f"unknown fault kind {kind!r}")
            self.faults[kind] += 1

    def clear_faults(self) -> None:
        """Every armed fault off (latencies, a silent WebSocket and unspent counts included)."""
        self.ex.control.post("faults/clear")

    # -- records ---------------------------------------------------------------------------------

    def run_state(self, run_id: int) -> tuple[str, dict[int, str]]:
        """(run status, execution id → status)."""
        with self.database.session_factory() as session:
            status = session.scalar(select(StrategyRun.status).where(StrategyRun.id == run_id)) or "missing"
            rows = session.execute(
                select(StrategyExecution.id, StrategyExecution.status).where(
                    StrategyExecution.run_id == run_id
                )
            ).all()
        return status, {int(i): str(s) for i, s in rows}

    def flat(self, cycle: _Cycle) -> bool:
        status, executions = self.run_state(cycle.run_id)
        return status in _FLAT_RUNS and not any(s in _OPEN_EXECUTIONS for s in executions.values())

    def plan_cycle(self, round_no: int, run: RunPlan) -> _Cycle | None:
        """Plan the run of ``run.strategy`` on every account and queue its ``execute_run`` command; None
        (the cycle skipped, a finding) while an earlier run of the strategy is still open."""
        strategy_id = self.seeded.strategy_ids[run.strategy]
        with self.database.session_factory() as session:
            stuck = session.execute(
                select(StrategyRun.id, StrategyRun.status).where(
                    StrategyRun.strategy_id == strategy_id, StrategyRun.status.not_in(_FLAT_RUNS)
                )
            ).first()
        if stuck is not None and stuck[1] == "active":
            # A run that entered after its round gave up on it: a person exits it before the next one.
            with self.database.session() as session:
                request_exit(
                    session,
                    user_id=self.seeded.user_id,
                    scope="run",
                    run_id=stuck[0],
                    token=f"chaos:stale:{stuck[0]}:{round_no}",
                )
            previous = _Cycle(run, int(stuck[0]), strategy_id, "NRML", ended=True)
            if self.wait(lambda: self.flat(previous), FLAT_BOUND, Phase(), time.monotonic(),
                         lambda: self.retry_errors(previous)):  # fmt: skip
                stuck = None
        if stuck is not None:
            self.skipped += 1
            self.findings["unexplained"].append(
                f"round {round_no + 1}: strategy {run.strategy + 1} cannot enter, its run {stuck[0]} is "
                f"still {stuck[1]}; cycle skipped"
            )
            return None
        # The square-off only applies to intraday (MIS) positions; the others are NRML.
        product = "MIS" if run.ending == "square_off" else "NRML"
        with self.database.session() as session:
            planned = [
                PlannedExecution(leg_id, account_id, symbol, "NFO", product, LOT, "NIFTY")
                for leg_id, _action, symbol in self.seeded.legs[run.strategy]
                for account_id in self.seeded.account_ids
            ]
            row = plan_run(session, strategy_id, planned, now=self.ex.now())
            request_execute(
                session, user_id=self.seeded.user_id, run_id=row.id, token=f"chaos:{round_no}:{run.strategy}"
            )
            run_id = row.id
        return _Cycle(run, run_id, strategy_id, product)

    def breach_of(self, cycle: _Cycle) -> tuple[str, Decimal] | None:
        """The short leg a risk ending moves and by how much (₹ per unit), or None when the run holds no
        short leg. The plan's breach leg when some account holds it open, else the short leg held on
        the most accounts; the move is :data:`BREACH` scaled up by how many of the accounts the max loss
        was sized for (all of them) do not hold it: when an entry failed on most accounts, moving
        one leg by ``BREACH`` cannot reach a max loss sized for every account, and the engine is right
        not to fire."""
        legs = self.seeded.legs[cycle.plan.strategy]
        with self.database.session_factory() as session:
            held = Counter(
                session.scalars(
                    select(StrategyExecution.leg_id).where(
                        StrategyExecution.run_id == cycle.run_id,
                        StrategyExecution.status == "active",
                        StrategyExecution.filled_quantity > StrategyExecution.exited_quantity,
                    )
                )
            )
        shorts = [(leg_id, symbol) for leg_id, action, symbol in legs if action == "SELL" and held[leg_id]]
        planned = legs[cycle.plan.breach_leg]
        if held[planned[0]]:
            leg_id, symbol = planned[0], planned[2]
        elif shorts:
            leg_id, symbol = max(shorts, key=lambda pair: held[pair[0]])
        else:
            return None
        accounts = len(self.seeded.account_ids)
        return symbol, BREACH * math.ceil(accounts / held[leg_id])

    def apply_ending(self, cycle: _Cycle) -> None:
        """Start the run's ending (only for a run that entered: status ``active``)."""
        status, _ = self.run_state(cycle.run_id)
        cycle.ended = True
        if status != "active":
            self.endings["not_entered"] += 1
            return
        ending = cycle.plan.ending
        breach = self.breach_of(cycle) if ending == "risk" else None
        if ending == "risk" and breach is None:
            # No short leg of the run is held anywhere (its entry failed on every account but hedges
            # the unwind is selling): no loss can reach the max loss, so a person exits it.
            ending = "risk_unheld"
        self.endings[ending] += 1
        user_id = self.seeded.user_id
        if breach is not None:
            symbol, move = breach
            self.ex.control.post("price", symbol=symbol, exchange="NFO", price=self.ex.ltp(symbol) + move)
            cycle.breached = breach
        elif ending in ("manual", "risk_unheld"):
            with self.database.session() as session:
                request_exit(
                    session,
                    user_id=user_id,
                    scope="run",
                    run_id=cycle.run_id,
                    token=f"chaos:exit:{cycle.run_id}",
                )
        elif ending == "square_off":
            at = (self.ex.now() + SQUARE_OFF_LEAD).astimezone(IST).replace(microsecond=0)
            with self.database.session() as session:
                session.execute(
                    update(Strategy).where(Strategy.id == cycle.strategy_id).values(square_off_time=at.time())
                )
        elif ending == "kill_switch":
            account_id = self.seeded.account_ids[cycle.plan.kill_account]
            with self.database.session() as session:
                queue_command(
                    session,
                    user_id=user_id,
                    action="trip",
                    account_id=account_id,
                    token=f"chaos:trip:{cycle.run_id}",
                )
        else:
            raise ValueError(f"unknown ending {ending!r}")

    def follow_up(self, cycle: _Cycle) -> None:
        """A kill-switch ending exits only the tripped account: once the trip is done, a person exits the
        rest of the run."""
        if cycle.plan.ending != "kill_switch" or cycle.followed_up or not cycle.ended:
            return
        with self.database.session_factory() as session:
            status = session.scalar(
                select(EngineCommand.status).where(EngineCommand.token == f"chaos:trip:{cycle.run_id}")
            )
        if status in ("done", "failed"):
            cycle.followed_up = True
            with self.database.session() as session:
                request_exit(
                    session,
                    user_id=self.seeded.user_id,
                    scope="run",
                    run_id=cycle.run_id,
                    token=f"chaos:rest:{cycle.run_id}",
                )

    def retry_errors(self, cycle: _Cycle) -> None:
        """A person's retry of each leg of the run left in ``error`` (at most :data:`MAX_RETRIES` each)."""
        _, executions = self.run_state(cycle.run_id)
        for execution_id, status in executions.items():
            if status != "error" or cycle.retries[execution_id] >= MAX_RETRIES:
                continue
            if self._retry_pending(execution_id):
                continue
            cycle.retries[execution_id] += 1
            self.retries += 1
            with self.database.session() as session:
                retry_exit(
                    session,
                    user_id=self.seeded.user_id,
                    execution_id=execution_id,
                    token=f"chaos:retry:{execution_id}:{cycle.retries[execution_id]}",
                )

    def _retry_pending(self, execution_id: int) -> bool:
        """Whether a retry of ``execution_id`` is still queued or running (one at a time, as a person)."""
        prefix = f"chaos:retry:{execution_id}:"
        with self.database.session_factory() as session:
            count = session.scalar(
                select(func.count(EngineCommand.id)).where(
                    EngineCommand.token.startswith(prefix), EngineCommand.status.in_(("pending", "running"))
                )
            )
        return bool(count)

    def escalate(self, cycle: _Cycle, what: str) -> None:
        """The run did not get flat in time: a finding, then a person's exit of the run."""
        status, executions = self.run_state(cycle.run_id)
        states = dict(Counter(executions.values()))
        self.findings["unexplained"].append(
            f"run {cycle.run_id} (strategy {cycle.plan.strategy + 1}, ending {cycle.plan.ending}): {what}; "
            f"run {status}, executions {states}{self.execution_errors(cycle.run_id)}; "
            f"{self.exit_trail(cycle.run_id, list(executions))}"
            + (f"; {self.square_off_facts(cycle)}" if cycle.plan.ending == "square_off" else "")
        )
        if not cycle.escalated:
            cycle.escalated = True
            self.escalations += 1
            with self.database.session() as session:
                request_exit(
                    session,
                    user_id=self.seeded.user_id,
                    scope="run",
                    run_id=cycle.run_id,
                    token=f"chaos:late:{cycle.run_id}",
                )

    def execution_errors(self, run_id: int) -> str:
        """The run's execution errors by text and count (``""`` when none), for a finding read from a CI
        log: why legs failed or were kept says whether an ending could apply to the run at all."""
        with self.database.session_factory() as session:
            texts = Counter(
                (status, ((error or "").splitlines() or [""])[0][:120])
                for status, error in session.execute(
                    select(StrategyExecution.status, StrategyExecution.error_message).where(
                        StrategyExecution.run_id == run_id, StrategyExecution.error_message.is_not(None)
                    )
                ).tuples()
            )
        shown = "; ".join(f"{n}x {status} '{text}'" for (status, text), n in texts.most_common(4))
        return f" (errors: {shown})" if shown else ""

    def square_off_facts(self, cycle: _Cycle) -> str:
        """What the scheduler's square-off of the run depends on (domain.schedule.due_actions): the
        strategy's square-off time, the run's start and end, its MIS executions by status (open or
        ``error`` ones make it due), the exchange's time now (IST)."""
        with self.database.session_factory() as session:
            square_off = session.scalar(
                select(Strategy.square_off_time).where(Strategy.id == cycle.strategy_id)
            )
            run = session.execute(
                select(StrategyRun.started_at, StrategyRun.ended_at, StrategyRun.status).where(
                    StrategyRun.id == cycle.run_id
                )
            ).first()
            mis: dict[str, int] = dict(
                session.execute(
                    select(StrategyExecution.status, func.count(StrategyExecution.id))
                    .where(StrategyExecution.run_id == cycle.run_id, StrategyExecution.product == "MIS")
                    .group_by(StrategyExecution.status)
                )
                .tuples()
                .all()
            )
        started = "?" if run is None else run.started_at.astimezone(IST).strftime("%H:%M:%S")
        return (
            f"square-off time {square_off}, run {run.status if run else 'missing'} started {started} IST "
            f"(ended {run.ended_at if run else None}), MIS executions by status "
            f"{', '.join(f'{k} {v}' for k, v in sorted(mis.items())) or 'none'}, "
            f"exchange now {self.ex.now().astimezone(IST).strftime('%H:%M:%S')} IST"
        )

    def exit_trail(self, run_id: int, execution_ids: list[int]) -> str:
        """What the run's exit did so far, for a finding read from a CI log (the work directory is gone
        by then): its exit commands (token, status, attempts, last error) and its exit intents by state,
        with the engine's starts and kills."""
        with self.database.session_factory() as session:
            commands = [
                c
                for c in session.execute(
                    select(
                        EngineCommand.token,
                        EngineCommand.status,
                        EngineCommand.payload,
                        EngineCommand.result,
                        EngineCommand.error,
                    )
                    .where(EngineCommand.kind == "exit")
                    .order_by(EngineCommand.id)
                ).all()
                if (isinstance(c.payload, dict) and c.payload.get("run_id") == run_id)
                or f":{run_id}:" in c.token
            ]
            intents = Counter(
                session.scalars(
                    select(OrderIntent.state).where(
                        OrderIntent.execution_id.in_(execution_ids), OrderIntent.purpose == "exit"
                    )
                )
            )
        shown = "; ".join(
            f"{c.token} {c.status}"
            + (f" after {c.result.get('attempts')} attempt(s)" if isinstance(c.result, dict) else "")
            + (f" ({c.error.splitlines()[0][:160]})" if c.error else "")
            for c in commands[-6:]
        )
        tail = self.engine.log_tail(self.engine.starts - 1, 20_000) if self.engine.starts else ""
        # Exits, risk and the scheduler (an ending by square-off is the scheduler's to start).
        said = [line[:200] for line in tail.splitlines() if any(w in line for w in _TRAIL_WORDS)][-4:]
        return (
            f"exit commands [{shown or 'none'}]; exit intents {dict(intents)}; "
            f"engine starts {self.engine.starts}, kills {sum(self.kills.values())}; "
            f"its log on exits and the schedule: {' | '.join(said) or 'nothing'}"
        )

    # -- rounds ----------------------------------------------------------------------------------

    def resume_halts(self) -> None:
        """Entries halted by something other than the kill switch (reconciliation, a crashing component)
        are cleared as a person would, and listed in the output."""
        with self.database.session() as session:
            reason = entries_halted(session)
            if reason is not None:
                self.resumes.append(f"engine: {reason}")
                resume_entries(session, user_id=self.seeded.user_id, now=self.ex.now())
            for account in session.scalars(
                select(TradingAccount).where(TradingAccount.entries_halted_reason.is_not(None))
            ):
                self.resumes.append(f"{account.account_name}: {account.entries_halted_reason}")
                resume_account_entries(session, account.id, user_id=self.seeded.user_id, now=self.ex.now())

    def play_round(self, round_no: int) -> None:
        spec = self.plan.rounds[round_no]
        self.resume_halts()
        # Entry.
        started = time.monotonic()
        self.arm(spec.entry.faults)
        cycles = [c for c in (self.plan_cycle(round_no, run) for run in spec.runs) if c is not None]

        def entered() -> bool:
            return all(self.run_state(c.run_id)[0] != "entering" for c in cycles)

        if not self.wait(entered, ENTRY_BOUND, spec.entry, started):
            for cycle in cycles:
                if self.run_state(cycle.run_id)[0] == "entering":
                    self.escalate(cycle, f"still entering after {ENTRY_BOUND:.0f} s")
        # A run stuck entering is a finding already; the round goes on without it.
        stuck = [c for c in cycles if c.escalated]
        cycles = [c for c in cycles if not c.escalated]
        entry_seconds = time.monotonic() - started
        # Exit.
        self.clear_faults()
        started = time.monotonic()
        self.arm(spec.exit.faults)
        for cycle in cycles:
            self.apply_ending(cycle)

        def step() -> None:
            for cycle in cycles:
                self.follow_up(cycle)
                self.retry_errors(cycle)

        def all_flat() -> bool:
            return all(self.flat(c) for c in cycles)

        if not self.wait(all_flat, ENDING_BOUND, spec.exit, started, step):
            for cycle in cycles:
                if not self.flat(cycle):
                    self.escalate(cycle, f"not flat {ENDING_BOUND:.0f} s after its ending")
            if not self.wait(all_flat, FLAT_BOUND, Phase(), time.monotonic(), step):
                for cycle in cycles:
                    if not self.flat(cycle):
                        self.findings["unexplained"].append(
                            f"run {cycle.run_id}: still not flat {FLAT_BOUND:.0f} s after a person's exit"
                        )
        exit_seconds = time.monotonic() - started
        self.completed_runs += len(cycles)
        self.clean_up(round_no, cycles + stuck)
        self.say(
            f"round {round_no + 1}/{len(self.plan.rounds)}: "
            + ", ".join(f"{c.plan.ending}" for c in cycles)
            + f"; entry {entry_seconds:.1f} s, exit {exit_seconds:.1f} s, "
            f"{sum(self.kills.values())} kills, {time.monotonic() - self.began:.0f} s in all"
        )

    def clean_up(self, round_no: int, cycles: list[_Cycle]) -> None:
        """Faults off, tripped kill switches reset, moved prices back, square-off times cleared."""
        self.clear_faults()
        for cycle in cycles:
            if cycle.breached is not None:
                symbol, moved = cycle.breached
                price = max(self.ex.ltp(symbol) - moved, Decimal("0.05"))
                self.ex.control.post("price", symbol=symbol, exchange="NFO", price=price)
        with self.database.session() as session:
            session.execute(
                update(Strategy)
                .where(Strategy.id.in_(c.strategy_id for c in cycles))
                .values(square_off_time=None)
            )
            tripped = list(
                session.scalars(select(TradingAccount.id).where(TradingAccount.kill_switch_at.is_not(None)))
            )
            for account_id in tripped:
                queue_command(
                    session,
                    user_id=self.seeded.user_id,
                    action="reset",
                    account_id=account_id,
                    token=f"chaos:reset:{round_no}:{account_id}",
                )

        def reset() -> bool:
            with self.database.session_factory() as session:
                left = session.scalar(
                    select(func.count(TradingAccount.id)).where(TradingAccount.kill_switch_at.is_not(None))
                )
            return not left

        if tripped and not self.wait(reset, RESET_BOUND, Phase(), time.monotonic()):
            self.findings["unexplained"].append(
                f"round {round_no + 1}: a kill-switch reset was not done within {RESET_BOUND:.0f} s"
            )

    def finish(self) -> None:
        """Faults off; wait until the engine has no command left to do, then stop it (SIGTERM)."""
        self.clear_faults()

        def idle() -> bool:
            with self.database.session_factory() as session:
                busy = session.scalar(
                    select(func.count(EngineCommand.id)).where(
                        EngineCommand.status.in_(("pending", "running"))
                    )
                )
            return not busy

        self.finishing = True  # the cap no longer applies: the run is over, the engine finishes
        if not self.wait(idle, IDLE_BOUND, Phase(), time.monotonic()):
            self.findings["unexplained"].append(
                f"the engine was not idle {IDLE_BOUND:.0f} s after the last round (commands left to do)"
            )
        # Realised P&L is confirmed from the broker's fills by the account sync: let it pass a few times.
        settle = time.monotonic() + 3 * SYNC_SECONDS
        self.wait(lambda: time.monotonic() >= settle, 4 * SYNC_SECONDS, Phase(), time.monotonic())
        code = self.engine.stop()
        if code not in (0, None):
            self.findings["unexplained"].append(f"the engine's clean stop ended with status {code}")

    def final_audit(self) -> auditing.AuditReport:
        ledger = auditing.fetch_ledger(self.ex.rest_url, self.ex.token)
        report = auditing.audit(self.database, ledger, account_keys=self.account_keys, final=True)
        self.orders = report.orders
        self._merge(report)
        return auditing.AuditReport(orders=report.orders, **{k: list(v) for k, v in self.findings.items()})


def run(config: ChaosConfig, out: TextIO) -> ChaosResult:
    """Run the chaos harness of ``config``, printing progress and the final table to ``out``.

    Raises ValueError for a shape out of range and whatever starting the exchange or the database
    raises (e.g. PostgreSQL unreachable); everything the run itself finds wrong is in the result."""
    plan = build_plan(
        config.seed,
        rounds=config.rounds,
        accounts=config.accounts,
        strategies=config.strategies,
        kill_rate=config.kill_rate,
    )
    if not 0.0 <= config.crash_rate <= 1.0:
        raise ValueError("crash_rate must be from 0 to 1")
    began = time.monotonic()

    def say(line: str) -> None:
        out.write(line + "\n")
        out.flush()

    workdir = config.workdir or Path(tempfile.mkdtemp(prefix="am-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    say(f"chaos: seed {config.seed}, {config.rounds} rounds of {config.strategies} strategies on "
        f"{config.accounts} accounts, {config.database}, work directory {workdir}")  # fmt: skip
    try:
        with (
            exchange(config.seed, config.accounts) as ex,
            database_url(config.database, workdir, postgres_url=config.postgres_url, keep=config.keep) as url,
        ):
            # The driver stands for a person clicking in another process: on SQLite each of its writes
            # waits for the engine's writers up to 30 s (a person waits), not the engine's own 5 s.
            database = Database(url, Settings.model_construct(sqlite_busy_timeout_ms=30_000))
            try:
                driver, report = _drive(config, plan, ex, database, url, workdir, say, began)
            finally:
                database.dispose()
    finally:
        if not config.keep and config.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    stats = auditing.RunStats(
        seed=config.seed,
        database=config.database,
        cycles=driver.completed_runs * config.accounts,
        strategy_account_cycles=driver.completed_runs * config.accounts,
        kills=sum(driver.kills.values()),
        kills_by_point=dict(driver.kills),
        faults=dict(driver.faults),
        orders=driver.orders,
        seconds=time.monotonic() - began,
    )
    lines = [
        f"endings: {dict(driver.endings)}; a person's retries {driver.retries}, "
        f"late exits {driver.escalations}, engine starts {driver.engine.starts}",
    ]
    if driver.resumes:
        lines.append("entries resumed by hand: " + "; ".join(driver.resumes))
    if not report.ok:
        lines.append(f"replay: {config.command_line()}")
    text = "\n".join([*lines, auditing.render(report, stats)])
    say(text)
    return ChaosResult(report, stats, text)


def _drive(
    config: ChaosConfig,
    plan: Plan,
    ex: Exchange,
    database: Database,
    url: str,
    workdir: Path,
    say: Callable[[str], None],
    began: float,
) -> tuple[Driver, auditing.AuditReport]:
    """Seed, start the engine, play every round, finish and audit; the engine is stopped on the way out."""
    fernet, box = new_box()
    seeded = seed_world(database, ex, box, accounts=config.accounts, strategies=config.strategies)
    engine = EngineProcess(
        db_url=url, workdir=workdir, fernet=fernet, ex=ex, seed=config.seed, crash_rate=config.crash_rate
    )
    driver = Driver(config, plan, ex, database, seeded, engine, say)
    engine.start()
    try:
        try:
            for round_no in range(config.rounds):
                driver.play_round(round_no)
        except CapExceeded as exc:
            driver.findings["unexplained"].append(str(exc))
        driver.finish()
        return driver, driver.final_audit()
    finally:
        engine.stop()


__all__ = ["ChaosConfig", "ChaosResult", "run"]
