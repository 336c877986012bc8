"""Market data replies: quotes, multiquotes, depth, history bars and intervals."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Self

from algomirror.broker.wire.parsing import (
    _dec,
    _ident,
    _malformed,
    _obj,
    _qty,
    _rows,
    _text,
    parse_gateway_time,
)
from algomirror.domain.money import to_decimal


@dataclass(frozen=True, slots=True)
class Quote:
    ltp: Decimal | None
    open: Decimal | None
    high: Decimal | None
    low: Decimal | None
    prev_close: Decimal | None
    bid: Decimal | None
    ask: Decimal | None
    volume: int | None
    oi: int | None

    @classmethod
    def parse_data(cls, data: Mapping[str, Any]) -> Self:
        return cls(
            ltp=_dec(data, "ltp"),
            open=_dec(data, "open"),
            high=_dec(data, "high"),
            low=_dec(data, "low"),
            prev_close=_dec(data, "prev_close"),
            bid=_dec(data, "bid"),
            ask=_dec(data, "ask"),
            volume=_qty(data, "volume"),
            oi=_qty(data, "oi"),
        )

    @classmethod
    def parse(cls, payload: Mapping[str, Any]) -> Self:
        return cls.parse_data(_obj(payload, "data", "quotes"))


@dataclass(frozen=True, slots=True)
class MultiQuoteItem:
    """One multiquotes result: ``quote`` on success, ``error`` (the server's text) otherwise."""

    symbol: str
    exchange: str
    quote: Quote | None
    error: str | None

    @staticmethod
    def parse_results(payload: Mapping[str, Any]) -> tuple[MultiQuoteItem, ...]:
        items = []
        for row in _rows(payload, "results", "multiquotes"):
            data = row.get("data")
            items.append(
                MultiQuoteItem(
                    symbol=_ident(row, "symbol", "multiquotes"),
                    exchange=_text(row.get("exchange")),
                    quote=Quote.parse_data(data) if isinstance(data, Mapping) else None,
                    error=None if isinstance(data, Mapping) else (_text(row.get("error")) or "no data"),
                )
            )
        return tuple(items)


@dataclass(frozen=True, slots=True)
class BookLevel:
    price: Decimal | None
    quantity: int | None


@dataclass(frozen=True, slots=True)
class Depth:
    ltp: Decimal | None
    ltq: int | None
    open: Decimal | None
    high: Decimal | None
    low: Decimal | None
    prev_close: Decimal | None
    volume: int | None
    oi: int | None
    totalbuyqty: int | None
    totalsellqty: int | None
    bids: tuple[BookLevel, ...]
    asks: tuple[BookLevel, ...]

    @classmethod
    def parse(cls, payload: Mapping[str, Any]) -> Self:
        data = _obj(payload, "data", "depth")

        def levels(key: str) -> tuple[BookLevel, ...]:
            rows = data.get(key)
            if not isinstance(rows, list):
                return ()
            return tuple(
                BookLevel(price=_dec(r, "price"), quantity=_qty(r, "quantity"))
                for r in rows
                if isinstance(r, Mapping)
            )

        return cls(
            ltp=_dec(data, "ltp"),
            ltq=_qty(data, "ltq"),
            open=_dec(data, "open"),
            high=_dec(data, "high"),
            low=_dec(data, "low"),
            prev_close=_dec(data, "prev_close"),
            volume=_qty(data, "volume"),
            oi=_qty(data, "oi"),
            totalbuyqty=_qty(data, "totalbuyqty"),
            totalsellqty=_qty(data, "totalsellqty"),
            bids=levels("bids"),
            asks=levels("asks"),
        )


@dataclass(frozen=True, slots=True)
class Candle:
    """A history bar; ``start`` is aware UTC (daily bars: 00:00 UTC of the trading date)."""

    start: datetime
    open: Decimal | None
    high: Decimal | None
    low: Decimal | None
    close: Decimal | None
    volume: int | None
    oi: int | None

    @staticmethod
    def parse_history(payload: Mapping[str, Any]) -> tuple[Candle, ...]:
        candles = []
        for row in _rows(payload, "data", "history"):
            stamp = to_decimal(row.get("timestamp"))
            if stamp is None:
                # Docs show string dates; the server sends epoch seconds. Accept both.
                start = parse_gateway_time(row.get("timestamp"))
                if start is None:
                    raise _malformed("history", "bar without a usable timestamp")
            else:
                try:
                    start = datetime.fromtimestamp(float(stamp), UTC)
                except (OverflowError, OSError, ValueError):
                    raise _malformed("history", "bar timestamp out of range") from None
            candles.append(
                Candle(
                    start=start,
                    open=_dec(row, "open"),
                    high=_dec(row, "high"),
                    low=_dec(row, "low"),
                    close=_dec(row, "close"),
                    volume=_qty(row, "volume"),
                    oi=_qty(row, "oi"),
                )
            )
        return tuple(candles)


@dataclass(frozen=True, slots=True)
class Intervals:
    seconds: tuple[str, ...] = ()
    minutes: tuple[str, ...] = ()
    hours: tuple[str, ...] = ()
    days: tuple[str, ...] = ()
    weeks: tuple[str, ...] = ()
    months: tuple[str, ...] = ()

    @classmethod
    def parse(cls, payload: Mapping[str, Any]) -> Self:
        data = _obj(payload, "data", "intervals")

        def names(key: str) -> tuple[str, ...]:
            value = data.get(key)
            return tuple(str(v) for v in value) if isinstance(value, list) else ()

        return cls(
            seconds=names("seconds"),
            minutes=names("minutes"),
            hours=names("hours"),
            days=names("days"),
            weeks=names("weeks"),
            months=names("months"),
        )

    @property
    def all(self) -> tuple[str, ...]:
        return self.seconds + self.minutes + self.hours + self.days + self.weeks + self.months
