"""The Supertrend exit (PRODUCT §6.5): engine component ``supertrend``, evaluated at candle closes.

**What.** Every open run the risk engine holds (``risk.runs``) whose strategy has the Supertrend exit on.
Its series is :class:`~algomirror.engine.premium_series.PremiumSeriesBuilder`'s (the same the chart
draws): the legs' history on the feed account (the feed manager's current account for the user, else the
primary, else the first active one), continued by candles from our own ticks (a MarkBook listener feeds
:class:`~algomirror.engine.premium_series.TickCandles` for the watched legs).

**When.** ``delay`` (3 s) after each candle close of the run's timeframe on the market clock (the
injected clock), on closed candles only: the candle evaluated is the newest one that closed at least
``delay`` ago; candles that closed later, and the forming one, are cut off. A candle not yet complete
(some leg has no candle for it) is retried every ``retry_seconds`` until close + ``late_seconds`` (30 s);
then it is evaluated if the combined series has it (a quiet leg repeats its previous close), else
skipped with an alert. Candles that closed before the run started are not evaluated. Missing history →
state ``unknown`` with an alert, no exit.

**Fires.** ``breakout`` (net credit) at direction −1, ``breakdown`` (net debit) at +1, the strategy's
type or, when it has none, the run's net credit/debit at entry. The exit goes through
:meth:`RiskEngine.fire` (one transaction: the conditional latch ``strategy_runs.supertrend_triggered_at``,
risk events, alert, the exit command), whole run, the executions no other rule claimed. Latched per run:
once fired (in memory, or the stored latch), never again for that run. Like every run rule it needs the
run's P&L (recorded with the latch): while that is unknown the firing waits (the state holds until the
next close is evaluated).

**Published.** After each evaluation: ``run:{run_id}:risk`` event ``supertrend`` (:func:`event_of`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from algomirror.db.models import Strategy, StrategyRun, TradingAccount
from algomirror.db.session import Database
from algomirror.domain.calendar import TradingCalendar, default_calendar
from algomirror.domain.candles import Candle, candle_end, candle_start
from algomirror.domain.supertrend import supertrend, supertrend_fires
from algomirror.domain.timeutil import Clock, SystemClock, clock_speed, to_ist
from algomirror.engine.alerts import raise_alert
from algomirror.engine.command_rows import pause
from algomirror.engine.marks import Mark, MarkBook
from algomirror.engine.premium_series import (
    SESSION_EXCHANGE,
    HistorySource,
    PremiumSeries,
    PremiumSeriesBuilder,
    TickCandles,
    legs_of,
    timeframe_minutes,
)
from algomirror.engine.risk import Breach, LiveBus, RiskEngine, RunState
from algomirror.host_settings import load_host_policy

log = logging.getLogger(__name__)

CODE = "supertrend_exit"
ALERT_KIND = "supertrend"
_CLAIMABLE = ("pending", "active")
ExitKind = Literal["breakout", "breakdown"]
#: (history source, cache key) for a user, or None when the user has no account to read from.
SourceFor = Callable[[int], tuple[HistorySource, Any] | None]


@dataclass(frozen=True, slots=True)
class SupertrendConfig:
    """Seconds: ``tick`` the loop step; ``delay`` after a close before evaluating (PRODUCT §10 default
    3 s); ``late_seconds`` how long after the close a late candle is retried; ``retry_seconds`` between
    those retries; ``reload_seconds`` how often the strategies' settings and accounts are re-read."""

    tick: float = 0.5
    delay: float = 3.0
    late_seconds: float = 30.0
    retry_seconds: float = 5.0
    reload_seconds: float = 2.0


@dataclass(frozen=True, slots=True)
class RunSetting:
    """An open run's Supertrend settings (from its strategy) and stored latch."""

    run_id: int
    user_id: int
    name: str
    enabled: bool
    kind: ExitKind | None
    period: int
    multiplier: float
    timeframe: str
    started_at: datetime
    triggered_at: datetime | None


@dataclass
class _Track:
    setting: RunSetting
    done: datetime | None = None  # start of the newest candle evaluated or skipped
    next_try: datetime | None = None
    # (candle start, close, line, kind) of an exit waiting for a known P&L.
    pending: tuple[datetime, float, float, ExitKind] | None = None
    fired: bool = False  # this component asked the risk engine to fire (display; the latch is below)
    alerted: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class _Account:
    id: int
    name: str
    host_url: str
    api_key_encrypted: str


