"""The feed manager (PRODUCT §7.1, §7.3, §7.4): market data for the engine, from one WebSocket per user.

* **Feed account.** Each user with something to watch gets one market-data WebSocket, on the user's
  primary active account first, then the other active accounts by creation. Accounts the account sync
  reports down (``failed``/``error``/``auth_failed``) come after the healthy ones.
* **Subscriptions** are reference-counted per (symbol, exchange, mode): :meth:`FeedManager.want` /
  :meth:`FeedManager.release` by owner, one upstream subscription per key and mode, unsubscribed in the
  mode used; after a reconnect or a failover the connection starts empty and everything wanted is
  subscribed once. The engine's own owners, refreshed from the database every ``refresh_seconds``: every
  symbol of a ``pending``/``active``/``exiting``/``error`` execution, and the index spot (NSE_INDEX /
  BSE_INDEX) of each instrument with an open run, both in quote mode.
* **Ticks** become :class:`~algomirror.engine.marks.Mark` s (source ``"ws"``). A zero or negative price,
  or a tick stamped more than ``stale_after`` seconds away from the market clock, is discarded and
  counted (:class:`FeedCounters`).
* **Health.** A feed is healthy while its socket is open and authenticated and, in market hours with
  something subscribed, a message arrived within ``silent_after`` seconds (monotonic time). A closed or
  silent feed reconnects with jittered backoff (1, 2, 4 s …, capped at 30 s); after
  ``failures_before_failover`` failures in a row, an authentication error, or the account sync reporting
  the feed account down, it fails over to the next usable account (the failing one rests
  ``account_rest_seconds``) and records a ``failover_events`` row. While on a backup the primary is
  tried every ``primary_check_seconds`` and the feed returns to it once it connects (also recorded).
  ``websocket_connections`` keeps one row per feed account (``feed:<account id>``) with its status,
  connect/disconnect times, messages of the current connection and the last message time.
* **REST fallback.** While a user has no healthy feed, the symbols of that user's open executions are
  quoted (with a healthy feed, only those it leaves without a usable mark) with one ``multiquotes`` call
  per ``rest_interval`` on the first usable account (the last good one first; a failing account rests
  ``account_rest_seconds``; at most ``rest_tries`` accounts per cycle), as marks with source ``"rest"``
  (usable for 5 s), in any session.
* **Status** is published on the live bus as topic ``user:{id}:feed``, event ``status`` (per user: state,
  feed account, last message age, subscriptions, counters) on every change and every
  ``status_seconds``.

Modules: this one is the component (subscriptions, feed loop, failover, status);
:mod:`~algomirror.engine.feed_types` its vocabulary and configuration,
:mod:`~algomirror.engine.feed_rest` the REST fallback, :mod:`~algomirror.engine.feed_records` its database
reads and writes (all re-exported here where they were public).

Stored timestamps come from the market clock (the demo's simulated one); waits and ages use the
monotonic clock. API keys are decrypted per stored key, never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from algomirror.broker.registry import ClientRegistry
from algomirror.db.session import Database
from algomirror.domain.calendar import TradingCalendar, default_calendar
from algomirror.domain.timeutil import Clock, SystemClock
from algomirror.engine.feed_records import load_feed_inputs, write_connection_row, write_failover_row
from algomirror.engine.feed_rest import RestFallback
from algomirror.engine.feed_types import (
    DOWN_STATUSES,
    MARKET_EXCHANGES,
    MODE_DEPTH,
    MODE_LTP,
    MODE_QUOTE,
    WATCHED_EXECUTION_STATUSES,
    Connect,
    FeedAccount,
    FeedConfig,
    FeedConn,
    FeedCounters,
    FeedStatus,
    Key,
    SubKey,
    UserFeed,
    backoff_delay,
    feed_topic,
)
from algomirror.engine.marks import Mark, MarkBook

log = logging.getLogger(__name__)


class FeedManager(RestFallback):
    """The engine component ``feeds`` (see the module docstring).

    ``decrypt`` turns a stored key into the API key (raises ValueError when it cannot). ``marks`` is the
    engine's shared :class:`MarkBook` (a new one when None). ``market_clock`` decides market hours,
    staleness and stored times (default: the system clock). ``bus`` is a live bus (anything with
    ``publish(topic, event, data)``) or None. ``connect(url, api_key)`` opens an authenticated feed
    connection (default: :func:`algomirror.broker.feed_client.open_feed`), raising
    ``FeedAuthError`` for a refused key and ``FeedClosed`` (or OSError/TimeoutError) otherwise.
    """

    name = "feeds"

    def __init__(
        self,
        database: Database,
        registry: ClientRegistry,
        decrypt: Callable[[str], str],
        *,
        marks: MarkBook | None = None,
        market_clock: Clock | None = None,
        bus: Any | None = None,
        connect: Connect | None = None,
        config: FeedConfig | None = None,
        calendar: TradingCalendar | None = None,
    ) -> None:
        self.database = database
        self.registry = registry
        self.marks = marks if marks is not None else MarkBook()
        self.clock: Clock = market_clock or SystemClock()
        self.bus = bus
        self.config = config or FeedConfig()
        self.calendar = calendar or default_calendar()
        self.counters = FeedCounters()
        self._decrypt = decrypt
        self._connect: Connect = connect or self._open_feed
        # Set by the risk engine: False while a rule evaluation is in progress, when the feed must not
        # move back to the primary (PRODUCT §7.3). None = always allowed.
        self.switch_guard: Callable[[], bool] | None = None
        self._keys: dict[int, tuple[str, str]] = {}
        self._lock = threading.Lock()
        # owner -> user id (None = the default user) -> wanted keys per mode
        self._owners: dict[str, tuple[int | None, dict[int, frozenset[Key]]]] = {}
        self._accounts: dict[int, list[FeedAccount]] = {}
        self._at_risk: dict[int, frozenset[Key]] = {}
        self._feeds: dict[int, UserFeed] = {}
        self._last_status: dict[int, tuple[Any, ...]] = {}
        self._last_status_at: dict[int, float] = {}
        # The latest tick per key (bid/ask/volume for pages such as the option chain).
        self.last_ticks: dict[Key, Any] = {}

    # ------------------------------------------------------------------------------ subscriptions

    def want(
        self, owner: str, symbols: Iterable[tuple[str, str]], mode: int, *, user_id: int | None = None
    ) -> None:
        """Make ``owner`` want ``symbols`` ((symbol, exchange) pairs) at ``mode`` (1 LTP, 2 quote, 3 depth)
        on ``user_id``'s feed (None: the first user with an active account). Replaces what ``owner``
        wanted at that mode before; an empty ``symbols`` drops that mode. Thread-safe; the feed
        (un)subscribes within ``check_interval``. Raises ValueError for an unknown mode."""
        if mode not in (MODE_LTP, MODE_QUOTE, MODE_DEPTH):
            raise ValueError(f"unknown feed mode {mode!r}")
        keys = frozenset((s, e) for s, e in symbols)
        with self._lock:
            _, modes = self._owners.get(owner, (user_id, {}))
            modes = dict(modes)
            if keys:
                modes[mode] = keys
            else:
                modes.pop(mode, None)
            if modes:
                self._owners[owner] = (user_id, modes)
            else:
                self._owners.pop(owner, None)

    def release(self, owner: str) -> None:
        """Drop everything ``owner`` wanted (unknown owners are ignored). Thread-safe."""
        with self._lock:
            self._owners.pop(owner, None)

    def ref_count(self, symbol: str, exchange: str, mode: int, *, user_id: int | None = None) -> int:
        """How many owners want (symbol, exchange) at ``mode`` on ``user_id``'s feed."""
        target = self._resolve_user(user_id)
        with self._lock:
            return sum(
                1
                for owner_user, modes in self._owners.values()
                if self._resolve_user(owner_user) == target and (symbol, exchange) in modes.get(mode, ())
            )

    def wanted(self, user_id: int) -> set[SubKey]:
        """The upstream subscriptions ``user_id``'s feed should hold: one per (symbol, exchange, mode)."""
        with self._lock:
            owners = list(self._owners.values())
        result: set[SubKey] = set()
        for owner_user, modes in owners:
            if self._resolve_user(owner_user) != user_id:
                continue
            for mode, keys in modes.items():
                result.update((s, e, mode) for s, e in keys)
        return result

    def _resolve_user(self, user_id: int | None) -> int | None:
        if user_id is not None:
            return user_id
        users = sorted(u for u, accounts in self._accounts.items() if accounts)
        return users[0] if users else None

    # ------------------------------------------------------------------------------ status

    def status(self, user_id: int) -> FeedStatus:
        """The user's feed now (``idle`` when it has none)."""
        feed = self._feeds.get(user_id)
        counters = asdict(self.counters)
        if feed is None:
            return FeedStatus(user_id, "idle", None, None, 0, False, counters)
        age = None if feed.last_message is None else round(time.monotonic() - feed.last_message, 3)
        return FeedStatus(
            user_id,
            feed.state,
            feed.account.id if feed.account is not None else None,
            age,
            len(feed.subscribed),
            feed.rest_active,
            counters,
        )

    def healthy(self, user_id: int) -> bool:
        """Whether ``user_id``'s feed is healthy now."""
        feed = self._feeds.get(user_id)
        return feed is not None and feed.healthy

    def _publish(self, feed: UserFeed, *, force: bool = False) -> None:
        if self.bus is None:
            return
        status = self.status(feed.user_id)
        signature = (status.state, status.account_id, status.subscriptions, status.rest)
        now = time.monotonic()
        due = now - self._last_status_at.get(feed.user_id, 0.0) >= self.config.status_seconds
        if not force and not due and self._last_status.get(feed.user_id) == signature:
            return
        self._last_status[feed.user_id] = signature
        self._last_status_at[feed.user_id] = now
        try:
            self.bus.publish(feed_topic(feed.user_id), "status", status.as_dict())
        except Exception:  # live data is a view: a bus failure must not stop the feed (logged)
            log.exception("feed: publishing the status failed")

    def _set_state(self, feed: UserFeed, state: str, *, healthy: bool) -> None:
        changed = feed.state != state or feed.healthy != healthy
        feed.state = state
        if feed.healthy != healthy or changed:
            feed.healthy = healthy
            if feed.account is not None:
                self.marks.set_feed_health(feed.account.id, healthy)
        self._publish(feed, force=changed)

    # ------------------------------------------------------------------------------ lifecycle

    async def run(self, stop: asyncio.Event) -> None:
        """Refresh the engine's wants and the accounts, run one feed task per user with something wanted
        and the REST fallback, until ``stop`` is set."""
        rest = asyncio.create_task(self._rest_loop(stop), name="feeds:rest")
        try:
            while not stop.is_set():
                if rest.done():
                    rest.result()  # a crashed fallback crashes the component: the service restarts it
                await self.refresh_once()
                self._start_feeds(stop)
                await self._wait(stop, self.config.refresh_seconds)
        finally:
            tasks = [rest, *(f.task for f in self._feeds.values() if f.task is not None)]
            if stop.is_set():
                # The feeds close their sockets and record the disconnect when they see stop.
                await asyncio.wait(tasks, timeout=2.0)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for feed in self._feeds.values():
                feed.task = None
                if feed.account is not None:
                    self.marks.set_feed_health(feed.account.id, False)
                feed.healthy = False
            self._keys.clear()

    def _start_feeds(self, stop: asyncio.Event) -> None:
        for user_id, accounts in self._accounts.items():
            if not accounts or not self.wanted(user_id):
                continue
            feed = self._feeds.setdefault(user_id, UserFeed(user_id))
            if feed.task is not None and feed.task.done():
                if not feed.task.cancelled() and feed.task.exception() is not None:
                    log.error("feed of user %s crashed; restarting", user_id, exc_info=feed.task.exception())
                feed.task = None
            if feed.task is None:
                feed.task = asyncio.create_task(self._feed_loop(feed, stop), name=f"feeds:user-{user_id}")

    async def refresh_once(self) -> None:
        """Re-read the accounts and the engine's own wants from the database (logged, not raised, when
        the database fails)."""
        try:
            accounts, at_risk, spots = await asyncio.to_thread(load_feed_inputs, self.database, self.registry)
        except SQLAlchemyError as exc:
            log.warning("feeds: cannot read accounts and executions: %s", str(exc).splitlines()[0])
            return
        self._accounts = accounts
        self._at_risk = {u: frozenset(keys) for u, keys in at_risk.items()}
        users = set(accounts) | set(at_risk) | set(spots)
        for user_id in users:
            self.want(f"engine:executions:{user_id}", at_risk.get(user_id, ()), MODE_QUOTE, user_id=user_id)
            self.want(f"engine:spots:{user_id}", spots.get(user_id, ()), MODE_QUOTE, user_id=user_id)
        with self._lock:
            stale_owners = [
                owner
                for owner, (user_id, _) in self._owners.items()
                if owner.startswith("engine:") and user_id not in users
            ]
        for owner in stale_owners:
            self.release(owner)

    async def _open_feed(self, url: str, api_key: str) -> FeedConn:
        # Imported lazily: the WebSocket client pulls in the websockets library, only the engine needs it.
        from algomirror.broker.feed_client import open_feed

        return await open_feed(url, api_key, timeout=self.config.connect_timeout)

    # ------------------------------------------------------------------------------ accounts

    def _api_key(self, account: FeedAccount) -> str:
        """Raises ValueError for a stored key that cannot be decrypted."""
        cached = self._keys.get(account.id)
        if cached is not None and cached[0] == account.api_key_encrypted:
            return cached[1]
        key = self._decrypt(account.api_key_encrypted)
        self._keys[account.id] = (account.api_key_encrypted, key)
        return key

    def _candidates(self, user_id: int) -> list[FeedAccount]:
        """Primary first, then by creation; accounts the sync reports down last."""
        accounts = self._accounts.get(user_id, [])
        return [a for a in accounts if a.status not in DOWN_STATUSES] + [
            a for a in accounts if a.status in DOWN_STATUSES
        ]

    def _current(self, account: FeedAccount) -> FeedAccount | None:
        """The freshly loaded row of ``account`` (None when deactivated or deleted)."""
        return next((a for a in self._accounts.get(account.user_id, []) if a.id == account.id), None)

    def _choose(self, feed: UserFeed, *, exclude: int | None = None) -> FeedAccount | None:
        """The first candidate not resting (other than ``exclude``), else the one whose rest ends first."""
        now = time.monotonic()
        candidates = [a for a in self._candidates(feed.user_id) if a.id != exclude]
        for account in candidates:
            if feed.resting.get(account.id, 0.0) <= now:
                return account
        if not candidates:
            return None
        return min(candidates, key=lambda a: feed.resting.get(a.id, 0.0))

    # ------------------------------------------------------------------------------ the feed loop

    async def _feed_loop(self, feed: UserFeed, stop: asyncio.Event) -> None:
        while not stop.is_set():
            fresh = self._current(feed.account) if feed.account is not None else None
            if fresh is not None:
                feed.account = fresh  # a re-saved key or URL is used from the next connection
            else:
                previous = feed.account
                feed.account = self._choose(feed)
                feed.failures = 0
                if previous is not None and feed.account is not None and previous.id != feed.account.id:
                    await self._record_failover(
                        previous, feed.account, "feed account deactivated", True, None
                    )
            account = feed.account
            if account is None:
                self._set_state(feed, "down", healthy=False)
                await self._wait(stop, self.config.refresh_seconds)
                continue
            self._set_state(feed, "connecting" if feed.failures == 0 else "reconnecting", healthy=False)
            reason, auth = await self._attempt(feed, account, stop)
            if stop.is_set():
                return
            if reason is None:
                continue  # switched accounts inside the session (primary restored, account down)
            feed.failures += 1
            self.counters.reconnects += 1
            self._set_state(feed, "silent" if reason == "silent" else "reconnecting", healthy=False)
            if auth or feed.failures >= self.config.failures_before_failover:
                feed.resting[account.id] = time.monotonic() + self.config.account_rest_seconds
                backup = self._choose(feed, exclude=account.id)
                if backup is not None and feed.resting.get(backup.id, 0.0) <= time.monotonic():
                    # The category only ("connect failed", "connection lost", "silent", "auth failed"):
                    # the details are in the log.
                    why = (
                        f"{reason.split(':')[0]} ({feed.failures} failure{'s' if feed.failures > 1 else ''})"
                    )
                    await self._record_failover(account, backup, why, True, None)
                    feed.account, feed.failures, feed.outage_recorded = backup, 0, False
                    continue
                if not feed.outage_recorded:
                    await self._record_failover(
                        account, None, reason.split(":")[0], False, f"no healthy backup account; {reason}"
                    )
                    feed.outage_recorded = True
            delay = backoff_delay(feed.failures, base=self.config.backoff_base, cap=self.config.backoff_cap)
            await self._wait(stop, delay)

    async def _attempt(
        self, feed: UserFeed, account: FeedAccount, stop: asyncio.Event
    ) -> tuple[str | None, bool]:
        """Connect to ``account`` and serve until the connection ends. Returns (failure reason, whether it
        was an authentication error), or (None, False) when the session ended by switching accounts."""
        from algomirror.broker.feed_client import FeedAuthError, FeedError

        if feed.handover is not None:
            conn, feed.handover = feed.handover, None
            return await self._serve(feed, account, conn, stop)
        await self._write_connection(account, status="connecting")
        try:
            api_key = self._api_key(account)
        except ValueError:
            await self._write_connection(account, status="failed", disconnected=True)
            log.warning("feed %s (%s): the stored API key cannot be read", account.id, account.name)
            return "stored API key unreadable", True
        try:
            conn = await asyncio.wait_for(
                self._connect(account.ws_url, api_key), timeout=self.config.connect_timeout + 1
            )
        except FeedAuthError as exc:
            await self._write_connection(account, status="failed", disconnected=True)
            log.warning("feed %s (%s): %s", account.id, account.name, exc.message)
            return f"auth failed: {exc.message}", True
        except (FeedError, OSError, TimeoutError) as exc:
            await self._write_connection(account, status="error", disconnected=True)
            text = exc.message if isinstance(exc, FeedError) else f"{type(exc).__name__}: {exc}"
            log.info("feed %s (%s): cannot connect: %s", account.id, account.name, text)
            return f"connect failed: {text}", False
        return await self._serve(feed, account, conn, stop)

    async def _serve(
        self, feed: UserFeed, account: FeedAccount, conn: FeedConn, stop: asyncio.Event
    ) -> tuple[str | None, bool]:
        from algomirror.broker.feed_client import FeedError

        cfg = self.config
        feed.subscribed = set()
        feed.refused.clear()
        feed.last_message = time.monotonic()
        messages = 0
        got_tick = False
        await self._write_connection(account, status="authenticated", connected=True)
        log.info("feed %s (%s): connected for user %s", account.id, account.name, feed.user_id)

        async def read() -> None:
            nonlocal messages, got_tick
            async for tick in conn.ticks():
                feed.last_message = time.monotonic()
                messages += 1
                got_tick = True
                if not feed.healthy:
                    # Healthy from its first tick on, not only at the next watchdog round.
                    self._set_state(feed, "connected", healthy=True)
                self._on_tick(account.id, tick)

        reader = asyncio.create_task(read(), name=f"feeds:reader-{account.id}")
        started = time.monotonic()
        next_heartbeat = started + cfg.heartbeat_seconds
        next_primary = started + cfg.primary_check_seconds
        next_down_switch = started
        flushed = 0
        switched = False
        outcome: tuple[str | None, bool] = ("stopped", False)
        try:
            while not stop.is_set():
                if reader.done():
                    exc = reader.exception() if not reader.cancelled() else None
                    text = exc.message if isinstance(exc, FeedError) else repr(exc)
                    log.info("feed %s (%s): %s", account.id, account.name, text)
                    outcome = (f"connection lost: {text}", False)
                    break
                await self._sync_subscriptions(feed, conn)
                now = time.monotonic()
                market_open = self._market_open()
                self.marks.set_market_open(market_open)
                watched = market_open and bool(feed.subscribed)
                age = now - (feed.last_message or started)
                if watched and age > cfg.silent_after:
                    log.warning(
                        "feed %s (%s): no message for %.1f s in market hours", account.id, account.name, age
                    )
                    outcome = ("silent", False)
                    break
                # Healthy = a message within silent_after (PRODUCT §7.3); a fresh connection is not healthy
                # before its first tick, so the REST fallback keeps marking until the feed proves itself.
                healthy = not watched or got_tick
                if healthy:
                    # The connection proved itself: the next failure starts the backoff afresh.
                    feed.failures = 0
                    feed.outage_recorded = False
                self._set_state(feed, "connected" if healthy else "waiting", healthy=healthy)
                fresh = self._current(account)
                if fresh is None or (fresh.status in DOWN_STATUSES and now >= next_down_switch):
                    next_down_switch = now + cfg.primary_check_seconds
                    backup = self._choose(feed, exclude=account.id)
                    reason = "feed account deactivated" if fresh is None else f"account {fresh.status}"
                    if backup is not None and backup.status not in DOWN_STATUSES:
                        switched = await self._switch(feed, account, backup, conn, reason)
                    if switched or fresh is None:
                        outcome = (None, False)
                        break
                if now >= next_primary:
                    next_primary = now + cfg.primary_check_seconds
                    primary = self._choose(feed)
                    if (
                        primary is not None
                        and primary.id != account.id
                        and self._prefer(primary, account)
                        and (self.switch_guard is None or self.switch_guard())
                    ):
                        switched = await self._switch(feed, account, primary, conn, "primary restored")
                        if switched:
                            outcome = (None, False)
                            break
                if now >= next_heartbeat or messages - flushed > 1000:
                    next_heartbeat = now + cfg.heartbeat_seconds
                    flushed = messages
                    await self._write_connection(account, status="authenticated", messages=messages)
                await asyncio.wait({reader}, timeout=cfg.check_interval)
        except FeedError as exc:
            log.info("feed %s (%s): %s", account.id, account.name, exc.message)
            outcome = (f"connection lost: {exc.message}", False)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, FeedError):
                await reader
            if not switched:  # a switch closed and recorded the old connection already
                self.marks.set_feed_health(account.id, False)
                feed.healthy = False
                with contextlib.suppress(FeedError, OSError):
                    await conn.close()
                status = "error" if outcome[0] is not None and outcome[0] != "stopped" else "disconnected"
                await self._write_connection(account, status=status, messages=messages, disconnected=True)
        return outcome

    def _prefer(self, candidate: FeedAccount, current: FeedAccount) -> bool:
        """Whether ``candidate`` comes before ``current`` in the feed order."""
        order = [a.id for a in self._candidates(current.user_id)]
        return candidate.id in order and (
            current.id not in order or order.index(candidate.id) < order.index(current.id)
        )

    async def _switch(
        self, feed: UserFeed, old: FeedAccount, new: FeedAccount, old_conn: FeedConn, reason: str
    ) -> bool:
        """Open ``new`` and only then close ``old_conn`` (the old feed keeps marking while the new account
        is tried); the feed loop serves the new connection next, subscribing everything wanted on it.
        Returns False (and stays on ``old``) when ``new`` cannot be opened."""
        from algomirror.broker.feed_client import FeedError

        try:
            conn = await asyncio.wait_for(
                self._connect(new.ws_url, self._api_key(new)), timeout=self.config.connect_timeout + 1
            )
        except (FeedError, OSError, TimeoutError, ValueError) as exc:
            text = exc.message if isinstance(exc, FeedError) else f"{type(exc).__name__}: {exc}"
            log.info("feed: %s (%s) not usable yet: %s", new.id, new.name, text)
            if reason != "primary restored":
                await self._record_failover(old, new, reason, False, text)
            return False
        with contextlib.suppress(FeedError, OSError):
            await old_conn.close()
        self.marks.set_feed_health(old.id, False)
        await self._write_connection(old, status="disconnected", disconnected=True)
        await self._record_failover(old, new, reason, True, None)
        feed.account, feed.failures, feed.outage_recorded = new, 0, False
        feed.handover = conn
        return True

    async def _sync_subscriptions(self, feed: UserFeed, conn: FeedConn) -> None:
        """Bring the connection's subscriptions to what is wanted: subscribe what is missing, unsubscribe
        (in the mode used) what nobody wants. Raises FeedClosed when the socket is gone."""
        from algomirror.broker.feed_client import FeedClosed, FeedError

        wanted = self.wanted(feed.user_id)
        now = time.monotonic()
        add = {k for k in wanted - feed.subscribed if feed.refused.get(k, 0.0) <= now}
        remove = feed.subscribed - wanted
        for mode in sorted({m for _, _, m in remove}):
            keys = sorted((s, e) for s, e, m in remove if m == mode)
            try:
                await conn.unsubscribe(keys, mode)
            except FeedClosed:
                raise
            except FeedError as exc:
                # Refused: nobody wants the ticks any more, and a reconnect starts clean anyway.
                log.warning("feed: unsubscribe of %d symbols refused: %s", len(keys), exc.message)
            feed.subscribed.difference_update((s, e, mode) for s, e in keys)
        for mode in sorted({m for _, _, m in add}):
            keys = sorted((s, e) for s, e, m in add if m == mode)
            if not feed.subscribed:
                # The silence timer starts when there is something to hear.
                feed.last_message = time.monotonic()
            results = await conn.subscribe(keys, mode)
            for key in keys:
                error = results.get(key)
                sub = (key[0], key[1], mode)
                if error is None:
                    feed.subscribed.add(sub)
                    feed.refused.pop(sub, None)
                else:
                    feed.refused[sub] = now + self.config.account_rest_seconds
                    log.warning("feed: subscription %s:%s mode %d refused: %s", key[1], key[0], mode, error)

    def _on_tick(self, account_id: int, tick: Any) -> None:
        counters = self.counters
        counters.received += 1
        if tick.ltp is None or tick.ltp <= 0:
            counters.zero_price += 1
            return
        now = self.clock.now()
        if abs((now - tick.at).total_seconds()) > self.config.stale_after:
            counters.stale += 1
            return
        self.last_ticks[(tick.symbol, tick.exchange)] = tick
        mark = Mark(ltp=tick.ltp, at=tick.at, source="ws", account_id=account_id)
        if self.marks.update(tick.symbol, tick.exchange, mark):
            counters.accepted += 1
        else:
            counters.out_of_order += 1

    def _market_open(self) -> bool:
        now = self.clock.now()
        return any(self.calendar.is_open(exchange, now) for exchange in MARKET_EXCHANGES)

    # ------------------------------------------------------------------------------ records

    async def _write_connection(
        self,
        account: FeedAccount,
        *,
        status: str,
        connected: bool = False,
        disconnected: bool = False,
        messages: int | None = None,
    ) -> None:
        now = self.clock.now()

        try:
            await asyncio.to_thread(
                write_connection_row,
                self.database,
                account.id,
                now,
                status,
                connected,
                disconnected,
                messages,
            )
        except SQLAlchemyError as exc:
            log.warning("feed %s: cannot record the connection: %s", account.id, str(exc).splitlines()[0])

    async def _record_failover(
        self, old: FeedAccount | None, new: FeedAccount | None, reason: str, success: bool, error: str | None
    ) -> None:
        now = self.clock.now()
        if success:
            self.counters.failovers += 1
        log.log(
            logging.WARNING if not success or reason != "primary restored" else logging.INFO,
            "feed failover %s -> %s (%s)%s",
            old.id if old else None,
            new.id if new else None,
            reason,
            "" if success else f": failed: {error}",
        )

        try:
            await asyncio.to_thread(
                write_failover_row,
                self.database,
                old.id if old else None,
                new.id if new else None,
                reason,
                success,
                error,
                now,
            )
        except SQLAlchemyError as exc:
            log.warning("feed: cannot record the failover: %s", str(exc).splitlines()[0])


__all__ = [
    "MODE_DEPTH",
    "MODE_LTP",
    "MODE_QUOTE",
    "WATCHED_EXECUTION_STATUSES",
    "FeedAccount",
    "FeedConfig",
    "FeedCounters",
    "FeedManager",
    "FeedStatus",
    "UserFeed",
    "backoff_delay",
    "feed_topic",
]
