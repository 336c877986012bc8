"""The WebSocket market-data server (OPENALGO-PROTOCOL.md §5), on its own port, any path.

* Authenticate within ``ws_auth_timeout`` (15 s) or the socket is closed with 4401 ``auth timeout``; a failed
  authentication gets an ``AUTHENTICATION_ERROR`` frame and the same deadline.
* Protocol pings every ``ws_heartbeat`` (20 s); aiohttp drops a client whose pong does not come back.
* Subscriptions are per connection and ref-counted server-wide; modes 1 (LTP), 2 (Quote), 3 (Depth).
  Each client receives one frame per tick per instrument, at the highest mode it subscribed, with the
  outer ``mode`` an int. Errors carry no ``type``.
* ``subscribe_orders`` streams ``order_update`` frames of the client's own account.
* Tick ``timestamp``/``ltt`` are the simulated clock in epoch milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

from aiohttp import WSMsgType, web

from algomirror.simulator.contracts import Quote
from algomirror.simulator.core import SimulatorCore
from algomirror.simulator.exchange import Account, Order, unwatch_instrument, watch_instrument
from algomirror.simulator.wire import epoch_ms, money, order_update

log = logging.getLogger(__name__)

MODE_LABELS = {1: "LTP", 2: "Quote", 3: "Depth"}
_MODE_NAMES = {"ltp": 1, "quote": 2, "depth": 3, "full": 3}
Key = tuple[str, str]


def parse_mode(value: Any) -> int | None:
    if value is None:
        return 2
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value in (1, 2, 3) else None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _MODE_NAMES:
            return _MODE_NAMES[text]
        if text in ("1", "2", "3"):
            return int(text)
    return None


def error_frame(code: str, message: str) -> str:
    return json.dumps({"status": "error", "code": code, "message": message})


def _send_reply(client: WsClient, msg: dict[str, Any], reply: dict[str, Any]) -> None:
    """Send a (un)subscribe reply, echoing the request's ``request_id`` last when it had one."""
    if "request_id" in msg:
        reply["request_id"] = msg["request_id"]
    client.send(json.dumps(reply))


@dataclass(eq=False)
class WsClient:
    ws: web.WebSocketResponse
    queue: asyncio.Queue[str]
    api_key: str | None = None
    user_id: str = ""
    authenticated: bool = False
    orders: bool = False
    # (symbol, exchange) -> {mode: depth}
    subs: dict[Key, dict[int, int]] = field(default_factory=dict)
    dropped_frames: int = 0

    def send(self, frame: str) -> None:
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.dropped_frames += 1


