"""Moving-window rate limits per (API key, route), OpenAlgo's defaults (OPENALGO-PROTOCOL.md §1.5).

Counting uses real (monotonic) time, never the simulated clock. A refused call is not counted and not
executed; its body is exactly ``{"message": "10 per 1 second"}`` (no ``status`` key, no Retry-After).
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

ORDER_ROUTES = frozenset(
    {"placeorder", "modifyorder", "cancelorder", "optionsorder", "optionsmultiorder", "placesmartorder"}
)

_LIMIT_RE = re.compile(r"^\s*(\d+)\s*(?:per|/)\s*(\d*)\s*(second|minute|hour)s?\s*$")
_UNIT = {"second": 1.0, "minute": 60.0, "hour": 3600.0}


@dataclass(frozen=True, slots=True)
class Limit:
    """``amount`` calls per ``window`` seconds; ``text`` is the flask-limiter wording used in the 429."""

    amount: int
    window: float
    text: str

    @classmethod
    def parse(cls, text: str) -> Limit:
        """Parse ``"10 per 1 second"`` / ``"50 per second"`` / ``"30/minute"``. Raises ValueError."""
        m = _LIMIT_RE.match(text)
        if not m:
            raise ValueError(f"bad rate limit {text!r}; use e.g. '10 per 1 second'")
        amount, mult, unit = int(m.group(1)), int(m.group(2) or 1), m.group(3)
        return cls(amount, mult * _UNIT[unit], f"{amount} per {mult} {unit}")


@dataclass
class RateLimitConfig:
    enabled: bool = True
    order_limit: str = "10 per 1 second"
    default_limit: str = "50 per 1 second"
    overrides: dict[str, str] = field(default_factory=lambda: {"optiongreeks": "30 per 1 minute"})


class RateLimiter:
    def __init__(self, config: RateLimitConfig, now: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._now = now
        self._order = Limit.parse(config.order_limit)
        self._default = Limit.parse(config.default_limit)
        self._overrides = {k: Limit.parse(v) for k, v in config.overrides.items()}
        self._hits: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def limit_for(self, route: str) -> Limit:
        if route in self._overrides:
            return self._overrides[route]
        return self._order if route in ORDER_ROUTES else self._default

    def hit(self, key: str, route: str) -> Limit | None:
        """Count one call; returns the exceeded Limit (refuse the call) or None (allowed)."""
        if not self.config.enabled:
            return None
        limit = self.limit_for(route)
        now = self._now()
        with self._lock:
            window = self._hits.setdefault((key, route), deque())
            while window and window[0] <= now - limit.window:
                window.popleft()
            if len(window) >= limit.amount:
                return limit
            window.append(now)
            return None

    def reset(self) -> None:
        with self._lock:
            self._hits.clear()
