"""The order journal (DESIGN §3): the engine writes an intent before any order leaves it.

Three guarantees, each held by the database or by this module's structure rather than by care:

* **At most one send per intent key.** :meth:`Journal.record` inserts the ``order_intents`` row whose
  unique ``key`` (e.g. ``exec:{execution_id}:entry:{slice}``) names the order. A second attempt with the
  same key — a retry, a double click, a restart, two exit triggers in one tick — fails with
  :class:`IntentExistsError`, and only the caller that wrote the row may send. One broker order belongs
  to at most one intent (unique account + order id: :class:`OrderAlreadyAdoptedError`).
* **Forward only.** Every state change goes through the domain state machine
  (:mod:`algomirror.domain.order_state`), enforced on every ORM write of ``order_intents.state``.
* **Fenced.** Every journal write first checks, in its own transaction, that this engine's fencing epoch
  is still the database's (:func:`~algomirror.engine.fencing.check_fence`): an engine that lost its lock
  cannot record, and so cannot send, an order (:class:`~algomirror.engine.fencing.FencedOutError`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from algomirror.db.models import OrderIntent
from algomirror.db.session import Database
from algomirror.domain import order_state
from algomirror.domain.timeutil import Clock
from algomirror.engine.fencing import FencedOutError, check_fence


class IntentExistsError(Exception):
    """An intent with this key was already written: its writer owns the order. Do not send it again;
    look at the existing intent (``intent_id``, ``state``) instead."""

    def __init__(self, key: str, intent_id: int | None, state: str | None) -> None:
        super().__init__(f"intent {key!r} already exists (id {intent_id}, state {state})")
        self.key = key
        self.intent_id = intent_id
        self.state = state


class OrderAlreadyAdoptedError(Exception):
    """The broker order id is already recorded on another intent of the account: two intents can never
    own one order. Halt the account's reconciliation and alert; never retry."""


class IntentNotFoundError(LookupError):
    """No intent with that id."""


@dataclass(frozen=True, slots=True)
class IntentSpec:
    """What will be sent: quantities in units (lots × lot size), prices in rupees (None for MARKET)."""

    key: str
    account_id: int
    symbol: str
    exchange: str
    product: str
    side: str
    quantity: int
    order_type: str = "MARKET"
    price: Decimal | None = None
    trigger_price: Decimal | None = None
    strategy_tag: str | None = None
    execution_id: int | None = None
    purpose: str = "entry"


@dataclass(frozen=True, slots=True)
class IntentView:
    """An intent as stored after a journal write."""

    id: int
    key: str
    state: str
    order_id: str | None
    filled_quantity: int
    average_price: Decimal | None

    @classmethod
    def of(cls, row: OrderIntent) -> IntentView:
        return cls(row.id, row.key, row.state, row.order_id, row.filled_quantity, row.average_price)


