"""The control API under ``/sim/`` on the REST port (only when ``SimulatorConfig.control`` is on).

JSON in, JSON out; ``{"status": "success", ...}`` or 400 ``{"status": "error", "message": ...}``. Every route
is documented with a curl example in docs/simulator.md.

Every route requires the exchange's control token (``SimulatorCore.control_token``, random per start unless
``SimulatorConfig.control_token`` gives one) as ``Authorization: Bearer <token>`` or ``X-Sim-Token: <token>``;
without it, or with a wrong one, the answer is 401 and nothing is done or shown.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from aiohttp import web

from algomirror.domain.timeutil import ensure_aware
from algomirror.simulator.core import SimulatorCore
from algomirror.simulator.exchange import Order, Trade
from algomirror.simulator.faults import CountedFault, Latency
from algomirror.simulator.trace import Trace
from algomirror.simulator.wire import money

ControlFn = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
CONTROL_CORE: web.AppKey[SimulatorCore] = web.AppKey("sim_control_core", SimulatorCore)


class BadControl(Exception):
    pass


def _reply(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(status=status, text=json.dumps(body, default=str), content_type="application/json")


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise BadControl("body must be a JSON object") from exc
    if not isinstance(data, dict):
        raise BadControl("body must be a JSON object")
    return data


def _int(data: dict[str, Any], name: str, default: int | None = None, minimum: int = 0) -> int:
    value = data.get(name, default)
    if value is None:
        raise BadControl(f"{name} is required")
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise BadControl(f"{name} must be an integer")
    try:
        number = int(value)
    except ValueError as exc:
        raise BadControl(f"{name} must be an integer") from exc
    if number < minimum:
        raise BadControl(f"{name} must be >= {minimum}")
    return number


def _float(data: dict[str, Any], name: str, default: float | None = None) -> float:
    value = data.get(name, default)
    if value is None or isinstance(value, bool):
        raise BadControl(f"{name} is required")
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise BadControl(f"{name} must be a number") from exc
    if number < 0 or number != number:
        raise BadControl(f"{name} must be >= 0")
    return number


def _decimal(data: dict[str, Any], name: str) -> Decimal:
    value = data.get(name)
    if value is None or isinstance(value, bool):
        raise BadControl(f"{name} is required")
    try:
        number = Decimal(str(value))
    except InvalidOperation as exc:
        raise BadControl(f"{name} must be a number") from exc
    if not number.is_finite() or number < 0:
        raise BadControl(f"{name} must be a non-negative number")
    return number


def _utc(value: datetime) -> str:
    return ensure_aware(value).astimezone(UTC).isoformat()


def ledger_order(order: Order) -> dict[str, Any]:
    """One order of ``GET /sim/ledger``: Decimal as strings (exact), ``created`` ISO 8601 UTC."""
    return {
        "account_key": order.account_key,
        "orderid": order.orderid,
        "strategy": order.strategy,
        "symbol": order.symbol,
        "exchange": order.exchange,
        "product": order.product,
        "action": order.action,
        "quantity": order.quantity,
        "filled_quantity": order.filled_quantity,
        "average_price": str(order.average_price) if order.filled_quantity else None,
        "status": order.status,
        "created": _utc(order.created),
    }


def ledger_trade(account_key: str, trade: Trade) -> dict[str, Any]:
    """One trade of ``GET /sim/ledger``: ``price`` a string (exact), ``timestamp`` ISO 8601 UTC."""
    return {
        "account_key": account_key,
        "tradeid": trade.tradeid,
        "orderid": trade.orderid,
        "symbol": trade.contract.symbol,
        "exchange": trade.contract.exchange,
        "product": trade.product,
        "action": trade.action,
        "quantity": trade.quantity,
        "price": str(trade.price),
        "timestamp": _utc(trade.timestamp),
    }


def _key(data: dict[str, Any]) -> str | None:
    value = data.get("apikey")
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadControl("apikey must be a string")
    return value


def _endpoint(data: dict[str, Any]) -> str | None:
    value = data.get("endpoint")
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadControl("endpoint must be a string such as 'placeorder' or '*'")
    return value.strip("/")


TOKEN_HEADER = "X-Sim-Token"  # noqa: S105 - a header name, not a secret


def presented_token(request: web.Request) -> str | None:
    """The control token a request carries (``Authorization: Bearer …`` first, then ``X-Sim-Token``)."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    token = request.headers.get(TOKEN_HEADER, "").strip()
    return token or None


