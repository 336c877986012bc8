"""Mirror order: one order (symbol, side, lots, type) to selected accounts of the user, each with its
own lot multiplier, through the order journal (issue 11 item 10; the mirror check's "Bring in line"
queues the same command for one account).

``mirror_order`` payload (the web writes it, :func:`parse_request` checks it)::

    {"symbol", "exchange", "product", "side": BUY|SELL, "lots": int, "order_type": MARKET|LIMIT|SL|SL-M,
     "price": str|None, "trigger_price": str|None, "accounts": [{"account_id": int, "multiplier": str}],
     "quantity": int (optional, units: the exact difference a mirror check brings in line),
     "run_id": int, "reason": "mirror_check" (optional, for the record)}

:class:`MirrorExecutor` is the entry executor's command machinery (claim ``pending → running`` once,
retries with backoff, ``running`` rows of a dead engine resumed). For each account, in parallel: lots ×
multiplier rounded down (0 → skipped, with the reason), capped by ``max_lots_per_leg``; the account's
pre-checks (entries halted, inactive, archived, key refused); the units in freeze slices, each recorded
first as the intent ``mirror:{command_id}:{account_id}:{slice}`` (purpose ``manual``, tag
``AM-M{command_id}``) and driven to a terminal state by the order driver at ENTRY priority. A retry of
the command (or a restarted engine) finds the intents by key and drives them on: unknown outcomes are
resolved from the orderbook by tag, never sent twice. The command's result lists per account: lots,
quantity, order ids, filled units, average price, status and errors.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, TypeGuard

from sqlalchemy import select
from sqlalchemy.orm import Session

from algomirror.broker.registry import Priority
from algomirror.db.models import EngineCommand, OrderIntent, TradingAccount
from algomirror.domain import order_state
from algomirror.domain.mirror import ORDER_TYPES, SIDES, account_lots, order_slices, parse_multiplier
from algomirror.domain.mirror import symbol_lot_size as lot_size_of
from algomirror.domain.timeutil import to_ist
from algomirror.engine.entry_records import AccountInfo
from algomirror.engine.execution import EntryExecutor, ExecuteOutcome, ExecutionError, settled
from algomirror.engine.journal import IntentExistsError, IntentSpec
from algomirror.engine.order_driver import IntentRow, OrderDriver
from algomirror.host_settings import load_host_policy

log = logging.getLogger(__name__)

MIRROR_ORDER = "mirror_order"
# The result's finish time on the market clock (the clock the sync stamps positions by): the mirror
# check compares it with the positionbook's fetch time (engine_commands.finished_at is the wall clock).
MARKET_FINISHED_AT = "market_finished_at"
PRODUCTS = ("MIS", "NRML")
_AVERAGE = Decimal("0.0001")
# Set on a claimed payload so perform() knows its command (keys and tag are named by it).
_COMMAND_ID = "_command_id"


def mirror_tag(command_id: int) -> str:
    """The OpenAlgo ``strategy`` tag of every order of one mirror command (short: gateways store it in
    narrow columns)."""
    return f"AM-M{command_id}"


def intent_key(command_id: int, account_id: int, slice_number: int) -> str:
    """The journal key of one slice of one account's order of a mirror command."""
    return f"mirror:{command_id}:{account_id}:{slice_number}"


@dataclass(frozen=True, slots=True)
class MirrorTarget:
    account_id: int
    multiplier: Decimal


@dataclass(frozen=True, slots=True)
class MirrorRequest:
    """A checked ``mirror_order`` payload. Prices in rupees; ``quantity`` (units) overrides
    lots × lot size for a one-account correction."""

    symbol: str
    exchange: str
    product: str
    side: str
    lots: int
    order_type: str
    price: Decimal | None
    trigger_price: Decimal | None
    targets: tuple[MirrorTarget, ...]
    quantity: int | None = None


