"""The feed manager's REST fallback (PRODUCT §7.4): while a user's feed is not healthy — and, while it is,
for the symbols it leaves without a usable WebSocket mark — the symbols of the user's open executions are
quoted with one ``multiquotes`` call per ``rest_interval`` on the first usable account (the last good one
first; a failing account rests ``account_rest_seconds``; at most ``rest_tries`` accounts per cycle), as
marks with source ``"rest"``, in any session.

A mixin of :class:`~algomirror.engine.feeds.FeedManager` (the attributes below are the manager's).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from algomirror.broker.errors import BrokerError
from algomirror.broker.registry import ClientRegistry
from algomirror.domain.timeutil import Clock
from algomirror.engine.feed_types import FeedAccount, FeedConfig, FeedCounters, Key, UserFeed
from algomirror.engine.marks import Mark, MarkBook

log = logging.getLogger("algomirror.engine.feeds")


class RestFallback:
    """The REST fallback loop of the feed manager."""

    registry: ClientRegistry
    marks: MarkBook
    clock: Clock
    config: FeedConfig
    counters: FeedCounters
    _accounts: dict[int, list[FeedAccount]]
    _at_risk: dict[int, frozenset[Key]]
    _feeds: dict[int, UserFeed]
    _api_key: Callable[[FeedAccount], str]
    _candidates: Callable[[int], list[FeedAccount]]
    _publish: Callable[..., None]

    @staticmethod
    async def _wait(stop: asyncio.Event, seconds: float) -> None:
        try:
            await asyncio.wait_for(stop.wait(), timeout=max(0.0, seconds))
        except TimeoutError:
            pass

    async def _rest_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            started = time.monotonic()
            for user_id in list(self._accounts):
                await self.rest_once(user_id)
            await self._wait(stop, self.config.rest_interval - (time.monotonic() - started))

    async def rest_once(self, user_id: int) -> int:
        """One REST fallback cycle for ``user_id``: quote the symbols of its open executions that have no
        usable WebSocket mark — all of them when its feed is not healthy; while it is healthy, those the
        feed does not price (a refused subscription, or a quiet symbol whose last tick is too old to act
        on) — on the first usable account. Returns the marks written (0 when not needed)."""
        feed = self._feeds.get(user_id)
        symbols = sorted(self._at_risk.get(user_id, ()))
        if feed is not None and feed.healthy:
            # A healthy feed can still leave a leg without a usable price, which makes the whole run's P&L
            # unknown and stops every rule: fill those in (a REST mark counts as not priced by the feed).
            now_market = self.clock.now()
            symbols = [
                key
                for key in symbols
                if (mark := self.marks.usable(key[0], key[1], now_market)) is None or mark.source != "ws"
            ]
        needed = bool(symbols)
        if feed is not None and feed.rest_active != needed:
            feed.rest_active = needed
            log.info("feed of user %s: REST fallback %s", user_id, "on" if needed else "off")
            self._publish(feed, force=True)
        if not needed:
            return 0
        state = feed if feed is not None else self._feeds.setdefault(user_id, UserFeed(user_id))
        now = time.monotonic()
        accounts = self._candidates(user_id)
        if state.last_rest_account is not None:
            accounts.sort(key=lambda a: a.id != state.last_rest_account)
        tries = 0
        for account in accounts:
            if tries >= self.config.rest_tries:
                break
            if state.rest_resting.get(account.id, 0.0) > now:
                continue
            tries += 1
            try:
                client = self.registry.client(
                    account.id, account.host_url, self._api_key(account), name=account.name
                )
                # The quote is as old as the request: a slow reply must not stretch its 5 s of use.
                at = self.clock.now()
                items = await client.multiquotes(symbols)
            except (BrokerError, ValueError) as exc:
                self.counters.rest_failures += 1
                state.rest_resting[account.id] = time.monotonic() + self.config.account_rest_seconds
                text = exc.message if isinstance(exc, BrokerError) else "stored API key unreadable"
                log.info("feed REST fallback: account %s (%s) failed: %s", account.id, account.name, text)
                continue
            self.counters.rest_quotes += 1
            state.last_rest_account = account.id
            written = 0
            for item in items:
                quote = item.quote
                if quote is None or quote.ltp is None or quote.ltp <= 0:
                    continue
                exchange = item.exchange or dict(symbols).get(item.symbol, "")
                if self.marks.update(item.symbol, exchange, Mark(quote.ltp, at, "rest", account.id)):
                    written += 1
            self.counters.rest_marks += written
            return written
        return 0


__all__ = ["RestFallback"]
