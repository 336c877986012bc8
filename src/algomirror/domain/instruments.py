"""Instruments and contracts: underlyings, listed contracts, OpenAlgo symbols.

Symbols follow OpenAlgo: option ``BASE+DDMMMYY+STRIKE+CE|PE`` (whole strikes without ``.0``), future
``BASE+DDMMMYY+FUT``, index = its name (quote-only, on NSE_INDEX / BSE_INDEX).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Literal

from algomirror.domain.errors import InvalidSymbol, UnknownUnderlying

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


# --- underlyings ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UnderlyingSpec:
    """Static facts about an index underlying (MARKET-FACTS §1, PRODUCT §5.2/§5.4).

    ``strike_step`` is the near-ATM step for sanity checks and the paper exchange; the listed strikes in the
    instrument master are the truth. Lot sizes, freeze limits and expiry weekdays change over time and live
    in :mod:`algomirror.domain.contract_specs` as effective-dated data, not here.
    """

    name: str
    fo_exchange: str  # where its options/futures trade: NFO or BFO
    spot_exchange: str  # where its index quote lives: NSE_INDEX or BSE_INDEX
    equity_exchange: str  # the cash segment of the same exchange group: NSE or BSE
    strike_step: Decimal
    tick_size: Decimal


TICK_SIZE = Decimal("0.05")

UNDERLYINGS: dict[str, UnderlyingSpec] = {
    spec.name: spec
    for spec in (
        UnderlyingSpec("NIFTY", "NFO", "NSE_INDEX", "NSE", Decimal(50), TICK_SIZE),
        UnderlyingSpec("BANKNIFTY", "NFO", "NSE_INDEX", "NSE", Decimal(100), TICK_SIZE),
        UnderlyingSpec("FINNIFTY", "NFO", "NSE_INDEX", "NSE", Decimal(50), TICK_SIZE),
        UnderlyingSpec("MIDCPNIFTY", "NFO", "NSE_INDEX", "NSE", Decimal(25), TICK_SIZE),
        UnderlyingSpec("SENSEX", "BFO", "BSE_INDEX", "BSE", Decimal(100), TICK_SIZE),
        UnderlyingSpec("BANKEX", "BFO", "BSE_INDEX", "BSE", Decimal(100), TICK_SIZE),
    )
}


def underlying_spec(name: str) -> UnderlyingSpec:
    """The spec of an index underlying. Raises :class:`UnknownUnderlying` for anything else."""
    try:
        return UNDERLYINGS[name.upper()]
    except KeyError:
        raise UnknownUnderlying(f"unknown underlying {name!r}") from None


@dataclass(frozen=True, slots=True)
class ExchangeMapping:
    """Where an instrument's derivatives, cash and spot quote live (PRODUCT §5.2)."""

    fo: str
    equity: str
    spot: str
    expiry_list: str  # the exchange to ask /expiry on (the F&O one)


def exchanges_for(instrument: str) -> ExchangeMapping:
    """PRODUCT §5.2 mapping: NIFTY → (NFO, NSE, NSE_INDEX, NFO). Raises :class:`UnknownUnderlying`."""
    spec = underlying_spec(instrument)
    return ExchangeMapping(spec.fo_exchange, spec.equity_exchange, spec.spot_exchange, spec.fo_exchange)


def option_exchange_for(spot_exchange: str) -> str:
    """OpenAlgo's options exchange for an underlying's exchange: NSE* → NFO, BSE* → BFO, else the same."""
    upper = spot_exchange.upper()
    if upper.startswith("NSE"):
        return "NFO"
    if upper.startswith("BSE"):
        return "BFO"
    return upper


# --- expiry strings ---------------------------------------------------------------------------------------

MONTHS: tuple[str, ...] = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_MONTH_INDEX = {name: i + 1 for i, name in enumerate(MONTHS)}
_COMPACT_RE = re.compile(r"^(\d{2})([A-Z]{3})(\d{2})$")
_DASHED_RE = re.compile(r"^(\d{2})-([A-Z]{3})-(\d{2})$")


def format_expiry(day: date) -> str:
    """``DDMMMYY`` upper-case, as in symbols and the options endpoints: 2025-11-25 → ``25NOV25``."""
    return f"{day.day:02d}{MONTHS[day.month - 1]}{day.year % 100:02d}"


def format_expiry_dashed(day: date) -> str:
    """``DD-MMM-YY`` upper-case, as in /expiry, /symbol and /search: 2025-11-25 → ``25-NOV-25``."""
    return f"{day.day:02d}-{MONTHS[day.month - 1]}-{day.year % 100:02d}"


