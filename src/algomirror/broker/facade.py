"""Synchronous, short-timeout calls for Flask views (read-only look-ups such as "Test connection").

Web views import only this module; it is a thin facade over the async client in ``broker.client``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

# What a failed connection test says: these fixed texts only, never what the server sent, so that a host
# URL typed by a user cannot turn "Test connection" into a probe of other services.
COULD_NOT_CONNECT = "could not connect"
TIMED_OUT = "timed out"
NOT_OPENALGO = "not an OpenAlgo server"
KEY_REJECTED = "key rejected"
# Only after a reply in OpenAlgo's ping shape, with the key accepted.
NO_FUNDS = "the OpenAlgo server could not report funds (is its broker session logged in?)"
INVALID_HOST_URL = "invalid host URL"


@dataclass(frozen=True, slots=True)
class ConnectionTest:
    """Result of ping + funds against one OpenAlgo server.

    ``status`` is one of ``connected``, ``auth_failed`` (:data:`KEY_REJECTED`), ``failed``
    (:data:`NOT_OPENALGO`, :data:`NO_FUNDS`, :data:`INVALID_HOST_URL`) or ``error``
    (:data:`COULD_NOT_CONNECT`, :data:`TIMED_OUT`); ``message`` is one of those texts, or on success
    "Connected to <broker>; available cash …".
    """

    ok: bool
    status: str
    broker: str | None
    message: str
    available_cash: Decimal | None = None


def check_connection(host_url: str, api_key: str, *, timeout: float = 5.0) -> ConnectionTest:
    """Call ``ping`` then ``funds`` on ``host_url`` (see
    :func:`~algomirror.broker.client.run_connection_test`). Never raises for broker/network problems."""
    from algomirror.broker.client import run_connection_test

    return run_connection_test(host_url, api_key, timeout=timeout)
