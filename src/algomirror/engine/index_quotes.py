"""Index levels for the header's strip: NIFTY, BANKNIFTY and SENSEX read through a primary account.

Views never talk to a broker, so the account sync (:mod:`algomirror.engine.sync`) asks this module, at
the end of a primary account's cycle, to read the three indices with one ``multiquotes`` call (READ
priority, through the account's own client and rate budget) and store them in ``index_quotes``.

The read is a nicety, never a health signal: whatever it gets (an error reply, an endpoint the broker
lacks, a 429, a dropped connection) it logs at debug/info level and leaves the account's status and the
stored quotes alone. A quote with a zero or missing LTP is not stored (a real index is never at 0).
After a failure the read waits ``retry_seconds`` (``unsupported_seconds`` when the broker has no such
endpoint) before trying again; a 429 is simply left for the next cycle.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Final

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from algomirror.broker.client import OpenAlgoClient
from algomirror.broker.errors import AuthError, BrokerError, RateLimitedError
from algomirror.broker.wire import MultiQuoteItem
from algomirror.db.models import IndexQuote, TradingAccount
from algomirror.db.models.market import INDEX_PAIRS
from algomirror.db.session import Database
from algomirror.domain.timeutil import Clock

log = logging.getLogger(__name__)

_EXCHANGE_OF: Final[dict[str, str]] = dict(INDEX_PAIRS)


@dataclass(frozen=True, slots=True)
class IndexLevel:
    """One index quote worth storing: a positive ``ltp``; ``prev_close`` None when unknown."""

    symbol: str
    exchange: str
    ltp: Decimal
    prev_close: Decimal | None


def usable_levels(items: Sequence[MultiQuoteItem]) -> list[IndexLevel]:
    """The items of a ``multiquotes`` reply that are one of :data:`INDEX_PAIRS` and carry a positive LTP
    (an item's error, a missing quote, a zero or missing LTP: skipped). A zero or negative previous close
    is unknown. An item without an exchange is matched by its symbol; the first of duplicates wins."""
    levels: dict[str, IndexLevel] = {}
    for item in items:
        symbol = item.symbol.upper()
        exchange = _EXCHANGE_OF.get(symbol)
        if exchange is None or (item.exchange and item.exchange.upper() != exchange):
            continue
        quote = item.quote
        if quote is None or quote.ltp is None or quote.ltp <= 0 or symbol in levels:
            continue
        prev_close = quote.prev_close if quote.prev_close is not None and quote.prev_close > 0 else None
        levels[symbol] = IndexLevel(symbol, exchange, quote.ltp, prev_close)
    return list(levels.values())


def store_index_quotes(
    session: Session, account_id: int, levels: Sequence[IndexLevel], *, quoted_at: datetime
) -> int:
    """Upsert ``levels`` as the account's ``index_quotes`` rows stamped ``quoted_at``; rows of indices
    not in ``levels`` are kept as they were. Returns the number of rows written. The caller commits."""
    existing = {
        (row.exchange, row.symbol): row
        for row in session.scalars(select(IndexQuote).where(IndexQuote.account_id == account_id))
    }
    for level in levels:
        row = existing.get((level.exchange, level.symbol))
        if row is None:
            row = IndexQuote(account_id=account_id, exchange=level.exchange, symbol=level.symbol)
            session.add(row)
        row.ltp = level.ltp
        row.prev_close = level.prev_close
        row.quoted_at = quoted_at
    return len(levels)


class IndexQuoteReader:
    """Reads and stores the index quotes of primary accounts (see the module docstring). One per
    :class:`~algomirror.engine.sync.AccountSync`; ``clock`` stamps ``quoted_at`` and times the back-off;
    ``is_unsupported(endpoint, error)`` says whether an error means the broker lacks the endpoint (the
    sync's own rule, :func:`algomirror.engine.sync.is_unsupported`)."""

    def __init__(
        self,
        database: Database,
        clock: Clock,
        *,
        retry_seconds: float,
        unsupported_seconds: float,
        is_unsupported: Callable[[str, BrokerError], bool],
    ) -> None:
        self.database = database
        self.clock = clock
        self.retry_seconds = retry_seconds
        self.unsupported_seconds = unsupported_seconds
        self._is_unsupported = is_unsupported
        # account id -> no read before this instant (clock time), after a failure.
        self._not_before: dict[int, datetime] = {}
        # Accounts whose last read failed: the first failure is logged at info, repeats at debug.
        self._failing: set[int] = set()

    def forget(self, account_id: int) -> None:
        """Drop what is remembered about an account (deleted or deactivated)."""
        self._not_before.pop(account_id, None)
        self._failing.discard(account_id)

    async def refresh(
        self, account_id: int, api_key_encrypted: str, client: OpenAlgoClient, *, name: str = ""
    ) -> int | None:
        """Read the indices through ``client`` and store them for ``account_id``. Returns how many were
        stored, or None when nothing was read (backing off, or the read failed). Never raises for a
        broker or database problem: those are logged."""
        now = self.clock.now()
        due = self._not_before.get(account_id)
        if due is not None and now < due:
            return None
        try:
            items = await client.multiquotes(INDEX_PAIRS)
        except BrokerError as exc:
            self._failed(account_id, name, client, exc)
            return None
        levels = usable_levels(items)
        quoted_at = self.clock.now()
        try:
            stored = await asyncio.to_thread(self._store, account_id, api_key_encrypted, levels, quoted_at)
        except SQLAlchemyError as exc:
            log.warning("index quotes %s: cannot store: %s", account_id, str(exc).splitlines()[0])
            return None
        self._not_before.pop(account_id, None)
        if account_id in self._failing:
            self._failing.discard(account_id)
            log.info("index quotes %s (%s): read again", account_id, name)
        if len(levels) < len(INDEX_PAIRS):
            log.debug(
                "index quotes %s: %d of %d usable (%s)",
                account_id,
                len(levels),
                len(INDEX_PAIRS),
                "; ".join(f"{i.symbol}: {i.error}" for i in items if i.error) or "zero or missing LTP",
            )
        return stored

    def _failed(self, account_id: int, name: str, client: OpenAlgoClient, exc: BrokerError) -> None:
        if isinstance(exc, RateLimitedError):
            # Nothing was executed; the next cycle asks again.
            log.debug("index quotes %s: rate limited, left for the next cycle", account_id)
            return
        unsupported = self._is_unsupported("multiquotes", exc)
        wait = self.unsupported_seconds if unsupported else self.retry_seconds
        self._not_before[account_id] = self.clock.now() + timedelta(seconds=wait)
        if isinstance(exc, AuthError) and client.halted is exc:
            # The books were read with this key a moment ago: a refusal of quotes alone must not stop
            # the account's other calls. Any other caller refused the same way halts it again.
            client.clear_halt()
        level = logging.DEBUG if account_id in self._failing else logging.INFO
        self._failing.add(account_id)
        log.log(
            level,
            "index quotes %s (%s): %s (%s); next try in %.0f s",
            account_id,
            name,
            "the broker has no multiquotes" if unsupported else "read failed",
            exc.message,
            wait,
        )

    def _store(
        self, account_id: int, api_key_encrypted: str, levels: list[IndexLevel], quoted_at: datetime
    ) -> int:
        with self.database.session() as session:
            # The account may have been deleted, deactivated, re-keyed or replaced as primary while the
            # read was in flight: its quotes are then not the primary's.
            row = session.execute(
                select(
                    TradingAccount.api_key_encrypted, TradingAccount.is_primary, TradingAccount.is_active
                ).where(TradingAccount.id == account_id)
            ).one_or_none()
            if row is None or row.api_key_encrypted != api_key_encrypted:
                return 0
            if not (row.is_primary and row.is_active and levels):
                return 0
            return store_index_quotes(session, account_id, levels, quoted_at=quoted_at)


__all__ = ["INDEX_PAIRS", "IndexLevel", "IndexQuoteReader", "store_index_quotes", "usable_levels"]
