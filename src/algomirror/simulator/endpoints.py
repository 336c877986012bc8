"""The OpenAlgo endpoints' business logic: validated values in, (HTTP status, JSON body) out.

Transport concerns (routing, JSON parsing, rate limits, faults, the API-key check) live in :mod:`.rest`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from algomirror.domain.instruments import (
    UNDERLYINGS,
    Contract,
    format_expiry,
    format_expiry_dashed,
    option_exchange_for,
    option_symbol,
    parse_expiry,
    parse_symbol,
)
from algomirror.domain.pricing import SECONDS_PER_YEAR, bs_greeks, implied_volatility
from algomirror.domain.timeutil import IST, ist_combine
from algomirror.simulator.exchange import (
    AUTO_SQUARE_OFF,
    COMPLETE,
    Account,
    ExchangeError,
    Order,
    OrderRequest,
)
from algomirror.simulator.margin import Leg, portfolio_margin
from algomirror.simulator.profiles import SMART_NOOP_MATCHED, SMART_NOOP_NO_OPEN_POSITION
from algomirror.simulator.wire import (
    depth_data,
    funds,
    money,
    order_status_row,
    orderbook,
    positionbook,
    quote_data,
    symbol_row,
    trade_row,
)

Reply = tuple[int, dict[str, Any]]


@dataclass
class Ctx:
    core: Any  # SimulatorCore (typed loosely to avoid an import cycle)
    values: dict[str, Any]
    account: Account | None

    @property
    def acct(self) -> Account:
        assert self.account is not None
        return self.account


def ok(**body: Any) -> Reply:
    return 200, {"status": "success", **body}


def err(status: int, message: Any, **extra: Any) -> Reply:
    return status, {"status": "error", "message": message, **extra}


def _unknown_quote_symbol(symbol: str, exchange: str) -> str:
    return (
        f"Symbol '{symbol}' not found for exchange '{exchange}'. Please verify the symbol name and ensure "
        "master contracts are downloaded."
    )


# --- orders -----------------------------------------------------------------------------------------------


def _request(values: dict[str, Any], strategy: str) -> OrderRequest:
    return OrderRequest(
        strategy=strategy,
        exchange=values["exchange"],
        symbol=values["symbol"],
        action=values["action"],
        quantity=values["quantity"],
        pricetype=values.get("pricetype") or "MARKET",
        product=values.get("product") or "MIS",
        price=values.get("price") or Decimal(0),
        trigger_price=values.get("trigger_price") or Decimal(0),
        disclosed_quantity=values.get("disclosed_quantity") or 0,
    )


def _place(ctx: Ctx, req: OrderRequest) -> Reply:
    try:
        order = ctx.core.exchange.place(ctx.acct, req)
    except ExchangeError as exc:
        return err(exc.status, exc.message, **exc.extra)
    return ok(orderid=order.orderid)


def placeorder(ctx: Ctx) -> Reply:
    return _place(ctx, _request(ctx.values, ctx.values["strategy"]))


def placesmartorder(ctx: Ctx) -> Reply:
    v = ctx.values
    ex = ctx.core.exchange
    current = ex.position_quantity(ctx.acct, v["symbol"], v["exchange"], v["product"])
    target = v["position_size"]
    if current == target and not (current == 0 and v["quantity"] > 0):
        if ctx.core.quirks.smart_noop_no_open_position and v["quantity"] == 0:
            return ok(message=SMART_NOOP_NO_OPEN_POSITION)
        return ok(message=SMART_NOOP_MATCHED)
    if ctx.core.quirks.smart_limit_at_market:
        # OpenAlgo's paper mode executes every smart order at market, whatever its price type.
        v = {**v, "pricetype": "MARKET", "price": Decimal(0), "trigger_price": Decimal(0)}
    if current == 0 and target == 0:
        req = _request(v, v["strategy"])
    else:
        diff = target - current
        req = _request({**v, "action": "BUY" if diff > 0 else "SELL", "quantity": abs(diff)}, v["strategy"])
    return _place(ctx, req)


def _as_dict(req: OrderRequest, **changes: Any) -> dict[str, Any]:
    data = {name: getattr(req, name) for name in OrderRequest.__dataclass_fields__}
    data.update(changes)
    return data


def _child_result(ctx: Ctx, child: OrderRequest, n: int, size: int) -> dict[str, Any]:
    try:
        order = ctx.core.exchange.place(ctx.acct, child)
    except ExchangeError as exc:
        return {"order_num": n, "quantity": size, "status": "error", "message": exc.message}
    return {"order_num": n, "quantity": size, "status": "success", "orderid": order.orderid}


def splitorder(ctx: Ctx) -> Reply:
    v = ctx.values
    return _split_place(ctx, _request(v, v["strategy"]), v["splitsize"])


def basketorder(ctx: Ctx) -> Reply:
    v = ctx.values
    items = sorted(v["orders"], key=lambda item: 0 if item["action"] == "BUY" else 1)
    results = []
    for item in items:
        req = _request(item, v["strategy"])
        row: dict[str, Any] = {"symbol": req.symbol, "exchange": req.exchange, "product": req.product}
        try:
            order = ctx.core.exchange.place(ctx.acct, req)
            row.update(status="success", orderid=order.orderid)
        except ExchangeError as exc:
            row.update(status="error", message=exc.message)
        results.append(row)
    return ok(results=results)


def modifyorder(ctx: Ctx) -> Reply:
    v = ctx.values
    try:
        order = ctx.core.exchange.modify(
            ctx.acct,
            v["orderid"],
            pricetype=v["pricetype"],
            quantity=v["quantity"],
            price=v["price"],
            trigger_price=v["trigger_price"],
            disclosed_quantity=v["disclosed_quantity"],
        )
    except ExchangeError as exc:
        return err(exc.status, exc.message)
    return ok(orderid=order.orderid, message="Order modified successfully")


def cancelorder(ctx: Ctx) -> Reply:
    try:
        order = ctx.core.exchange.cancel(ctx.acct, ctx.values["orderid"])
    except ExchangeError as exc:
        return err(exc.status, exc.message)
    return ok(orderid=order.orderid, message="Order cancelled successfully")


def cancelallorder(ctx: Ctx) -> Reply:
    done, failed = ctx.core.exchange.cancel_all(ctx.acct)
    return ok(
        message=f"Canceled {len(done)} orders. Failed to cancel {len(failed)} orders.",
        canceled_orders=done,
        failed_cancellations=failed,
    )


def closeposition(ctx: Ctx) -> Reply:
    closed, failed = ctx.core.exchange.close_all(ctx.acct, AUTO_SQUARE_OFF)
    return ok(message=f"Closed {closed} positions", closed_positions=closed, failed_closures=failed)


def orderstatus(ctx: Ctx) -> Reply:
    try:
        order = ctx.core.exchange.get_order(ctx.acct, ctx.values["orderid"])
    except ExchangeError as exc:
        return err(exc.status, exc.message)
    return ok(data=order_status_row(order, ctx.core.exchange))


def openposition(ctx: Ctx) -> Reply:
    v = ctx.values
    qty = ctx.core.exchange.position_quantity(ctx.acct, v["symbol"], v["exchange"], v["product"])
    return ok(quantity=qty)


# --- account ----------------------------------------------------------------------------------------------


def ping(ctx: Ctx) -> Reply:
    return ok(data={"broker": ctx.core.config.broker, "message": "pong"})


def analyzer(ctx: Ctx) -> Reply:
    # The paper exchange is always in OpenAlgo's "analyze" (sandbox) mode.
    return ok(data={"analyze_mode": True, "mode": "analyze", "total_logs": 0})


def analyzer_toggle(ctx: Ctx) -> Reply:
    if not ctx.values["mode"]:
        return err(400, "The paper exchange cannot switch to live mode")
    return ok(
        data={
            "analyze_mode": True,
            "mode": "analyze",
            "total_logs": 0,
            "message": "Analyzer mode switched to analyze",
        }
    )


def funds_ep(ctx: Ctx) -> Reply:
    return ok(data=funds(ctx.acct, ctx.core.exchange))


def orderbook_ep(ctx: Ctx) -> Reply:
    return ok(data=orderbook(ctx.acct))


def tradebook(ctx: Ctx) -> Reply:
    trades = [
        t for _, t in sorted(enumerate(ctx.acct.trades), key=lambda x: (x[1].timestamp, x[0]), reverse=True)
    ]
    return ok(data=[trade_row(t) for t in trades])


def positionbook_ep(ctx: Ctx) -> Reply:
    shows_realized = ctx.core.quirks.closed_row_realized_in_unrealized
    return ok(**positionbook(ctx.acct, ctx.core.exchange, closed_realized_in_unrealized=shows_realized))


def holdings(ctx: Ctx) -> Reply:
    return ok(
        data={
            "holdings": [],
            "statistics": {
                "totalholdingvalue": 0.0,
                "totalinvvalue": 0.0,
                "totalprofitandloss": 0.0,
                "totalpnlpercentage": 0.0,
            },
        }
    )


# --- market data ------------------------------------------------------------------------------------------


def quotes(ctx: Ctx) -> Reply:
    v = ctx.values
    q = ctx.core.market.quote(v["symbol"], v["exchange"])
    if q is None:
        return err(400, _unknown_quote_symbol(v["symbol"], v["exchange"]))
    return ok(data=quote_data(q))


def multiquotes(ctx: Ctx) -> Reply:
    invalid: list[dict[str, Any]] = []
    valid: list[dict[str, Any]] = []
    for item in ctx.values["symbols"]:
        q = ctx.core.market.quote(item["symbol"], item["exchange"])
        if q is None:
            invalid.append(
                {
                    "symbol": item["symbol"],
                    "exchange": item["exchange"],
                    "error": _unknown_quote_symbol(item["symbol"], item["exchange"]),
                }
            )
        else:
            valid.append({"symbol": item["symbol"], "exchange": item["exchange"], "data": quote_data(q)})
    if not valid:
        return err(400, "All symbols are invalid", invalid_symbols=invalid)
    return ok(results=invalid + valid)


def depth(ctx: Ctx) -> Reply:
    v = ctx.values
    q = ctx.core.market.quote(v["symbol"], v["exchange"])
    if q is None:
        return err(400, _unknown_quote_symbol(v["symbol"], v["exchange"]))
    return ok(data=depth_data(q))


def _parse_date(text: str) -> date | None:
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def history(ctx: Ctx) -> Reply:
    v = ctx.values
    start, end = _parse_date(v["start_date"]), _parse_date(v["end_date"])
    if start is None or end is None:
        bad = "start_date" if start is None else "end_date"
        return err(400, {bad: ["Not a valid date."]})
    if start > end:
        return err(400, "start_date must be on or before end_date")
    if (end - start).days > 366:
        return err(400, "Date range too large: at most 366 days per request")
    if ctx.core.market.contract(v["symbol"], v["exchange"]) is None:
        return err(400, _unknown_quote_symbol(v["symbol"], v["exchange"]))
    try:
        bars = ctx.core.market.history(v["symbol"], v["exchange"], v["interval"], start, end)
    except OverflowError:
        # A range touching 9999-12-31 steps past date.max: client input, so a 400, never a 500.
        return err(400, {"end_date": ["Not a valid date."]})
    except ValueError as exc:
        return err(400, f"Interval '{v['interval']}' is not supported: {exc}")
    if bars is None:
        return err(400, _unknown_quote_symbol(v["symbol"], v["exchange"]))
    daily = v["interval"] in ("D", "W", "M", "Q", "Y")
    rows = []
    seen: set[int] = set()
    for bar in bars:
        if daily:
            day = bar.start.astimezone(IST).date()
            stamp = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
        else:
            stamp = int(bar.start.timestamp())
        if stamp in seen:
            continue
        seen.add(stamp)
        rows.append(
            {
                "timestamp": stamp,
                "open": money(bar.open),
                "high": money(bar.high),
                "low": money(bar.low),
                "close": money(bar.close),
                "volume": bar.volume,
                "oi": bar.oi,
            }
        )
    rows.sort(key=lambda r: r["timestamp"])
    return ok(data=rows)


def intervals(ctx: Ctx) -> Reply:
    return ok(
        data={
            "seconds": [],
            "minutes": ["1m", "3m", "5m", "10m", "15m", "30m", "60m"],
            "hours": ["1h"],
            "days": ["D"],
            "weeks": [],
            "months": [],
        }
    )


# --- instruments ------------------------------------------------------------------------------------------


def symbol(ctx: Ctx) -> Reply:
    v = ctx.values
    contract = ctx.core.market.contract(v["symbol"], v["exchange"])
    if contract is None:
        return err(404, f"Symbol {v['symbol']} not found in exchange {v['exchange']}")
    return ok(data=symbol_row(contract))


def search(ctx: Ctx) -> Reply:
    v = ctx.values
    found = ctx.core.market.search(v["query"], v.get("exchange"), 500)
    return ok(message=f"Found {len(found)} matching symbols", data=[symbol_row(c) for c in found])


def expiry(ctx: Ctx) -> Reply:
    v = ctx.values
    days = ctx.core.market.expiries(v["symbol"], v["exchange"], v["instrumenttype"])
    if not days:
        return err(404, f"No expiry dates found for {v['symbol']} {v['instrumenttype']} in {v['exchange']}")
    return ok(
        message=f"Found {len(days)} expiry dates for {v['symbol']} {v['instrumenttype']} in {v['exchange']}",
        data=[format_expiry_dashed(d) for d in days],
    )


# --- options ----------------------------------------------------------------------------------------------


@dataclass
class Underlying:
    name: str
    exchange: str  # the option exchange
    ltp: Decimal
    embedded_expiry: date | None
    prev_close: Decimal
    symbol: str
    quote_exchange: str


def _resolve_underlying(ctx: Ctx, underlying: str, exchange: str) -> Underlying | Reply:
    parsed = parse_symbol(underlying)
    embedded = parsed.expiry if parsed is not None and parsed.instrument_type == "FUT" else None
    name = parsed.base if embedded is not None and parsed is not None else underlying
    quote_exchange = exchange
    q = ctx.core.market.quote(underlying, exchange)
    if q is None or q.ltp <= 0:
        return err(
            400, f"Failed to fetch LTP for {underlying}. Please check the underlying symbol and exchange."
        )
    return Underlying(
        name=name,
        exchange=option_exchange_for(exchange),
        ltp=q.ltp,
        embedded_expiry=embedded,
        prev_close=q.prev_close,
        symbol=underlying,
        quote_exchange=quote_exchange,
    )


def _expiry_for(u: Underlying, text: str | None) -> date | Reply:
    if text:
        try:
            return parse_expiry(text)
        except ValueError:
            return err(400, f"Invalid expiry date {text}. Use DDMMMYY (e.g., 25NOV25).")
    if u.embedded_expiry is not None:
        return u.embedded_expiry
    return err(
        400,
        "Expiry date required. Provide expiry_date in DDMMMYY format or use an underlying with an embedded "
        "expiry (e.g., NIFTY25NOV25FUT).",
    )


def _atm_index(strikes: list[Decimal], ltp: Decimal) -> int:
    best = 0
    for i, s in enumerate(strikes):
        # Nearest listed strike; ties go to the lower strike (OpenAlgo's resolver).
        if abs(s - ltp) < abs(strikes[best] - ltp):
            best = i
    return best


def _resolve_option(
    ctx: Ctx, u: Underlying, expiry_day: date, offset: str, option_type: str
) -> tuple[Contract, Decimal] | Reply:
    strikes = ctx.core.market.strikes(u.name, u.exchange, expiry_day)
    if not strikes:
        return err(
            404,
            f"No strikes found for {u.name} expiring {format_expiry(expiry_day)}. Please check expiry date.",
        )
    atm = _atm_index(strikes, u.ltp)
    n = 0 if offset == "ATM" else int(offset[3:])
    itm = offset.startswith("ITM")
    # CE: ITM below ATM, OTM above; PE mirrored.
    lower = (option_type == "CE") == itm
    idx = atm - n if lower else atm + n
    if not 0 <= idx < len(strikes):
        below, above = atm, len(strikes) - atm - 1
        return err(
            400,
            f"Offset {offset} is out of range for available strikes. Available: {below} strikes below and "
            f"{above} strikes above ATM.",
        )
    strike = strikes[idx]
    sym = option_symbol(u.name, expiry_day, strike, option_type)
    contract = ctx.core.market.contract(sym, u.exchange)
    if contract is None:
        return err(404, f"Option symbol {sym} not found in {u.exchange}. Please check the expiry and strike.")
    return contract, strikes[atm]


def optionsymbol(ctx: Ctx) -> Reply:
    v = ctx.values
    u = _resolve_underlying(ctx, v["underlying"], v["exchange"])
    if isinstance(u, tuple):
        return u
    day = _expiry_for(u, v.get("expiry_date"))
    if isinstance(day, tuple):
        return day
    resolved = _resolve_option(ctx, u, day, v["offset"], v["option_type"])
    if isinstance(resolved, tuple) and isinstance(resolved[0], int):
        return resolved
    contract, _atm = resolved
    return ok(
        symbol=contract.symbol,
        exchange=contract.exchange,
        lotsize=contract.lot_size,
        tick_size=float(contract.tick_size),
        freeze_qty=contract.freeze_qty,
        underlying_ltp=money(u.ltp),
    )


def _option_leg(
    ctx: Ctx, u: Underlying, leg: dict[str, Any], strategy: str, default_expiry: str | None
) -> dict[str, Any]:
    day = _expiry_for(u, leg.get("expiry_date") or default_expiry)
    base: dict[str, Any] = {
        "offset": leg["offset"],
        "option_type": leg["option_type"],
        "action": leg["action"],
    }
    if isinstance(day, tuple):
        return {**base, "status": "error", "message": day[1]["message"], "_status": day[0]}
    resolved = _resolve_option(ctx, u, day, leg["offset"], leg["option_type"])
    if isinstance(resolved, tuple) and isinstance(resolved[0], int):
        return {**base, "status": "error", "message": resolved[1]["message"], "_status": resolved[0]}
    contract, _atm = resolved
    req = OrderRequest(
        strategy=strategy,
        exchange=contract.exchange,
        symbol=contract.symbol,
        action=leg["action"],
        quantity=leg["quantity"],
        pricetype=leg.get("pricetype") or "MARKET",
        product=leg.get("product") or "MIS",
        price=leg.get("price") or Decimal(0),
        trigger_price=leg.get("trigger_price") or Decimal(0),
        disclosed_quantity=leg.get("disclosed_quantity") or 0,
    )
    row = {**base, "symbol": contract.symbol, "exchange": contract.exchange, "product": req.product}
    splitsize = leg.get("splitsize") or 0
    if splitsize > 0:
        status, body = _split_place(ctx, req, splitsize)
        if status != 200:
            return {**row, "status": "error", "message": body["message"], "_status": status}
        return {
            **row,
            "status": "success",
            **{k: body[k] for k in ("total_quantity", "split_size")},
            "split_results": body["results"],
        }
    try:
        order = ctx.core.exchange.place(ctx.acct, req)
    except ExchangeError as exc:
        return {**row, "status": "error", "message": exc.message, "_status": exc.status, **exc.extra}
    return {**row, "status": "success", "orderid": order.orderid}


def _split_place(ctx: Ctx, req: OrderRequest, splitsize: int) -> Reply:
    total = req.quantity
    full, rem = divmod(total, splitsize)
    if full + (1 if rem else 0) > 100:
        return err(400, "Total number of orders would exceed maximum limit of 100")
    sizes = [splitsize] * full + ([rem] if rem else [])
    results = [
        _child_result(ctx, OrderRequest(**_as_dict(req, quantity=size)), n, size)
        for n, size in enumerate(sizes, start=1)
    ]
    return ok(total_quantity=total, split_size=splitsize, results=results)


def optionsorder(ctx: Ctx) -> Reply:
    v = ctx.values
    u = _resolve_underlying(ctx, v["underlying"], v["exchange"])
    if isinstance(u, tuple):
        return u
    row = _option_leg(ctx, u, v, v["strategy"], v.get("expiry_date"))
    common = {
        "underlying": v["underlying"],
        "underlying_ltp": money(u.ltp),
        "offset": v["offset"],
        "option_type": v["option_type"],
    }
    if row["status"] == "error":
        body: dict[str, Any] = {"status": "error", "message": row["message"]}
        if "orderid" in row:
            body["orderid"] = row["orderid"]
        return row["_status"], body
    if "split_results" in row:
        return ok(
            symbol=row["symbol"],
            exchange=row["exchange"],
            total_quantity=row["total_quantity"],
            split_size=row["split_size"],
            results=row["split_results"],
            **common,
        )
    return ok(orderid=row["orderid"], symbol=row["symbol"], exchange=row["exchange"], **common)


def optionsmultiorder(ctx: Ctx) -> Reply:
    v = ctx.values
    u = _resolve_underlying(ctx, v["underlying"], v["exchange"])
    if isinstance(u, tuple):
        return u
    numbered = list(enumerate(v["legs"], start=1))
    ordered = [x for x in numbered if x[1]["action"] == "BUY"] + [
        x for x in numbered if x[1]["action"] == "SELL"
    ]
    results = []
    for n, leg in ordered:
        row = _option_leg(ctx, u, leg, v["strategy"], v.get("expiry_date"))
        row.pop("_status", None)
        if "split_results" in row:
            row["results"] = row.pop("split_results")
        results.append({"leg": n, **row, "mode": "analyze"})
    return ok(underlying=v["underlying"], underlying_ltp=money(u.ltp), results=results)


def _chain_leg(ctx: Ctx, contract: Contract | None, label: str) -> dict[str, Any] | None:
    if contract is None:
        return None
    q = ctx.core.market.quote(contract.symbol, contract.exchange)
    if q is None:
        return None
    return {
        "symbol": contract.symbol,
        "label": label,
        "ltp": money(q.ltp),
        "bid": money(q.bid),
        "ask": money(q.ask),
        "bid_qty": q.bid_qty,
        "ask_qty": q.ask_qty,
        "open": money(q.open),
        "high": money(q.high),
        "low": money(q.low),
        "prev_close": money(q.prev_close),
        "volume": q.volume,
        "oi": q.oi,
        "lotsize": contract.lot_size,
        "tick_size": float(contract.tick_size),
    }


def optionchain(ctx: Ctx) -> Reply:
    v = ctx.values
    u = _resolve_underlying(ctx, v["underlying"], v["exchange"])
    if isinstance(u, tuple):
        return u
    day = _expiry_for(u, v.get("expiry_date"))
    if isinstance(day, tuple):
        return day
    strikes = ctx.core.market.strikes(u.name, u.exchange, day)
    if not strikes:
        return err(
            404, f"No strikes found for {u.name} expiring {format_expiry(day)}. Please check expiry date."
        )
    atm_i = _atm_index(strikes, u.ltp)
    count = v.get("strike_count")
    lo, hi = (
        (0, len(strikes)) if count is None else (max(0, atm_i - count), min(len(strikes), atm_i + count + 1))
    )
    chain: list[dict[str, Any]] = []
    for i in range(lo, hi):
        strike = strikes[i]
        k = abs(i - atm_i)
        if i == atm_i:
            ce_label = pe_label = "ATM"
        elif i < atm_i:
            ce_label, pe_label = f"ITM{k}", f"OTM{k}"
        else:
            ce_label, pe_label = f"OTM{k}", f"ITM{k}"
        ce = ctx.core.market.contract(option_symbol(u.name, day, strike, "CE"), u.exchange)
        pe = ctx.core.market.contract(option_symbol(u.name, day, strike, "PE"), u.exchange)
        chain.append(
            {
                "strike": float(strike),
                "ce": _chain_leg(ctx, ce, ce_label),
                "pe": _chain_leg(ctx, pe, pe_label),
            }
        )
    now = ctx.core.market.now()
    forward: float | None = None
    if v.get("with_greeks"):
        rate = float(v.get("interest_rate") or 0) / 100
        years = max((ist_combine(day, time(15, 30)) - now).total_seconds(), 0.0) / SECONDS_PER_YEAR
        try:
            forward = _parity_forward(chain, float(strikes[atm_i]), rate, years) or float(u.ltp)
            for row in chain:
                for kind in ("ce", "pe"):
                    leg = row[kind]
                    if leg is not None:
                        g = _greeks(kind.upper(), leg["ltp"], forward, row["strike"], years, rate)
                        leg.update(
                            implied_volatility=g["implied_volatility"],
                            **{k: g["greeks"][k] for k in ("delta", "gamma", "theta", "vega")},
                        )
        except OverflowError:
            # e^(r·T) overflows for an absurd rate: client input, answered in the options family.
            return err(400, "Validation error", errors=dict(RATE_OUT_OF_RANGE))
    return ok(
        underlying=u.name,
        underlying_symbol=u.symbol,
        underlying_exchange=u.quote_exchange,
        underlying_ltp=money(u.ltp),
        underlying_prev_close=money(u.prev_close),
        expiry_date=format_expiry(day),
        expiry_ts=int(ist_combine(day, time(15, 30)).timestamp()),
        server_ts=int(now.timestamp()),
        atm_strike=float(strikes[atm_i]),
        quotes_included=True,
        greeks_included=forward is not None,
        forward_price=None if forward is None else round(forward, 2),
        chain=chain,
    )


RATE_OUT_OF_RANGE = {"interest_rate": ["Interest rate is out of range."]}


def _parity_forward(chain: list[dict[str, Any]], atm: float, rate: float, years: float) -> float | None:
    """Put–call parity forward at the ATM strike: F = K + (C − P)·e^(rT)."""
    for row in chain:
        if row["strike"] == atm and row["ce"] and row["pe"] and row["ce"]["ltp"] > 0 and row["pe"]["ltp"] > 0:
            return float(atm + (row["ce"]["ltp"] - row["pe"]["ltp"]) * math.exp(rate * years))
    return None


def _greeks(
    option_type: str, price: float, forward: float, strike: float, years: float, rate: float
) -> dict[str, Any]:
    """Black-76 on ``forward`` (Black–Scholes on the discounted forward): IV in %, theta per day, vega per
    vol point. An option whose price no volatility reproduces (or an expired one) gets IV 0 and the
    intrinsic delta."""
    spot = forward * math.exp(-rate * years)
    iv = implied_volatility(option_type, price, spot, strike, years, rate) if price > 0 else None
    g = bs_greeks(option_type, spot, strike, years, rate, iv or 0.0)
    return {
        "implied_volatility": round((iv or 0.0) * 100, 2),
        "greeks": {
            "delta": round(g.delta, 4),
            "gamma": round(g.gamma, 6),
            "theta": round(g.theta, 4),
            "vega": round(g.vega, 4),
            "rho": round(g.rho, 4),
        },
    }


def optiongreeks(ctx: Ctx) -> Reply:
    v = ctx.values
    contract = ctx.core.market.contract(v["symbol"], v["exchange"])
    if contract is None or contract.instrument_type not in ("CE", "PE") or contract.strike is None:
        return err(404, f"Option symbol {v['symbol']} not found in {v['exchange']}")
    assert contract.expiry is not None
    q = ctx.core.market.quote(contract.symbol, contract.exchange)
    spec = UNDERLYINGS.get(contract.name)
    u_symbol = v.get("underlying_symbol") or contract.name
    u_exchange = v.get("underlying_exchange") or (spec.spot_exchange if spec else contract.exchange)
    uq = ctx.core.market.quote(u_symbol, u_exchange)
    if q is None or uq is None or uq.ltp <= 0:
        return err(
            400, f"Failed to fetch LTP for {u_symbol}. Please check the underlying symbol and exchange."
        )
    cutoff = time(15, 30)
    if v.get("expiry_time"):
        try:
            hh, mm = (int(x) for x in v["expiry_time"].split(":"))
            cutoff = time(hh, mm)
        except ValueError:
            return err(400, "Validation failed", errors={"expiry_time": ["Use HH:MM (e.g., 15:30)."]})
    now = ctx.core.market.now()
    years = max((ist_combine(contract.expiry, cutoff) - now).total_seconds(), 0.0) / SECONDS_PER_YEAR
    rate_pct = float(v.get("interest_rate") or 0)
    rate = rate_pct / 100
    try:
        forward = (
            float(v["forward_price"]) if v.get("forward_price") else float(uq.ltp) * math.exp(rate * years)
        )
        g = _greeks(contract.instrument_type, float(q.ltp), forward, float(contract.strike), years, rate)
    except OverflowError:
        return err(400, "Validation failed", errors=dict(RATE_OUT_OF_RANGE))
    return ok(
        symbol=contract.symbol,
        exchange=contract.exchange,
        underlying=contract.name,
        strike=float(contract.strike),
        option_type=contract.instrument_type,
        expiry_date=f"{contract.expiry.day:02d}-{contract.expiry:%b-%Y}",
        days_to_expiry=round(years * 365, 4),
        spot_price=money(uq.ltp),
        option_price=money(q.ltp),
        interest_rate=rate_pct,
        implied_volatility=g["implied_volatility"],
        greeks=g["greeks"],
    )


# --- margin and calendar ----------------------------------------------------------------------------------


MAX_MARGIN_QUANTITY = 10**9  # units per position
MAX_MARGIN_PRICE = Decimal("1e12")  # rupees per unit


def margin(ctx: Ctx) -> Reply:
    legs: list[Leg] = []
    for i, pos in enumerate(ctx.values["positions"]):
        try:
            qty = int(pos["quantity"])
        except ValueError:
            return err(400, str({"positions": {i: {"quantity": ["Not a valid number."]}}}))
        try:
            price = Decimal(pos["price"] or "0")
        except ArithmeticError:
            return err(400, str({"positions": {i: {"price": ["Not a valid number."]}}}))
        if qty <= 0:
            return err(400, str({"positions": {i: {"quantity": ["Quantity must be a positive number."]}}}))
        # Bounds keep qty × price inside Decimal's 28 digits (a bigger sum cannot be quantised to the paisa).
        if qty > MAX_MARGIN_QUANTITY:
            return err(400, str({"positions": {i: {"quantity": ["Not a valid number."]}}}))
        if not price.is_finite() or price < 0 or price > MAX_MARGIN_PRICE:
            return err(400, str({"positions": {i: {"price": ["Not a valid number."]}}}))
        contract = ctx.core.market.contract(pos["symbol"], pos["exchange"])
        if contract is None or contract.instrument_type == "INDEX":
            return err(400, f"Symbol {pos['symbol']} not found on {pos['exchange']}")
        if price <= 0:
            q = ctx.core.market.quote(contract.symbol, contract.exchange)
            price = q.ltp if q is not None else Decimal(0)
        sign = 1 if pos["action"] == "BUY" else -1
        legs.append(Leg(contract, sign * qty, price, pos["product"]))
    total = portfolio_margin(legs, ctx.core.config.margin)
    premium = sum(
        (
            abs(x.quantity) * x.price
            for x in legs
            if x.quantity > 0 and x.contract.instrument_type in ("CE", "PE")
        ),
        Decimal(0),
    )
    span = ((total - premium) * Decimal("0.78")).quantize(Decimal("0.01"))
    exposure = total - premium - span
    return ok(
        data={
            "total_margin_required": money(total),
            "span_margin": money(span),
            "exposure_margin": money(exposure),
        }
    )


ALL_EXCHANGES = ("NSE", "BSE", "NFO", "BFO", "MCX", "BCD", "CDS", "NCO")
_WEEKDAY_TIMES = {
    "NSE": (time(9, 15), time(15, 30)),
    "BSE": (time(9, 15), time(15, 30)),
    "NFO": (time(9, 15), time(15, 40)),
    "BFO": (time(9, 15), time(15, 40)),
    "MCX": (time(9, 0), time(23, 55)),
    "BCD": (time(9, 0), time(17, 0)),
    "CDS": (time(9, 0), time(17, 0)),
    "NCO": (time(9, 0), time(17, 0)),
}


def _ms(day: date, at: time) -> int:
    return int(ist_combine(day, at).timestamp() * 1000)


def _crypto(day: date) -> dict[str, Any]:
    start = ist_combine(day, time(0, 0))
    end = start + timedelta(hours=23, minutes=59, seconds=59)
    return {
        "exchange": "CRYPTO",
        "start_time": int(start.timestamp() * 1000),
        "end_time": int(end.timestamp() * 1000),
    }


def holidays(ctx: Ctx) -> Reply:
    year = ctx.values.get("year") or ctx.core.market.now().astimezone(IST).year
    cal = ctx.core.calendar
    rows = []
    for h in cal.holidays(year):
        closed = sorted(h.exchanges)
        open_ex = [
            {
                "exchange": ex,
                "start_time": _ms(h.day, _WEEKDAY_TIMES[ex][0]),
                "end_time": _ms(h.day, _WEEKDAY_TIMES[ex][1]),
            }
            for ex in ("MCX",)
            if ex not in h.exchanges and h.day.weekday() < 5
        ]
        rows.append(
            {
                "date": h.day.isoformat(),
                "description": h.name,
                "holiday_type": "TRADING_HOLIDAY",
                "closed_exchanges": closed,
                "open_exchanges": open_ex,
            }
        )
    for s in cal.special_sessions(year):
        rows.append(
            {
                "date": s.day.isoformat(),
                "description": s.name,
                "holiday_type": "SPECIAL_SESSION",
                "closed_exchanges": [],
                "open_exchanges": [
                    {"exchange": ex, "start_time": _ms(s.day, s.open), "end_time": _ms(s.day, s.close)}
                    for ex in sorted(s.exchanges)
                ],
            }
        )
    rows.sort(key=lambda r: r["date"])
    return 200, {"status": "success", "year": year, "timezone": "Asia/Kolkata", "data": rows}


def timings(ctx: Ctx) -> Reply:
    day = _parse_date(ctx.values["date"])
    if day is None or day == date.min:
        # date.min at 00:00 IST lies before datetime.min in UTC: not a date the calendar can place.
        return err(400, {"date": ["Not a valid date."]})
    if day.weekday() >= 5:
        specials = [s for s in ctx.core.calendar.special_sessions(day.year) if s.day == day]
        data = [
            {"exchange": ex, "start_time": _ms(day, s.open), "end_time": _ms(day, s.close)}
            for s in specials
            for ex in sorted(s.exchanges)
        ]
        return ok(data=[*data, _crypto(day)])
    data = []
    for ex in ALL_EXCHANGES:
        if ctx.core.calendar.is_holiday(ex, day):
            for s in ctx.core.calendar.special_sessions(day.year):
                if s.day == day and ex in s.exchanges:
                    data.append(
                        {"exchange": ex, "start_time": _ms(day, s.open), "end_time": _ms(day, s.close)}
                    )
            continue
        start, end = _WEEKDAY_TIMES[ex]
        data.append({"exchange": ex, "start_time": _ms(day, start), "end_time": _ms(day, end)})
    if data:
        data.append(_crypto(day))
    return ok(data=data)


@dataclass(frozen=True)
class Endpoint:
    handler: Callable[[Ctx], Reply]
    needs_key: bool = True


ENDPOINTS: dict[str, Endpoint] = {
    "ping": Endpoint(ping),
    "funds": Endpoint(funds_ep),
    "placeorder": Endpoint(placeorder),
    "placesmartorder": Endpoint(placesmartorder),
    "splitorder": Endpoint(splitorder),
    "basketorder": Endpoint(basketorder),
    "modifyorder": Endpoint(modifyorder),
    "cancelorder": Endpoint(cancelorder),
    "cancelallorder": Endpoint(cancelallorder),
    "closeposition": Endpoint(closeposition),
    "orderstatus": Endpoint(orderstatus),
    "openposition": Endpoint(openposition),
    "orderbook": Endpoint(orderbook_ep),
    "tradebook": Endpoint(tradebook),
    "positionbook": Endpoint(positionbook_ep),
    "holdings": Endpoint(holdings),
    "quotes": Endpoint(quotes),
    "multiquotes": Endpoint(multiquotes),
    "depth": Endpoint(depth),
    "history": Endpoint(history),
    "intervals": Endpoint(intervals),
    "symbol": Endpoint(symbol),
    "search": Endpoint(search),
    "expiry": Endpoint(expiry),
    "optionsymbol": Endpoint(optionsymbol),
    "optionsorder": Endpoint(optionsorder),
    "optionsmultiorder": Endpoint(optionsmultiorder),
    "optionchain": Endpoint(optionchain),
    "optiongreeks": Endpoint(optiongreeks),
    "margin": Endpoint(margin),
    "analyzer": Endpoint(analyzer),
    "analyzer/toggle": Endpoint(analyzer_toggle),
    "market/holidays": Endpoint(holidays, needs_key=False),
    "market/timings": Endpoint(timings, needs_key=False),
}

__all__ = ["COMPLETE", "ENDPOINTS", "Ctx", "Endpoint", "Order"]
