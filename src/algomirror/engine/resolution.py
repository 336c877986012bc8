"""From a saved strategy to orders: resolution, ``preview_strategy`` and ``execute_strategy`` commands
(PRODUCT §4.2 preview, §5.1–5.8; DESIGN §3).

The web never calls a broker: it queues a command, and :class:`StrategyResolver` (one engine component,
two command kinds, each claimed ``pending → running`` exactly once with the entry executor's machinery)
resolves the strategy on the engine's client registry:

1. **Pre-checks** (PRODUCT §5.1), each with its own message: the strategy exists, is the user's, active,
   not archived, has legs and selected accounts; entries are not halted; it is not past the strategy's
   square-off time; each leg's exchange is in session. Every selected account is owned, active, not
   archived, not ``auth_failed``, not halted by reconciliation and has a readable key — else it is
   skipped with that reason.
2. **Market data from the feed account** (PRODUCT §5.2): the user's primary account when healthy (active,
   connected, key readable and accepted), else the next healthy selected account. Per run: the spot of
   each instrument is read ONCE (index LTP), the expiry list once per (instrument, options|futures), the
   option chain once per (instrument, expiry) for the listed strikes, one multiquotes batch per
   ``premium_near`` leg (its scan strikes) and one for the LTPs of every resolved symbol.
3. **Per leg**: expiry (:func:`~algomirror.domain.expiry_choice.resolve_expiry`), strike (ATM half up,
   ITM/OTM k counted in listed strikes, an exact strike must be listed, premium-near X with its tie rule
   and deviation warning), symbol, lot size and freeze limit (contract data, then instrument data, then
   the user's instrument settings; a mismatch with the settings is a warning). A failure fails the leg
   on every account ("could not resolve expiry: …").
4. **Per account**: fresh funds from the account itself (a failed read skips it as "funds unavailable",
   it is never sized from 0); lots by fixed allocation or by grade (:mod:`algomirror.domain.sizing`);
   freeze slices; the estimated margin from the user's margin table against the seller base — more
   than the account has skips it with both ₹ figures. A short is never planned without the BUY legs
   that hedge it; a leg that cannot be placed (not resolved, market closed) skips the whole account
   under ``on_leg_failure = unwind`` (the entry would unwind it anyway), only itself under ``keep``; a
   leg sized to 0 lots is skipped on that account alone (PRODUCT §5.7).
5. **Warnings**: naked short (a SELL option without a same-type BUY), premium far from its target,
   settings lot size differing from the contract's, a day that does not match the market condition, an
   open run (Execute refused until it closes).

``preview_strategy`` ends ``done`` with ``{"preview": …}`` (see :meth:`Resolution.to_json`) even when
nothing could be placed: the reasons are in it. ``execute_strategy`` resolves afresh, then in ONE
transaction plans the run (:func:`~algomirror.engine.planning.plan_run`, skipped accounts on its result,
spot and ATM on the run), queues its ``execute_run`` (token ``run-of:{command_id}``) and finishes its own
command with ``{"run_id": …}`` — a crash before that commit leaves the command ``running``, recovered to
``pending`` and resolved again; after it nothing is left to repeat. Nothing plannable, or an open run:
``failed`` with ``{"error": text, "reasons": […], "preview": …}``. No exception escapes as the user's
answer: a broker error is a reason.

**Modules.** This one is the component and its commands; :mod:`~algomirror.engine.resolution_snapshot`
reads the database, :mod:`~algomirror.engine.resolver` resolves on the broker,
:mod:`~algomirror.engine.resolution_results` holds what it found.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from algomirror.broker.registry import ClientRegistry
from algomirror.db.models import EngineCommand, MarginTracker
from algomirror.db.session import Database
from algomirror.domain.calendar import TradingCalendar, default_calendar
from algomirror.domain.reservations import reserve, reserved
from algomirror.domain.timeutil import Clock
from algomirror.engine.command_rows import MAX_ERROR
from algomirror.engine.execution import EntryExecutor, ExecuteOutcome, ExecutionConfig, ExecutionError
from algomirror.engine.planning import PlannedExecution, plan_run, request_execute
from algomirror.engine.resolution_results import Resolution, decimal_text
from algomirror.engine.resolution_snapshot import load_snapshot
from algomirror.engine.resolver import Resolver
from algomirror.host_settings import load_host_policy

PREVIEW_STRATEGY = "preview_strategy"
EXECUTE_STRATEGY = "execute_strategy"
RESOLUTION_KINDS = (PREVIEW_STRATEGY, EXECUTE_STRATEGY)
# The id of the command a runner task is performing (the run's execute token is derived from it).
_CURRENT: contextvars.ContextVar[int] = contextvars.ContextVar("resolution_command")


class _KindRunner(EntryExecutor):
    """The entry executor's command machinery for one resolution kind (see :class:`StrategyResolver`)."""

    def __init__(self, owner: StrategyResolver, kind: str, **options: Any) -> None:
        super().__init__(**options)
        self.kind = kind
        self.name = f"resolution:{kind}"
        self.recover_note = "the engine stopped while resolving this strategy; it is resolved again"
        self._owner = owner

    async def perform(self, user_id: int, payload: dict[str, Any]) -> ExecuteOutcome:
        strategy_id = payload.get("strategy_id")
        if not isinstance(strategy_id, int) or isinstance(strategy_id, bool):
            raise ExecutionError(f"malformed {self.kind} payload (strategy_id)")
        self.registry.set_host_policy(await asyncio.to_thread(self._policy))
        resolver = Resolver(self.database, self.client_for, self.market_clock, self._owner.calendar)
        if self.kind == PREVIEW_STRATEGY:
            resolution = await resolver.resolve(user_id, strategy_id)
            return ExecuteOutcome("done", {"preview": resolution.to_json()})
        # One Execute of a user at a time from its funds read to its plan's commit: the next one reads
        # the margin the first reserved, so two Executes at the same instant (a schedule's, a double
        # start) never size against the same cash. One engine runs (its lock), so an in-process lock
        # covers every writer of reservations.
        async with self._owner.sizing_lock(user_id):
            resolution = await resolver.resolve(user_id, strategy_id)
            return await asyncio.to_thread(self._owner.plan, self._command_id(), user_id, resolution)

    def _policy(self) -> Any:
        with self.database.session_factory() as session:
            return load_host_policy(session)

    async def run_command(self, command_id: int) -> bool:
        # perform() needs its command's id for the run's token: kept per task.
        token = _CURRENT.set(command_id)
        try:
            return await super().run_command(command_id)
        finally:
            _CURRENT.reset(token)

    def _command_id(self) -> int:
        return _CURRENT.get()


