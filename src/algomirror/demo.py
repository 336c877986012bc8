"""Demo seeding for the embedded paper exchange (``make run``).

* :func:`demo_start_instant` — where the demo market's simulated clock starts: 09:20 IST of the most
  recent trading day, so prices move whenever someone looks, even at night or on a weekend.
* :func:`seed_demo` — the demo user (admin, per-user defaults) and three demo accounts pointing at the
  embedded exchange, only when the database has no users at all.
* :func:`place_demo_orders` — a few orders on each paper account (a NIFTY short strangle with long
  wings, a BANKNIFTY long call, a resting LIMIT order) so the dashboard shows positions, orders, trades
  and moving P&L. The paper exchange keeps its books in memory, so this runs on every start.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import ROUND_DOWN, Decimal

from argon2 import PasswordHasher
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from algomirror.broker.client import HostPool, OpenAlgoClient, RetryPolicy, Timeouts
from algomirror.broker.errors import BrokerError
from algomirror.broker.wire import Action, OrderRequest, PriceType, Product
from algomirror.config import Settings
from algomirror.db.defaults import seed_user_defaults
from algomirror.db.models import ActivityLog, TradingAccount, User
from algomirror.domain.calendar import TradingCalendar, default_calendar
from algomirror.domain.timeutil import ist_combine, to_ist

log = logging.getLogger(__name__)

DEMO_ACCOUNT_NAMES = ("Demo Alpha", "Demo Beta", "Demo Gamma")
DEMO_BROKER = "sandbox"
DEMO_STRATEGY = "demo"
DEMO_OPEN = time(9, 20)
# Demo option positions use an expiry at least this far from the demo's start, so they do not expire
# under the viewer when the demo clock rolls into later sessions.
MIN_DAYS_TO_EXPIRY = 7


def demo_start_instant(now: datetime, calendar: TradingCalendar | None = None) -> datetime:
    """09:20 IST of the latest NSE trading day whose 09:20 is not after ``now`` (aware UTC)."""
    cal = calendar or default_calendar()
    day = to_ist(now).date()
    if not (cal.is_trading_day("NSE", day) and ist_combine(day, DEMO_OPEN) <= now):
        day = cal.previous_trading_day("NSE", day)
    return ist_combine(day, DEMO_OPEN)


def next_demo_session(instant: datetime, calendar: TradingCalendar | None = None) -> datetime:
    """09:20 IST of the next NSE trading day after ``instant``'s IST date (aware UTC)."""
    cal = calendar or default_calendar()
    return ist_combine(cal.next_trading_day("NSE", to_ist(instant).date()), DEMO_OPEN)


@dataclass(frozen=True, slots=True)
class SeededDemo:
    """What :func:`seed_demo` created: the demo user's id and its account ids (first = primary)."""

    user_id: int
    account_ids: tuple[int, ...]


def seed_demo(
    session: Session,
    settings: Settings,
    *,
    host_url: str,
    ws_url: str,
    api_keys: Sequence[str],
    encrypt: Callable[[str], str],
    hasher: PasswordHasher,
) -> SeededDemo | None:
    """Create the demo user and one account per key (first = primary) when there are no users.

    ``encrypt`` turns an API key into its Fernet token. Returns None (and changes nothing) when any user
    exists. The caller's unit of work commits.
    """
    if (session.scalar(select(func.count()).select_from(User)) or 0) > 0:
        return None
    username = settings.demo_username.strip().lower()
    user = User(
        username=username,
        email=f"{username}@demo.algomirror.invalid",
        password_hash=hasher.hash(settings.demo_password.get_secret_value()),
        is_admin=True,
        is_active=True,
    )
    session.add(user)
    session.flush()
    seed_user_defaults(session, user)
    ids: list[int] = []
    for index, (name, key) in enumerate(zip(DEMO_ACCOUNT_NAMES, api_keys, strict=False)):
        account = TradingAccount(
            user_id=user.id,
            account_name=name,
            broker=DEMO_BROKER,
            host_url=host_url,
            websocket_url=ws_url,
            api_key_encrypted=encrypt(key),
            api_key_last4=key[-4:],
            is_primary=index == 0,
            is_active=True,
            connection_status="disconnected",
        )
        session.add(account)
        session.flush()
        ids.append(account.id)
    session.add(
        ActivityLog(
            user_id=user.id,
            action="demo_seeded",
            details=f"demo user and {len(ids)} paper accounts created against {host_url}",
        )
    )
    return SeededDemo(user.id, tuple(ids))


@dataclass
class DemoOrders:
    """What :func:`place_demo_orders` did: ``placed`` descriptions and ``failed`` messages."""

    placed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


