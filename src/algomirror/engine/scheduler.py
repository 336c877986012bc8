"""The engine's scheduler: strategies' entry, exit and square-off times on the trading calendar (IST)
(PRODUCT §4.1, §6.10, §8).

Each tick reads every active, non-archived, non-template strategy (of active users) that has a time
set, gathers the day's calendar facts and its open run, asks :func:`algomirror.domain.schedule.due_actions`
what is due, and queues it:

* an entry → an ``execute_strategy`` command (payload ``{"strategy_id", "source": "schedule",
  "scheduled_for"}``) under the token ``sched:{strategy_id}:{YYYY-MM-DD}:entry``; the unique token makes
  it once per day across ticks and restarts. The entry component resolves and plans it;
* a missed entry (beyond the grace window, blocked by the square-off, a run still open) → the same token
  taken by a ``failed`` command row whose error says why, plus one ``schedule_entry_missed`` activity row:
  both once per strategy and day, and no entry can be queued that day afterwards;
* an exit → ``request_exit(scope="run", reason="time_exit")`` under ``sched:{id}:{date}:exit:{run_id}``;
  a square-off → ``reason="square_off"`` under ``sched:{id}:{date}:squareoff:{run_id}`` (the exit
  executor cancels the run's working entries first, then exits every leg, legs in ``error`` included:
  ``retry_errors``); it is due while the run holds an MIS execution that is open or in ``error``;
* the MIS warning → one ``schedule_mis_warning`` activity row per strategy and day.

Time comes from the injected ``clock`` (the demo's simulated market clock); tests call :meth:`tick`
with chosen instants. Between ticks the component sleeps until the next scheduled instant, at most
``interval`` seconds of the clock (so an edited strategy is seen within that time).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy import and_, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, selectinload

from algomirror.db.models import (
    ActivityLog,
    EngineCommand,
    Strategy,
    StrategyExecution,
    StrategyRun,
    User,
)
from algomirror.db.session import Database
from algomirror.domain.calendar import CalendarSnapshot, TradingCalendar, default_calendar
from algomirror.domain.contract_specs import ContractSpecs
from algomirror.domain.errors import DomainError, UnknownUnderlying
from algomirror.domain.instruments import underlying_spec
from algomirror.domain.schedule import (
    DayFacts,
    Due,
    LegContract,
    OpenRun,
    Schedule,
    due_actions,
    is_expiry_day,
    market_condition_matches,
    next_due,
)
from algomirror.domain.timeutil import Clock, SystemClock, clock_speed, ensure_aware, ist_today
from algomirror.engine.command_rows import MAX_ERROR, pause
from algomirror.engine.exit_planning import request_exit
from algomirror.engine.exit_records import OPEN_STATUSES

log = logging.getLogger(__name__)

EXECUTE_STRATEGY = "execute_strategy"
ENTRY_MISSED_ACTION = "schedule_entry_missed"
MIS_WARNING_ACTION = "schedule_mis_warning"
DEFAULT_GRACE = timedelta(seconds=120)
_DEFAULT_EXCHANGE = "NFO"
_MIN_SLEEP = 0.05  # wall seconds: the floor between ticks, however fast a simulated clock runs
# Executions that may hold an intraday position: open ones, and those whose exit gave up (``error``: the
# position is still there). A run of only the latter still gets its square-off and its MIS warning.
MIS_HELD_STATUSES = (*OPEN_STATUSES, "error")


def entry_token(strategy_id: int, day: str) -> str:
    """The once-per-day token of a scheduled entry (``day`` is the IST date, ``YYYY-MM-DD``)."""
    return f"sched:{strategy_id}:{day}:entry"


def exit_token(strategy_id: int, day: str, run_id: int, *, square_off: bool) -> str:
    """The once-only token of a scheduled exit or square-off of ``run_id`` on IST date ``day``."""
    return f"sched:{strategy_id}:{day}:{'squareoff' if square_off else 'exit'}:{run_id}"


@dataclass(frozen=True, slots=True)
class Planned:
    """One due action of one strategy with the values its row needs."""

    strategy_id: int
    user_id: int
    name: str
    due: Due


@dataclass(slots=True)
class TickReport:
    """What one tick did: ``queued`` = tokens of commands inserted now, ``logged`` = activity actions
    written now (``(action, strategy_id)``), ``next_due`` = the earliest scheduled instant after the tick
    (None when nothing more is scheduled today)."""

    queued: list[str] = field(default_factory=list)
    logged: list[tuple[str, int]] = field(default_factory=list)
    next_due: datetime | None = None


class Scheduler:
    """The engine component of the module docstring.

    ``grace`` is how late an entry may still be sent; ``interval`` the longest sleep between ticks, in
    seconds of ``clock`` (converted by the clock's speed); ``calendar`` and ``specs`` decide trading days
    and expiry days (defaults: :func:`default_calendar` and the default contract rules); activity rows are
    stamped by ``activity_clock`` (real time by default, as the other components' activity rows).
    """

    name = "scheduler"

    def __init__(
        self,
        database: Database,
        *,
        clock: Clock | None = None,
        grace: timedelta = DEFAULT_GRACE,
        interval: float = 1.0,
        calendar: TradingCalendar | None = None,
        specs: ContractSpecs | None = None,
        activity_clock: Clock | None = None,
    ) -> None:
        if grace < timedelta(0):
            raise ValueError("grace must not be negative")
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.database = database
        self.clock: Clock = clock or SystemClock()
        self.grace = grace
        self.interval = interval
        self.calendar = calendar or default_calendar()
        self.specs = specs
        self.activity_clock: Clock = activity_clock or SystemClock()
        self._expiry_cache: dict[tuple[LegContract, ...], bool] = {}
        self._expiry_cache_day: date | None = None
        self._expiry_cache_snapshot: CalendarSnapshot | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Tick until ``stop`` is set; a database error is logged and the next tick tries again."""
        while not stop.is_set():
            now = self.clock.now()
            wake = now + timedelta(seconds=self.interval)
            try:
                report = await asyncio.to_thread(self.tick, now)
            except SQLAlchemyError as exc:
                log.warning("scheduler: database error: %s", str(exc).splitlines()[0])
            else:
                if report.next_due is not None:
                    wake = min(wake, report.next_due)
            # ``wake`` is in clock time; a simulated clock runs ``speed`` times faster than the wall.
            seconds = (wake - self.clock.now()).total_seconds() / clock_speed(self.clock)
            await pause(stop, max(seconds, _MIN_SLEEP))

    # --- one tick --------------------------------------------------------------------------------------

    def tick(self, now: datetime | None = None) -> TickReport:
        """Decide and queue everything due at ``now`` (the clock's time when None). Safe to call any
        number of times, from any number of component instances in turn: every row is once-only."""
        at = ensure_aware(now) if now is not None else self.clock.now()
        planned, wake = self._plan(at)
        report = TickReport(next_due=wake)
        for item in planned:
            self._act(item, at, report)
        return report

    def _plan(self, now: datetime) -> tuple[list[Planned], datetime | None]:
        today = ist_today(now)
        planned: list[Planned] = []
        wake: datetime | None = None
        with self.database.session_factory() as session:
            strategies = _scheduled_strategies(session)
            runs = _open_runs(session, [s.id for s in strategies])
            for strategy in strategies:
                schedule = Schedule(strategy.entry_time, strategy.exit_time, strategy.square_off_time)
                try:
                    facts = self._facts(strategy, today, now)
                    dues = due_actions(schedule, facts, runs.get(strategy.id), now, self.grace)
                except (DomainError, LookupError, ValueError) as exc:
                    # One strategy's bad data (a calendar without sessions, a stray value) must not
                    # stop every other strategy's schedule: it is reported and skipped this tick.
                    log.warning("scheduler: strategy %s not scheduled: %s", strategy.id, exc)
                    continue
                created = ensure_aware(strategy.created_at)
                for due in dues:
                    if due.kind == "entry_missed" and created > due.at:
                        continue  # the strategy did not exist at its entry time: nothing was missed
                    planned.append(Planned(strategy.id, strategy.user_id, strategy.name, due))
                upcoming = next_due(schedule, facts, now)
                if upcoming is not None and (wake is None or upcoming < wake):
                    wake = upcoming
        return planned, wake

    def _facts(self, strategy: Strategy, today: date, now: datetime) -> DayFacts:
        exchanges = _exchanges(strategy)
        trading_day = all(self.calendar.is_trading_day(ex, today) for ex in exchanges)
        in_session = all(self.calendar.is_open(ex, now) for ex in exchanges)
        bounds = [self.calendar.session_bounds(ex, today) for ex in exchanges]
        closes = [b[1] for b in bounds if b is not None]
        close = min(closes) if closes and trading_day else None
        try:
            previous = min(self.calendar.previous_trading_day(ex, today) for ex in exchanges)
        except LookupError:
            previous = None
        matches = True
        if trading_day and strategy.market_condition != "any":
            legs = tuple(LegContract(leg.instrument, leg.product_type, leg.expiry) for leg in strategy.legs)
            expiry = self._expiry_day(legs, today)
            try:
                matches = market_condition_matches(strategy.market_condition, expiry)
            except ValueError:
                log.warning(
                    "scheduler: strategy %s has an unknown market condition %r; not scheduled",
                    strategy.id,
                    strategy.market_condition,
                )
                matches = False
        return DayFacts(today, trading_day, matches, in_session, close, previous)

    def _expiry_day(self, legs: tuple[LegContract, ...], today: date) -> bool:
        """:func:`is_expiry_day`, remembered for the day (it predicts months of listings per leg)."""
        # A calendar edit (the shared instance adopted a new snapshot) can shift today's expiries too.
        if self._expiry_cache_day != today or self._expiry_cache_snapshot is not self.calendar.snapshot:
            self._expiry_cache.clear()
            self._expiry_cache_day = today
            self._expiry_cache_snapshot = self.calendar.snapshot
        found = self._expiry_cache.get(legs)
        if found is None:
            found = self._expiry_cache[legs] = is_expiry_day(legs, today, self.calendar, self.specs)
        return found

    # --- acting on one due action ----------------------------------------------------------------------

    def _act(self, item: Planned, now: datetime, report: TickReport) -> None:
        due = item.due
        day = due.day.isoformat()
        if due.kind == "entry":
            token = entry_token(item.strategy_id, day)
            payload = {
                "strategy_id": item.strategy_id,
                "source": "schedule",
                "scheduled_for": due.at.isoformat(),
            }
            if self._insert_once(token, lambda s: _add_command(s, item, token, payload)):
                report.queued.append(token)
                log.info("scheduler: entry of strategy %s for %s queued", item.strategy_id, day)
        elif due.kind == "entry_missed":
            token = entry_token(item.strategy_id, day)
            if self._insert_once(token, lambda s: self._add_missed(s, item, token, now)):
                report.logged.append((ENTRY_MISSED_ACTION, item.strategy_id))
                log.warning(
                    "scheduler: entry of strategy %s for %s missed: %s", item.strategy_id, day, due.reason
                )
        elif due.kind in ("exit", "square_off"):
            assert due.run_id is not None  # due_actions sets it for exits
            square_off = due.kind == "square_off"
            token = exit_token(item.strategy_id, day, due.run_id, square_off=square_off)
            run_id = due.run_id

            def add_exit(session: Session) -> None:
                request_exit(
                    session,
                    user_id=item.user_id,
                    scope="run",
                    run_id=run_id,
                    token=token,
                    reason="square_off" if square_off else "time_exit",
                    # The day's last word on an intraday position (PRODUCT §6.10: exit everything, confirm
                    # flat): a leg an earlier exit gave up on (``error``) gets one more round, verified at
                    # the broker first, rather than being left to the broker's own square-off.
                    retry_errors=square_off,
                )

            if self._insert_once(token, add_exit):
                report.queued.append(token)
                log.info("scheduler: %s of run %s queued (%s)", due.kind, due.run_id, token)
        elif due.kind == "mis_warning" and self._warn_once(item, now):
            report.logged.append((MIS_WARNING_ACTION, item.strategy_id))

    def _insert_once(self, token: str, add: Callable[[Session], None]) -> bool:
        """Run ``add`` in its own transaction unless a command with ``token`` exists; False when it does
        (found first, or inserted meanwhile: the unique token refuses the second)."""
        with self.database.session_factory() as session:
            if session.scalar(select(EngineCommand.id).where(EngineCommand.token == token)) is not None:
                return False
        try:
            with self.database.session() as session:
                add(session)
        except IntegrityError:
            return False  # the same token was queued meanwhile: once is all we want
        except LookupError as exc:
            # The run closed (or the strategy moved) between the read and this write: nothing to do.
            log.info("scheduler: %s not queued: %s", token, exc)
            return False
        return True

    def _add_missed(self, session: Session, item: Planned, token: str, now: datetime) -> None:
        reason = item.due.reason
        day = item.due.day.isoformat()
        session.add(
            EngineCommand(
                user_id=item.user_id,
                kind=EXECUTE_STRATEGY,
                payload={
                    "strategy_id": item.strategy_id,
                    "source": "schedule",
                    "scheduled_for": item.due.at.isoformat(),
                },
                token=token,
                status="failed",
                error=f"scheduled entry missed: {reason}"[:MAX_ERROR],
                result={"error": f"scheduled entry missed: {reason}", "missed": True},
                finished_at=now,
            )
        )
        session.flush()
        session.add(
            ActivityLog(
                user_id=item.user_id,
                action=ENTRY_MISSED_ACTION,
                details=f"strategy {item.strategy_id} ({item.name}) on {day}: {reason}"[:2000],
                timestamp=self.activity_clock.now(),
            )
        )

    def _warn_once(self, item: Planned, now: datetime) -> bool:
        """One MIS warning row per strategy and IST day; False when it was written before."""
        prefix = _warning_prefix(item.strategy_id, item.due.day.isoformat())
        with self.database.session() as session:
            exists = session.scalar(
                select(ActivityLog.id).where(
                    ActivityLog.action == MIS_WARNING_ACTION,
                    ActivityLog.user_id == item.user_id,
                    ActivityLog.details.startswith(prefix, autoescape=True),
                )
            )
            if exists is not None:
                return False
            session.add(
                ActivityLog(
                    user_id=item.user_id,
                    action=MIS_WARNING_ACTION,
                    details=(
                        f"{prefix} ({item.name}) run {item.due.run_id} holds open MIS positions and has "
                        "no square-off time: the broker squares them off at its own cut-off"
                    )[:2000],
                    timestamp=self.activity_clock.now(),
                )
            )
        log.warning("scheduler: strategy %s holds open MIS positions near the close", item.strategy_id)
        return True


def _add_command(session: Session, item: Planned, token: str, payload: dict[str, object]) -> None:
    session.add(EngineCommand(user_id=item.user_id, kind=EXECUTE_STRATEGY, payload=payload, token=token))
    session.flush()


def _warning_prefix(strategy_id: int, day: str) -> str:
    return f"strategy {strategy_id} on {day}:"


def _scheduled_strategies(session: Session) -> Sequence[Strategy]:
    """Active, non-archived, non-template strategies of active users with at least one time set."""
    return session.scalars(
        select(Strategy)
        .join(User, User.id == Strategy.user_id)
        .where(
            User.is_active.is_(True),
            Strategy.is_active.is_(True),
            Strategy.is_template.is_(False),
            Strategy.archived_at.is_(None),
            (Strategy.entry_time.is_not(None))
            | (Strategy.exit_time.is_not(None))
            | (Strategy.square_off_time.is_not(None)),
        )
        .options(selectinload(Strategy.legs))
        .order_by(Strategy.id)
    ).all()


def _open_runs(session: Session, strategy_ids: Sequence[int]) -> dict[int, OpenRun]:
    """Strategy id → its open run, with whether the run holds an open MIS execution."""
    if not strategy_ids:
        return {}
    rows = session.execute(
        select(StrategyRun.id, StrategyRun.strategy_id, StrategyRun.started_at).where(
            StrategyRun.strategy_id.in_(strategy_ids), StrategyRun.ended_at.is_(None)
        )
    ).all()
    run_ids = [row.id for row in rows]
    mis: set[int] = set()
    if run_ids:
        mis = set(
            session.scalars(
                select(StrategyExecution.run_id)
                .where(
                    and_(
                        StrategyExecution.run_id.in_(run_ids),
                        StrategyExecution.product == "MIS",
                        StrategyExecution.status.in_(MIS_HELD_STATUSES),
                    )
                )
                .distinct()
            ).all()
        )
    return {row.strategy_id: OpenRun(row.id, ensure_aware(row.started_at), row.id in mis) for row in rows}


def _exchanges(strategy: Strategy) -> list[str]:
    """The F&O exchanges of the strategy's legs (NFO when none can be told): the calendar is theirs."""
    found: set[str] = set()
    for leg in strategy.legs:
        if not leg.instrument:
            continue
        try:
            found.add(underlying_spec(leg.instrument).fo_exchange)
        except UnknownUnderlying:
            continue
    return sorted(found) or [_DEFAULT_EXCHANGE]


__all__ = [
    "DEFAULT_GRACE",
    "ENTRY_MISSED_ACTION",
    "EXECUTE_STRATEGY",
    "MIS_WARNING_ACTION",
    "Scheduler",
    "TickReport",
    "entry_token",
    "exit_token",
]
