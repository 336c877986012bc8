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
  (a rejection, 4xx/5xx, 429) or ``error`` for network errors, timeouts and unreadable replies (logs
  ``connection_lost`` once). A 401/403 makes it ``auth_failed`` at once (logs ``auth_failed``) and the
  account is not called again until its key changes.
* An account that is down (``failed``/``error``) is retried every ``down_interval`` seconds at most.
* A failed read leaves that table's rows untouched (their ``updated_at`` shows their age); see
  :mod:`algomirror.engine.books` for how successful reads are mirrored.
* The API key is decrypted only to build the client and never logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError

from algomirror.broker import models as wire
from algomirror.broker.client import HostPool, OpenAlgoClient, RetryPolicy, Timeouts
from algomirror.broker.errors import (
    AuthError,
    BrokerError,
    MalformedResponseError,
    RejectedError,
    RetryableError,
)
from algomirror.config import Settings
from algomirror.db.models import ActivityLog, TradingAccount
from algomirror.db.session import Database
from algomirror.domain.calendar import TradingCalendar, default_calendar
from algomirror.domain.timeutil import Clock, SystemClock, utcnow
from algomirror.engine import books

log = logging.getLogger(__name__)

ENDPOINTS = ("funds", "orderbook", "tradebook", "positionbook", "holdings")
DOWN_STATUSES = ("failed", "error", "auth_failed")
# The market whose hours pick the sync interval (options are the product's business).
MARKET_EXCHANGES = ("NFO", "NSE")


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


