"""One journaled order, driven from its intent to a terminal state, exactly once (DESIGN §3).

:meth:`OrderDriver.drive` takes an intent in whatever state the journal holds it and moves it forward:

* ``created``: the send is claimed (``created → sent``, one winner) and the order placed once; the reply
  decides ``acknowledged`` (order id), ``rejected`` (the broker's text) or ``unknown`` (timeout, dropped
  connection, 5xx after the request was written). A call refused before anything left (429, connect
  failure) is tried again under the same claim, at most ``send_retries`` times, then ``cancelled``
  ("not sent"); a halt (API key refused, order calls suspended) is ``cancelled`` at once.
* ``sent`` found on entry (an engine died mid-send) and ``unknown``: resolved from the account's
  orderbook — our strategy tag, symbol, side and quantity, an order no other intent owns — and adopted;
  never sent again. Not found within ``resolve_seconds``: left ``unknown`` for the next attempt or
  reconciliation.
* ``acknowledged``: followed with ``orderstatus`` to ``complete`` / ``rejected`` / ``cancelled`` (fills and
  average price kept) within ``fill_timeout``; still working then: left ``acknowledged``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from algomirror.broker.client import OpenAlgoClient
from algomirror.broker.errors import (
    BrokerError,
    HaltError,
    RejectedError,
    RetryableError,
    UnknownOutcomeError,
)
from algomirror.broker.registry import Priority
from algomirror.broker.wire import BrokerOrder
from algomirror.broker.wire.requests import OrderRequest
from algomirror.broker.wire.terms import Action, OrderState, PriceType, Product
from algomirror.db.models import OrderIntent
from algomirror.db.session import Database
from algomirror.domain import order_state
from algomirror.domain.order_state import IllegalTransitionError
from algomirror.domain.timeutil import utcnow
from algomirror.engine.concurrency import all_of, settled, staggered
from algomirror.engine.journal import (
    Advance,
    ClaimedIntent,
    ConflictingFactsError,
    IntentSpec,
    IntentView,
    Journal,
    OrderAlreadyAdoptedError,
)

log = logging.getLogger(__name__)

_TERMINAL = {
    OrderState.COMPLETE: order_state.COMPLETE,
    OrderState.REJECTED: order_state.REJECTED,
    OrderState.CANCELLED: order_state.CANCELLED,
}


@dataclass(frozen=True, slots=True)
class DriverConfig:
    """Seconds unless noted. ``fill_timeout``: how long an acknowledged order is followed;
    ``status_interval``: between its ``orderstatus`` reads; ``resolve_seconds``/``resolve_interval``:
    how long and how often the orderbook is searched for an order of unknown outcome;
    ``send_retries``: sends of a call refused before it left (count), ``send_retry_delay`` between;
    ``unplaced_after``: how long (real seconds) after its outcome became unknown an intent without an
    order id, still without an order in a cleanly read orderbook and with the broker's position in its
    symbol unchanged by anything we did not record, is concluded never placed (``cancelled``): an
    entry's leg then fails and the strategy's failure policy applies, an exit goes on to its next
    attempt, verified at the broker first. It must outlast the client's order timeout (a slow call can
    reach the broker until then). None = never (it stays ``unknown`` until a person's retry)."""

    fill_timeout: float = 10.0
    status_interval: float = 0.25
    resolve_seconds: float = 5.0
    resolve_interval: float = 0.5
    send_retries: int = 3
    send_retry_delay: float = 0.5
    unplaced_after: float | None = 60.0


@dataclass(frozen=True, slots=True)
class IntentRow:
    """Everything about an intent the driver needs (as read from the journal)."""

    id: int
    key: str
    account_id: int
    symbol: str
    exchange: str
    product: str
    side: str
    quantity: int
    order_type: str
    price: Decimal | None
    trigger_price: Decimal | None
    strategy_tag: str
    state: str
    order_id: str | None
    filled_quantity: int
    average_price: Decimal | None
    rejection_reason: str | None

    @classmethod
    def of(cls, row: OrderIntent) -> IntentRow:
        return cls(
            id=row.id,
            key=row.key,
            account_id=row.account_id,
            symbol=row.symbol,
            exchange=row.exchange,
            product=row.product,
            side=row.side,
            quantity=row.quantity,
            order_type=row.order_type,
            price=row.price,
            trigger_price=row.trigger_price,
            strategy_tag=row.strategy_tag or "",
            state=row.state,
            order_id=row.order_id,
            filled_quantity=row.filled_quantity,
            average_price=row.average_price,
            rejection_reason=row.rejection_reason,
        )

    @classmethod
    def of_claimed(cls, spec: IntentSpec, claimed: ClaimedIntent) -> IntentRow:
        """The row of an intent :meth:`Journal.record_and_claim` returned (its terms are the spec's: the
        key names the execution and slice, so an earlier attempt wrote the same terms)."""
        view = claimed.view
        return cls(
            id=view.id,
            key=view.key,
            account_id=spec.account_id,
            symbol=spec.symbol,
            exchange=spec.exchange,
            product=spec.product,
            side=spec.side,
            quantity=spec.quantity,
            order_type=spec.order_type,
            price=spec.price,
            trigger_price=spec.trigger_price,
            strategy_tag=spec.strategy_tag or "",
            state=view.state,
            order_id=view.order_id,
            filled_quantity=view.filled_quantity,
            average_price=view.average_price,
            rejection_reason=claimed.rejection_reason,
        )

    def with_view(self, view: IntentView, reason: str | None = None) -> IntentRow:
        """This row updated by a journal write's result."""
        return replace(
            self,
            state=view.state,
            order_id=view.order_id,
            filled_quantity=view.filled_quantity,
            average_price=view.average_price,
            rejection_reason=reason if reason is not None else self.rejection_reason,
        )

    @property
    def terminal(self) -> bool:
        return self.state in order_state.TERMINAL_STATES


def load_intent(database: Database, intent_id: int) -> IntentRow:
    """The intent as stored now (raises LookupError for an unknown id)."""
    with database.session_factory() as session:
        row = session.get(OrderIntent, intent_id)
        if row is None:
            raise LookupError(f"no intent {intent_id}")
        return IntentRow.of(row)


def _owned_order_ids(database: Database, account_id: int) -> set[str]:
    with database.session_factory() as session:
        ids = session.scalars(
            select(OrderIntent.order_id).where(
                OrderIntent.account_id == account_id, OrderIntent.order_id.is_not(None)
            )
        ).all()
        return {i for i in ids if i}


class OrderDriver:
    """Drives intents through one account's client; see the module docstring. ``journal`` is called
    for every write (a new :class:`Journal` with the engine's current epoch); writes run in threads."""

    def __init__(self, database: Database, journal: Journal, config: DriverConfig) -> None:
        self.database = database
        self.journal = journal
        self.config = config

    async def drive(
        self, client: OpenAlgoClient, intent: IntentRow, *, allow_send: bool, priority: Priority
    ) -> IntentRow:
        """Move ``intent`` forward as far as the broker's word allows; returns it as stored after.
        ``allow_send`` False cancels a ``created`` intent instead of sending it (entries halted)."""
        row = intent
        if row.state == order_state.CREATED:
            if not allow_send:
                return await self._advance(row, order_state.CANCELLED, reason="not sent: entries stopped")
            if await asyncio.to_thread(self.journal.claim_send, row.id):
                row = await self._send(client, row, priority)
            else:
                row = await self._other_sender(row)
        if row.state in (order_state.SENT, order_state.UNKNOWN):
            row = await self._resolve(client, row)
        if row.state == order_state.ACKNOWLEDGED:
            row = await self._follow(client, row)
        return row

    async def _other_sender(self, row: IntentRow) -> IntentRow:
        """Another attempt claimed this send a moment ago: give it ``resolve_seconds`` to record the
        broker's reply; still ``sent`` after that, the orderbook decides (never a second send)."""
        deadline = time.monotonic() + self.config.resolve_seconds
        while True:
            row = await asyncio.to_thread(load_intent, self.database, row.id)
            if row.state != order_state.SENT or time.monotonic() >= deadline:
                return row
            await asyncio.sleep(self.config.resolve_interval)

    async def _advance(
        self,
        row: IntentRow,
        state: str,
        *,
        order_id: str | None = None,
        filled: int | None = None,
        price: Decimal | None = None,
        reason: str | None = None,
    ) -> IntentRow:
        try:
            view = await asyncio.to_thread(
                self.journal.advance,
                row.id,
                state,
                order_id=order_id,
                filled_quantity=filled,
                average_price=price,
                rejection_reason=reason,
            )
        except IllegalTransitionError:
            # Another attempt moved the intent further meanwhile (only forward): go on from its state.
            return await asyncio.to_thread(load_intent, self.database, row.id)
        return row.with_view(view, reason)

    async def _send(self, client: OpenAlgoClient, row: IntentRow, priority: Priority) -> IntentRow:
        row, order_id = await self.place(client, row, priority)
        if order_id is None:
            return row
        return await self._advance(row, order_state.ACKNOWLEDGED, order_id=order_id)

    async def place(
        self, client: OpenAlgoClient, row: IntentRow, priority: Priority
    ) -> tuple[IntentRow, str | None]:
        """Send the order of an intent whose send this caller claimed (state ``sent``), once.

        Accepted: returns ``(row, order id)`` with NOTHING written — the caller records the
        acknowledgement (:meth:`follow_many` does, grouped with the outcome); until then a crash leaves
        the intent ``sent``, which is resolved from the orderbook and never sent again. Every other
        outcome (rejected, not sent, unknown) is written here and returned with ``None``."""
        request = OrderRequest(
            symbol=row.symbol,
            exchange=row.exchange,
            action=Action(row.side),
            quantity=row.quantity,
            pricetype=PriceType(row.order_type),
            product=Product(row.product),
            price=row.price or Decimal(0),
            trigger_price=row.trigger_price or Decimal(0),
        )
        attempt = 0
        while True:
            attempt += 1
            try:
                ack = await client.place_order(request, strategy=row.strategy_tag, priority=priority)
            except RetryableError as exc:
                # For an order call this class means nothing reached the broker (429, no connection).
                if attempt >= self.config.send_retries:
                    reason = f"not sent: {exc.message}"
                    return await self._advance(row, order_state.CANCELLED, reason=reason), None
                await asyncio.sleep(max(self.config.send_retry_delay, exc.retry_after))
                continue
            except RejectedError as exc:
                rejected = await self._advance(
                    row, order_state.REJECTED, order_id=exc.orderid or None, reason=exc.message
                )
                return rejected, None
            except HaltError as exc:
                return await self._advance(
                    row, order_state.CANCELLED, reason=f"not sent: {exc.message}"
                ), None
            except UnknownOutcomeError as exc:
                log.warning("intent %s (%s): send outcome unknown: %s", row.key, row.symbol, exc.message)
                reason = f"outcome unknown: {exc.message}"
                return await self._advance(row, order_state.UNKNOWN, reason=reason), None
            except BrokerError as exc:  # unclassified: the order may exist, so treat it as unknown
                reason = f"outcome unknown: {exc.message}"
                return await self._advance(row, order_state.UNKNOWN, reason=reason), None
            return row, ack.orderid

    async def _resolve(self, client: OpenAlgoClient, row: IntentRow) -> IntentRow:
        """Find the order of an intent whose send outcome is unknown in the orderbook and adopt it."""
        if row.state == order_state.SENT:
            row = await self._advance(
                row, order_state.UNKNOWN, reason="outcome unknown: the engine stopped while sending"
            )
        deadline = time.monotonic() + self.config.resolve_seconds
        while True:
            clean = False
            try:
                book = await client.orderbook()
            except BrokerError as exc:
                log.info("intent %s: orderbook unreadable while resolving: %s", row.key, exc.message)
            else:
                clean = True
                owned = await asyncio.to_thread(_owned_order_ids, self.database, row.account_id)
                for order in order_candidates(book.orders, row, owned):
                    try:
                        return await self._adopt(row, order)
                    except OrderAlreadyAdoptedError:
                        clean = False  # another intent took it between our read and our write
                        continue
            if time.monotonic() >= deadline:
                if clean and await self._unplaced(client, row):
                    reason = (
                        "not placed: no order of ours in the orderbook and the position unchanged "
                        f"{self.config.unplaced_after:g} s after its outcome became unknown"
                    )
                    log.warning("intent %s: %s", row.key, reason)
                    return await self._advance(row, order_state.CANCELLED, reason=reason)
                log.warning("intent %s: no order found in the orderbook; left unknown", row.key)
                return row
            await asyncio.sleep(self.config.resolve_interval)

    async def _unplaced(self, client: OpenAlgoClient, row: IntentRow) -> bool:
        """True for an intent that became ``unknown`` at least ``unplaced_after`` real seconds
        ago (the clock starts when the send attempt ended, not at its claim: a slow call may reach the
        broker until its own timeout) and whose position at the broker is still exactly what our own
        recorded fills make it — an order the orderbook shows under another symbol spelling, sliced or
        without our tag, would have moved it. A failed read is no proof (False). Reconciliation still
        flags a position that appears later."""
        wait = self.config.unplaced_after
        if wait is None or row.order_id is not None:
            return False
        since, ours = await asyncio.to_thread(self._unknown_since_and_net, row)
        # updated_at is the row's wall-clock stamp of its last write (the move to unknown): real seconds,
        # which is what the broker's own delays are measured in, whatever the market clock does.
        if since is None or (utcnow() - since).total_seconds() < wait:
            return False
        try:
            held = await client.open_position(
                strategy=row.strategy_tag, symbol=row.symbol, exchange=row.exchange, product=row.product
            )
        except BrokerError as exc:
            log.info("intent %s: position unreadable while resolving: %s", row.key, exc.message)
            return False
        return held == ours

    def seconds_until_unplaced(self, rows: Sequence[IntentRow]) -> float | None:
        """Real seconds until :meth:`_resolve` may conclude the last of ``rows``' ``unknown`` intents
        without an order id never placed (0 when it may now); None when none of them can be (the rule is
        off, or every one has an order id or another state). Reads the journal; runs in a worker thread."""
        wait = self.config.unplaced_after
        lost = [r for r in rows if r.state == order_state.UNKNOWN and r.order_id is None]
        if wait is None or not lost:
            return None
        with self.database.session_factory() as session:
            stamps = session.scalars(
                select(OrderIntent.updated_at).where(
                    OrderIntent.id.in_([r.id for r in lost]), OrderIntent.state == order_state.UNKNOWN
                )
            ).all()
        if not stamps:
            return None
        now = utcnow()
        return max(max(wait - (now - since).total_seconds(), 0.0) for since in stamps)

    def _unknown_since_and_net(self, row: IntentRow) -> tuple[datetime | None, int]:
        """When the intent last changed (its move to ``unknown``) and the account's net quantity in the
        intent's symbol and product by every fill our journal records (BUY +, SELL −)."""
        with self.database.session_factory() as session:
            since = session.scalar(
                select(OrderIntent.updated_at).where(
                    OrderIntent.id == row.id, OrderIntent.state == order_state.UNKNOWN
                )
            )
            fills = session.execute(
                select(OrderIntent.side, OrderIntent.filled_quantity).where(
                    OrderIntent.account_id == row.account_id,
                    OrderIntent.symbol == row.symbol,
                    OrderIntent.exchange == row.exchange,
                    OrderIntent.product == row.product,
                )
            ).all()
        net = sum(q if side == "BUY" else -q for side, q in fills)
        return since, net

    async def _adopt(self, row: IntentRow, order: BrokerOrder) -> IntentRow:
        log.info("intent %s: adopted broker order %s from the orderbook", row.key, order.orderid)
        adopted = await self._advance(row, order_state.ACKNOWLEDGED, order_id=order.orderid)
        return await self._record(adopted, order) if order.status.is_terminal else adopted

    async def _follow(self, client: OpenAlgoClient, row: IntentRow) -> IntentRow:
        """Read ``orderstatus`` until the order is terminal (with its average price) or time is up."""
        assert row.order_id is not None
        deadline = time.monotonic() + self.config.fill_timeout
        while True:
            try:
                status = await client.order_status(row.order_id, strategy=row.strategy_tag)
            except BrokerError as exc:
                log.info("intent %s: orderstatus unreadable: %s", row.key, exc.message)
            else:
                priced = status.average_price is not None or not status.filled_quantity
                if status.status.is_terminal and (priced or time.monotonic() >= deadline):
                    return await self._record(row, status)
            if time.monotonic() >= deadline:
                return row
            await asyncio.sleep(self.config.status_interval)

    async def _record(self, row: IntentRow, order: BrokerOrder) -> IntentRow:
        change = _outcome(row, order)
        return await self._advance(
            row,
            change.state,
            filled=change.filled_quantity,
            price=change.average_price,
            reason=change.rejection_reason,
        )

    async def send_claimed(
        self,
        client: OpenAlgoClient,
        won: Sequence[IntentRow],
        others: Sequence[IntentRow],
        *,
        priority: Priority,
        write: Callable[[list[Advance]], Awaitable[list[IntentView]]] | None = None,
    ) -> list[IntentRow]:
        """Send one account's batch: place every intent of ``won`` (this caller claimed their sends,
        state ``sent``) at once and follow the accepted ones with :meth:`follow_many` (acknowledgements
        written with the outcome, through ``write`` when given); an order not accepted (rejected, not
        sent, unknown) goes on from its written state as :meth:`drive` takes it. ``others`` (intents
        another caller owns, or already past ``sent``) are only driven from what is stored, never sent
        by this caller. Returns every row as stored after (won first)."""

        async def drive_other(row: IntentRow) -> IntentRow:
            stored = await asyncio.to_thread(load_intent, self.database, row.id)
            return await self.drive(client, stored, allow_send=True, priority=priority)

        async def place_and_follow() -> list[IntentRow]:
            sent = await staggered(*(self.place(client, r, priority) for r in won))
            placed = [(r, order_id) for r, order_id in sent if order_id is not None]
            done = [r for r, order_id in sent if order_id is None]
            followed = await self.follow_many(client, placed, write=write) if placed else []
            onward = await settled(*(self.drive(client, r, allow_send=True, priority=priority) for r in done))
            return [*followed, *onward]

        driven, other_rows = await settled(place_and_follow(), all_of(drive_other(r) for r in others))
        return [*driven, *other_rows]

    async def follow_many(
        self,
        client: OpenAlgoClient,
        placed: Sequence[tuple[IntentRow, str]],
        *,
        write: Callable[[list[Advance]], Awaitable[list[IntentView]]] | None = None,
    ) -> list[IntentRow]:
        """Record and follow orders of one account that :meth:`place` sent (``(row, order id)``; their
        acknowledgements not yet written) until each is terminal or ``fill_timeout`` has passed; returns
        them as stored after, in ``placed`` order.

        PRODUCT §5.11: one ``orderbook`` read for all of them per round (the first right after the last
        placement, then every ``status_interval``), ``orderstatus`` only for an order missing from the
        book. Each round's facts are written in one journal transaction: an order already terminal goes
        ``sent → complete | rejected | cancelled`` with its order id, fills and average price; one still
        working is recorded ``acknowledged`` (then left so after ``fill_timeout``, as :meth:`drive`
        leaves it). A batch the journal refuses is written one intent at a time (each as :meth:`drive`
        would). ``write`` replaces the journal call for a batch (e.g. a group commit shared by many
        accounts: :class:`~algomirror.engine.group_commit.GroupCommit` of
        :meth:`Journal.advance_many`)."""
        rows = [replace(row, order_id=order_id) for row, order_id in placed]
        written = [False] * len(rows)
        deadline = time.monotonic() + self.config.fill_timeout
        while True:
            late = time.monotonic() >= deadline
            seen = await self._book_orders(client, [r for r in rows if not r.terminal])
            changes: list[tuple[int, Advance]] = []
            for n, row in enumerate(rows):
                if row.terminal:
                    continue
                order = seen.get(row.order_id or "")
                priced = order is not None and (order.average_price is not None or not order.filled_quantity)
                if order is not None and order.status.is_terminal and (priced or late):
                    changes.append((n, _outcome(row, order, order_id=row.order_id)))
                elif not written[n]:
                    changes.append((n, Advance(row.id, order_state.ACKNOWLEDGED, order_id=row.order_id)))
            if changes:
                stored_rows = await self._write_many(rows, changes, write)
                for (n, _), stored in zip(changes, stored_rows, strict=True):
                    rows[n] = stored
                    written[n] = True
            if all(r.terminal for r in rows) or late:
                return rows
            await asyncio.sleep(self.config.status_interval)

    async def _book_orders(self, client: OpenAlgoClient, rows: Sequence[IntentRow]) -> dict[str, BrokerOrder]:
        """The broker's view of ``rows``' orders: one orderbook read, then ``orderstatus`` for any order
        the book does not show yet (unreadable: left out, asked again next round)."""
        wanted = {r.order_id for r in rows if r.order_id}
        found: dict[str, BrokerOrder] = {}
        if not wanted:
            return found
        try:
            book = await client.orderbook()
        except BrokerError as exc:
            log.info("orderbook unreadable while following %d order(s): %s", len(wanted), exc.message)
        else:
            found = {o.orderid: o for o in book.orders if o.orderid in wanted}
        missing = [r for r in rows if r.order_id and r.order_id not in found]
        if missing:
            replies = await asyncio.gather(
                *(client.order_status(r.order_id or "", strategy=r.strategy_tag) for r in missing),
                return_exceptions=True,
            )
            for row, reply in zip(missing, replies, strict=True):
                if isinstance(reply, BrokerOrder):
                    found[reply.orderid or row.order_id or ""] = reply
                elif isinstance(reply, BrokerError):
                    log.info("intent %s: orderstatus unreadable: %s", row.key, reply.message)
                elif isinstance(reply, BaseException):
                    raise reply
        return found

    async def _write_many(
        self,
        rows: list[IntentRow],
        changes: list[tuple[int, Advance]],
        write: Callable[[list[Advance]], Awaitable[list[IntentView]]] | None,
    ) -> list[IntentRow]:
        """Write ``changes`` in one journal transaction; refused as a batch, one by one."""
        batch = [c for _, c in changes]
        try:
            if write is not None:
                views = await write(batch)
            else:
                views = await asyncio.to_thread(self.journal.advance_many, batch)
        except (IllegalTransitionError, ConflictingFactsError, OrderAlreadyAdoptedError, IntegrityError):
            stored: list[IntentRow] = []
            for n, change in changes:
                stored.append(
                    await self._advance(
                        rows[n],
                        change.state,
                        order_id=change.order_id,
                        filled=change.filled_quantity,
                        price=change.average_price,
                        reason=change.rejection_reason,
                    )
                )
            return stored
        return [
            rows[n].with_view(view, change.rejection_reason)
            for (n, change), view in zip(changes, views, strict=True)
        ]


def _outcome(row: IntentRow, order: BrokerOrder, *, order_id: str | None = None) -> Advance:
    """The journal change a terminal broker order means for ``row`` (fills clamped to what the intent
    asked and never below what it recorded; the average price only with a fill)."""
    state = _TERMINAL[order.status]
    filled = order.filled_quantity
    if filled is None:
        filled = row.quantity if state == order_state.COMPLETE else row.filled_quantity
    filled = max(row.filled_quantity, min(filled, row.quantity))
    price = order.average_price if order.average_price and filled else None
    reason = order.rejection_reason or None
    return Advance(
        row.id, state, order_id=order_id, filled_quantity=filled, average_price=price, rejection_reason=reason
    )


def order_candidates(orders: tuple[BrokerOrder, ...], row: IntentRow, owned: set[str]) -> list[BrokerOrder]:
    """Orderbook rows that can be this intent's order, oldest first: same symbol, side and quantity,
    our tag (a book without tags, as some live brokers send, matches on the rest), owned by no intent."""
    found = [
        o
        for o in orders
        if o.orderid not in owned
        and o.symbol == row.symbol
        and o.action == row.side
        and o.quantity == row.quantity
        and (not o.strategy or o.strategy == row.strategy_tag)
    ]
    return sorted(found, key=lambda o: o.orderid)


__all__ = ["DriverConfig", "IntentRow", "OrderDriver", "load_intent", "order_candidates"]