class StrategyResolver:
    """The engine component for ``preview_strategy`` and ``execute_strategy`` commands (module
    docstring). ``registry``/``decrypt``/``epoch`` as for :class:`~algomirror.engine.execution.
    EntryExecutor`; ``clock`` judges market sessions and square-off (the demo passes its market clock)."""

    name = "resolution"

    def __init__(
        self,
        database: Database,
        registry: ClientRegistry,
        decrypt: Callable[[str], str],
        *,
        epoch: int | Callable[[], int | None],
        clock: Clock | None = None,
        config: ExecutionConfig | None = None,
        calendar: TradingCalendar | None = None,
    ) -> None:
        self.database = database
        self.calendar = calendar or default_calendar()
        options: dict[str, Any] = {
            "database": database,
            "registry": registry,
            "decrypt": decrypt,
            "epoch": epoch,
            # Command rows on the real clock (like every command); the run and its sessions on ``clock``.
            "market_clock": clock,
            "config": config or ExecutionConfig(max_attempts=3),
        }
        self._sizing_locks: defaultdict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.preview = _KindRunner(self, PREVIEW_STRATEGY, **options)
        self.execute = _KindRunner(self, EXECUTE_STRATEGY, **options)
        self.clock = self.preview.market_clock
        self.command_clock = self.preview.clock

    def sizing_lock(self, user_id: int) -> asyncio.Lock:
        """The lock an Execute of ``user_id`` holds from its resolution to its plan's commit."""
        return self._sizing_locks[user_id]

    async def run(self, stop: asyncio.Event) -> None:
        """Both kinds' loops until ``stop`` (each recovers its ``running`` rows first)."""
        # One task group: a fenced-out runner stops the other too (the service sees the group's error).
        async with asyncio.TaskGroup() as group:
            group.create_task(self.preview.run(stop), name="resolution:preview")
            group.create_task(self.execute.run(stop), name="resolution:execute")

    def recover(self) -> int:
        """Return both kinds' ``running`` rows (a dead engine's) to ``pending``."""
        return self.preview.recover() + self.execute.recover()

    async def process_once(self) -> int:
        """Claim and run every due command of both kinds now (tests)."""
        counts = await asyncio.gather(self.preview.process_once(), self.execute.process_once())
        return sum(counts)

    async def run_command(self, command_id: int) -> bool:
        """Run one command of either kind (False when it was not pending)."""
        return await self.preview.run_command(command_id) or await self.execute.run_command(command_id)

    def plan(self, command_id: int, user_id: int, resolution: Resolution) -> ExecuteOutcome:
        """Plan the run, queue its ``execute_run`` and finish command ``command_id``, in ONE transaction;
        or the failed outcome with every reason."""
        preview = resolution.to_json()
        if resolution.open_run is not None:
            resolution.errors.insert(0, f"the strategy already has an open run (#{resolution.open_run})")
        planned = resolution.planned()
        if resolution.errors or not planned:
            reasons = resolution.reasons() or ["nothing could be planned"]
            error = "; ".join(reasons)[:MAX_ERROR]
            failure = {"error": error, "reasons": reasons, "preview": preview}
            return ExecuteOutcome("failed", failure, error=error)
        now = self.clock.now()
        ended = self.command_clock.now()
        try:
            with self.database.session() as session:
                # In the plan's transaction: the open-run index only covers an Execute whose run is
                # still open; this covers one queued while an earlier Execute was still in flight.
                earlier = execute_in_flight(session, command_id, user_id, resolution.strategy_id)
                if earlier is not None:
                    raise _Busy(earlier)
                run = plan_run(
                    session, resolution.strategy_id, planned, now=now, skipped=resolution.skipped()
                )
                run.spot = {name: decimal_text(value) for name, value in resolution.spot.items()}
                run.atm = {name: decimal_text(value) for name, value in resolution.atm.items()}
                warnings = resolution.warnings + [
                    f"leg {r.leg.number}: {w}" for r in resolution.legs for w in r.warnings
                ]
                # Legs skipped on one account (0 lots, an unplaced hedge) while the rest of it is planned.
                warnings += [
                    f"{a.name}: {w}" for a in resolution.accounts if a.reason is None for w in a.warnings
                ]
                if warnings:
                    run.result = {**(run.result or {}), "warnings": warnings}
                reserve_margins(session, resolution, planned, run.id, now)
                request_execute(session, user_id=user_id, run_id=run.id, token=f"run-of:{command_id}")
                result = {"run_id": run.id, "planned": len(planned), "skipped": len(resolution.skipped())}
                won = session.execute(
                    update(EngineCommand)
                    .where(EngineCommand.id == command_id, EngineCommand.status == "running")
                    .values(status="done", result=result, error=None, finished_at=ended, updated_at=ended)
                    .execution_options(synchronize_session=False)
                )
                if getattr(won, "rowcount", 0) != 1:
                    raise _Lost
                run_id = run.id
        except _Lost:
            return ExecuteOutcome("failed", error="the command was no longer running; nothing planned")
        except _Busy as busy:
            reason = (
                f"another Execute of this strategy (command #{busy.command_id}) was still in progress "
                "when this one was requested; nothing planned"
            )
            return ExecuteOutcome("failed", {"error": reason, "reasons": [reason]}, error=reason)
        except IntegrityError:
            # The schema refuses a second open run of one strategy (another Execute won the race).
            reason = "the strategy already has an open run"
            return ExecuteOutcome("failed", {"error": reason, "reasons": [reason]}, error=reason)
        return ExecuteOutcome("done", {**result, "run_id": run_id})


