"""Market-data pages (issue 12, PRODUCT §7.3, §7.5): the live option chain and the feed status page.

Routes (blueprint ``market_data`` at ``/market``, sign-in required):

* ``GET /market/chain?instrument=NIFTY&expiry=YYYY-MM-DD&strikes=20`` — the chain page. The instrument
  is NIFTY, BANKNIFTY or SENSEX; the expiries come from the gateway (OpenAlgo ``expiry``, options, on the
  user's primary active account, cached :data:`EXPIRY_CACHE_SECONDS`); ``strikes`` each side of ATM
  (1–50, default 20 → 41 rows). A bad parameter is a 400 with the reason on the page; a gateway that
  cannot list expiries is said on the page (200: the page works, the gateway failed). The rows are
  drawn and kept live by ``static/js/option_chain.js`` from the
  engine's ``chain:{uid}:{INSTRUMENT}:{expiry}`` events (:func:`algomirror.engine.chain.chain_payload`).
* ``POST /market/chain/sessions`` (JSON {instrument, expiry, strikes}; CSRF header) — the page's viewing
  session: a ``websocket_sessions`` row (type ``option_chain``) expiring 5 minutes later. 201 with
  {session_id, expires_at, heartbeat_url, end_url, heartbeat_seconds}. The same validation as the page
  (400 JSON with ``message``); at most :data:`MAX_SESSIONS_PER_USER` live sessions per user (429).
* ``POST /market/chain/sessions/<session_id>/heartbeat`` — renews the user's own session for 5 minutes
  (404 for an unknown or someone else's session, 410 once it expired: the page then opens a new one).
* ``POST /market/chain/sessions/<session_id>/end`` — ends it (the page's ``pagehide`` beacon, which
  sends the CSRF token as a form field); 204, or 404 as above.
* ``GET /market/feeds`` — per feed of the user: feed account, state, last message age, subscriptions,
  REST fallback (live from the ``user:{id}:feed`` topic through ``static/js/feed_status.js``), the
  ``websocket_connections`` rows of the user's accounts and the latest :data:`FAILOVERS_SHOWN`
  ``failover_events`` touching them.

Session times (expires_at, heartbeats) are on the web's real clock, as the engine's chain component
reads them. Another user's session is never read or written: every query is bounded by the user's id.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from flask import Blueprint, Response, jsonify, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user, login_required
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from algomirror.broker.errors import BrokerError
from algomirror.db.models import FailoverEvent, TradingAccount, WebSocketConnection, WebSocketSession
from algomirror.domain.instruments import underlying_spec
from algomirror.domain.timeutil import clock_speed
from algomirror.engine.chain import (
    CHAIN_INSTRUMENTS,
    DEFAULT_STRIKES,
    MAX_STRIKES,
    SESSION_TTL,
    SESSION_TYPE,
    chain_topic,
)
from algomirror.web.account_access import AccessRefused, broker_access
from algomirror.web.context import db, market_now, me, now, release_db, state

bp = Blueprint("market_data", __name__, url_prefix="/market")

#: How long a gateway's expiry list is reused (per account and instrument).
EXPIRY_CACHE_SECONDS = 300.0
#: The browser renews its viewing session this often (PRODUCT §7.5).
HEARTBEAT_SECONDS = 30
MAX_SESSIONS_PER_USER = 10
FAILOVERS_SHOWN = 50
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class ChainArgsError(ValueError):
    """A chain parameter that is refused; ``str(exc)`` is the user-facing reason."""


class ExpiryLookupError(RuntimeError):
    """The gateway could not list the expiries; ``str(exc)`` says why (never the key)."""


@dataclass(frozen=True, slots=True)
class ChainArgs:
    """Validated chain parameters: ``expiry`` None = the first listed one."""

    instrument: str
    expiry: date | None
    strikes: int


def parse_chain_args(values: Any) -> ChainArgs:
    """Read ``instrument`` (default NIFTY), ``expiry`` (YYYY-MM-DD, default none) and ``strikes`` (1–50,
    default 20) from a mapping of request values. Raises :class:`ChainArgsError` with the reason."""
    raw_instrument = str(values.get("instrument") or "NIFTY").strip().upper()
    if raw_instrument not in CHAIN_INSTRUMENTS:
        raise ChainArgsError(f"Unknown instrument: choose one of {', '.join(CHAIN_INSTRUMENTS)}.")
    raw_strikes = values.get("strikes")
    if raw_strikes is None or raw_strikes == "":
        strikes = DEFAULT_STRIKES
    else:
        text = str(raw_strikes).strip()
        if not text.isdigit() or not 1 <= int(text) <= MAX_STRIKES:
            raise ChainArgsError(f"Strikes each side of ATM must be a whole number from 1 to {MAX_STRIKES}.")
        strikes = int(text)
    raw_expiry = str(values.get("expiry") or "").strip()
    expiry: date | None = None
    if raw_expiry:
        if not _ISO_DATE.fullmatch(raw_expiry):
            raise ChainArgsError("Expiry must be a date written YYYY-MM-DD, e.g. 2026-12-01.")
        try:
            expiry = date.fromisoformat(raw_expiry)
        except ValueError:
            raise ChainArgsError("Expiry is not a real date (YYYY-MM-DD).") from None
    return ChainArgs(raw_instrument, expiry, strikes)


def primary_account(session: Session, user_id: int) -> TradingAccount | None:
    """The user's primary active account with a key, else the oldest active one with a key (the feed's
    order), else None."""
    return session.scalars(
        select(TradingAccount)
        .where(
            TradingAccount.user_id == user_id,
            TradingAccount.is_active.is_(True),
            TradingAccount.api_key_encrypted.is_not(None),
        )
        .order_by(TradingAccount.is_primary.desc(), TradingAccount.created_at, TradingAccount.id)
        .limit(1)
    ).first()


_expiry_cache: dict[tuple[int, str, str, str], tuple[float, tuple[date, ...]]] = {}
_expiry_lock = threading.Lock()


def listed_expiries(account: TradingAccount, instrument: str) -> tuple[date, ...]:
    """The instrument's unexpired option expiries, ascending, from the gateway on ``account`` (cached per
    account, host, key and instrument). Releases the request's transaction before the call. Raises
    :class:`ExpiryLookupError` when the host is not allowed, the key is unreadable or the call fails."""
    key_token = account.api_key_encrypted or ""
    cache_key = (account.id, account.host_url, key_token, instrument)
    with _expiry_lock:
        cached = _expiry_cache.get(cache_key)
    if cached is not None and time.monotonic() - cached[0] < EXPIRY_CACHE_SECONDS:
        return cached[1]
    try:
        access = broker_access(account)
    except AccessRefused as exc:
        raise ExpiryLookupError(str(exc)) from None
    from algomirror.broker.sync_facade import call_broker

    spec = underlying_spec(instrument)
    release_db()
    try:
        days = call_broker(
            access.host_url, access.api_key, lambda c: c.expiry(spec.name, spec.fo_exchange, "options")
        )
    except BrokerError as exc:
        raise ExpiryLookupError(
            f"“{access.name}” could not list the {spec.name} expiries: {exc.message}"
        ) from None
    listed = tuple(sorted(days))
    with _expiry_lock:
        _expiry_cache[cache_key] = (time.monotonic(), listed)
    return listed


def _resolve(args: ChainArgs) -> tuple[TradingAccount | None, tuple[date, ...], date | None]:
    """(account, listed expiries, chosen expiry). Raises ChainArgsError for an expiry not listed and
    ExpiryLookupError when the gateway cannot list them; (None, (), None) without an account."""
    account = primary_account(db(), me().id)
    if account is None:
        return None, (), None
    listed = listed_expiries(account, args.instrument)
    if not listed:
        raise ExpiryLookupError(f"The gateway lists no {args.instrument} option expiries.")
    if args.expiry is None:
        return account, listed, listed[0]
    if args.expiry not in listed:
        raise ChainArgsError(
            f"{args.expiry.isoformat()} is not a listed {args.instrument} expiry; choose one from the list."
        )
    return account, listed, args.expiry


# ------------------------------------------------------------------------------------------ guard


@bp.before_request
def _signed_in() -> ResponseReturnValue | None:
    if current_user.is_authenticated:
        return None
    if request.method == "POST":
        # A heartbeat or beacon after sign-out: a JSON answer, not the sign-in page.
        return _json_error(401, "Signed out: sign in again.")
    return _require_login()


@login_required
def _require_login() -> None:
    return None


def _json_error(status: int, message: str) -> ResponseReturnValue:
    return jsonify({"error": status, "message": message}), status


# ------------------------------------------------------------------------------------------ chain


@bp.route("/chain")
@bp.route("/")
def chain() -> ResponseReturnValue:
    """The option chain page (see the module docstring)."""
    context: dict[str, Any] = {
        "instruments": CHAIN_INSTRUMENTS,
        "max_strikes": MAX_STRIKES,
        "instrument": "NIFTY",
        "strikes": DEFAULT_STRIKES,
        "expiries": (),
        "expiry": None,
        "error": None,
        "account": None,
    }
    try:
        args = parse_chain_args(request.args)
    except ChainArgsError as exc:
        context["error"] = str(exc)
        return render_template("market/chain.html", **context), 400
    context.update(instrument=args.instrument, strikes=args.strikes)
    status = 200
    try:
        account, listed, expiry = _resolve(args)
        context.update(account=account, expiries=listed, expiry=expiry)
    except ChainArgsError as exc:
        context["error"] = str(exc)
        status = 400
    except ExpiryLookupError as exc:
        # The page itself is fine: it says the gateway failed and offers the form again (a 5xx would
        # read as our failure). The JSON session endpoint still answers 502.
        context["error"] = str(exc)
        context["gateway_failed"] = True
    if context["expiry"] is not None and status == 200 and not context.get("gateway_failed"):
        spec = underlying_spec(args.instrument)
        iso = context["expiry"].isoformat()
        context.update(
            topic=chain_topic(me().id, args.instrument, iso),
            step=spec.strike_step,
            clock_speed=clock_speed(state().market_clock),
        )
    if (status != 200 or context.get("gateway_failed")) and context["account"] is None:
        context["account"] = primary_account(db(), me().id)
    return render_template("market/chain.html", **context), status


@bp.route("/chain/sessions", methods=["POST"])
def create_session() -> ResponseReturnValue:
    """Open a viewing session for the chain in the JSON body (see the module docstring)."""
    body = request.get_json(silent=True)
    values = body if isinstance(body, dict) else request.form
    try:
        args = parse_chain_args(values)
        if args.expiry is None:
            raise ChainArgsError("Expiry is required (YYYY-MM-DD).")
        account, _listed, expiry = _resolve(args)
    except ChainArgsError as exc:
        return _json_error(400, str(exc))
    except ExpiryLookupError as exc:
        return _json_error(502, str(exc))
    if account is None or expiry is None:
        return _json_error(409, "Add an active trading account with an API key to view the option chain.")
    session_db = db()
    user_id = me().id
    at = now()
    live = session_db.scalar(
        select(func.count())
        .select_from(WebSocketSession)
        .where(
            WebSocketSession.user_id == user_id,
            WebSocketSession.session_type == SESSION_TYPE,
            WebSocketSession.is_active.is_(True),
            WebSocketSession.expires_at > at,
        )
    )
    if (live or 0) >= MAX_SESSIONS_PER_USER:
        return _json_error(429, f"At most {MAX_SESSIONS_PER_USER} option chains can be open at once.")
    row = WebSocketSession(
        session_id=secrets.token_urlsafe(24),
        user_id=user_id,
        account_id=account.id,
        session_type=SESSION_TYPE,
        instrument=args.instrument,
        expiry=expiry.isoformat(),
        strike_count=args.strikes,
        symbol_count=(2 * args.strikes + 1) * 2 + 1,
        is_active=True,
        last_heartbeat=at,
        created_at=at,
        expires_at=at + SESSION_TTL,
    )
    session_db.add(row)
    session_db.commit()
    return jsonify(
        {
            "session_id": row.session_id,
            "topic": chain_topic(user_id, args.instrument, expiry.isoformat()),
            "expires_at": (at + SESSION_TTL).isoformat(),
            "heartbeat_url": url_for("market_data.heartbeat", session_id=row.session_id),
            "end_url": url_for("market_data.end_session", session_id=row.session_id),
            "heartbeat_seconds": HEARTBEAT_SECONDS,
        }
    ), 201


def _own_session(session_id: str) -> WebSocketSession | None:
    if not _SESSION_ID.fullmatch(session_id):
        return None
    return (
        db()
        .scalars(
            select(WebSocketSession).where(
                WebSocketSession.session_id == session_id,
                WebSocketSession.user_id == me().id,
                WebSocketSession.session_type == SESSION_TYPE,
            )
        )
        .first()
    )


@bp.route("/chain/sessions/<session_id>/heartbeat", methods=["POST"])
def heartbeat(session_id: str) -> ResponseReturnValue:
    """Renew the user's own viewing session for 5 minutes: 200 {expires_at}; 404 unknown or not
    the user's; 410 once expired or ended."""
    row = _own_session(session_id)
    if row is None:
        return _json_error(404, "No such viewing session.")
    at = now()
    if not row.is_active or row.expires_at is None or row.expires_at <= at:
        return _json_error(410, "The viewing session expired; open a new one.")
    row.last_heartbeat = at
    row.expires_at = at + SESSION_TTL
    db().commit()
    return jsonify({"expires_at": row.expires_at.isoformat()})


