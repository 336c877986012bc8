"""The REST server: ``POST /api/v1/<endpoint>`` (trailing slash optional) as OpenAlgo serves it.

Pipeline per call: route (404 JSON for unknown paths) → JSON body (500 for a body that is not JSON, as
OpenAlgo does) → rate limit per (apikey, route) (429 ``{"message": "10 per 1 second"}``) → injected faults
(latency, forced status, hang) → schema (400, error family per endpoint) → API key (403) → business logic.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web

from algomirror.simulator.core import SimulatorCore
from algomirror.simulator.endpoints import ENDPOINTS, Ctx
from algomirror.simulator.validation import SCHEMAS, UNKNOWN, error_body, load

log = logging.getLogger(__name__)

INVALID_KEY = {"status": "error", "message": "Invalid openalgo apikey"}
CORE_KEY: web.AppKey[SimulatorCore] = web.AppKey("sim_core", SimulatorCore)


def _json(status: int, body: Any) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")


async def api_handler(request: web.Request) -> web.Response:
    core = request.app[CORE_KEY]
    endpoint = request.match_info["tail"].strip("/")
    if endpoint == "instruments" and request.method == "GET":
        return _instruments(core, request)
    spec = ENDPOINTS.get(endpoint)
    if spec is None:
        return _json(404, {"status": "error", "message": "Not found", "path": request.path})
    if request.method != "POST":
        return _json(405, {"status": "error", "message": "The method is not allowed for the requested URL."})
    raw = await request.read()
    try:
        body = json.loads(raw.decode("utf-8"))
        parsed = True
    except (UnicodeDecodeError, ValueError):
        body, parsed = None, False
    if not parsed:
        # OpenAlgo answers a non-JSON (or empty) body with a 500.
        return _json(
            500, {"status": "error", "message": "An unexpected error occurred: request body is not JSON"}
        )
    if core.trace is not None:
        core.trace.request(endpoint, body)
    apikey = body.get("apikey") if isinstance(body, dict) else None
    key = apikey if isinstance(apikey, str) else (request.remote or "?")
    limit = core.limiter.hit(key, endpoint)
    if limit is not None:
        return _json(429, {"message": limit.text})
    fkey = apikey if isinstance(apikey, str) else None
    delay = core.faults.latency_for(fkey, endpoint)
    if delay > 0:
        await asyncio.sleep(delay)
    forced = core.faults.take_http_status(fkey, endpoint)
    if forced is not None:
        status = int(forced.params.get("status", 500))
        if status == 429:
            return _json(429, {"message": core.limiter.limit_for(endpoint).text})
        message = forced.params.get("message") or (
            "Invalid openalgo apikey" if status == 403 else "Internal server error (simulated)"
        )
        return _json(status, {"status": "error", "message": message})
    hang = core.faults.take_hang(fkey, endpoint)
    if hang is not None:
        seconds = float(hang.params.get("seconds", core.config.hang_seconds))
        if hang.params.get("execute", True):
            status, reply = _dispatch(core, endpoint, body)
            await asyncio.sleep(seconds)
            return _json(status, reply)
        await asyncio.sleep(seconds)
        return _json(504, {"status": "error", "message": "Gateway timeout (simulated hang, not executed)"})
    status, reply = _dispatch(core, endpoint, body)
    return _json(status, reply)


def _dispatch(core: SimulatorCore, endpoint: str, body: Any) -> tuple[int, dict[str, Any]]:
    spec = ENDPOINTS[endpoint]
    schema = SCHEMAS[endpoint]
    values, errors = load(schema, body)
    if errors and not core.config.strict_fields:
        errors = {k: v for k, v in errors.items() if v != [UNKNOWN]}
    if errors:
        return 400, error_body(endpoint, errors)
    account = core.exchange.account(values.get("apikey"))
    if spec.needs_key and account is None:
        # The greeks endpoints answer a bad key with 401, everything else with 403.
        return (401 if endpoint == "optiongreeks" else 403), dict(INVALID_KEY)
    if account is not None:
        core.exchange.on_time(core.market.now())
    return spec.handler(Ctx(core, values, account))


def _instruments(core: SimulatorCore, request: web.Request) -> web.Response:
    from algomirror.simulator.wire import symbol_row

    if core.exchange.account(request.query.get("apikey")) is None:
        return _json(403, dict(INVALID_KEY))
    exchange = request.query.get("exchange")
    contracts = core.market.instruments(exchange)
    rows = [symbol_row(c) for c in contracts]
    if request.query.get("format") == "csv":
        header = list(rows[0]) if rows else ["symbol"]
        lines = [",".join(header)] + [",".join(str(row[h]) for h in header) for row in rows]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/csv")
    return _json(200, {"status": "success", "data": rows})


@web.middleware
async def never_500(request: web.Request, handler: Any) -> web.StreamResponse:
    """A bug must still answer in OpenAlgo's shape (and be logged), never as an HTML page."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except web.HTTPException as exc:
        if exc.status == 404:
            return _json(404, {"status": "error", "message": "Not found", "path": request.path})
        if exc.status == 405:
            return _json(
                405, {"status": "error", "message": "The method is not allowed for the requested URL."}
            )
        raise
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # reported as OpenAlgo's 500 and logged with the traceback
        log.exception("simulator bug on %s", request.path)
        return _json(
            500, {"status": "error", "message": f"An unexpected error occurred: {type(exc).__name__}"}
        )


def build_rest_app(core: SimulatorCore) -> web.Application:
    app = web.Application(middlewares=[never_500], client_max_size=4 * 1024 * 1024)
    app[CORE_KEY] = core
    app.router.add_route("*", "/api/v1/{tail:.*}", api_handler)
    if core.config.control:
        from algomirror.simulator.control import add_control_routes

        add_control_routes(app, core)
    return app