def _price(payload: dict[str, Any], name: str, needed: bool) -> Decimal | None:
    raw = payload.get(name)
    if not needed:
        return None
    try:
        value = Decimal(str(raw))
    except (InvalidOperation, ValueError) as exc:
        raise ExecutionError(f"malformed mirror_order payload ({name})") from exc
    if not value.is_finite() or value <= 0:
        raise ExecutionError(f"malformed mirror_order payload ({name} must be above 0)")
    return value


def _positive_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def parse_request(payload: dict[str, Any]) -> MirrorRequest:
    """The payload as a :class:`MirrorRequest`; raises ExecutionError for one the web could not have
    written (the command then fails with that text and nothing is sent)."""
    symbol, exchange = payload.get("symbol"), payload.get("exchange")
    if not isinstance(symbol, str) or not symbol or not isinstance(exchange, str) or not exchange:
        raise ExecutionError("malformed mirror_order payload (symbol, exchange)")
    side, order_type, product = payload.get("side"), payload.get("order_type"), payload.get("product")
    if side not in SIDES or order_type not in ORDER_TYPES or product not in PRODUCTS:
        raise ExecutionError("malformed mirror_order payload (side, order_type, product)")
    lots, quantity = payload.get("lots"), payload.get("quantity")
    if not _positive_int(lots) or (quantity is not None and not _positive_int(quantity)):
        raise ExecutionError("malformed mirror_order payload (lots, quantity)")
    targets = []
    raw_accounts = payload.get("accounts")
    for item in raw_accounts if isinstance(raw_accounts, list) else []:
        account_id = item.get("account_id") if isinstance(item, dict) else None
        if not _positive_int(account_id):
            raise ExecutionError("malformed mirror_order payload (account_id)")
        try:
            multiplier = parse_multiplier(str(item.get("multiplier", "1")))
        except ValueError as exc:
            raise ExecutionError(f"malformed mirror_order payload ({exc})") from exc
        targets.append(MirrorTarget(account_id, multiplier))
    if not targets or len({t.account_id for t in targets}) != len(targets):
        raise ExecutionError("malformed mirror_order payload (accounts: none, or one twice)")
    return MirrorRequest(
        symbol=symbol,
        exchange=exchange,
        product=str(product),
        side=str(side),
        lots=lots,
        order_type=str(order_type),
        price=_price(payload, "price", order_type in ("LIMIT", "SL")),
        trigger_price=_price(payload, "trigger_price", order_type in ("SL", "SL-M")),
        targets=tuple(targets),
        quantity=quantity if isinstance(quantity, int) else None,
    )


@dataclass(frozen=True, slots=True)
class _Account:
    info: AccountInfo
    max_lots: int


