"""Accounts, orders, matching, positions, funds: the paper exchange's book-keeping (synchronous, pure-ish).

Everything here runs on the server's event loop (one thread); a lock still guards the state so tests and
the control API may call in from another thread. Money is ``Decimal``; quantities are ``int`` units;
instants are aware UTC and become naive IST strings only on the wire (:mod:`.wire`).

Business rejections raise :class:`ExchangeError` carrying the HTTP status and the exact OpenAlgo text.
Fill rules follow OPENALGO-PROTOCOL.md §3.3; positions and P&L §3.4; funds §3.5 with the margin model of
:mod:`.margin`; the day cycle §3.7 (03:00 IST reset, MIS square-off, MIS window).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from algomirror.domain.instruments import Contract
from algomirror.domain.timeutil import IST, to_ist
from algomirror.simulator.contracts import MarketModel, Quote
from algomirror.simulator.faults import FaultState
from algomirror.simulator.margin import Leg, MarginConfig, portfolio_margin
from algomirror.simulator.profiles import Quirks

PAISA = Decimal("0.01")
ZERO = Decimal(0)

OPEN = "open"
TRIGGER_PENDING = "trigger pending"
COMPLETE = "complete"
REJECTED = "rejected"
CANCELLED = "cancelled"
LIVE_STATUSES = (OPEN, TRIGGER_PENDING)

AUTO_SQUARE_OFF = "AUTO_SQUARE_OFF"
DERIVATIVE_EXCHANGES = frozenset({"NFO", "BFO", "CDS", "BCD", "MCX", "NCDEX", "NCO"})
CASH_EXCHANGES = frozenset({"NSE", "BSE"})


class ExchangeError(Exception):
    """A business rejection: HTTP ``status`` and the OpenAlgo ``message``; ``extra`` goes into the body."""

    def __init__(self, status: int, message: str, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra or {}


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """A validated placement. Prices in rupees (0 when not applicable), quantity in units."""

    strategy: str
    exchange: str
    symbol: str
    action: str  # BUY | SELL
    quantity: int
    pricetype: str = "MARKET"
    product: str = "MIS"
    price: Decimal = ZERO
    trigger_price: Decimal = ZERO
    disclosed_quantity: int = 0


@dataclass(slots=True)
class Order:
    orderid: str
    account_key: str
    contract: Contract
    strategy: str
    action: str
    quantity: int
    pricetype: str
    product: str
    price: Decimal
    trigger_price: Decimal
    disclosed_quantity: int
    status: str
    created: datetime
    updated: datetime
    filled_quantity: int = 0
    fill_value: Decimal = ZERO  # Σ fill qty × fill price, for the VWAP
    rejection_reason: str = ""
    # Set once an SL order has triggered and now rests as a limit.
    triggered: bool = False

    @property
    def symbol(self) -> str:
        return self.contract.symbol

    @property
    def exchange(self) -> str:
        return self.contract.exchange

    @property
    def pending_quantity(self) -> int:
        return 0 if self.status in (COMPLETE, REJECTED, CANCELLED) else self.quantity - self.filled_quantity

    @property
    def average_price(self) -> Decimal:
        if self.filled_quantity == 0:
            return ZERO
        return (self.fill_value / self.filled_quantity).quantize(PAISA, rounding=ROUND_HALF_UP)

    @property
    def sign(self) -> int:
        return 1 if self.action == "BUY" else -1


@dataclass(slots=True)
class Trade:
    tradeid: str
    orderid: str
    contract: Contract
    product: str
    action: str
    quantity: int
    price: Decimal
    strategy: str
    timestamp: datetime


@dataclass(slots=True)
class Position:
    contract: Contract
    product: str
    quantity: int = 0
    average_price: Decimal = ZERO
    today_realized: Decimal = ZERO

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.contract.symbol, self.contract.exchange, self.product)


@dataclass(slots=True)
class Account:
    api_key: str
    user_id: str
    capital: Decimal
    orders: dict[str, Order] = field(default_factory=dict)
    trades: list[Trade] = field(default_factory=list)
    positions: dict[tuple[str, str, str], Position] = field(default_factory=dict)
    realized_total: Decimal = ZERO
    reset_count: int = 0
    last_reset: datetime | None = None
    session: date | None = None
    squared_off_session: date | None = None
    # Live orders waiting for the market (open / trigger pending), for cheap margin sums.
    live: dict[str, Order] = field(default_factory=dict)
    rolled_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ExchangeConfig:
    capital: Decimal = Decimal(10_000_000)
    slippage_ticks: int = 0
    square_off_time: time = time(15, 15)
    mis_resume_time: time = time(9, 0)
    day_reset_time: time = time(3, 0)
    margin: MarginConfig = field(default_factory=MarginConfig)
    # The profile's quirks the matching engine honours (cancel-all, modify); see simulator.profiles.
    quirks: Quirks = field(default_factory=Quirks)


OrderListener = Callable[[Account, Order], None]


def session_date(now: datetime, reset_at: time) -> date:
    """The trading session an instant belongs to: IST date, rolling over at ``reset_at`` IST."""
    ist = to_ist(now)
    rolled = ist - timedelta(hours=reset_at.hour, minutes=reset_at.minute)
    return rolled.date()


def on_tick(value: Decimal, tick: Decimal) -> bool:
    return tick <= 0 or (value % tick) == 0


def fmt_inr(value: Decimal) -> str:
    return f"₹{value.quantize(PAISA, rounding=ROUND_HALF_UP):,.2f}"


class Exchange:
    """The accounts and the matching engine. Call :meth:`on_quote` for every tick, :meth:`on_time` as the
    clock moves."""

    def __init__(self, market: MarketModel, faults: FaultState, config: ExchangeConfig | None = None) -> None:
        self.market = market
        self.faults = faults
        self.config = config or ExchangeConfig()
        self.accounts: dict[str, Account] = {}
        self.listeners: list[OrderListener] = []
        self._lock = threading.RLock()
        self._seq = 0
        self._id_day: tuple[datetime | None, str] = (None, "")
        # (symbol, exchange) -> {orderid: order} of live orders waiting for the market
        self._resting: dict[tuple[str, str], dict[str, Order]] = {}

    # -- accounts ----------------------------------------------------------------------------------

    def add_account(self, api_key: str, user_id: str, capital: Decimal | None = None) -> Account:
        with self._lock:
            acct = Account(api_key=api_key, user_id=user_id, capital=capital or self.config.capital)
            acct.session = session_date(self.market.now(), self.config.day_reset_time)
            acct.last_reset = self.market.now()
            self.accounts[api_key] = acct
            return acct

    def account(self, api_key: object) -> Account | None:
        if not isinstance(api_key, str):
            return None
        return self.accounts.get(api_key)

    def reset(self) -> None:
        """Forget every order, trade and position; restore capital (control API reset)."""
        with self._lock:
            for book in self._resting.values():
                for order in book.values():
                    unwatch_instrument(self.market, order.symbol, order.exchange)
            self._resting.clear()
            self._seq = 0
            for acct in list(self.accounts.values()):
                self.accounts[acct.api_key] = Account(
                    api_key=acct.api_key,
                    user_id=acct.user_id,
                    capital=self.config.capital,
                    session=session_date(self.market.now(), self.config.day_reset_time),
                    last_reset=self.market.now(),
                )

    # -- ids and time ------------------------------------------------------------------------------

    def _next_orderid(self, now: datetime) -> str:
        self._seq += 1
        if self._id_day[0] != now:
            self._id_day = (now, to_ist(now).strftime("%y%m%d"))
        return self._id_day[1] + f"{self._seq % 100_000_000:08d}"

    def _tradeid(self, orderid: str, n: int, now: datetime) -> str:
        digest = hashlib.sha256(f"{orderid}:{n}".encode()).hexdigest()[:8]
        return "TRADE-" + to_ist(now).strftime("%Y%m%d-%H%M%S") + "-" + digest

    def _notify(self, acct: Account, order: Order) -> None:
        for listener in list(self.listeners):
            listener(acct, order)

    # -- placement ---------------------------------------------------------------------------------

    def place(self, acct: Account, req: OrderRequest, *, tag: str | None = None) -> Order:
        """Validate and place an order; MARKET and marketable orders fill before this returns.

        Raises ExchangeError (400) for an unknown symbol, a product not allowed on the exchange, a price
        rule, off-tick price, lot multiple, freeze limit, MIS window, no price for MARKET, insufficient
        funds, or an injected rejection. Freeze-limit and injected rejections leave a ``rejected`` order in
        the book and carry its ``orderid``.
        """
        with self._lock:
            now = self.market.now()
            self._roll(acct, now)
            contract = self.market.contract(req.symbol, req.exchange)
            if contract is None or contract.instrument_type == "INDEX":
                raise ExchangeError(400, f"Symbol {req.symbol} not found on {req.exchange}")
            self._check_product(contract, req.product)
            self._check_prices(contract, req.pricetype, req.price, req.trigger_price, modify=False)
            self._check_lot(contract, req.quantity)
            fault = self.faults.take_reject(acct.api_key)
            if contract.freeze_qty > contract.lot_size and req.quantity > contract.freeze_qty:
                reason = (
                    f"Quantity {req.quantity} exceeds the freeze limit of {contract.freeze_qty} for "
                    f"{contract.symbol}. Split the order (splitorder) into slices of at most "
                    f"{contract.freeze_qty // contract.lot_size * contract.lot_size}."
                )
                order = self._new_order(acct, contract, req, now, tag)
                self._reject(acct, order, reason)
                raise ExchangeError(400, reason, {"orderid": order.orderid})
            sign = 1 if req.action == "BUY" else -1
            self._check_mis_window(acct, contract, req.product, sign * req.quantity, now)
            quote = self.market.quote(contract.symbol, contract.exchange)
            if req.pricetype == "MARKET" and (quote is None or quote.ltp <= 0):
                raise ExchangeError(
                    400,
                    f"Cannot place MARKET order for {contract.symbol} - unable to fetch current price. "
                    "Please try again later or use LIMIT order with a specific price.",
                )
            order = self._new_order(acct, contract, req, now, tag, assign_id=False)
            required, available = self._margin_check(acct, order, quote)
            if required > available:
                raise ExchangeError(
                    400,
                    f"Insufficient funds. Required: {fmt_inr(required)}, Available: {fmt_inr(available)}, "
                    f"Shortage: {fmt_inr(required - available)}",
                )
            order.orderid = self._next_orderid(now)
            if fault is not None:
                reason = str(fault.params.get("message") or "Order rejected by exchange (simulated)")
                if fault.params.get("mode", "sync") == "sync":
                    self._reject(acct, order, reason)
                    raise ExchangeError(400, reason, {"orderid": order.orderid})
                # Asynchronous rejection: accepted (200 with an orderid), then rejected at once.
                acct.orders[order.orderid] = order
                self._notify(acct, order)
                self._reject(acct, order, reason)
                return order
            acct.orders[order.orderid] = order
            self._notify(acct, order)
            self._evaluate(acct, order, quote, arrival=True)
            return order

    def _new_order(
        self,
        acct: Account,
        contract: Contract,
        req: OrderRequest,
        now: datetime,
        tag: str | None,
        *,
        assign_id: bool = True,
    ) -> Order:
        initial = TRIGGER_PENDING if req.pricetype in ("SL", "SL-M") else OPEN
        price = req.price if req.pricetype in ("LIMIT", "SL") else ZERO
        trigger = req.trigger_price if req.pricetype in ("SL", "SL-M") else ZERO
        return Order(
            orderid=self._next_orderid(now) if assign_id else "",
            account_key=acct.api_key,
            contract=contract,
            strategy=tag or req.strategy,
            action=req.action,
            quantity=req.quantity,
            pricetype=req.pricetype,
            product=req.product,
            price=price,
            trigger_price=trigger,
            disclosed_quantity=req.disclosed_quantity,
            status=initial,
            created=now,
            updated=now,
        )

    def _reject(self, acct: Account, order: Order, reason: str) -> None:
        order.status = REJECTED
        order.rejection_reason = reason
        order.updated = self.market.now()
        acct.orders[order.orderid] = order
        self._unrest(order)
        self._notify(acct, order)

    @staticmethod
    def _check_product(contract: Contract, product: str) -> None:
        if product == "CNC" and contract.exchange in DERIVATIVE_EXCHANGES:
            raise ExchangeError(
                400, f"CNC product is not allowed for {contract.exchange} derivatives. Use NRML or MIS."
            )
        if product == "NRML" and contract.exchange in CASH_EXCHANGES:
            raise ExchangeError(400, f"NRML product is not allowed for {contract.exchange}. Use CNC or MIS.")

    @staticmethod
    def _check_prices(
        contract: Contract, pricetype: str, price: Decimal, trigger: Decimal, *, modify: bool
    ) -> None:
        if pricetype in ("LIMIT", "SL") and price <= 0:
            raise ExchangeError(400, f"Price must be greater than 0 for {pricetype} orders")
        if pricetype in ("SL", "SL-M") and trigger <= 0:
            raise ExchangeError(400, f"Trigger price must be greater than 0 for {pricetype} orders")
        if modify and pricetype in ("MARKET", "SL-M") and price != 0:
            raise ExchangeError(400, f"Price must be 0 for {pricetype} orders")
        if modify and pricetype in ("MARKET", "LIMIT") and trigger != 0:
            raise ExchangeError(400, f"Trigger price must be 0 for {pricetype} orders")
        tick = contract.tick_size
        for name, value in (("Price", price), ("Trigger price", trigger)):
            if value < 0:
                raise ExchangeError(400, f"{name} cannot be negative")
            if value > 0 and pricetype != "MARKET" and not on_tick(value, tick):
                raise ExchangeError(400, f"{name} {value} is not a multiple of the tick size {tick}")

    @staticmethod
    def _check_lot(contract: Contract, quantity: int) -> None:
        if quantity <= 0:
            raise ExchangeError(400, "Quantity must be a positive number.")
        lot = contract.lot_size
        if lot > 1 and quantity % lot != 0:
            raise ExchangeError(400, f"Quantity must be in multiples of lot size {lot}")

    def _check_mis_window(
        self, acct: Account, contract: Contract, product: str, signed: int, now: datetime
    ) -> None:
        if product != "MIS":
            return
        clock = to_ist(now).time()
        cfg = self.config
        if cfg.mis_resume_time <= clock < cfg.square_off_time:
            return
        pos = acct.positions.get((contract.symbol, contract.exchange, product))
        current = pos.quantity if pos else 0
        if abs(current + signed) > abs(current):
            raise ExchangeError(
                400,
                f"MIS orders cannot be placed after square-off time ({cfg.square_off_time:%H:%M} IST). "
                f"Trading resumes at {cfg.mis_resume_time:%I:%M %p} IST.",
            )

    # -- modify / cancel ---------------------------------------------------------------------------

    def get_order(self, acct: Account, orderid: str) -> Order:
        order = acct.orders.get(orderid)
        if order is None:
            raise ExchangeError(404, f"Order {orderid} not found")
        return order

    def modify(
        self,
        acct: Account,
        orderid: str,
        *,
        pricetype: str,
        quantity: int,
        price: Decimal,
        trigger_price: Decimal,
        disclosed_quantity: int,
    ) -> Order:
        """Change quantity, prices (and price type) of a live order. Raises ExchangeError 404/400."""
        with self._lock:
            order = self.get_order(acct, orderid)
            if order.status not in LIVE_STATUSES:
                raise ExchangeError(400, f"Cannot modify order in {order.status} status")
            self._check_prices(order.contract, pricetype, price, trigger_price, modify=True)
            self._check_lot(order.contract, quantity)
            if quantity < order.filled_quantity:
                raise ExchangeError(
                    400, f"Quantity {quantity} is below the filled quantity {order.filled_quantity}"
                )
            fc = order.contract
            if fc.freeze_qty > fc.lot_size and quantity > fc.freeze_qty:
                raise ExchangeError(400, f"Quantity {quantity} exceeds the freeze limit of {fc.freeze_qty}")
            if self.config.quirks.modify_pricetype_change_ignored and pricetype != order.pricetype:
                # OpenAlgo's paper mode: the reply says "modified", the order stays as it was.
                return order
            saved = (order.pricetype, order.quantity, order.price, order.trigger_price, order.status)
            order.pricetype = pricetype
            order.quantity = quantity
            order.price = price if pricetype in ("LIMIT", "SL") else ZERO
            order.trigger_price = trigger_price if pricetype in ("SL", "SL-M") else ZERO
            order.disclosed_quantity = disclosed_quantity
            if pricetype in ("SL", "SL-M") and not order.triggered:
                order.status = TRIGGER_PENDING
            else:
                order.status = OPEN
            quote = self.market.quote(fc.symbol, fc.exchange)
            extra = self._incremental_margin(acct, order, quote, exclude_self=True)
            available = self.available_cash(acct, exclude=order)
            if extra > available:
                order.pricetype, order.quantity, order.price, order.trigger_price, order.status = saved
                raise ExchangeError(
                    400,
                    f"Insufficient funds. Required: {fmt_inr(extra)}, Available: {fmt_inr(available)}, "
                    f"Shortage: {fmt_inr(extra - available)}",
                )
            order.updated = self.market.now()
            self._notify(acct, order)
            self._evaluate(acct, order, quote, arrival=True)
            return order

    def cancel(self, acct: Account, orderid: str) -> Order:
        """Cancel a live order. Raises ExchangeError 404 (unknown) or 400 (terminal).

        With the cancel-fill fault armed the order fills completely instead (at its limit price, or the
        touch for a MARKET/SL-M order) and the caller still acknowledges the cancel: a real broker
        accepts a cancel request that the exchange then finds too late.
        """
        with self._lock:
            order = self.get_order(acct, orderid)
            if order.status not in LIVE_STATUSES:
                raise ExchangeError(400, f"Cannot cancel order in {order.status} status")
            if self.faults.take_cancel_fill(acct.api_key) is not None:
                self._fill_before_cancel(acct, order)
                return order
            self._cancel(acct, order)
            return order

    def _fill_before_cancel(self, acct: Account, order: Order) -> None:
        if order.pricetype in ("LIMIT", "SL"):
            price = order.price
        else:
            quote = self.market.quote(order.symbol, order.exchange)
            price = self._touch(order, quote) if quote is not None else self.ltp(order.contract)
        order.triggered = order.triggered or order.status == TRIGGER_PENDING
        self._fill(acct, order, price, allow_partial=False)

    def _cancel(self, acct: Account, order: Order) -> None:
        order.status = CANCELLED
        order.updated = self.market.now()
        self._unrest(order)
        self._notify(acct, order)

    def cancel_all(self, acct: Account) -> tuple[list[str], list[dict[str, str]]]:
        """Cancel every open and trigger-pending order of the account; with the
        ``cancel_all_leaves_trigger_pending`` quirk (OpenAlgo's paper mode) only the ``open`` ones."""
        statuses = (OPEN,) if self.config.quirks.cancel_all_leaves_trigger_pending else LIVE_STATUSES
        with self._lock:
            done: list[str] = []
            for order in list(acct.orders.values()):
                if order.status in statuses:
                    self._cancel(acct, order)
                    done.append(order.orderid)
            return done, []

    def close_all(self, acct: Account, tag: str = AUTO_SQUARE_OFF) -> tuple[int, int]:
        """Square off every non-zero position at MARKET; returns (closed, failed)."""
        with self._lock:
            closed = failed = 0
            for pos in list(acct.positions.values()):
                if pos.quantity == 0:
                    continue
                if self._close_position(acct, pos, tag):
                    closed += 1
                else:
                    failed += 1
            return closed, failed

    def _close_position(self, acct: Account, pos: Position, tag: str) -> bool:
        req = OrderRequest(
            strategy=tag,
            exchange=pos.contract.exchange,
            symbol=pos.contract.symbol,
            action="SELL" if pos.quantity > 0 else "BUY",
            quantity=abs(pos.quantity),
            pricetype="MARKET",
            product=pos.product,
        )
        try:
            order = self._place_internal(acct, pos.contract, req, tag)
        except ExchangeError:
            return False
        return order.status == COMPLETE

    def _place_internal(self, acct: Account, contract: Contract, req: OrderRequest, tag: str) -> Order:
        """Closing orders skip the freeze limit, funds and MIS window (they only reduce)."""
        now = self.market.now()
        quote = self.market.quote(contract.symbol, contract.exchange)
        if quote is None or quote.ltp <= 0:
            raise ExchangeError(400, f"Cannot place MARKET order for {contract.symbol} - no price")
        order = self._new_order(acct, contract, req, now, tag)
        acct.orders[order.orderid] = order
        self._notify(acct, order)
        self._evaluate(acct, order, quote, arrival=True, allow_partial=False)
        return order

    def position_quantity(self, acct: Account, symbol: str, exchange: str, product: str) -> int:
        pos = acct.positions.get((symbol, exchange, product))
        return pos.quantity if pos else 0

    # -- matching ----------------------------------------------------------------------------------

    def on_quote(self, quote: Quote) -> None:
        """Check resting orders of this instrument against a fresh quote (stale and zero quotes skipped)."""
        book = self._resting.get((quote.symbol, quote.exchange))
        if not book:
            return
        with self._lock:
            for order in list(book.values()):
                acct = self.accounts.get(order.account_key)
                if acct is None or order.status not in LIVE_STATUSES:
                    book.pop(order.orderid, None)
                    continue
                self._evaluate(acct, order, quote, arrival=False)

    def _usable(self, quote: Quote | None) -> bool:
        if quote is None or quote.ltp <= 0:
            return False
        # A quote whose LTP lies outside its own day range is stale (paper rule).
        return not (quote.high > 0 and quote.low > 0 and not (quote.low <= quote.ltp <= quote.high))

    def _touch(self, order: Order, quote: Quote) -> Decimal:
        tick = order.contract.tick_size
        slip = tick * self.config.slippage_ticks
        if order.action == "BUY":
            base = quote.ask if quote.ask > 0 else quote.ltp
            return base + slip
        base = quote.bid if quote.bid > 0 else quote.ltp
        return max(base - slip, tick)

    def _evaluate(
        self, acct: Account, order: Order, quote: Quote | None, *, arrival: bool, allow_partial: bool = True
    ) -> None:
        if order.status not in LIVE_STATUSES:
            return
        if not self._usable(quote):
            self._rest(order)
            return
        assert quote is not None
        ltp = quote.ltp
        buy = order.action == "BUY"
        fill_price: Decimal | None = None
        if order.status == TRIGGER_PENDING:
            hit = ltp >= order.trigger_price if buy else ltp <= order.trigger_price
            if not hit:
                self._rest(order)
                return
            order.triggered = True
            if order.pricetype == "SL-M":
                fill_price = ltp
            else:
                limit_met = ltp <= order.price if buy else ltp >= order.price
                if limit_met:
                    fill_price = ltp
                else:
                    order.status = OPEN
                    order.updated = self.market.now()
                    self._notify(acct, order)
                    self._rest(order)
                    return
        elif order.pricetype == "MARKET":
            fill_price = self._touch(order, quote)
        else:  # LIMIT, or an SL that triggered and now rests at its limit
            crossed = ltp <= order.price if buy else ltp >= order.price
            if not crossed:
                self._rest(order)
                return
            fill_price = ltp if arrival else order.price
        self._fill(acct, order, fill_price, allow_partial=allow_partial)

    def _rest(self, order: Order) -> None:
        book = self._resting.setdefault((order.symbol, order.exchange), {})
        if order.orderid not in book:
            book[order.orderid] = order
            acct = self.accounts.get(order.account_key)
            if acct is not None:
                acct.live[order.orderid] = order
            # Models that price derivatives lazily only tick what someone watches.
            watch_instrument(self.market, order.symbol, order.exchange)

    def _unrest(self, order: Order) -> None:
        acct = self.accounts.get(order.account_key)
        if acct is not None:
            acct.live.pop(order.orderid, None)
        book = self._resting.get((order.symbol, order.exchange))
        if book is not None and book.pop(order.orderid, None) is not None:
            unwatch_instrument(self.market, order.symbol, order.exchange)

    def _fill(self, acct: Account, order: Order, price: Decimal, *, allow_partial: bool) -> None:
        remaining = order.quantity - order.filled_quantity
        qty = remaining
        if allow_partial and order.filled_quantity == 0:
            fault = self.faults.take_partial(acct.api_key)
            if fault is not None:
                lot = max(order.contract.lot_size, 1)
                fraction = Decimal(str(fault.params.get("fraction", "0.5")))
                part = int(Decimal(remaining) * fraction) // lot * lot
                qty = min(max(part, lot), remaining)
        now = self.market.now()
        order.filled_quantity += qty
        order.fill_value += price * qty
        order.updated = now
        acct.trades.append(
            Trade(
                tradeid=self._tradeid(order.orderid, len(acct.trades), now),
                orderid=order.orderid,
                contract=order.contract,
                product=order.product,
                action=order.action,
                quantity=qty,
                price=price,
                strategy=order.strategy,
                timestamp=now,
            )
        )
        self._apply_fill(acct, order.contract, order.product, order.sign * qty, price)
        if order.filled_quantity >= order.quantity:
            order.status = COMPLETE
            self._unrest(order)
        else:
            order.status = OPEN
            self._rest(order)
        self._notify(acct, order)

    @staticmethod
    def _apply_fill(acct: Account, contract: Contract, product: str, signed: int, price: Decimal) -> None:
        key = (contract.symbol, contract.exchange, product)
        pos = acct.positions.get(key)
        if pos is None:
            pos = acct.positions[key] = Position(contract=contract, product=product)
        q = pos.quantity
        if q == 0 or (q > 0) == (signed > 0):
            total = abs(q) + abs(signed)
            pos.average_price = (pos.average_price * abs(q) + price * abs(signed)) / total
            pos.quantity = q + signed
            return
        closing = min(abs(q), abs(signed))
        direction = 1 if q > 0 else -1
        realized = ((price - pos.average_price) * closing * direction).quantize(PAISA, rounding=ROUND_HALF_UP)
        pos.today_realized += realized
        acct.realized_total += realized
        pos.quantity = q + signed
        if pos.quantity == 0:
            pos.average_price = ZERO
        elif (pos.quantity > 0) != (q > 0):
            pos.average_price = price  # reversal: a new average at the fill price

    # -- margin and funds --------------------------------------------------------------------------

    def _position_legs(self, acct: Account) -> list[Leg]:
        return [
            Leg(p.contract, p.quantity, p.average_price, p.product)
            for p in acct.positions.values()
            if p.quantity
        ]

    def _reference_price(self, order: Order, quote: Quote | None) -> Decimal:
        if order.pricetype == "LIMIT":
            return order.price
        if order.pricetype in ("SL", "SL-M"):
            # §3.5: stop orders block margin at their trigger (OpenAlgo's sandbox does the same for SL).
            return order.trigger_price
        if quote is None:
            return ZERO
        return self._touch(order, quote) if quote.ltp > 0 else ZERO

    def _order_leg(self, order: Order, quote: Quote | None) -> Leg:
        remaining = order.quantity - order.filled_quantity
        return Leg(order.contract, order.sign * remaining, self._reference_price(order, quote), order.product)

    def _incremental_margin(
        self, acct: Account, order: Order, quote: Quote | None, *, exclude_self: bool = False
    ) -> Decimal:
        legs = self._position_legs(acct)
        base = portfolio_margin(legs, self.config.margin)
        with_order = portfolio_margin([*legs, self._order_leg(order, quote)], self.config.margin)
        return max(with_order - base, ZERO)

    def _margin_check(self, acct: Account, order: Order, quote: Quote | None) -> tuple[Decimal, Decimal]:
        """(margin this order adds, cash available before it), computing the positions' margin once."""
        legs = self._position_legs(acct)
        cfg = self.config.margin
        base = portfolio_margin(legs, cfg)
        required = max(portfolio_margin([*legs, self._order_leg(order, quote)], cfg) - base, ZERO)
        return required, acct.capital + acct.realized_total - self._used(acct, legs, base, None)

    def _used(self, acct: Account, legs: list[Leg], base: Decimal, exclude: Order | None) -> Decimal:
        cfg = self.config.margin
        total = base
        for order in acct.live.values():
            if order.status not in LIVE_STATUSES or order is exclude:
                continue
            quote = self.market.quote(order.symbol, order.exchange)
            total += max(portfolio_margin([*legs, self._order_leg(order, quote)], cfg) - base, ZERO)
        return total

    def used_margin(self, acct: Account, exclude: Order | None = None) -> Decimal:
        """Margin blocked by positions plus, per live order, what it would add to the positions."""
        legs = self._position_legs(acct)
        return self._used(acct, legs, portfolio_margin(legs, self.config.margin), exclude)

    def available_cash(self, acct: Account, exclude: Order | None = None) -> Decimal:
        return acct.capital + acct.realized_total - self.used_margin(acct, exclude)

    def ltp(self, contract: Contract) -> Decimal:
        quote = self.market.quote(contract.symbol, contract.exchange)
        return quote.ltp if quote is not None else ZERO

    def unrealized(self, pos: Position) -> Decimal:
        if pos.quantity == 0:
            return ZERO
        ltp = self.ltp(pos.contract)
        if ltp <= 0:
            return ZERO
        return ((ltp - pos.average_price) * pos.quantity).quantize(PAISA, rounding=ROUND_HALF_UP)

    # -- day cycle ---------------------------------------------------------------------------------

    def on_time(self, now: datetime) -> None:
        """Run the day cycle for every account up to ``now``: 03:00 IST reset, MIS square-off."""
        with self._lock:
            for acct in list(self.accounts.values()):
                self._roll(acct, now)

    def _roll(self, acct: Account, now: datetime) -> None:
        if acct.rolled_at == now:
            return  # nothing can change while the clock stands still
        acct.rolled_at = now
        cfg = self.config
        current = session_date(now, cfg.day_reset_time)
        if acct.session is not None and current > acct.session:
            if acct.squared_off_session != acct.session:
                # The clock jumped over this session's 15:15: square MIS off now rather than let the new
                # session drop the positions with their P&L unrealised.
                acct.squared_off_session = acct.session
                self._square_off_mis(acct)
            self._new_session(acct, current, now)
        ist = to_ist(now)
        if (
            ist.date() == current
            and ist.time() >= cfg.square_off_time
            and acct.squared_off_session != current
        ):
            acct.squared_off_session = current
            self._square_off_mis(acct)

    def _square_off_mis(self, acct: Account) -> None:
        for order in list(acct.orders.values()):
            if order.product == "MIS" and order.status in LIVE_STATUSES:
                self._cancel(acct, order)
        for pos in list(acct.positions.values()):
            if pos.product == "MIS" and pos.quantity != 0:
                self._close_position(acct, pos, AUTO_SQUARE_OFF)

    def _new_session(self, acct: Account, current: date, now: datetime) -> None:
        for order in list(acct.orders.values()):
            if order.status in LIVE_STATUSES:
                self._cancel(acct, order)
        kept: dict[tuple[str, str, str], Position] = {}
        for key, pos in acct.positions.items():
            expiry = pos.contract.expiry
            if pos.quantity != 0 and expiry is not None and expiry < current:
                # Expired contracts settle at their last price.
                ltp = self.ltp(pos.contract)
                realized = ((ltp - pos.average_price) * pos.quantity).quantize(PAISA, rounding=ROUND_HALF_UP)
                acct.realized_total += realized
                continue
            if pos.quantity != 0 and pos.product == "NRML":
                kept[key] = Position(pos.contract, pos.product, pos.quantity, pos.average_price, ZERO)
        acct.positions = kept
        acct.orders = {}
        acct.trades = []
        acct.session = current
        acct.last_reset = now
        acct.reset_count += 1


def watch_instrument(market: MarketModel, symbol: str, exchange: str) -> None:
    """Ask the (lazily pricing) model to tick this instrument and report it to listeners."""
    market.watch(symbol, exchange)


def unwatch_instrument(market: MarketModel, symbol: str, exchange: str) -> None:
    market.unwatch(symbol, exchange)


def ist_string(value: datetime) -> str:
    """Naive IST ``YYYY-MM-DD HH:MM:SS`` (the [paper] order/trade time format)."""
    return value.astimezone(IST).strftime("%Y-%m-%d %H:%M:%S")
