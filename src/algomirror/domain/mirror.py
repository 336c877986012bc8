"""Mirror order sizing and the mirror check's comparison (PRODUCT: mirror order, mirror check). Pure:
no I/O, no clock; callers pass what they read.

* :func:`account_lots`: one order's lots scaled for an account (lots × multiplier rounded down to whole
  lots, capped by the account's ``max_lots_per_leg``), with the reason when the account is skipped.
* :func:`order_slices`: the units of one order as freeze slices (lot size by the symbol's contract).
* :func:`compare`: per account × (symbol, exchange, product), what a run intends against what the
  broker's synced positionbook holds, each difference classified as a drift.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from typing import Literal

from algomirror.domain.contract_specs import freeze_qty, freeze_slices, lot_size
from algomirror.domain.errors import InvalidQuantity, NoRuleInForce
from algomirror.domain.instruments import parse_symbol

ORDER_TYPES = ("MARKET", "LIMIT", "SL", "SL-M")
SIDES = ("BUY", "SELL")
# Multipliers a person can type: 0 (skip) up to 100 ×, at most four decimals (allocation_multiplier's scale).
MAX_MULTIPLIER = Decimal(100)


def parse_multiplier(text: str) -> Decimal:
    """A multiplier from its decimal string ("1", "0.5", "2.25"). Raises ValueError for anything that
    is not a finite number from 0 to :data:`MAX_MULTIPLIER` with at most four decimals."""
    try:
        value = Decimal(str(text).strip())
    except InvalidOperation as exc:
        raise ValueError(f"multiplier {text!r} is not a number") from exc
    if not value.is_finite() or value < 0 or value > MAX_MULTIPLIER:
        raise ValueError(f"multiplier {text!r} must be from 0 to {MAX_MULTIPLIER}")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -4:
        raise ValueError(f"multiplier {text!r} has more than four decimals")
    return value


@dataclass(frozen=True, slots=True)
class AccountLots:
    """Lots for one account: ``lots`` 0 means skipped (``reason`` says why); ``capped`` when
    ``max_lots_per_leg`` cut it."""

    lots: int
    reason: str | None = None
    capped: bool = False


def account_lots(lots: int, multiplier: Decimal, max_lots: int) -> AccountLots:
    """``lots`` × ``multiplier`` rounded down to whole lots, at most ``max_lots``. Zero lots is a skip
    with the reason (never rounded up: a multiplier never buys more than asked)."""
    scaled = int((Decimal(lots) * multiplier).to_integral_value(rounding=ROUND_FLOOR))
    if scaled <= 0:
        return AccountLots(0, f"{lots} lot(s) × {multiplier} rounds down to 0 lots: skipped")
    if max_lots <= 0:
        return AccountLots(0, "the account's max lots per leg is 0: skipped")
    if scaled > max_lots:
        return AccountLots(max_lots, f"capped at {max_lots} lots (the account's max lots per leg)", True)
    return AccountLots(scaled)


def symbol_lot_size(symbol: str) -> int:
    """The lot size (units) of an F&O ``symbol`` by its contract. Raises ValueError for a symbol that
    is not a known derivative or whose expiry no lot-size rule covers."""
    parsed = parse_symbol(symbol)
    if parsed is None:
        raise ValueError(f"{symbol!r} is not an F&O symbol AlgoMirror knows (e.g. NIFTY01DEC2626000CE)")
    try:
        return lot_size(parsed.base, parsed.expiry)
    except NoRuleInForce as exc:
        raise ValueError(f"no lot size is known for {symbol}: {exc}") from exc


def order_slices(symbol: str, units: int, today: date) -> list[int]:
    """``units`` of ``symbol`` as freeze slices in force ``today`` (PRODUCT §5.8). A quantity that is
    not a whole number of lots (a partial fill being brought in line) is one order when it is within
    the freeze quantity. Raises ValueError when it cannot be sent (not positive, unknown symbol, above
    the freeze quantity and not whole lots)."""
    if units <= 0:
        raise ValueError("nothing to send: the quantity is 0")
    lot = symbol_lot_size(symbol)
    parsed = parse_symbol(symbol)
    assert parsed is not None  # symbol_lot_size parsed it
    try:
        freeze = freeze_qty(parsed.base, today)
    except NoRuleInForce:
        return [units]
    if freeze <= lot:
        return [units]  # OpenAlgo's freeze_qty ≤ lot size means "unknown" (MARKET-FACTS §4)
    if units % lot:
        if units <= freeze:
            return [units]
        raise ValueError(f"{units} is not a whole number of lots ({lot}) and above the freeze quantity")
    try:
        return freeze_slices(units, freeze, lot)
    except InvalidQuantity as exc:
        raise ValueError(str(exc)) from exc


# ------------------------------------------------------------------------------------ mirror check

Key = tuple[int, str, str, str]  # account id, symbol, exchange, product
DriftKind = Literal["ok", "missing", "extra", "different", "unknown"]


@dataclass(frozen=True, slots=True)
class MirrorRow:
    """One account × (symbol, exchange, product) of a run: ``intended`` and ``broker`` are signed units
    (BUY +, SELL −); ``broker`` None when the account's positions snapshot is missing or stale."""

    account_id: int
    symbol: str
    exchange: str
    product: str
    intended: int
    broker: int | None
    kind: DriftKind
    accepted: bool = False

    @property
    def key(self) -> Key:
        return (self.account_id, self.symbol, self.exchange, self.product)

    @property
    def is_drift(self) -> bool:
        """A difference someone must act on (or accept); unknown is not a drift, it is a blind spot."""
        return self.kind in ("missing", "extra", "different")

    @property
    def difference(self) -> int:
        """What the broker lacks, signed units (0 when unknown or in line)."""
        return 0 if self.broker is None else self.intended - self.broker

    @property
    def correction_side(self) -> str:
        """The side of the order that brings the account in line."""
        return "BUY" if self.difference > 0 else "SELL"