def risk_component(components: Sequence[object]) -> RiskEngine | None:
    """The RiskEngine among ``components`` (build_engine's list), or None."""
    return next((c for c in components if isinstance(c, RiskEngine)), None)


def supertrend_rule(
    database: Database,
    feeds: Any,
    decrypt: Callable[[str], str],
    components: Callable[[], Sequence[object]],
    bus: LiveBus | None,
    clock: Clock | None,
    calendar: TradingCalendar | None = None,
) -> SupertrendRule:
    """The component as build_engine wires it: the RiskEngine found in ``components()`` when it runs
    (the list is still being built when this is called), the feed manager's client registry, MarkBook
    and current accounts, and the engine's shared ``calendar``."""
    return SupertrendRule(
        database,
        feeds.registry,
        decrypt,
        risk=lambda: risk_component(components()),
        marks=feeds.marks,
        feeds=feeds,
        bus=bus,
        clock=clock,
        calendar=calendar,
    )


def last_closed_start(
    now: datetime, minutes: int, delay: float, calendar: TradingCalendar
) -> datetime | None:
    """Start of the newest candle of ``minutes`` that closed at least ``delay`` s before ``now`` in
    today's session (IST), or None before the first close of a trading day."""
    at = now - timedelta(seconds=delay)
    day = to_ist(at).date()
    if not calendar.is_trading_day(SESSION_EXCHANGE, day):
        return None
    bounds = calendar.session_bounds(SESSION_EXCHANGE, day)
    if bounds is None:
        return None
    opened, closed = bounds
    if at < opened:
        return None
    if at >= closed:
        return candle_start(closed - timedelta(microseconds=1), minutes)
    current = candle_start(at, minutes)
    if current is None or current <= opened:
        return None
    return candle_start(current - timedelta(microseconds=1), minutes)


def event_of(
    setting: RunSetting,
    state: str,
    message: str | None,
    *,
    candle: Candle | None = None,
    line: float | None = None,
    direction: int | None = None,
    kind: ExitKind | None = None,
) -> dict[str, Any]:
    """The ``supertrend`` event (JSON-able: prices as strings, times ISO-8601 UTC)."""
    return {
        "run_id": setting.run_id,
        "timeframe": setting.timeframe,
        "state": state,
        "message": message,
        "candle_at": candle.start.isoformat() if candle is not None else None,
        "close": str(candle.close.quantize(Decimal("0.01"), ROUND_HALF_UP)) if candle is not None else None,
        "line": f"{line:.2f}" if line is not None else None,
        "direction": direction,
        "exit_type": kind if kind is not None else setting.kind,
    }