def reserve_margins(
    session: Session, resolution: Resolution, planned: list[PlannedExecution], run_id: int, now: datetime
) -> None:
    """Reserve each planned account's estimated margin (₹) for run ``run_id`` on its margin tracker, in
    the plan's transaction: an Execute of another strategy sizes against the rest until a funds read
    after this run's entry holds it (PRODUCT §9.5; :mod:`~algomirror.domain.reservations`)."""
    accounts = {p.account_id for p in planned}
    amounts = {
        a.account_id: a.margin
        for a in resolution.accounts
        if a.reason is None and a.account_id in accounts and a.margin is not None and a.margin > 0
    }
    if not amounts:
        return
    trackers = {
        t.account_id: t
        for t in session.scalars(select(MarginTracker).where(MarginTracker.account_id.in_(list(amounts))))
    }
    for account_id, amount in sorted(amounts.items()):
        tracker = trackers.get(account_id)
        if tracker is None:
            tracker = MarginTracker(account_id=account_id, update_count=0)
            session.add(tracker)
        tracker.allocated_margins = reserve(tracker.allocated_margins, run_id, amount, now)
        if tracker.total_available_margin is not None:
            tracker.free_margin = tracker.total_available_margin - reserved(tracker.allocated_margins)


class _Lost(Exception):
    """The command stopped being ``running`` before its plan committed (nothing is written)."""


