"""The engine's command processor: runs what the web asked for through ``engine_commands``.

The web never calls a broker for a trading action. It inserts an ``engine_commands`` row (``kind``,
``payload``, a unique ``token`` so a double submit is one command) and returns; this component picks the
row up, runs it through the engine-wide broker client registry and ends it ``done`` or ``failed``.

* **Polling.** Pending rows are looked up every ``poll_seconds`` (a database wake-up is later work).
* **Claiming.** ``UPDATE engine_commands SET status='running' … WHERE id=? AND status='pending'``: the
  processor whose update counts one row runs the command; any other sees zero rows and skips it, so two
  processors can never both run one command.
* **Outcome.** ``done`` with ``result`` (what the broker reports), or ``failed`` with ``error`` (the
  broker's message, or ours). Errors are classified by what to do: retryable (nothing reached the broker,
  or we cannot tell and the order is still working) returns the row to ``pending`` for another attempt,
  at most ``max_attempts`` in all, then ``failed``; a broker refusal ends it with the broker's message;
  a rejected API key (halt) fails it with a message saying to fix the key. While a command waits for
  another attempt its ``result`` holds ``{"attempts": n}`` and ``error`` the last failure.
* **Restart.** A row left ``running`` by an engine that died is returned to ``pending`` when the
  processor starts (the single-instance engine lock means no live engine is running it) and counts as
  an attempt. That is safe for every kind handled here, see :meth:`CommandProcessor.recover`.

``cancel_order`` (payload ``account_id``, ``order_id`` = broker id, ``order_pk`` = ``orders.id``): the
account must belong to the command's user and the order to the account. The cancel is sent, then the
order's real state is read with ``orderstatus`` and written to the ``orders`` row, forward only (a
slow reply never undoes a terminal state or a larger fill the account sync stored meanwhile); the cancel
acknowledgement itself never changes the row (a broker acknowledges a cancel that the exchange then
finds too late: the order filled). If that read fails the row is left for the account sync.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from algomirror.broker import wire
from algomirror.broker.client import OpenAlgoClient
from algomirror.broker.errors import (
    AuthError,
    BrokerError,
    HaltError,
    OrdersSuspendedError,
    RejectedError,
    RetryableError,
    UnknownOutcomeError,
)
from algomirror.broker.registry import ClientRegistry, Priority
from algomirror.db.models import ActivityLog, EngineCommand, Order, TradingAccount
from algomirror.db.session import Database
from algomirror.domain.timeutil import Clock, SystemClock
from algomirror.engine.book_mirror import forward_fields
from algomirror.engine.command_rows import (
    MAX_ERROR,
    InFlight,
    attempts_of,
    claim_command,
    end_values,
    pause,
    rowcount,
)
from algomirror.host_settings import load_host_policy

log = logging.getLogger(__name__)

CANCEL_ORDER = "cancel_order"
# Kinds another component claims (entries: engine/execution.py, exits: engine/exits.py, preview and
# execute of a strategy: engine/resolution.py); left be here.
OTHER_COMPONENT_KINDS = (
    "execute_run",
    "exit",
    "preview_strategy",
    "execute_strategy",
    "mirror_order",
    "kill_switch",  # engine/kill_switch.py
)
# The strategy tag sent with a cancel of an order that carries none (orders placed outside AlgoMirror).
CANCEL_STRATEGY_TAG = "AlgoMirror"


@dataclass(frozen=True, slots=True)
class CommandConfig:
    """Seconds unless noted.

    ``poll_seconds``: how often pending rows are looked for. ``batch``: rows claimed per poll (count).
    ``max_attempts``: runs of one command before a retryable failure becomes ``failed`` (count).
    ``retry_delay``: wait before a command returned to pending is tried again (doubles per attempt,
    capped at ``retry_cap``). ``confirm_seconds``/``confirm_interval``: after an acknowledged cancel,
    how long and how often ``orderstatus`` is read again while the broker still reports the order
    working (brokers confirm a cancel asynchronously).
    """

    poll_seconds: float = 0.3
    batch: int = 20
    max_attempts: int = 5
    retry_delay: float = 1.0
    retry_cap: float = 30.0
    confirm_seconds: float = 3.0
    confirm_interval: float = 0.5


@dataclass(frozen=True, slots=True)
class Claimed:
    """A command this processor won the claim for."""

    id: int
    user_id: int
    kind: str
    payload: dict[str, Any]
    attempts: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a run ended: ``done``/``failed`` are final; ``retry`` returns the row to ``pending``."""

    status: Literal["done", "failed", "retry"]
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True, slots=True)
class _CancelTarget:
    account_id: int
    account_name: str
    host_url: str
    api_key_encrypted: str
    order_pk: int
    order_id: str
    strategy: str


