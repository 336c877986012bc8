"""Multi-account book pages: Positions, Orders, Trades, Holdings, Funds (+ live fragments and CSV),
cancel of an open order (confirm page, then a POST that queues an engine command), and the account
overview panels (funds, positions, orders, connection history).

Pages read only our database (the engine's sync fills it). Filters and sorting are GET parameters, so
every page works without JavaScript; htmx polls the ``live`` fragment with the same parameters. No
view talks to a broker: the cancel POST records a ``cancel_order`` row in ``engine_commands`` and the
engine's command processor sends it; the order's status changes only when the broker reports it. The
POST is CSRF-protected and rate limited with ``ratelimit_broker`` (each one becomes a broker call).
"""

from __future__ import annotations

import csv
import io
import secrets
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from flask.blueprints import BlueprintSetupState
from flask.typing import ResponseReturnValue
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Response as WerkzeugResponse

from algomirror.db.models import EngineCommand, Order, TradingAccount
from algomirror.domain.timeutil import format_ist, to_ist
from algomirror.web import queries, strategy_groups
from algomirror.web.context import (
    db,
    is_same_site_path,
    log_activity,
    market_now,
    me,
    now,
    redirect_to,
)
from algomirror.web.dashboard import (
    POLL_SECONDS,
    market_status,
    require_sign_in,
    stale_after,
)
from algomirror.web.ids import parse_id

bp = Blueprint("books", __name__)

KINDS = ("positions", "orders", "trades", "holdings", "funds")
# Rows per page of the HTML table (subtotals and totals always cover every matching row; the CSV has all).
PAGE_SIZE = 100
# The engine command a Cancel queues (payload: account_id, order_id = broker id, order_pk = our row).
CANCEL_COMMAND = "cancel_order"
ACTIVE_COMMAND_STATUSES = ("pending", "running")
COMMAND_TOKEN_MAX = 100  # engine_commands.token is VARCHAR(100)
CSV_INJECTION_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


require_sign_in(bp)


# ----------------------------------------------------------------------------------------- params


def _page_number(raw: str) -> int:
    """A 1-based page number from ASCII digits, capped at 100,000; anything else is page 1."""
    if not (raw.isascii() and raw.isdigit()):
        return 1
    digits = raw.lstrip("0")
    if len(digits) > 6:
        return 100_000
    return max(1, min(int(digits or "0"), 100_000))


class Filters:
    """The page's GET parameters, validated: ``account`` (id), ``symbol`` (text), ``status`` (one of
    :data:`queries.ORDER_STATUS_FILTERS`, else none), ``sort``, ``dir``, ``page`` (1-based)."""

    def __init__(self, args: MultiDict[str, str]) -> None:
        raw_account = (args.get("account") or "").strip()
        self.account_id: int | None = parse_id(raw_account)
        # A number outside the id range names no account: the same 404 as an id that is not the user's.
        self.account_unknown = self.account_id is None and raw_account.isascii() and raw_account.isdigit()
        self.symbol = (args.get("symbol") or "").strip()[:50]
        raw_status = (args.get("status") or "").strip().lower()
        self.status = raw_status if raw_status in queries.ORDER_STATUS_FILTERS else ""
        self.sort = (args.get("sort") or "").strip()[:40] or None
        direction = (args.get("dir") or "").strip().lower()
        self.descending: bool | None = {"asc": False, "desc": True}.get(direction)
        raw_page = (args.get("page") or "").strip()
        self.page = _page_number(raw_page)

    def params(self, **overrides: Any) -> dict[str, Any]:
        """The parameters that are set (``overrides`` applied), as for ``url_for``; page 1 is left out."""
        values: dict[str, Any] = {
            "account": self.account_id,
            "symbol": self.symbol or None,
            "status": self.status or None,
            "sort": self.sort,
            "dir": None if self.descending is None else ("desc" if self.descending else "asc"),
            "page": self.page if self.page > 1 else None,
        }
        values.update(overrides)
        return {k: v for k, v in values.items() if v not in (None, "")}

    def query(self, **overrides: Any) -> str:
        """The parameters as a query string (for links inside loops: cheaper than ``url_for``)."""
        return urlencode(self.params(**overrides))


