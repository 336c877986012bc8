"""Read-side queries for the dashboard and the multi-account book pages.

Every public function takes the owner's ``user_id`` and joins ``trading_accounts`` on it: another user's
rows can never be returned, and another user's account id behaves exactly like a missing one
(:class:`NotOwned`). Each page costs a fixed number of queries (no per-account or per-row queries).

Money sums are exact on every backend: PostgreSQL sums NUMERIC, SQLite sums the integer units its money
columns store (see :class:`algomirror.db.types.Money`). A NULL amount is *unknown*: it is counted in
:attr:`Sum.unknown`, never added as 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import Select, and_, case, func, select
from sqlalchemy.engine import RowMapping
from sqlalchemy.orm import QueryableAttribute, Session
from sqlalchemy.sql.elements import ColumnElement

from algomirror.db.models import AccountFunds, ActivityLog, Holding, Order, Position, Trade, TradingAccount

OPEN_ORDER_STATUSES = ("open", "trigger_pending")
# The Orders page's status filter: choice → the stored statuses it covers.
ORDER_STATUS_FILTERS: dict[str, tuple[str, ...]] = {
    "open": OPEN_ORDER_STATUSES,
    "complete": ("complete",),
    "rejected": ("rejected",),
    "cancelled": ("cancelled",),
}
CONNECTION_ACTIONS = (
    "connection_lost",
    "connection_restored",
    "auth_failed",
    "connection_tested",
)
# A column or SQL expression usable in select/where/order_by.
SqlExpr = ColumnElement[Any] | QueryableAttribute[Any]
CENT = Decimal("0.01")
ZERO = Decimal("0.00")


class NotOwned(LookupError):
    """The account id is not one of the user's accounts (or does not exist): show "not found"."""


# ------------------------------------------------------------------------------------------ sums


@dataclass
class Sum:
    """A running total of amounts (₹) where some amounts may be unknown (NULL).

    ``value`` is the sum of the known amounts, or None when nothing is known but something is unknown
    (an empty set sums to ₹0.00, which *is* known).
    """

    known: Decimal = ZERO
    known_count: int = 0
    unknown: int = 0

    def add(self, amount: Decimal | None) -> None:
        """Add one row's amount (rupees); None counts as one unknown value."""
        if amount is None:
            self.unknown += 1
        else:
            self.known += amount
            self.known_count += 1

    def merge(self, other: Sum) -> None:
        """Add another sum's known amount and both counts into this one."""
        self.known += other.known
        self.known_count += other.known_count
        self.unknown += other.unknown

    @property
    def value(self) -> Decimal | None:
        """The known total in rupees to the paisa; None when every value was unknown."""
        if self.unknown and not self.known_count:
            return None
        return self.known.quantize(CENT, rounding=ROUND_HALF_UP)

    @property
    def partial(self) -> bool:
        """True when some, but not all, amounts were unknown: the figure is a lower bound of the truth."""
        return bool(self.unknown and self.known_count)


def percent(numerator: Decimal | None, denominator: Decimal | None) -> Decimal | None:
    """``numerator / denominator × 100`` to 2 dp; None when either is unknown or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    result = (numerator * 100 / denominator).quantize(CENT, rounding=ROUND_HALF_UP)
    return abs(result) if result == 0 else result  # no "-0.00%"


# ------------------------------------------------------------------------------------------ accounts


@dataclass
class AccountCard:
    """One account as the dashboard shows it (funds and counts from the last sync)."""

    id: int
    name: str
    broker: str
    is_primary: bool
    is_active: bool
    role: str
    status: str
    last_error: str | None
    last_error_at: datetime | None
    last_sync_at: datetime | None
    last_connected: datetime | None
    available_cash: Decimal | None = None
    collateral: Decimal | None = None
    utilised: Decimal | None = None
    m2m_realized: Decimal | None = None
    m2m_unrealized: Decimal | None = None
    funds_at: datetime | None = None
    has_funds: bool = False
    open_positions: int = 0
    open_orders: int = 0
    age_seconds: int | None = None
    stale: bool = False

    @property
    def updated_at(self) -> datetime | None:
        """When our copy of this account's books was last refreshed (sync, else the funds row)."""
        return self.last_sync_at or self.funds_at