class SupertrendRule:
    """The engine component ``supertrend``; see the module docstring.

    ``risk`` returns the running RiskEngine (build_engine passes a lookup, as the list is built in one
    expression); ``marks`` the shared MarkBook (tick candles); ``registry`` + ``decrypt`` build the feed
    account's client, ``feeds`` (the FeedManager, optional) tells its current account; ``source_for``
    replaces that lookup (tests). ``clock`` is the market clock. Tests drive :meth:`step`.
    """

    name = "supertrend"

    def __init__(
        self,
        database: Database,
        registry: Any | None = None,
        decrypt: Callable[[str], str] | None = None,
        *,
        risk: RiskEngine | Callable[[], RiskEngine | None],
        marks: MarkBook | None = None,
        feeds: Any | None = None,
        bus: LiveBus | None = None,
        clock: Clock | None = None,
        config: SupertrendConfig | None = None,
        calendar: TradingCalendar | None = None,
        source_for: SourceFor | None = None,
    ) -> None:
        self.database = database
        self.registry = registry
        self.decrypt = decrypt
        if isinstance(risk, RiskEngine):
            engine = risk
            self._risk: Callable[[], RiskEngine | None] = lambda: engine
        else:
            self._risk = risk
        self.marks = marks
        self.feeds = feeds
        self.bus = bus
        self.clock = clock or SystemClock()
        self.config = config or SupertrendConfig()
        self.calendar = calendar or default_calendar()
        self._source_for = source_for
        self.ticks = TickCandles()
        self.builder = PremiumSeriesBuilder(calendar=self.calendar, ticks=self.ticks)
        self.tracks: dict[int, _Track] = {}
        self._accounts: dict[int, list[_Account]] = {}
        self._last_reload = 0.0
        self.evaluations = 0

    # ------------------------------------------------------------------------------ lifecycle

    async def run(self, stop: asyncio.Event) -> None:
        """Listen to marks (tick candles) and step until ``stop``."""
        self.attach()
        try:
            while not stop.is_set():
                try:
                    await self.step()
                except SQLAlchemyError as exc:
                    log.warning("supertrend: database error: %s", str(exc).splitlines()[0])
                # A faster market clock (the demo's) is stepped as often in market seconds.
                await pause(stop, max(self.config.tick / clock_speed(self.clock), 0.05))
        finally:
            self.detach()

    def attach(self) -> None:
        """Build tick candles from the MarkBook's accepted marks (``run`` does this)."""
        if self.marks is not None:
            self.marks.add_listener(self._on_mark)

    def detach(self) -> None:
        """Stop listening to the MarkBook."""
        if self.marks is not None:
            self.marks.remove_listener(self._on_mark)

    def _on_mark(self, symbol: str, exchange: str, mark: Mark) -> None:
        self.ticks.on_mark(symbol, exchange, mark.at, mark.ltp)

    async def reload(self) -> None:
        """Re-read the open runs' settings and latches and the users' accounts."""
        settings, accounts = await asyncio.to_thread(self._read)
        for run_id in list(self.tracks):
            if run_id not in settings:
                del self.tracks[run_id]
        for run_id, setting in settings.items():
            track = self.tracks.get(run_id)
            if track is None:
                self.tracks[run_id] = _Track(setting)
            else:
                if track.setting.enabled and not setting.enabled:
                    self._publish(event_of(setting, "off", "Supertrend exit is off"))
                if track.setting.timeframe != setting.timeframe:
                    track.done = track.next_try = None
                track.setting = setting
        self._accounts = accounts
        self._last_reload = time.monotonic()

    def _read(self) -> tuple[dict[int, RunSetting], dict[int, list[_Account]]]:
        with self.database.session_factory() as session:
            if self.registry is not None:
                # Clients are built from these account rows: the registry gets the host allow-list first.
                self.registry.set_host_policy(load_host_policy(session))
            rows = session.execute(
                select(StrategyRun, Strategy)
                .join(Strategy, Strategy.id == StrategyRun.strategy_id)
                .where(StrategyRun.ended_at.is_(None))
            ).all()
            settings: dict[int, RunSetting] = {}
            for run, strategy in rows:
                kind: ExitKind | None = None
                if strategy.supertrend_exit_type == "breakout":
                    kind = "breakout"
                elif strategy.supertrend_exit_type == "breakdown":
                    kind = "breakdown"
                settings[run.id] = RunSetting(
                    run_id=run.id,
                    user_id=strategy.user_id,
                    name=strategy.name,
                    enabled=strategy.supertrend_exit_enabled,
                    kind=kind,
                    period=max(int(strategy.supertrend_period), 1),
                    multiplier=float(strategy.supertrend_multiplier),
                    timeframe=strategy.supertrend_timeframe,
                    started_at=run.started_at,
                    triggered_at=run.supertrend_triggered_at,
                )
            accounts: dict[int, list[_Account]] = {}
            users = {s.user_id for s in settings.values() if s.enabled}
            if users and self._source_for is None:
                for a in session.scalars(
                    select(TradingAccount)
                    .where(
                        TradingAccount.user_id.in_(users),
                        TradingAccount.is_active.is_(True),
                        TradingAccount.api_key_encrypted.is_not(None),
                    )
                    .order_by(TradingAccount.is_primary.desc(), TradingAccount.created_at, TradingAccount.id)
                ):
                    accounts.setdefault(a.user_id, []).append(
                        _Account(a.id, a.account_name, a.host_url, a.api_key_encrypted or "")
                    )
            return settings, accounts

    # ----------------------------------------------------------------------------- the loop

    async def step(self) -> None:
        """One pass: reload when due, try exits waiting for a P&L, evaluate every run whose candle is due."""
        if time.monotonic() - self._last_reload >= self.config.reload_seconds:
            await self.reload()
        risk = self._risk()
        if risk is None:
            return
        self._watch(risk)
        for run_id, track in list(self.tracks.items()):
            run = risk.runs.get(run_id)
            if run is None or not track.setting.enabled:
                continue
            if track.pending is not None:
                self._try_fire(risk, run, track)
            now = self.clock.now()
            minutes = timeframe_minutes(track.setting.timeframe)
            due = last_closed_start(now, minutes, self.config.delay, self.calendar)
            if due is None or (track.done is not None and due <= track.done):
                continue
            if candle_end(due, minutes) <= track.setting.started_at:
                track.done = due  # closed before the run began: not this run's state
                continue
            if track.next_try is not None and now < track.next_try:
                continue
            await self._evaluate(risk, run, track, due, now)

    def _watch(self, risk: RiskEngine) -> None:
        keys: set[tuple[str, str, int]] = set()
        for run_id, track in self.tracks.items():
            run = risk.runs.get(run_id)
            if run is None or not track.setting.enabled:
                continue
            minutes = timeframe_minutes(track.setting.timeframe)
            keys.update((e.symbol, e.exchange, minutes) for e in run.executions.values())
        self.ticks.watch(keys)

    async def _evaluate(
        self, risk: RiskEngine, run: RunState, track: _Track, due: datetime, now: datetime
    ) -> None:
        setting = track.setting
        minutes = timeframe_minutes(setting.timeframe)
        legs = legs_of([(e.symbol, e.exchange, e.side, e.filled, e.exited) for e in run.executions.values()])
        if not legs:
            track.done, track.next_try = due, None
            self._publish(event_of(setting, "unknown", "no open legs"))
            return
        source = self._source(setting.user_id)
        if source is None:
            track.done, track.next_try = due, None
            await self._unknown(run, track, "no active account with an API key to read history from")
            return
        series = await self.builder.build(
            legs, setting.timeframe, now, source[0], source_key=source[1], period=setting.period
        )
        self.evaluations += 1
        end = candle_end(due, minutes)
        late_by = now - end
        window = timedelta(seconds=self.config.late_seconds)
        if series.state == "unknown":
            # Alerted at once; a passing failure is retried within the late window like a late candle.
            if late_by < window:
                track.next_try = min(now + timedelta(seconds=self.config.retry_seconds), end + window)
            else:
                track.done, track.next_try = due, None
            await self._unknown(run, track, series.message or "history unavailable")
            return
        if not series.complete_at(due):
            if late_by < window:
                track.next_try = min(now + timedelta(seconds=self.config.retry_seconds), end + window)
                return
            if not series.has(due):
                track.done, track.next_try = due, None
                hhmm = to_ist(due).strftime("%H:%M")
                text = f"the {hhmm} IST candle was not available by close + {self.config.late_seconds:g} s"
                await self._alert(run, f"{setting.name}: Supertrend candle skipped", f"{text}; not evaluated")
                self._publish(event_of(setting, "unknown", f"{text}: skipped"))
                return
        track.done, track.next_try = due, None
        track.alerted.clear()
        candles = [c for c in series.candles if c.start <= due]
        self._decide(risk, run, track, series, candles)

    def _decide(
        self, risk: RiskEngine, run: RunState, track: _Track, series: PremiumSeries, candles: list[Candle]
    ) -> None:
        setting = track.setting
        kind = setting.kind or _net_kind(run)
        last = candles[-1] if candles else None
        if len(candles) < series.needed:
            track.pending = None
            warming = f"warming up: {len(candles)} of {series.needed} closed candles"
            self._publish(event_of(setting, "warming", warming, candle=last, kind=kind))
            return
        assert last is not None  # needed >= 1
        point = supertrend(candles, setting.period, setting.multiplier)[-1]
        if point is None:  # cannot happen past the warm-up (ATR is seeded at ``period`` candles)
            track.pending = None
            return
        latched = self._latched(run, track)
        fires = supertrend_fires(kind, point)
        message: str | None = None
        if latched:
            message = "exited on Supertrend" if track.fired or setting.triggered_at else "latched"
        elif fires:
            message = "exit state"
        self._publish(
            event_of(
                setting, "ok", message, candle=last, line=point.line, direction=point.direction, kind=kind
            )
        )
        if fires and not latched:
            track.pending = (last.start, float(last.close), point.line, kind)
            self._try_fire(risk, run, track)
        else:
            track.pending = None

    def _latched(self, run: RunState, track: _Track) -> bool:
        # In memory: the risk engine's claim (set by ``fire``, dropped again if its write failed, so a
        # later close retries); stored: the run's latch, read back on every reload.
        return track.setting.triggered_at is not None or (CODE, None) in run.fired

    def _try_fire(self, risk: RiskEngine, run: RunState, track: _Track) -> None:
        """Fire the pending exit through the risk engine once the run's P&L is known."""
        assert track.pending is not None
        if self._latched(run, track) or not run.monitoring:
            # Risk monitoring switched off on the strategy: no rule exits, Supertrend included (the
            # state is still published). A later close re-arms the exit if the state still holds.
            track.pending = None
            return
        targets = sorted(
            e.id
            for e in run.executions.values()
            if e.status in _CLAIMABLE
            and e.id not in run.claimed
            and (e.status == "pending" or e.open_units > 0)
        )
        if not targets:
            track.pending = None  # every execution is already exiting under another rule
            return
        now = self.clock.now()
        marks: dict[int, Decimal | None] = {}
        for e in run.executions.values():
            usable = risk.marks.usable(e.symbol, e.exchange, now)
            marks[e.id] = usable.ltp if usable is not None else None
        pnl = risk.pnl_of(run, marks)
        total = pnl.aggregate.total
        if pnl.unknown or total is None:
            return  # like every run rule: not on an unknown P&L; tried again next step
        _, close, line, kind = track.pending
        sign = ">" if kind == "breakout" else "<"
        detail = f"{kind}: close {close:.2f} {sign} ST {line:.2f}"
        threshold = Decimal(f"{line:.2f}")
        track.pending = None
        track.fired = True
        risk.fire(run, Breach(CODE, total, threshold, detail), targets)

    # ---------------------------------------------------------------------------- sources

    def _source(self, user_id: int) -> tuple[HistorySource, Any] | None:
        if self._source_for is not None:
            return self._source_for(user_id)
        accounts = self._accounts.get(user_id, [])
        if not accounts or self.registry is None or self.decrypt is None:
            return None
        chosen = accounts[0]
        if self.feeds is not None:
            current = self.feeds.status(user_id).account_id
            chosen = next((a for a in accounts if a.id == current), chosen)
        try:
            client = self.registry.client(
                chosen.id, chosen.host_url, self.decrypt(chosen.api_key_encrypted), name=chosen.name
            )
        except ValueError as exc:
            log.warning("supertrend: account %s has no usable client: %s", chosen.id, exc)
            return None
        return client, chosen.id

    # ---------------------------------------------------------------------------- outputs

    async def _unknown(self, run: RunState, track: _Track, message: str) -> None:
        track.pending = None
        self._publish(event_of(track.setting, "unknown", message))
        if message not in track.alerted:
            track.alerted.add(message)
            await self._alert(run, f"{track.setting.name}: Supertrend unknown", f"{message}; no exit")

    async def _alert(self, run: RunState, title: str, text: str) -> None:
        now = self.clock.now()

        def write() -> None:
            with self.database.session() as session:
                raise_alert(
                    session,
                    user_id=run.user_id,
                    kind=ALERT_KIND,
                    title=title,
                    details=text,
                    now=now,
                    run_id=run.id,
                )

        try:
            await asyncio.to_thread(write)
        except SQLAlchemyError as exc:
            log.warning(
                "supertrend: could not record the alert for run %s: %s", run.id, str(exc).splitlines()[0]
            )
        if self.bus is not None:
            self._send(
                f"user:{run.user_id}:alerts", ALERT_KIND, {"run_id": run.id, "title": title, "message": text}
            )

    def _publish(self, event: dict[str, Any]) -> None:
        self._send(f"run:{event['run_id']}:risk", "supertrend", event)

    def _send(self, topic: str, event: str, data: dict[str, Any]) -> None:
        if self.bus is None:
            return
        try:
            self.bus.publish(topic, event, data)
        except Exception:  # the bus is display only: a broken one must not stop protection
            log.exception("supertrend: could not publish %s on %s", event, topic)


def _net_kind(run: RunState) -> ExitKind:
    """``breakout`` for a net credit at entry (SELL premium above BUY), else ``breakdown``."""
    net = Decimal(0)
    for e in run.executions.values():
        if e.entry_price is None or e.filled <= 0:
            continue
        value = e.entry_price * e.filled
        net += value if e.side == "SELL" else -value
    return "breakout" if net >= 0 else "breakdown"


__all__ = [
    "RunSetting",
    "SupertrendConfig",
    "SupertrendRule",
    "event_of",
    "last_closed_start",
    "risk_component",
    "supertrend_rule",
]
