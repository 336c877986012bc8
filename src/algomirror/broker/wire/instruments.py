"""Instrument look-ups: symbol and search rows, expiries, option symbol and chain, margin."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, Self

from algomirror.broker.wire.parsing import (
    _dec,
    _ident,
    _int_from,
    _list,
    _malformed,
    _money,
    _obj,
    _orderid,
    _qty,
    _rows,
    _text,
    parse_expiry,
)
from algomirror.domain.money import to_decimal


@dataclass(frozen=True, slots=True)
class SymbolInfo:
    """A /symbol or /search row. ``freeze_qty`` ≤ ``lotsize`` means unknown (OpenAlgo reports 1)."""

    symbol: str
    exchange: str
    name: str
    brsymbol: str
    brexchange: str
    token: str
    expiry: date | None
    strike: Decimal | None
    lotsize: int | None
    instrumenttype: str
    tick_size: Decimal | None
    freeze_qty: int | None

    @classmethod
    def parse_row(cls, row: Mapping[str, Any], endpoint: str = "symbol") -> Self:
        return cls(
            symbol=_ident(row, "symbol", endpoint),
            exchange=_text(row.get("exchange")),
            name=_text(row.get("name")),
            brsymbol=_text(row.get("brsymbol")),
            brexchange=_text(row.get("brexchange")),
            token=_orderid(row.get("token")) or "",
            expiry=parse_expiry(row.get("expiry")),
            strike=_dec(row, "strike"),
            lotsize=_int_from(row.get("lotsize")),
            instrumenttype=_text(row.get("instrumenttype")),
            tick_size=_dec(row, "tick_size"),
            freeze_qty=_int_from(row.get("freeze_qty")),
        )

    @property
    def known_freeze_qty(self) -> int | None:
        if self.freeze_qty is None or self.lotsize is None or self.freeze_qty <= self.lotsize:
            return None
        return self.freeze_qty

    @classmethod
    def parse(cls, payload: Mapping[str, Any]) -> Self:
        return cls.parse_row(_obj(payload, "data", "symbol"))

    @staticmethod
    def parse_search(payload: Mapping[str, Any]) -> tuple[SymbolInfo, ...]:
        return tuple(SymbolInfo.parse_row(row, "search") for row in _rows(payload, "data", "search"))


def parse_expiries(payload: Mapping[str, Any]) -> tuple[date, ...]:
    """The /expiry list (``DD-MMM-YY``) -> ascending dates; an unparseable entry is malformed."""
    dates = []
    for item in _list(payload, "data", "expiry"):
        parsed = parse_expiry(item)
        if parsed is None:
            raise _malformed("expiry", f"unreadable expiry {item!r}")
        dates.append(parsed)
    return tuple(sorted(dates))


@dataclass(frozen=True, slots=True)
class OptionSymbol:
    symbol: str
    exchange: str
    lotsize: int | None
    tick_size: Decimal | None
    freeze_qty: int | None
    underlying_ltp: Decimal | None

    @classmethod
    def parse(cls, payload: Mapping[str, Any]) -> Self:
        return cls(
            symbol=_ident(payload, "symbol", "optionsymbol"),
            exchange=_text(payload.get("exchange")),
            lotsize=_int_from(payload.get("lotsize")),
            tick_size=_dec(payload, "tick_size"),
            freeze_qty=_int_from(payload.get("freeze_qty")),
            underlying_ltp=_dec(payload, "underlying_ltp"),
        )


@dataclass(frozen=True, slots=True)
class ChainLeg:
    symbol: str
    label: str
    ltp: Decimal | None
    bid: Decimal | None
    ask: Decimal | None
    bid_qty: int | None
    ask_qty: int | None
    open: Decimal | None
    high: Decimal | None
    low: Decimal | None
    prev_close: Decimal | None
    volume: int | None
    oi: int | None
    lotsize: int | None
    tick_size: Decimal | None
    implied_volatility: Decimal | None = None
    delta: Decimal | None = None
    gamma: Decimal | None = None
    theta: Decimal | None = None
    vega: Decimal | None = None

    @classmethod
    def parse_leg(cls, row: object) -> Self | None:
        if not isinstance(row, Mapping):
            return None
        return cls(
            symbol=_ident(row, "symbol", "optionchain"),
            label=_text(row.get("label")),
            ltp=_dec(row, "ltp"),
            bid=_dec(row, "bid"),
            ask=_dec(row, "ask"),
            bid_qty=_qty(row, "bid_qty"),
            ask_qty=_qty(row, "ask_qty"),
            open=_dec(row, "open"),
            high=_dec(row, "high"),
            low=_dec(row, "low"),
            prev_close=_dec(row, "prev_close"),
            volume=_qty(row, "volume"),
            oi=_qty(row, "oi"),
            lotsize=_int_from(row.get("lotsize")),
            tick_size=_dec(row, "tick_size"),
            implied_volatility=_dec(row, "implied_volatility"),
            delta=_dec(row, "delta"),
            gamma=_dec(row, "gamma"),
            theta=_dec(row, "theta"),
            vega=_dec(row, "vega"),
        )


@dataclass(frozen=True, slots=True)
class ChainRow:
    strike: Decimal
    ce: ChainLeg | None
    pe: ChainLeg | None


@dataclass(frozen=True, slots=True)
class OptionChain:
    underlying: str
    underlying_ltp: Decimal | None
    underlying_prev_close: Decimal | None
    expiry_date: date | None
    atm_strike: Decimal | None
    chain: tuple[ChainRow, ...]
    forward_price: Decimal | None = None

    @classmethod
    def parse(cls, payload: Mapping[str, Any]) -> Self:
        rows = []
        for row in _rows(payload, "chain", "optionchain"):
            strike = to_decimal(row.get("strike"))
            if strike is None:
                raise _malformed("optionchain", "chain row without a strike")
            rows.append(
                ChainRow(
                    strike=strike, ce=ChainLeg.parse_leg(row.get("ce")), pe=ChainLeg.parse_leg(row.get("pe"))
                )
            )
        return cls(
            underlying=_text(payload.get("underlying")),
            underlying_ltp=_dec(payload, "underlying_ltp"),
            underlying_prev_close=_dec(payload, "underlying_prev_close"),
            expiry_date=parse_expiry(payload.get("expiry_date")),
            atm_strike=_dec(payload, "atm_strike"),
            chain=tuple(rows),
            forward_price=_dec(payload, "forward_price"),
        )


@dataclass(frozen=True, slots=True)
class Margin:
    total_margin_required: Decimal | None
    span_margin: Decimal | None
    exposure_margin: Decimal | None

    @classmethod
    def parse(cls, payload: Mapping[str, Any]) -> Self:
        data = _obj(payload, "data", "margin")
        return cls(
            total_margin_required=_money(data, "total_margin_required"),
            span_margin=_money(data, "span_margin"),
            exposure_margin=_money(data, "exposure_margin"),
        )
