"""The simulator's shared state: configuration, market, exchange, faults, rate limiter, clock.

One :class:`SimulatorCore` lives on the server's event loop; the REST, WebSocket and control layers all
work through it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from algomirror.domain.calendar import TradingCalendar, default_calendar
from algomirror.domain.timeutil import ensure_aware, utcnow
from algomirror.simulator.clock import ClockDriver, ClockMode
from algomirror.simulator.contracts import MarketModel, Quote
from algomirror.simulator.exchange import Exchange, ExchangeConfig
from algomirror.simulator.faults import FaultState
from algomirror.simulator.margin import MarginConfig
from algomirror.simulator.profiles import DEFAULT_PROFILE, Profile, Quirks, quirks_for
from algomirror.simulator.ratelimit import RateLimitConfig, RateLimiter

if TYPE_CHECKING:
    from algomirror.simulator.trace import Trace
    from algomirror.simulator.ws import WsHub

JUMP_STEPPED_SECONDS = 3600
MarketFactory = Callable[["SimulatorConfig", datetime], MarketModel]

# Wed 25 Nov 2026 10:30 IST: a normal trading day (24 Nov 2026 is a holiday).
DEFAULT_MANUAL_START = datetime(2026, 11, 25, 5, 0, tzinfo=UTC)


@dataclass
class SimulatorConfig:
    """Everything the paper exchange can be told at start. Ports 0 = ephemeral.

    ``clock``: ``realtime`` (wall clock), ``accelerated`` (``speed`` × real time from ``start``) or
    ``manual`` (moves only via ``POST /sim/clock/advance``). ``start``: the simulated start instant
    (aware; default: now for accelerated, :data:`DEFAULT_MANUAL_START` for manual; realtime always
    starts now).
    ``tick_seconds``: real seconds between clock steps in realtime/accelerated mode.
    ``market_factory(config, start)`` builds the market (default: ``simulator.market.Market``).
    ``profile``: ``live-like`` (a broker-backed OpenAlgo) or ``openalgo-paper`` (the quirks of OpenAlgo's
    own paper mode); see :mod:`algomirror.simulator.profiles`.
    ``control_token``: the secret every control route requires (``Authorization: Bearer <token>`` or
    ``X-Sim-Token``); None = a fresh random one at start (read it from ``SimulatorCore.control_token``).
    """

    host: str = "127.0.0.1"
    port: int = 0
    ws_port: int = 0
    seed: int = 42
    accounts: int = 3
    capital: Decimal = Decimal(10_000_000)
    clock: ClockMode = "realtime"
    speed: float = 1.0
    start: datetime | None = None
    tick_seconds: float = 1.0
    control: bool = False
    rate_limits: RateLimitConfig = field(default_factory=RateLimitConfig)
    slippage_ticks: int = 0
    square_off_time: time = time(15, 15)
    margin: MarginConfig = field(default_factory=MarginConfig)
    ws_auth_timeout: float = 15.0
    ws_heartbeat: float = 20.0
    ws_queue_size: int = 1024
    broker: str = "sandbox"
    hang_seconds: float = 60.0
    strict_fields: bool = True
    market_factory: MarketFactory | None = None
    profile: Profile = DEFAULT_PROFILE
    control_token: str | None = field(default=None, repr=False)

    def start_instant(self) -> datetime:
        """The market's first instant. A realtime clock always starts now (``start`` is ignored)."""
        if self.clock == "realtime":
            return utcnow().replace(microsecond=0)
        if self.start is not None:
            return ensure_aware(self.start)
        return DEFAULT_MANUAL_START if self.clock == "manual" else utcnow().replace(microsecond=0)


def api_key_for(seed: int, index: int) -> str:
    """The deterministic demo API key of account ``index`` (0-based): 64 hex characters."""
    return hashlib.sha256(f"algomirror-simulator:{seed}:{index}".encode()).hexdigest()


def default_market_factory(config: SimulatorConfig, start: datetime) -> MarketModel:
    from algomirror.simulator.market import Market

    return Market(seed=config.seed, start=start)


