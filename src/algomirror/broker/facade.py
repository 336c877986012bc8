"""Synchronous, short-timeout calls for Flask views (read-only look-ups such as "Test connection").

Web views import only this module; it is a thin facade over the async client in ``broker.client``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class ConnectionTest:
    """Result of ping + funds against one OpenAlgo server.

    ``status`` is one of ``connected``, ``auth_failed`` (403: key rejected), ``failed`` (the server
    answered with an error) or ``error`` (network error, timeout, non-JSON reply).
    """

    ok: bool
    status: str
    broker: str | None
    message: str
    available_cash: Decimal | None = None


def check_connection(host_url: str, api_key: str, *, timeout: float = 5.0) -> ConnectionTest:
    """Call ``ping`` then ``funds`` on ``host_url``. Never raises for broker/network problems."""
    from algomirror.broker.client import run_connection_test

    return run_connection_test(host_url, api_key, timeout=timeout)
