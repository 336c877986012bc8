"""The exit path's database side (PRODUCT §5.10, §6.7): which executions an ``exit`` command covers,
the one-owner claim, and what an exit attempt's outcome writes.

* :func:`claim_exit` — ``active → exiting`` (or, for a person's retry, ``error → exiting``) by a
  conditional UPDATE that also numbers the attempt: only one caller's update counts the row, so an open
  leg gets one exit owner. The attempt number is part of every exit intent's key
  (``exec:{id}:exit:{n}:{slice}``), so a retry of the same attempt re-finds its intents and cannot write
  new ones.
* :func:`finish_attempt` — once every slice of attempt ``n`` is terminal: fills from *all* exit intents
  of the execution (every attempt, also an entry unwind's), ``exited`` when they cover the filled
  quantity, else ``failed``: the execution **stays** ``exiting`` (still owned) with the broker's reason,
  for the owner to verify and retry.
* :func:`claim_first_exits` — a command's first attempt at many executions in ONE fenced transaction:
  every ``active`` execution that never had an exit intent is claimed ``active → exiting`` (attempt 1)
  by one conditional UPDATE (the rows it counted are the caller's, and no one else's), and the
  attempt-1 intents of every claimed execution are written and their sends claimed (``created →
  sent``) with :meth:`~algomirror.engine.journal.Journal.record_and_claim_on`, committed before any
  order leaves.
* :func:`next_attempt` — ``exiting`` attempt ``n`` → ``n + 1``, one winner (the owner's retry).
* :func:`mark_error` — the last attempt of a round failed, or the outcome cannot be established:
  ``error``, a critical ``exit_failed`` alert, the run shows ``error``.
* :func:`confirm_closed_outside` — a person says an ``error`` leg was closed outside AlgoMirror at a
  price: ``exited`` with ``closed_externally`` and the P&L from that price.
* :func:`close_runs` — a run whose executions are all exited (or failed) ends ``closed``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from algomirror.db.models import (
    OrderIntent,
    Strategy,
    StrategyExecution,
    StrategyLeg,
    StrategyRun,
    TradingAccount,
)
from algomirror.db.session import Database
from algomirror.domain import order_state
from algomirror.domain.timeutil import ensure_aware
from algomirror.engine.alerts import raise_alert
from algomirror.engine.command_rows import MAX_ERROR, rowcount
from algomirror.engine.fencing import check_fence_on
from algomirror.engine.journal import ClaimedIntent, IntentSpec, Journal
from algomirror.engine.order_driver import IntentRow

_AVERAGE = Decimal("0.0001")
_PNL = Decimal("0.01")
# Executions an exit may still have to do something about (a pending one: cancel its working entries).
OPEN_STATUSES = ("pending", "active", "exiting")
# Attempts per round (PRODUCT §6.7: 5 attempts → error). A person's retry from ``error`` starts the
# next round, so attempt numbers of one round are ``k·R + 1 … (k + 1)·R``.
ROUND = 5
EXIT_FAILED = "exit_failed"


@dataclass(frozen=True, slots=True)
class ExitState:
    """The exit-related facts of one execution, read when the command starts."""

    execution_id: int
    run_id: int
    status: str
    filled_quantity: int
    exited_quantity: int
    attempt: int

    @property
    def open_quantity(self) -> int:
        return max(self.filled_quantity - self.exited_quantity, 0)


# The columns of an ExitState, in its fields' order.
_STATE_COLUMNS = (
    StrategyExecution.id,
    StrategyExecution.run_id,
    StrategyExecution.status,
    StrategyExecution.filled_quantity,
    StrategyExecution.exited_quantity,
    StrategyExecution.exit_retry_count,
)


def _state_of(row: Any) -> ExitState:
    return ExitState(
        row.id, row.run_id, row.status, row.filled_quantity, row.exited_quantity, row.exit_retry_count
    )


def target_states(
    session: Session,
    user_id: int,
    *,
    scope: str,
    run_id: int | None = None,
    account_id: int | None = None,
    execution_id: int | None = None,
    with_errors: bool = False,
) -> list[ExitState]:
    """The user's open executions the scope covers (another user's ids select nothing); with
    ``with_errors`` also those in ``error`` (a person retries their exit)."""
    statuses = (*OPEN_STATUSES, "error") if with_errors else OPEN_STATUSES
    # Columns, not ORM objects: a run exit reads fifty executions or more before its first order.
    query = (
        select(*_STATE_COLUMNS)
        .join(Strategy, Strategy.id == StrategyExecution.strategy_id)
        .join(StrategyRun, StrategyRun.id == StrategyExecution.run_id)
        .where(Strategy.user_id == user_id, StrategyExecution.status.in_(statuses))
        .order_by(StrategyExecution.id)
    )
    if scope == "execution":
        query = query.where(StrategyExecution.id == execution_id)
    elif scope == "account":
        query = query.where(StrategyExecution.run_id == run_id, StrategyExecution.account_id == account_id)
    elif scope == "run":
        query = query.where(StrategyExecution.run_id == run_id)
    else:
        query = query.where(StrategyRun.ended_at.is_(None))
    return [_state_of(r) for r in session.execute(query)]


def stuck_shorts(session: Session, run_ids: Sequence[int], excluding: Sequence[int]) -> set[tuple[int, int]]:
    """The (run, account) pairs of ``run_ids`` that hold a short (a SELL leg) whose exit gave up
    (``error``) with units still open, other than the executions in ``excluding`` (the command's own
    targets). PRODUCT §6.7 step 4: such an account keeps its hedges open — an automatic exit that sold
    them would leave it naked short."""
    if not run_ids:
        return set()
    rows = session.execute(
        select(StrategyExecution.run_id, StrategyExecution.account_id)
        .join(StrategyLeg, StrategyLeg.id == StrategyExecution.leg_id)
        .where(
            StrategyExecution.run_id.in_(list(run_ids)),
            StrategyExecution.status == "error",
            StrategyExecution.filled_quantity > StrategyExecution.exited_quantity,
            StrategyLeg.action == "SELL",
            StrategyExecution.id.not_in(list(excluding)),
        )
    ).all()
    return {(r.run_id, r.account_id) for r in rows}


def read_state(database: Database, execution_id: int) -> ExitState | None:
    """One execution's exit facts as stored now."""
    with database.session_factory() as session:
        r = session.execute(select(*_STATE_COLUMNS).where(StrategyExecution.id == execution_id)).first()
        return None if r is None else _state_of(r)