def roles(accounts: Iterable[tuple[int, bool, bool]]) -> dict[int, str]:
    """Role labels from (id, is_primary, is_active) in creation order: "Primary", "Backup n", "Inactive"."""
    labels: dict[int, str] = {}
    backup = 0
    for account_id, is_primary, is_active in accounts:
        if not is_active:
            labels[account_id] = "Inactive"
        elif is_primary:
            labels[account_id] = "Primary"
        else:
            backup += 1
            labels[account_id] = f"Backup {backup}"
    return labels


def _account_rows(session: Session, user_id: int, account_id: int | None = None) -> Sequence[RowMapping]:
    query = (
        select(
            TradingAccount.id,
            TradingAccount.account_name,
            TradingAccount.broker,
            TradingAccount.is_primary,
            TradingAccount.is_active,
            TradingAccount.connection_status,
            TradingAccount.last_error,
            TradingAccount.last_error_at,
            TradingAccount.last_sync_at,
            TradingAccount.last_connected,
            AccountFunds.id.label("funds_id"),
            AccountFunds.available_cash,
            AccountFunds.collateral,
            AccountFunds.utilised_debits,
            AccountFunds.m2m_realized,
            AccountFunds.m2m_unrealized,
            AccountFunds.fetched_at,
        )
        .outerjoin(AccountFunds, AccountFunds.account_id == TradingAccount.id)
        .where(TradingAccount.user_id == user_id, TradingAccount.archived_at.is_(None))
        .order_by(TradingAccount.created_at, TradingAccount.id)
    )
    rows = session.execute(query).mappings().all()
    if account_id is not None:
        rows = [r for r in rows if r["id"] == account_id]
    return rows


def account_cards(
    session: Session,
    user_id: int,
    *,
    now: datetime,
    stale_after: timedelta,
    account_id: int | None = None,
) -> list[AccountCard]:
    """The user's accounts (creation order) with funds, open positions/orders counts and data age.

    Three queries whatever the number of accounts. ``stale_after`` is the age (normally two sync
    intervals) past which a card is flagged stale; an account never synced is stale. Raises
    :class:`NotOwned` when ``account_id`` is given and is not the user's.
    """
    rows = _account_rows(session, user_id)
    labels = roles((r["id"], r["is_primary"], r["is_active"]) for r in rows)
    if account_id is not None:
        rows = [r for r in rows if r["id"] == account_id]
        if not rows:
            raise NotOwned(account_id)
    owned = select(TradingAccount.id).where(TradingAccount.user_id == user_id)
    if account_id is not None:
        owned = owned.where(TradingAccount.id == account_id)
    open_positions: dict[int, int] = dict(
        session.execute(
            select(Position.account_id, func.count())
            .where(Position.account_id.in_(owned), Position.quantity != 0)
            .group_by(Position.account_id)
        )
        .tuples()
        .all()
    )
    open_orders: dict[int, int] = dict(
        session.execute(
            select(Order.account_id, func.count())
            .where(Order.account_id.in_(owned), Order.status.in_(OPEN_ORDER_STATUSES))
            .group_by(Order.account_id)
        )
        .tuples()
        .all()
    )
    cards: list[AccountCard] = []
    for r in rows:
        card = AccountCard(
            id=r["id"],
            name=r["account_name"],
            broker=r["broker"],
            is_primary=r["is_primary"],
            is_active=r["is_active"],
            role=labels[r["id"]],
            status=r["connection_status"],
            last_error=r["last_error"],
            last_error_at=r["last_error_at"],
            last_sync_at=r["last_sync_at"],
            last_connected=r["last_connected"],
            available_cash=r["available_cash"],
            collateral=r["collateral"],
            utilised=r["utilised_debits"],
            m2m_realized=r["m2m_realized"],
            m2m_unrealized=r["m2m_unrealized"],
            funds_at=r["fetched_at"],
            has_funds=r["funds_id"] is not None,
            open_positions=int(open_positions.get(r["id"], 0)),
            open_orders=int(open_orders.get(r["id"], 0)),
        )
        updated = card.updated_at
        if updated is None:
            card.stale = True
        else:
            age = now - updated
            card.age_seconds = max(0, int(age.total_seconds()))
            card.stale = age > stale_after
        cards.append(card)
    return cards


