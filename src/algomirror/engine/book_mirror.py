"""Mirror one account's broker books into the database (PRODUCT §3, §9.3, §9.5).

Each ``store_*`` function takes one *successful, well-formed* read (a parsed model from
:mod:`algomirror.broker.wire`) and applies it in the caller's session. A failed read never reaches
these functions, so the rows it would have touched keep their last good values and their age.

Rules:

* Numbers the broker did not give are stored as NULL (unknown), never 0. A row whose identifying or
  NOT NULL values are unknown (quantity, average price of a new position) is not written, and an
  existing row with that key is left as it was (never zeroed, never deleted).
* Positions and holdings absent from a successful read are deleted: the broker says they no longer
  exist. (A failed read deletes nothing.)
* Orders are history: an order absent from a successful orderbook read is never deleted (paper books
  only list today's orders); if we still believed it working, it becomes ``unknown``.
* Trades are history and are never deleted.
* Only today's rows are compared (the broker's orderbook and tradebook are the day's anyway), so a cycle
  costs the same whatever the account's history: a read is matched against our rows of the current IST
  day (from midnight IST of ``fetched_at``, through the (account, placed_at) and (account, traded_at)
  indexes), plus, for orders, the few we still believe working (whatever their day: one that the book no
  longer lists must become ``unknown``), plus any row the read names that these missed (looked up by
  natural key: a book read just after midnight still listing yesterday's rows, or a fill whose
  ``traded_at`` is unknown). Rows of earlier days are never loaded otherwise, never changed, never
  deleted.
* A trade with a time-only stamp keeps ``traded_at`` NULL (a date would be a guess: a book read after
  midnight may still hold yesterday's fills). Such rows are never in the day window; they are found by
  natural key while the book lists them, and maintenance archives them by ``created_at`` (first seen).
* ``updated_at`` (and ``account_funds.fetched_at``) is set to the fetch time of every row the read
  confirmed, so the UI can show each row's age even when its values did not change.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import datetime, time
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from algomirror.broker import wire
from algomirror.db.models import (
    AccountFunds,
    Holding,
    MarginTracker,
    Order,
    Position,
    Trade,
    TradingAccount,
    make_trade_key,
)
from algomirror.db.models.enums import ACTIONS, PRODUCTS
from algomirror.domain.reservations import released, reserved
from algomirror.domain.timeutil import ist_combine, ist_today

log = logging.getLogger(__name__)

WORKING_STATUSES = ("open", "trigger_pending")

_K = TypeVar("_K")

# Natural-key look-ups go in chunks so one statement never carries an unbounded IN list.
_LOOKUP_CHUNK = 500

# Gateway spellings of price types seen across brokers -> OpenAlgo's four values.
_PRICE_TYPES = {
    "MARKET": "MARKET",
    "MKT": "MARKET",
    "LIMIT": "LIMIT",
    "LMT": "LIMIT",
    "SL": "SL",
    "SL-L": "SL",
    "SL-LMT": "SL",
    "SL-M": "SL-M",
    "SLM": "SL-M",
    "SL_M": "SL-M",
    "SL-MKT": "SL-M",
}


@dataclass(frozen=True, slots=True)
class StoreCounts:
    """What one store call did: rows inserted, updated, deleted (or marked unknown), skipped."""

    inserted: int = 0
    updated: int = 0
    removed: int = 0
    skipped: int = 0


# The strategy tag is free text chosen by whoever placed the order; an over-long one must not fail the
# whole book's transaction (PostgreSQL enforces VARCHAR(100)), so it is stored clipped.
_STRATEGY_MAX = 100


def _strategy(value: str | None) -> str | None:
    return None if value is None else value[:_STRATEGY_MAX]


def _product(value: str) -> str | None:
    upper = value.strip().upper()
    return upper if upper in PRODUCTS else None


def _price_type(value: str) -> str | None:
    return _PRICE_TYPES.get(value.strip().upper())


def trading_day_start(now: datetime) -> datetime:
    """Midnight IST that starts the IST calendar day of ``now``, as aware UTC (18:30 UTC the day
    before). Raises ValueError for a naive ``now``."""
    return ist_combine(ist_today(now), time(0))


def _chunks(values: Collection[str]) -> Iterator[list[str]]:
    ordered = sorted(values)
    for start in range(0, len(ordered), _LOOKUP_CHUNK):
        yield ordered[start : start + _LOOKUP_CHUNK]


def _delete_unlisted(session: Session, existing: Mapping[_K, object], listed: Set[_K]) -> int:
    """Delete the stored rows whose key the successful read no longer lists; returns how many."""
    removed = 0
    for key, row in existing.items():
        if key not in listed:
            session.delete(row)
            removed += 1
    return removed


# ------------------------------------------------------------------------------------------- funds


def seller_base(
    available_cash: Decimal | None, collateral: Decimal | None, collateral_included: bool
) -> Decimal | None:
    """PRODUCT §9.3 seller margin base in rupees, or None when unknown.

    ``availablecash`` is already net of used margin, so used margin is never subtracted again. When the
    broker does not include collateral in ``availablecash`` it is added; an unknown collateral then makes
    the base unknown (never read as 0).
    """
    if available_cash is None:
        return None
    if collateral_included:
        return available_cash
    if collateral is None:
        return None
    return available_cash + collateral


def store_funds(
    session: Session,
    account_id: int,
    funds: wire.Funds,
    raw: dict[str, Any] | None,
    *,
    collateral_included: bool,
    fetched_at: datetime,
) -> None:
    """Replace the account's funds row and update its margin tracker (PRODUCT §9.5).

    Tracker: total available = seller base; used = ``utiliseddebits``; free = total available minus the
    open reservations in ``allocated_margins``, after releasing those of runs whose entry ended before
    this read (:mod:`~algomirror.domain.reservations`); ``update_count`` += 1.
    """
    row = session.scalar(select(AccountFunds).where(AccountFunds.account_id == account_id))
    if row is None:
        row = AccountFunds(account_id=account_id, fetched_at=fetched_at, created_at=fetched_at)
        session.add(row)
    row.available_cash = funds.availablecash
    row.collateral = funds.collateral
    row.m2m_realized = funds.m2mrealized
    row.m2m_unrealized = funds.m2munrealized
    row.utilised_debits = funds.utiliseddebits
    row.raw = raw
    row.fetched_at = fetched_at
    row.updated_at = fetched_at

    tracker = session.scalar(select(MarginTracker).where(MarginTracker.account_id == account_id))
    if tracker is None:
        tracker = MarginTracker(account_id=account_id, update_count=0)
        session.add(tracker)
    base = seller_base(funds.availablecash, funds.collateral, collateral_included)
    kept = released(tracker.allocated_margins, fetched_at)
    if kept != (tracker.allocated_margins or {}):
        tracker.allocated_margins = kept or None  # these funds hold the margin of runs entered since
    tracker.total_available_margin = base
    tracker.used_margin = funds.utiliseddebits
    tracker.free_margin = None if base is None else base - reserved(kept)
    tracker.last_updated = fetched_at
    tracker.update_count = (tracker.update_count or 0) + 1


# ------------------------------------------------------------------------------------------ orders


def forward_fields(row: Order, state: wire.BrokerOrder) -> dict[str, Any] | None:
    """The ``orders`` columns to set from a broker-reported ``state``, or None when the report is
    older than what the row already holds and nothing may be written.

    Forward only: a terminal status (complete, rejected, cancelled) is final and never replaced (a
    report of the same terminal status may still complete the fill details); an ``unknown`` report
    never replaces a known status; a report with a smaller fill than the row's is
    stale. A known filled quantity, average price or rejection reason is never replaced by None.
    Quantities are units, prices rupees.
    """
    current = wire.OrderState(row.status) if row.status in _STATES else wire.OrderState.UNKNOWN
    reported = state.status
    fill = state.filled_quantity
    if fill is None and reported is wire.OrderState.COMPLETE:
        fill = state.quantity if state.quantity is not None else row.quantity
    if current.is_terminal and reported is not current:
        return None  # final: a later working report is stale, a different terminal one contradicts it
    if fill is not None and fill < row.filled_quantity:
        return None
    status = current if reported is wire.OrderState.UNKNOWN else reported
    pending = state.pending_quantity
    if pending is None:
        pending = 0 if status.is_terminal else row.pending_quantity
    return {
        "status": status.value,
        "filled_quantity": row.filled_quantity if fill is None else fill,
        "pending_quantity": pending,
        "average_price": row.average_price if state.average_price is None else state.average_price,
        "rejection_reason": state.rejection_reason or row.rejection_reason,
    }


_STATES = frozenset(s.value for s in wire.OrderState)


def store_orders(
    session: Session, account_id: int, orders: Sequence[wire.BrokerOrder], *, fetched_at: datetime
) -> StoreCounts:
    """Upsert every orderbook row by (account, order id). Working orders we hold that the book no longer
    lists become ``unknown``; nothing is deleted. Compares against today's orders only (see the module
    docstring); "today" is the IST day of ``fetched_at``."""
    existing = _orders_to_compare(session, account_id, orders, trading_day_start(fetched_at))
    seen: set[str] = set()
    inserted = updated = skipped = 0
    for item in orders:
        seen.add(item.orderid)
        row = existing.get(item.orderid)
        order_type = _price_type(item.pricetype)
        quantity = item.quantity if item.quantity is not None else (row.quantity if row else None)
        if item.action not in ACTIONS or order_type is None or quantity is None:
            log.warning(
                "account %s order %s not stored: action=%r pricetype=%r quantity=%r",
                account_id,
                item.orderid,
                item.action,
                item.pricetype,
                item.quantity,
            )
            skipped += 1
            continue
        changes: dict[str, Any] | None = None
        if row is None:
            row = Order(
                account_id=account_id,
                order_id=item.orderid,
                placed_at=item.placed_at or fetched_at,
                created_at=fetched_at,
                filled_quantity=0,
            )
            session.add(row)
            existing[item.orderid] = row
            inserted += 1
        else:
            changes = forward_fields(row, item)
            if changes is None:
                # Older than what we hold (a book read before a cancel's or a fill's report was
                # stored): an order's state never moves backwards.
                log.debug("account %s order %s: stale book row ignored", account_id, item.orderid)
                skipped += 1
                continue
            updated += 1
            if item.placed_at is not None:
                row.placed_at = item.placed_at
        row.symbol = item.symbol
        row.exchange = item.exchange
        row.action = item.action
        row.quantity = quantity
        row.order_type = order_type
        row.price = item.price
        row.trigger_price = item.trigger_price
        row.product = _product(item.product)
        row.status = item.status.value if changes is None else changes["status"]
        # NOT NULL column: an omitted fill count ([live] books) is derived from the status when that is
        # certain (complete = all filled), else the last known value is kept.
        if item.filled_quantity is not None:
            row.filled_quantity = item.filled_quantity
        elif item.status.value == "complete":
            row.filled_quantity = quantity
        row.pending_quantity = item.pending_quantity
        # A book row without an average does not erase the one we know.
        if item.average_price is not None or changes is None:
            row.average_price = item.average_price
        row.rejection_reason = item.rejection_reason or row.rejection_reason or None
        row.strategy = _strategy(item.strategy)
        row.updated_at = fetched_at
    # The tradebook may have been stored before this order existed here (reads run concurrently).
    missing = [o for o, r in existing.items() if r.executed_at is None and r.filled_quantity]
    if missing:
        fills = session.execute(
            select(Trade.order_id, func.max(Trade.traded_at))
            .where(Trade.account_id == account_id, Trade.order_id.in_(missing))
            .group_by(Trade.order_id)
        )
        for order_id, last_fill in fills:
            if last_fill is not None:
                existing[order_id].executed_at = last_fill
                # Explicitly: the column's onupdate would stamp the wall clock, not the fetch time.
                existing[order_id].updated_at = fetched_at
    removed = 0
    for order_id, row in existing.items():
        if order_id not in seen and row.status in WORKING_STATUSES:
            row.status = "unknown"
            row.updated_at = fetched_at
            removed += 1
    return StoreCounts(inserted, updated, removed, skipped)


def _orders_to_compare(
    session: Session, account_id: int, orders: Sequence[wire.BrokerOrder], day_start: datetime
) -> dict[str, Order]:
    """Our rows the read is compared with: today's, the working ones, and any other the read names."""
    found: dict[str, Order] = {}
    today = select(Order).where(Order.account_id == account_id, Order.placed_at >= day_start)
    working = select(Order).where(Order.account_id == account_id, Order.status.in_(WORKING_STATUSES))
    for query in (today, working):
        found.update((row.order_id, row) for row in session.scalars(query))
    unmatched = {item.orderid for item in orders} - found.keys()
    for chunk in _chunks(unmatched):
        named = select(Order).where(Order.account_id == account_id, Order.order_id.in_(chunk))
        found.update((row.order_id, row) for row in session.scalars(named))
    return found