def round_end(attempt: int, size: int = ROUND) -> int:
    """The last attempt number of ``attempt``'s round (5, 10, …): after it fails, ``error``."""
    return ((max(attempt, 1) - 1) // size + 1) * size


def claim_exit(
    database: Database,
    execution_id: int,
    reason: str,
    detail: str,
    *,
    from_error: bool = False,
    round_size: int = ROUND,
) -> int | None:
    """Claim the exit of an ``active`` execution with an open quantity; returns the new attempt number
    for the one caller whose UPDATE counted the row, else None (another owner, or nothing open).

    ``from_error`` (a person's "retry exit") also claims an ``error`` execution: its attempt number
    jumps to the first of the next round of ``round_size`` (after attempts 1–5 failed, the retry is 6),
    and its run stops showing ``error`` unless another of its executions still is."""
    with database.session() as session:
        current = session.execute(
            select(
                StrategyExecution.status, StrategyExecution.exit_retry_count, StrategyExecution.run_id
            ).where(StrategyExecution.id == execution_id)
        ).first()
        if current is None:
            return None
        status, count, run_id = str(current[0]), int(current[1]), int(current[2])
        if status == "active":
            attempt = count + 1
        elif status == "error" and from_error:
            attempt = round_end(count, round_size) + 1 if count else 1
        else:
            return None
        won = session.execute(
            update(StrategyExecution)
            .where(
                StrategyExecution.id == execution_id,
                StrategyExecution.status == status,
                StrategyExecution.exit_retry_count == count,
                StrategyExecution.filled_quantity > StrategyExecution.exited_quantity,
            )
            .values(
                status="exiting",
                exit_retry_count=attempt,
                exit_reason=reason,
                exit_reason_detail=detail[:MAX_ERROR],
                error_message=None,
            )
            .execution_options(synchronize_session=False)
        )
        if rowcount(won) != 1:
            return None
        if status == "error":
            sync_run_status(session, run_id)
        return attempt


_E = StrategyExecution
# The batched first claim's statements, built once (as the journal's hot path builds its own).
_FIRST_ROWS = (
    select(_E.id, _E.status, _E.exit_retry_count, _E.filled_quantity, _E.exited_quantity)
    .where(_E.id.in_(bindparam("ids", expanding=True)))
    .order_by(_E.id)
    .with_for_update()  # PostgreSQL: rows locked in id order (no deadlock between two batch claims)
)
_WITH_EXIT_INTENTS = (
    select(OrderIntent.execution_id)
    .where(OrderIntent.execution_id.in_(bindparam("ids", expanding=True)), OrderIntent.purpose == "exit")
    .distinct()
)
_CLAIM_FIRST = (
    update(_E)
    .where(
        _E.id.in_(bindparam("ids", expanding=True)),
        _E.status == "active",
        _E.exit_retry_count == 0,
        _E.filled_quantity > _E.exited_quantity,
    )
    .values(
        status="exiting",
        exit_retry_count=1,
        exit_reason=bindparam("reason"),
        exit_reason_detail=bindparam("detail"),
        error_message=None,
    )
    .returning(_E.id)
)


def claim_first_exits(
    journal: Journal,
    plans: Mapping[int, Callable[[int], list[IntentSpec]]],
    reason: str,
    detail: str,
) -> dict[int, list[ClaimedIntent]]:
    """The first exit attempt of many executions in ONE fenced write transaction (see the module
    docstring). ``plans`` maps an execution id to the specs of its attempt-1 slices for a given open
    quantity (units; the callable raises ValueError when nothing is sendable: that execution is not
    claimed here, the one-by-one path says why).

    Only an execution that is ``active`` with attempt count 0, has units open and has no exit intent
    at all (nothing of ours ever sent to close it, not even by an entry unwind) is claimed; every other
    one is left as it is for the one-by-one path. Returns, for each execution this caller claimed, its
    intents in slice order (all ``won``: created and claimed now, so this caller and only it sends
    them); a second caller finds those executions ``exiting`` and claims none of them.

    Raises :class:`~algomirror.engine.fencing.FencedOutError` once fenced out and IntegrityError when
    a concurrent writer inserted one of the keys first (PostgreSQL); nothing is written then."""
    if not plans:
        return {}
    ids = sorted(plans)
    with journal.database.session() as session:
        conn = session.connection()
        check_fence_on(conn, journal.epoch)
        rows = conn.execute(_FIRST_ROWS, {"ids": ids}).all()
        touched = set(conn.execute(_WITH_EXIT_INTENTS, {"ids": ids}).scalars())
        specs: dict[int, list[IntentSpec]] = {}
        for row in rows:
            units = int(row.filled_quantity) - int(row.exited_quantity)
            if row.id in touched or row.status != "active" or row.exit_retry_count != 0 or units <= 0:
                continue
            try:
                found = plans[row.id](units)
            except ValueError:
                continue
            if found:
                specs[row.id] = found
        if not specs:
            return {}
        params = {"ids": sorted(specs), "reason": reason, "detail": detail[:MAX_ERROR]}
        won = set(conn.execute(_CLAIM_FIRST, params).scalars())
        ordered = [spec for execution_id in sorted(won) for spec in specs[execution_id]]
        claimed = journal.record_and_claim_on(conn, ordered)
    by_key = {c.view.key: c for c in claimed}
    return {execution_id: [by_key[s.key] for s in specs[execution_id]] for execution_id in sorted(won)}


def next_attempt(database: Database, execution_id: int, attempt: int) -> int | None:
    """The owner's retry: ``exiting`` at attempt ``attempt`` → ``attempt + 1`` (one winner: None for
    every other caller, and when the execution has moved on)."""
    with database.session() as session:
        won = session.execute(
            update(StrategyExecution)
            .where(
                StrategyExecution.id == execution_id,
                StrategyExecution.status == "exiting",
                StrategyExecution.exit_retry_count == attempt,
                StrategyExecution.filled_quantity > StrategyExecution.exited_quantity,
            )
            .values(exit_retry_count=attempt + 1)
            .execution_options(synchronize_session=False)
        )
        return attempt + 1 if rowcount(won) == 1 else None


def sync_run_status(session: Session, run_id: int) -> None:
    """A run that is not over shows ``error`` while one of its executions is in ``error``, and goes
    back to ``active`` when none is any more (PRODUCT §5.10)."""
    run = session.get(StrategyRun, run_id, with_for_update=True)
    if run is None or run.ended_at is not None or run.status == "entering":
        return
    session.flush()
    errors = session.scalar(
        select(StrategyExecution.id)
        .where(StrategyExecution.run_id == run_id, StrategyExecution.status == "error")
        .limit(1)
    )
    if errors is not None:
        run.status = "error"
    elif run.status == "error":
        run.status = "active"


def mark_error(database: Database, execution_id: int, attempt: int | None, why: str, now: datetime) -> bool:
    """The exit of an ``exiting`` execution gave up: ``error`` with ``why`` (the broker's text), one
    critical ``exit_failed`` alert naming the leg, the account and the text, and the run shows
    ``error``. ``attempt`` (when given) must still be the execution's: False, nothing written, when
    the execution has moved on (another caller finished it)."""
    with database.session() as session:
        row = session.get(StrategyExecution, execution_id, with_for_update=True)
        if row is None or row.status != "exiting":
            return False
        if attempt is not None and row.exit_retry_count != attempt:
            return False
        # The run's row lock before the alert's insert: its foreign key takes a KEY SHARE lock on the run,
        # and two legs giving up at once (PostgreSQL) would each hold that and wait for the other's
        # FOR UPDATE in sync_run_status — a deadlock. Locked first, the second simply waits.
        session.get(StrategyRun, row.run_id, with_for_update=True)
        row.status = "error"
        row.error_message = why[:MAX_ERROR]
        leg = session.get(StrategyLeg, row.leg_id)
        account = session.get(TradingAccount, row.account_id)
        strategy = session.get(Strategy, row.strategy_id)
        assert strategy is not None  # a foreign key
        leg_name = f"leg {leg.leg_number} ({leg.action}) " if leg is not None else ""
        account_name = account.account_name if account is not None else f"account {row.account_id}"
        kept = ""
        if leg is not None and (leg.action or "").upper() == "SELL":
            # PRODUCT §6.7 step 4: an unclosable short keeps its account's hedges open; say which.
            hedges = session.scalars(
                select(StrategyExecution.symbol)
                .join(StrategyLeg, StrategyLeg.id == StrategyExecution.leg_id)
                .where(
                    StrategyExecution.run_id == row.run_id,
                    StrategyExecution.account_id == row.account_id,
                    StrategyExecution.status == "active",
                    StrategyLeg.action == "BUY",
                )
            ).all()
            if hedges:
                kept = f" Its hedge(s) on this account stay open: {', '.join(h or '?' for h in hedges)}."
        raise_alert(
            session,
            user_id=strategy.user_id,
            kind=EXIT_FAILED,
            severity="critical",
            title=f"Exit failed: {strategy.name} {leg_name}{row.symbol or ''} on {account_name}",
            details=(
                f"{why}{kept} The position may still be open at the broker: retry the exit, or confirm "
                "it closed outside AlgoMirror with its price."
            ),
            account_id=row.account_id,
            run_id=row.run_id,
            execution_id=row.id,
            now=now,
        )
        sync_run_status(session, row.run_id)
        return True


class ExitOrderWorkingError(ValueError):
    """A leg cannot be confirmed closed outside while an exit order of ours may still fill."""


def confirm_closed_outside(
    session: Session, *, user_id: int, execution_id: int, price: Decimal, now: datetime
) -> StrategyExecution:
    """A person confirms an ``error`` leg was closed outside AlgoMirror at ``price`` (₹ per unit):
    ``exited`` with ``exit_reason = closed_externally``, the exit price averaged with any exit fills we
    have (display only), realised P&L (₹, to the paisa, half up) from the parts — each part's price ×
    quantity, never the rounded average — and the run closed when nothing else is open (the caller commits).

    Raises LookupError for an execution that is not the user's, ValueError for a price that is not
    positive or an execution that is not in ``error``, :class:`ExitOrderWorkingError` (a ValueError
    naming the order ids) while an exit order of the execution may still be working at the broker."""
    if not isinstance(price, Decimal) or not price.is_finite() or price <= 0:
        raise ValueError("the price must be a positive amount")
    found = session.execute(
        select(StrategyExecution, StrategyLeg)
        .join(Strategy, Strategy.id == StrategyExecution.strategy_id)
        .join(StrategyLeg, StrategyLeg.id == StrategyExecution.leg_id)
        .where(StrategyExecution.id == execution_id, Strategy.user_id == user_id)
        .with_for_update(of=StrategyExecution)
    ).first()
    if found is None:
        raise LookupError(f"execution {execution_id} not found")
    row: StrategyExecution = found[0]
    leg: StrategyLeg = found[1]
    if row.status != "error":
        raise ValueError(f"only a leg in error can be confirmed closed outside (this one is {row.status})")
    # An exit order of ours that reached the broker and is not finished may still fill and reverse the
    # account with no record of it: refuse until it ends (a ``created`` intent never left).
    working = session.scalars(
        select(OrderIntent).where(
            OrderIntent.execution_id == row.id,
            OrderIntent.purpose == "exit",
            OrderIntent.state.in_((order_state.SENT, order_state.ACKNOWLEDGED, order_state.UNKNOWN)),
        )
    ).all()
    if working:
        ids = ", ".join(w.order_id or f"intent {w.id} (no order id yet)" for w in working)
        raise ExitOrderWorkingError(
            f"an exit order of ours is still working or unresolved ({ids}): it may still fill; cancel it "
            "at the broker or retry the exit, then confirm"
        )
    ours = row.exited_quantity if row.exit_price is not None else 0
    rest = max(row.filled_quantity - ours, 0)
    total = ours + rest
    # The exit value from its parts (our exit fills at their stored average, the rest at ``price``):
    # realised P&L comes from it, exactly; the 4-decimal average stored below is for display only
    # (a P&L recomputed from it can be off by paise on a large quantity).
    value = (row.exit_price or Decimal(0)) * ours + price * rest
    if total:
        row.exit_price = (value / total).quantize(_AVERAGE, rounding=ROUND_HALF_UP)
    else:
        row.exit_price = price
    row.exited_quantity = max(row.filled_quantity, row.exited_quantity)
    if row.entry_price is not None and total:
        sign = 1 if (leg.action or "").upper() == "BUY" else -1
        exact = sign * (value - row.entry_price * total)
        row.realized_pnl = exact.quantize(_PNL, rounding=ROUND_HALF_UP)
    row.status = "exited"
    row.exit_time = ensure_aware(now)
    row.exit_reason = "closed_externally"
    row.exit_reason_detail = f"confirmed closed outside AlgoMirror at {price} by the user"[:MAX_ERROR]
    row.error_message = None
    session.flush()
    sync_run_status(session, row.run_id)
    _close_run(session, row.run_id, "closed_externally", "legs closed outside AlgoMirror", now)
    return row


def exit_intents(database: Database, execution_id: int) -> list[IntentRow]:
    """Every exit intent of the execution (all attempts), oldest first."""
    with database.session_factory() as session:
        rows = session.scalars(
            select(OrderIntent)
            .where(OrderIntent.execution_id == execution_id, OrderIntent.purpose == "exit")
            .order_by(OrderIntent.id)
        ).all()
        return [IntentRow.of(r) for r in rows]


def owned_order_ids(database: Database, account_id: int) -> set[str]:
    """The account's broker order ids some intent (any purpose) already holds."""
    with database.session_factory() as session:
        ids = session.scalars(
            select(OrderIntent.order_id).where(
                OrderIntent.account_id == account_id, OrderIntent.order_id.is_not(None)
            )
        ).all()
        return {i for i in ids if i}


def attempt_prefix(execution_id: int, attempt: int) -> str:
    """The key prefix of exit attempt ``attempt``'s slices."""
    return f"exec:{execution_id}:exit:{attempt}:"


def _average(rows: Sequence[IntentRow]) -> Decimal | None:
    priced = [(r.average_price, r.filled_quantity) for r in rows if r.filled_quantity and r.average_price]
    units = sum(q for _, q in priced)
    if not units:
        return None
    total = sum((p * q for p, q in priced), Decimal(0))
    return (total / units).quantize(_AVERAGE, rounding=ROUND_HALF_UP)


ExitResult = Literal["exited", "failed", "open", "other"]


def finish_attempt(
    database: Database, execution_id: int, side: str, attempt: int, now: datetime
) -> ExitResult:
    """Write exit attempt ``attempt``'s outcome once all its slices, and every other attempt's order
    that reached the broker, are terminal (see the module docstring): ``exited``, or ``failed`` (left
    ``exiting`` for its owner's retry). ``open``: such an order is still unresolved (nothing but a note
    written); ``other``: the execution is no longer this attempt's
    (moved on or finished by another caller)."""
    every = exit_intents(database, execution_id)
    mine = [r for r in every if r.key.startswith(attempt_prefix(execution_id, attempt))]
    with database.session() as session:
        row = session.get(StrategyExecution, execution_id, with_for_update=True)
        if row is None or row.status != "exiting" or row.exit_retry_count != attempt:
            return "exited" if row is not None and row.status == "exited" else "other"
        # Any attempt's order that reached the broker and is unfinished may still fill (not only this
        # attempt's): nothing is decided until it ends. A ``created`` intent of another attempt never left.
        waiting = [r for r in every if not r.terminal and (r in mine or r.state != order_state.CREATED)]
        if waiting:
            states = ", ".join(sorted({r.state for r in waiting}))
            row.error_message = (
                f"exit: waiting for {len(waiting)} order(s) ({states}) to be resolved; nothing is re-sent"
            )
            return "open"
        exited = sum(r.filled_quantity for r in every if r.terminal)
        order_ids = [r.order_id for r in every if r.order_id]
        price = _average([r for r in every if r.terminal])
        row.exit_order_ids = order_ids or None
        row.exit_order_id = order_ids[0] if order_ids else None
        row.exited_quantity = exited
        row.exit_price = price
        if any(r.filled_quantity for r in mine) or (exited >= row.filled_quantity and row.exit_time is None):
            row.exit_time = now
        if price is not None and row.entry_price is not None and exited:
            sign = 1 if side == "BUY" else -1
            row.realized_pnl = ((price - row.entry_price) * exited * sign).quantize(Decimal("0.01"))
        if exited >= row.filled_quantity:
            row.status = "exited"
            row.error_message = None
            return "exited"
        # Still this owner's: the execution stays ``exiting`` (no other cause can claim it) while the
        # owner verifies at the broker and retries.
        row.error_message = attempt_failure(mine, attempt)
        return "failed"


def attempt_failure(mine: Sequence[IntentRow], attempt: int) -> str:
    """What a failed attempt says: its fills and the broker's reasons."""
    reasons = "; ".join(dict.fromkeys(r.rejection_reason for r in mine if r.rejection_reason))
    done = sum(r.filled_quantity for r in mine)
    return (
        f"exit attempt {attempt} filled {done} of {sum(r.quantity for r in mine)}: "
        f"{reasons or 'not filled'}; the position is still open"
    )[:MAX_ERROR]


def note(database: Database, execution_ids: Sequence[int], message: str, status: str | None = None) -> None:
    """Say on each execution why it was left as it is (only on those still in ``status`` if given: a
    row another caller has claimed meanwhile keeps its own story)."""
    with database.session() as session:
        for execution_id in execution_ids:
            row = session.get(StrategyExecution, execution_id, with_for_update=True)
            if row is not None and (status is None or row.status == status):
                row.error_message = message[:MAX_ERROR]


def close_runs(
    database: Database, run_ids: Sequence[int], reason: str, detail: str, now: datetime
) -> list[int]:
    """End every run of ``run_ids`` whose executions are all ``exited`` or ``failed`` (at least one
    exited) as ``closed``, with its realised P&L; returns the runs closed."""
    with database.session() as session:
        return [r for r in sorted(set(run_ids)) if _close_run(session, r, reason, detail, now)]


# What an exit writes on a hedge (BUY leg) it leaves open because a short of its account is not flat.
KEPT_HEDGE = "hedge kept open"


def kept_hedges(session: Session, run_id: int, account_id: int) -> list[ExitState]:
    """The ``active`` hedges of ``account_id`` in ``run_id`` that an earlier exit kept open for a short,
    once every short (SELL leg) of that account in the run is flat (``exited``, or ``failed`` with
    nothing open); empty while any short still holds units. PRODUCT §6.7 step 4: the exit that kept
    them meant to close them, so the exit that flattens the last short sells them."""
    legs = session.execute(
        select(StrategyExecution, StrategyLeg.action)
        .join(StrategyLeg, StrategyLeg.id == StrategyExecution.leg_id)
        .where(StrategyExecution.run_id == run_id, StrategyExecution.account_id == account_id)
        .order_by(StrategyExecution.id)
    ).all()
    shorts_flat = all(
        e.status == "exited" or (e.status == "failed" and e.filled_quantity <= e.exited_quantity)
        for e, action in legs
        if (action or "").upper() == "SELL"
    )
    if not shorts_flat:
        return []
    return [
        _state_of(e)
        for e, action in legs
        if (action or "").upper() == "BUY" and e.status == "active" and KEPT_HEDGE in (e.error_message or "")
    ]


def unclosed_runs(session: Session, user_id: int, *, execution_id: int | None = None) -> list[int]:
    """The user's runs that have not ended and are not entering (only ``execution_id``'s run when
    given): the candidates :func:`close_runs` may close."""
    query = (
        select(StrategyRun.id)
        .join(Strategy, Strategy.id == StrategyRun.strategy_id)
        .where(Strategy.user_id == user_id, StrategyRun.ended_at.is_(None), StrategyRun.status != "entering")
    )
    if execution_id is not None:
        query = query.where(
            StrategyRun.id.in_(select(StrategyExecution.run_id).where(StrategyExecution.id == execution_id))
        )
    return list(session.scalars(query.order_by(StrategyRun.id)))


def _close_run(session: Session, run_id: int, reason: str, detail: str, now: datetime) -> bool:
    run = session.get(StrategyRun, run_id, with_for_update=True)
    if run is None or run.ended_at is not None or run.status == "entering":
        return False
    rows = session.scalars(select(StrategyExecution).where(StrategyExecution.run_id == run_id)).all()
    statuses = {r.status for r in rows}
    if not statuses <= {"exited", "failed"} or "exited" not in statuses:
        return False
    run.status = "closed"
    run.ended_at = now
    run.exit_reason, run_detail = run_exit_reason(
        [(r.exit_reason, r.exit_time) for r in rows if r.status == "exited"], reason, detail
    )
    run.exit_reason_detail = run_detail[:MAX_ERROR]
    run.final_pnl = sum((r.realized_pnl or Decimal(0) for r in rows), Decimal(0))
    return True


_LATEST = datetime.max.replace(tzinfo=UTC)


def run_exit_reason(
    exited: Sequence[tuple[str | None, datetime | None]], closing: str, detail: str
) -> tuple[str, str]:
    """A closed run's exit reason and detail from its exited legs' (reason, exit time): the reason most
    of them carry (a tie goes to the reason whose first leg exited first), not merely that of the exit
    which happened to close the run — a max-loss exit of 49 accounts stays a max-loss run when a
    person's exit of the 50th finishes last. ``closing`` and ``detail`` are the closing exit's; its
    detail is kept when its reason is the run's, else the detail says both."""
    counts: dict[str, int] = {}
    first: dict[str, datetime] = {}
    for reason, at in exited:
        if not reason:
            continue
        counts[reason] = counts.get(reason, 0) + 1
        when = ensure_aware(at) if at is not None else _LATEST
        first[reason] = min(first.get(reason, _LATEST), when)
    if not counts:
        return closing, detail
    chosen = min(counts, key=lambda r: (-counts[r], first[r], r))
    if chosen == closing:
        return closing, detail
    legs = sum(counts.values())
    return chosen, f"{counts[chosen]} of {legs} legs exited for {chosen}; the last exit: {detail} ({closing})"


__all__ = [
    "EXIT_FAILED",
    "KEPT_HEDGE",
    "OPEN_STATUSES",
    "ROUND",
    "ExitOrderWorkingError",
    "ExitResult",
    "ExitState",
    "attempt_failure",
    "attempt_prefix",
    "claim_exit",
    "claim_first_exits",
    "close_runs",
    "confirm_closed_outside",
    "exit_intents",
    "finish_attempt",
    "kept_hedges",
    "mark_error",
    "next_attempt",
    "note",
    "owned_order_ids",
    "read_state",
    "round_end",
    "run_exit_reason",
    "stuck_shorts",
    "sync_run_status",
    "target_states",
    "unclosed_runs",
]
