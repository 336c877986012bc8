"""Small factories for synthetic rows (users, accounts, broker books). Each adds to the session and
flushes; the caller commits. Amounts are Decimal or str; anything not given gets a plain default."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import count
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from algomirror.db.models import AccountFunds, Holding, Order, Position, Trade, TradingAccount, User

BASE_TIME = datetime(2026, 11, 23, 3, 45, tzinfo=UTC)  # 09:15 IST
_seq = count(1)


RowT = TypeVar("RowT")


def _insert(
    session: Session, model: type[RowT], defaults: dict[str, Any], fields: dict[str, Any], **keys: Any
) -> RowT:
    """Build ``model`` from ``keys`` + ``defaults`` overridden by ``fields``; add and flush it."""
    row = model(**keys, **{**defaults, **fields})
    session.add(row)
    session.flush()
    return row


def D(value: str | int | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def make_user(session: Session, username: str, **fields: Any) -> User:
    user = User(
        username=username,
        email=fields.pop("email", f"{username}@example.com"),
        password_hash=fields.pop("password_hash", "x"),
        **fields,
    )
    session.add(user)
    session.flush()
    return user


def make_account(session: Session, user_id: int, name: str, **fields: Any) -> TradingAccount:
    """An active, connected account; ``created_at`` increases with each call (role order)."""
    n = next(_seq)
    values: dict[str, Any] = {
        "broker": "paper",
        "host_url": "http://127.0.0.1:5000",
        "is_active": True,
        "is_primary": False,
        "connection_status": "connected",
        "created_at": BASE_TIME + timedelta(seconds=n),
    }
    return _insert(session, TradingAccount, values, fields, user_id=user_id, account_name=name)


def make_funds(session: Session, account_id: int, **fields: Any) -> AccountFunds:
    values: dict[str, Any] = {
        "available_cash": Decimal("100000.00"),
        "collateral": Decimal("0.00"),
        "m2m_realized": Decimal("0.00"),
        "m2m_unrealized": Decimal("0.00"),
        "utilised_debits": Decimal("0.00"),
        "fetched_at": BASE_TIME,
    }
    return _insert(session, AccountFunds, values, fields, account_id=account_id)


def make_position(session: Session, account_id: int, symbol: str, **fields: Any) -> Position:
    values: dict[str, Any] = {
        "exchange": "NFO",
        "product": "NRML",
        "quantity": 75,
        "average_price": Decimal("100.00"),
        "ltp": Decimal("100.00"),
        "pnl": Decimal("0.00"),
    }
    return _insert(session, Position, values, fields, account_id=account_id, symbol=symbol)


def make_order(session: Session, account_id: int, order_id: str, **fields: Any) -> Order:
    values: dict[str, Any] = {
        "symbol": "NIFTY25NOV2626000CE",
        "exchange": "NFO",
        "action": "BUY",
        "quantity": 75,
        "order_type": "LIMIT",
        "price": Decimal("100.00"),
        "product": "NRML",
        "status": "complete",
        "filled_quantity": 0,
        "placed_at": BASE_TIME,
    }
    return _insert(session, Order, values, fields, account_id=account_id, order_id=order_id)


def make_trade(session: Session, account_id: int, order_id: str, **fields: Any) -> Trade:
    values: dict[str, Any] = {
        "trade_key": f"#{next(_seq)}",
        "symbol": "NIFTY25NOV2626000CE",
        "exchange": "NFO",
        "product": "NRML",
        "action": "BUY",
        "quantity": 75,
        "average_price": Decimal("100.00"),
        "trade_value": Decimal("7500.00"),
        "traded_at": BASE_TIME,
    }
    return _insert(session, Trade, values, fields, account_id=account_id, order_id=order_id)


def make_holding(session: Session, account_id: int, symbol: str, **fields: Any) -> Holding:
    values: dict[str, Any] = {
        "exchange": "NSE",
        "quantity": 10,
        "average_price": Decimal("1000.00"),
        "current_price": Decimal("1100.00"),
        "invested_value": Decimal("10000.00"),
        "current_value": Decimal("11000.00"),
        "pnl": Decimal("1000.00"),
        "pnl_percent": Decimal("10.00"),
    }
    return _insert(session, Holding, values, fields, account_id=account_id, symbol=symbol)