class WsHub:
    def __init__(self, core: SimulatorCore) -> None:
        self.core = core
        self.clients: set[WsClient] = set()
        self.index: dict[Key, set[WsClient]] = {}
        self.frames_sent = 0
        core.ws_hub = self
        core.exchange.listeners.append(self.on_order)

    # -- fan-out -----------------------------------------------------------------------------------

    def on_quote(self, quote: Quote) -> None:
        key = (quote.symbol, quote.exchange)
        subscribers = self.index.get(key)
        if not subscribers:
            return
        faults = self.core.faults
        if faults.ws_silent:
            return
        zero = faults.take_zero_tick()
        stale = faults.take_stale_tick()
        cache: dict[int, str] = {}
        # OpenAlgo sends the upstream tick (the highest subscribed mode) to every subscriber as it is.
        upstream = self._upstream_mode(subscribers, key) if self.core.quirks.ws_openalgo_frames else None
        for client in list(subscribers):
            modes = client.subs.get(key)
            if not modes:
                continue
            mode = upstream or max(modes)
            frame = cache.get(mode)
            if frame is None:
                frame = cache[mode] = json.dumps(
                    self.tick(
                        quote, mode, zero=zero, stale_seconds=faults.ws_stale_age_seconds if stale else 0
                    )
                )
            client.send(frame)
            self.frames_sent += 1

    @staticmethod
    def _upstream_mode(subscribers: set[WsClient], key: Key) -> int:
        return max((max(c.subs[key]) for c in subscribers if c.subs.get(key)), default=1)

    def tick(self, q: Quote, mode: int, *, zero: bool = False, stale_seconds: float = 0) -> dict[str, Any]:
        stamp = q.timestamp - timedelta(seconds=stale_seconds) if stale_seconds else q.timestamp
        ms = epoch_ms(stamp)
        ltp = 0.0 if zero else money(q.ltp)
        data: dict[str, Any] = {"ltp": ltp, "ltt": ms, "timestamp": ms}
        if mode >= 2:
            prev = q.prev_close
            change = q.ltp - prev if prev > 0 else Decimal(0)
            data.update(
                open=money(q.open),
                high=money(q.high),
                low=money(q.low),
                close=money(prev),
                volume=q.volume,
                last_trade_quantity=q.ltq,
                average_price=money(q.average_price),
                avg_trade_price=money(q.average_price),
                total_buy_quantity=sum(x.quantity for x in q.bids) or q.bid_qty,
                total_sell_quantity=sum(x.quantity for x in q.asks) or q.ask_qty,
                oi=q.oi,
                change=money(change),
                change_percent=money(change / prev * 100) if prev > 0 else 0.0,
            )
        if mode >= 3:
            ref = q.prev_close if q.prev_close > 0 else q.ltp
            data.update(
                oi=q.oi,
                upper_circuit=money(ref * Decimal("1.5")),
                lower_circuit=money(max(ref * Decimal("0.5"), Decimal("0.05"))),
                depth={
                    "buy": [
                        {"price": money(x.price), "quantity": x.quantity, "orders": x.orders}
                        for x in q.bids[:5]
                    ],
                    "sell": [
                        {"price": money(x.price), "quantity": x.quantity, "orders": x.orders}
                        for x in q.asks[:5]
                    ],
                },
            )
        if self.core.quirks.ws_openalgo_frames:
            data.update(symbol=q.symbol, exchange=q.exchange, mode=mode)
        return {
            "type": "market_data",
            "symbol": q.symbol,
            "exchange": q.exchange,
            "mode": mode,
            "broker": self.core.config.broker,
            "data": data,
        }

    def on_order(self, acct: Account, order: Order) -> None:
        frame: str | None = None
        for client in self.clients:
            if client.orders and client.api_key == acct.api_key:
                frame = frame or json.dumps(self._order_update(acct, order))
                client.send(frame)

    def _order_update(self, acct: Account, order: Order) -> dict[str, Any]:
        update = order_update(acct, order)
        if self.core.quirks.ws_openalgo_frames and order.status in ("open", "trigger pending"):
            update["pending_quantity"] = 0
        return update

    def _ack_text(self, default: str) -> str:
        # The real server's one text for every (un)subscribe ack, as observed side by side.
        return "Subscription processing complete" if self.core.quirks.ws_openalgo_frames else default

    # -- subscriptions -----------------------------------------------------------------------------

    def _add(self, client: WsClient, key: Key, mode: int, depth: int) -> None:
        client.subs.setdefault(key, {})[mode] = depth
        subscribers = self.index.setdefault(key, set())
        if not subscribers:
            watch_instrument(self.core.market, *key)
        subscribers.add(client)

    def rewatch(self) -> None:
        """Re-register every subscribed instrument with a freshly built market (after a reset)."""
        for key in self.index:
            watch_instrument(self.core.market, *key)

    def _remove(self, client: WsClient, key: Key, mode: int | None) -> None:
        modes = client.subs.get(key)
        if modes is None:
            return
        if mode is None:
            modes.clear()
        else:
            modes.pop(mode, None)
        if not modes:
            client.subs.pop(key, None)
            subscribers = self.index.get(key)
            if subscribers is not None:
                subscribers.discard(client)
                if not subscribers:
                    del self.index[key]
                    unwatch_instrument(self.core.market, *key)

    def ref_count(self, symbol: str, exchange: str) -> int:
        """How many connections subscribe to an instrument (the upstream subscription's ref count)."""
        return len(self.index.get((symbol, exchange), ()))

    def forget(self, client: WsClient) -> None:
        for key in list(client.subs):
            self._remove(client, key, None)
        self.clients.discard(client)

    async def drop_all(self) -> int:
        """Close every connection (code 1012, service restart); returns how many were open."""
        clients = list(self.clients)

        async def close(client: WsClient) -> None:
            with contextlib.suppress(ConnectionError, RuntimeError, TimeoutError):
                # A client that never answers the close handshake must not hold the others up.
                await asyncio.wait_for(client.ws.close(code=1012, message=b"dropped by simulator"), 2.0)

        await asyncio.gather(*(close(c) for c in clients))
        return len(clients)

    # -- protocol ----------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        cfg = self.core.config
        ws = web.WebSocketResponse(heartbeat=cfg.ws_heartbeat, max_msg_size=1024 * 1024)
        await ws.prepare(request)
        client = WsClient(ws, asyncio.Queue(maxsize=cfg.ws_queue_size))
        self.clients.add(client)
        writer = asyncio.get_running_loop().create_task(self._writer(client))
        deadline = asyncio.get_running_loop().create_task(self._auth_deadline(client))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._on_text(client, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    client.send(error_frame("INVALID_JSON", "Binary frames are not supported"))
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            self.forget(client)
            deadline.cancel()
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        return ws

    async def _writer(self, client: WsClient) -> None:
        while True:
            frame = await client.queue.get()
            if client.ws.closed:
                return
            try:
                await client.ws.send_str(frame)
            except (ConnectionError, RuntimeError):
                return
            trace = self.core.trace
            if trace is not None:
                trace.frame_sent(frame)

    async def _auth_deadline(self, client: WsClient) -> None:
        await asyncio.sleep(self.core.config.ws_auth_timeout)
        if not client.authenticated and not client.ws.closed:
            await client.ws.close(code=4401, message=b"auth timeout")

    def _on_text(self, client: WsClient, text: str) -> None:
        try:
            msg = json.loads(text)
        except ValueError:
            client.send(error_frame("INVALID_JSON", "Invalid JSON message"))
            return
        if not isinstance(msg, dict):
            client.send(error_frame("INVALID_JSON", "Message must be a JSON object"))
            return
        action = msg.get("action", msg.get("type"))
        if action in ("authenticate", "auth"):
            self._authenticate(client, msg)
            return
        if action == "ping":
            client.send(
                json.dumps(
                    {
                        "type": "pong",
                        "status": "success",
                        "server_timestamp": epoch_ms(self.core.market.now()),
                        "client_timestamp": msg.get("timestamp"),
                        "_pingId": msg.get("_pingId"),
                    }
                )
            )
            return
        if not client.authenticated:
            client.send(error_frame("NOT_AUTHENTICATED", "You must authenticate first"))
            return
        if action == "subscribe":
            self._subscribe(client, msg)
        elif action == "unsubscribe":
            self._unsubscribe(client, msg)
        elif action == "unsubscribe_all":
            removed = [
                {"symbol": sym, "exchange": exch, "mode": MODE_LABELS[max(modes)]}
                for (sym, exch), modes in client.subs.items()
                if modes
            ]
            for key in list(client.subs):
                self._remove(client, key, None)
            reply = {
                "type": "unsubscribe",
                "status": "success",
                "message": self._ack_text("Unsubscribed from all"),
                "successful": removed if self.core.quirks.ws_openalgo_frames else [],
                "failed": [],
            }
            if self.core.quirks.ws_openalgo_frames:
                reply["broker"] = self.core.config.broker
            client.send(json.dumps(reply))
        elif action in ("subscribe_orders", "unsubscribe_orders"):
            client.orders = action == "subscribe_orders"
            client.send(json.dumps({"type": action, "status": "success", "message": f"{action} ok"}))
        elif action == "get_broker_info":
            client.send(
                json.dumps(
                    {
                        "type": "broker_info",
                        "status": "success",
                        "broker": self.core.config.broker,
                        "user_id": client.user_id,
                    }
                )
            )
        else:
            client.send(error_frame("INVALID_ACTION", f"Invalid action: {action}"))

    def _authenticate(self, client: WsClient, msg: dict[str, Any]) -> None:
        key = msg.get("api_key", msg.get("apikey"))
        acct = self.core.exchange.account(key)
        if acct is None:
            client.send(error_frame("AUTHENTICATION_ERROR", "Invalid API key"))
            return
        client.authenticated = True
        client.api_key = acct.api_key
        client.user_id = acct.user_id
        if self.core.faults.take_skip_auth_reply():
            return
        client.send(
            json.dumps(
                {
                    "type": "auth",
                    "status": "success",
                    "message": "Authentication successful",
                    "broker": self.core.config.broker,
                    "user_id": acct.user_id,
                    "supported_features": {"ltp": True, "quote": True, "depth": True, "order_updates": True},
                }
            )
        )

    @staticmethod
    def _items(msg: dict[str, Any]) -> list[Any] | None:
        symbols = msg.get("symbols")
        if symbols is None and "symbol" in msg:
            return [{"symbol": msg.get("symbol"), "exchange": msg.get("exchange")}]
        return symbols if isinstance(symbols, list) else None

    def _subscribe(self, client: WsClient, msg: dict[str, Any]) -> None:
        mode = parse_mode(msg.get("mode"))
        if mode is None:
            client.send(
                error_frame(
                    "INVALID_MODE", f"Invalid mode: {msg.get('mode')}. Use 1 (LTP), 2 (Quote) or 3 (Depth)"
                )
            )
            return
        items = self._items(msg)
        if not items:
            client.send(
                error_frame("INVALID_PARAMETERS", "symbols must be a non-empty list of {symbol, exchange}")
            )
            return
        depth = msg.get("depth", msg.get("depth_level", 5))
        depth = depth if isinstance(depth, int) and not isinstance(depth, bool) and depth > 0 else 5
        results = []
        snapshots = []
        for item in items:
            sym = item.get("symbol") if isinstance(item, dict) else None
            exch = item.get("exchange") if isinstance(item, dict) else None
            if not isinstance(sym, str) or not isinstance(exch, str):
                results.append(
                    {
                        "symbol": sym,
                        "exchange": exch,
                        "status": "error",
                        "message": "symbol and exchange required",
                    }
                )
                continue
            quote = self.core.market.quote(sym, exch)
            if quote is None:
                results.append(
                    {
                        "symbol": sym,
                        "exchange": exch,
                        "status": "error",
                        "message": f"Token not found for {sym} on {exch}",
                    }
                )
                continue
            self._add(client, (sym, exch), mode, depth)
            results.append(
                {
                    "symbol": sym,
                    "exchange": exch,
                    "status": "success",
                    "mode": MODE_LABELS[mode],
                    "depth": depth,
                }
            )
            snapshots.append(quote)
        ok = sum(1 for r in results if r["status"] == "success")
        # OpenAlgo says "partial" whenever any item failed, even when none succeeded.
        status = "success" if ok == len(results) else "partial"
        reply: dict[str, Any] = {
            "type": "subscribe",
            "status": status,
            "subscriptions": results,
            "message": self._ack_text(f"Subscribed to {ok} of {len(results)} symbols"),
        }
        if self.core.quirks.ws_openalgo_frames:
            reply["broker"] = self.core.config.broker
        _send_reply(client, msg, reply)
        if not self.core.faults.ws_silent and not self.core.quirks.ws_openalgo_frames:
            for quote in snapshots:
                key = (quote.symbol, quote.exchange)
                client.send(json.dumps(self.tick(quote, max(client.subs[key]))))

    def _unsubscribe(self, client: WsClient, msg: dict[str, Any]) -> None:
        items = self._items(msg)
        if not items:
            client.send(
                error_frame("INVALID_PARAMETERS", "symbols must be a non-empty list of {symbol, exchange}")
            )
            return
        default_mode = parse_mode(msg.get("mode"))
        successful, failed = [], []
        for item in items:
            sym = item.get("symbol") if isinstance(item, dict) else None
            exch = item.get("exchange") if isinstance(item, dict) else None
            mode = parse_mode(item.get("mode", msg.get("mode"))) if isinstance(item, dict) else default_mode
            if not isinstance(sym, str) or not isinstance(exch, str) or mode is None:
                failed.append(
                    {"symbol": sym, "exchange": exch, "message": "symbol, exchange and a valid mode required"}
                )
                continue
            # An unsubscribe at a mode that was not subscribed silently does nothing (OpenAlgo's behaviour).
            self._remove(client, (sym, exch), mode)
            successful.append({"symbol": sym, "exchange": exch, "mode": MODE_LABELS[mode]})
        reply: dict[str, Any] = {
            "type": "unsubscribe",
            "status": "success" if not failed else "partial",
            "successful": successful,
            "failed": failed,
            "message": self._ack_text(f"Unsubscribed from {len(successful)} symbols"),
        }
        if self.core.quirks.ws_openalgo_frames:
            reply["broker"] = self.core.config.broker
        _send_reply(client, msg, reply)


def build_ws_app(hub: WsHub) -> web.Application:
    app = web.Application()
    app.router.add_get("/{tail:.*}", hub.handle)
    return app
