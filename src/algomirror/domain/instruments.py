"""Instruments and contracts: underlyings, listed contracts, OpenAlgo symbols.

Symbols follow OpenAlgo: option ``BASE+DDMMMYY+STRIKE+CE|PE`` (whole strikes without ``.0``), future
``BASE+DDMMMYY+FUT``, index = its name (quote-only, on NSE_INDEX / BSE_INDEX).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Literal

InstrumentType = Literal["CE", "PE", "FUT", "INDEX", "EQ"]


@dataclass(frozen=True, slots=True)
class Contract:
    """One listed instrument, as the instrument master (and OpenAlgo's /symbol) describes it."""

    symbol: str
    name: str  # the underlying / base, e.g. NIFTY
    exchange: str  # NFO, BFO, NSE_INDEX, BSE_INDEX, NSE, BSE
    instrument_type: InstrumentType
    expiry: date | None
    strike: Decimal | None
    lot_size: int
    tick_size: Decimal
    freeze_qty: int
