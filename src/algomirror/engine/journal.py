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

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol, cast

from sqlalchemy import Connection, Table, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from algomirror.db.models import OrderIntent
from algomirror.db.session import Database
from algomirror.domain import order_state
from algomirror.domain.timeutil import Clock
from algomirror.engine.fencing import FencedOutError, check_fence, check_fence_on


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


@dataclass(frozen=True, slots=True)
class ClaimedIntent:
    """One intent of :meth:`Journal.record_and_claim`, as stored after it: ``won`` True when this
    caller wrote it (or found it still ``created``) and moved it to ``sent`` — then, and only then,
    the caller sends its order. ``rejection_reason`` is the stored one (None for a new intent)."""

    view: IntentView
    won: bool
    rejection_reason: str | None


@dataclass(frozen=True, slots=True)
class Advance:
    """One change of :meth:`Journal.advance_many`; the fields mean what :meth:`Journal.advance`'s
    arguments mean."""

    intent_id: int
    state: str
    order_id: str | None = None
    filled_quantity: int | None = None
    average_price: Decimal | None = None
    rejection_reason: str | None = None


_T = cast(Table, OrderIntent.__table__)
# The hot path's statements, built once (building a statement costs more than running it here).
_INTENT_COLUMNS = (
    _T.c.id,
    _T.c.key,
    _T.c.state,
    _T.c.order_id,
    _T.c.filled_quantity,
    _T.c.average_price,
    _T.c.rejection_reason,
    _T.c.acknowledged_at,
    _T.c.finished_at,
)
_BY_KEYS = select(*_INTENT_COLUMNS).where(_T.c.key.in_(bindparam("keys", expanding=True)))
_BY_IDS = select(*_INTENT_COLUMNS).where(_T.c.id.in_(bindparam("ids", expanding=True))).with_for_update()
_INSERT = insert(_T)
_CLAIM = (
    update(_T)
    .where(_T.c.key.in_(bindparam("keys", expanding=True)), _T.c.state == order_state.CREATED)
    .values(state=order_state.SENT, sent_at=bindparam("now"))
    .returning(_T.c.id, _T.c.key)
)
_ADVANCE = (
    update(_T)
    .where(_T.c.id == bindparam("b_id"))
    .values(
        state=bindparam("b_state"),
        order_id=bindparam("b_order_id"),
        filled_quantity=bindparam("b_filled"),
        average_price=bindparam("b_price"),
        rejection_reason=bindparam("b_reason"),
        acknowledged_at=bindparam("b_acknowledged_at"),
        finished_at=bindparam("b_finished_at"),
    )
)


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

    def record_and_claim(self, specs: Sequence[IntentSpec]) -> list[ClaimedIntent]:
        """Write every new intent of ``specs`` and claim the send of each one still ``created``
        (``created → sent``), all in ONE fenced transaction, committed before the caller sends any of
        them; returns them in ``specs`` order. The batch form of :meth:`record` + :meth:`claim_send`
        with the same guarantees: a key is written once (an existing one is kept as stored), and of
        any number of callers exactly one wins each send (the conditional update counts the row).

        Raises :class:`~algomirror.engine.fencing.FencedOutError` once fenced out, and IntegrityError
        when a concurrent writer inserted one of the keys first (PostgreSQL; nothing is written then:
        record them one by one). Keys must be distinct."""
        if not specs:
            return []
        with self.database.session() as session:
            conn = session.connection()
            check_fence_on(conn, self.epoch)
            return self.record_and_claim_on(conn, specs)

    def record_and_claim_on(self, conn: Connection, specs: Sequence[IntentSpec]) -> list[ClaimedIntent]:
        """:meth:`record_and_claim` inside the caller's own write transaction on ``conn``, for a caller
        that writes rows of its own in the same transaction (an exit claims its executions there). The
        caller has checked the fence on ``conn`` in this transaction before any write
        (:func:`~algomirror.engine.fencing.check_fence_on`), and commits before it sends any order of
        the returned intents. Raises what :meth:`record_and_claim` raises (after which the caller must
        roll back: nothing of the batch may stand)."""
        if not specs:
            return []
        now = self.clock.now()
        keys = [spec.key for spec in specs]
        stored = {row.key: row for row in conn.execute(_BY_KEYS, {"keys": keys})}
        new = [_insert_values(spec) for spec in specs if spec.key not in stored]
        if new:
            conn.execute(_INSERT, new)
        open_keys = [k for k in keys if k not in stored or stored[k].state == order_state.CREATED]
        won = {row.key: row.id for row in conn.execute(_CLAIM, {"keys": open_keys, "now": now})}
        if len(won) < len(new):
            # Cannot happen inside one transaction that holds the write lock; never send blind.
            raise RuntimeError("record_and_claim: a new intent was not claimed")
        claimed: list[ClaimedIntent] = []
        for key in keys:
            if key in won:
                old = stored.get(key)
                reason = old.rejection_reason if old is not None else None
                claimed.append(
                    ClaimedIntent(IntentView(won[key], key, order_state.SENT, None, 0, None), True, reason)
                )
            else:
                row = stored[key]
                view = IntentView(
                    row.id, key, row.state, row.order_id, row.filled_quantity, row.average_price
                )
                claimed.append(ClaimedIntent(view, False, row.rejection_reason))
        return claimed

    def advance_many(self, changes: Sequence[Advance]) -> list[IntentView]:
        """Apply every change as :meth:`advance` would, in ONE fenced transaction (all or nothing);
        returns the intents as stored after, in ``changes`` order. For facts grouped after the sends
        (acknowledgements and outcomes of several orders). Raises what :meth:`advance` raises; on any
        error nothing of the batch is written. An intent may appear once."""
        if not changes:
            return []
        now = self.clock.now()
        try:
            with self.database.session() as session:
                conn = session.connection()
                check_fence_on(conn, self.epoch)
                ids = [c.intent_id for c in changes]
                rows = {row.id: row for row in conn.execute(_BY_IDS, {"ids": ids})}
                params: list[dict[str, Any]] = []
                views: list[IntentView] = []
                for change in changes:
                    row = rows.get(change.intent_id)
                    if row is None:
                        raise IntentNotFoundError(f"no intent {change.intent_id}")
                    order_state.check_transition(row.state, change.state)
                    _check_facts(
                        row, change.state, change.order_id, change.filled_quantity, change.average_price
                    )
                    values = _advanced(row, change, now)
                    params.append(values)
                    views.append(
                        IntentView(
                            row.id,
                            row.key,
                            change.state,
                            values["b_order_id"],
                            values["b_filled"],
                            values["b_price"],
                        )
                    )
                conn.execute(_ADVANCE, params)
                return views
        except IntegrityError as exc:
            if _violates(exc, "uq_order_intents_account_order"):
                raise OrderAlreadyAdoptedError(
                    "a broker order of this batch is already recorded on another intent of its account"
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


class _Facts(Protocol):
    """What :func:`_check_facts` reads of a stored intent (an ORM row or a Core result row)."""

    @property
    def id(self) -> int: ...
    @property
    def state(self) -> str: ...
    @property
    def order_id(self) -> str | None: ...
    @property
    def filled_quantity(self) -> int: ...
    @property
    def average_price(self) -> Decimal | None: ...


def _insert_values(spec: IntentSpec) -> dict[str, Any]:
    return {
        "key": spec.key,
        "execution_id": spec.execution_id,
        "account_id": spec.account_id,
        "purpose": spec.purpose,
        "symbol": spec.symbol,
        "exchange": spec.exchange,
        "product": spec.product,
        "side": spec.side,
        "quantity": spec.quantity,
        "order_type": spec.order_type,
        "price": spec.price,
        "trigger_price": spec.trigger_price,
        "strategy_tag": spec.strategy_tag,
        "state": order_state.CREATED,
        "filled_quantity": 0,
    }


def _advanced(row: Any, change: Advance, now: datetime) -> dict[str, Any]:
    """The stored row's columns after ``change`` (as :meth:`Journal.advance` sets them), as the
    parameters of ``_ADVANCE``. ``sent_at`` never changes here (only claims set it)."""
    order_id = change.order_id if change.order_id is not None else row.order_id
    acknowledged_at = row.acknowledged_at
    finished_at = row.finished_at
    if change.state != row.state:
        if change.state == order_state.ACKNOWLEDGED or (
            change.state in order_state.TERMINAL_STATES and order_id is not None and acknowledged_at is None
        ):
            # An order id from the broker's acceptance, recorded together with its outcome.
            acknowledged_at = acknowledged_at or now
        if change.state in order_state.TERMINAL_STATES:
            finished_at = now
    return {
        "b_id": row.id,
        "b_state": change.state,
        "b_order_id": order_id,
        "b_filled": change.filled_quantity if change.filled_quantity is not None else row.filled_quantity,
        "b_price": change.average_price if change.average_price is not None else row.average_price,
        "b_reason": change.rejection_reason if change.rejection_reason is not None else row.rejection_reason,
        "b_acknowledged_at": acknowledged_at,
        "b_finished_at": finished_at,
    }


def _check_facts(
    row: _Facts,
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
    "Advance",
    "ClaimedIntent",
    "ConflictingFactsError",
    "FencedOutError",
    "IntentExistsError",
    "IntentNotFoundError",
    "IntentSpec",
    "IntentView",
    "Journal",
    "OrderAlreadyAdoptedError",
]