@dataclass
class DashboardTotals:
    """Sums over the active accounts' cards (inactive accounts are not synced)."""

    accounts: int = 0
    active: int = 0
    connected: int = 0
    stale: int = 0
    available_cash: Sum = field(default_factory=Sum)
    collateral: Sum = field(default_factory=Sum)
    utilised: Sum = field(default_factory=Sum)
    m2m_realized: Sum = field(default_factory=Sum)
    m2m_unrealized: Sum = field(default_factory=Sum)
    open_positions: int = 0
    open_orders: int = 0


def dashboard_totals(cards: Iterable[AccountCard]) -> DashboardTotals:
    """The dashboard's totals over ``cards``: every account is counted, only active ones are summed."""
    totals = DashboardTotals()
    for card in cards:
        totals.accounts += 1
        if not card.is_active:
            continue
        totals.active += 1
        totals.connected += card.status == "connected"
        totals.stale += card.stale
        totals.available_cash.add(card.available_cash)
        totals.collateral.add(card.collateral)
        totals.utilised.add(card.utilised)
        totals.m2m_realized.add(card.m2m_realized)
        totals.m2m_unrealized.add(card.m2m_unrealized)
        totals.open_positions += card.open_positions
        totals.open_orders += card.open_orders
    return totals


def account_choices(session: Session, user_id: int) -> list[tuple[int, str]]:
    """(id, name) of the user's accounts in creation order, for the account filter."""
    return [
        (int(r[0]), str(r[1]))
        for r in session.execute(
            select(TradingAccount.id, TradingAccount.account_name)
            .where(TradingAccount.user_id == user_id, TradingAccount.archived_at.is_(None))
            .order_by(TradingAccount.created_at, TradingAccount.id)
        ).all()
    ]


def connection_history(
    session: Session, user_id: int, account_id: int, *, limit: int = 20
) -> list[RowMapping]:
    """Latest connection events (never order actions) of one of the user's accounts, newest first."""
    query = (
        select(ActivityLog.timestamp, ActivityLog.action, ActivityLog.details)
        .join(TradingAccount, TradingAccount.id == ActivityLog.account_id)
        .where(
            TradingAccount.user_id == user_id,
            ActivityLog.account_id == account_id,
            ActivityLog.action.in_(CONNECTION_ACTIONS),
        )
        .order_by(ActivityLog.timestamp.desc(), ActivityLog.id.desc())
        .limit(limit)
    )
    return list(session.execute(query).mappings().all())


# ------------------------------------------------------------------------------------------ books


@dataclass(frozen=True)
class Column:
    """A table column: ``key`` is the row field, the sort key and the CSV header.

    The row field is ``expr`` selected as ``key`` (default: the book model's attribute named ``key``), and
    a sortable column sorts by that same expression. ``selected=False`` marks a field the query does not
    read: :func:`read_book` computes it from the row.
    """

    key: str
    label: str
    kind: str = "text"  # text | int | money | pct | time | side | status
    sortable: bool = True
    numeric: bool = False
    expr: SqlExpr | None = field(default=None, compare=False)
    selected: bool = True
    priority: int = 1
    abbr: str | None = None  # a shorter header for the table (the CSV keeps ``label``)
    table: bool = True  # False: in the CSV only (the page shows it inside another column's cell)


@dataclass
class Subtotal:
    """Aggregates of one account's rows (or of all rows, for the grand total)."""

    account_id: int | None
    account_name: str
    count: int = 0
    sums: dict[str, Sum] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def sum(self, key: str) -> Sum:
        """The running sum of column ``key`` (created empty on first use)."""
        return self.sums.setdefault(key, Sum())

    def bump(self, key: str, by: int = 1) -> None:
        """Add ``by`` to the count ``key``."""
        self.counts[key] = self.counts.get(key, 0) + by

    def merge(self, other: Subtotal) -> None:
        """Fold another subtotal's row count, sums and counts into this one."""
        self.count += other.count
        for key, value in other.sums.items():
            self.sum(key).merge(value)
        for key, n in other.counts.items():
            self.bump(key, n)

    def pct(self, numerator: str, denominator: str) -> Decimal | None:
        """Sum of ``numerator`` as a percentage of the sum of ``denominator`` (see :func:`percent`)."""
        return percent(self.sum(numerator).value, self.sum(denominator).value)


