"""The kill switch (PRODUCT §6.10, issue 12): a daily loss limit per account and a person's "trip"
(one account, or every account of the user: "flatten everything and stop new entries").

**Latch.** A tripped account has ``trading_accounts.kill_switch_at`` / ``kill_switch_reason`` set and its
entries halted (:func:`~algomirror.engine.halts.halt_account_entries`, which the entry path obeys). Both
are rows, so they survive restarts; only a person clears them (a ``reset`` command from the web).

**Daily loss limit.** Every ``check_seconds`` each active account is valued (published for the page;
only an account with a ``daily_loss_limit`` and no latch can trip): day P&L (₹) = the realised P&L of
its executions exited today (IST trading day) in runs the risk engine no longer holds, from their
entry/exit averages and quantities (sign +1 BUY, −1 SELL; :mod:`~algomirror.engine.day_pnl`), plus
``source.account_open_pnl(account)`` (the risk engine: realised + unrealised of the account's executions
in the open runs it holds). Unknown is never 0: an open run the risk engine has not loaded yet, a price
pending, or an open execution without a usable mark make the day P&L unknown and nothing trips. Day
P&L ≤ −limit trips the account. A run carried over from an earlier day (NRML) counts only today's
change, its P&L now − its last ``run_pnl_samples`` row before today's 09:15 IST (open or ended today;
:mod:`~algomirror.engine.day_pnl`); without such a sample, or when it spans several accounts (the
sample is the run's total), the day P&L of its accounts is unknown.

**One transaction per trip**: the conditional latch (``UPDATE … WHERE kill_switch_at IS NULL``: one
winner), the account's entry halt, a ``risk_events`` row (``kill_switch``, ``exit_initiated``) per open
execution, an activity entry, a critical alert, and one durable ``exit`` command (scope ``account``,
reason ``kill_switch``) per open run on the account, under a token derived from the latch (automatic) or
the web command (by hand), so a restart never requests it twice. After the commit the commands are
handed to the :class:`~algomirror.engine.exits.ExitExecutor` at once; the exit path cancels the run's
working (tagged) entry orders first, then buys back shorts before selling hedges.
``user:{uid}:alerts`` gets event ``kill_switch`` {"account_id" (null for the global switch), "reason",
"at"} on a trip, and one per account on a reset (reason ``reset``): the page refreshes its state on
either; ``user:{uid}:kill_switch`` gets event ``pnl`` {"account_id", "pnl", "limit", "unknown_reason",
"at"} on every check (the page's live figure).

**Reset.** Clears the latch and the part of the account's entry halt the kill switch set (another
cause's halt stays). If today's P&L is still beyond the limit the account would trip again at once, so
after a reset the automatic trip waits until the day P&L is seen above −limit again
(``kill_switch_rearmed`` in the activity log) — or the next day; that waiting state is read back from
the activity log at start.

**Commands** (``engine_commands`` kind ``kill_switch``; payload ``action`` = ``trip`` | ``trip_all`` |
``reset`` | ``reset_all``, ``account_id`` for the one-account actions): claimed ``pending → running``
once, run, ended ``done`` / ``failed``. Each is idempotent, so a row left ``running`` by a dead engine
is simply run again at start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, Protocol, runtime_checkable

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from algomirror.db.models import (
    ActivityLog,
    EngineCommand,
    RiskEvent,
    StrategyExecution,
    StrategyRun,
    TradingAccount,
    User,
)
from algomirror.db.session import Database
from algomirror.domain.money import format_inr
from algomirror.domain.timeutil import IST, Clock, SystemClock, ensure_aware
from algomirror.engine.alerts import raise_alert
from algomirror.engine.command_rows import MAX_ERROR, claim_command, pause, rowcount
from algomirror.engine.day_pnl import (
    Baseline,
    DayPnl,
    carried_baselines,
    day_bounds,
    open_today,
    realised_today,
)
from algomirror.engine.exit_planning import request_exit
from algomirror.engine.fencing import FencedOutError
from algomirror.engine.halts import halt_account_entries, resume_account_entries

log = logging.getLogger(__name__)

KILL_SWITCH_COMMAND = "kill_switch"
ACTIONS = ("trip", "trip_all", "reset", "reset_all")
Action = Literal["trip", "trip_all", "reset", "reset_all"]
REASON = "kill_switch"
ALERT_KIND = "kill_switch"
TRIPPED_ACTION = "kill_switch_tripped"
RESET_ACTION = "kill_switch_reset"
REARMED_ACTION = "kill_switch_rearmed"
# The prefix of the entry-halt reason the kill switch writes; a reset removes exactly that part.
HALT_PREFIX = "kill switch"
# Executions with units (or an entry) the kill switch exits.
_OPEN = ("pending", "active", "exiting", "error")
_MAX_REASON = 500


@runtime_checkable
class OpenPnlSource(Protocol):
    """What the kill switch reads of the risk engine (its ``runs`` and ``account_open_pnl``), on the
    engine loop."""

    @property
    def runs(self) -> Mapping[int, object]: ...

    def account_open_pnl(self, account_id: int) -> Decimal | None: ...


class LiveBus(Protocol):
    """The part of the live bus this component uses (``algomirror.live``)."""

    def publish(self, topic: str, event: str, data: dict[str, Any]) -> None: ...


@dataclass(frozen=True, slots=True)
class KillSwitchConfig:
    """Seconds. ``check_seconds``: how often daily loss limits are evaluated; ``poll_seconds``: how often
    web commands are looked for; ``max_attempts``: runs of a command that hit a database error before
    it fails (count)."""

    check_seconds: float = 1.0
    poll_seconds: float = 0.3
    max_attempts: int = 5


@dataclass(frozen=True, slots=True)
class _Watched:
    account_id: int
    user_id: int
    name: str
    limit: Decimal | None
    latched: bool


@dataclass(slots=True)
class TripResult:
    """What one trip (or reset) wrote: commands to dispatch and messages to publish after the commit."""

    command_ids: list[int] = field(default_factory=list)
    messages: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    accounts: list[int] = field(default_factory=list)


class KillSwitchError(Exception):
    """A command that cannot run as given (bad payload, someone else's account)."""


class KillSwitch:
    """The engine component ``kill_switch``; see the module docstring.

    ``source`` is the risk engine (its ``runs`` and ``account_open_pnl``, read on the engine loop), or a
    callable returning it (looked up when first needed: the engine factory builds its components in one
    list); None:
    every account with an open run is unknown); ``exits`` the ExitExecutor the exit commands are handed
    to at once (None: its own poll picks them up); ``bus`` the live bus (None: nothing published);
    ``clock`` the market clock (trading day, latch times). Tests drive it with :meth:`check`,
    :meth:`process_commands` and :meth:`drain`.
    """

    name = "kill_switch"

    def __init__(
        self,
        database: Database,
        source: OpenPnlSource | Callable[[], OpenPnlSource | None] | None,
        *,
        exits: Any | None = None,
        bus: LiveBus | None = None,
        clock: Clock | None = None,
        config: KillSwitchConfig | None = None,
    ) -> None:
        self.database = database
        self._source = source
        self.exits = exits
        self.bus = bus
        self.clock = clock or SystemClock()
        self.config = config or KillSwitchConfig()
        self.tripped = 0  # automatic trips by this instance (tests, diagnostics)
        self.last: dict[int, DayPnl] = {}
        self._waiting: set[int] | None = None  # reset today, P&L not yet seen above −limit
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def source(self) -> OpenPnlSource | None:
        """The risk engine (resolved from the callable given, once it answers)."""
        if self._source is None or isinstance(self._source, OpenPnlSource):
            return self._source
        found = self._source()
        if found is not None:
            self._source = found
        return found

    # ------------------------------------------------------------------------------ lifecycle

    async def run(self, stop: asyncio.Event) -> None:
        """Recover commands a dead engine left running, then check limits every ``check_seconds`` and
        run web commands until ``stop``; dispatched exits are awaited at the end."""
        try:
            await asyncio.to_thread(self.recover)
            next_check = 0.0
            while not stop.is_set():
                try:
                    await self.process_commands()
                    if time.monotonic() >= next_check:
                        next_check = time.monotonic() + self.config.check_seconds
                        await self.check()
                except SQLAlchemyError as exc:
                    log.warning("kill switch: database error: %s", str(exc).splitlines()[0])
                await pause(stop, self.config.poll_seconds)
        finally:
            await self.drain()

    async def drain(self) -> None:
        """Wait for every dispatched exit command in flight."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def recover(self) -> int:
        """Return ``running`` kill-switch commands to ``pending`` (every action is idempotent); how many."""
        with self.database.session() as session:
            done = session.execute(
                update(EngineCommand)
                .where(EngineCommand.kind == KILL_SWITCH_COMMAND, EngineCommand.status == "running")
                .values(status="pending", started_at=None, updated_at=self.clock.now())
                .execution_options(synchronize_session=False)
            )
            return rowcount(done)

    # --------------------------------------------------------------------------------- limits

    async def check(self) -> list[int]:
        """Value every active account (published for the page) and trip those with a limit and no latch
        whose day P&L is at or beyond it; the tripped ids."""
        now = self.clock.now()
        if self._waiting is None:
            self._waiting = await asyncio.to_thread(self._load_waiting, now)
        watched = await asyncio.to_thread(self._watched)
        if not watched:
            return []
        source = self.source
        held = set(source.runs) if source is not None else None
        realised, baselines = await asyncio.to_thread(
            self._realised, [a.account_id for a in watched], now, held
        )
        tripped: list[int] = []
        rearmed: list[_Watched] = []
        for account in watched:
            value = self._day_pnl(account.account_id, realised[account.account_id], baselines)
            self.last[account.account_id] = value
            total = value.total
            self._publish(
                f"user:{account.user_id}:kill_switch",
                "pnl",
                {
                    "account_id": account.account_id,
                    "pnl": None if total is None else str(total),
                    "limit": None if account.limit is None else str(account.limit),
                    "unknown_reason": value.unknown_reason,
                    "at": now.isoformat(),
                },
            )
            if total is None or account.limit is None or account.latched:
                continue
            if account.account_id in self._waiting:
                if total > -account.limit:
                    self._waiting.discard(account.account_id)
                    rearmed.append(account)
                continue
            if total <= -account.limit:
                reason = f"daily loss limit {format_inr(account.limit)} reached: day P&L {format_inr(total)}"
                result = await asyncio.to_thread(
                    self._trip_accounts, [account.account_id], account.user_id, reason, total, None, False
                )
                if result.accounts:
                    self.tripped += 1
                    tripped.append(account.account_id)
                    log.warning("kill switch: %s tripped: %s", account.name, reason)
                self._after(result)
        if rearmed:
            await asyncio.to_thread(self._log_rearmed, rearmed, now)
        return tripped

    def _day_pnl(
        self, account_id: int, realised: tuple[Decimal | None, str | None], baselines: list[Baseline]
    ) -> DayPnl:
        """The account's day P&L: ``realised`` (value, reason) plus today's part of the open P&L (the
        risk engine's, minus the ``baselines`` of the carried-over runs it holds)."""
        value, why = realised
        open_pnl: Decimal | None = Decimal(0)
        source = self.source
        if source is not None:
            whole = source.account_open_pnl(account_id)
            open_pnl, carried_why = open_today(account_id, whole, baselines)
            if why is None:
                why = carried_why
            if open_pnl is None and why is None:
                why = "an open position has no usable price"
        return DayPnl(account_id, value, open_pnl, why)

    def _watched(self) -> list[_Watched]:
        with self.database.session_factory() as session:
            rows = session.execute(
                select(
                    TradingAccount.id,
                    TradingAccount.user_id,
                    TradingAccount.account_name,
                    TradingAccount.daily_loss_limit,
                    TradingAccount.kill_switch_at,
                ).where(TradingAccount.is_active.is_(True), TradingAccount.archived_at.is_(None))
            ).all()
        return [
            _Watched(r.id, r.user_id, r.account_name, r.daily_loss_limit, r.kill_switch_at is not None)
            for r in rows
        ]

    def _realised(
        self, account_ids: list[int], now: datetime, held: set[int] | None
    ) -> tuple[dict[int, tuple[Decimal | None, str | None]], list[Baseline]]:
        """Per account the realised part (value, reason), and the baselines of the held carried-over runs."""
        with self.database.session_factory() as session:
            realised = realised_today(session, account_ids, now, held)
            baselines = carried_baselines(session, held or (), now)
        return realised, list(baselines.values())

    def _load_waiting(self, now: datetime) -> set[int]:
        """Accounts reset today whose P&L has not been seen above the limit since (from the log)."""
        start, _ = day_bounds(now)
        with self.database.session_factory() as session:
            rows = session.execute(
                select(ActivityLog.account_id, ActivityLog.action)
                .where(
                    ActivityLog.action.in_((TRIPPED_ACTION, RESET_ACTION, REARMED_ACTION)),
                    ActivityLog.timestamp >= start,
                    ActivityLog.account_id.is_not(None),
                )
                .order_by(ActivityLog.timestamp, ActivityLog.id)
            ).all()
        latest: dict[int, str] = {}
        for account_id, action in rows:
            latest[int(account_id)] = action
        return {a for a, action in latest.items() if action == RESET_ACTION}

    def _log_rearmed(self, accounts: list[_Watched], now: datetime) -> None:
        with self.database.session() as session:
            for a in accounts:
                assert a.limit is not None  # only armed accounts are re-armed
                session.add(
                    ActivityLog(
                        user_id=a.user_id,
                        account_id=a.account_id,
                        action=REARMED_ACTION,
                        details=f"{a.name}: day P&L back above -{format_inr(a.limit)}; the limit is armed",
                        timestamp=ensure_aware(now),
                    )
                )

    # ------------------------------------------------------------------------------- tripping

    def _trip_accounts(
        self,
        account_ids: list[int],
        user_id: int,
        reason: str,
        pnl: Decimal | None,
        command_id: int | None,
        by_person: bool,
    ) -> TripResult:
        """Latch, halt and exit ``account_ids`` of ``user_id`` in one transaction. An account already
        latched is skipped by an automatic trip; a person's trip (``command_id``) still requests the
        exit of whatever is open on it. Raises SQLAlchemyError when the database fails (nothing
        written)."""
        now = self.clock.now()
        reason = reason.replace(";", ",")[:_MAX_REASON]
        result = TripResult()
        with self.database.session() as session:
            for account_id in account_ids:
                account = session.get(TradingAccount, account_id)
                if account is None or account.user_id != user_id:
                    continue
                won = session.execute(
                    update(TradingAccount)
                    .where(TradingAccount.id == account_id, TradingAccount.kill_switch_at.is_(None))
                    .values(kill_switch_at=now, kill_switch_reason=reason)
                    .execution_options(synchronize_session=False)
                )
                latched = rowcount(won) == 1
                if not latched and command_id is None:
                    continue  # tripped meanwhile by another cause: its exits are requested
                halt_account_entries(session, account_id, f"{HALT_PREFIX}: {reason}", now)
                source = f"c{command_id}" if command_id is not None else f"a{int(now.timestamp() * 1000)}"
                commands = self._exit_account(session, account, reason, pnl, source, by_person, now)
                session.add(
                    ActivityLog(
                        user_id=user_id,
                        account_id=account_id,
                        action=TRIPPED_ACTION,
                        details=(
                            f"{account.account_name}: {reason}; entries halted, "
                            f"{len(commands)} exit request(s)"
                        )[:2000],
                        timestamp=now,
                    )
                )
                raise_alert(
                    session,
                    user_id=user_id,
                    kind=ALERT_KIND,
                    severity="critical",
                    title=f"{account.account_name}: kill switch tripped",
                    details=f"{reason}. New entries are halted and every open position is exited; "
                    "reset the kill switch on the Kill switch page when you are ready.",
                    now=now,
                    account_id=account_id,
                )
                result.command_ids.extend(commands)
                result.accounts.append(account_id)
                if len(account_ids) == 1:
                    result.messages.append(
                        (
                            f"user:{user_id}:alerts",
                            "kill_switch",
                            {"account_id": account_id, "reason": reason, "at": now.isoformat()},
                        )
                    )
        if len(account_ids) > 1:
            result.messages.append(
                (
                    f"user:{user_id}:alerts",
                    "kill_switch",
                    {"account_id": None, "reason": reason, "at": now.isoformat()},
                )
            )
        return result

    @staticmethod
    def _exit_account(
        session: Session,
        account: TradingAccount,
        reason: str,
        pnl: Decimal | None,
        source: str,
        by_person: bool,
        now: datetime,
    ) -> list[int]:
        """Risk events per open execution and one exit command per open run on ``account``."""
        executions = session.scalars(
            select(StrategyExecution)
            .join(StrategyRun, StrategyRun.id == StrategyExecution.run_id)
            .where(
                StrategyExecution.account_id == account.id,
                StrategyExecution.status.in_(_OPEN),
                StrategyRun.ended_at.is_(None),
            )
            .order_by(StrategyExecution.run_id, StrategyExecution.id)
        ).all()
        runs: list[int] = []
        for e in executions:
            if e.status == "error" and not by_person:
                continue  # an exit that used up its attempts waits for a person (it has an alert)
            session.add(
                RiskEvent(
                    strategy_execution_id=e.id,
                    run_id=e.run_id,
                    event_type=REASON,
                    trigger_value=pnl,
                    threshold_value=account.daily_loss_limit,
                    action_taken="exit_initiated",
                    details=json.dumps({"account_id": account.id, "run_id": e.run_id, "detail": reason}),
                    created_at=now,
                )
            )
            if e.run_id not in runs:
                runs.append(e.run_id)
        ids: list[int] = []
        for run_id in runs:
            token = f"kill:{source}:{account.id}:{run_id}"
            existing = session.scalar(select(EngineCommand.id).where(EngineCommand.token == token))
            if existing is not None:
                continue  # this command ran before (the engine stopped before ending it)
            command = request_exit(
                session,
                user_id=account.user_id,
                scope="account",
                token=token,
                run_id=run_id,
                account_id=account.id,
                reason=REASON,
                retry_errors=by_person,
            )
            ids.append(command.id)
        return ids

    def _reset_accounts(self, account_ids: list[int], user_id: int, who: str) -> TripResult:
        """Clear the latch and the kill switch's part of the entry halt of ``account_ids`` of
        ``user_id`` (one transaction); the reset ids. Logged as ``kill_switch_reset``."""
        now = self.clock.now()
        result = TripResult()
        with self.database.session() as session:
            for account_id in account_ids:
                account = session.get(TradingAccount, account_id)
                if account is None or account.user_id != user_id or account.kill_switch_at is None:
                    continue
                was = account.kill_switch_reason or "tripped"
                account.kill_switch_at = None
                account.kill_switch_reason = None
                halt = account.entries_halted_reason
                if halt is not None:
                    rest = [p for p in halt.split("; ") if not p.startswith(f"{HALT_PREFIX}: ")]
                    if not rest:
                        resume_account_entries(session, account_id, user_id=user_id, now=now)
                    elif len(rest) != len(halt.split("; ")):
                        account.entries_halted_reason = "; ".join(rest)
                session.add(
                    ActivityLog(
                        user_id=user_id,
                        account_id=account_id,
                        action=RESET_ACTION,
                        details=f"{account.account_name}: kill switch reset by {who} (was: {was})"[:2000],
                        timestamp=now,
                    )
                )
                result.accounts.append(account_id)
                result.messages.append(
                    (
                        f"user:{user_id}:alerts",
                        "kill_switch",
                        {"account_id": account_id, "reason": "reset", "at": now.isoformat()},
                    )
                )
        if self._waiting is not None:
            self._waiting.update(result.accounts)
        return result

    def _after(self, result: TripResult) -> None:
        for topic, event, data in result.messages:
            self._publish(topic, event, data)
        if self.exits is None:
            return
        for command_id in result.command_ids:
            task = asyncio.get_running_loop().create_task(self._dispatch(command_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _dispatch(self, command_id: int) -> None:
        """Run an exit command now; the exit executor's one-winner claim makes its own poll a no-op."""
        assert self.exits is not None
        try:
            await self.exits.run_command(command_id)
        except (FencedOutError, SQLAlchemyError) as exc:
            log.warning("kill switch: exit command %s not run here: %s", command_id, str(exc).splitlines()[0])

    def _publish(self, topic: str, event: str, data: dict[str, Any]) -> None:
        if self.bus is None:
            return
        try:
            self.bus.publish(topic, event, data)
        except Exception:  # the bus is display only: a broken one must not stop protection
            log.exception("kill switch: could not publish %s on %s", event, topic)

    # ------------------------------------------------------------------------------- commands

    async def process_commands(self) -> int:
        """Claim and run every pending ``kill_switch`` command; how many ran. Raises SQLAlchemyError
        when the queue cannot be read."""
        ran = 0
        for command_id in await asyncio.to_thread(self._pending):
            if await self.run_command(command_id):
                ran += 1
        return ran

    def _pending(self) -> list[int]:
        with self.database.session_factory() as session:
            return list(
                session.scalars(
                    select(EngineCommand.id)
                    .where(EngineCommand.kind == KILL_SWITCH_COMMAND, EngineCommand.status == "pending")
                    .order_by(EngineCommand.created_at, EngineCommand.id)
                    .limit(50)
                )
            )

    async def run_command(self, command_id: int) -> bool:
        """Claim one command and run it; False when it was not pending."""
        claimed = await asyncio.to_thread(self._claim, command_id)
        if claimed is None:
            return False
        user_id, payload = claimed
        status, error = "done", None
        outcome: dict[str, Any] = {}
        try:
            result, outcome = await asyncio.to_thread(self._perform, command_id, user_id, payload)
            self._after(result)
        except KillSwitchError as exc:
            status, error = "failed", str(exc)
        except SQLAlchemyError as exc:
            # Every action is idempotent: back to pending for the next poll.
            log.warning("kill switch command %s: database error: %s", command_id, str(exc).splitlines()[0])
            await asyncio.to_thread(self._end, command_id, "pending", {}, str(exc).splitlines()[0])
            return True
        await asyncio.to_thread(self._end, command_id, status, outcome, error)
        return True

    def _claim(self, command_id: int) -> tuple[int, dict[str, Any]] | None:
        now = self.clock.now()
        with self.database.session() as session:
            if not claim_command(session, command_id, now):
                return None
            row = session.execute(
                select(EngineCommand.user_id, EngineCommand.payload).where(EngineCommand.id == command_id)
            ).one()
            return row.user_id, row.payload if isinstance(row.payload, dict) else {}

    def _end(self, command_id: int, status: str, result: dict[str, Any], error: str | None) -> None:
        now = self.clock.now()
        values: dict[str, Any] = {"status": status, "updated_at": now, "result": result or None}
        values["error"] = error[:MAX_ERROR] if error else None
        if status == "pending":
            values["started_at"] = None
        else:
            values["finished_at"] = now
        with self.database.session() as session:
            session.execute(
                update(EngineCommand)
                .where(EngineCommand.id == command_id, EngineCommand.status == "running")
                .values(**values)
                .execution_options(synchronize_session=False)
            )

    def _perform(
        self, command_id: int, user_id: int, payload: dict[str, Any]
    ) -> tuple[TripResult, dict[str, Any]]:
        action = payload.get("action")
        if action not in ACTIONS:
            raise KillSwitchError(f"unknown kill switch action {action!r}")
        with self.database.session_factory() as session:
            user = session.get(User, user_id)
            who = user.username if user is not None else f"user {user_id}"
            accounts = list(
                session.scalars(
                    select(TradingAccount.id)
                    .where(TradingAccount.user_id == user_id, TradingAccount.archived_at.is_(None))
                    .order_by(TradingAccount.id)
                )
            )
        if action in ("trip", "reset"):
            account_id = payload.get("account_id")
            if not isinstance(account_id, int) or isinstance(account_id, bool) or account_id not in accounts:
                raise KillSwitchError(f"account {account_id!r} not found")
            accounts = [account_id]
        if action == "reset" or action == "reset_all":
            result = self._reset_accounts(accounts, user_id, who)
            return result, {"action": action, "reset": result.accounts}
        text = payload.get("reason")
        reason = f"tripped by {who}" if action == "trip" else f"flatten everything and stop, by {who}"
        if isinstance(text, str) and text.strip():
            reason = f"{reason}: {text.strip()[:200]}"
        result = self._trip_accounts(accounts, user_id, reason, None, command_id, True)
        return result, {"action": action, "tripped": result.accounts, "exit_commands": result.command_ids}


def pnl_source(components: Iterable[object]) -> OpenPnlSource | None:
    """The engine's risk engine (the component named ``risk``) among ``components``, or None."""
    for component in components:
        if getattr(component, "name", None) == "risk" and isinstance(component, OpenPnlSource):
            return component
    return None


def queue_command(
    session: Session, *, user_id: int, action: Action, token: str, account_id: int | None = None
) -> EngineCommand:
    """Queue one ``kill_switch`` command (the caller commits). The same ``token`` twice is an
    IntegrityError (a double submit is one command). Raises ValueError for an action without the
    account it needs."""
    if action not in ACTIONS:
        raise ValueError(f"unknown kill switch action {action!r}")
    payload: dict[str, Any] = {"action": action}
    if action in ("trip", "reset"):
        if account_id is None:
            raise ValueError(f"{action} needs an account_id")
        payload["account_id"] = account_id
    command = EngineCommand(user_id=user_id, kind=KILL_SWITCH_COMMAND, payload=payload, token=token)
    session.add(command)
    session.flush()
    return command


def tripped_at_ist(account: TradingAccount) -> datetime | None:
    """When the account's kill switch tripped, in IST (for pages)."""
    return None if account.kill_switch_at is None else ensure_aware(account.kill_switch_at).astimezone(IST)


__all__ = [
    "ACTIONS",
    "ALERT_KIND",
    "KILL_SWITCH_COMMAND",
    "REARMED_ACTION",
    "RESET_ACTION",
    "TRIPPED_ACTION",
    "DayPnl",
    "KillSwitch",
    "KillSwitchConfig",
    "OpenPnlSource",
    "day_bounds",
    "pnl_source",
    "queue_command",
    "realised_today",
    "tripped_at_ist",
]