@dataclass
class CycleResult:
    """Outcome of one sync cycle of one account. ``errors`` maps endpoint -> error; ``skipped`` says why
    the account was not called (inactive, deleted, auth_failed, no key)."""

    account_id: int
    ok: tuple[str, ...] = ()
    errors: dict[str, BrokerError] = field(default_factory=dict)
    status: str | None = None
    skipped: str | None = None
    seconds: float = 0.0

    @property
    def success(self) -> bool:
        return self.skipped is None and not self.errors


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
    ``market_clock`` decides market hours only (the embedded demo passes the paper exchange's clock);
    stored timestamps are always real UTC. Tests drive it with :meth:`sync_account_once` /
    :meth:`sync_all_once` and close it with :meth:`aclose`.
    """

    name = "account-sync"

    def __init__(
        self,
        database: Database,
        decrypt: Callable[[str], str],
        *,
        config: SyncConfig | None = None,
        market_clock: Clock | None = None,
        calendar: TradingCalendar | None = None,
        pool: HostPool | None = None,
    ) -> None:
        self.database = database
        self.config = config or SyncConfig()
        self.market_clock = market_clock or SystemClock()
        self.calendar = calendar or default_calendar()
        self._decrypt = decrypt
        self._pool = pool
        self._own_pool = pool is None
        # account id -> (encrypted key the client was built with, client)
        self._clients: dict[int, tuple[str, OpenAlgoClient]] = {}
        # account id -> encrypted key that got the 403: skip until the stored key differs.
        self._auth_failed_keys: dict[int, str] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._store_locks: dict[int, asyncio.Lock] = {}
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
        """Close the connection pool (when this object created it) and forget the clients."""
        self._clients.clear()
        if self._pool is not None and self._own_pool:
            pool, self._pool = self._pool, None
            await pool.aclose()

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
                self._clients.pop(account_id, None)
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
        if account.status == "auth_failed" and account.id in self._auth_failed_keys:
            # The key changed since the 403: give the new key its chance.
            self._auth_failed_keys.pop(account.id)
            log.info("account sync %s: API key changed, resuming", account.id)
        try:
            client = self._client(account)
        except BrokerError as exc:
            return await self._finish(account, CycleResult(account.id, errors={"funds": exc}))
        outcomes = await asyncio.gather(
            *(self._read_and_store(account, client, endpoint) for endpoint in ENDPOINTS),
            return_exceptions=True,
        )
        result = CycleResult(account.id)
        ok: list[str] = []
        for endpoint, outcome in zip(ENDPOINTS, outcomes, strict=True):
            if isinstance(outcome, BrokerError):
                result.errors[endpoint] = outcome
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                ok.append(endpoint)
        result.ok = tuple(ok)
        return await self._finish(account, result)

    def _eligible(self, account: AccountRef) -> str | None:
        if not account.api_key_encrypted:
            return "no API key"
        if account.status == "auth_failed":
            failed_key = self._auth_failed_keys.get(account.id)
            # Unknown failing key (engine restarted): the web re-tests and resets the status on a key
            # change, so waiting for that is safe.
            if failed_key is None or failed_key == account.api_key_encrypted:
                return "auth_failed: waiting for a new API key"
        return None

    def _forget(self, account_id: int) -> None:
        self._clients.pop(account_id, None)
        self._auth_failed_keys.pop(account_id, None)

    def _pool_now(self) -> HostPool:
        if self._pool is None:
            self._pool = HostPool()
            self._own_pool = True
        return self._pool

    def _client(self, account: AccountRef) -> OpenAlgoClient:
        cached = self._clients.get(account.id)
        if (
            cached is not None
            and cached[0] == account.api_key_encrypted
            and cached[1].host_url == (account.host_url.strip().rstrip("/"))
        ):
            return cached[1]
        try:
            api_key = self._decrypt(account.api_key_encrypted)
        except ValueError as exc:
            # Unusable until the user saves the key again: the same stop as a refused key.
            raise AuthError(f"stored API key unusable: {exc}") from None
        try:
            client = OpenAlgoClient(
                account.host_url,
                api_key,
                pool=self._pool_now(),
                timeouts=self.config.timeouts,
                retry=self.config.retry,
                name=account.name,
            )
        except ValueError as exc:
            raise RejectedError(f"invalid host URL {account.host_url!r}: {exc}") from None
        self._clients[account.id] = (account.api_key_encrypted, client)
        return client

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
        fetched_at = utcnow()
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
                books.store_funds(
                    session,
                    account.id,
                    funds,
                    raw,
                    collateral_included=account.collateral_included,
                    fetched_at=fetched_at,
                )
            elif endpoint == "orderbook":
                books.store_orders(session, account.id, data.orders, fetched_at=fetched_at)
            elif endpoint == "tradebook":
                books.store_trades(session, account.id, data, fetched_at=fetched_at)
            elif endpoint == "positionbook":
                books.store_positions(session, account.id, data.positions, fetched_at=fetched_at)
            elif endpoint == "holdings":
                books.store_holdings(session, account.id, data.holdings, fetched_at=fetched_at)

    # ---------------------------------------------------------------------------------- status

    async def _finish(self, account: AccountRef, result: CycleResult) -> CycleResult:
        auth = next((e for e in result.errors.values() if isinstance(e, AuthError)), None)
        if auth is not None:
            self._auth_failed_keys[account.id] = account.api_key_encrypted
            self._clients.pop(account.id, None)
        result.status = await asyncio.to_thread(self._record_status, account, result, auth)
        return result

    def _record_status(self, account: AccountRef, result: CycleResult, auth: AuthError | None) -> str:
        now = utcnow()
        with self.database.session() as session:
            row = session.scalar(
                select(TradingAccount).where(TradingAccount.id == account.id).with_for_update()
            )
            if row is None or row.api_key_encrypted != account.api_key_encrypted:
                # Deleted, or the key changed mid-cycle: this outcome is about a key no longer in use.
                return row.connection_status if row is not None else "deleted"
            previous = row.connection_status
            values: dict[str, Any] = {}
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
                    action, details = "auth_failed", f"API key rejected ({auth.message}); sync stopped"
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
                        timestamp=now,
                    )
                )
            return str(values.get("connection_status", previous))

    # ---------------------------------------------------------------------------------- loading

    def _load_accounts(self, account_id: int | None) -> list[AccountRef]:
        """Active accounts (or the one asked for, if active), read in one short transaction."""
        with self.database.session() as session:
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
                )
                for r in rows
            ]


__all__ = ["ENDPOINTS", "AccountSync", "CycleResult", "SyncConfig", "failure_kind"]
