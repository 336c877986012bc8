"""Market data the engine caches for the web: ``index_quotes``, the header's index strip.

Views never talk to a broker, so the engine's sync reads the index levels through the user's primary
account and stores them here; the web only reads this table. A cache: rows go with their account.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Final

from sqlalchemy import ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from algomirror.db.base import Base
from algomirror.db.types import Price, UTCDateTime

# The indices of the strip as (symbol, exchange), in the order it shows them.
INDEX_PAIRS: Final[tuple[tuple[str, str], ...]] = (
    ("NIFTY", "NSE_INDEX"),
    ("BANKNIFTY", "NSE_INDEX"),
    ("SENSEX", "BSE_INDEX"),
)


class IndexQuote(Base):
    """The last good quote of one index (NIFTY, BANKNIFTY, SENSEX) read through one account.

    ``ltp`` is never 0 or unknown (such a reply is not stored); ``prev_close`` is NULL when the broker
    did not give it. ``quoted_at`` is when the engine received the quote (its injected clock).
    """

    __tablename__ = "index_quotes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("trading_accounts.id", ondelete="CASCADE"), nullable=False
    )
    exchange: Mapped[str] = mapped_column(String(20), nullable=False)
    symbol: Mapped[str] = mapped_column(String(50), nullable=False)
    ltp: Mapped[Decimal] = mapped_column(Price(), nullable=False)
    prev_close: Mapped[Decimal | None] = mapped_column(Price())
    quoted_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)

    __table_args__ = (UniqueConstraint("account_id", "exchange", "symbol"),)