# ------------------------------------------------------------------------------------------ trades


def store_trades(
    session: Session, account_id: int, trades: Sequence[wire.BrokerTrade], *, fetched_at: datetime
) -> StoreCounts:
    """Upsert tradebook rows by (account, order id, trade key); also fills ``orders.executed_at``.
    Compares against today's trades only (see the module docstring); "today" is the IST day of
    ``fetched_at``."""
    ordinals: dict[str, int] = {}
    keyed: list[tuple[str, wire.BrokerTrade]] = []
    # Books list newest first; ordinals must be stable across reads, so count oldest first.
    for item in reversed(trades):
        ordinals[item.orderid] = ordinals.get(item.orderid, 0) + 1
        keyed.append((make_trade_key(item.tradeid, ordinals[item.orderid]), item))
    existing = _trades_to_compare(
        session, account_id, {(item.orderid, key) for key, item in keyed}, trading_day_start(fetched_at)
    )
    inserted = updated = skipped = 0
    executed: dict[str, datetime] = {}
    for key, item in keyed:
        if item.action not in ACTIONS or item.quantity is None:
            skipped += 1
            continue
        row = existing.get((item.orderid, key))
        if row is None:
            row = Trade(account_id=account_id, order_id=item.orderid, trade_key=key, created_at=fetched_at)
            session.add(row)
            existing[(item.orderid, key)] = row
            inserted += 1
        else:
            updated += 1
        row.trade_id = item.tradeid
        row.symbol = item.symbol
        row.exchange = item.exchange
        row.product = _product(item.product)
        row.action = item.action
        row.quantity = item.quantity
        row.average_price = item.average_price if item.average_price is not None else item.price
        row.trade_value = item.trade_value
        if item.traded_at is not None:
            row.traded_at = item.traded_at
            executed[item.orderid] = max(executed.get(item.orderid, item.traded_at), item.traded_at)
        row.strategy = _strategy(item.strategy)
        row.updated_at = fetched_at
    for order_id, at in executed.items():
        session.execute(
            update(Order)
            .where(Order.account_id == account_id, Order.order_id == order_id, Order.executed_at.is_(None))
            # updated_at explicitly: the column's onupdate would stamp the wall clock, not the fetch time.
            .values(executed_at=at, updated_at=fetched_at)
        )
    return StoreCounts(inserted, updated, 0, skipped)