@bp.route("/chain/sessions/<session_id>/end", methods=["POST"])
def end_session(session_id: str) -> ResponseReturnValue:
    """End the user's own viewing session (the engine releases its subscriptions): 204, or 404."""
    row = _own_session(session_id)
    if row is None:
        return _json_error(404, "No such viewing session.")
    db().delete(row)
    db().commit()
    return Response(status=204)


# ------------------------------------------------------------------------------------------ feeds


@dataclass(frozen=True)
class ConnectionRow:
    """One ``websocket_connections`` row of the user's accounts."""

    account_id: int
    account_name: str
    connection_id: str | None
    status: str
    connected_at: datetime | None
    disconnected_at: datetime | None
    messages: int
    last_heartbeat: datetime | None


@dataclass(frozen=True)
class FailoverRow:
    """One failover event touching the user's accounts (names None when the account is gone)."""

    at: datetime
    from_name: str | None
    to_name: str | None
    reason: str | None
    success: bool
    error: str | None


def feed_records(session: Session, user_id: int) -> tuple[list[ConnectionRow], list[FailoverRow]]:
    """The user's accounts' connection rows (primary first) and the latest :data:`FAILOVERS_SHOWN`
    failover events with either side one of the user's accounts, newest first."""
    names = dict(
        session.execute(
            select(TradingAccount.id, TradingAccount.account_name).where(TradingAccount.user_id == user_id)
        )
        .tuples()
        .all()
    )
    if not names:
        return [], []
    connections = [
        ConnectionRow(
            row.account_id,
            names.get(row.account_id, "?"),
            row.connection_id,
            row.status,
            row.connected_at,
            row.disconnected_at,
            row.messages_received,
            row.last_heartbeat,
        )
        for row in session.scalars(
            select(WebSocketConnection)
            .where(WebSocketConnection.account_id.in_(names))
            .order_by(WebSocketConnection.connected_at.desc().nulls_last(), WebSocketConnection.id)
        )
    ]
    failovers = [
        FailoverRow(
            event.timestamp,
            names.get(event.from_account_id) if event.from_account_id is not None else None,
            names.get(event.to_account_id) if event.to_account_id is not None else None,
            event.reason,
            event.success,
            event.error_message,
        )
        for event in session.scalars(
            select(FailoverEvent)
            .where(or_(FailoverEvent.from_account_id.in_(names), FailoverEvent.to_account_id.in_(names)))
            .order_by(FailoverEvent.timestamp.desc(), FailoverEvent.id.desc())
            .limit(FAILOVERS_SHOWN)
        )
    ]
    return connections, failovers


def _accounts(session: Session, user_id: int) -> list[TradingAccount]:
    return list(
        session.scalars(
            select(TradingAccount)
            .where(TradingAccount.user_id == user_id)
            .order_by(TradingAccount.is_primary.desc(), TradingAccount.created_at, TradingAccount.id)
        )
    )


@bp.route("/feeds")
def feeds() -> ResponseReturnValue:
    """The feed status page (see the module docstring)."""
    user_id = me().id
    connections, failovers = feed_records(db(), user_id)
    accounts = _accounts(db(), user_id)
    current = next((c for c in connections if c.status in ("authenticated", "connected")), None)
    return render_template(
        "market/feeds.html",
        accounts=accounts,
        account_names={a.id: a.account_name for a in accounts},
        connections=connections,
        failovers=failovers,
        current=current,
        generated_at=market_now(),
        failovers_shown=FAILOVERS_SHOWN,
        user_id=user_id,
    )