def _read(kind: str, filters: Filters, *, limit: int | None, offset: int = 0) -> queries.BookResult:
    if filters.account_unknown:
        abort(404)
    try:
        return queries.read_book(
            db(),
            me().id,
            kind,
            account_id=filters.account_id,
            symbol=filters.symbol,
            status=filters.status if kind == "orders" else None,
            sort=filters.sort,
            descending=filters.descending,
            limit=limit,
            offset=offset,
        )
    except queries.NotOwned:
        abort(404)


def _context(kind: str) -> dict[str, Any]:
    at = market_now()
    filters = Filters(request.args)
    result = _read(kind, filters, limit=PAGE_SIZE, offset=(filters.page - 1) * PAGE_SIZE)
    pages = max(1, -(-result.matched // PAGE_SIZE))
    return {
        "kind": kind,
        "book": queries.BOOKS[kind],
        "result": result,
        "filters": filters,
        "filter_query": filters.query,
        "base_url": url_for(f"books.{kind}"),
        "overview_prefix": request.script_root + "/accounts/",
        "page": filters.page,
        "pages": pages,
        "cancel_requests": _requested_cancels() if kind == "orders" else set(),
        "groups": strategy_groups.position_groups(
            db(), me().id, account_id=filters.account_id, symbol=filters.symbol
        )
        if kind == "positions"
        else None,
        "poll_seconds": POLL_SECONDS,
        "generated_at": at,
        "today": to_ist(at).date(),
    }


def _page(kind: str) -> str:
    return render_template(
        "books/page.html", accounts=queries.account_choices(db(), me().id), **_context(kind)
    )


# ------------------------------------------------------------------------------------------ pages


@bp.route("/positions")
def positions() -> ResponseReturnValue:
    """The Positions page over the user's accounts (filters and sort from the GET parameters)."""
    return _page("positions")


@bp.route("/orders")
def orders() -> ResponseReturnValue:
    """The Orders page over the user's accounts (filters and sort from the GET parameters)."""
    return _page("orders")


@bp.route("/trades")
def trades() -> ResponseReturnValue:
    """The Trades page over the user's accounts (filters and sort from the GET parameters)."""
    return _page("trades")


@bp.route("/holdings")
def holdings() -> ResponseReturnValue:
    """The Holdings page over the user's accounts (filters and sort from the GET parameters)."""
    return _page("holdings")


@bp.route("/funds")
def funds() -> ResponseReturnValue:
    """The Funds page over the user's accounts (filters and sort from the GET parameters)."""
    return _page("funds")


@bp.route("/<any(positions, orders, trades, holdings, funds):kind>/live")
def live(kind: str) -> ResponseReturnValue:
    """Subtotals and table of a book page (htmx polls this with the page's own parameters)."""
    return render_template("books/_live.html", **_context(kind))


# -------------------------------------------------------------------------------------------- CSV


def plain_decimal(value: Decimal) -> str:
    """A spreadsheet-friendly number with at least 2 decimals and every significant one after that
    (prices and averages are kept to 4): ``123.4`` → ``123.40``, ``123.4567`` → ``123.4567``."""
    text = f"{value:f}"
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.rstrip('0').ljust(2, '0')}"


def _csv_text(value: Any, kind: str) -> str:
    if value is None:
        return ""
    if kind == "time" and isinstance(value, datetime):
        return to_ist(value).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, Decimal):
        return plain_decimal(value)
    text = str(value)
    # Spreadsheets run cells starting with these as formulas; a quote makes them plain text.
    if kind in ("text", "side", "status") and text.startswith(CSV_INJECTION_PREFIXES):
        return "'" + text
    return text


def _csv_lines(result: queries.BookResult, book: queries.Book) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([c.label + (" (IST)" if c.kind == "time" else "") for c in book.columns])
    for row in result.rows:
        writer.writerow([_csv_text(row.get(c.key), c.kind) for c in book.columns])
    yield buffer.getvalue()


