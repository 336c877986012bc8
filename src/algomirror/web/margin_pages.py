"""Margins (PRODUCT §9.4–9.5): the margin calculator and the per-account margin tracker.

Both read only the signed-in user's rows: margin table, grades, accounts, their last funds and the tracker
the engine's sync keeps (``engine/book_mirror.store_funds``). Another user's account id is a 404.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from flask import Blueprint, abort, render_template, request
from flask.typing import ResponseReturnValue
from flask_login import login_required
from sqlalchemy import select
from sqlalchemy.orm import Session
from wtforms import SelectChoice

from algomirror.db.instrument_settings import margin_rates
from algomirror.db.models import AccountFunds, MarginTracker, TradingAccount
from algomirror.db.models.sizing import MarginRequirement, TradeQuality
from algomirror.domain.errors import DomainError
from algomirror.domain.reservations import reserved
from algomirror.domain.sizing import (
    AccountFunds as FundsFigures,
)
from algomirror.domain.sizing import (
    Grade,
    MarginCalculation,
    MarginRates,
    buyer_base,
    calculate_lots,
    seller_base,
)
from algomirror.web.context import db, me, now
from algomirror.web.margin_forms import AMOUNT, TRADE_CHOICES, CalculatorForm

bp = Blueprint("margins", __name__, url_prefix="/margins")

_TRADE_LABELS = dict(TRADE_CHOICES)


@dataclass(frozen=True, slots=True)
class AccountBases:
    """An account's funds as the calculator and the tracker show them (None = unknown)."""

    id: int
    name: str
    collateral_included: bool
    available_cash: Decimal | None
    collateral: Decimal | None
    seller: Decimal | None
    buyer: Decimal | None
    fetched_at: datetime | None


@dataclass(frozen=True, slots=True)
class TrackerRow:
    """One account on the tracker page; ``tracker`` is None before its first sync."""

    bases: AccountBases
    tracker: MarginTracker | None
    age_seconds: float | None

    @property
    def reserved(self) -> Decimal:
        """₹ the runs still entering into this account reserve on it (PRODUCT §9.5)."""
        return reserved(self.tracker.allocated_margins if self.tracker is not None else None)

    @property
    def reserving_runs(self) -> list[str]:
        """The runs holding a reservation here, as their ``run:N`` keys."""
        allocated = self.tracker.allocated_margins if self.tracker is not None else None
        return sorted((allocated or {}).keys())


@dataclass(frozen=True, slots=True)
class Answer:
    """A calculator result with the words that explain it."""

    calc: MarginCalculation
    base_label: str
    per_lot_label: str
    grade: Grade
    note: str | None


def _bases(account: TradingAccount, funds: AccountFunds | None) -> AccountBases:
    cash = funds.available_cash if funds else None
    collateral = funds.collateral if funds else None
    figures = FundsFigures(cash, collateral, account.collateral_included)
    try:
        seller: Decimal | None = seller_base(figures)
        buyer: Decimal | None = buyer_base(figures)
    except DomainError:
        seller = buyer = None
    return AccountBases(
        id=account.id,
        name=account.account_name,
        collateral_included=account.collateral_included,
        available_cash=cash,
        collateral=collateral,
        seller=seller,
        buyer=buyer,
        fetched_at=funds.fetched_at if funds else None,
    )


def _accounts(session: Session, user_id: int) -> list[tuple[TradingAccount, AccountFunds | None]]:
    rows = session.execute(
        select(TradingAccount, AccountFunds)
        .outerjoin(AccountFunds, AccountFunds.account_id == TradingAccount.id)
        .where(TradingAccount.user_id == user_id)
        .order_by(TradingAccount.account_name, TradingAccount.id)
    ).all()
    return [(account, funds) for account, funds in rows]


def _rates(session: Session, user_id: int) -> dict[str, MarginRates | str]:
    """The user's active margin rows by instrument: rates, or why a row is unusable."""
    found: dict[str, MarginRates | str] = {}
    for m in session.scalars(
        select(MarginRequirement)
        .where(MarginRequirement.user_id == user_id, MarginRequirement.is_active.is_(True))
        .order_by(MarginRequirement.instrument)
    ):
        try:
            found[m.instrument.upper()] = margin_rates(m)
        except DomainError as exc:
            found[m.instrument.upper()] = str(exc)
    return found


def _grades(session: Session, user_id: int) -> dict[str, Grade]:
    grades: dict[str, Grade] = {}
    for g in session.scalars(
        select(TradeQuality)
        .where(TradeQuality.user_id == user_id, TradeQuality.is_active.is_(True))
        .order_by(TradeQuality.quality_grade)
    ):
        try:
            grades[g.quality_grade] = Grade(g.quality_grade, g.margin_percentage, g.source)  # type: ignore[arg-type]
        except DomainError:
            continue
    return grades


