"""Wire shapes: Decimal → JSON numbers, books and quotes as OpenAlgo's [paper] mode writes them."""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from algomirror.domain.instruments import Contract, format_expiry_dashed
from algomirror.simulator.contracts import DepthLevel, Quote
from algomirror.simulator.exchange import (
    CANCELLED,
    COMPLETE,
    OPEN,
    REJECTED,
    TRIGGER_PENDING,
    Account,
    Exchange,
    Order,
    Trade,
    ist_string,
)

PAISA = Decimal("0.01")


def money(value: Decimal) -> float:
    """A rupee amount as a JSON number rounded to the paisa."""
    return float(value.quantize(PAISA, rounding=ROUND_HALF_UP))


def epoch_ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def token_for(contract: Contract) -> int:
    """A stable numeric instrument token (the same on every run)."""
    value = 0
    for ch in f"{contract.exchange}:{contract.symbol}":
        value = (value * 131 + ord(ch)) % 2_000_000_011
    return 10_000 + value % 9_000_000


def symbol_row(contract: Contract) -> dict[str, Any]:
    token = token_for(contract)
    return {
        "id": token,
        "symbol": contract.symbol,
        "brsymbol": contract.symbol,
        "name": contract.name,
        "exchange": contract.exchange,
        "brexchange": contract.exchange,
        "token": str(token),
        "expiry": format_expiry_dashed(contract.expiry) if contract.expiry else "",
        "strike": float(contract.strike) if contract.strike is not None else -0.01,
        "lotsize": contract.lot_size,
        "instrumenttype": contract.instrument_type if contract.instrument_type != "INDEX" else "INDEX",
        "tick_size": float(contract.tick_size),
        "freeze_qty": contract.freeze_qty if contract.freeze_qty > 0 else 1,
    }


def quote_data(q: Quote) -> dict[str, Any]:
    return {
        "ltp": money(q.ltp),
        "open": money(q.open),
        "high": money(q.high),
        "low": money(q.low),
        "prev_close": money(q.prev_close),
        "bid": money(q.bid),
        "ask": money(q.ask),
        "volume": q.volume,
        "oi": q.oi,
    }


def _levels(levels: tuple[DepthLevel, ...]) -> list[dict[str, Any]]:
    out = [{"price": money(x.price), "quantity": x.quantity} for x in levels[:5]]
    while len(out) < 5:
        out.append({"price": 0.0, "quantity": 0})
    return out


def depth_data(q: Quote) -> dict[str, Any]:
    return {
        "ltp": money(q.ltp),
        "ltq": q.ltq,
        "open": money(q.open),
        "high": money(q.high),
        "low": money(q.low),
        "prev_close": money(q.prev_close),
        "volume": q.volume,
        "oi": q.oi,
        "totalbuyqty": sum(x.quantity for x in q.bids),
        "totalsellqty": sum(x.quantity for x in q.asks),
        "bids": _levels(q.bids),
        "asks": _levels(q.asks),
    }


def order_row(order: Order) -> dict[str, Any]:
    return {
        "orderid": order.orderid,
        "symbol": order.symbol,
        "exchange": order.exchange,
        "action": order.action,
        "quantity": order.quantity,
        "price": money(order.price),
        "trigger_price": money(order.trigger_price),
        "pricetype": order.pricetype,
        "price_type": order.pricetype,
        "product": order.product,
        "order_status": order.status,
        "average_price": money(order.average_price),
        "filled_quantity": order.filled_quantity,
        "pending_quantity": order.pending_quantity,
        "rejection_reason": order.rejection_reason,
        "timestamp": ist_string(order.created),
        "strategy": order.strategy,
    }


def order_status_row(order: Order, exchange: Exchange) -> dict[str, Any]:
    row = order_row(order)
    if order.pricetype == "MARKET" and order.price == 0:
        # [paper] shows the reference LTP as a MARKET order's price.
        ref = order.average_price if order.filled_quantity else exchange.ltp(order.contract)
        row["price"] = money(ref)
    return row


def orderbook(acct: Account) -> dict[str, Any]:
    orders = sorted(acct.orders.values(), key=lambda o: (o.created, o.orderid), reverse=True)
    stats = {
        "total_buy_orders": sum(1 for o in orders if o.action == "BUY"),
        "total_sell_orders": sum(1 for o in orders if o.action == "SELL"),
        "total_completed_orders": sum(1 for o in orders if o.status == COMPLETE),
        "total_open_orders": sum(1 for o in orders if o.status == OPEN),
        "total_rejected_orders": sum(1 for o in orders if o.status == REJECTED),
        "total_trigger_pending_orders": sum(1 for o in orders if o.status == TRIGGER_PENDING),
        "total_cancelled_orders": sum(1 for o in orders if o.status == CANCELLED),
    }
    return {"orders": [order_row(o) for o in orders], "statistics": stats}


