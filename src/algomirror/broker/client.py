"""Asynchronous OpenAlgo REST client.

* :class:`~algomirror.broker.transport.HostPool` (aiohttp) holds ONE keep-alive session per OpenAlgo
  origin (``scheme://host:port``), shared by every account on that host. One per event loop (the
  engine's, the web facade's background loop); close it with ``aclose``. In the engine,
  :class:`~algomirror.broker.registry.ClientRegistry` owns the pool and hands out the clients.
* :class:`OpenAlgoClient` is one account (host URL + API key) with its :class:`RateScheduler`.
  Every call is ``POST {base}/api/v1/{endpoint}`` with ``apikey`` in the JSON body, where ``base`` is
  the host URL rebuilt by :func:`~algomirror.broker.hosts.normalize_host_url` (no query, fragment or
  credentials) and ``endpoint`` one of OpenAlgo's names: a host URL cannot redirect a call elsewhere.
  With a ``host_policy`` (the engine's registry) every call first checks the administrator's
  allow-list of hosts and raises :class:`~algomirror.broker.hosts.HostNotAllowedError` unsent.
  Calls queued for the same budget are served by :class:`~algomirror.broker.ratelimit.Priority`:
  exits, entries, reads.
* Reads are retried with capped, jittered exponential backoff (429: about 1 s). Order calls are sent
  once: a timeout, dropped connection, 5xx or unreadable reply raises
  :class:`~algomirror.broker.errors.UnknownOutcomeError`; the engine's journal resolves it.
* After a 401/403 the client stops calling the server (every call raises
  :class:`~algomirror.broker.errors.AuthError`) until :meth:`OpenAlgoClient.clear_halt`; a changed key
  means a new client. While an :class:`OrderGate` is closed, order calls raise
  :class:`~algomirror.broker.errors.OrdersSuspendedError` before anything is sent.
* The API key never appears in logs, exception messages or ``repr``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp

from algomirror.broker.errors import (
    AuthError,
    BrokerError,
    BrokerTimeoutError,
    MalformedResponseError,
    OrdersSuspendedError,
    RateLimitedError,
    RetryableError,
    UnknownOutcomeError,
    classify_reply,
)
from algomirror.broker.hosts import NOT_ALLOWED, HostNotAllowedError, HostPolicy, normalize_host_url, url_host
from algomirror.broker.ratelimit import Priority, RateLimits, RateScheduler, budget_for
from algomirror.broker.transport import HostPool, Reply, Transport, encode_json, origin_of
from algomirror.broker.wire import (
    BatchResult,
    BrokerOrder,
    BrokerTrade,
    CancelAllResult,
    Candle,
    ClosePositionResult,
    Depth,
    Funds,
    Holdings,
    Intervals,
    Margin,
    MarginPosition,
    ModifyRequest,
    MultiQuoteItem,
    OptionChain,
    OptionLeg,
    OptionsMultiResult,
    OptionsOrderResult,
    OptionSymbol,
    OrderAck,
    Orderbook,
    OrderRequest,
    Ping,
    Positionbook,
    Quote,
    SmartOrderResult,
    SymbolInfo,
    format_expiry,
    parse_expiries,
    parse_open_position,
    symbols_wire,
)
from algomirror.broker.wire.calendar import ExchangeHoliday, parse_holidays
from algomirror.domain.money import format_inr

if TYPE_CHECKING:
    from algomirror.broker.facade import ConnectionTest
    from algomirror.config import Settings

log = logging.getLogger(__name__)
R = TypeVar("R")

# OpenAlgo's endpoint names (``market/holidays`` has one slash): nothing else is ever put in a URL.
_ENDPOINT = re.compile(r"^[a-z][a-z0-9]*(?:/[a-z][a-z0-9]*)?$")

ORDER_ENDPOINTS = frozenset(
    {
        "placeorder",
        "placesmartorder",
        "splitorder",
        "basketorder",
        "optionsorder",
        "optionsmultiorder",
        "modifyorder",
        "cancelorder",
        "cancelallorder",
        "closeposition",
    }
)


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds. ``connect`` bounds one TCP connect; ``read`` for data calls, ``order`` for order calls
    (each bounds both the wait for a free pooled connection and the wait for the reply); split/basket
    use ``batch_base + batch_per_child × children`` (protocol §1.5)."""

    connect: float = 4.0
    read: float = 10.0
    order: float = 30.0
    batch_base: float = 5.0
    batch_per_child: float = 0.15

    @classmethod
    def from_settings(cls, settings: Settings) -> Timeouts:
        return cls(
            connect=settings.http_connect_timeout,
            read=settings.http_read_timeout,
            order=settings.http_order_timeout,
        )

    def batch(self, children: int) -> float:
        return self.batch_base + self.batch_per_child * max(children, 1)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Read retries: ``attempts`` in all; full-jitter exponential backoff ``base·2^n`` capped at ``cap``."""

    attempts: int = 3
    base: float = 0.2
    cap: float = 2.0

    def delay(self, failed_attempt: int, error: RetryableError) -> float:
        if isinstance(error, RateLimitedError):
            # The server's window is 1 s and it sends no Retry-After; a little jitter de-synchronises
            # accounts that were limited together.
            return error.retry_after + random.uniform(0, 0.2)
        return random.uniform(0, min(self.cap, self.base * 2 ** (failed_attempt - 1)))


class OrderGate:
    """An engine-wide switch for order calls, shared by every client of a registry.

    While suspended, an order endpoint call raises :class:`OrdersSuspendedError` before it is sent
    (checked before queueing for the rate budget, after its rate slot, and, on the aiohttp
    :class:`HostPool`, once it holds a connection and before a byte is written, so a call that waited
    for a pooled connection is refused too). Reads are never affected.
    """

    def __init__(self) -> None:
        self._reason: str | None = None

    @property
    def suspended(self) -> str | None:
        """The reason order calls are suspended, or None when they are allowed."""
        return self._reason

    def suspend(self, reason: str) -> None:
        self._reason = reason or "suspended"

    def resume(self) -> None:
        self._reason = None

    def check(self, endpoint: str) -> None:
        """Raise :class:`OrdersSuspendedError` when suspended."""
        if self._reason is not None:
            raise OrdersSuspendedError(
                f"order calls suspended ({self._reason}); nothing was sent", endpoint=endpoint
            )


class OpenAlgoClient:
    """One OpenAlgo account. All methods are coroutines and raise only :class:`BrokerError` subclasses
    for broker or network problems (see :mod:`algomirror.broker.errors`).

    ``strategy`` on order calls is the tag OpenAlgo stores with the order; pass the stable tag derived
    from the strategy id. Quantities are units (lots × lot size); prices are rupees.
    """

    def __init__(
        self,
        host_url: str,
        api_key: str,
        *,
        pool: Transport,
        timeouts: Timeouts | None = None,
        limits: RateLimits | None = None,
        retry: RetryPolicy | None = None,
        scheduler: RateScheduler | None = None,
        name: str = "",
        order_gate: OrderGate | None = None,
        host_policy: Callable[[], HostPolicy] | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("api_key is empty")
        # Raises HostURLError (a ValueError) for a URL that is not http(s)://host[:port][/base].
        self.host_url = normalize_host_url(host_url.strip())
        self._host = url_host(self.host_url)
        self._host_policy = host_policy
        self.name = name
        self.timeouts = timeouts or Timeouts()
        self.retry = retry or RetryPolicy()
        self.scheduler = scheduler or RateScheduler(limits)
        self._api_key = api_key
        self._pool = pool
        self._gate = order_gate
        self._halt: AuthError | None = None

    def __repr__(self) -> str:
        return f"OpenAlgoClient(host_url={self.host_url!r}, name={self.name!r})"

    def uses_key(self, api_key: str) -> bool:
        """Whether this client was built with ``api_key`` (constant-time compare)."""
        return hmac.compare_digest(self._api_key.encode(), api_key.encode())

    # ------------------------------------------------------------------------------- plumbing

    @property
    def halted(self) -> AuthError | None:
        """The 401/403 that stopped this client, or None."""
        return self._halt

    def clear_halt(self) -> None:
        """Allow calls again after an :class:`AuthError` (e.g. the user re-logged in the broker)."""
        self._halt = None

    async def call(
        self,
        endpoint: str,
        body: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        priority: Priority | None = None,
        order_lane: bool = False,
    ) -> dict[str, Any]:
        """POST ``body`` (plus ``apikey``) to ``endpoint`` and return the success JSON object.

        Order endpoints (:data:`ORDER_ENDPOINTS`) are sent once; reads are retried per ``retry``.
        ``timeout`` overrides the read timeout in seconds. ``priority`` orders this call among those
        waiting for the same rate budget (default: ENTRY for order endpoints, READ otherwise).
        ``order_lane`` sends a read through the order connections (see :meth:`warm_order_lane`).
        Raises :class:`BrokerError` subclasses (:class:`OrdersSuspendedError` for an order call while
        the order gate is closed, :class:`~algomirror.broker.hosts.HostNotAllowedError` when the host
        policy refuses the host: nothing is sent either way), ValueError for a malformed endpoint name.
        Cancelling the awaiting task mid-way leaves an order call's outcome unknown, like a timeout.
        """
        if not _ENDPOINT.match(endpoint):
            raise ValueError("not an OpenAlgo endpoint name")
        order = endpoint in ORDER_ENDPOINTS
        if self._host_policy is not None and not self._host_policy().allows_host(self._host):
            raise HostNotAllowedError(NOT_ALLOWED, endpoint=endpoint)
        if priority is None:
            priority = Priority.ENTRY if order else Priority.READ
        read = timeout if timeout is not None else (self.timeouts.order if order else self.timeouts.read)
        attempts = 1 if order or order_lane else max(1, self.retry.attempts)
        budget = budget_for(endpoint)
        url = f"{self.host_url}/api/v1/{endpoint}"
        payload = encode_json({"apikey": self._api_key, **(body or {})})
        gate = self._gate if order else None
        for attempt in range(1, attempts + 1):
            if self._halt is not None:
                raise AuthError(
                    f"calls stopped after the server rejected the API key: {self._halt.message}",
                    endpoint=endpoint,
                    http_status=self._halt.http_status,
                )
            if gate is not None:
                gate.check(endpoint)
            started = time.monotonic()
            try:
                async with self.scheduler.slot(budget, priority):
                    if gate is not None:
                        gate.check(endpoint)  # suspended while this call waited for its slot
                    started = time.monotonic()
                    reply = await self._pool.post(
                        url,
                        payload,
                        connect=self.timeouts.connect,
                        read=read,
                        endpoint=endpoint,
                        order=order,
                        # Again once a connection is held: suspended while this call waited for one.
                        before_send=None if gate is None else partial(gate.check, endpoint),
                        order_lane=order_lane,
                    )
                result = classify_reply(
                    reply.status, reply.body, content_type=reply.content_type, endpoint=endpoint, order=order
                )
            except RetryableError as exc:
                exc.redact(self._api_key)
                log.info(
                    "openalgo %s %s failed (attempt %d/%d, %.0f ms): %s",
                    self.name or self.host_url,
                    endpoint,
                    attempt,
                    attempts,
                    (time.monotonic() - started) * 1000,
                    exc.message,
                )
                if attempt >= attempts:
                    raise
                await asyncio.sleep(self.retry.delay(attempt, exc))
                continue
            except AuthError as exc:
                exc.redact(self._api_key)
                self._halt = exc
                log.warning(
                    "openalgo %s %s: key rejected, calls stopped: %s",
                    self.name or self.host_url,
                    endpoint,
                    exc.message,
                )
                raise
            except BrokerError as exc:
                exc.redact(self._api_key)
                raise
            log.debug(
                "openalgo %s %s ok (%.0f ms)",
                self.name or self.host_url,
                endpoint,
                (time.monotonic() - started) * 1000,
            )
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    async def _read(self, endpoint: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.call(endpoint, body)

    async def _order(
        self,
        endpoint: str,
        body: dict[str, Any],
        parse: Callable[[dict[str, Any]], R],
        *,
        priority: Priority,
        timeout: float | None = None,
    ) -> R:
        """Send an order call once and parse its reply. A success reply we cannot read means the
        order may exist: :class:`UnknownOutcomeError`, never a retryable error."""
        payload = await self.call(endpoint, body, timeout=timeout, priority=priority)
        try:
            return parse(payload)
        except MalformedResponseError as exc:
            raise UnknownOutcomeError(
                f"unreadable success reply ({exc.message}); the order may or may not exist",
                endpoint=endpoint,
                http_status=200,
            ) from exc

    # ---------------------------------------------------------------------------- account reads

    async def ping(self) -> Ping:
        return Ping.parse(await self._read("ping"))

    async def warm_order_lane(self) -> None:
        """One ``ping`` through the host's order connections, not tried again: the next order then
        finds an open, pooled connection instead of paying a TCP (and TLS) connect first, which a
        server's and our own keep-alive limits take away after a quiet spell. Raises BrokerError."""
        await self.call("ping", priority=Priority.READ, order_lane=True)

    async def funds(self) -> Funds:
        return Funds.parse(await self._read("funds"))

    async def orderbook(self) -> Orderbook:
        return Orderbook.parse(await self._read("orderbook"))

    async def tradebook(self) -> tuple[BrokerTrade, ...]:
        return BrokerTrade.parse_book(await self._read("tradebook"))

    async def positionbook(self) -> Positionbook:
        return Positionbook.parse(await self._read("positionbook"))

    async def holdings(self) -> Holdings:
        return Holdings.parse(await self._read("holdings"))

    async def order_status(self, orderid: str, *, strategy: str) -> BrokerOrder:
        """Raises :class:`~algomirror.broker.errors.NotFoundError` for an unknown id (404)."""
        return BrokerOrder.parse_status(
            await self._read("orderstatus", {"orderid": str(orderid), "strategy": strategy})
        )

    async def open_position(self, *, strategy: str, symbol: str, exchange: str, product: str) -> int:
        """The signed net quantity of one position (0 when none)."""
        payload = await self._read(
            "openposition", {"strategy": strategy, "symbol": symbol, "exchange": exchange, "product": product}
        )
        return parse_open_position(payload)

    # ------------------------------------------------------------------------------ market data

    async def quotes(self, symbol: str, exchange: str) -> Quote:
        return Quote.parse(await self._read("quotes", {"symbol": symbol, "exchange": exchange}))

    async def multiquotes(self, pairs: Sequence[tuple[str, str]]) -> tuple[MultiQuoteItem, ...]:
        """``pairs`` = [(symbol, exchange), …]; each item carries its quote or the server's error."""
        return MultiQuoteItem.parse_results(await self._read("multiquotes", {"symbols": symbols_wire(pairs)}))

    async def depth(self, symbol: str, exchange: str) -> Depth:
        return Depth.parse(await self._read("depth", {"symbol": symbol, "exchange": exchange}))

    async def history(
        self, symbol: str, exchange: str, interval: str, start_date: date, end_date: date
    ) -> tuple[Candle, ...]:
        """Bars between two dates (inclusive), ascending; ``Candle.start`` is aware UTC."""
        body = {
            "symbol": symbol,
            "exchange": exchange,
            "interval": interval,
            "start_date": start_date.isoformat(),
            "end_date": end_date.isoformat(),
        }
        return Candle.parse_history(await self._read("history", body))

    async def intervals(self) -> Intervals:
        return Intervals.parse(await self._read("intervals"))

    # ------------------------------------------------------------------------------ instruments

    async def symbol(self, symbol: str, exchange: str) -> SymbolInfo:
        """Raises :class:`~algomirror.broker.errors.NotFoundError` when the symbol is unknown."""
        return SymbolInfo.parse(await self._read("symbol", {"symbol": symbol, "exchange": exchange}))

    async def search(self, query: str, exchange: str | None = None) -> tuple[SymbolInfo, ...]:
        body: dict[str, Any] = {"query": query}
        if exchange:
            body["exchange"] = exchange
        return SymbolInfo.parse_search(await self._read("search", body))

    async def expiry(self, symbol: str, exchange: str, instrumenttype: str) -> tuple[date, ...]:
        """Unexpired expiries, ascending. ``instrumenttype`` is ``futures`` or ``options``."""
        body = {"symbol": symbol, "exchange": exchange, "instrumenttype": instrumenttype}
        return parse_expiries(await self._read("expiry", body))

    async def option_symbol(
        self, *, underlying: str, exchange: str, expiry_date: date, offset: str, option_type: str
    ) -> OptionSymbol:
        body = {
            "underlying": underlying,
            "exchange": exchange,
            "expiry_date": format_expiry(expiry_date),
            "offset": offset,
            "option_type": option_type.upper(),
        }
        return OptionSymbol.parse(await self._read("optionsymbol", body))

    async def option_chain(
        self, *, underlying: str, exchange: str, expiry_date: date, strike_count: int | None = None
    ) -> OptionChain:
        body: dict[str, Any] = {
            "underlying": underlying,
            "exchange": exchange,
            "expiry_date": format_expiry(expiry_date),
        }
        if strike_count is not None:
            body["strike_count"] = strike_count
        return OptionChain.parse(await self._read("optionchain", body))

    async def market_holidays(self, year: int) -> tuple[ExchangeHoliday, ...]:
        """The exchanges' holidays and special sessions of ``year`` (IST dates), by date."""
        return parse_holidays(await self._read("market/holidays", {"year": year}))

    async def margin(self, positions: Sequence[MarginPosition]) -> Margin:
        return Margin.parse(await self._read("margin", {"positions": [p.to_wire() for p in positions]}))

    # ----------------------------------------------------------------------------------- orders

    async def place_order(
        self, order: OrderRequest, *, strategy: str, priority: Priority = Priority.ENTRY
    ) -> OrderAck:
        """Sent once. Raises RejectedError (broker's text; ``orderid`` set if the broker recorded the
        rejection), NotPlacedError (semi-auto), UnknownOutcomeError, RateLimitedError/
        ConnectionFailedError (nothing sent), AuthError, OrdersSuspendedError (nothing sent).

        ``priority`` (here and on every order method): EXIT for calls that close risk, so they get
        the account's next free order slot before waiting entries and reads.
        """
        return await self._order(
            "placeorder", {"strategy": strategy, **order.to_wire()}, OrderAck.parse, priority=priority
        )

    async def place_smart_order(
        self,
        order: OrderRequest,
        *,
        position_size: int,
        strategy: str,
        priority: Priority = Priority.ENTRY,
    ) -> SmartOrderResult:
        """Drive the net position of symbol+exchange+product to ``position_size`` (signed units).

        ``SmartOrderResult.noop`` is true when the server placed nothing because the position is
        already at the target (including "No OpenPosition Found. Not placing Exit order.").
        """
        body = {"strategy": strategy, **order.to_wire(), "position_size": str(position_size)}
        return await self._order("placesmartorder", body, SmartOrderResult.parse, priority=priority)

    async def split_order(
        self, order: OrderRequest, *, splitsize: int, strategy: str, priority: Priority = Priority.ENTRY
    ) -> BatchResult:
        """Children of ``splitsize`` units plus a remainder; check every item of the result."""
        if splitsize < 1:
            raise ValueError("splitsize must be ≥ 1")
        children = math.ceil(order.quantity / splitsize)
        body = {"strategy": strategy, **order.to_wire(), "splitsize": str(splitsize)}
        return await self._order(
            "splitorder",
            body,
            lambda p: BatchResult.parse(p, "splitorder"),
            priority=priority,
            timeout=self.timeouts.batch(children),
        )

    async def basket_order(
        self, orders: Sequence[OrderRequest], *, strategy: str, priority: Priority = Priority.ENTRY
    ) -> BatchResult:
        """BUY items are sent before SELL items (hedge first); check every item of the result."""
        ordered = [o for o in orders if o.action.value == "BUY"] + [
            o for o in orders if o.action.value != "BUY"
        ]
        body = {"strategy": strategy, "orders": [o.to_wire() for o in ordered]}
        return await self._order(
            "basketorder",
            body,
            lambda p: BatchResult.parse(p, "basketorder"),
            priority=priority,
            timeout=self.timeouts.batch(len(ordered)),
        )

    async def modify_order(
        self, request: ModifyRequest, *, strategy: str, priority: Priority = Priority.ENTRY
    ) -> OrderAck:
        """Change quantity/price/trigger of a working order. Raises RejectedError for a terminal order."""
        return await self._order(
            "modifyorder",
            {"strategy": strategy, **request.to_wire()},
            lambda p: _ack(p, request.orderid, "modifyorder"),
            priority=priority,
        )

    async def cancel_order(
        self, orderid: str, *, strategy: str, priority: Priority = Priority.ENTRY
    ) -> OrderAck:
        """Raises NotFoundError (unknown id) or RejectedError (terminal order)."""
        return await self._order(
            "cancelorder",
            {"strategy": strategy, "orderid": str(orderid)},
            lambda p: _ack(p, orderid, "cancelorder"),
            priority=priority,
        )

    async def cancel_all_orders(
        self, *, strategy: str, priority: Priority = Priority.ENTRY
    ) -> CancelAllResult:
        """Cancels every open order of the account (``strategy`` is ignored by the server)."""
        return await self._order(
            "cancelallorder", {"strategy": strategy}, CancelAllResult.parse, priority=priority
        )

    async def close_all_positions(
        self, *, strategy: str, priority: Priority = Priority.ENTRY
    ) -> ClosePositionResult:
        """Squares off every position of the account at MARKET (closeposition)."""
        return await self._order(
            "closeposition", {"strategy": strategy}, ClosePositionResult.parse, priority=priority
        )

    async def options_order(
        self,
        *,
        strategy: str,
        underlying: str,
        exchange: str,
        leg: OptionLeg,
        expiry_date: date | None = None,
        priority: Priority = Priority.ENTRY,
    ) -> OptionsOrderResult:
        body: dict[str, Any] = {
            "strategy": strategy,
            "underlying": underlying,
            "exchange": exchange,
            **leg.to_wire(),
        }
        if expiry_date is not None:
            body["expiry_date"] = format_expiry(expiry_date)
        timeout = None
        if leg.splitsize:
            timeout = self.timeouts.batch(math.ceil(leg.quantity / leg.splitsize))
        return await self._order(
            "optionsorder", body, OptionsOrderResult.parse, priority=priority, timeout=timeout
        )

    async def options_multi_order(
        self,
        *,
        strategy: str,
        underlying: str,
        exchange: str,
        legs: Sequence[OptionLeg],
        expiry_date: date | None = None,
        priority: Priority = Priority.ENTRY,
    ) -> OptionsMultiResult:
        body: dict[str, Any] = {
            "strategy": strategy,
            "underlying": underlying,
            "exchange": exchange,
            "legs": [leg.to_wire() for leg in legs],
        }
        if expiry_date is not None:
            body["expiry_date"] = format_expiry(expiry_date)
        timeout = max(self.timeouts.order, self.timeouts.batch(len(legs)))
        return await self._order(
            "optionsmultiorder", body, OptionsMultiResult.parse, priority=priority, timeout=timeout
        )