@bp.route("/<any(positions, orders, trades, holdings, funds):kind>.csv")
def export(kind: str) -> Response:
    """All matching rows (no row limit) as CSV with an account column; amounts as plain 2-dp numbers,
    unknown as an empty cell, times in IST."""
    filters = Filters(request.args)
    result = _read(kind, filters, limit=None)
    book = queries.BOOKS[kind]
    stamp = to_ist(market_now()).strftime("%Y%m%d-%H%M%S")
    body = "".join(_csv_lines(result, book))
    return Response(
        "\ufeff" + body,
        mimetype="text/csv",
        headers={
            "Content-Disposition": f'attachment; filename="algomirror-{kind}-{stamp}.csv"',
            "Content-Type": "text/csv; charset=utf-8",
        },
    )


# ----------------------------------------------------------------------------------------- cancel


def _own_order(order_pk: int) -> tuple[Order, TradingAccount]:
    """Our order row and its account; 404 when it is not the signed-in user's."""
    found = queries.order_for_user(db(), me().id, order_pk)
    if found is None:
        abort(404)
    return found


def _cancel_commands(order_pk: int | None = None, *, active: bool = False) -> list[EngineCommand]:
    """The signed-in user's cancel commands, newest first: of one order (``order_pk``) or of all, and
    only pending/running ones when ``active``."""
    query = select(EngineCommand).where(
        EngineCommand.user_id == me().id, EngineCommand.kind == CANCEL_COMMAND
    )
    if order_pk is not None:
        query = query.where(EngineCommand.payload["order_pk"].as_integer() == order_pk)
    if active:
        query = query.where(EngineCommand.status.in_(ACTIVE_COMMAND_STATUSES))
    return list(db().scalars(query.order_by(EngineCommand.id.desc())))


def _requested_cancels() -> set[int]:
    """Our order ids (``orders.id``) with a cancel still waiting for the engine or the broker."""
    pks: set[int] = set()
    for command in _cancel_commands(active=True):
        order_pk = (command.payload or {}).get("order_pk")
        if isinstance(order_pk, int):
            pks.add(order_pk)
    return pks


def _cancel_page(
    order: Order, account: TradingAccount, back: str, *, error: str | None = None, code: int = 200
) -> tuple[str, int]:
    commands = _cancel_commands(order.id)
    latest = commands[0] if commands else None
    waiting = latest is not None and latest.status in ACTIVE_COMMAND_STATUSES
    page = render_template(
        "books/cancel.html",
        order=order,
        account=account,
        is_open=order.status in queries.OPEN_ORDER_STATUSES,
        back=back,
        error=error,
        command=latest,
        waiting=waiting,
        # The idempotency key of the cancel this page would request: a second submit of the same
        # form is the same command (engine_commands.token is unique).
        command_token=secrets.token_urlsafe(24),
    )
    return page, code


def _already_requested(order: Order, back: str) -> WerkzeugResponse:
    flash(f"A cancel of order {order.order_id} is already requested.", "warning")
    return redirect(url_for("books.cancel_order", order_pk=order.id, back=back), code=303)


