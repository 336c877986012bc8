"""The header's index strip: NIFTY, BANKNIFTY and SENSEX from the signed-in user's primary account.

The engine's sync stores the quotes (``index_quotes``, :mod:`algomirror.engine.index_quotes`); this
module only reads them: :func:`index_strip` is the query (one per render), ``market.header_live`` at
``/header/live`` the header fragment htmx polls (market clock + strip), and the ``index_strip_rows()``
template callable (a context processor of this blueprint) lets base.html include ``_index_strip.html``
on every page.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from flask import Blueprint, current_app, g, render_template
from flask.typing import ResponseReturnValue
from flask_login import current_user, login_required
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from algomirror.db.models import IndexQuote, TradingAccount
from algomirror.db.models.market import INDEX_PAIRS
from algomirror.domain.money import format_inr
from algomirror.domain.timeutil import format_ist
from algomirror.web.context import db, market_now, me
from algomirror.web.dashboard import age_text, signed_out_fragment, stale_after

bp = Blueprint("market", __name__)

_CENT = Decimal("0.01")


def _number(value: Decimal) -> str:
    """An index level with Indian grouping and 2 decimals, without the rupee sign (it is not money)."""
    return format_inr(value).replace("₹", "", 1)


def _signed(value: Decimal) -> str:
    text = _number(value)
    return f"+{text}" if value > 0 else text


@dataclass(frozen=True)
class IndexRow:
    """One index of the strip. Every value is None when unknown (no quote stored for it yet; no
    previous close); ``stale`` when the quote is older than the dashboard's stale threshold."""

    symbol: str
    exchange: str
    ltp: Decimal | None
    prev_close: Decimal | None
    quoted_at: datetime | None
    age_seconds: int | None
    account_name: str
    stale: bool = False

    @property
    def change(self) -> Decimal | None:
        """LTP minus the previous close."""
        if self.ltp is None or self.prev_close is None:
            return None
        return self.ltp - self.prev_close

    @property
    def change_pct(self) -> Decimal | None:
        """The change in % of the previous close, 2 decimals (None without a usable previous close)."""
        change = self.change
        if change is None or self.prev_close is None or self.prev_close == 0:
            return None
        return (change * 100 / self.prev_close).quantize(_CENT, rounding=ROUND_HALF_UP)

    @property
    def sign_class(self) -> str:
        """``positive``, ``negative`` or ``zero`` by the change; ``unknown`` when there is none."""
        change = self.change
        if change is None:
            return "unknown"
        return "positive" if change > 0 else ("negative" if change < 0 else "zero")

    @property
    def ltp_text(self) -> str:
        """The level ("26,105.35") or "—"."""
        return "—" if self.ltp is None else _number(self.ltp)

    @property
    def change_text(self) -> str:
        """The change with its sign ("+31.45", "-8.10", "0.00") or "—"."""
        change = self.change
        return "—" if change is None else _signed(change)

    @property
    def pct_text(self) -> str:
        """The change in % with its sign ("+0.12%") or "—"."""
        pct = self.change_pct
        return "—" if pct is None else f"{_signed(pct)}%"

    @property
    def age_text(self) -> str:
        """ "4 s ago" (see :func:`algomirror.web.dashboard.age_text`); "—" without a quote."""
        return "—" if self.age_seconds is None else age_text(self.age_seconds)


def index_strip(
    session: Session, user_id: int, now: datetime, *, stale_after: timedelta | None = None
) -> list[IndexRow]:
    """The strip of ``user_id``: NIFTY, BANKNIFTY and SENSEX in that order, from the quotes stored for
    the user's own active primary account (never another user's, never another account's). An index
    without a stored quote is a row of unknowns. [] when the user has no active primary account or no
    quote has been stored for it yet. ``now`` (aware) gives the ages; with ``stale_after`` a quote older
    than that is ``stale``. One query."""
    rows = session.execute(
        select(
            TradingAccount.account_name,
            IndexQuote.exchange,
            IndexQuote.symbol,
            IndexQuote.ltp,
            IndexQuote.prev_close,
            IndexQuote.quoted_at,
        )
        .join(IndexQuote, IndexQuote.account_id == TradingAccount.id)
        .where(
            TradingAccount.user_id == user_id,
            TradingAccount.is_primary.is_(True),
            TradingAccount.is_active.is_(True),
            TradingAccount.archived_at.is_(None),
        )
    ).all()
    if not rows:
        return []
    account_name = rows[0].account_name
    found = {(r.exchange, r.symbol): r for r in rows}
    strip: list[IndexRow] = []
    for symbol, exchange in INDEX_PAIRS:
        row = found.get((exchange, symbol))
        if row is None:
            strip.append(IndexRow(symbol, exchange, None, None, None, None, account_name))
            continue
        age = max(0, int((now - row.quoted_at).total_seconds()))
        stale = stale_after is not None and age > stale_after.total_seconds()
        strip.append(
            IndexRow(symbol, exchange, row.ltp, row.prev_close, row.quoted_at, age, account_name, stale)
        )
    return strip


def strip_title(rows: list[IndexRow]) -> str:
    """The strip's tooltip: where the levels come from and when they were quoted (IST)."""
    if not rows:
        return ""
    stamps = [r.quoted_at for r in rows if r.quoted_at is not None]
    when = f", quoted {format_ist(max(stamps), '%d %b %H:%M:%S')}" if stamps else ""
    return f"Index levels from your primary account {rows[0].account_name}{when}"


def index_strip_rows() -> list[IndexRow]:
    """The signed-in user's strip for templates ([] when signed out), read once per request however
    often a page asks. A database failure yields [] (the header must not break a page)."""
    if not current_user.is_authenticated:
        return []
    cached: list[IndexRow] | None = g.get("index_strip_rows")
    if cached is not None:
        return cached
    at = market_now()
    session = db()
    try:
        rows = index_strip(session, me().id, at, stale_after=stale_after(at))
    except SQLAlchemyError as exc:
        session.rollback()
        current_app.logger.warning("could not read the index strip: %s", type(exc).__name__)
        rows = []
    g.index_strip_rows = rows
    return rows


@bp.app_context_processor
def _strip_helpers() -> dict[str, Any]:
    # Callables: a page whose layout does not show the strip costs no query.
    return {"index_strip_rows": index_strip_rows, "index_strip_title": strip_title}


@bp.route("/header/live")
def header_live() -> ResponseReturnValue:
    """The header's live part on every page: the market clock and the index strip (htmx polls it;
    see :func:`signed_out_fragment` after sign-out)."""
    return signed_out_fragment() or _header_live()


@login_required
def _header_live() -> ResponseReturnValue:
    return render_template("_header_live.html")