def _ack(payload: dict[str, Any], orderid: str, endpoint: str) -> OrderAck:
    """modify/cancel replies: the order id we sent stands in when the server omits it."""
    if payload.get("orderid") in (None, ""):
        payload = {**payload, "orderid": str(orderid)}
    return OrderAck.parse(payload, endpoint)


# ------------------------------------------------------------------------------------ sync helpers


_BROKER_ID = re.compile(r"^[A-Za-z0-9_.-]{1,50}$")


def _decoded(reply: Reply) -> Any:
    try:
        return json.loads(reply.body)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None


def _ping_outcome(reply: Reply) -> str | None:
    """The broker id when ``reply`` has OpenAlgo's ping shape (``status: success`` and ``data`` with a
    broker id and a message text); None otherwise. A key refusal in OpenAlgo's shape raises AuthError."""
    payload = _decoded(reply)
    if not isinstance(payload, dict):
        return None
    if reply.status in (401, 403) and payload.get("status") == "error":
        raise AuthError("key rejected", endpoint="ping", http_status=reply.status)
    data = payload.get("data")
    if reply.status != 200 or payload.get("status") != "success" or not isinstance(data, dict):
        return None
    broker, message = data.get("broker"), data.get("message")
    if not isinstance(broker, str) or not _BROKER_ID.match(broker) or not isinstance(message, str):
        return None
    return broker


