"""What a page needs before it calls one account's OpenAlgo server from a request (the calendar's holiday
import, the builder's expiry list, the premium chart's history): the host allowed by the administrator's
host policy and the stored API key readable. The decrypted key lives only in the returned value, for the
call; it is never logged or sent to the browser (its ``repr`` leaves it out).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from algomirror.broker.hosts import HostPolicy
from algomirror.db.models import TradingAccount
from algomirror.host_settings import load_host_policy
from algomirror.web.context import db, state


class AccessRefused(Exception):
    """The account's server may not be called from here; the message says why, for the person."""


@dataclass(frozen=True, slots=True)
class BrokerAccess:
    """One account's name, host URL and decrypted API key, checked by :func:`broker_access`."""

    name: str
    host_url: str
    api_key: str = field(repr=False)


def broker_access(account: TradingAccount, policy: HostPolicy | None = None) -> BrokerAccess:
    """``account``'s server details for a call now, against ``policy`` (default: the administrator's
    host policy, read in the request's session). Raises :class:`AccessRefused` when the host is not
    allowed, or when the account has no API key or its stored key cannot be decrypted."""
    name = account.account_name
    allowed = policy if policy is not None else load_host_policy(db())
    if not allowed.allows(account.host_url):
        raise AccessRefused(f"“{name}”'s host is not on the administrator's allowed list.")
    if not account.api_key_encrypted:
        raise AccessRefused(f"“{name}” has no API key; enter it on Accounts.")
    try:
        api_key = state().box.decrypt(account.api_key_encrypted)
    except ValueError:
        raise AccessRefused(
            f"“{name}”'s stored API key cannot be read; enter it again on Accounts."
        ) from None
    return BrokerAccess(name, account.host_url, api_key)


__all__ = ["AccessRefused", "BrokerAccess", "broker_access"]