@bp.route("/orders/<id:order_pk>/cancel", methods=["GET", "POST"])
def cancel_order(order_pk: int) -> ResponseReturnValue:
    """GET: the confirmation page, and the state of the latest cancel request of this order.
    POST (CSRF-checked, with the page's ``command_token``): queue a ``cancel_order`` engine command.

    The view never calls the broker and never changes the order: the engine sends the cancel and
    writes the order's status from the broker's own report. The same token posted twice, or a cancel
    while another is still pending, is answered "already requested" (303). The activity log gets
    ``order_cancel_requested``; the engine logs the outcome.
    """
    order, account = _own_order(order_pk)
    back = request.values.get("back") or ""
    if not is_same_site_path(back):
        back = url_for("books.orders")
    if request.method == "GET":
        return _cancel_page(order, account, back)
    if order.status not in queries.OPEN_ORDER_STATUSES:
        return redirect_to(
            "books.orders", f"Order {order.order_id} is {order.status}; nothing to cancel.", "warning"
        )
    token = (request.form.get("command_token") or "").strip()
    if not token or len(token) > COMMAND_TOKEN_MAX:
        return _cancel_page(
            order, account, back, error="This form is out of date; confirm the cancel again.", code=400
        )
    if not account.api_key_encrypted:
        error = "This account has no API key; edit the account to add one."
        return _cancel_page(order, account, back, error=error, code=409)
    used = db().scalar(select(EngineCommand).where(EngineCommand.token == token))
    if used is not None or _cancel_commands(order.id, active=True):
        if used is not None and (used.user_id != me().id or (used.payload or {}).get("order_pk") != order.id):
            return _cancel_page(
                order, account, back, error="This form was already used; confirm the cancel again.", code=409
            )
        return _already_requested(order, back)
    # End the read transaction before writing: on SQLite a transaction that has read cannot take the
    # write lock once another writer (a second submit) committed; a fresh one waits for it instead.
    db().commit()
    at = now()
    db().add(
        EngineCommand(
            user_id=me().id,
            kind=CANCEL_COMMAND,
            payload={"account_id": account.id, "order_id": order.order_id, "order_pk": order.id},
            token=token,
            status="pending",
            created_at=at,
            updated_at=at,
        )
    )
    log_activity(
        db(),
        "order_cancel_requested",
        user_id=me().id,
        account_id=account.id,
        details=f"order {order.order_id} {order.action} {order.quantity} {order.symbol}",
    )
    try:
        db().commit()
    except IntegrityError:
        # Two submits of one form raced past the check above: the token's unique index kept it to one.
        db().rollback()
        if db().scalar(select(EngineCommand.id).where(EngineCommand.token == token)) is None:
            raise
        return _already_requested(order, back)
    flash(
        f"Cancel requested for order {order.order_id} ({account.account_name}). "
        "Its status changes when the broker confirms.",
        "success",
    )
    return redirect(url_for("books.cancel_order", order_pk=order.id, back=back), code=303)


# --------------------------------------------------------------------------------- account overview


def _overview_context(account_id: int) -> dict[str, Any]:
    at = market_now()
    market = market_status(at)
    try:
        cards = queries.account_cards(
            db(), me().id, now=at, stale_after=stale_after(at, market.is_open), account_id=account_id
        )
        positions_result = queries.read_book(
            db(), me().id, "positions", account_id=account_id, limit=PAGE_SIZE
        )
        orders_result = queries.read_book(db(), me().id, "orders", account_id=account_id, limit=100)
    except queries.NotOwned:
        abort(404)
    return {
        "card": cards[0],
        "positions": positions_result,
        "orders": orders_result,
        "positions_book": queries.BOOKS["positions"],
        "orders_book": queries.BOOKS["orders"],
        "history": queries.connection_history(db(), me().id, account_id),
        "cancel_requests": _requested_cancels(),
        "poll_seconds": POLL_SECONDS,
        "generated_at": at,
        "today": to_ist(at).date(),
    }


@bp.route("/accounts/<id:account_id>/overview")
def account_overview(account_id: int) -> ResponseReturnValue:
    """One account's overview: funds, positions, open orders and connection history (404 if not the
    user's)."""
    return render_template("books/account.html", **_overview_context(account_id))


@bp.route("/accounts/<id:account_id>/overview/live")
def account_overview_live(account_id: int) -> ResponseReturnValue:
    """The overview's polled fragment."""
    return render_template("books/_account_live.html", **_overview_context(account_id))


@bp.app_template_global("ist_short")
def ist_short(value: datetime | None) -> str:
    """Template global: an instant as IST "24 Nov 09:15:02", "—" for None."""
    return format_ist(value, "%d %b %H:%M:%S") if value is not None else "—"


@bp.record_once
def _limit_cancel(setup: BlueprintSetupState) -> None:
    """The cancel POST reaches a broker: give it the broker-touching rate limit of the app's limiter."""
    app = setup.app
    settings = app.extensions["algomirror"].settings
    for limiter in app.extensions.get("limiter", ()):
        endpoint = "books.cancel_order"
        app.view_functions[endpoint] = limiter.limit(settings.ratelimit_broker, methods=["POST"])(
            app.view_functions[endpoint]
        )
