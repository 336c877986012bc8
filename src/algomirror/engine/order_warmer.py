"""Open order connections for the accounts an exit could need at any moment (issue 12's latency).

An exit's first order should leave on a connection that is already open. Without traffic our pool drops
an idle connection after its keep-alive expiry (30 s), and a server closes it after its own (nginx: 75 s;
some servers a few seconds). The first breach after a quiet spell, which in practice is every breach,
would then pay a TCP connect per account (a TLS handshake too over https) before its order is written.

:class:`OrderWarmer` (engine component ``order_warmer``) sends one ``ping`` per account that holds an
open position of a run (an execution ``pending``, ``active`` or ``exiting`` in an open run) through that
account's *order* connections (:meth:`~algomirror.broker.client.OpenAlgoClient.warm_order_lane`), all
accounts at once, so that the pool keeps as many open connections per host as an exit of those accounts
places orders at once. A round goes every ``interval`` seconds, and at once when this engine takes the
fencing epoch or an account comes at risk (the accounts at risk are read every second).

It runs only while the engine holds the epoch (the engine that would send the exit). Each ping waits at
the lowest priority of its account's rate budget, so it never delays an order, and is sent once: a failed
ping is counted and logged, and the next round is the retry. The cost is one ping per account per
interval (default 10 s; setting ``order_warm_seconds``, 0 = off).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Final

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from algomirror.broker.client import OpenAlgoClient
from algomirror.broker.errors import BrokerError
from algomirror.db.models import StrategyExecution, StrategyRun, TradingAccount
from algomirror.db.models.enums import OPEN_RUN_STATUSES
from algomirror.db.session import Database
from algomirror.engine.command_rows import pause
from algomirror.engine.entry_records import AccountInfo
from algomirror.engine.exit_records import OPEN_STATUSES
from algomirror.engine.exits import ExitExecutor

log = logging.getLogger(__name__)

DEFAULT_INTERVAL: Final = 10.0  # seconds; under our pool's 30 s keep-alive and nginx's 75 s
LOOK_SECONDS: Final = 1.0  # how often the accounts at risk are looked at (a query, no ping)


def accounts_at_risk(database: Database) -> list[AccountInfo]:
    """The accounts with an execution still open (``pending``, ``active``, ``exiting``) in an open run,
    by id. Raises SQLAlchemyError."""
    with database.session_factory() as session:
        rows = session.execute(
            select(
                TradingAccount.id,
                TradingAccount.account_name,
                TradingAccount.host_url,
                TradingAccount.api_key_encrypted,
            )
            .where(
                TradingAccount.id.in_(
                    select(StrategyExecution.account_id)
                    .join(StrategyRun, StrategyRun.id == StrategyExecution.run_id)
                    .where(
                        StrategyRun.status.in_(OPEN_RUN_STATUSES),
                        StrategyExecution.status.in_(OPEN_STATUSES),
                    )
                )
            )
            .order_by(TradingAccount.id)
        ).all()
    return [AccountInfo(r.id, r.account_name, r.host_url, r.api_key_encrypted) for r in rows]


class OrderWarmer:
    """Engine component ``order_warmer``; see the module docstring. ``interval``: seconds between
    rounds (> 0)."""

    name = "order_warmer"

    def __init__(
        self, database: Database, exits: ExitExecutor, *, interval: float = DEFAULT_INTERVAL
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.database = database
        self.exits = exits
        self.interval = interval
        self.checks = 0  # loop turns
        self.rounds = 0  # rounds that pinged
        self.pings = 0
        self.failed = 0
        self._failing: set[str] = set()  # accounts whose last ping failed (by name)

    async def run(self, stop: asyncio.Event) -> None:
        """Warm the accounts at risk until ``stop`` is set (see the module docstring)."""
        # Looked at every second (at most the interval): a round as soon as this engine holds the epoch
        # or an account comes at risk (a new run), not up to an interval later; then one per interval.
        look = min(LOOK_SECONDS, self.interval)
        last: float | None = None
        warmed: frozenset[int] = frozenset()
        while not stop.is_set():
            self.checks += 1
            if self.exits.holds_epoch():
                accounts = await self._accounts()
                if accounts is not None:
                    ids = frozenset(a.id for a in accounts)
                    now = time.monotonic()
                    if ids and (not ids <= warmed or last is None or now - last >= self.interval):
                        await self._ping(accounts)
                        last = now
                    warmed = ids
            else:
                last, warmed = None, frozenset()
            await pause(stop, look)

    async def warm_once(self) -> int:
        """One round now: a ping through the order connections of every account at risk, all at once.
        Returns the pings that succeeded. A failed read of the accounts or a failed ping is logged,
        never raised (the next round tries again); an error that is not the broker's is logged with
        its trace."""
        accounts = await self._accounts()
        return 0 if accounts is None else await self._ping(accounts)

    async def _accounts(self) -> list[AccountInfo] | None:
        try:
            return await asyncio.to_thread(accounts_at_risk, self.database)
        except SQLAlchemyError as exc:  # an outage: one line (it is looked at every second)
            log.warning("order warmer: cannot read the accounts at risk: %s", str(exc).splitlines()[0])
            return None
        except Exception:  # a bug: with its trace; the next look tries again
            log.exception("order warmer: could not read the accounts at risk")
            return None

    async def _ping(self, accounts: list[AccountInfo]) -> int:
        clients: list[OpenAlgoClient] = []
        for account in accounts:
            client, _why = self.exits.client_for(account)  # an unusable account has no order to warm
            if client is not None:
                clients.append(client)
        if not clients:
            return 0
        self.rounds += 1
        results = await asyncio.gather(*(c.warm_order_lane() for c in clients), return_exceptions=True)
        failures = [(c, r) for c, r in zip(clients, results, strict=True) if isinstance(r, BaseException)]
        failing: set[str] = set()
        for client, exc in failures:
            name = client.name or client.host_url
            failing.add(name)
            if isinstance(exc, BrokerError):
                # Said once when an account starts failing (the sync and the exits say the rest), not
                # every round: an unreachable host would log every ten seconds.
                level = logging.DEBUG if name in self._failing else logging.INFO
                log.log(level, "order warmer: ping of %s failed: %s", name, exc.message)
            elif isinstance(exc, Exception):
                log.error("order warmer: ping of %s failed", name, exc_info=exc)
            else:  # cancelled with the engine's stop, or an exit of the interpreter: not ours to keep
                raise exc
        for name in sorted(self._failing - failing):
            if any((c.name or c.host_url) == name for c in clients):
                log.info("order warmer: ping of %s answers again", name)
        self._failing = failing
        done = len(clients) - len(failures)
        self.pings += done
        self.failed += len(failures)
        return done


__all__ = ["DEFAULT_INTERVAL", "OrderWarmer", "accounts_at_risk"]
