"""Pure rules of resolving a strategy into orders (PRODUCT §4.2 preview, §5.4, §5.5, §9.1): which strike a
leg trades, which SELL legs are naked, the lot size and freeze limit with the user's fallbacks, and the
estimated margin of one account's legs from the user's margin table.

Nothing here reads a broker or the database: :mod:`algomirror.engine.resolution` passes what it read.
Money is Decimal rupees, lots and quantities int.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from algomirror.domain.contract_specs import freeze_qty, lot_size
from algomirror.domain.errors import NoRuleInForce, StrikeNotListed
from algomirror.domain.sizing import MarginRates
from algomirror.domain.strikes import atm_from_listed, atm_strike, strike_for_offset

_TWO = Decimal(2)


@dataclass(frozen=True, slots=True)
class LegShape:
    """What the rules need of a leg: its number, instrument, side and kind (CE, PE or FUT)."""

    number: int
    instrument: str
    action: str
    kind: str


def atm_for(spot: Decimal, step: Decimal, listed: Sequence[Decimal]) -> Decimal:
    """The ATM strike: step × ⌊spot/step + ½⌋ when that strike is listed (or nothing is listed), else the
    listed strike nearest the spot (listed strikes are the truth, PRODUCT §5.4)."""
    atm = atm_strike(spot, step)
    if not listed or atm in listed:
        return atm
    return atm_from_listed(spot, listed)


def pick_strike(
    selection: str,
    *,
    option_type: str,
    offset: int,
    strike_price: Decimal | None,
    listed: Sequence[Decimal],
    atm: Decimal,
) -> Decimal:
    """The strike of an ATM / ITM k / OTM k / strike_price leg (premium_near is priced separately).

    Raises :class:`StrikeNotListed` for a target outside the listed strikes or an unlisted exact strike,
    ValueError for an unknown selection or a missing strike price.
    """
    if selection == "strike_price":
        if strike_price is None:
            raise ValueError("the leg has no strike price")
        if strike_price not in listed:
            raise StrikeNotListed(f"strike {strike_price.normalize():f} is not listed for this expiry")
        return strike_price
    if selection == "ATM":
        return strike_for_offset(listed, atm, option_type, "ATM")
    if selection in ("ITM", "OTM"):
        return strike_for_offset(listed, atm, option_type, "ITM" if selection == "ITM" else "OTM", offset)
    raise ValueError(f"unknown strike selection {selection!r}")


def naked_shorts(legs: Sequence[LegShape]) -> set[int]:
    """Numbers of the SELL option legs without a BUY leg of the same instrument and option type."""
    hedged = {(leg.instrument, leg.kind) for leg in legs if leg.action == "BUY" and leg.kind != "FUT"}
    return {
        leg.number
        for leg in legs
        if leg.action == "SELL" and leg.kind != "FUT" and (leg.instrument, leg.kind) not in hedged
    }


@dataclass(frozen=True, slots=True)
class ContractSize:
    """A leg's lot size and freeze limit (units) and where each came from, with a mismatch warning."""

    lot_size: int
    freeze: int | None
    source: str
    warning: str | None = None


def freeze_limit(base: str, today: date, lot: int, settings_freeze: int | None) -> int | None:
    """The freeze limit (units per order) of ``base`` on ``today`` that both the preview and the orders
    slice by (PRODUCT §5.8): the contract data's in force, else the user's instrument settings'
    (``settings_freeze``); None = unknown (one order). A limit of one lot (``lot`` units) or less
    means "unknown" (MARKET-FACTS §4)."""
    try:
        freeze: int | None = freeze_qty(base, today)
    except NoRuleInForce:
        freeze = settings_freeze
    if freeze is not None and freeze <= lot:
        return None
    return freeze


def contract_size(
    base: str,
    expiry: date,
    today: date,
    *,
    next_month: bool,
    chain_lot: int | None = None,
    settings_lot: int | None = None,
    settings_next_lot: int | None = None,
    settings_freeze: int | None = None,
) -> ContractSize:
    """Lot size and freeze of ``base``'s contract expiring ``expiry`` (PRODUCT §5.5): the contract data
    in force (``domain.contract_specs``), else the broker's instrument data (``chain_lot``), else the
    user's settings (``next_month_lot_size`` for a ``next_month`` leg when set, else ``lot_size``).
    Raises ValueError when the lot size is unknown everywhere (the leg fails). The freeze limit is the
    contract data's, else the settings'; None = unknown (one order per leg)."""
    lot: int | None
    try:
        lot, source = lot_size(base, expiry), "contract data"
    except NoRuleInForce:
        lot, source = None, ""
    if lot is None and chain_lot is not None and chain_lot > 0:
        lot, source = chain_lot, "instrument data"
    fallback = settings_next_lot if next_month and settings_next_lot else settings_lot
    if lot is None and fallback:
        lot, source = fallback, "your instrument settings"
    if lot is None:
        raise ValueError(f"lot size of {base} {expiry:%d %b %Y} is unknown (no contract data, no settings)")
    freeze = freeze_limit(base, today, lot, settings_freeze)
    warning = None
    if fallback and source != "your instrument settings" and fallback != lot:
        warning = f"your instrument settings say lot size {fallback}; the contract's is {lot}"
    return ContractSize(lot, freeze, source, warning)


@dataclass(frozen=True, slots=True)
class SizedLeg:
    """One leg of one account as sized: its shape, lots, lot size, LTP (None = unknown) and whether
    today is its contract's expiry day."""

    shape: LegShape
    lots: int
    lot_size: int
    ltp: Decimal | None
    expiry_day: bool


def estimate_margins(legs: Sequence[SizedLeg], rates: Mapping[str, MarginRates]) -> dict[int, Decimal | None]:
    """Estimated margin in rupees per leg number for one account, from the user's table (PRODUCT §9.1).

    SELL options of an instrument that sells both CE and PE are charged the pair rate, half on each SELL
    leg per lot (so a straddle of L lots costs L × M_pair); other SELL options the single-sell rate;
    futures (either side) the futures rate; BUY options their premium (LTP × quantity), else the table's
    buying premium per lot. The expiry-day column applies when today is the contract's expiry date.
    None: the instrument has no margin row (not estimated).
    """
    sells = {(leg.shape.instrument, leg.shape.kind) for leg in legs if leg.shape.action == "SELL"}
    out: dict[int, Decimal | None] = {}
    for leg in legs:
        shape = leg.shape
        table = rates.get(shape.instrument)
        if leg.lots <= 0:
            out[shape.number] = Decimal(0)
            continue
        if table is None:
            out[shape.number] = None
            continue
        if shape.kind == "FUT":
            out[shape.number] = table.rate("futures", leg.expiry_day) * leg.lots
        elif shape.action == "SELL":
            other = "PE" if shape.kind == "CE" else "CE"
            if (shape.instrument, other) in sells:
                out[shape.number] = table.rate("pair_sell", leg.expiry_day) * leg.lots / _TWO
            else:
                out[shape.number] = table.rate("single_sell", leg.expiry_day) * leg.lots
        elif leg.ltp is not None and leg.ltp > 0:
            out[shape.number] = leg.ltp * leg.lots * leg.lot_size
        else:
            out[shape.number] = table.buying_premium_per_lot * leg.lots
    return out


__all__ = [
    "ContractSize",
    "LegShape",
    "SizedLeg",
    "atm_for",
    "contract_size",
    "estimate_margins",
    "freeze_limit",
    "naked_shorts",
    "pick_strike",
]
