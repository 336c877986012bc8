"""The live option chain (PRODUCT §7.5): engine component ``chain``.

Browsers viewing ``/market/chain`` hold a ``websocket_sessions`` row (type ``option_chain``, with the
instrument, the expiry and the strikes each side of ATM), renewed by a heartbeat; it expires 5 minutes
after the last one. Every ``interval`` (1 s) this component

* reads the active, unexpired sessions and groups them by (user, instrument, expiry) — one window per
  group, as wide as its widest session;
* wants the index spot (quote mode) and, once the spot is known, the CE and PE of every strike in
  ATM ± n steps (depth mode, which carries bid/ask and their quantities) from the
  :class:`~algomirror.engine.feeds.FeedManager` under the owner ``chain:{uid}:{INSTRUMENT}:{expiry}``;
  when the ATM strike moves the window re-centres (the owner's wanted set is replaced, so strikes that
  left the window are released) and when no session of the group is left the owner is released;
* publishes the chain on the live bus, topic ``chain:{uid}:{INSTRUMENT}:{expiry}``, event ``chain``
  (:func:`chain_payload`).

Prices come from the feed's latest ticks (``FeedManager.last_ticks``: LTP, bid/ask and quantities,
volume, OI; the MarkBook keeps only LTP). A side with no tick received within ``fresh_seconds`` (wall
clock) — the feed is down, has not delivered yet, or the market is closed — is filled from one
batched REST ``multiquotes`` per group per ``rest_interval`` on the user's primary active account (the
quote carries bid/ask/volume/OI but no bid/ask quantities); each side says its source (``ws``/``rest``).

Every minute expired sessions are deleted (their subscriptions were already released by the cycle that
stopped seeing them). Session times are on the real clock (the browser's heartbeat runs in real time);
quote freshness on the wall clock (a tick's arrival); the published times on the market clock (the
demo's simulated one).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Final, Literal

from sqlalchemy import delete, select
from sqlalchemy.exc import SQLAlchemyError

from algomirror.broker.errors import BrokerError
from algomirror.broker.registry import ClientRegistry
from algomirror.db.models import TradingAccount, WebSocketSession
from algomirror.db.session import Database
from algomirror.domain.instruments import option_symbol, underlying_spec
from algomirror.domain.strikes import atm_strike
from algomirror.domain.timeutil import Clock, SystemClock, ist_today
from algomirror.engine.feeds import MODE_DEPTH, MODE_QUOTE, FeedManager

log = logging.getLogger(__name__)

#: The underlyings the chain page offers (PRODUCT §7.5).
CHAIN_INSTRUMENTS: Final = ("NIFTY", "BANKNIFTY", "SENSEX")
DEFAULT_STRIKES: Final = 20
MAX_STRIKES: Final = 50
SESSION_TYPE: Final = "option_chain"
#: A viewing session lives this long after its last heartbeat (PRODUCT §7.5).
SESSION_TTL: Final = timedelta(minutes=5)
EVENT: Final = "chain"
_PCR_PLACES = Decimal("0.01")

Key = tuple[str, str]  # (symbol, exchange)
GroupKey = tuple[int, str, str]  # (user id, INSTRUMENT, ISO expiry)
Side = Literal["CE", "PE"]


def chain_topic(user_id: int, instrument: str, expiry: str) -> str:
    """``chain:{uid}:{INSTRUMENT}:{expiry}`` (expiry ISO ``YYYY-MM-DD``), as web/live.py authorises it."""
    return f"chain:{user_id}:{instrument.upper()}:{expiry}"


def chain_owner(user_id: int, instrument: str, expiry: str) -> str:
    """The FeedManager owner of one (user, instrument, expiry) window (the topic's text)."""
    return chain_topic(user_id, instrument, expiry)


# ---------------------------------------------------------------------------------------------- math


@dataclass(frozen=True, slots=True)
class Window:
    """The strikes shown: ``atm`` and ``count`` strikes each side, ascending (rupees)."""

    atm: Decimal
    step: Decimal
    count: int
    strikes: tuple[Decimal, ...]


def build_window(spot: Decimal, step: Decimal, count: int) -> Window:
    """The window around the ATM strike of ``spot`` (round half up to ``step``): ATM − count·step …
    ATM + count·step, leaving out non-positive strikes. Raises ValueError for a non-positive spot or
    step, or a count below 1."""
    if count < 1:
        raise ValueError(f"strike count must be at least 1, got {count}")
    atm = atm_strike(spot, step)
    strikes = tuple(atm + i * step for i in range(-count, count + 1) if atm + i * step > 0)
    return Window(atm, step, count, strikes)


def recentre(current: Window | None, spot: Decimal, step: Decimal, count: int) -> Window:
    """``current`` while the spot's ATM strike and the count are unchanged (the same object: nothing
    to re-subscribe), else the window around the new ATM."""
    candidate_atm = atm_strike(spot, step)
    if (
        current is not None
        and current.atm == candidate_atm
        and current.count == count
        and current.step == step
    ):
        return current
    return build_window(spot, step, count)


def moneyness_tag(strike: Decimal, atm: Decimal, step: Decimal, side: Side) -> str:
    """``ATM``, ``ITM k`` or ``OTM k`` from ``side``'s view, k in strike steps from ATM (a CE below ATM
    is in the money, a PE above it). Raises ValueError for a non-positive step."""
    if step <= 0:
        raise ValueError(f"step must be positive, got {step}")
    if strike == atm:
        return "ATM"
    k = int((abs(strike - atm) / step).to_integral_value(rounding=ROUND_HALF_UP))
    below = strike < atm
    itm = below if side == "CE" else not below
    return f"{'ITM' if itm else 'OTM'} {max(k, 1)}"


def pcr(puts: Iterable[int | None], calls: Iterable[int | None]) -> Decimal | None:
    """Put/call ratio Σputs / Σcalls to 2 decimals (OI or volume). None (unknown, never 0) when any
    value is unknown or the call total is 0."""
    put_values, call_values = list(puts), list(calls)
    if not call_values or any(v is None for v in put_values) or any(v is None for v in call_values):
        return None
    call_total = sum(v for v in call_values if v is not None)
    put_total = sum(v for v in put_values if v is not None)
    if call_total <= 0:
        return None
    return (Decimal(put_total) / Decimal(call_total)).quantize(_PCR_PLACES, rounding=ROUND_HALF_UP)


@dataclass(frozen=True, slots=True)
class SideQuote:
    """One option's market: rupees (Decimal) and counts (int); None when unknown. ``at`` aware UTC."""

    ltp: Decimal | None = None
    bid: Decimal | None = None
    ask: Decimal | None = None
    bid_qty: int | None = None
    ask_qty: int | None = None
    volume: int | None = None
    oi: int | None = None
    source: Literal["ws", "rest"] | None = None
    at: datetime | None = None

    @property
    def spread(self) -> Decimal | None:
        """ask − bid, when both are known and positive."""
        if self.bid is None or self.ask is None or self.bid <= 0 or self.ask <= 0:
            return None
        return self.ask - self.bid


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def side_payload(symbol: str, tag: str, quote: SideQuote | None) -> dict[str, Any]:
    """One side of a row in the ``chain`` event (Decimals as strings, None as null)."""
    q = quote or SideQuote()
    return {
        "symbol": symbol,
        "tag": tag,
        "ltp": _text(q.ltp),
        "bid": _text(q.bid),
        "ask": _text(q.ask),
        "bid_qty": q.bid_qty,
        "ask_qty": q.ask_qty,
        "spread": _text(q.spread),
        "volume": q.volume,
        "oi": q.oi,
        "source": q.source,
        "at": q.at.isoformat() if q.at is not None else None,
    }


def chain_payload(
    *,
    user_id: int,
    instrument: str,
    expiry: date,
    count: int,
    at: datetime,
    spot: SideQuote | None,
    window: Window | None,
    quotes: Mapping[str, SideQuote],
) -> dict[str, Any]:
    """The ``chain`` event: {user_id, instrument, expiry (ISO), at (ISO, market clock), spot,
    spot_source, atm, step, strike_count, pcr_oi, pcr_volume, rows: [{strike, atm, ce, pe}]} where each
    side is :func:`side_payload`. Without a spot the window is unknown: ``rows`` is empty."""
    spec = underlying_spec(instrument)
    rows: list[dict[str, Any]] = []
    ce_oi: list[int | None] = []
    pe_oi: list[int | None] = []
    ce_vol: list[int | None] = []
    pe_vol: list[int | None] = []
    if window is not None:
        for strike in window.strikes:
            sides = {}
            for side in ("CE", "PE"):
                symbol = option_symbol(spec.name, expiry, strike, side)
                quote = quotes.get(symbol)
                sides[side] = side_payload(
                    symbol, moneyness_tag(strike, window.atm, window.step, side), quote
                )
                (ce_oi if side == "CE" else pe_oi).append(quote.oi if quote else None)
                (ce_vol if side == "CE" else pe_vol).append(quote.volume if quote else None)
            rows.append(
                {"strike": str(strike), "atm": strike == window.atm, "ce": sides["CE"], "pe": sides["PE"]}
            )
    return {
        "user_id": user_id,
        "instrument": spec.name,
        "expiry": expiry.isoformat(),
        "at": at.isoformat(),
        "spot": _text(spot.ltp) if spot else None,
        "spot_source": spot.source if spot else None,
        "spot_at": spot.at.isoformat() if spot and spot.at else None,
        "atm": _text(window.atm) if window else None,
        "step": str(spec.strike_step),
        "strike_count": count,
        "pcr_oi": _text(pcr(pe_oi, ce_oi)) if window else None,
        "pcr_volume": _text(pcr(pe_vol, ce_vol)) if window else None,
        "rows": rows,
    }


# ---------------------------------------------------------------------------------------------- component


@dataclass(frozen=True, slots=True)
class ChainConfig:
    """Seconds. ``fresh_seconds``: how long ago (wall clock) a tick or REST quote may have arrived and
    still be shown; ``rest_grace``: how long a newly wanted symbol waits for the feed before REST is asked."""

    interval: float = 1.0
    cleanup_seconds: float = 60.0
    fresh_seconds: float = 5.0
    rest_interval: float = 1.0
    rest_grace: float = 3.0
    account_rest_seconds: float = 60.0


@dataclass(frozen=True, slots=True)
class _Viewer:
    user_id: int
    instrument: str
    expiry: date
    strike_count: int


@dataclass(frozen=True, slots=True)
class _Account:
    id: int
    name: str
    host_url: str
    api_key_encrypted: str


@dataclass
class _Group:
    key: GroupKey
    expiry: date
    count: int
    window: Window | None = None
    # Monotonic time each symbol was first wanted (REST waits ``rest_grace`` for the feed).
    wanted_since: dict[Key, float] = field(default_factory=dict)
    # Latest REST quote per symbol (with its market-clock time).
    rest: dict[str, SideQuote] = field(default_factory=dict)
    # Monotonic time each REST quote was received (its freshness, whatever the market clock's speed).
    rest_seen: dict[str, float] = field(default_factory=dict)
    next_rest: float = 0.0
    rest_resting_until: float = 0.0
    # The latest depth-mode fields per symbol: a quote-mode tick of the same symbol (another owner
    # watches it in quote mode) carries no bid/ask and must not blank them.
    depth: dict[str, tuple[Decimal | None, Decimal | None, int | None, int | None]] = field(
        default_factory=dict
    )


class ChainEngine:
    """Engine component ``chain`` (see the module docstring).

    ``feeds`` is the engine's FeedManager (its ``want``/``release``, ``marks`` and ``last_ticks`` are
    used); ``registry`` and ``decrypt`` (stored key → API key, ValueError when unreadable) serve the
    REST fill; ``bus`` has ``publish(topic, event, data)`` (None: nothing published); ``clock`` is the
    market clock (published and quote times, today's date); ``session_clock`` the real clock of the
    browsers' heartbeats; ``wall_clock`` the clock the feed client stamps ``Tick.received_at`` with
    (the system clock), by which tick freshness is judged.
    """

    name = "chain"

    def __init__(
        self,
        database: Database,
        feeds: FeedManager,
        registry: ClientRegistry,
        decrypt: Callable[[str], str],
        *,
        bus: Any | None = None,
        clock: Clock | None = None,
        session_clock: Clock | None = None,
        wall_clock: Clock | None = None,
        config: ChainConfig | None = None,
    ) -> None:
        self.database = database
        self.feeds = feeds
        self.registry = registry
        self.bus = bus
        self.clock: Clock = clock or SystemClock()
        self.session_clock: Clock = session_clock or SystemClock()
        self.wall_clock: Clock = wall_clock or SystemClock()
        self.config = config or ChainConfig()
        self._decrypt = decrypt
        self._groups: dict[GroupKey, _Group] = {}
        self._accounts: dict[int, _Account] = {}
        self._last_cleanup = 0.0
        self.publishes = 0
        self.rest_calls = 0

    @property
    def groups(self) -> dict[GroupKey, Window | None]:
        """The windows being served now, by (user id, INSTRUMENT, ISO expiry) (tests, status)."""
        return {key: group.window for key, group in self._groups.items()}

    async def run(self, stop: asyncio.Event) -> None:
        """One :meth:`cycle` per ``interval`` and a :meth:`cleanup` per ``cleanup_seconds`` until ``stop``;
        releases every window on the way out."""
        try:
            while not stop.is_set():
                started = time.monotonic()
                if started - self._last_cleanup >= self.config.cleanup_seconds:
                    self._last_cleanup = started
                    await self.cleanup()
                await self.cycle()
                wait = self.config.interval - (time.monotonic() - started)
                try:
                    await asyncio.wait_for(stop.wait(), timeout=max(0.05, wait))
                except TimeoutError:
                    pass
        finally:
            for key in list(self._groups):
                self._drop(key)

    async def cleanup(self) -> int:
        """Delete the expired viewing sessions (real clock); returns how many. A database failure is
        logged and retried at the next cleanup."""
        now = self.session_clock.now()

        def write() -> int:
            with self.database.session() as session:
                result = session.execute(
                    delete(WebSocketSession)
                    .where(WebSocketSession.session_type == SESSION_TYPE)
                    .where(WebSocketSession.expires_at < now)
                    .execution_options(synchronize_session=False)
                )
                return int(getattr(result, "rowcount", 0) or 0)

        try:
            deleted = await asyncio.to_thread(write)
        except SQLAlchemyError as exc:
            log.warning("chain: cannot delete expired sessions: %s", str(exc).splitlines()[0])
            return 0
        if deleted:
            log.info("chain: %d expired viewing session(s) deleted", deleted)
        return deleted

    async def cycle(self) -> None:
        """Serve every viewed window once: (re)subscribe, fill by REST where needed, publish."""
        try:
            viewers, accounts = await asyncio.to_thread(self._load)
        except SQLAlchemyError as exc:
            log.warning("chain: cannot read viewing sessions: %s", str(exc).splitlines()[0])
            return
        self._accounts = accounts
        today = ist_today(self.clock.now())
        wanted: dict[GroupKey, tuple[date, int]] = {}
        for v in viewers:
            if v.expiry < today:
                continue  # an expired contract has nothing to stream
            key = (v.user_id, v.instrument, v.expiry.isoformat())
            count = max(v.strike_count, wanted.get(key, (v.expiry, 0))[1])
            wanted[key] = (v.expiry, count)
        for key in [k for k in self._groups if k not in wanted]:
            self._drop(key)
        for key, (expiry, count) in wanted.items():
            group = self._groups.get(key)
            if group is None:
                group = self._groups[key] = _Group(key, expiry, count)
            group.count = count
            try:
                await self._serve(group)
            except (ValueError, ArithmeticError) as exc:  # bad data for one window must not stop the rest
                log.warning("chain %s: %s", chain_topic(*key), exc)

    def _drop(self, key: GroupKey) -> None:
        self.feeds.release(chain_owner(*key))
        self._groups.pop(key, None)
        log.info("chain %s: released", chain_topic(*key))

    def _load(self) -> tuple[list[_Viewer], dict[int, _Account]]:
        now = self.session_clock.now()
        with self.database.session_factory() as session:
            rows = session.execute(
                select(
                    WebSocketSession.user_id,
                    WebSocketSession.instrument,
                    WebSocketSession.expiry,
                    WebSocketSession.strike_count,
                ).where(
                    WebSocketSession.session_type == SESSION_TYPE,
                    WebSocketSession.is_active.is_(True),
                    WebSocketSession.expires_at > now,
                )
            ).all()
            viewers: list[_Viewer] = []
            for user_id, instrument, expiry_text, count in rows:
                name = (instrument or "").upper()
                try:
                    expiry = date.fromisoformat(expiry_text or "")
                except ValueError:
                    continue  # written by the web after validation; anything else is not ours to show
                if name not in CHAIN_INSTRUMENTS:
                    continue
                strikes = count if isinstance(count, int) and 1 <= count <= MAX_STRIKES else DEFAULT_STRIKES
                viewers.append(_Viewer(user_id, name, expiry, strikes))
            users = {v.user_id for v in viewers}
            accounts: dict[int, _Account] = {}
            if users:
                for row in session.scalars(
                    select(TradingAccount)
                    .where(
                        TradingAccount.user_id.in_(users),
                        TradingAccount.is_active.is_(True),
                        TradingAccount.api_key_encrypted.is_not(None),
                    )
                    .order_by(TradingAccount.is_primary.desc(), TradingAccount.created_at, TradingAccount.id)
                ):
                    # The primary first, else the oldest active account (the feed's own order).
                    accounts.setdefault(
                        row.user_id,
                        _Account(row.id, row.account_name, row.host_url, row.api_key_encrypted or ""),
                    )
            return viewers, accounts

    async def _serve(self, group: _Group) -> None:
        user_id, instrument, _ = group.key
        spec = underlying_spec(instrument)
        owner = chain_owner(*group.key)
        spot_key = (spec.name, spec.spot_exchange)
        self.feeds.want(owner, [spot_key], MODE_QUOTE, user_id=user_id)
        mono = time.monotonic()
        group.wanted_since.setdefault(spot_key, mono)
        now = self.clock.now()
        # REST fills what the feed has not delivered fresh: at once while the user's feed is down (and
        # for the spot while no window is known yet), else after the feed's grace period.
        feed_down = not self.feeds.healthy(user_id)
        keys = [spot_key, *(self._symbols(group, group.window) if group.window is not None else [])]
        missing = [
            key
            for key in keys
            if self._ws_quote(group, key, now) is None
            and (
                feed_down
                or (key == spot_key and group.window is None)
                or mono - group.wanted_since.get(key, mono) >= self.config.rest_grace
            )
        ]
        if missing:
            await self._rest_fill(group, missing)
            now = self.clock.now()
        spot = self._quote(group, spot_key, now)
        if spot is not None and spot.ltp is not None:
            window = recentre(group.window, spot.ltp, spec.strike_step, group.count)
            if window is not group.window:
                symbols = self._symbols(group, window)
                # Replaces the owner's depth set: strikes that left the window are released.
                self.feeds.want(owner, symbols, MODE_DEPTH, user_id=user_id)
                group.wanted_since = {k: group.wanted_since.get(k, mono) for k in (*symbols, spot_key)}
                group.window = window
                log.info("chain %s: %d strikes each side of ATM %s", owner, window.count, window.atm)
        quotes: dict[str, SideQuote] = {}
        if group.window is not None:
            for key in self._symbols(group, group.window):
                quote = self._quote(group, key, now)
                if quote is not None:
                    quotes[key[0]] = quote
        self._publish(group, spot, quotes, now)

    def _quote(self, group: _Group, key: Key, now: datetime) -> SideQuote | None:
        """The feed's fresh tick, else a fresh REST quote, else None."""
        return self._ws_quote(group, key, now) or self._rest_fresh(group, key[0], now)

    def _symbols(self, group: _Group, window: Window) -> list[Key]:
        spec = underlying_spec(group.key[1])
        return [
            (option_symbol(spec.name, group.expiry, strike, side), spec.fo_exchange)
            for strike in window.strikes
            for side in ("CE", "PE")
        ]

    def _ws_quote(self, group: _Group, key: Key, now: datetime) -> SideQuote | None:
        """The feed's latest tick of ``key`` when it arrived within ``fresh_seconds`` (wall clock)."""
        tick = self.feeds.last_ticks.get(key)
        if tick is None or tick.ltp is None or tick.ltp <= 0:
            return None
        # Judged by when the frame arrived, on the clock the feed client stamps it with: the market
        # clock may run faster (the demo's 30x), which would age every tick between two cycles.
        if abs((self.wall_clock.now() - tick.received_at).total_seconds()) > self.config.fresh_seconds:
            return None
        symbol = key[0]
        if tick.bid is not None or tick.ask is not None:
            group.depth[symbol] = (tick.bid, tick.ask, tick.bid_qty, tick.ask_qty)
        bid, ask, bid_qty, ask_qty = group.depth.get(symbol, (None, None, None, None))
        return SideQuote(tick.ltp, bid, ask, bid_qty, ask_qty, tick.volume, tick.oi, "ws", tick.at)

    def _rest_fresh(self, group: _Group, symbol: str, now: datetime) -> SideQuote | None:
        quote = group.rest.get(symbol)
        if quote is None:
            return None
        if time.monotonic() - group.rest_seen.get(symbol, 0.0) > self.config.fresh_seconds:
            return None
        return quote

    async def _rest_fill(self, group: _Group, keys: Sequence[Key]) -> None:
        """One ``multiquotes`` for ``keys`` on the user's primary account, at most every
        ``rest_interval``; a failing account rests ``account_rest_seconds`` (logged, never raised)."""
        now = time.monotonic()
        if now < group.next_rest or now < group.rest_resting_until:
            return
        group.next_rest = now + self.config.rest_interval
        account = self._accounts.get(group.key[0])
        if account is None:
            return
        try:
            client = self.registry.client(
                account.id, account.host_url, self._decrypt(account.api_key_encrypted), name=account.name
            )
            items = await client.multiquotes(list(keys))
        except (BrokerError, ValueError) as exc:
            group.rest_resting_until = time.monotonic() + self.config.account_rest_seconds
            text = exc.message if isinstance(exc, BrokerError) else "stored API key unreadable"
            log.info(
                "chain %s: REST quotes on account %s failed: %s", chain_topic(*group.key), account.id, text
            )
            return
        self.rest_calls += 1
        at = self.clock.now()
        received = time.monotonic()
        for item in items:
            q = item.quote
            if q is None or q.ltp is None or q.ltp <= 0:
                continue
            group.rest[item.symbol] = SideQuote(q.ltp, q.bid, q.ask, None, None, q.volume, q.oi, "rest", at)
            group.rest_seen[item.symbol] = received

    def _publish(
        self, group: _Group, spot: SideQuote | None, quotes: Mapping[str, SideQuote], at: datetime
    ) -> None:
        if self.bus is None:
            return
        user_id, instrument, expiry_text = group.key
        payload = chain_payload(
            user_id=user_id,
            instrument=instrument,
            expiry=group.expiry,
            count=group.count,
            at=at,
            spot=spot,
            window=group.window,
            quotes=quotes,
        )
        try:
            self.bus.publish(chain_topic(user_id, instrument, expiry_text), EVENT, payload)
            self.publishes += 1
        except Exception:  # live data is a view: a bus failure must not stop the chain (logged)
            log.exception("chain: publishing %s failed", chain_topic(*group.key))


__all__ = [
    "CHAIN_INSTRUMENTS",
    "DEFAULT_STRIKES",
    "EVENT",
    "MAX_STRIKES",
    "SESSION_TTL",
    "SESSION_TYPE",
    "ChainConfig",
    "ChainEngine",
    "SideQuote",
    "Window",
    "build_window",
    "chain_owner",
    "chain_payload",
    "chain_topic",
    "moneyness_tag",
    "pcr",
    "recentre",
    "side_payload",
]