@dataclass
class BookResult:
    """A book page's data: the rows (sorted; one page when ``limit`` was given), per-account subtotals
    (every account in scope, creation order) and the grand total over all matching rows."""

    kind: str
    rows: list[dict[str, Any]]
    matched: int
    subtotals: list[Subtotal]
    total: Subtotal
    sort: str
    descending: bool
    offset: int = 0


@dataclass(frozen=True)
class SumSpec:
    """Σ ``expr`` (₹) per account, over the rows matching ``where`` (all rows when None)."""

    key: str
    expr: SqlExpr
    where: ColumnElement[bool] | None = None


@dataclass(frozen=True)
class CountSpec:
    """Number of rows per account matching ``where``."""

    key: str
    where: ColumnElement[bool]


@dataclass(frozen=True)
class Book:
    """How to read, sort and aggregate one kind of row."""

    kind: str
    title: str
    model: Any
    columns: tuple[Column, ...]
    default_sort: str
    default_descending: bool
    symbol_column: SqlExpr | None
    sums: tuple[SumSpec, ...]
    counts: tuple[CountSpec, ...]
    summary: tuple[tuple[str, str, str], ...]  # (label, source kind "sum"/"count"/"pct"/"n", key)
    extra_fields: tuple[SqlExpr, ...] = ()  # read for computed columns, not shown themselves
    fields: dict[str, SqlExpr] = field(init=False, repr=False)  # selected column key → expression
    sort_columns: dict[str, SqlExpr] = field(init=False, repr=False)  # sortable key → ORDER BY expression

    def __post_init__(self) -> None:
        # Derived once, at import: a column key the model lacks fails here (AttributeError).
        fields = {
            c.key: c.expr if c.expr is not None else getattr(self.model, c.key)
            for c in self.columns
            if c.selected
        }
        object.__setattr__(self, "fields", fields)
        object.__setattr__(self, "sort_columns", {c.key: fields[c.key] for c in self.columns if c.sortable})

    @property
    def table_columns(self) -> tuple[Column, ...]:
        """The columns the page's table shows (the CSV has them all)."""
        return tuple(c for c in self.columns if c.table)

    def query(self) -> Select[Any]:
        """The book's rows joined to their account: ``id``, ``account_id``, every selected column (as its
        key) and the extra fields. ``id`` comes first (the final sort tiebreak)."""
        model = self.model
        return select(
            model.id,
            model.account_id,
            *(expr.label(key) for key, expr in self.fields.items()),
            *self.extra_fields,
        ).join(TradingAccount, TradingAccount.id == model.account_id)


def trade_value(row: dict[str, Any]) -> Decimal | None:
    """The row's value in ₹: the broker's, else quantity × average price; None when neither is known."""
    value: Decimal | None = row["trade_value"]
    if value is None and row["average_price"] is not None:
        value = (row["average_price"] * row["quantity"]).quantize(CENT, rounding=ROUND_HALF_UP)
    return value


ACCOUNT_COL = Column("account", "Account", expr=TradingAccount.account_name)
# A trade's value: the broker's, else quantity × price (exact: a 2-dp price times an integer).
TRADE_VALUE: SqlExpr = func.coalesce(Trade.trade_value, Trade.average_price * Trade.quantity)

