"""Background account sync (PRODUCT §3): funds, orderbook, tradebook, positionbook and holdings of every
active account, mirrored into the database, with per-account connection status (PRODUCT §2).

* Every account has its own asyncio task and timer: a slow, hanging or broken account delays nobody.
  The five reads of one cycle run concurrently and are stored independently, each in its own short
  database transaction on a worker thread; no transaction is ever held across a network call.
* The interval is ``interval_market`` while NSE/NFO is open (domain calendar, evaluated on the injected
  market clock) and ``interval_closed`` otherwise.
* The account list is re-read every ``refresh_seconds``: new accounts start, deactivated or deleted ones
  stop, and a changed API key clears ``auth_failed`` (the new key gets its chance).
* Status (PRODUCT §2): a cycle where every read succeeded → ``connected`` (logs ``connection_restored``
  when the account was down). A cycle with a failed read counts one failure; after
  ``failure_threshold`` in a row the account becomes ``failed`` when the server answered with an error
  (a rejection, 4xx/5xx) or ``error`` for network errors, timeouts and unreadable replies (logs
  ``connection_lost`` once). A 401/403 makes it ``auth_failed`` at once (logs ``auth_failed``).
* Not failures: a read refused with 429 (:class:`RateLimitedError`: the server's window, or our own
  scheduler, was full; nothing was executed) is simply left for the next cycle; a read the broker does
  not support (404/405/501, or a "not supported"/"module not found" reply: some brokers have no
  holdings) is logged once and skipped for ``unsupported_retry`` seconds. ``funds`` is never treated as
  unsupported: a host that cannot answer it is not a usable account.
* An ``auth_failed`` account is re-probed every ``auth_probe_interval`` seconds with one ``funds`` call
  (the client's halt cleared first), so a broker re-login behind the same key recovers it
  (``connection_restored``); a changed API key resumes it at once.
* An account that is down (``failed``/``error``) is retried every ``down_interval`` seconds at most.
* A failed read leaves that table's rows untouched (their ``updated_at`` shows their age); see
  :mod:`algomirror.engine.book_mirror` for how successful reads are mirrored (only today's orders and
  trades are compared, so a cycle's cost does not grow with the account's history).
* A user's primary account also reads the NIFTY, BANKNIFTY and SENSEX quotes for the header's strip
  once its books are read (:mod:`algomirror.engine.index_quotes`); that read never affects the status.
* Every timestamp written and every "now" (fetch time, ``last_sync_at``, the IST day, probe and
  unsupported deadlines) comes from the injected ``clock``; only waits use the monotonic clock.
* Clients come from the engine's :class:`~algomirror.broker.registry.ClientRegistry` (one broker path
  per account: sync's reads share the account's rate budget with execution and commands, at READ
  priority). The API key is decrypted once per stored key and never logged.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError

from algomirror.broker import wire
from algomirror.broker.client import OpenAlgoClient, RetryPolicy, Timeouts
from algomirror.broker.errors import (
    AuthError,
    BrokerError,
    MalformedResponseError,
    RateLimitedError,
    RejectedError,
    RetryableError,
    ServerError,
)
from algomirror.broker.registry import ClientRegistry
from algomirror.config import Settings
from algomirror.db.models import ActivityLog, TradingAccount
from algomirror.db.session import Database
from algomirror.domain.calendar import TradingCalendar, default_calendar
from algomirror.domain.timeutil import Clock, SystemClock
from algomirror.engine import book_mirror
from algomirror.engine.index_quotes import IndexQuoteReader
from algomirror.engine.pnl_trueup import true_up_pnl
from algomirror.host_settings import load_host_policy

log = logging.getLogger(__name__)

ENDPOINTS = ("funds", "orderbook", "tradebook", "positionbook", "holdings")
DOWN_STATUSES = ("failed", "error", "auth_failed")
# The market whose hours pick the sync interval (options are the product's business).
MARKET_EXCHANGES = ("NFO", "NSE")
# HTTP codes meaning "this server has no such endpoint" (OpenAlgo answers 404 "Broker-specific module not
# found" when the broker's module lacks the function).
UNSUPPORTED_STATUSES = frozenset({404, 405, 501})
_UNSUPPORTED_TEXT = re.compile(r"not supported|not implemented|module not found|not available for", re.I)


@dataclass(frozen=True, slots=True)
class SyncConfig:
    """Seconds unless noted. ``retry`` applies to each read (a 429 or a dropped connection is retried
    once by default; the next cycle is only seconds away)."""

    interval_market: float = 5.0
    interval_closed: float = 60.0
    refresh_seconds: float = 5.0
    failure_threshold: int = 3
    # A down account (failed/error) is retried this often at most: polite to a struggling server, and
    # its connect timeouts do not pile up (PRODUCT §7.2 pings down accounts less often too).
    down_interval: float = 30.0
    # An auth_failed account gets one funds call this often (PRODUCT §7.2: down accounts every 5 min).
    auth_probe_interval: float = 300.0
    # An endpoint the broker does not support is tried again after this long (a server upgrade).
    unsupported_retry: float = 3600.0
    timeouts: Timeouts = field(default_factory=Timeouts)
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(attempts=2, base=0.2, cap=1.0))

    @classmethod
    def from_settings(cls, settings: Settings) -> SyncConfig:
        return cls(
            interval_market=settings.sync_interval_market,
            interval_closed=settings.sync_interval_closed,
            down_interval=max(30.0, settings.sync_interval_market),
            refresh_seconds=min(5.0, settings.sync_interval_market),
            timeouts=Timeouts.from_settings(settings),
        )


@dataclass(frozen=True, slots=True)
class AccountRef:
    """What the sync needs to know about an account, read in one short transaction."""

    id: int
    user_id: int
    name: str
    host_url: str
    api_key_encrypted: str
    status: str
    collateral_included: bool
    is_primary: bool = False


@dataclass
class CycleResult:
    """Outcome of one sync cycle of one account. ``errors`` maps endpoint -> error (the failures that
    count); ``rate_limited`` lists reads refused with 429 and ``unsupported`` the endpoints the broker does
    not support (answered so now, or skipped as remembered), neither counting as a failure; ``skipped``
    says why the account was not called (inactive, deleted, auth_failed before its next probe, no key)."""

    account_id: int
    ok: tuple[str, ...] = ()
    errors: dict[str, BrokerError] = field(default_factory=dict)
    rate_limited: tuple[str, ...] = ()
    unsupported: tuple[str, ...] = ()
    status: str | None = None
    skipped: str | None = None
    seconds: float = 0.0

    @property
    def success(self) -> bool:
        return self.skipped is None and not self.errors


def is_unsupported(endpoint: str, error: BrokerError) -> bool:
    """True when ``error`` says the broker has no ``endpoint`` (see :data:`UNSUPPORTED_STATUSES`), which
    is not a failure of the account. Never for ``funds``, a 401/403 or a 429."""
    if endpoint == "funds" or isinstance(error, AuthError | RateLimitedError):
        return False
    if error.http_status in UNSUPPORTED_STATUSES:
        return True
    return isinstance(error, RejectedError | ServerError) and bool(_UNSUPPORTED_TEXT.search(error.message))


def failure_kind(error: BrokerError) -> str:
    """``failed`` when the server answered with an error reply (rejection, 4xx/5xx, 429), ``error`` for
    network failures, timeouts and unreadable replies (PRODUCT §2). Same rule as the connection test."""
    if isinstance(error, RejectedError):
        return "failed"
    if isinstance(error, RetryableError) and not isinstance(error, MalformedResponseError):
        return "failed" if error.http_status is not None else "error"
    return "error"


class AccountSync:
    """The engine component that keeps every account's books fresh. See the module docstring.

    ``decrypt`` turns ``api_key_encrypted`` into the key (raises ValueError when it cannot).
    ``clock`` gives every stored timestamp and every "now" (default: the system clock), except the
    activity rows' time, which ``activity_clock`` gives (default: ``clock``).
    ``market_clock`` decides market hours (default: ``clock``; the embedded demo passes the paper
    exchange's clock as both, and the system clock for activity). Tests drive it with
    :meth:`sync_account_once` / :meth:`sync_all_once` and close it with :meth:`aclose`.
    """

    name = "account-sync"

    def __init__(
        self,
        database: Database,
        decrypt: Callable[[str], str],
        *,
        config: SyncConfig | None = None,
        clock: Clock | None = None,
        market_clock: Clock | None = None,
        calendar: TradingCalendar | None = None,
        registry: ClientRegistry | None = None,
        activity_clock: Clock | None = None,
    ) -> None:
        self.database = database
        self.config = config or SyncConfig()
        self.clock = clock or SystemClock()
        self.market_clock = market_clock or self.clock
        # Activity rows are the audit trail, on the real clock like the web's own rows, even where the
        # book stamps follow a demo market clock (the factory passes the system clock then).
        self.activity_clock = activity_clock or self.clock
        self.calendar = calendar or default_calendar()
        self._decrypt = decrypt
        # The engine passes its one registry (one broker path per account: the account's rate budget
        # is shared with execution and commands); alone (tests, tools) sync builds its own.
        self.registry = registry or ClientRegistry(timeouts=self.config.timeouts, retry=self.config.retry)
        self._own_registry = registry is None
        # account id -> (encrypted key, decrypted key): decrypt once per stored key, not every cycle.
        self._keys: dict[int, tuple[str, str]] = {}
        # account id -> encrypted key that got the 401/403; a different stored key resumes at once.
        self._auth_failed_keys: dict[int, str] = {}
        # account id -> when its auth_failed key gets its next funds probe (clock time).
        self._next_probe: dict[int, datetime] = {}
        # (account id, endpoint) -> until when the endpoint is skipped as unsupported (clock time).
        self._unsupported: dict[tuple[int, str], datetime] = {}
        self._unsupported_logged: set[tuple[int, str]] = set()
        self._locks: dict[int, asyncio.Lock] = {}
        self._store_locks: dict[int, asyncio.Lock] = {}
        self._index_quotes = IndexQuoteReader(
            database,
            self.clock,
            retry_seconds=self.config.down_interval,
            unsupported_seconds=self.config.unsupported_retry,
            is_unsupported=is_unsupported,
        )
        self._workers: dict[int, asyncio.Task[None]] = {}
        self.cycles = 0  # completed account cycles (for tests and diagnostics)
        self.cycles_by_account: dict[int, int] = {}

    # ------------------------------------------------------------------------------- lifecycle

    async def run(self, stop: asyncio.Event) -> None:
        """Run per-account workers until ``stop`` is set; re-read the account list periodically."""
        try:
            while not stop.is_set():
                await self._reconcile_workers(stop)
                try:
                    await asyncio.wait_for(stop.wait(), timeout=self.config.refresh_seconds)
                except TimeoutError:
                    pass
        finally:
            await self._stop_workers()
            await self.aclose()

    async def aclose(self) -> None:
        """Close the client registry when this object created it (a shared one belongs to the engine)."""
        self._keys.clear()
        if self._own_registry:
            await self.registry.aclose()

    def interval(self) -> float:
        """Seconds between cycles now: market hours on the market clock decide. Outside hours the wait
        never runs past the next session's open, so the first in-session sync is not up to a minute late.
        """
        now = self.market_clock.now()
        if any(self.calendar.is_open(exchange, now) for exchange in MARKET_EXCHANGES):
            return self.config.interval_market
        try:
            opens = min(self.calendar.next_session_start(exchange, now) for exchange in MARKET_EXCHANGES)
        except LookupError:
            return self.config.interval_closed
        until_open = (opens - now).total_seconds()
        return max(self.config.interval_market, min(self.config.interval_closed, until_open))

    async def _reconcile_workers(self, stop: asyncio.Event) -> None:
        try:
            accounts = await asyncio.to_thread(self._load_accounts, None)
        except SQLAlchemyError as exc:
            log.warning("account sync: cannot read the account list: %s", str(exc).splitlines()[0])
            return
        wanted = {a.id for a in accounts if self._eligible(a) is None}
        for account_id in list(self._workers):
            task = self._workers[account_id]
            if account_id not in wanted or task.done():
                if task.done() and not task.cancelled() and task.exception() is not None:
                    log.error("account sync %s: worker crashed", account_id, exc_info=task.exception())
                if not task.done():
                    task.cancel()
                    log.info("account sync: stopped syncing account %s", account_id)
                self._workers.pop(account_id)
        for account_id in sorted(wanted - set(self._workers)):
            self._workers[account_id] = asyncio.create_task(
                self._worker(account_id, stop), name=f"account-sync-{account_id}"
            )

    async def _stop_workers(self) -> None:
        tasks = list(self._workers.values())
        self._workers.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _worker(self, account_id: int, stop: asyncio.Event) -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                result = await self.sync_account_once(account_id)
            except SQLAlchemyError as exc:
                # The database hiccuped (locked, restarted): keep going, the next cycle retries.
                log.warning("account sync %s: database error: %s", account_id, str(exc).splitlines()[0])
                result = None
            if result is not None and result.skipped is not None:
                return  # the reconcile loop restarts us if the account becomes eligible again
            interval = self.interval()
            if result is not None and result.status in ("failed", "error"):
                interval = max(interval, self.config.down_interval)
            wait = max(0.0, interval - (time.monotonic() - started))
            try:
                await asyncio.wait_for(stop.wait(), timeout=wait)
            except TimeoutError:
                pass

    # ------------------------------------------------------------------------------- one cycle

    async def sync_all_once(self) -> list[CycleResult]:
        """One cycle for every active account, concurrently; returns each account's result."""
        accounts = await asyncio.to_thread(self._load_accounts, None)
        return list(await asyncio.gather(*(self.sync_account_once(a.id) for a in accounts)))

    async def sync_account_once(self, account_id: int) -> CycleResult:
        """Fetch the five books of one account, store each successful read and record the status.

        Raises only for database errors (SQLAlchemyError); broker problems are recorded, not raised.
        """
        lock = self._locks.setdefault(account_id, asyncio.Lock())
        async with lock:
            started = time.monotonic()
            result = await self._cycle(account_id)
            result.seconds = time.monotonic() - started
            self.cycles += 1
            self.cycles_by_account[account_id] = self.cycles_by_account.get(account_id, 0) + 1
            return result

    async def _cycle(self, account_id: int) -> CycleResult:
        found = await asyncio.to_thread(self._load_accounts, account_id)
        if not found:
            self._forget(account_id)
            return CycleResult(account_id, skipped="inactive or deleted")
        account = found[0]
        reason = self._eligible(account)
        if reason is not None:
            return CycleResult(account_id, skipped=reason, status=account.status)
        try:
            client = self._client(account)
        except BrokerError as exc:
            return await self._finish(account, CycleResult(account.id, errors={"funds": exc}))
        key_changed = (
            self._auth_failed_keys.get(account.id, account.api_key_encrypted) != account.api_key_encrypted
        )
        if account.status == "auth_failed" and key_changed:
            # The key changed since the 401/403: give the new key its chance at once (a re-saved key
            # may decrypt to the same one, whose shared client is still halted).
            self._clear_auth_failure(account.id)
            client.clear_halt()
            log.info("account sync %s: API key changed, resuming", account.id)
        elif account.status == "auth_failed" or client.halted is not None:
            # A halted client (a 401/403 seen by any user of it, while the stored status says otherwise)
            # would fail every read without calling: one probe decides instead.
            probe = await self._probe(account, client)
            if probe is not None:
                return probe
        now = self.clock.now()
        endpoints = [e for e in ENDPOINTS if self._unsupported.get((account.id, e), now) <= now]
        outcomes = await asyncio.gather(
            *(self._read_and_store(account, client, endpoint) for endpoint in endpoints),
            return_exceptions=True,
        )
        result = CycleResult(account.id)
        ok: list[str] = []
        limited: list[str] = []
        unsupported = [e for e in ENDPOINTS if e not in endpoints]
        for endpoint, outcome in zip(endpoints, outcomes, strict=True):
            if isinstance(outcome, RateLimitedError):
                # Nothing was executed and the server is there: the next cycle reads it again.
                limited.append(endpoint)
                log.info("account sync %s: %s rate limited, left for the next cycle", account.id, endpoint)
            elif isinstance(outcome, BrokerError) and is_unsupported(endpoint, outcome):
                unsupported.append(endpoint)
                self._mark_unsupported(account, endpoint, outcome)
            elif isinstance(outcome, BrokerError):
                result.errors[endpoint] = outcome
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                ok.append(endpoint)
                self._mark_supported(account, endpoint)
        result.ok, result.rate_limited, result.unsupported = tuple(ok), tuple(limited), tuple(unsupported)
        result = await self._finish(account, result)
        if account.is_primary and result.ok and client.halted is None:
            # The header's index strip, read after the books: it never delays them, consumes their
            # retries or counts towards the account's status (see engine/index_quotes.py).
            await self._index_quotes.refresh(account.id, account.api_key_encrypted, client, name=account.name)
        return result

    async def _probe(self, account: AccountRef, client: OpenAlgoClient) -> CycleResult | None:
        """One ``funds`` call for an auth_failed account whose key did not change. None when it worked
        (the caller then runs a normal cycle, which records the recovery); else the cycle's result."""
        # The next probe is scheduled only once this one has an answer: until then the account stays
        # eligible, so the worker running the probe is not stopped half-way by the reconcile loop.
        self._auth_failed_keys[account.id] = account.api_key_encrypted
        # A shared client stays halted after a 401/403 until told otherwise.
        client.clear_halt()
        try:
            await client.call("funds")
        except AuthError as exc:
            log.info("account sync %s: API key still rejected: %s", account.id, exc.message)
            return await self._finish(account, CycleResult(account.id, errors={"funds": exc}))
        except BrokerError as exc:
            # Unreachable or refusing for another reason: the key's state is still unknown, so the
            # status stays as it is (a network error must not turn auth_failed into failed/error).
            log.info("account sync %s: auth probe inconclusive: %s", account.id, exc.message)
            self._schedule_probe(account.id)
            return CycleResult(account.id, errors={"funds": exc}, status=account.status)
        log.info("account sync %s (%s): API key accepted again, resuming", account.id, account.name)
        self._clear_auth_failure(account.id)
        return None

    def _eligible(self, account: AccountRef) -> str | None:
        if not account.api_key_encrypted:
            return "no API key"
        if account.status == "auth_failed":
            failed_key = self._auth_failed_keys.get(account.id)
            if failed_key is not None and failed_key != account.api_key_encrypted:
                return None  # a new key: resume at once
            due = self._next_probe.get(account.id)
            # An unknown failing key (engine restarted) is probed at once.
            if due is not None and self.clock.now() < due:
                return f"auth_failed: API key rejected; next probe at {due.isoformat(timespec='seconds')}"
        return None

    def _schedule_probe(self, account_id: int) -> None:
        self._next_probe[account_id] = self.clock.now() + timedelta(seconds=self.config.auth_probe_interval)

    def _clear_auth_failure(self, account_id: int) -> None:
        self._auth_failed_keys.pop(account_id, None)
        self._next_probe.pop(account_id, None)

    def _forget(self, account_id: int) -> None:
        # The registry's client stays: other engine parts may still act on the account.
        self._keys.pop(account_id, None)
        self._clear_auth_failure(account_id)
        self._index_quotes.forget(account_id)
        for key in [k for k in self._unsupported if k[0] == account_id]:
            self._unsupported.pop(key)
        self._unsupported_logged -= {k for k in self._unsupported_logged if k[0] == account_id}

    def _mark_unsupported(self, account: AccountRef, endpoint: str, error: BrokerError) -> None:
        key = (account.id, endpoint)
        self._unsupported[key] = self.clock.now() + timedelta(seconds=self.config.unsupported_retry)
        if key not in self._unsupported_logged:
            self._unsupported_logged.add(key)
            log.warning(
                "account sync %s (%s): the broker does not support %s (%s); skipped, retried every %.0f s",
                account.id,
                account.name,
                endpoint,
                error.message,
                self.config.unsupported_retry,
            )

    def _mark_supported(self, account: AccountRef, endpoint: str) -> None:
        key = (account.id, endpoint)
        self._unsupported.pop(key, None)
        if key in self._unsupported_logged:
            self._unsupported_logged.discard(key)
            log.info("account sync %s (%s): %s answers again", account.id, account.name, endpoint)

    def _client(self, account: AccountRef) -> OpenAlgoClient:
        """The account's client from the registry (the same object execution and commands use).

        Raises AuthError for a stored key that cannot be decrypted and RejectedError for an invalid
        host URL; RuntimeError when the registry is closed (the engine is stopping)."""
        cached = self._keys.get(account.id)
        if cached is not None and cached[0] == account.api_key_encrypted:
            api_key = cached[1]
        else:
            try:
                api_key = self._decrypt(account.api_key_encrypted)
            except ValueError as exc:
                # Unusable until the user saves the key again: the same stop as a refused key.
                raise AuthError(f"stored API key unusable: {exc}") from None
            self._keys[account.id] = (account.api_key_encrypted, api_key)
        try:
            return self.registry.client(account.id, account.host_url, api_key, name=account.name)
        except ValueError as exc:
            raise RejectedError(f"invalid host URL {account.host_url!r}: {exc}") from None

    async def _read_and_store(self, account: AccountRef, client: OpenAlgoClient, endpoint: str) -> str:
        """One read; on success its rows are stored at once (own transaction). Raises BrokerError."""
        fetch: dict[str, Callable[[], Awaitable[Any]]] = {
            "funds": lambda: client.call("funds"),
            "orderbook": client.orderbook,
            "tradebook": client.tradebook,
            "positionbook": client.positionbook,
            "holdings": client.holdings,
        }
        payload = await fetch[endpoint]()
        fetched_at = self.clock.now()
        data: Any = payload
        if endpoint == "funds":
            raw = payload.get("data") if isinstance(payload.get("data"), dict) else None
            data = (wire.Funds.parse(payload), raw)
        # One account's tables are written one read at a time: orders and trades refer to each other
        # (executed_at), and concurrent transactions would each miss the other's uncommitted rows.
        async with self._store_locks.setdefault(account.id, asyncio.Lock()):
            await asyncio.to_thread(self._store, account, endpoint, data, fetched_at)
        return endpoint

    def _store(self, account: AccountRef, endpoint: str, data: Any, fetched_at: datetime) -> None:
        with self.database.session() as session:
            # The account may have been deleted (or its key changed) while the read was in flight.
            current = session.scalar(
                select(TradingAccount.api_key_encrypted).where(TradingAccount.id == account.id)
            )
            if current != account.api_key_encrypted:
                # Another key's books must not overwrite (or, for positions, delete) this key's rows.
                return
            if endpoint == "funds":
                funds, raw = data
                book_mirror.store_funds(
                    session,
                    account.id,
                    funds,
                    raw,
                    collateral_included=account.collateral_included,
                    fetched_at=fetched_at,
                )
            elif endpoint == "orderbook":
                book_mirror.store_orders(session, account.id, data.orders, fetched_at=fetched_at)
            elif endpoint == "tradebook":
                book_mirror.store_trades(session, account.id, data, fetched_at=fetched_at)
                session.flush()
                # Exits' realised P&L from the fills just stored (exact, not from rounded averages).
                true_up_pnl(session, account.id, fetched_at)
            elif endpoint == "positionbook":
                book_mirror.store_positions(session, account.id, data.positions, fetched_at=fetched_at)
            elif endpoint == "holdings":
                book_mirror.store_holdings(session, account.id, data.holdings, fetched_at=fetched_at)

    # ---------------------------------------------------------------------------------- status

    async def _finish(self, account: AccountRef, result: CycleResult) -> CycleResult:
        auth = next((e for e in result.errors.values() if isinstance(e, AuthError)), None)
        if auth is not None:
            self._auth_failed_keys[account.id] = account.api_key_encrypted
            self._schedule_probe(account.id)
        if not result.ok and not result.errors:
            # Only 429s and unsupported endpoints: nothing learned about the account's health.
            result.status = account.status
            return result
        result.status = await asyncio.to_thread(self._record_status, account, result, auth)
        return result

    def _record_status(self, account: AccountRef, result: CycleResult, auth: AuthError | None) -> str:
        now = self.clock.now()
        with self.database.session() as session:
            row = session.scalar(
                select(TradingAccount).where(TradingAccount.id == account.id).with_for_update()
            )
            if row is None or row.api_key_encrypted != account.api_key_encrypted:
                # Deleted, or the key changed mid-cycle: this outcome is about a key no longer in use.
                return row.connection_status if row is not None else "deleted"
            previous = row.connection_status
            # updated_at explicitly: the column's onupdate would stamp the wall clock, not our clock.
            values: dict[str, Any] = {"updated_at": now}
            action: str | None = None
            details = ""
            if result.ok:
                values["last_connected"] = now
            if auth is not None:
                values.update(
                    connection_status="auth_failed",
                    last_error=f"API key rejected: {auth.message}"[:2000],
                    last_error_at=now,
                    consecutive_failures=row.consecutive_failures + 1,
                )
                if previous != "auth_failed":
                    action = "auth_failed"
                    details = f"API key rejected ({auth.message}); sync stopped, the key is re-tried "
                    details += f"every {self.config.auth_probe_interval:.0f} s"
                    log.warning("account sync %s (%s): API key rejected; stopped", account.id, account.name)
            elif result.success:
                values.update(connection_status="connected", consecutive_failures=0, last_sync_at=now)
                if previous in DOWN_STATUSES:
                    action, details = "connection_restored", f"connection restored (was {previous})"
                    log.info("account sync %s (%s): connection restored", account.id, account.name)
            else:
                failures = row.consecutive_failures + 1
                endpoint, error = next(iter(result.errors.items()))
                values.update(
                    last_error=f"{endpoint}: {error.message}"[:2000],
                    last_error_at=now,
                    consecutive_failures=failures,
                )
                if failures >= self.config.failure_threshold:
                    kind = failure_kind(error)
                    values["connection_status"] = kind
                    if previous not in DOWN_STATUSES:
                        action = "connection_lost"
                        details = f"connection lost ({kind}) after {failures} failed syncs: {endpoint}: "
                        details += error.message
                        log.warning(
                            "account sync %s (%s): connection lost (%s): %s",
                            account.id,
                            account.name,
                            kind,
                            error.message,
                        )
                else:
                    log.info(
                        "account sync %s (%s): %s failed (%d in a row): %s",
                        account.id,
                        account.name,
                        endpoint,
                        failures,
                        error.message,
                    )
            session.execute(update(TradingAccount).where(TradingAccount.id == account.id).values(**values))
            if action is not None:
                session.add(
                    ActivityLog(
                        user_id=account.user_id,
                        account_id=account.id,
                        action=action,
                        details=f"{account.name}: {details}"[:2000],
                        timestamp=self.activity_clock.now(),
                    )
                )
            return str(values.get("connection_status", previous))

    # ---------------------------------------------------------------------------------- loading

    def _load_accounts(self, account_id: int | None) -> list[AccountRef]:
        """Active accounts (or the one asked for, if active), read in one short transaction, which also
        hands the registry the current allow-list of hosts (before any client is built from these rows)."""
        with self.database.session() as session:
            self.registry.set_host_policy(load_host_policy(session))
            query = select(TradingAccount).where(TradingAccount.is_active.is_(True))
            if account_id is not None:
                query = query.where(TradingAccount.id == account_id)
            rows = session.scalars(query.order_by(TradingAccount.id)).all()
            return [
                AccountRef(
                    id=r.id,
                    user_id=r.user_id,
                    name=r.account_name,
                    host_url=r.host_url,
                    api_key_encrypted=r.api_key_encrypted or "",
                    status=r.connection_status,
                    collateral_included=r.collateral_included,
                    is_primary=r.is_primary,
                )
                for r in rows
            ]


__all__ = ["ENDPOINTS", "AccountSync", "CycleResult", "SyncConfig", "failure_kind", "is_unsupported"]
