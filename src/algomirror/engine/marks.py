"""The engine's latest price per symbol (PRODUCT §7.1, §7.4): one :class:`Mark` per (symbol, exchange).

Marks come from the market-data WebSocket (source ``"ws"``) or, with no healthy feed, from the REST
batch quote (source ``"rest"``). The feed manager writes them from the engine's asyncio loop; the risk
engine and the web read them from other threads, so every access takes one lock. Listeners (the risk
engine's hook) run synchronously on the writer's thread after the lock is released, so a listener may
read the book again without deadlocking.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal

from algomirror.domain.timeutil import ensure_aware

log = logging.getLogger(__name__)

MarkSource = Literal["ws", "rest"]

#: How old a WebSocket mark may be in market hours and still be acted on (PRODUCT §7.3: healthy = a
#: message within 5 s).
DEFAULT_WS_MAX_AGE = 5.0
#: How long a REST fallback quote stays usable (PRODUCT §7.4).
DEFAULT_REST_MAX_AGE = 5.0


@dataclass(frozen=True)
class Mark:
    """A price: ``ltp`` in rupees, ``at`` the tick's (or quote's) aware UTC time, and its account."""

    ltp: Decimal
    at: datetime
    source: MarkSource
    account_id: int | None


MarkListener = Callable[[str, str, Mark], None]


class MarkBook:
    """Latest marks with the usability rule; safe for one writer loop plus reader threads.

    ``ws_max_age`` / ``rest_max_age`` are seconds. A ``"ws"`` mark is usable while the feed account
    that produced it is healthy (:meth:`set_feed_health`) and, in market hours
    (:meth:`set_market_open`), younger than ``ws_max_age``; out of market hours no ticks arrive, so the
    last price of a healthy feed stays usable. A ``"rest"`` mark is usable while younger than
    ``rest_max_age``, in any session.
    """

    def __init__(
        self, *, ws_max_age: float = DEFAULT_WS_MAX_AGE, rest_max_age: float = DEFAULT_REST_MAX_AGE
    ) -> None:
        if ws_max_age <= 0 or rest_max_age <= 0:
            raise ValueError("mark ages must be positive seconds")
        self._ws_max_age = timedelta(seconds=ws_max_age)
        self._rest_max_age = timedelta(seconds=rest_max_age)
        self._lock = threading.Lock()
        self._marks: dict[tuple[str, str], Mark] = {}
        self._healthy: set[int] = set()
        self._market_open = True
        self._listeners: list[MarkListener] = []

    # -- writers -------------------------------------------------------------------------------

    def update(self, symbol: str, exchange: str, mark: Mark) -> bool:
        """Store ``mark`` unless it is not a price (ltp <= 0) or older than the stored mark.

        Returns True when accepted; listeners are then called synchronously with (symbol, exchange,
        mark). A listener's exception is logged and does not stop the other listeners or the writer
        (the feed must keep flowing; the risk engine reports its own failures). Raises ValueError for a
        naive ``mark.at``.
        """
        ensure_aware(mark.at)
        if mark.ltp <= 0:
            return False
        key = (symbol, exchange)
        with self._lock:
            current = self._marks.get(key)
            if current is not None and mark.at < current.at:
                return False
            self._marks[key] = mark
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(symbol, exchange, mark)
            except Exception:  # a listener's bug must not stall the feed; logged with its trace
                log.exception("mark listener %r failed for %s:%s", listener, exchange, symbol)
        return True

    def set_feed_health(self, account_id: int, healthy: bool) -> None:
        """Record whether ``account_id``'s market-data feed is healthy (the feed manager's watchdog)."""
        with self._lock:
            if healthy:
                self._healthy.add(account_id)
            else:
                self._healthy.discard(account_id)

    def set_market_open(self, is_open: bool) -> None:
        """Whether the market session is open, which enables the ws age limit."""
        with self._lock:
            self._market_open = is_open

    def add_listener(self, listener: MarkListener) -> None:
        """Call ``listener(symbol, exchange, mark)`` on every accepted mark, on the writer's thread."""
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: MarkListener) -> None:
        """Stop calling ``listener``; unknown listeners are ignored."""
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    # -- readers -------------------------------------------------------------------------------

    def get(self, symbol: str, exchange: str) -> Mark | None:
        """The latest mark, usable or not (display)."""
        with self._lock:
            return self._marks.get((symbol, exchange))

    def usable(self, symbol: str, exchange: str, now: datetime) -> Mark | None:
        """The latest mark when it may be acted on at ``now`` (rule in the class docstring), else None."""
        now = ensure_aware(now)
        with self._lock:
            mark = self._marks.get((symbol, exchange))
            if mark is None:
                return None
            age = now - mark.at
            if mark.source == "rest":
                return mark if age < self._rest_max_age else None
            if mark.account_id is None or mark.account_id not in self._healthy:
                return None
            if self._market_open and age >= self._ws_max_age:
                return None
            return mark

    def feed_healthy(self, account_id: int) -> bool:
        """Whether ``account_id``'s feed was last reported healthy."""
        with self._lock:
            return account_id in self._healthy

    def snapshot(self) -> dict[tuple[str, str], Mark]:
        """A copy of every mark keyed by (symbol, exchange)."""
        with self._lock:
            return dict(self._marks)