BOOKS: dict[str, Book] = {
    "positions": Book(
        kind="positions",
        title="Positions",
        columns=(
            ACCOUNT_COL,
            Column("symbol", "Symbol"),
            Column("exchange", "Exchange", priority=3, abbr="Exch"),
            Column("product", "Product", priority=2),
            Column("quantity", "Qty", "int", numeric=True),
            Column("average_price", "Avg price", "money", numeric=True),
            Column("ltp", "LTP", "money", numeric=True),
            Column("pnl", "P&L", "pnl", numeric=True),
            Column("realized_pnl", "Realised", "pnl", numeric=True, priority=2),
            Column("unrealized_pnl", "Unrealised", "pnl", numeric=True, priority=2),
            Column("updated_at", "Updated", "time", priority=3),
        ),
        default_sort="account",
        default_descending=False,
        symbol_column=Position.symbol,
        model=Position,
        sums=(
            SumSpec("pnl", Position.pnl),
            SumSpec("realized_pnl", Position.realized_pnl),
            SumSpec("unrealized_pnl", Position.unrealized_pnl),
        ),
        counts=(CountSpec("open", Position.quantity != 0),),
        summary=(
            ("Positions", "n", ""),
            ("Open", "count", "open"),
            ("P&L", "sum", "pnl"),
            ("Realised", "sum", "realized_pnl"),
            ("Unrealised", "sum", "unrealized_pnl"),
        ),
    ),
    "orders": Book(
        kind="orders",
        title="Orders",
        columns=(
            ACCOUNT_COL,
            Column("placed_at", "Time", "time"),
            Column("order_id", "Order id", priority=3),
            Column("symbol", "Symbol"),
            Column("exchange", "Exchange", priority=3, abbr="Exch"),
            Column("action", "Side", "side"),
            Column("order_type", "Type", priority=2),
            Column("product", "Product", priority=2),
            Column("quantity", "Qty", "int", numeric=True),
            Column("filled_quantity", "Filled", "int", numeric=True, priority=2),
            Column("price", "Price", "money", numeric=True, priority=2),
            Column("trigger_price", "Trigger", "money", numeric=True, priority=2),
            Column("average_price", "Avg price", "money", numeric=True),
            Column("status", "Status", "status"),
            Column("strategy", "Strategy", priority=3),
            Column("rejection_reason", "Reason", sortable=False, table=False),
        ),
        default_sort="placed_at",
        default_descending=True,
        symbol_column=Order.symbol,
        model=Order,
        sums=(),
        counts=(
            CountSpec("BUY", Order.action == "BUY"),
            CountSpec("SELL", Order.action == "SELL"),
            CountSpec("open", Order.status.in_(OPEN_ORDER_STATUSES)),
            CountSpec("complete", Order.status == "complete"),
            CountSpec("cancelled", Order.status == "cancelled"),
            CountSpec("rejected", Order.status == "rejected"),
        ),
        summary=(
            ("Orders", "n", ""),
            ("Buy", "count", "BUY"),
            ("Sell", "count", "SELL"),
            ("Open", "count", "open"),
            ("Complete", "count", "complete"),
            ("Cancelled", "count", "cancelled"),
            ("Rejected", "count", "rejected"),
        ),
    ),
    "trades": Book(
        kind="trades",
        title="Trades",
        columns=(
            ACCOUNT_COL,
            Column("traded_at", "Time", "time"),
            Column("order_id", "Order id", priority=3),
            Column("trade_id", "Trade id", priority=3),
            Column("symbol", "Symbol"),
            Column("exchange", "Exchange", priority=3, abbr="Exch"),
            Column("action", "Side", "side"),
            Column("product", "Product", priority=2),
            Column("quantity", "Qty", "int", numeric=True),
            Column("average_price", "Price", "money", numeric=True),
            Column("value", "Value", "money", sortable=False, numeric=True, selected=False, priority=2),
        ),
        default_sort="traded_at",
        default_descending=True,
        symbol_column=Trade.symbol,
        model=Trade,
        extra_fields=(Trade.trade_value,),
        sums=(
            SumSpec("buy_value", TRADE_VALUE, Trade.action == "BUY"),
            SumSpec("sell_value", TRADE_VALUE, Trade.action == "SELL"),
        ),
        counts=(CountSpec("BUY", Trade.action == "BUY"), CountSpec("SELL", Trade.action == "SELL")),
        summary=(
            ("Trades", "n", ""),
            ("Buys", "count", "BUY"),
            ("Sells", "count", "SELL"),
            ("Buy value", "sum", "buy_value"),
            ("Sell value", "sum", "sell_value"),
        ),
    ),
    "holdings": Book(
        kind="holdings",
        title="Holdings",
        columns=(
            ACCOUNT_COL,
            Column("symbol", "Symbol"),
            Column("exchange", "Exchange", priority=3, abbr="Exch"),
            Column("quantity", "Qty", "int", numeric=True),
            Column("average_price", "Avg price", "money", numeric=True),
            Column("current_price", "LTP", "money", numeric=True),
            Column("invested_value", "Invested", "money", numeric=True, priority=2),
            Column("current_value", "Value", "money", numeric=True, priority=2),
            Column("pnl", "P&L", "pnl", numeric=True),
            Column("pnl_percent", "P&L %", "pct", numeric=True),
            Column("updated_at", "Updated", "time", priority=3),
        ),
        default_sort="account",
        default_descending=False,
        symbol_column=Holding.symbol,
        model=Holding,
        sums=(
            SumSpec("current_value", Holding.current_value),
            SumSpec("invested_value", Holding.invested_value),
            SumSpec("pnl", Holding.pnl),
        ),
        counts=(),
        summary=(
            ("Holdings", "n", ""),
            ("Value", "sum", "current_value"),
            ("Invested", "sum", "invested_value"),
            ("P&L", "sum", "pnl"),
            ("P&L %", "pct", "pnl/invested_value"),
        ),
    ),
    "funds": Book(
        kind="funds",
        title="Funds",
        columns=(
            ACCOUNT_COL,
            Column("available_cash", "Available cash", "money", numeric=True),
            Column("collateral", "Collateral", "money", numeric=True, priority=2),
            Column("utilised_debits", "Used margin", "money", numeric=True),
            Column("m2m_realized", "Realised M2M", "pnl", numeric=True),
            Column("m2m_unrealized", "Unrealised M2M", "pnl", numeric=True),
            Column("fetched_at", "Fetched", "time", priority=3),
        ),
        default_sort="account",
        default_descending=False,
        symbol_column=None,
        model=AccountFunds,
        sums=tuple(
            SumSpec(key, getattr(AccountFunds, key))
            for key in ("available_cash", "collateral", "utilised_debits", "m2m_realized", "m2m_unrealized")
        ),
        counts=(),
        summary=(
            ("Available cash", "sum", "available_cash"),
            ("Collateral", "sum", "collateral"),
            ("Used margin", "sum", "utilised_debits"),
            ("Realised M2M", "sum", "m2m_realized"),
            ("Unrealised M2M", "sum", "m2m_unrealized"),
        ),
    ),
}


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _money_sum(expr: SqlExpr) -> ColumnElement[Any]:
    """Σ of a money column, typed as that column, so the sum comes back as an exact ``Decimal`` on
    both backends (integer units summed on SQLite, NUMERIC on PostgreSQL)."""
    return func.sum(expr, type_=expr.type)