class _Busy(Exception):
    """An earlier ``execute_strategy`` of the strategy was in flight: this one plans nothing."""

    def __init__(self, command_id: int) -> None:
        super().__init__(command_id)
        self.command_id = command_id


IN_FLIGHT_SCANNED = 200  # earlier execute_strategy commands of the user looked at (newest first)


def execute_in_flight(session: Session, command_id: int, user_id: int, strategy_id: int) -> int | None:
    """The id of an earlier ``execute_strategy`` of ``strategy_id`` (same user) that was still in flight
    when command ``command_id`` was queued, else None: one ``pending`` or ``running`` now, or one ``done``
    whose plan (its ``execute_run``, token ``run-of:<id>``) was queued after ``command_id`` (it planned
    while this one waited). Ids grow with insertion, so no clock is compared. Such a command must not
    plan: a second click while the first was resolving, whose first run may already be closed (all
    rejected), would otherwise place a second set of orders."""
    earlier = session.scalars(
        select(EngineCommand)
        .where(
            EngineCommand.kind == EXECUTE_STRATEGY,
            EngineCommand.user_id == user_id,
            EngineCommand.id < command_id,
            EngineCommand.status.in_(("pending", "running", "done")),
        )
        .order_by(EngineCommand.id.desc())
        .limit(IN_FLIGHT_SCANNED)
    ).all()
    mine = [c for c in earlier if (c.payload or {}).get("strategy_id") == strategy_id]
    for command in mine:
        if command.status in ("pending", "running"):
            return command.id
    done = {f"run-of:{c.id}": c.id for c in mine if c.status == "done"}
    if done:
        later = session.scalar(
            select(EngineCommand.token)
            .where(EngineCommand.token.in_(list(done)), EngineCommand.id > command_id)
            .limit(1)
        )
        if later is not None:
            return done[later]
    return None


__all__ = [
    "EXECUTE_STRATEGY",
    "PREVIEW_STRATEGY",
    "RESOLUTION_KINDS",
    "Resolution",
    "Resolver",
    "StrategyResolver",
    "execute_in_flight",
    "load_snapshot",
]