def trade_row(trade: Trade) -> dict[str, Any]:
    return {
        "symbol": trade.contract.symbol,
        "exchange": trade.contract.exchange,
        "product": trade.product,
        "action": trade.action,
        "quantity": trade.quantity,
        "average_price": money(trade.price),
        "price": money(trade.price),
        "trade_value": money(trade.price * trade.quantity),
        "orderid": trade.orderid,
        "tradeid": trade.tradeid,
        "strategy": trade.strategy,
        "timestamp": ist_string(trade.timestamp),
    }


def positionbook(
    acct: Account, exchange: Exchange, *, closed_realized_in_unrealized: bool = False
) -> dict[str, Any]:
    """The positionbook reply's body (rows and totals, rupees as JSON numbers).

    ``closed_realized_in_unrealized`` (the ``openalgo-paper`` profile): a row closed to quantity 0 shows
    its day's realised P&L in ``unrealized_pnl`` too, as OpenAlgo's sandbox does; the totals are not
    affected (they count only open rows as unrealised).
    """
    rows = []
    total_unrealized = Decimal(0)
    total_realized = Decimal(0)
    for pos in acct.positions.values():
        ltp = exchange.ltp(pos.contract)
        unrealized = exchange.unrealized(pos)
        pnl = pos.today_realized + unrealized
        closed = pos.quantity == 0
        shown_unrealized = pos.today_realized if closed_realized_in_unrealized and closed else unrealized
        invested = pos.average_price * abs(pos.quantity)
        pct = (unrealized / invested * 100) if invested > 0 else Decimal(0)
        total_unrealized += unrealized
        total_realized += pos.today_realized
        rows.append(
            {
                "symbol": pos.contract.symbol,
                "exchange": pos.contract.exchange,
                "product": pos.product,
                "quantity": pos.quantity,
                "average_price": money(pos.average_price),
                "ltp": money(ltp),
                "pnl": money(pnl),
                "pnlpercent": money(pct),
                "unrealized_pnl": money(shown_unrealized),
                "today_realized_pnl": money(pos.today_realized),
                "total_pnl_today": money(pnl),
                "lot_size": float(pos.contract.lot_size),
            }
        )
    return {
        "data": rows,
        "total_pnl": money(total_realized + total_unrealized),
        "total_unrealized_pnl": money(total_unrealized),
        "total_today_realized_pnl": money(total_realized),
        "total_pnl_today": money(total_realized + total_unrealized),
    }


def funds(acct: Account, exchange: Exchange) -> dict[str, Any]:
    used = exchange.used_margin(acct)
    available = acct.capital + acct.realized_total - used
    today = sum((p.today_realized for p in acct.positions.values()), Decimal(0))
    unrealized = sum((exchange.unrealized(p) for p in acct.positions.values()), Decimal(0))
    gross = sum(
        (abs(p.quantity) * exchange.ltp(p.contract) for p in acct.positions.values() if p.quantity),
        Decimal(0),
    )
    return {
        "availablecash": money(available),
        "collateral": 0.0,
        "m2mrealized": money(today),
        "m2munrealized": money(unrealized),
        "utiliseddebits": money(used),
        "grossexposure": money(gross),
        "totalpnl": money(today + unrealized),
        "total_realized_pnl": money(acct.realized_total),
        "today_realized_pnl": money(today),
        "last_reset": ist_string(acct.last_reset) if acct.last_reset else "",
        "reset_count": acct.reset_count,
    }


def order_update(acct: Account, order: Order) -> dict[str, Any]:
    return {
        "type": "order_update",
        "user_id": acct.user_id,
        "mode": "analyze",
        "broker": "sandbox",
        "orderid": order.orderid,
        "symbol": order.symbol,
        "exchange": order.exchange,
        "action": order.action,
        "quantity": order.quantity,
        "price": money(order.price),
        "trigger_price": money(order.trigger_price),
        "pricetype": order.pricetype,
        "product": order.product,
        "order_status": order.status,
        "filled_quantity": order.filled_quantity,
        "pending_quantity": order.pending_quantity,
        "average_price": money(order.average_price),
        "rejection_reason": order.rejection_reason,
        "strategy": order.strategy,
        "timestamp": ist_string(order.updated),
    }