def _answer(
    form: CalculatorForm,
    accounts: dict[str, AccountBases],
    rates: dict[str, MarginRates | str],
    grades: dict[str, Grade],
) -> tuple[Answer | None, str | None]:
    """The calculation for a valid form, or (None, a message) when it cannot be made."""
    grade = grades[form.grade.data or ""]
    trade = form.trade.data or ""
    row = rates.get(form.instrument.data or "")
    if row is None:
        return None, f"No margin per lot for {form.instrument.data}: add it in the margin table first."
    if isinstance(row, str):
        return None, f"The margin row for {form.instrument.data} is unusable: {row}"
    buying = trade == "option_buy"
    if grade.is_cash and not buying:
        return None, f"Grade {grade.name} is a cash (buyer) grade: it sizes option buying only."
    if form.base_source.data == AMOUNT:
        base = form.amount_value or Decimal(0)
        base_label = "the amount entered"
    else:
        bases = accounts[form.base_source.data or ""]
        chosen = bases.buyer if grade.is_cash else bases.seller
        if chosen is None:
            return None, f"{bases.name} has no usable funds yet (not synced, or its figures are unknown)."
        base = chosen
        base_label = f"{bases.name}'s {'buyer' if grade.is_cash else 'seller'} base"
    if buying:
        per_lot = form.premium_value or row.buying_premium_per_lot
        per_lot_label = "premium per lot"
    else:
        per_lot = row.rate(trade, bool(form.expiry_day.data))  # type: ignore[arg-type]
        day = "expiry day" if form.expiry_day.data else "other day"
        per_lot_label = f"margin per lot ({_TRADE_LABELS[trade].lower()}, {day})"
    note = None
    if buying and not grade.is_cash:
        note = "A seller (available) grade sized on option buying: the seller base is used."
    calc = calculate_lots(base, grade.percentage, per_lot)
    return Answer(calc, base_label, per_lot_label, grade, note), None


@bp.route("/", methods=["GET"])
@login_required
def index() -> ResponseReturnValue:
    """The margin calculator: lots for a base, grade and trade type, with the formula (a GET form)."""
    session = db()
    user = me()
    accounts = {str(a.id): _bases(a, f) for a, f in _accounts(session, user.id)}
    rates = _rates(session, user.id)
    grades = _grades(session, user.id)
    form = CalculatorForm(request.args)
    form.base_source.choices = [
        SelectChoice(AMOUNT, "An amount"),
        *(SelectChoice(k, f"Account: {b.name}") for k, b in accounts.items()),
    ]
    form.instrument.choices = [SelectChoice(name, name) for name in rates]
    form.grade.choices = [
        SelectChoice(name, f"{name} · {g.percentage}% of the {'buyer' if g.is_cash else 'seller'} base")
        for name, g in grades.items()
    ]
    answer: Answer | None = None
    message: str | None = None
    submitted = bool(request.args)
    status = 200
    if not rates:
        message = "You have no margin table rows: add one under Sizing before using the calculator."
    elif not grades:
        message = "You have no active grades: add one under Sizing before using the calculator."
    elif submitted:
        if form.validate():
            answer, message = _answer(form, accounts, rates, grades)
        else:
            status = 400
    context: dict[str, Any] = {
        "form": form,
        "answer": answer,
        "message": message,
        "submitted": submitted,
    }
    return render_template("margins/calculator.html", **context), status


def _tracker_rows(session: Session, user_id: int, account_id: int | None = None) -> list[TrackerRow]:
    trackers = {
        t.account_id: t
        for t in session.scalars(
            select(MarginTracker)
            .join(TradingAccount, TradingAccount.id == MarginTracker.account_id)
            .where(TradingAccount.user_id == user_id)
        )
    }
    at = now()
    rows = []
    for account, funds in _accounts(session, user_id):
        if account_id is not None and account.id != account_id:
            continue
        tracker = trackers.get(account.id)
        updated = tracker.last_updated if tracker else None
        age = (at - updated).total_seconds() if updated else None
        rows.append(TrackerRow(_bases(account, funds), tracker, age))
    return rows


@bp.route("/tracker", methods=["GET"])
@login_required
def tracker() -> ResponseReturnValue:
    """The margin tracker of every account of the user (PRODUCT §9.5)."""
    rows = _tracker_rows(db(), me().id)
    return render_template("margins/tracker.html", rows=rows, single=False)


@bp.route("/tracker/<id:account_id>", methods=["GET"])
@login_required
def tracker_account(account_id: int) -> ResponseReturnValue:
    """One account's tracker; 404 when the account is not the user's."""
    rows = _tracker_rows(db(), me().id, account_id)
    if not rows:
        abort(404)
    return render_template("margins/tracker.html", rows=rows, single=True)