def token_matches(presented: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented control token with the exchange's own."""
    if presented is None:
        return False
    return hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8"))


def _unauthorized() -> web.Response:
    response = _reply(401, {"status": "error", "message": "control token required"})
    response.headers["WWW-Authenticate"] = 'Bearer realm="paper exchange control"'
    return response


def add_control_routes(app: web.Application, core: SimulatorCore) -> None:
    """Serve the control API on ``app``; every route checks ``core.control_token`` before anything else."""
    app[CONTROL_CORE] = core

    def route(path: str, method: str = "POST") -> Callable[[ControlFn], ControlFn]:
        def wrap(fn: ControlFn) -> ControlFn:
            async def handler(request: web.Request) -> web.Response:
                if not token_matches(presented_token(request), core.control_token):
                    return _unauthorized()
                try:
                    data = await _body(request) if method == "POST" else {}
                    result = await fn(data)
                except BadControl as exc:
                    return _reply(400, {"status": "error", "message": str(exc)})
                return _reply(200, {"status": "success", **(result or {})})

            app.router.add_route(method, path, handler)
            return fn

        return wrap

    def _state() -> dict[str, Any]:
        return {
            "now": core.market.now().isoformat(),
            "clock": core.clock.mode,
            "speed": core.clock.speed,
            "profile": core.config.profile,
            "api_keys": list(core.api_keys),
            "faults": core.faults.describe(),
            "ws_clients": len(core.ws_hub.clients) if core.ws_hub else 0,
        }

    @route("/sim/state", "GET")
    async def state(_: dict[str, Any]) -> dict[str, Any]:
        return _state()

    @route("/sim/ledger", "GET")
    async def ledger(_: dict[str, Any]) -> dict[str, Any]:
        # Every account's orders and trades of the current session (the exchange forgets them at its
        # 03:00 IST reset), read under the exchange's lock so a fill cannot land between the two lists.
        exchange = core.exchange
        with exchange._lock:
            orders = [
                ledger_order(o)
                for acct in exchange.accounts.values()
                for o in sorted(acct.orders.values(), key=lambda o: (o.created, o.orderid))
            ]
            accounts = list(exchange.accounts.values())
            trades = [ledger_trade(acct.api_key, t) for acct in accounts for t in acct.trades]
        return {"orders": orders, "trades": trades}

    @route("/sim/reset")
    async def reset(data: dict[str, Any]) -> dict[str, Any]:
        core.reset(market=bool(data.get("market", True)))
        return _state()

    @route("/sim/clock/advance")
    async def advance(data: dict[str, Any]) -> dict[str, Any]:
        if "to" in data:
            try:
                target = ensure_aware(datetime.fromisoformat(str(data["to"])))
            except ValueError as exc:
                raise BadControl("to must be an ISO-8601 instant with a UTC offset") from exc
            if target < core.market.now():
                raise BadControl("the clock cannot go backwards")
            core.advance_to(target)
            core.clock.rebase()
        else:
            core.jump(_float(data, "seconds"))
        return {"now": core.market.now().isoformat()}

    @route("/sim/price")
    async def price(data: dict[str, Any]) -> dict[str, Any]:
        symbol, exchange = _instrument(data)
        value = _decimal(data, "price")
        try:
            core.market.set_price(symbol, exchange, value)
        except (LookupError, ValueError) as exc:
            raise BadControl(str(exc)) from exc
        quote = core.market.quote(symbol, exchange)
        return {"symbol": symbol, "exchange": exchange, "ltp": money(quote.ltp) if quote else None}

    @route("/sim/ramp")
    async def ramp(data: dict[str, Any]) -> dict[str, Any]:
        symbol, exchange = _instrument(data)
        try:
            core.market.ramp_price(symbol, exchange, _decimal(data, "target"), _float(data, "seconds"))
        except (LookupError, ValueError) as exc:
            raise BadControl(str(exc)) from exc
        return {"symbol": symbol, "exchange": exchange}

    def _instrument(data: dict[str, Any]) -> tuple[str, str]:
        symbol, exchange = data.get("symbol"), data.get("exchange")
        if not isinstance(symbol, str) or not isinstance(exchange, str):
            raise BadControl("symbol and exchange are required strings")
        if core.market.contract(symbol, exchange) is None:
            raise BadControl(f"unknown instrument {symbol} on {exchange}")
        return symbol, exchange

    @route("/sim/accounts")
    async def accounts(data: dict[str, Any]) -> dict[str, Any]:
        capital = _decimal(data, "capital") if "capital" in data else None
        key = core.add_account(capital)
        return {"apikey": key}

    @route("/sim/faults/reject")
    async def reject(data: dict[str, Any]) -> dict[str, Any]:
        mode = data.get("mode", "sync")
        if mode not in ("sync", "async"):
            raise BadControl("mode must be sync or async")
        message = data.get("message", "Order rejected by exchange (simulated)")
        if not isinstance(message, str):
            raise BadControl("message must be a string")
        core.faults.add(
            "rejects",
            CountedFault(_int(data, "count", 1, 1), _key(data), None, {"message": message, "mode": mode}),
        )
        return {}

    @route("/sim/faults/partial")
    async def partial(data: dict[str, Any]) -> dict[str, Any]:
        fraction = _float(data, "fraction", 0.5)
        if not 0 < fraction < 1:
            raise BadControl("fraction must be between 0 and 1")
        core.faults.add(
            "partials", CountedFault(_int(data, "count", 1, 1), _key(data), None, {"fraction": fraction})
        )
        return {}

    @route("/sim/faults/cancel_fill")
    async def cancel_fill(data: dict[str, Any]) -> dict[str, Any]:
        core.faults.add("cancel_fills", CountedFault(_int(data, "count", 1, 1), _key(data)))
        return {}

    @route("/sim/faults/latency")
    async def latency(data: dict[str, Any]) -> dict[str, Any]:
        core.faults.add_latency(Latency(_float(data, "ms") / 1000.0, _key(data), _endpoint(data)))
        return {}

    @route("/sim/faults/ratelimit")
    async def ratelimit(data: dict[str, Any]) -> dict[str, Any]:
        core.faults.add(
            "http_status",
            CountedFault(_int(data, "count", 1, 1), _key(data), _endpoint(data), {"status": 429}),
        )
        return {}

    @route("/sim/faults/status")
    async def status(data: dict[str, Any]) -> dict[str, Any]:
        code = _int(data, "status", 500)
        if code not in (400, 401, 403, 404, 429, 500, 502, 503, 504):
            raise BadControl("status must be one of 400, 401, 403, 404, 429, 500, 502, 503, 504")
        params: dict[str, Any] = {"status": code}
        if isinstance(data.get("message"), str):
            params["message"] = data["message"]
        core.faults.add(
            "http_status", CountedFault(_int(data, "count", 1, 1), _key(data), _endpoint(data), params)
        )
        return {}

    @route("/sim/faults/hang")
    async def hang(data: dict[str, Any]) -> dict[str, Any]:
        params = {
            "seconds": _float(data, "seconds", core.config.hang_seconds),
            "execute": bool(data.get("execute", True)),
        }
        core.faults.add("hangs", CountedFault(_int(data, "count", 1, 1), _key(data), _endpoint(data), params))
        return {}

    @route("/sim/faults/clear")
    async def clear(_: dict[str, Any]) -> dict[str, Any]:
        core.faults.clear()
        return {}

    @route("/sim/ws/drop")
    async def drop(_: dict[str, Any]) -> dict[str, Any]:
        count = await core.ws_hub.drop_all() if core.ws_hub else 0
        return {"dropped": count}

    @route("/sim/ws/silent")
    async def silent(data: dict[str, Any]) -> dict[str, Any]:
        core.faults.ws_silent = bool(data.get("enabled", True))
        return {"silent": core.faults.ws_silent}

    @route("/sim/ws/zero")
    async def zero(data: dict[str, Any]) -> dict[str, Any]:
        core.faults.ws_zero_ticks = _int(data, "count", 1)
        return {}

    @route("/sim/ws/stale")
    async def stale(data: dict[str, Any]) -> dict[str, Any]:
        core.faults.ws_stale_ticks = _int(data, "count", 1)
        core.faults.ws_stale_age_seconds = _float(data, "age_seconds", 120.0)
        return {}

    @route("/sim/trace")
    async def trace_switch(data: dict[str, Any]) -> dict[str, Any]:
        enabled = data.get("enabled", True)
        if not isinstance(enabled, bool):
            raise BadControl("enabled must be true or false")
        core.trace = Trace(_int(data, "limit", 200_000, 1)) if enabled else None
        return {"enabled": enabled}

    @route("/sim/trace", "GET")
    async def trace_read(_: dict[str, Any]) -> dict[str, Any]:
        if core.trace is None:
            raise BadControl('the trace is off (POST /sim/trace {"enabled": true})')
        return core.trace.drain()

    @route("/sim/ws/no_auth_reply")
    async def no_auth_reply(data: dict[str, Any]) -> dict[str, Any]:
        core.faults.ws_skip_auth_reply = _int(data, "count", 1)
        return {}