def _money_value(raw: Any) -> Decimal:
    if raw is None:
        return ZERO
    return Decimal(raw).quantize(CENT, rounding=ROUND_HALF_UP)


def book_subtotals(
    session: Session,
    book: Book,
    account_conditions: Sequence[ColumnElement[bool]],
    row_conditions: Sequence[ColumnElement[bool]],
) -> tuple[list[Subtotal], Subtotal]:
    """Per-account subtotals and the grand total of the book rows matching ``row_conditions``, for
    every account matching ``account_conditions`` (creation order; accounts without rows get zeros).
    One query: accounts LEFT JOIN rows, grouped by account."""
    model = book.model
    columns: list[SqlExpr] = [TradingAccount.id, TradingAccount.account_name, func.count(model.id)]
    for spec in book.sums:
        expr = spec.expr if spec.where is None else case((spec.where, spec.expr))
        rows_in = func.count(model.id) if spec.where is None else func.count(case((spec.where, 1)))
        columns += [_money_sum(expr), rows_in, func.count(expr)]
    for count_spec in book.counts:
        columns.append(func.sum(case((count_spec.where, 1), else_=0)))
    query = (
        select(*columns)
        .select_from(TradingAccount)
        .outerjoin(model, and_(model.account_id == TradingAccount.id, *row_conditions))
        .where(*account_conditions)
        .group_by(TradingAccount.id, TradingAccount.account_name, TradingAccount.created_at)
        .order_by(TradingAccount.created_at, TradingAccount.id)
    )
    subtotals: list[Subtotal] = []
    total = Subtotal(None, "All accounts")
    for row in session.execute(query).all():
        sub = Subtotal(int(row[0]), str(row[1]), count=int(row[2]))
        index = 3
        for spec in book.sums:
            total_rows, known = int(row[index + 1]), int(row[index + 2])
            sub.sums[spec.key] = Sum(_money_value(row[index]), known, total_rows - known)
            index += 3
        for count_spec in book.counts:
            sub.counts[count_spec.key] = int(row[index] or 0)
            index += 1
        subtotals.append(sub)
        total.merge(sub)
    for spec in book.sums:
        total.sum(spec.key)
    return subtotals, total


