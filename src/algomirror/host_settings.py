"""The allow-list of account hosts in the database (app setting ``account_host_allowlist``).

Read by the web pages (saving an account, "Test connection") and by the engine (account sync, web
commands) in the same transaction as the accounts it builds clients for; written by the admin page.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from algomirror.broker.hosts import HostPolicy
from algomirror.db.models.app_settings import ACCOUNT_HOST_ALLOWLIST, AppSetting


def load_host_policy(session: Session) -> HostPolicy:
    """The stored policy: unrestricted when never set; loopback only when the stored value cannot be
    read (see :meth:`HostPolicy.from_json`). Raises only SQLAlchemyError."""
    value = session.scalar(select(AppSetting.value).where(AppSetting.key == ACCOUNT_HOST_ALLOWLIST))
    return HostPolicy.from_json(value)


def save_host_policy(session: Session, policy: HostPolicy) -> None:
    """Store ``policy`` (the caller commits)."""
    row = session.scalar(select(AppSetting).where(AppSetting.key == ACCOUNT_HOST_ALLOWLIST))
    if row is None:
        session.add(AppSetting(key=ACCOUNT_HOST_ALLOWLIST, value=policy.to_json()))
    else:
        row.value = policy.to_json()


__all__ = ["load_host_policy", "save_host_policy"]