class SimulatorCore:
    def __init__(self, config: SimulatorConfig) -> None:
        """Build the exchange's state from ``config``. Raises ValueError for an unknown profile."""
        self.config = config
        self.quirks: Quirks = quirks_for(config.profile)
        # The control API resets and reshapes the market and lists every API key: it answers only to
        # whoever was handed this token at start (a test, a tool, the demo's own process).
        self.control_token: str = config.control_token or secrets.token_urlsafe(32)
        self.faults = FaultState()
        self.limiter = RateLimiter(config.rate_limits)
        self.calendar: TradingCalendar = default_calendar()
        self.ws_hub: WsHub | None = None
        # Timing trace for benchmarks (``simulator/trace.py``); None = off, the default.
        self.trace: Trace | None = None
        self.started_at = self.config.start_instant()
        self.market = self._build_market()
        self.exchange = Exchange(
            self.market,
            self.faults,
            ExchangeConfig(
                capital=config.capital,
                slippage_ticks=config.slippage_ticks,
                square_off_time=config.square_off_time,
                # What positions and orders block; /margin keeps answering from config.margin.
                margin=dataclasses.replace(
                    config.margin, short_option_premium_only=self.quirks.short_option_premium_margin
                ),
                quirks=self.quirks,
            ),
        )
        self.api_keys: list[str] = []
        for _ in range(config.accounts):
            self.add_account()
        self.market.add_listener(self.on_quote)
        self.clock = ClockDriver(
            config.clock,
            speed=config.speed,
            tick_seconds=config.tick_seconds,
            now=lambda: self.market.now(),
            advance=self.advance_to,
        )
        self.quote_listeners: list[Callable[[Quote], None]] = []

    def _build_market(self) -> MarketModel:
        factory = self.config.market_factory or default_market_factory
        return factory(self.config, self.started_at)

    def add_account(self, capital: Decimal | None = None) -> str:
        index = len(self.api_keys)
        key = api_key_for(self.config.seed, index)
        self.exchange.add_account(key, f"sim-user-{index + 1}", capital)
        self.api_keys.append(key)
        return key

    # -- ticks and time ----------------------------------------------------------------------------

    def on_quote(self, quote: Quote) -> None:
        self.exchange.on_quote(quote)
        if self.ws_hub is not None:
            self.ws_hub.on_quote(quote)
        for listener in self.quote_listeners:
            listener(quote)

    def advance_to(self, instant: datetime) -> None:
        self.market.advance_to(instant)
        self.exchange.on_time(self.market.now())

    def jump(self, seconds: float) -> datetime:
        """Manual clock move. Up to ``JUMP_STEPPED_SECONDS`` the model steps tick by tick (resting orders see
        every tick); beyond that it jumps (one notification at the end)."""
        target = self.market.now() + timedelta(seconds=seconds)
        if seconds > JUMP_STEPPED_SECONDS:
            self.market.jump_to(target)
            self.exchange.on_time(self.market.now())
        else:
            self.advance_to(target)
        self.clock.rebase()
        return self.market.now()

    def advance(self, seconds: float) -> datetime:
        self.advance_to(self.market.now() + timedelta(seconds=seconds))
        self.clock.rebase()
        return self.market.now()

    def push_quote(self, symbol: str, exchange: str) -> None:
        """Re-deliver the current quote of one instrument (after a forced price) to matching and the feed."""
        quote = self.market.quote(symbol, exchange)
        if quote is not None:
            self.on_quote(quote)

    # -- reset -------------------------------------------------------------------------------------

    def reset(self, *, market: bool = True) -> None:
        """Back to the start: fresh books and funds, no faults, no rate-limit history; a fresh market
        (same seed, same start) unless ``market`` is False."""
        self.faults.clear()
        self.limiter.reset()
        if market:
            self.market.remove_listener(self.on_quote)
            self.started_at = self.config.start_instant()
            self.market = self._build_market()
            self.exchange.market = self.market
            self.market.add_listener(self.on_quote)
            self.clock.rebase()
        self.exchange.reset()
        if market and self.ws_hub is not None:
            self.ws_hub.rewatch()
        # Accounts added at run time (beyond the configured number) are dropped.
        for key in self.api_keys[self.config.accounts :]:
            self.exchange.accounts.pop(key, None)
        self.api_keys = self.api_keys[: self.config.accounts]
