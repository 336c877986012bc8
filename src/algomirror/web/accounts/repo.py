"""Trading-account queries. Every function takes the owner's ``user_id`` and never touches another
user's rows: an id that is not the owner's behaves exactly like an id that does not exist."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from algomirror.broker.facade import ConnectionTest
from algomirror.db.models import TradingAccount
from algomirror.db.retirement import Blocker, Retired, account_blockers, account_has_history, retire_account


class AccountRuleError(Exception):
    """An account change that the rules refuse; ``str(exc)`` is the user-facing reason."""


def list_accounts(session: Session, user_id: int) -> Sequence[TradingAccount]:
    """The user's trading accounts in creation order."""
    return session.scalars(
        select(TradingAccount)
        .where(TradingAccount.user_id == user_id, TradingAccount.archived_at.is_(None))
        .order_by(TradingAccount.created_at, TradingAccount.id)
    ).all()


def get_account(session: Session, user_id: int, account_id: int) -> TradingAccount | None:
    """Account ``account_id`` if it belongs to the user, else None (someone else's looks absent)."""
    return session.scalar(
        select(TradingAccount).where(
            TradingAccount.id == account_id,
            TradingAccount.user_id == user_id,
            TradingAccount.archived_at.is_(None),
        )
    )


def name_taken(session: Session, user_id: int, name: str, *, exclude_id: int | None = None) -> bool:
    """Case-insensitive: "Main" and "main" would be too easy to confuse."""
    query = select(TradingAccount.id).where(
        TradingAccount.user_id == user_id,
        TradingAccount.archived_at.is_(None),
        func.lower(TradingAccount.account_name) == name.strip().lower(),
    )
    if exclude_id is not None:
        query = query.where(TradingAccount.id != exclude_id)
    return session.scalar(query.limit(1)) is not None


def primary_account(session: Session, user_id: int) -> TradingAccount | None:
    """The user's primary account, or None when the user has none."""
    return session.scalar(
        select(TradingAccount).where(TradingAccount.user_id == user_id, TradingAccount.is_primary.is_(True))
    )


def create_account(
    session: Session,
    user_id: int,
    *,
    account_name: str,
    broker: str,
    host_url: str,
    websocket_url: str,
    api_key_encrypted: str,
    api_key_last4: str,
) -> TradingAccount:
    """Add an account (caller commits). The user's first active account becomes the primary."""
    account = TradingAccount(
        user_id=user_id,
        account_name=account_name,
        broker=broker,
        host_url=host_url,
        websocket_url=websocket_url,
        api_key_encrypted=api_key_encrypted,
        api_key_last4=api_key_last4,
        is_active=True,
        is_primary=primary_account(session, user_id) is None,
        connection_status="disconnected",
    )
    session.add(account)
    session.flush()
    return account


def set_primary(session: Session, user_id: int, account: TradingAccount) -> TradingAccount | None:
    """Make ``account`` (the caller's own, already fetched by :func:`get_account`) the primary.

    Clears the old flag first, in the same transaction. Returns the previous primary. Raises
    :class:`AccountRuleError` for an inactive account.
    """
    if account.user_id != user_id:
        raise AccountRuleError("Not found.")
    if not account.is_active:
        raise AccountRuleError("Activate the account before making it the primary.")
    old = primary_account(session, user_id)
    if old is not None and old.id == account.id:
        return None
    if old is not None:
        old.is_primary = False
        # The partial unique index allows one primary per user: the clear must reach the DB first.
        session.flush()
    account.is_primary = True
    session.flush()
    return old


UNHEALTHY_STATUSES = ("auth_failed", "failed", "error")


def is_healthy(account: TradingAccount) -> bool:
    """False when the account's key was rejected or its connection failed (no live prices from it)."""
    return account.connection_status not in UNHEALTHY_STATUSES


def promote_oldest_active(
    session: Session, user_id: int, *, excluding: int | None = None
) -> TradingAccount | None:
    """Make the oldest active account the primary when the user has none, a healthy one (see
    :func:`is_healthy`) before any other. Returns it (or None)."""
    if primary_account(session, user_id) is not None:
        return None
    # A healthy account first: the primary feeds market data to every page and strategy.
    unhealthy = case((TradingAccount.connection_status.in_(UNHEALTHY_STATUSES), 1), else_=0)
    query = (
        select(TradingAccount)
        .where(TradingAccount.user_id == user_id, TradingAccount.is_active.is_(True))
        .order_by(unhealthy, TradingAccount.created_at, TradingAccount.id)
    )
    if excluding is not None:
        query = query.where(TradingAccount.id != excluding)
    candidate = session.scalar(query.limit(1))
    if candidate is not None:
        candidate.is_primary = True
        session.flush()
    return candidate


def deactivate(session: Session, user_id: int, account: TradingAccount) -> TradingAccount | None:
    """Deactivate; a primary hands over to the oldest active account. Returns the new primary, if any."""
    if account.user_id != user_id:
        raise AccountRuleError("Not found.")
    account.is_active = False
    if account.is_primary:
        account.is_primary = False
        session.flush()
        return promote_oldest_active(session, user_id, excluding=account.id)
    session.flush()
    return None


def activate(session: Session, user_id: int, account: TradingAccount) -> None:
    """Activate; when the user has no primary, the oldest healthy active account becomes it."""
    if account.user_id != user_id:
        raise AccountRuleError("Not found.")
    account.is_active = True
    session.flush()
    promote_oldest_active(session, user_id)


def retirement_plan(session: Session, user_id: int, account: TradingAccount) -> tuple[list[Blocker], bool]:
    """What deleting would do: (live items in the way, whether it has trading history to archive)."""
    if account.user_id != user_id:
        raise AccountRuleError("Not found.")
    return account_blockers(session, account.id), account_has_history(session, account.id)


def delete_account(
    session: Session, user_id: int, account: TradingAccount, *, now: datetime
) -> tuple[Retired, TradingAccount | None]:
    """Delete an account that never traded, archive one that did (caller commits).

    Refused with :class:`~algomirror.db.retirement.StillTradingError` while anything of it is live
    (an execution pending/active/exiting/error, an unresolved order intent). Returns what was done and
    the account promoted to primary, if the retired one was the primary.
    """
    if account.user_id != user_id:
        raise AccountRuleError("Not found.")
    was_primary = account.is_primary
    outcome = retire_account(session, account, now=now)
    promoted = promote_oldest_active(session, user_id) if was_primary else None
    return outcome, promoted


def record_connection_test(account: TradingAccount, result: ConnectionTest, at: datetime) -> None:
    """Store a test's outcome. A failed test leaves the account ``disconnected`` (``auth_failed`` when
    the key was refused) with the error text."""
    if result.ok:
        account.connection_status = "connected"
        account.last_connected = at
        account.last_error = None
        account.consecutive_failures = 0
        if result.broker and len(result.broker) <= 50:
            account.broker = result.broker
    else:
        account.connection_status = "auth_failed" if result.status == "auth_failed" else "disconnected"
        account.last_error = result.message[:2000]
        account.last_error_at = at
        account.consecutive_failures = (account.consecutive_failures or 0) + 1