def classify(intended: int, broker: int | None) -> DriftKind:
    """missing: the broker holds nothing where the run intends a position; extra: the broker holds
    what the run does not intend; different: both non-zero but unequal (a reversed sign included)."""
    if broker is None:
        return "unknown"
    if intended == broker:
        return "ok"
    if broker == 0:
        return "missing"
    if intended == 0:
        return "extra"
    return "different"


def net_of_others(
    broker: Mapping[int, Mapping[tuple[str, str, str], int] | None],
    others: Mapping[Key, int],
) -> dict[int, dict[tuple[str, str, str], int] | None]:
    """The broker's positions less what the user's OTHER open runs intend on the same account ×
    (symbol, exchange, product) (signed units): what is left is this run's share of the position.
    Unknown accounts (None) stay unknown; a key only the others hold nets to 0 (not an extra)."""
    result: dict[int, dict[tuple[str, str, str], int] | None] = {}
    for account_id, positions in broker.items():
        if positions is None:
            result[account_id] = None
            continue
        netted = dict(positions)
        for (other_account, symbol, exchange, product), units in others.items():
            if other_account == account_id and units:
                key = (symbol, exchange, product)
                netted[key] = netted.get(key, 0) - units
        result[account_id] = netted
    return result


def compare(
    intended: Mapping[Key, int],
    broker: Mapping[int, Mapping[tuple[str, str, str], int] | None],
    *,
    run_symbols: Iterable[tuple[str, str]],
    accepted: Iterable[tuple[Key, int, int]] = (),
) -> list[MirrorRow]:
    """The run's rows, sorted by account then symbol.

    ``intended``: the run's signed units per key (zero entries kept: a leg fully exited). ``broker``:
    per account of the run, its positions by (symbol, exchange, product), or None when the snapshot is
    unknown (stale, never synced). A broker position is an "extra" only for (symbol, exchange) the run
    trades; every other broker position is not this run's business. ``accepted``: (key, broker
    quantity, intended quantity) a person accepted; a drift with exactly those quantities is shown as
    accepted, and becomes a drift again when either changes."""
    symbols = set(run_symbols)
    acceptances = {(key, b, i) for key, b, i in accepted}
    keys = set(intended)
    for account_id, positions in broker.items():
        for (symbol, exchange, product), quantity in (positions or {}).items():
            if quantity and (symbol, exchange) in symbols:
                keys.add((account_id, symbol, exchange, product))
    rows = []
    for key in sorted(keys):
        account_id, symbol, exchange, product = key
        want = intended.get(key, 0)
        positions = broker.get(account_id)
        held = None if positions is None else positions.get((symbol, exchange, product), 0)
        kind = classify(want, held)
        is_accepted = kind not in ("ok", "unknown") and (key, held, want) in acceptances
        rows.append(MirrorRow(account_id, symbol, exchange, product, want, held, kind, is_accepted))
    return rows


__all__ = [
    "MAX_MULTIPLIER",
    "ORDER_TYPES",
    "SIDES",
    "AccountLots",
    "DriftKind",
    "Key",
    "MirrorRow",
    "account_lots",
    "classify",
    "compare",
    "net_of_others",
    "order_slices",
    "parse_multiplier",
    "symbol_lot_size",
]