def _test_failure(exc: BaseException, *, after_ping: bool) -> tuple[str, str]:
    """(status, message) of a failed connection test: one of a few fixed texts, never the server's."""
    from algomirror.broker.facade import COULD_NOT_CONNECT, KEY_REJECTED, NO_FUNDS, NOT_OPENALGO, TIMED_OUT

    cause = exc.__cause__
    if isinstance(exc, AuthError):
        return "auth_failed", KEY_REJECTED
    if isinstance(exc, BrokerTimeoutError) or isinstance(cause, aiohttp.ServerTimeoutError | TimeoutError):
        return "error", TIMED_OUT
    if isinstance(cause, aiohttp.ClientConnectorError):
        return "error", COULD_NOT_CONNECT
    return "failed", NO_FUNDS if after_ping else NOT_OPENALGO


def run_connection_test(host_url: str, api_key: str, *, timeout: float = 5.0) -> ConnectionTest:
    """``ping`` then ``funds`` (``timeout`` seconds each for connect and reply, no retries); never
    raises for broker or network problems.

    The host URL is rebuilt first (:func:`~algomirror.broker.hosts.normalize_host_url`) and only
    OpenAlgo's fixed paths are called. The reply to ``ping`` is believed only in OpenAlgo's shape, and a
    failure says one of a few fixed things (see :mod:`algomirror.broker.facade`) without quoting what
    the server sent: a host URL must not turn the test into a probe of other services. The allow-list
    of hosts is the caller's to check (it lives in the database). Safe to call from a Flask request
    thread: the calls run on the shared background event loop.
    """
    from algomirror.broker.facade import INVALID_HOST_URL, NOT_OPENALGO, ConnectionTest
    from algomirror.broker.sync_facade import background

    try:
        base = normalize_host_url(host_url.strip())
    except ValueError:
        return ConnectionTest(ok=False, status="failed", broker=None, message=INVALID_HOST_URL)
    if not api_key:
        return ConnectionTest(ok=False, status="auth_failed", broker=None, message="API key is empty")

    seen: dict[str, str] = {}

    async def probe(pool: HostPool) -> Funds | None:
        # Ping through the pool directly: the reply's shape is judged here, before anything of it is used.
        reply = await pool.post(
            f"{base}/api/v1/ping",
            encode_json({"apikey": api_key}),
            connect=timeout,
            read=timeout,
            endpoint="ping",
            order=False,
        )
        broker = _ping_outcome(reply)
        if broker is None:
            return None
        seen["broker"] = broker
        client = OpenAlgoClient(
            base,
            api_key,
            pool=pool,
            timeouts=Timeouts(connect=timeout, read=timeout, order=timeout),
            retry=RetryPolicy(attempts=1),
            limits=RateLimits.unlimited(),
        )
        return await client.funds()

    try:
        funds = background().run_with_pool(probe, timeout=2 * timeout + 2)
    except BrokerError as exc:
        broker = seen.get("broker")
        status, message = _test_failure(exc, after_ping=broker is not None)
        return ConnectionTest(ok=False, status=status, broker=broker, message=message)
    broker = seen.get("broker")
    if funds is None or broker is None:
        return ConnectionTest(ok=False, status="failed", broker=None, message=NOT_OPENALGO)
    cash = funds.availablecash
    cash_text = "unknown" if cash is None else format_inr(cash)
    return ConnectionTest(
        ok=True,
        status="connected",
        broker=broker,
        message=f"Connected to {broker}; available cash {cash_text}",
        available_cash=cash,
    )


__all__ = [
    "ORDER_ENDPOINTS",
    "HostPool",
    "OpenAlgoClient",
    "OrderGate",
    "Priority",
    "RetryPolicy",
    "Timeouts",
    "origin_of",
    "run_connection_test",
]