def _trades_to_compare(
    session: Session, account_id: int, listed: Set[tuple[str, str]], day_start: datetime
) -> dict[tuple[str, str], Trade]:
    """Our rows the read is compared with: today's, and any other the read names (NULL ``traded_at``)."""
    today = select(Trade).where(Trade.account_id == account_id, Trade.traded_at >= day_start)
    found = {(row.order_id, row.trade_key): row for row in session.scalars(today)}
    unmatched = {order_id for order_id, key in listed if (order_id, key) not in found}
    for chunk in _chunks(unmatched):
        named = select(Trade).where(Trade.account_id == account_id, Trade.order_id.in_(chunk))
        found.update(((row.order_id, row.trade_key), row) for row in session.scalars(named))
    return found


# --------------------------------------------------------------------------------------- positions


def store_positions(
    session: Session, account_id: int, positions: Sequence[wire.BrokerPosition], *, fetched_at: datetime
) -> StoreCounts:
    """Mirror the positionbook: upsert by (symbol, exchange, product); delete rows the read no longer
    lists. Rows with an unknown quantity keep their previous values. The account's
    ``positions_synced_at`` becomes ``fetched_at`` (the read succeeded, even if it listed nothing)."""
    session.execute(
        update(TradingAccount).where(TradingAccount.id == account_id).values(positions_synced_at=fetched_at)
    )
    existing = {
        (p.symbol, p.exchange, p.product): p
        for p in session.scalars(select(Position).where(Position.account_id == account_id))
    }
    seen: set[tuple[str, str, str]] = set()
    inserted = updated = skipped = 0
    for item in positions:
        product = _product(item.product)
        if product is None:
            log.warning("account %s position %s: unknown product %r", account_id, item.symbol, item.product)
            # The row exists but we cannot tell which of ours it is: keep every candidate, never delete.
            seen.update(key for key in existing if key[:2] == (item.symbol, item.exchange))
            skipped += 1
            continue
        key = (item.symbol, item.exchange, product)
        seen.add(key)
        row = existing.get(key)
        if item.quantity is None or (row is None and item.average_price is None):
            # Unknown is not flat: keep what we had rather than write a guess.
            skipped += 1
            continue
        if row is None:
            row = Position(
                account_id=account_id,
                symbol=item.symbol,
                exchange=item.exchange,
                product=product,
                created_at=fetched_at,
            )
            session.add(row)
            existing[key] = row
            inserted += 1
        else:
            updated += 1
        row.quantity = item.quantity
        if item.average_price is not None:
            row.average_price = item.average_price
        row.ltp = item.ltp
        row.current_price = item.ltp
        row.pnl = item.pnl
        row.pnl_percent = item.pnlpercent
        row.unrealized_pnl = item.unrealized_pnl
        row.realized_pnl = item.today_realized_pnl
        row.updated_at = fetched_at
    return StoreCounts(inserted, updated, _delete_unlisted(session, existing, seen), skipped)


