"""The OpenAlgo WebSocket market-data client (OPENALGO-PROTOCOL.md §5, §8; contracts B).

One :class:`FeedConnection` is one socket: open it with :func:`open_feed` (authenticates), then
:meth:`~FeedConnection.subscribe` and iterate :meth:`~FeedConnection.ticks`. A background reader owns the
socket: acks resolve the request that asked for them, ticks go to an unbounded queue, ``order_update``
frames are only counted and passed to an optional hint callback (the order book stays the truth).

What a real server does that the client must survive:

* no snapshot after ``subscribe`` — the first tick comes with the next broker tick, so ``subscribe``
  returns on the ack and never waits for data;
* the outer ``mode`` is the mode this client subscribed at; ``data`` may carry its own ``mode``,
  ``symbol``, ``exchange`` and unknown keys, which are ignored (``data.symbol`` only fills a missing
  outer one);
* numbers may arrive as strings (``"112.45"``, ``"1763782500000"``) and integers as floats;
* error frames carry no ``type`` (``{"status":"error","code":…,"message":…}``) and the socket stays open.

Errors: :class:`FeedAuthError` (the key was refused: stop, do not retry with it) and :class:`FeedClosed`
(the connection is gone or the server stopped answering: reconnect, re-authenticate, re-subscribe).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from algomirror.domain.timeutil import Clock, SystemClock

log = logging.getLogger(__name__)

Key = tuple[str, str]
OrderUpdateCallback = Callable[[Mapping[str, Any]], None]

# OpenAlgo pings every 20 s and drops a client whose pong is late by 20 s; we keep the same rhythm the
# other way so a half-open socket is noticed within ~40 s even when no ticks flow.
PING_INTERVAL: Final = 20.0
PING_TIMEOUT: Final = 20.0
MAX_FRAME_BYTES: Final = 1024 * 1024
_MODE_LABELS: Final = {"ltp": 1, "quote": 2, "depth": 3, "full": 3}
# Epoch values below this are seconds, not milliseconds (1e11 ms is 1973; 1e11 s is the year 5138).
_MS_THRESHOLD: Final = 100_000_000_000


class FeedError(Exception):
    """Base of every feed failure. ``message`` never contains the API key."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class FeedAuthError(FeedError):
    """The server refused the API key (``AUTHENTICATION_ERROR`` or an HTTP 401/403 on the upgrade).
    Retrying with the same key is pointless."""


class FeedClosed(FeedError):
    """The connection is lost, could not be made, or the server did not answer in time. Reconnect
    (with backoff), re-authenticate and re-subscribe: subscriptions are per connection."""


@dataclass(frozen=True)
class Tick:
    """One ``market_data`` frame.

    ``ltp``/``bid``/``ask`` are rupees as sent (a zero or negative ``ltp`` is passed through for the
    caller to count). ``at`` is aware UTC from ``data.timestamp`` (epoch ms; seconds accepted), else
    ``received_at`` (this client's clock when the frame arrived). ``mode`` is the outer mode (1 LTP,
    2 Quote, 3 Depth). Quantities, ``volume`` and ``oi`` are counts; ``None`` when absent or unreadable.
    """

    symbol: str
    exchange: str
    ltp: Decimal
    at: datetime
    mode: int
    bid: Decimal | None
    ask: Decimal | None
    bid_qty: int | None
    ask_qty: int | None
    volume: int | None
    oi: int | None
    received_at: datetime


class _Closed:
    """Queue marker: the reader has ended; ``error`` is what :meth:`FeedConnection.ticks` raises."""

    def __init__(self, error: FeedClosed) -> None:
        self.error = error


@dataclass
class _Pending:
    kind: str  # "subscribe" | "unsubscribe"
    future: asyncio.Future[dict[str, Any]]