def read_book(
    session: Session,
    user_id: int,
    kind: str,
    *,
    account_id: int | None = None,
    symbol: str | None = None,
    status: str | None = None,
    sort: str | None = None,
    descending: bool | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> BookResult:
    """Rows of one book across the user's accounts, with per-account subtotals and a grand total.

    ``symbol`` is a case-insensitive substring filter; ``status`` (orders only) one of
    :data:`ORDER_STATUS_FILTERS`' choices, anything else is ignored; ``sort`` must be one of the
    book's sortable keys (anything else falls back to the default sort). Subtotals and total cover
    every matching row; ``limit``/``offset`` page the returned rows. Two queries. Raises KeyError for
    an unknown ``kind`` and :class:`NotOwned` for an ``account_id`` that is not the user's.
    """
    book = BOOKS[kind]
    key = sort if sort in book.sort_columns else book.default_sort
    desc = book.default_descending if descending is None or key != sort else descending
    column = book.sort_columns[key]
    # Archived accounts are hidden from the live pages; their rows stay in the database.
    account_conditions: list[ColumnElement[bool]] = [
        TradingAccount.user_id == user_id,
        TradingAccount.archived_at.is_(None),
    ]
    if account_id is not None:
        account_conditions.append(TradingAccount.id == account_id)
    row_conditions: list[ColumnElement[bool]] = []
    needle = (symbol or "").strip().upper()
    if needle and book.symbol_column is not None:
        row_conditions.append(func.upper(book.symbol_column).like(f"%{_like_escape(needle)}%", escape="\\"))
    if kind == "orders" and status in ORDER_STATUS_FILTERS:
        row_conditions.append(Order.status.in_(ORDER_STATUS_FILTERS[status]))
    subtotals, total = book_subtotals(session, book, account_conditions, row_conditions)
    if account_id is not None and not subtotals:
        raise NotOwned(account_id)

    query = book.query().where(*account_conditions, *row_conditions)
    # NULLs last in both directions: an unknown amount is never "the largest" or "the smallest".
    nulls_last = case((column.is_(None), 1), else_=0)
    ordering = column.desc() if desc else column.asc()
    tiebreak: list[SqlExpr] = [TradingAccount.account_name]
    if book.symbol_column is not None:
        tiebreak.append(book.symbol_column)
    query = query.order_by(nulls_last, ordering, *tiebreak, query.selected_columns[0])
    if limit is not None:
        query = query.limit(limit)
    if offset:
        query = query.offset(offset)
    rows: list[dict[str, Any]] = []
    for mapping in session.execute(query).mappings():
        row = dict(mapping)
        if kind == "trades":
            row["value"] = trade_value(row)
        rows.append(row)
    return BookResult(
        kind=kind,
        rows=rows,
        matched=total.count,
        subtotals=subtotals,
        total=total,
        sort=key,
        descending=desc,
        offset=offset,
    )


def order_for_user(session: Session, user_id: int, order_pk: int) -> tuple[Order, TradingAccount] | None:
    """Our order row (by its primary key) and its account, or None when it is not the user's."""
    found = session.execute(
        select(Order, TradingAccount)
        .join(TradingAccount, and_(TradingAccount.id == Order.account_id, TradingAccount.user_id == user_id))
        .where(Order.id == order_pk)
    ).first()
    if found is None:
        return None
    return found[0], found[1]