class CommandError(Exception):
    """A command that cannot run as given (bad payload, someone else's account, missing order)."""


class CommandProcessor:
    """The engine component that executes ``engine_commands`` rows. See the module docstring.

    ``registry`` is the engine-wide client registry: the account's client, its rate scheduler (a cancel
    waits with EXIT priority: it never adds risk) and the engine-wide order suspension. It is closed
    here only when ``owns_registry`` and the engine stops. ``decrypt`` turns ``api_key_encrypted`` into
    the key (raises ValueError when it cannot). ``clock`` stamps ``started_at``/``finished_at``/
    ``updated_at`` and the activity log. Tests drive it with :meth:`recover`, :meth:`process_once` and
    :meth:`run_command`.
    """

    name = "commands"

    def __init__(
        self,
        database: Database,
        registry: ClientRegistry,
        decrypt: Callable[[str], str],
        *,
        clock: Clock | None = None,
        config: CommandConfig | None = None,
        owns_registry: bool = False,
    ) -> None:
        self.database = database
        self.registry = registry
        self.owns_registry = owns_registry
        self.config = config or CommandConfig()
        self.clock = clock or SystemClock()
        self._decrypt = decrypt
        self._not_before: dict[int, float] = {}  # command id -> monotonic time of its next attempt
        self._in_flight = InFlight()
        self.ran = 0  # commands this processor claimed and ran (tests, diagnostics)

    # ------------------------------------------------------------------------------- lifecycle

    async def run(self, stop: asyncio.Event) -> None:
        """Recover commands a dead engine left ``running``, then poll until ``stop`` is set. Commands
        in flight when stopping are awaited (a cancelled broker call would leave them ``running``)."""
        try:
            await asyncio.to_thread(self.recover)
            while not stop.is_set():
                try:
                    self._start_due(await asyncio.to_thread(self._due_ids))
                except SQLAlchemyError as exc:
                    log.warning("commands: database error: %s", str(exc).splitlines()[0])
                await pause(stop, self.config.poll_seconds)
        finally:
            await self._in_flight.drain()
            # Not after a crash: the supervisor restarts run() and the registry must still work.
            if self.owns_registry and stop.is_set():
                await self.registry.aclose()

    def _start_due(self, ids: list[int]) -> None:
        for command_id in ids:
            if command_id not in self._in_flight:
                self._in_flight.start(command_id, self._run_logged(command_id), name=f"command-{command_id}")

    async def _run_logged(self, command_id: int) -> bool:
        try:
            return await self.run_command(command_id)
        except SQLAlchemyError as exc:
            # The row stays as it was (pending, or running until the next start recovers it).
            log.warning("command %s: database error: %s", command_id, str(exc).splitlines()[0])
            return False

    def recover(self) -> int:
        """Return every ``running`` row to ``pending`` (one more attempt counted; ``failed`` when the
        attempts are used up). Call only while holding the engine lock: then no live processor runs
        them. Returns how many rows were recovered.

        Re-running is safe for ``cancel_order``: a second cancel of an order the first one cancelled,
        or of one that filled meanwhile, is refused by the broker and changes nothing; the order's state
        is written only from ``orderstatus``; a cancel never creates an order or a position.
        """
        now = self.clock.now()
        recovered = 0
        with self.database.session() as session:
            rows = session.execute(
                select(EngineCommand.id, EngineCommand.result).where(
                    EngineCommand.status == "running", EngineCommand.kind.notin_(OTHER_COMPONENT_KINDS)
                )
            ).all()
            for command_id, result in rows:
                attempts = attempts_of(result) + 1
                values: dict[str, Any]
                if attempts >= self.config.max_attempts:
                    values = {
                        "status": "failed",
                        "error": f"the engine stopped while running this command ({attempts} attempts)",
                        "finished_at": now,
                    }
                else:
                    values = {
                        "status": "pending",
                        "result": {"attempts": attempts},
                        "error": "the engine stopped while running this command; it is run again",
                        "started_at": None,
                    }
                done = session.execute(
                    update(EngineCommand)
                    .where(EngineCommand.id == command_id, EngineCommand.status == "running")
                    .values(updated_at=now, **values)
                    .execution_options(synchronize_session=False)
                )
                recovered += rowcount(done)
        if recovered:
            log.warning("commands: %d command(s) left running by a stopped engine recovered", recovered)
        return recovered

    # ---------------------------------------------------------------------------------- polling

    async def process_once(self) -> int:
        """Claim and run every due pending command now (concurrently); returns how many this processor
        ran. Raises SQLAlchemyError when the database cannot be read."""
        ids = await asyncio.to_thread(self._due_ids)
        ran = await asyncio.gather(*(self.run_command(i) for i in ids))
        return sum(ran)

    def _due_ids(self) -> list[int]:
        limit = self.config.batch + len(self._not_before)
        with self.database.session() as session:
            ids = session.scalars(
                select(EngineCommand.id)
                .where(EngineCommand.status == "pending", EngineCommand.kind.notin_(OTHER_COMPONENT_KINDS))
                .order_by(EngineCommand.created_at, EngineCommand.id)
                .limit(limit)
            ).all()
        if len(ids) < limit:  # every pending row was listed: forget delays of rows that ended elsewhere
            pending = set(ids)
            for waiting in [i for i in self._not_before if i not in pending]:
                del self._not_before[waiting]
        now = time.monotonic()
        due = [i for i in ids if self._not_before.get(i, 0.0) <= now]
        return due[: self.config.batch]

    async def run_command(self, command_id: int) -> bool:
        """Claim one command and run it to its outcome. False when it was not pending (another
        processor claimed it, or it already ended). Raises SQLAlchemyError for database failures."""
        claimed = await asyncio.to_thread(self._claim, command_id)
        if claimed is None:
            return False
        self.ran += 1
        self._not_before.pop(command_id, None)
        try:
            outcome = await self._execute(claimed)
        except SQLAlchemyError as exc:
            # Repeating a command is safe (see recover); a database hiccup must not strand it running.
            outcome = Outcome("retry", error=f"database error: {str(exc).splitlines()[0]}")
        except Exception as exc:  # a bug must end the command visibly, not leave it running
            log.exception("command %s (%s) crashed", command_id, claimed.kind)
            outcome = Outcome("failed", error=f"internal error ({type(exc).__name__}); see the engine log")
        await asyncio.to_thread(self._end, claimed, outcome)
        return True

    def _claim(self, command_id: int) -> Claimed | None:
        now = self.clock.now()
        with self.database.session() as session:
            if not claim_command(session, command_id, now):
                return None
            row = session.execute(
                select(
                    EngineCommand.user_id, EngineCommand.kind, EngineCommand.payload, EngineCommand.result
                ).where(EngineCommand.id == command_id)
            ).one()
            payload = row.payload if isinstance(row.payload, dict) else {}
            return Claimed(command_id, row.user_id, row.kind, payload, attempts_of(row.result))

    def _end(self, claimed: Claimed, outcome: Outcome) -> None:
        now = self.clock.now()
        attempts = claimed.attempts + 1
        values = end_values(
            outcome.status,
            result=outcome.result,
            error=outcome.error,
            attempts=attempts,
            max_attempts=self.config.max_attempts,
            now=now,
        )
        if values["status"] == "pending":
            delay = min(self.config.retry_cap, self.config.retry_delay * 2 ** (attempts - 1))
            self._not_before[claimed.id] = time.monotonic() + delay
            log.info(
                "command %s (%s): attempt %d failed, retrying: %s",
                claimed.id,
                claimed.kind,
                attempts,
                outcome.error,
            )
        with self.database.session() as session:
            ended = session.execute(
                update(EngineCommand)
                .where(EngineCommand.id == claimed.id, EngineCommand.status == "running")
                .values(updated_at=now, **values)
                .execution_options(synchronize_session=False)
            )
            if rowcount(ended) != 1:
                # Someone changed the row meanwhile (an operator ended it by hand): theirs stands.
                self._not_before.pop(claimed.id, None)
                log.warning("command %s: no longer running when it ended; outcome not recorded", claimed.id)
                return
            if values["status"] != "pending" and claimed.kind == CANCEL_ORDER:
                self._log_cancel_outcome(session, claimed, values, now)
        if values["status"] == "failed":
            log.warning("command %s (%s) failed: %s", claimed.id, claimed.kind, values["error"])

    # -------------------------------------------------------------------------------- execution

    async def _execute(self, claimed: Claimed) -> Outcome:
        if claimed.kind == CANCEL_ORDER:
            try:
                return await self._cancel_order(claimed)
            except CommandError as exc:
                return Outcome("failed", error=str(exc))
        return Outcome("failed", error=f"unknown command kind {claimed.kind!r}")

    async def _cancel_order(self, claimed: Claimed) -> Outcome:
        target = await asyncio.to_thread(self._cancel_target, claimed)
        client = self._client(target)
        cancel: Literal["acknowledged", "refused", "unknown"]
        try:
            ack = await client.cancel_order(target.order_id, strategy=target.strategy, priority=Priority.EXIT)
            cancel, cancel_message = "acknowledged", ack.message
        except OrdersSuspendedError as exc:
            # Nothing was sent; this engine is stopping (lock lost) or paused order calls.
            return Outcome("retry", error=f"cancel not sent: {exc.message}")
        except AuthError as exc:
            return Outcome(
                "failed",
                error=f"the broker rejected the account's API key ({exc.message}); nothing was cancelled. "
                "Check the account's key and the broker login, then try again.",
            )
        except HaltError as exc:
            return Outcome("failed", error=f"calls to this account are halted: {exc.message}")
        except RejectedError as exc:
            cancel, cancel_message = "refused", exc.message
        except UnknownOutcomeError as exc:
            cancel, cancel_message = "unknown", exc.message
        except RetryableError as exc:
            return Outcome("retry", error=f"cancel not sent: {exc.message}")
        state, read_error = await self._broker_state(client, target, wait=cancel == "acknowledged")
        result: dict[str, Any] = {"cancel": cancel, "cancel_message": cancel_message}
        if state is not None:
            await asyncio.to_thread(self._store_state, target, state)
            result.update(_state_result(state))
        if cancel == "acknowledged":
            if state is None:
                result["note"] = (
                    f"The broker acknowledged the cancel; its order status could not be read "
                    f"({read_error}). The next sync shows it."
                )
            elif state.status.is_working:
                result["note"] = (
                    "The broker acknowledged the cancel but still reports the order working; "
                    "the next sync shows its final status."
                )
            return Outcome("done", result)
        if state is not None and state.status.is_terminal:
            # Refused (or lost) because the order had already ended: the broker's state is the answer.
            return Outcome("done", result)
        if cancel == "refused":
            return Outcome("failed", result, error=cancel_message)
        return Outcome("retry", result, error=f"cancel outcome unknown: {cancel_message}")

    def _client(self, target: _CancelTarget) -> OpenAlgoClient:
        try:
            api_key = self._decrypt(target.api_key_encrypted)
        except ValueError:
            raise CommandError(
                "the account's stored API key cannot be read; save the key again on the account page"
            ) from None
        try:
            return self.registry.client(target.account_id, target.host_url, api_key, name=target.account_name)
        except ValueError as exc:  # RuntimeError (registry closed) is the engine stopping: not ours
            raise CommandError(f"the account's host URL is invalid: {exc}") from None

    async def _broker_state(
        self, client: OpenAlgoClient, target: _CancelTarget, *, wait: bool
    ) -> tuple[wire.BrokerOrder | None, str]:
        """The order's state from ``orderstatus`` (None and the error text when it cannot be read). With
        ``wait``, read again while the order is still working, up to ``confirm_seconds``."""
        deadline = time.monotonic() + self.config.confirm_seconds
        while True:
            try:
                state = await client.order_status(target.order_id, strategy=target.strategy)
            except BrokerError as exc:
                return None, exc.message
            if not wait or not state.status.is_working or time.monotonic() >= deadline:
                return state, ""
            await asyncio.sleep(self.config.confirm_interval)

    # ----------------------------------------------------------------------------------- database

    def _cancel_target(self, claimed: Claimed) -> _CancelTarget:
        payload = claimed.payload
        account_id, order_id, order_pk = (payload.get(k) for k in ("account_id", "order_id", "order_pk"))
        if not isinstance(account_id, int) or not isinstance(order_pk, int) or not isinstance(order_id, str):
            raise CommandError("malformed cancel_order payload (account_id, order_id, order_pk)")
        with self.database.session() as session:
            # The allow-list of hosts as of this read: the client built from this row obeys it.
            self.registry.set_host_policy(load_host_policy(session))
            account = session.scalar(
                select(TradingAccount).where(
                    TradingAccount.id == account_id, TradingAccount.user_id == claimed.user_id
                )
            )
            if account is None:
                raise CommandError(f"account {account_id} not found")
            order = session.scalar(select(Order).where(Order.id == order_pk, Order.account_id == account.id))
            if order is None or order.order_id != order_id:
                raise CommandError(f"order {order_id} not found on account {account.account_name}")
            if not account.api_key_encrypted:
                raise CommandError("the account has no API key; edit the account to add one")
            return _CancelTarget(
                account_id=account.id,
                account_name=account.account_name,
                host_url=account.host_url,
                api_key_encrypted=account.api_key_encrypted,
                order_pk=order.id,
                order_id=order.order_id,
                strategy=order.strategy or CANCEL_STRATEGY_TAG,
            )

    def _store_state(self, target: _CancelTarget, state: wire.BrokerOrder) -> None:
        """Write the broker's reported state to our order row, forward only (see :func:`forward_fields`).

        The row is read ``FOR UPDATE`` (PostgreSQL; on SQLite the write transaction begins IMMEDIATE),
        so the account sync cannot write between our check and our write: a slow ``orderstatus``
        reply never undoes a ``complete`` the sync stored meanwhile.
        """
        now = self.clock.now()
        with self.database.session() as session:
            row = session.scalar(
                select(Order)
                .where(Order.id == target.order_pk, Order.account_id == target.account_id)
                .with_for_update()
            )
            if row is None or row.order_id != target.order_id:
                return  # archived or replaced while the cancel was in flight
            changes = forward_fields(row, state)
            if changes is None:
                log.info(
                    "order %s: orderstatus reply (%s, filled %s) is older than our row (%s, filled %s); "
                    "row kept",
                    target.order_id,
                    state.status.value,
                    state.filled_quantity,
                    row.status,
                    row.filled_quantity,
                )
                return
            for name, value in changes.items():
                setattr(row, name, value)
            row.updated_at = now

    def _log_cancel_outcome(
        self, session: Session, claimed: Claimed, values: dict[str, Any], now: datetime
    ) -> None:
        result = values.get("result") or {}
        broker_status = result.get("broker_status")
        order_id = claimed.payload.get("order_id")
        account_id = claimed.payload.get("account_id")
        if not isinstance(account_id, int) or session.get(TradingAccount, account_id) is None:
            account_id = None  # the log row must not point at a deleted (or made-up) account
        if values["status"] == "done" and broker_status == "cancelled":
            action, details = "order_cancelled", f"order {order_id}: cancelled (broker confirmed)"
        elif values["status"] == "done":
            action = "order_cancel_failed"
            details = f"order {order_id}: not cancelled, the broker reports it {broker_status or 'unknown'}"
            if result.get("note"):
                details += f" ({result['note']})"
        else:
            action, details = "order_cancel_failed", f"order {order_id}: {values['error']}"
        session.add(
            ActivityLog(
                user_id=claimed.user_id,
                account_id=account_id,
                action=action,
                details=details[:MAX_ERROR],
                timestamp=now,
            )
        )


def _state_result(state: wire.BrokerOrder) -> dict[str, Any]:
    return {
        "broker_status": state.status.value,
        "filled_quantity": state.filled_quantity,
        "average_price": None if state.average_price is None else str(state.average_price),
        "rejection_reason": state.rejection_reason or None,
    }


__all__ = [
    "CANCEL_ORDER",
    "CommandConfig",
    "CommandProcessor",
    "Outcome",
    "forward_fields",
]