def _make_date(dd: str, mmm: str, yy: str, text: str) -> date:
    month = _MONTH_INDEX.get(mmm)
    if month is None:
        raise InvalidSymbol(f"bad month in expiry {text!r}")
    try:
        return date(2000 + int(yy), month, int(dd))
    except ValueError:
        raise InvalidSymbol(f"impossible expiry date {text!r}") from None


def parse_expiry(text: str) -> date:
    """Parse ``DDMMMYY`` (upper-case, as sent; years are 20YY). Raises :class:`InvalidSymbol`."""
    match = _COMPACT_RE.match(text)
    if match is None:
        raise InvalidSymbol(f"expiry {text!r} is not DDMMMYY")
    dd, mmm, yy = match.groups()
    return _make_date(dd, mmm, yy, text=text)


def parse_expiry_dashed(text: str) -> date:
    """Parse ``DD-MMM-YY`` (upper-case). Raises :class:`InvalidSymbol`."""
    match = _DASHED_RE.match(text)
    if match is None:
        raise InvalidSymbol(f"expiry {text!r} is not DD-MMM-YY")
    dd, mmm, yy = match.groups()
    return _make_date(dd, mmm, yy, text=text)


def dashed_to_compact(text: str) -> str:
    """``25-NOV-25`` → ``25NOV25`` (validated). Raises :class:`InvalidSymbol`."""
    return format_expiry(parse_expiry_dashed(text))


def compact_to_dashed(text: str) -> str:
    """``25NOV25`` → ``25-NOV-25`` (validated). Raises :class:`InvalidSymbol`."""
    return format_expiry_dashed(parse_expiry(text))


# --- symbols ----------------------------------------------------------------------------------------------

SYMBOL_RE = re.compile(
    r"^(.+?)(\d{2})(JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC)(\d{2})(?:FUT|(\d+(?:\.\d+)?)(CE|PE))$"
)
OptionType = Literal["CE", "PE"]


def format_strike(strike: Decimal | int | str) -> str:
    """Strike text for a symbol: whole strikes without ``.0`` (``26000``), fractional in natural text
    (``292.5``). Raises :class:`InvalidSymbol` for a non-positive or non-finite strike."""
    value = Decimal(strike)
    if not value.is_finite() or value <= 0:
        raise InvalidSymbol(f"bad strike {strike!r}")
    if value == value.to_integral_value():
        return str(int(value))
    text = format(value.normalize(), "f")
    return text


def option_symbol(base: str, expiry: date, strike: Decimal | int | str, option_type: str) -> str:
    """``BASE+DDMMMYY+STRIKE+CE|PE``: (NIFTY, 2025-12-30, 26000, CE) → ``NIFTY30DEC2526000CE``.

    Raises :class:`InvalidSymbol` for an empty base, a bad strike or an option type other than CE/PE.
    """
    if option_type not in ("CE", "PE"):
        raise InvalidSymbol(f"option type must be CE or PE, not {option_type!r}")
    if not base:
        raise InvalidSymbol("empty base")
    return f"{base.upper()}{format_expiry(expiry)}{format_strike(strike)}{option_type}"


def future_symbol(base: str, expiry: date) -> str:
    """``BASE+DDMMMYY+FUT``: (NIFTY, 2025-11-25) → ``NIFTY25NOV25FUT``. Raises :class:`InvalidSymbol`."""
    if not base:
        raise InvalidSymbol("empty base")
    return f"{base.upper()}{format_expiry(expiry)}FUT"


@dataclass(frozen=True, slots=True)
class ParsedSymbol:
    """The parts of a derivative symbol. ``strike`` is None for a future."""

    base: str
    expiry: date
    instrument_type: Literal["CE", "PE", "FUT"]
    strike: Decimal | None


def parse_symbol(symbol: str) -> ParsedSymbol | None:
    """Split an OpenAlgo future/option symbol with the protocol's month-anchored regex.

    Returns None for anything that is not a future/option symbol (an index, an equity, a lower-case or
    impossible date); symbols are matched exactly, so callers must not upper-case them first.
    """
    match = SYMBOL_RE.match(symbol)
    if match is None:
        return None
    base, dd, mmm, yy, strike, option_type = match.groups()
    try:
        expiry = _make_date(dd, mmm, yy, text=symbol)
    except InvalidSymbol:
        return None
    if strike is None:
        return ParsedSymbol(base, expiry, "FUT", None)
    kind: Literal["CE", "PE"] = "CE" if option_type == "CE" else "PE"
    return ParsedSymbol(base, expiry, kind, Decimal(strike))