class MirrorExecutor(EntryExecutor):
    """The engine component that runs ``mirror_order`` commands; see the module docstring. Constructed
    like :class:`~algomirror.engine.execution.EntryExecutor`; tests drive it with :meth:`process_once`
    and :meth:`run_command`."""

    name = "mirror"
    kind = MIRROR_ORDER
    recover_note = "the engine stopped while placing this mirror order; it is resumed (nothing sent twice)"

    def _claim(self, command_id: int) -> tuple[int, dict[str, Any], int] | None:
        claimed = super()._claim(command_id)
        if claimed is None:
            return None
        user_id, payload, attempts = claimed
        return user_id, {**payload, _COMMAND_ID: command_id}, attempts

    async def perform(self, user_id: int, payload: dict[str, Any]) -> ExecuteOutcome:
        """Run one claimed ``mirror_order`` command; safe to run any number of times (same keys)."""
        command_id = payload.get(_COMMAND_ID)
        if not isinstance(command_id, int):
            raise ExecutionError("mirror_order without its command id")
        request = parse_request(payload)
        return await self.mirror(command_id, user_id, request)

    async def mirror(self, command_id: int, user_id: int, request: MirrorRequest) -> ExecuteOutcome:
        """Send ``request`` to each of its accounts (in parallel) and report each account's outcome."""
        try:
            lot = lot_size_of(request.symbol)
        except ValueError as exc:
            return ExecuteOutcome("failed", {"accounts": []}, error=str(exc))
        accounts = await asyncio.to_thread(self._accounts, user_id, request)
        driver = OrderDriver(self.database, self._journal(), self.config.driver)
        results = await settled(
            *(
                self._account(command_id, request, t, accounts.get(t.account_id), lot, driver)
                for t in request.targets
            )
        )
        result: dict[str, Any] = {
            "symbol": request.symbol,
            "exchange": request.exchange,
            "side": request.side,
            "lots": request.lots,
            "lot_size": lot,
            "accounts": results,
            MARKET_FINISHED_AT: self.market_clock.now().isoformat(),
        }
        if any(r["status"] == "open" for r in results):
            return ExecuteOutcome(
                "retry", result, error="orders of unknown or open outcome remain", unresolved=True
            )
        return ExecuteOutcome("done", result)

    def _accounts(self, user_id: int, request: MirrorRequest) -> dict[int, _Account]:
        ids = [t.account_id for t in request.targets]
        with self.database.session() as session:
            self.registry.set_host_policy(load_host_policy(session))
            rows = session.scalars(
                select(TradingAccount).where(TradingAccount.id.in_(ids), TradingAccount.user_id == user_id)
            ).all()
            return {
                a.id: _Account(
                    AccountInfo(a.id, a.account_name, a.host_url, a.api_key_encrypted), a.max_lots_per_leg
                )
                for a in rows
            }

    async def _account(
        self,
        command_id: int,
        request: MirrorRequest,
        target: MirrorTarget,
        account: _Account | None,
        lot: int,
        driver: OrderDriver,
    ) -> dict[str, Any]:
        report: dict[str, Any] = {
            "account_id": target.account_id,
            "account_name": account.info.account_name if account else None,
            "multiplier": str(target.multiplier),
            "lots": 0,
            "quantity": 0,
            "orders": [],
            "filled": 0,
            "average": None,
            "status": "skipped",
            "errors": [],
        }
        if account is None:
            report["errors"] = ["account not found"]
            return report
        intents = await asyncio.to_thread(self._intents, command_id, target.account_id)
        if request.quantity is not None:
            # A correction of the exact difference (a partial fill may leave less than a lot).
            units = request.quantity
            report["lots"] = units // lot if units % lot == 0 else None
        else:
            sized = account_lots(request.lots, target.multiplier, account.max_lots)
            units = sized.lots * lot
            report["lots"] = sized.lots
            if sized.reason is not None:
                report["note"] = sized.reason
        report["quantity"] = units
        if units <= 0 and not intents:
            return report
        client, block = self.client_for(account.info)
        if client is not None:
            block = await asyncio.to_thread(self.entry_block, account.info)
        if client is None and intents:
            report["status"] = "open"  # orders may exist; the account cannot be read now
            report["errors"].append(f"not reachable: {block}")
            return report
        if not intents and block is not None:
            report["errors"].append(f"not placed: {block}")
            return report
        if block is None and units > 0:
            # Always the full slice list: the engine may have died after recording only some slices,
            # and recording is idempotent by key (a stored slice is kept as it is).
            today = to_ist(self.market_clock.now()).date()
            try:
                slices = order_slices(request.symbol, units, today)
            except ValueError as exc:
                if not intents:
                    report["errors"].append(f"not placed: {exc}")
                    return report
                report["errors"].append(f"not all placed: {exc}")
            else:
                intents = await asyncio.to_thread(
                    self._record, driver, command_id, request, target.account_id, slices
                )
        assert client is not None
        rows = await settled(
            *(driver.drive(client, i, allow_send=block is None, priority=Priority.ENTRY) for i in intents)
        )
        outcome = _outcome(rows, units)
        return {**report, **outcome, "errors": report["errors"] + outcome["errors"]}

    def _intents(self, command_id: int, account_id: int) -> list[IntentRow]:
        prefix = f"mirror:{command_id}:{account_id}:"
        with self.database.session_factory() as session:
            rows = session.scalars(
                select(OrderIntent)
                .where(
                    OrderIntent.account_id == account_id, OrderIntent.key.startswith(prefix, autoescape=True)
                )
                .order_by(OrderIntent.id)
            ).all()
            return [IntentRow.of(r) for r in rows]

    def _record(
        self, driver: OrderDriver, command_id: int, request: MirrorRequest, account_id: int, slices: list[int]
    ) -> list[IntentRow]:
        """Write every slice's intent (an existing key is kept as stored), return them as stored."""
        for n, quantity in enumerate(slices, start=1):
            spec = IntentSpec(
                key=intent_key(command_id, account_id, n),
                account_id=account_id,
                symbol=request.symbol,
                exchange=request.exchange,
                product=request.product,
                side=request.side,
                quantity=quantity,
                order_type=request.order_type,
                price=request.price,
                trigger_price=request.trigger_price,
                strategy_tag=mirror_tag(command_id),
                purpose="manual",
            )
            try:
                driver.journal.record(spec)
            except IntentExistsError:
                pass  # written by an earlier attempt of this command: driven from its stored state
        return self._intents(command_id, account_id)