class FeedConnection:
    """An authenticated market-data socket. Create it with :func:`open_feed` (or :meth:`connect`).

    Counters (for health pages and tests): ``malformed`` — frames that were not JSON objects or ticks
    that could not be read (dropped); ``order_updates`` — ``order_update`` frames seen; ``server_errors``
    — error frames that answered no pending request (kept in ``last_server_error``).
    """

    def __init__(
        self,
        ws: ClientConnection,
        *,
        timeout: float,
        clock: Clock,
        on_order_update: OrderUpdateCallback | None = None,
    ) -> None:
        self._ws = ws
        self._timeout = timeout
        self._clock = clock
        self.on_order_update = on_order_update
        self._queue: asyncio.Queue[Tick | _Closed] = asyncio.Queue()
        self._pending: dict[str, _Pending] = {}
        self._next_id = 0
        self._closed: FeedClosed | None = None
        self._last_message_at: datetime | None = None
        self._reader: asyncio.Task[None] | None = None
        self.malformed = 0
        self.order_updates = 0
        self.server_errors = 0
        self.last_server_error: str | None = None

    # -- opening -----------------------------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        url: str,
        api_key: str,
        *,
        timeout: float = 10,
        clock: Clock | None = None,
        on_order_update: OrderUpdateCallback | None = None,
    ) -> FeedConnection:
        """Open ``url`` (``ws://host:8765``), authenticate with ``api_key`` and wait for the reply.

        ``timeout`` (seconds) bounds the handshake, the auth reply and later each (un)subscribe ack.
        Raises :class:`FeedAuthError` when the key is refused, :class:`FeedClosed` when the server cannot
        be reached, closes the socket, or does not answer within ``timeout``.
        """
        try:
            ws = await connect(
                url,
                open_timeout=timeout,
                ping_interval=PING_INTERVAL,
                ping_timeout=PING_TIMEOUT,
                close_timeout=timeout,
                max_size=MAX_FRAME_BYTES,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise FeedAuthError(f"feed refused the key (HTTP {status})") from None
            raise FeedClosed(f"feed handshake failed (HTTP {status})") from None
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            raise FeedClosed(f"cannot connect to the feed: {type(exc).__name__}: {exc}") from None
        conn = cls(ws, timeout=timeout, clock=clock or SystemClock(), on_order_update=on_order_update)
        try:
            await conn._authenticate(api_key)
        except BaseException:
            await ws.close()
            raise
        conn._reader = asyncio.get_running_loop().create_task(conn._read_loop(), name="feed-reader")
        return conn

    async def _authenticate(self, api_key: str) -> None:
        await self._send({"action": "authenticate", "api_key": api_key})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise FeedClosed(f"no authentication reply within {self._timeout:g}s")
            try:
                raw = await asyncio.wait_for(self._ws.recv(), remaining)
            except TimeoutError:
                raise FeedClosed(f"no authentication reply within {self._timeout:g}s") from None
            except ConnectionClosed as exc:
                raise FeedClosed(f"feed closed during authentication ({_close_text(exc)})") from None
            self._last_message_at = self._clock.now()
            frame = _parse_json(raw)
            if frame is None:
                self.malformed += 1
                continue
            if frame.get("status") == "error":
                message = _text(frame.get("message")) or "authentication failed"
                code = _text(frame.get("code"))
                if code == "AUTHENTICATION_ERROR" or frame.get("type") == "auth":
                    raise FeedAuthError(f"feed refused the key: {message}")
                raise FeedClosed(f"feed error during authentication: {code} {message}".strip())
            if frame.get("type") == "auth" and frame.get("status") == "success":
                return
            # Anything else before the auth reply (a pong, a stray frame) is not the answer.

    # -- requests ----------------------------------------------------------------------------------

    async def subscribe(self, symbols: Sequence[Key], mode: int) -> dict[Key, str | None]:
        """Subscribe ``symbols`` (``(symbol, exchange)`` pairs) at ``mode`` (1 LTP, 2 Quote, 3 Depth).

        Returns once the server acknowledges — it does NOT wait for a first tick (a real server sends no
        snapshot). The result maps each requested pair to ``None`` (subscribed) or the server's error text;
        a request-level error frame (``INVALID_MODE``…) gives every pair that text. Raises
        :class:`FeedClosed` when the socket is gone or no ack arrives within the timeout (the socket is
        then closed so :meth:`ticks` ends too).
        """
        items = [{"symbol": s, "exchange": e} for s, e in symbols]
        reply = await self._request("subscribe", {"action": "subscribe", "symbols": items, "mode": mode})
        results: dict[Key, str | None] = {}
        if reply.get("status") == "error" and "type" not in reply:
            text = _text(reply.get("message")) or _text(reply.get("code")) or "subscribe failed"
            failed: dict[Key, str | None] = dict.fromkeys(symbols, text)
            return failed
        acked: dict[Key, str | None] = {}
        subs = reply.get("subscriptions")
        for item in subs if isinstance(subs, list) else []:
            if not isinstance(item, dict):
                continue
            key = (_text(item.get("symbol")), _text(item.get("exchange")))
            ok = item.get("status") == "success"
            acked[key] = None if ok else (_text(item.get("message")) or "subscription failed")
        whole_ok = reply.get("status") == "success"
        for key in symbols:
            if key in acked:
                results[key] = acked[key]
            else:
                # An ack that does not list the pair: trust the overall status.
                results[key] = None if whole_ok else (_text(reply.get("message")) or "not acknowledged")
        return results

    async def unsubscribe(self, symbols: Sequence[Key], mode: int) -> None:
        """Unsubscribe ``symbols`` at ``mode`` and wait for the ack. The mode is sent on every item and the
        request: OpenAlgo defaults it to 2 and an unsubscribe at a mode not subscribed silently does
        nothing. Ticks already queued are still delivered by :meth:`ticks`. Raises :class:`FeedClosed`
        like :meth:`subscribe`; raises :class:`FeedError` when the server answers with an error frame."""
        items = [{"symbol": s, "exchange": e, "mode": mode} for s, e in symbols]
        reply = await self._request("unsubscribe", {"action": "unsubscribe", "symbols": items, "mode": mode})
        if reply.get("status") == "error" and "type" not in reply:
            raise FeedError(f"unsubscribe refused: {_text(reply.get('message')) or _text(reply.get('code'))}")

    async def subscribe_orders(self) -> None:
        """Ask for ``order_update`` frames (hints only: see :attr:`on_order_update`). The ack is not
        awaited. Raises :class:`FeedClosed` when the socket is gone."""
        await self._send({"action": "subscribe_orders"})

    async def _request(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        if self._closed is not None:
            raise FeedClosed(self._closed.message)
        self._next_id += 1
        request_id = f"am{self._next_id}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = _Pending(kind, future)
        try:
            await self._send({**body, "request_id": request_id})
            try:
                return await asyncio.wait_for(future, self._timeout)
            except TimeoutError:
                # A server that stops answering is as good as gone: close so ticks() ends and the
                # owner reconnects.
                await self.close()
                raise FeedClosed(f"no {kind} ack within {self._timeout:g}s") from None
        finally:
            self._pending.pop(request_id, None)

    async def _send(self, body: dict[str, Any]) -> None:
        try:
            await self._ws.send(json.dumps(body))
        except ConnectionClosed as exc:
            raise FeedClosed(f"feed closed ({_close_text(exc)})") from None

    # -- reading -----------------------------------------------------------------------------------

    async def ticks(self) -> AsyncIterator[Tick]:
        """Yield ticks in arrival order, forever. Raises :class:`FeedClosed` once the socket has ended
        and every queued tick was yielded (also after :meth:`close`). One consumer at a time."""
        while True:
            item = await self._queue.get()
            if isinstance(item, _Closed):
                self._queue.put_nowait(item)  # the next call (or iterator) ends the same way
                raise FeedClosed(item.error.message)
            yield item

    @property
    def last_message_at(self) -> datetime | None:
        """When the last frame of any kind arrived (aware UTC, this client's clock); ``None`` before any."""
        return self._last_message_at

    @property
    def closed(self) -> bool:
        """True once the socket has ended (for any reason)."""
        return self._closed is not None

    async def close(self) -> None:
        """Close the socket and wait for the reader to finish. Idempotent; never raises for a socket that
        is already gone."""
        await self._ws.close()
        if self._reader is not None and self._reader is not asyncio.current_task():
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def _read_loop(self) -> None:
        error: FeedClosed
        try:
            async for raw in self._ws:
                self._on_frame(raw)
            error = FeedClosed(f"feed closed ({_close_text_from(self._ws)})")
        except ConnectionClosed as exc:
            error = FeedClosed(f"feed lost ({_close_text(exc)})")
        except asyncio.CancelledError:
            error = FeedClosed("feed reader cancelled")
            self._finish(error)
            raise
        self._finish(error)

    def _finish(self, error: FeedClosed) -> None:
        self._closed = error
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(FeedClosed(error.message))
        self._queue.put_nowait(_Closed(error))

    def _on_frame(self, raw: str | bytes) -> None:
        received = self._clock.now()
        self._last_message_at = received
        frame = _parse_json(raw)
        if frame is None:
            self.malformed += 1
            return
        kind = frame.get("type")
        if kind == "market_data":
            tick = parse_tick(frame, received)
            if tick is None:
                self.malformed += 1
            else:
                self._queue.put_nowait(tick)
        elif kind == "order_update":
            self.order_updates += 1
            if self.on_order_update is not None:
                try:
                    self.on_order_update(frame)
                except Exception:
                    # A broken hint handler must not stop market data; the order book poll still runs.
                    log.exception("feed on_order_update callback failed")
        elif kind in ("subscribe", "unsubscribe"):
            self._resolve(frame, kind)
        elif kind is None and frame.get("status") == "error":
            self._resolve(frame, None)
        # pong, subscribe_orders acks, broker_info and unknown types carry nothing we need.

    def _resolve(self, frame: dict[str, Any], kind: str | None) -> None:
        """Hand an ack or error frame to the request it answers: by ``request_id``, else the oldest
        pending request of that kind (any kind for an error frame, which names none)."""
        pending: _Pending | None = None
        request_id = frame.get("request_id")
        if isinstance(request_id, str):
            pending = self._pending.get(request_id)
        if pending is None:
            pending = next(
                (
                    p
                    for p in self._pending.values()
                    if not p.future.done() and (kind is None or p.kind == kind)
                ),
                None,
            )
        if pending is not None and not pending.future.done():
            pending.future.set_result(frame)
        elif kind is None:
            self.server_errors += 1
            self.last_server_error = f"{_text(frame.get('code'))}: {_text(frame.get('message'))}"
            log.warning("feed error frame: %s", self.last_server_error)


async def open_feed(
    url: str,
    api_key: str,
    *,
    timeout: float = 10,
    clock: Clock | None = None,
    on_order_update: OrderUpdateCallback | None = None,
) -> FeedConnection:
    """:meth:`FeedConnection.connect`: open and authenticate. Raises :class:`FeedAuthError` or
    :class:`FeedClosed`."""
    return await FeedConnection.connect(
        url, api_key, timeout=timeout, clock=clock, on_order_update=on_order_update
    )


# -- frame parsing ---------------------------------------------------------------------------------


def parse_tick(frame: Mapping[str, Any], received_at: datetime) -> Tick | None:
    """Read a ``market_data`` frame of either exchange profile; ``None`` when symbol, exchange, the outer
    mode or ``data.ltp`` is missing or unreadable. ``received_at`` must be aware UTC."""
    data = frame.get("data")
    if not isinstance(data, Mapping):
        return None
    symbol = frame.get("symbol") or data.get("symbol")
    exchange = frame.get("exchange") or data.get("exchange")
    mode = _mode(frame.get("mode"))
    ltp = _decimal(data.get("ltp"))
    if not isinstance(symbol, str) or not isinstance(exchange, str) or mode is None or ltp is None:
        return None
    depth = data.get("depth")
    best_bid = _top(depth, "buy")
    best_ask = _top(depth, "sell")
    bid = _decimal(data.get("bid"))
    ask = _decimal(data.get("ask"))
    bid_qty = _int(data.get("bid_qty"))
    ask_qty = _int(data.get("ask_qty"))
    return Tick(
        symbol=symbol,
        exchange=exchange,
        ltp=ltp,
        at=_epoch(data.get("timestamp")) or received_at,
        mode=mode,
        bid=bid if bid is not None else _decimal(best_bid.get("price")),
        ask=ask if ask is not None else _decimal(best_ask.get("price")),
        bid_qty=bid_qty if bid_qty is not None else _int(best_bid.get("quantity")),
        ask_qty=ask_qty if ask_qty is not None else _int(best_ask.get("quantity")),
        volume=_int(data.get("volume")),
        oi=_int(data.get("oi")),
        received_at=received_at,
    )


def _parse_json(raw: str | bytes) -> dict[str, Any] | None:
    try:
        frame = json.loads(raw)
    except ValueError:  # UnicodeDecodeError included
        return None
    return frame if isinstance(frame, dict) else None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


def _mode(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value in (1, 2, 3) else None
    if isinstance(value, float) and value in (1.0, 2.0, 3.0):
        return int(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("1", "2", "3"):
            return int(text)
        return _MODE_LABELS.get(text)
    return None


def _decimal(value: Any) -> Decimal | None:
    """A finite number, number-like string included, as an exact Decimal of its shortest repr."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        # str() first: Decimal(112.45) would carry the binary float's 50 digits.
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _int(value: Any) -> int | None:
    number = _decimal(value)
    if number is None or number != number.to_integral_value():
        return None
    return int(number)


def _epoch(value: Any) -> datetime | None:
    number = _decimal(value)
    if number is None or number <= 0:
        return None
    seconds = float(number) if number < _MS_THRESHOLD else float(number) / 1000
    if not math.isfinite(seconds):
        return None
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _top(depth: Any, side: str) -> Mapping[str, Any]:
    if isinstance(depth, Mapping):
        levels = depth.get(side)
        if isinstance(levels, list) and levels and isinstance(levels[0], Mapping):
            return levels[0]
    return {}


def _close_text(exc: ConnectionClosed) -> str:
    frame = exc.rcvd or exc.sent
    return f"code {frame.code} {frame.reason}".strip() if frame is not None else "no close frame"


def _close_text_from(ws: ClientConnection) -> str:
    code, reason = ws.close_code, ws.close_reason
    return f"code {code} {reason or ''}".strip() if code is not None else "no close frame"


__all__ = [
    "FeedAuthError",
    "FeedClosed",
    "FeedConnection",
    "FeedError",
    "Tick",
    "open_feed",
    "parse_tick",
]