class Journal:
    """The engine's only writer of ``order_intents``. ``epoch`` is the fencing epoch its lock took;
    ``clock`` stamps sent/acknowledged/finished times. Every method runs one short write transaction
    and raises :class:`~algomirror.engine.fencing.FencedOutError` once a newer engine has taken over."""

    def __init__(self, database: Database, *, epoch: int, clock: Clock) -> None:
        self.database = database
        self.epoch = epoch
        self.clock = clock

    def record(self, spec: IntentSpec) -> IntentView:
        """Write a new ``created`` intent. Raises :class:`IntentExistsError` when the key exists (then
        nothing is written and the caller must not send)."""
        try:
            with self.database.session() as session:
                check_fence(session, self.epoch)
                row = OrderIntent(
                    key=spec.key,
                    execution_id=spec.execution_id,
                    account_id=spec.account_id,
                    purpose=spec.purpose,
                    symbol=spec.symbol,
                    exchange=spec.exchange,
                    product=spec.product,
                    side=spec.side,
                    quantity=spec.quantity,
                    order_type=spec.order_type,
                    price=spec.price,
                    trigger_price=spec.trigger_price,
                    strategy_tag=spec.strategy_tag,
                    state=order_state.CREATED,
                )
                session.add(row)
                session.flush()
                return IntentView.of(row)
        except IntegrityError as exc:
            existing = self._by_key(spec.key)
            if existing is None:
                raise
            raise IntentExistsError(spec.key, existing.id, existing.state) from exc

    def claim_send(self, intent_id: int) -> bool:
        """Move a ``created`` intent to ``sent`` if it is still ``created``; True for the one caller
        whose update counted the row. Call right before the order leaves: only the winner may send, so
        two runs of one command (or a restarted engine) that both find the intent unsent cannot both
        send it. Raises :class:`~algomirror.engine.fencing.FencedOutError` once fenced out."""
        now = self.clock.now()
        with self.database.session() as session:
            check_fence(session, self.epoch)
            won = session.execute(
                update(OrderIntent)
                .where(OrderIntent.id == intent_id, OrderIntent.state == order_state.CREATED)
                .values(state=order_state.SENT, sent_at=now)
                .execution_options(synchronize_session=False)
            )
            return getattr(won, "rowcount", 0) == 1

    def advance(
        self,
        intent_id: int,
        state: str,
        *,
        order_id: str | None = None,
        filled_quantity: int | None = None,
        average_price: Decimal | None = None,
        rejection_reason: str | None = None,
    ) -> IntentView:
        """Move an intent to ``state`` (forward only) and record what the broker said.

        ``order_id`` adopts the broker's order (raises :class:`OrderAlreadyAdoptedError` if another
        intent of the account holds it); fills are the broker's figures. Raises
        :class:`~algomirror.domain.order_state.IllegalTransitionError` for a backward move,
        :class:`ConflictingFactsError` for a changed order id, a shrinking fill or a re-written final
        outcome, and :class:`IntentNotFoundError` for an unknown id.
        """
        now = self.clock.now()
        try:
            with self.database.session() as session:
                check_fence(session, self.epoch)
                row = session.get(OrderIntent, intent_id, with_for_update=True)
                if row is None:
                    raise IntentNotFoundError(f"no intent {intent_id}")
                _check_facts(row, state, order_id, filled_quantity, average_price)
                previous = row.state
                row.state = state
                if order_id is not None:
                    row.order_id = order_id
                if filled_quantity is not None:
                    row.filled_quantity = filled_quantity
                if average_price is not None:
                    row.average_price = average_price
                if rejection_reason is not None:
                    row.rejection_reason = rejection_reason
                if state != previous:
                    _stamp(row, state, now)
                session.flush()
                return IntentView.of(row)
        except IntegrityError as exc:
            if order_id is not None and _violates(exc, "uq_order_intents_account_order"):
                raise OrderAlreadyAdoptedError(
                    f"broker order {order_id} is already recorded on another intent of this account"
                ) from exc
            raise

    def unresolved(self, account_id: int) -> list[IntentView]:
        """The account's intents that may still have a live order (created, sent, acknowledged,
        unknown), oldest first: what reconciliation must resolve before anything is re-sent."""
        with self.database.session() as session:
            rows = session.scalars(
                select(OrderIntent)
                .where(
                    OrderIntent.account_id == account_id,
                    OrderIntent.state.in_(sorted(order_state.UNRESOLVED_STATES)),
                )
                .order_by(OrderIntent.id)
            ).all()
            return [IntentView.of(r) for r in rows]

    def _by_key(self, key: str) -> IntentView | None:
        with self.database.session() as session:
            row = session.scalar(select(OrderIntent).where(OrderIntent.key == key))
            return None if row is None else IntentView.of(row)


class ConflictingFactsError(ValueError):
    """A journal write contradicts what the intent already records: a different broker order id, a
    smaller fill, or a changed outcome of a finished intent. The broker's word is being misread
    somewhere: halt the account's order handling and alert; never retry."""


def _check_facts(
    row: OrderIntent,
    state: str,
    order_id: str | None,
    filled_quantity: int | None,
    average_price: Decimal | None,
) -> None:
    """Facts only accumulate: an adopted order id never changes, a fill never shrinks, and a finished
    intent may only be re-written with what it already says."""
    if order_id is not None and row.order_id is not None and order_id != row.order_id:
        raise ConflictingFactsError(f"intent {row.id} owns broker order {row.order_id}, not {order_id}")
    if filled_quantity is not None and filled_quantity < row.filled_quantity:
        raise ConflictingFactsError(
            f"intent {row.id} fill cannot shrink from {row.filled_quantity} to {filled_quantity}"
        )
    if row.state in order_state.TERMINAL_STATES:
        changed = (filled_quantity is not None and filled_quantity != row.filled_quantity) or (
            average_price is not None and average_price != row.average_price
        )
        if changed:
            raise ConflictingFactsError(f"intent {row.id} is {row.state}; its fills are final")


def _violates(exc: IntegrityError, constraint: str) -> bool:
    """True when ``exc`` was raised by ``constraint`` (by name on PostgreSQL; SQLite names the columns)."""
    diag = getattr(exc.orig, "diag", None)
    name = getattr(diag, "constraint_name", None)
    if name is not None:
        return bool(name == constraint)
    return "order_intents.account_id, order_intents.order_id" in str(exc.orig)


def _stamp(row: OrderIntent, state: str, now: datetime) -> None:
    if state == order_state.SENT:
        row.sent_at = now
    elif state == order_state.ACKNOWLEDGED:
        row.acknowledged_at = now
    elif state in order_state.TERMINAL_STATES:
        row.finished_at = now


__all__ = [
    "ConflictingFactsError",
    "FencedOutError",
    "IntentExistsError",
    "IntentNotFoundError",
    "IntentSpec",
    "IntentView",
    "Journal",
    "OrderAlreadyAdoptedError",
]