def _outcome(rows: list[IntentRow], units: int) -> dict[str, Any]:
    """One account's status from its slices, judged against the ``units`` requested (not only the
    slices found: a slice never recorded is not filled): filled (every requested unit), partial (some
    units filled), rejected / cancelled (nothing filled), open (an order still working or of unknown
    outcome: the command is retried)."""
    filled = sum(r.filled_quantity for r in rows)
    wanted = max(units, sum(r.quantity for r in rows))
    priced = [(r.average_price, r.filled_quantity) for r in rows if r.filled_quantity and r.average_price]
    units = sum(q for _, q in priced)
    average = None
    if units:
        total = sum((p * q for p, q in priced), Decimal(0))
        average = str((total / units).quantize(_AVERAGE, rounding=ROUND_HALF_UP))
    errors = list(
        dict.fromkeys(
            r.rejection_reason for r in rows if r.rejection_reason and r.filled_quantity < r.quantity
        )
    )
    if not all(r.terminal for r in rows):
        status = "open"
    elif filled >= wanted:
        status = "filled"
    elif filled:
        status = "partial"
    elif any(r.state == order_state.REJECTED for r in rows):
        status = "rejected"
    else:
        status = "cancelled"
    return {
        "orders": [r.order_id for r in rows if r.order_id],
        "filled": filled,
        "average": average,
        "status": status,
        "errors": errors,
    }


def request_mirror(
    session: Session, *, user_id: int, payload: dict[str, Any], token: str, now: datetime
) -> EngineCommand:
    """Queue a ``mirror_order`` command (the caller commits). ``token`` is the page's idempotency
    token: the same token twice fails with IntegrityError, so a double submit is one command. Raises
    ExecutionError for a payload :func:`parse_request` refuses (nothing is queued then)."""
    parse_request(payload)
    command = EngineCommand(
        user_id=user_id,
        kind=MIRROR_ORDER,
        payload=payload,
        token=token,
        status="pending",
        created_at=now,
        updated_at=now,
    )
    session.add(command)
    session.flush()
    return command


def command_of(session: Session, command_id: int, user_id: int) -> EngineCommand | None:
    """The user's ``mirror_order`` command (None for another user's or another kind)."""
    row = session.get(EngineCommand, command_id)
    if row is None or row.user_id != user_id or row.kind != MIRROR_ORDER:
        return None
    return row


__all__ = [
    "MARKET_FINISHED_AT",
    "MIRROR_ORDER",
    "MirrorExecutor",
    "MirrorRequest",
    "MirrorTarget",
    "command_of",
    "intent_key",
    "mirror_tag",
    "parse_request",
    "request_mirror",
]
