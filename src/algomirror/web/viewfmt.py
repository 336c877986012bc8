"""HTML formatting of amounts, totals and table cells for the dashboard and book pages.

Plain functions returning ``Markup`` (registered as Jinja filters by the dashboard blueprint): the
live fragments render hundreds of cells every few seconds, and a Python call per cell is several times
cheaper than a Jinja macro. Unknown values (None) render as "—" with a tooltip, never as 0.
"""

# ruff: noqa: S704 - every Markup() below wraps text built here from escape()d values, ints, Decimals
# and the digits of format_inr/strftime; f-strings are used because Markup.format is ~3x slower per cell.

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, datetime
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


def amount(value: Decimal | None, signed: bool = False, symbol: bool = True) -> Markup:
    """₹ with Indian grouping; ``signed`` colours it by sign; ``symbol=False`` leaves the ₹ out (table
    cells under a header that carries it)."""
    if value is None:
        return UNKNOWN
    text = format_inr(value, symbol=symbol)
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


def clock_time(value: datetime | None, today: date | None = None) -> Markup:
    """An instant as IST "09:15:02" when it is on ``today`` (IST), else "24 Nov 09:15"; the full date
    and time in the tooltip. Unknown for None."""
    if value is None:
        return UNKNOWN
    at = to_ist(value)
    text = at.strftime("%H:%M:%S") if at.date() == today else at.strftime("%d %b %H:%M")
    return Markup(f'<time datetime="{at.isoformat()}" title="{at:%a %d %b %Y %H:%M:%S} IST">{text}</time>')


def cell(value: Any, kind: str, today: date | None = None) -> Markup:
    """One table cell's content for a column ``kind`` (see :class:`~algomirror.web.queries.Column`).
    Amounts leave the ₹ out (the column header carries it); times are :func:`clock_time` on ``today``."""
    if kind == "money":
        return amount(value, symbol=False)
    if kind == "pnl":
        return amount(value, True, symbol=False)
    if kind == "pct":
        return pct(value)
    if kind == "time":
        return clock_time(value, today)
    if value is None:
        return UNKNOWN
    if kind == "side":
        return Markup(f'<span class="side side-{escape(str(value).lower())}">{escape(value)}</span>')
    if kind == "status":
        text = escape(str(value).replace("_", " "))
        return Markup(f'<span class="ostatus ostatus-{escape(value)}">{text}</span>')
    return escape(value)


def _cell_attrs(col: Column) -> str:
    """``class``, ``data-col``, ``data-prio`` (2 and 3 hide on narrower screens) and ``data-label`` (a
    phone's card shows it above the value) of a column's cells."""
    css = ' class="num"' if col.numeric else ""
    prio = f' data-prio="{col.priority}"' if col.priority > 1 else ""
    return f'{css} data-col="{col.key}"{prio} data-label="{escape(col.label)}"'


def row_cells(
    row: dict[str, Any],
    columns: Sequence[Column],
    overview_prefix: str | None = None,
    today: date | None = None,
) -> Markup:
    """All ``<td>`` of one book row. With ``overview_prefix`` (``<script root>/accounts/``) the account
    cell links to the account overview; without it the account column is left out. ``today`` (an IST
    date) shows today's times without their date."""
    parts: list[str] = []
    for col in columns:
        if col.key == "account":
            if overview_prefix is not None:
                name = escape(row["account"])
                parts.append(
                    f'<td class="name-cell" data-col="account"><a href="{overview_prefix}{row["account_id"]}'
                    f'/overview" title="{name}">{name}</a></td>'
                )
            continue
        attrs = _cell_attrs(col)
        value = row.get(col.key)
        if not value and col.key in MARKET_PRICELESS_KEYS and row.get("order_type") == "MARKET":
            parts.append(f"<td{attrs}>{NO_PRICE}</td>")
            continue
        html = cell(value, col.kind, today)
        reason = row.get("rejection_reason") if col.kind == "status" else None
        if reason:
            # The broker's reason sits under the status it explains (no column of its own to widen the table).
            text = escape(reason)
            html = Markup(f'{html}<small class="reason" title="{text}">{text}</small>')
        parts.append(f"<td{attrs}>{html}</td>")
    return Markup("".join(parts))


def header_cell(col: Column, inner: Markup | str, sort: str | None = None) -> Markup:
    """A book table's ``<th>`` around ``inner`` (the label or its sort link), with the column's priority,
    ``aria-sort`` when ``sort`` ("ascending"/"descending") and, for amounts, the ₹ the cells leave out."""
    css = ' class="num"' if col.numeric else ""
    prio = f' data-prio="{col.priority}"' if col.priority > 1 else ""
    aria = f' aria-sort="{sort}"' if sort else ""
    unit = ' <span class="unit">₹</span>' if col.kind in ("money", "pnl") else ""
    return Markup(f'<th scope="col"{css}{prio}{aria} data-col="{col.key}">{escape(inner)}{unit}</th>')


def column_label(col: Column) -> Markup:
    """A column's header text: its short form (``abbr``) with the full label as the tooltip, if it has one."""
    if col.abbr:
        return Markup(f'<abbr title="{escape(col.label)}">{escape(col.abbr)}</abbr>')
    return escape(col.label)


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
            f'<td class="num" data-key="{key}" data-label="{escape(item[0])}">{summary_value(sub, item)}</td>'
            for key, item in zip(keys, summary, strict=True)
        )
        href = f"{escape(link)}{joiner}account={sub.account_id}"
        name = escape(sub.account_name)
        parts.append(
            f'<tr id="sub-{sub.account_id}" data-account-id="{sub.account_id}">'
            f'<th scope="row" class="name-cell"><a href="{href}" title="{name}">{name}</a></th>{cells}</tr>'
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
    "clock_time": clock_time,
    "header_cell": header_cell,
    "column_label": column_label,
    "cell": cell,
    "row_cells": row_cells,
    "subtotal_rows": subtotal_rows,
    "summary_value": summary_value,
}