# ---------------------------------------------------------------------------------------- holdings


def store_holdings(
    session: Session, account_id: int, holdings: Sequence[wire.BrokerHolding], *, fetched_at: datetime
) -> StoreCounts:
    """Mirror the holdings list by symbol; delete symbols the read no longer lists."""
    existing = {h.symbol: h for h in session.scalars(select(Holding).where(Holding.account_id == account_id))}
    seen: set[str] = set()
    inserted = updated = skipped = 0
    for item in holdings:
        seen.add(item.symbol)
        row = existing.get(item.symbol)
        if item.quantity is None or (row is None and item.average_price is None):
            skipped += 1
            continue
        if row is None:
            row = Holding(account_id=account_id, symbol=item.symbol, created_at=fetched_at)
            session.add(row)
            existing[item.symbol] = row
            inserted += 1
        else:
            updated += 1
        row.exchange = item.exchange
        row.quantity = item.quantity
        if item.average_price is not None:
            row.average_price = item.average_price
        row.current_price = item.ltp
        row.pnl = item.pnl
        row.pnl_percent = item.pnlpercent
        row.invested_value = row.average_price * item.quantity if row.average_price is not None else None
        current = item.current_value
        if current is None and item.ltp is not None:
            current = item.ltp * item.quantity
        row.current_value = current
        row.updated_at = fetched_at
    return StoreCounts(inserted, updated, _delete_unlisted(session, existing, seen), skipped)


__all__ = [
    "StoreCounts",
    "seller_base",
    "store_funds",
    "store_holdings",
    "store_orders",
    "store_positions",
    "store_trades",
    "trading_day_start",
]
