"""The engine-wide broker path: one registry per event loop hands out every account's client.

:class:`ClientRegistry` owns

* ONE connection pool per OpenAlgo host (origin), shared by every account on that host
  (:class:`~algomirror.broker.transport.HostPool`);
* ONE :class:`~algomirror.broker.ratelimit.RateScheduler` per account, keyed by account id and kept
  when the account's key or host changes, so sync, execution and commands share the account's budget
  instead of competing for it; waiting calls are served by :class:`Priority` (exits, entries, reads);
* ONE :class:`~algomirror.broker.client.OrderGate`: :meth:`ClientRegistry.suspend_orders` stops every
  order call of every client before it is sent (reads go on), e.g. when the engine lock is lost;
* ONE :class:`~algomirror.broker.hosts.HostPolicy` (the administrator's allow-list of account hosts),
  set by whoever reads accounts from the database (:meth:`ClientRegistry.set_host_policy`, in the same
  transaction as the rows a client is built from): every call of every client checks the current policy
  first and raises :class:`~algomirror.broker.hosts.HostNotAllowedError` unsent for a refused host, so
  narrowing the list stops clients that are already in use too.

Clients are cached per account: the same (account id, host URL, API key) gives the same client object
(so its 401/403 halt sticks); a changed key or host gives a fresh client on the same scheduler.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from algomirror.broker.client import OpenAlgoClient, OrderGate, RetryPolicy, Timeouts
from algomirror.broker.hosts import UNRESTRICTED, HostPolicy, normalize_host_url
from algomirror.broker.ratelimit import Priority, RateLimits, RateScheduler, Sleep
from algomirror.broker.transport import HostPool

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Entry:
    host_url: str
    client: OpenAlgoClient


class ClientRegistry:
    """Every account's :class:`OpenAlgoClient` for one event loop; see the module docstring.

    ``timeouts``, ``retry`` and ``limits`` apply to every client (``limits`` per account).
    ``pool`` defaults to a new :class:`HostPool` owned (and closed) by the registry. ``clock`` and
    ``sleep`` reach the rate schedulers (tests run them on a fake clock). ``host_policy`` is the
    allow-list of hosts until :meth:`set_host_policy` replaces it (default: every host).
    """

    def __init__(
        self,
        *,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        limits: RateLimits | None = None,
        pool: HostPool | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        host_policy: HostPolicy = UNRESTRICTED,
    ) -> None:
        self.timeouts = timeouts or Timeouts()
        self.retry = retry or RetryPolicy()
        self.limits = limits or RateLimits()
        self.pool = pool or HostPool()
        self._own_pool = pool is None
        self._clock = clock
        self._sleep = sleep
        self._gate = OrderGate()
        self._host_policy = host_policy
        self._schedulers: dict[int, RateScheduler] = {}
        self._clients: dict[int, _Entry] = {}
        # Host URLs as typed -> normalised: a fan-out asks for every account's client once per phase,
        # and parsing the URL cost more than the rest of the lookup.
        self._urls: dict[str, str] = {}
        self._closed = False

    def client(self, account_id: int, host_url: str, api_key: str, *, name: str = "") -> OpenAlgoClient:
        """The client of one account: the cached one while host URL and key are unchanged, else a new
        one that shares the account's rate scheduler (the old client stays usable by whoever holds it).

        Raises ValueError for an empty key or a host URL that is not ``http(s)://host[:port][/base]``
        (:class:`~algomirror.broker.hosts.HostURLError`), and RuntimeError once the registry is closed.
        A host the policy refuses still gets a client, whose every call raises
        :class:`~algomirror.broker.hosts.HostNotAllowedError` without sending anything.
        """
        if self._closed:
            raise RuntimeError("ClientRegistry is closed")
        url = self._urls.get(host_url)
        if url is None:
            url = normalize_host_url(host_url.strip())
            if len(self._urls) >= 10_000:
                self._urls.clear()
            self._urls[host_url] = url
        entry = self._clients.get(account_id)
        if entry is not None and entry.host_url == url and entry.client.uses_key(api_key):
            if name:
                entry.client.name = name
            return entry.client
        scheduler = self.scheduler(account_id)
        client = OpenAlgoClient(
            host_url,
            api_key,
            pool=self.pool,
            timeouts=self.timeouts,
            retry=self.retry,
            scheduler=scheduler,
            name=name,
            order_gate=self._gate,
            host_policy=self._current_host_policy,
        )
        self._clients[account_id] = _Entry(url, client)
        return client

    def scheduler(self, account_id: int) -> RateScheduler:
        """The account's rate scheduler (created on first use, kept across key changes)."""
        scheduler = self._schedulers.get(account_id)
        if scheduler is None:
            scheduler = RateScheduler(self.limits, clock=self._clock, sleep=self._sleep)
            self._schedulers[account_id] = scheduler
        return scheduler

    def forget(self, account_id: int) -> None:
        """Drop the account's client and scheduler (account deleted or archived). A later
        :meth:`client` call starts afresh."""
        self._clients.pop(account_id, None)
        self._schedulers.pop(account_id, None)

    @property
    def accounts(self) -> tuple[int, ...]:
        """Account ids with a cached client."""
        return tuple(self._clients)

    # ------------------------------------------------------------------------------ host policy

    def _current_host_policy(self) -> HostPolicy:
        return self._host_policy

    @property
    def host_policy(self) -> HostPolicy:
        """The allow-list every client's calls are checked against."""
        return self._host_policy

    def set_host_policy(self, policy: HostPolicy) -> None:
        """Check every later call of every client against ``policy``. Safe to call from a worker
        thread (one reference is replaced); a change is logged."""
        if policy != self._host_policy:
            log.info(
                "account hosts: %s",
                "restricted to the allow-list" if policy.restricted else "any host allowed",
            )
        self._host_policy = policy

    # -------------------------------------------------------------------------- order suspension

    def suspend_orders(self, reason: str) -> None:
        """From now on every order endpoint call of every client raises
        :class:`~algomirror.broker.errors.OrdersSuspendedError` before anything is sent, including
        calls already queued for a rate slot or waiting for a pooled connection (checked again once
        the connection is held, before a byte is written). Reads still work. Idempotent; the latest
        reason wins."""
        if self._gate.suspended is None:
            log.warning("broker order calls suspended: %s", reason)
        self._gate.suspend(reason)

    def resume_orders(self) -> None:
        """Allow order calls again."""
        if self._gate.suspended is not None:
            log.warning("broker order calls resumed")
        self._gate.resume()

    @property
    def orders_suspended(self) -> str | None:
        """The suspension reason, or None when order calls are allowed."""
        return self._gate.suspended

    async def aclose(self) -> None:
        """Close the pool (if the registry created it); clients cannot be used afterwards."""
        self._closed = True
        self._clients.clear()
        if self._own_pool:
            await self.pool.aclose()

    async def __aenter__(self) -> ClientRegistry:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


__all__ = ["ClientRegistry", "Priority"]
