"""The paper exchange's margin model: what an account's positions and open orders block (rupees, Decimal).

Rules (documented in docs/simulator.md):

* **Long options** block their premium: quantity × price (the average for a position, the reference
  price for an order).
* **Short options** block a per-lot margin from the seeds' defaults (PRODUCT.md §9.1, "other day"
  column): NIFTY/BANKNIFTY ₹2,50,000 per lot sold on one side, ₹3,20,000 per CE+PE pair; SENSEX
  ₹2,20,000 / ₹2,90,000.
* **Hedge benefit**: per (underlying, expiry, option type), short lots covered by long lots of the same
  underlying, expiry and type block only ``hedged_fraction`` (default 25 %) of the one-side rate. The
  uncovered short lots are then paired CE against PE (pair rate) and the rest pay the one-side rate.
* **Premium-only shorts** (``short_option_premium_only``, the ``openalgo-paper`` profile): a short option
  blocks quantity × price like a long one, as OpenAlgo's own paper mode does.
* **Futures** block the futures rate per lot on either side (NIFTY ₹2,15,000, SENSEX ₹1,85,000).
* **Equity** blocks quantity × price ÷ leverage (MIS 5×, CNC 1×).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal

from algomirror.domain.instruments import Contract

PAISA = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class MarginRates:
    """Per-lot margins in rupees."""

    single: Decimal
    pair: Decimal
    futures: Decimal


def _default_rates() -> dict[str, MarginRates]:
    nifty = MarginRates(Decimal(250_000), Decimal(320_000), Decimal(215_000))
    sensex = MarginRates(Decimal(220_000), Decimal(290_000), Decimal(185_000))
    return {"NIFTY": nifty, "BANKNIFTY": nifty, "SENSEX": sensex}


@dataclass(frozen=True, slots=True)
class MarginConfig:
    rates: dict[str, MarginRates] = field(default_factory=_default_rates)
    # Underlyings without a row use NIFTY's rates.
    fallback: str = "NIFTY"
    hedged_fraction: Decimal = Decimal("0.25")
    equity_leverage: dict[str, Decimal] = field(
        default_factory=lambda: {"MIS": Decimal(5), "CNC": Decimal(1), "NRML": Decimal(1)}
    )
    # OpenAlgo's own paper mode: a short option blocks its premium (quantity × price) and nothing else.
    short_option_premium_only: bool = False

    def rates_for(self, name: str) -> MarginRates:
        return self.rates.get(name) or self.rates[self.fallback]


@dataclass(frozen=True, slots=True)
class Leg:
    """One position or hypothetical fill: signed quantity (units), price per unit (rupees)."""

    contract: Contract
    quantity: int
    price: Decimal
    product: str = "NRML"


def net_legs(legs: list[Leg]) -> list[Leg]:
    """Net legs of the same instrument and product (a position and an order reducing it offset). A net long
    keeps the quantity-weighted price of its long legs (what the premium cost or will cost)."""
    groups: dict[tuple[str, str, str], list[Leg]] = {}
    for leg in legs:
        groups.setdefault((leg.contract.symbol, leg.contract.exchange, leg.product), []).append(leg)
    out: list[Leg] = []
    for group in groups.values():
        if len(group) == 1:
            out.append(group[0])
            continue
        qty = sum(x.quantity for x in group)
        side = [x for x in group if (x.quantity > 0) == (qty > 0) and x.quantity != 0] or group
        weight = sum(abs(x.quantity) for x in side)
        price = sum((abs(x.quantity) * x.price for x in side), Decimal(0)) / weight if weight else Decimal(0)
        out.append(Leg(group[0].contract, qty, price, group[0].product))
    return out


def portfolio_margin(legs: list[Leg], config: MarginConfig) -> Decimal:
    """The margin (rupees, to the paisa) the given legs block together, after netting same-instrument legs.
    Pure; never raises for valid legs."""
    legs = net_legs(legs)
    total = Decimal(0)
    # (name, expiry, type) -> [short lots, long lots]
    option_groups: dict[tuple[str, date | None, str], list[Decimal]] = defaultdict(
        lambda: [Decimal(0), Decimal(0)]
    )
    for leg in legs:
        if leg.quantity == 0:
            continue
        c = leg.contract
        kind = c.instrument_type
        if kind in ("CE", "PE"):
            lots = Decimal(abs(leg.quantity)) / Decimal(max(c.lot_size, 1))
            group = option_groups[(c.name, c.expiry, kind)]
            if leg.quantity < 0 and config.short_option_premium_only:
                total += abs(leg.quantity) * leg.price  # premium only: no per-lot rate, no hedge benefit
            elif leg.quantity > 0:
                total += abs(leg.quantity) * leg.price
                group[1] += lots
            else:
                group[0] += lots
        elif kind == "FUT":
            lots = Decimal(abs(leg.quantity)) / Decimal(max(c.lot_size, 1))
            total += lots * config.rates_for(c.name).futures
        else:
            leverage = config.equity_leverage.get(leg.product, Decimal(1))
            total += abs(leg.quantity) * leg.price / leverage
    # Uncovered short lots per (name, expiry) and type, for CE/PE pairing.
    uncovered: dict[tuple[str, date | None], dict[str, Decimal]] = defaultdict(
        lambda: {"CE": Decimal(0), "PE": Decimal(0)}
    )
    for (name, expiry, option_type), (short_lots, long_lots) in option_groups.items():
        if short_lots <= 0:
            continue
        rates = config.rates_for(name)
        covered = min(short_lots, long_lots)
        total += covered * rates.single * config.hedged_fraction
        uncovered[(name, expiry)][option_type] += short_lots - covered
    for (name, _expiry), sides in uncovered.items():
        rates = config.rates_for(name)
        pairs = min(sides["CE"], sides["PE"])
        singles = sides["CE"] + sides["PE"] - 2 * pairs
        total += pairs * rates.pair + singles * rates.single
    return total.quantize(PAISA, rounding=ROUND_HALF_UP)
