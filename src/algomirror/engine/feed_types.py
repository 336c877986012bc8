"""The feed manager's vocabulary (PRODUCT §7.1, §7.3, §7.4): subscription keys and modes, the statuses it
watches, the connection protocol, its configuration (seconds), counters and published status, the
per-user feed state and the reconnect backoff. No I/O here.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Protocol

Key = tuple[str, str]  # (symbol, exchange)
SubKey = tuple[str, str, int]  # (symbol, exchange, mode)

MODE_LTP: Final = 1
MODE_QUOTE: Final = 2
MODE_DEPTH: Final = 3
# Executions whose prices the risk engine needs (PRODUCT §7.1: pending/active/exiting, and ``error``: an
# exit that gave up still holds open units, valued at the mark), and runs whose underlying spot it needs.
WATCHED_EXECUTION_STATUSES: Final = ("pending", "active", "exiting", "error")
DOWN_STATUSES: Final = ("failed", "error", "auth_failed")
# Market hours are those of the options segment (the product's business), as for the account sync.
MARKET_EXCHANGES: Final = ("NFO", "NSE")


def feed_topic(user_id: int) -> str:
    """The live-bus topic of one user's feed status (``user:{id}:feed``, event ``status``): only that
    user's pages may follow it, since it names their accounts."""
    return f"user:{user_id}:feed"


class FeedConn(Protocol):
    """What the manager needs of a connection (:class:`algomirror.broker.feed_client.FeedConnection`)."""

    async def subscribe(self, symbols: Sequence[Key], mode: int) -> dict[Key, str | None]: ...

    async def unsubscribe(self, symbols: Sequence[Key], mode: int) -> None: ...

    def ticks(self) -> AsyncIterator[Any]: ...

    async def close(self) -> None: ...


Connect = Callable[[str, str], Awaitable[FeedConn]]


@dataclass(frozen=True, slots=True)
class FeedConfig:
    """Seconds unless noted (defaults: PRODUCT §7.3/§7.4)."""

    silent_after: float = 5.0
    stale_after: float = 10.0
    refresh_seconds: float = 3.0
    backoff_base: float = 1.0
    backoff_cap: float = 30.0
    failures_before_failover: int = 3
    account_rest_seconds: float = 60.0
    primary_check_seconds: float = 30.0
    rest_interval: float = 1.0
    rest_tries: int = 3
    connect_timeout: float = 10.0
    # How often a connected feed checks its watchdog, wanted subscriptions and the primary.
    check_interval: float = 0.25
    heartbeat_seconds: float = 5.0
    status_seconds: float = 2.0


@dataclass
class FeedCounters:
    """Counts since the manager started (all users). ``stale`` = stamped more than ``stale_after`` from
    the market clock (either way); ``out_of_order`` = older than the stored mark (MarkBook refused)."""

    received: int = 0
    accepted: int = 0
    zero_price: int = 0
    stale: int = 0
    out_of_order: int = 0
    reconnects: int = 0
    failovers: int = 0
    rest_quotes: int = 0
    rest_marks: int = 0
    rest_failures: int = 0


@dataclass(frozen=True, slots=True)
class FeedStatus:
    """One user's feed. ``state``: ``idle`` (nothing wanted yet), ``connecting``, ``connected``
    (healthy), ``waiting`` (connected, no tick yet), ``silent``, ``reconnecting`` or ``down`` (no account
    to use); ``rest`` says the REST fallback is quoting; ``last_message_age`` in seconds (None before
    any message); ``counters`` are the manager's (all users)."""

    user_id: int
    state: str
    account_id: int | None
    last_message_age: float | None
    subscriptions: int
    rest: bool
    counters: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class FeedAccount:
    """A trading account usable for market data (a row of ``trading_accounts`` as the manager holds it)."""

    id: int
    user_id: int
    name: str
    host_url: str
    ws_url: str
    api_key_encrypted: str
    is_primary: bool
    status: str


@dataclass
class UserFeed:
    """Per-user state, touched only on the engine loop except ``wanted`` (under the manager's lock)."""

    user_id: int
    task: asyncio.Task[None] | None = None
    account: FeedAccount | None = None
    state: str = "idle"
    healthy: bool = False
    failures: int = 0
    # Monotonic time of the last message on the current connection.
    last_message: float | None = None
    # account id -> monotonic time until which it is not chosen when another account is available.
    resting: dict[int, float] = field(default_factory=dict)
    subscribed: set[SubKey] = field(default_factory=set)
    # (symbol, exchange, mode) -> monotonic time before which a refused subscription is not retried.
    refused: dict[SubKey, float] = field(default_factory=dict)
    outage_recorded: bool = False
    rest_active: bool = False
    last_rest_account: int | None = None
    rest_resting: dict[int, float] = field(default_factory=dict)
    # A connection already opened on ``account`` by a switch, served next instead of connecting.
    handover: FeedConn | None = None


def backoff_delay(failures: int, *, base: float = 1.0, cap: float = 30.0, jitter: float = 0.2) -> float:
    """Seconds before reconnect attempt ``failures`` (1 → ~1 s, 2 → ~2 s, 3 → ~4 s …), capped at
    ``cap``, spread by ±``jitter`` (a fraction) so many feeds do not reconnect in step."""
    raw = min(cap, base * (1 << min(max(0, failures - 1), 30)))
    return min(cap, raw * random.uniform(1 - jitter, 1 + jitter))


__all__ = [
    "DOWN_STATUSES",
    "MARKET_EXCHANGES",
    "MODE_DEPTH",
    "MODE_LTP",
    "MODE_QUOTE",
    "WATCHED_EXECUTION_STATUSES",
    "Connect",
    "FeedAccount",
    "FeedConfig",
    "FeedConn",
    "FeedCounters",
    "FeedStatus",
    "Key",
    "SubKey",
    "UserFeed",
    "backoff_delay",
    "feed_topic",
]