async def _expiry(client: OpenAlgoClient, underlying: str, today: date) -> date:
    days = await client.expiry(underlying, "NFO", "options")
    later = [d for d in days if d >= today + timedelta(days=MIN_DAYS_TO_EXPIRY)]
    if not later:
        raise LookupError(f"no {underlying} option expiry {MIN_DAYS_TO_EXPIRY}+ days out")
    return later[0]


async def _option(
    client: OpenAlgoClient, underlying: str, expiry: date, offset: str, option_type: str
) -> tuple[str, int, Decimal]:
    """(symbol, lot size, tick size) of an option picked by offset from ATM."""
    found = await client.option_symbol(
        underlying=underlying,
        exchange="NSE_INDEX",
        expiry_date=expiry,
        offset=offset,
        option_type=option_type,
    )
    if found.lotsize is None:
        raise LookupError(f"no lot size for {found.symbol}")
    return found.symbol, found.lotsize, found.tick_size or Decimal("0.05")


async def _place(client: OpenAlgoClient, result: DemoOrders, label: str, order: OrderRequest) -> None:
    try:
        ack = await client.place_order(order, strategy=DEMO_STRATEGY)
    except BrokerError as exc:
        result.failed.append(f"{label}: {order.action} {order.quantity} {order.symbol}: {exc.message}")
        return
    result.placed.append(f"{label}: {order.action} {order.quantity} {order.symbol} ({ack.orderid})")


async def place_demo_orders(
    rest_url: str, api_keys: Sequence[str], today: date, *, resting_only: bool = False
) -> DemoOrders:
    """Place the demo book on each paper account (NRML, so the 15:15 MIS square-off leaves it alone):

    * every account: a NIFTY short strangle (OTM4 CE + PE) with long wings (OTM8), BUY legs first, sized
      1, 2, 3 lots like a fan-out with multipliers;
    * the second account: a BANKNIFTY ATM long call;
    * the first and third: a resting LIMIT buy far below the market (an open order to look at).

    ``resting_only`` places just the resting LIMIT orders (a new paper session cancels open orders but
    keeps NRML positions). Never raises for broker problems: failures are collected in the result (and
    logged).
    """
    result = DemoOrders()
    async with HostPool() as pool:
        for index, key in enumerate(api_keys):
            label = DEMO_ACCOUNT_NAMES[index] if index < len(DEMO_ACCOUNT_NAMES) else f"account {index + 1}"
            client = OpenAlgoClient(
                rest_url,
                key,
                pool=pool,
                timeouts=Timeouts(connect=2.0, read=10.0, order=10.0),
                retry=RetryPolicy(attempts=2),
                name=label,
            )
            try:
                expiry = await _expiry(client, "NIFTY", today)
                legs = [
                    (await _option(client, "NIFTY", expiry, offset, kind), action)
                    for offset, kind, action in (
                        ("OTM8", "CE", Action.BUY),
                        ("OTM8", "PE", Action.BUY),
                        ("OTM4", "CE", Action.SELL),
                        ("OTM4", "PE", Action.SELL),
                    )
                    if not resting_only
                ]
                for (symbol, lot, _tick), action in legs:
                    await _place(
                        client,
                        result,
                        label,
                        OrderRequest(symbol, "NFO", action, lot * (index + 1), product=Product.NRML),
                    )
                if index == 1 and not resting_only:
                    bank_expiry = await _expiry(client, "BANKNIFTY", today)
                    symbol, lot, _tick = await _option(client, "BANKNIFTY", bank_expiry, "ATM", "CE")
                    await _place(
                        client,
                        result,
                        label,
                        OrderRequest(symbol, "NFO", Action.BUY, lot, product=Product.NRML),
                    )
                elif index != 1:
                    symbol, lot, tick = await _option(client, "NIFTY", expiry, "ATM", "PE")
                    quote = await client.quotes(symbol, "NFO")
                    if quote.ltp is not None and quote.ltp > 1:
                        price = (quote.ltp / 2 / tick).to_integral_value(rounding=ROUND_DOWN) * tick
                        await _place(
                            client,
                            result,
                            label,
                            OrderRequest(
                                symbol,
                                "NFO",
                                Action.BUY,
                                lot,
                                pricetype=PriceType.LIMIT,
                                product=Product.NRML,
                                price=price,
                            ),
                        )
            except (BrokerError, LookupError) as exc:
                message = exc.message if isinstance(exc, BrokerError) else str(exc)
                result.failed.append(f"{label}: {message}")
    for line in result.failed:
        log.warning("demo order not placed: %s", line)
    return result


__all__ = [
    "DEMO_ACCOUNT_NAMES",
    "DemoOrders",
    "SeededDemo",
    "demo_start_instant",
    "next_demo_session",
    "place_demo_orders",
    "seed_demo",
]
