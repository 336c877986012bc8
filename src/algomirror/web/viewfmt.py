"""HTML formatting of amounts, totals and table cells for the dashboard and book pages.

Plain functions returning ``Markup`` (registered as Jinja filters by the dashboard blueprint): the
live fragments render hundreds of cells every few seconds, and a Python call per cell is several times
cheaper than a Jinja macro. Unknown values (None) render as "—" with a tooltip, never as 0.
"""

# ruff: noqa: S704 - every Markup() below wraps text built here from escape()d values, ints, Decimals
# and the digits of format_inr/strftime; f-strings are used because Markup.format is ~3x slower per cell.

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from markupsafe import Markup, escape

from algomirror.domain.money import format_inr
from algomirror.domain.timeutil import to_ist
from algomirror.web.queries import Column, Subtotal, Sum

UNKNOWN = Markup('<span class="unknown" title="unknown">—</span>')
SIGNED_KEYS = frozenset({"pnl", "realized_pnl", "unrealized_pnl", "m2m_realized", "m2m_unrealized"})
# A MARKET order has neither a limit nor a trigger price: the 0 (or NULL) stored for it is no price.
MARKET_PRICELESS_KEYS = frozenset({"price", "trigger_price"})
NO_PRICE = Markup('<span class="unknown" title="none for a market order">—</span>')


def _sign_class(value: Decimal) -> str:
    return "positive" if value > 0 else ("negative" if value < 0 else "zero")


def amount(value: Decimal | None, signed: bool = False) -> Markup:
    """₹ with Indian grouping; ``signed`` colours it by sign."""
    if value is None:
        return UNKNOWN
    text = format_inr(value)
    if signed:
        return Markup(f'<span class="{_sign_class(value)}">{text}</span>')
    return Markup(text)


def total(value: Sum, signed: bool = False) -> Markup:
    """A :class:`Sum`: "—" when nothing is known, a starred figure when some values were unknown."""
    known = value.value
    if known is None:
        return Markup(f'<span class="unknown" title="unknown: {value.unknown} value(s) missing">—</span>')
    html = amount(known, signed)
    if value.partial:
        html += Markup(
            f'<span class="partial" title="{value.unknown} value(s) unknown, not included">*</span>'
        )
    return html


def pct(value: Decimal | None) -> Markup:
    """A percentage, coloured by sign; unknown for None."""
    if value is None:
        return UNKNOWN
    return Markup(f'<span class="{_sign_class(value)}">{value}%</span>')


def short_time(value: datetime | None) -> Markup:
    """An instant as IST "24 Nov 09:15:02"; unknown for None."""
    if value is None:
        return UNKNOWN
    return Markup(to_ist(value).strftime("%d %b %H:%M:%S"))


def cell(value: Any, kind: str) -> Markup:
    """One table cell's content for a column ``kind`` (see :class:`~algomirror.web.queries.Column`)."""
    if kind == "money":
        return amount(value)
    if kind == "pnl":
        return amount(value, True)
    if kind == "pct":
        return pct(value)
    if kind == "time":
        return short_time(value)
    if value is None:
        return UNKNOWN
    if kind == "side":
        return Markup(f'<span class="side side-{escape(str(value).lower())}">{escape(value)}</span>')
    if kind == "status":
        text = escape(str(value).replace("_", " "))
        return Markup(f'<span class="ostatus ostatus-{escape(value)}">{text}</span>')
    return escape(value)


def row_cells(row: dict[str, Any], columns: Sequence[Column], overview_prefix: str | None = None) -> Markup:
    """All ``<td>`` of one book row. With ``overview_prefix`` (``<script root>/accounts/``) the account
    cell links to the account overview; without it the account column is left out."""
    parts: list[str] = []
    for col in columns:
        if col.key == "account":
            if overview_prefix is not None:
                name = escape(row["account"])
                parts.append(f'<td><a href="{overview_prefix}{row["account_id"]}/overview">{name}</a></td>')
            continue
        css = ' class="num"' if col.numeric else ""
        value = row.get(col.key)
        if not value and col.key in MARKET_PRICELESS_KEYS and row.get("order_type") == "MARKET":
            parts.append(f'<td{css} data-col="{col.key}">{NO_PRICE}</td>')
            continue
        parts.append(f'<td{css} data-col="{col.key}">{cell(value, col.kind)}</td>')
    return Markup("".join(parts))


def subtotal_rows(
    subtotals: Sequence[Subtotal], summary: Sequence[tuple[str, str, str]], link: str
) -> Markup:
    """The ``<tr>`` of the per-account subtotals table; ``link`` is the page URL with its query string
    (without ``account``), to which ``account=<id>`` is appended."""
    joiner = "&amp;" if "?" in link else "?"
    keys = [item[2] or "n" for item in summary]
    parts: list[str] = []
    for sub in subtotals:
        cells = "".join(
            f'<td class="num" data-key="{key}">{summary_value(sub, item)}</td>'
            for key, item in zip(keys, summary, strict=True)
        )
        href = f"{escape(link)}{joiner}account={sub.account_id}"
        parts.append(
            f'<tr data-account-id="{sub.account_id}"><th scope="row">'
            f'<a href="{href}">{escape(sub.account_name)}</a></th>{cells}</tr>'
        )
    return Markup("".join(parts))


def summary_value(sub: Subtotal, item: tuple[str, str, str]) -> Markup:
    """A subtotal cell: ``item`` is (label, source, key) from :attr:`Book.summary`."""
    _, source, key = item
    if source == "n":
        return Markup(str(sub.count))
    if source == "count":
        return Markup(str(sub.counts.get(key, 0)))
    if source == "sum":
        return total(sub.sum(key), key in SIGNED_KEYS)
    if source == "pct":
        numerator, denominator = key.split("/")
        return pct(sub.pct(numerator, denominator))
    raise ValueError(f"unknown summary source {source!r}")


# Jinja filter name -> function; each returns Markup, their arguments differ.
FILTERS: dict[str, Callable[..., Markup]] = {
    "amount": amount,
    "total": total,
    "pct": pct,
    "short_time": short_time,
    "cell": cell,
    "row_cells": row_cells,
    "subtotal_rows": subtotal_rows,
    "summary_value": summary_value,
}
