"""Ready-made strategy templates (PRODUCT §4.3): leg definitions only, NIFTY by default.

"Use template" opens the create form prefilled with these legs; nothing here is stored until the
trader saves the form.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LegSpec:
    """One leg of a ready template, in the builder's terms (option type CE/PE/FUT/EQ)."""

    action: str
    option_type: str
    strike_selection: str = "ATM"
    strike_offset: int = 0
    lots: int = 1
    expiry: str = "current_week"
    instrument: str = "NIFTY"


@dataclass(frozen=True, slots=True)
class ReadyTemplate:
    """A named set of legs offered under "From template"."""

    key: str
    name: str
    description: str
    legs: tuple[LegSpec, ...]


READY_TEMPLATES: dict[str, ReadyTemplate] = {
    t.key: t
    for t in (
        ReadyTemplate(
            "short_straddle",
            "Short straddle",
            "Sell the ATM call and the ATM put: collects the most premium, unlimited risk both ways.",
            (LegSpec("SELL", "CE"), LegSpec("SELL", "PE")),
        ),
        ReadyTemplate(
            "short_strangle",
            "Short strangle",
            "Sell an OTM call and an OTM put two strikes out: less premium, a wider range than a straddle.",
            (LegSpec("SELL", "CE", "OTM", 2), LegSpec("SELL", "PE", "OTM", 2)),
        ),
        ReadyTemplate(
            "iron_condor",
            "Iron condor",
            "A short strangle with bought wings further out: the risk is capped on both sides.",
            # Hedges first: they are bought before the shorts are sold (PRODUCT §5.9).
            (
                LegSpec("BUY", "CE", "OTM", 4),
                LegSpec("BUY", "PE", "OTM", 4),
                LegSpec("SELL", "CE", "OTM", 2),
                LegSpec("SELL", "PE", "OTM", 2),
            ),
        ),
        ReadyTemplate(
            "bull_put_spread",
            "Bull put spread",
            "Sell a put near the money and buy a lower put: a credit that keeps its premium above the short.",
            (LegSpec("BUY", "PE", "OTM", 3), LegSpec("SELL", "PE", "OTM", 1)),
        ),
    )
}


__all__ = ["READY_TEMPLATES", "LegSpec", "ReadyTemplate"]
