"""The fast first attempt of an exit (PRODUCT §6.7; DESIGN §3): what a risk breach on fifty accounts
needs to reach the exchange in milliseconds, not hundreds of them.

:class:`FirstWave` is used by :class:`~algomirror.engine.exits.ExitExecutor` for the legs of a command it
can send at once (each account's shorts; the hedges of an account without shorts in the scope; an
account's hedges once its shorts are flat):

1. :meth:`FirstWave.claim` — ONE fenced write transaction
   (:func:`~algomirror.engine.exit_records.claim_first_exits`) claims every such leg that is ``active``
   and never had an exit intent ``active → exiting`` (attempt 1; one conditional UPDATE, so one owner),
   writes the attempt-1 intents of every claimed leg and claims their sends (``created → sent``) with
   :meth:`~algomirror.engine.journal.Journal.record_and_claim_on`. It commits before any order leaves.
2. :meth:`FirstWave.send` — one account's claimed orders placed at once, then followed together
   (:meth:`~algomirror.engine.order_driver.OrderDriver.follow_many`: one orderbook read per round), the
   facts of concurrent accounts written in shared transactions (group commit), as the entry does.

A crash between the commit and the sends leaves the intents ``sent``: the next run of the command
resolves them from the orderbook by tag (the one-by-one path of ``exits``), never sends them again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import date
from typing import TypeVar

from sqlalchemy.exc import IntegrityError

from algomirror.broker.client import OpenAlgoClient
from algomirror.broker.registry import Priority
from algomirror.db.session import Database
from algomirror.domain import order_state
from algomirror.engine.entry_records import EntryLeg, RunPlan, slice_quantities
from algomirror.engine.exit_records import attempt_prefix
from algomirror.engine.group_commit import GroupCommit, split_groups
from algomirror.engine.journal import Advance, ClaimedIntent, IntentSpec, IntentView, Journal
from algomirror.engine.order_driver import IntentRow, OrderDriver

log = logging.getLogger(__name__)

T = TypeVar("T")

# The one transaction of :meth:`FirstWave.claim` (the executor's method, so a test can stop right
# after it): (journal, specs of each execution by its open units, exit reason, detail) → claimed.
ClaimFirst = Callable[
    [Journal, dict[int, Callable[[int], list[IntentSpec]]], str, str], dict[int, list[ClaimedIntent]]
]


def exit_specs(plan: RunPlan, leg: EntryLeg, attempt: int, slices: list[int]) -> list[IntentSpec]:
    """The intents of exit attempt ``attempt``'s slices of ``leg`` (``exec:{id}:exit:{n}:{slice}``):
    the opposite side, MARKET, the execution's product, the strategy's tag."""
    prefix = attempt_prefix(leg.execution_id, attempt)
    opposite = "BUY" if leg.side == "SELL" else "SELL"
    return [
        IntentSpec(
            key=f"{prefix}{n}",
            account_id=leg.account_id,
            symbol=leg.symbol,
            exchange=leg.exchange,
            product=leg.product,
            side=opposite,
            quantity=quantity,
            order_type="MARKET",
            strategy_tag=plan.tag,
            execution_id=leg.execution_id,
            purpose="exit",
        )
        for n, quantity in enumerate(slices, start=1)
    ]


def first_specs(
    plan: RunPlan, leg: EntryLeg, today: date, seen: dict[str, IntentSpec] | None = None
) -> Callable[[int], list[IntentSpec]]:
    """The specs of ``leg``'s attempt-1 slices for a given open quantity (units), freeze-sliced as on
    ``today``, as :func:`~algomirror.engine.exit_records.claim_first_exits` asks for them; each spec
    made is also put in ``seen`` by key. Raises ValueError (from slicing) for a leg that cannot be
    sent."""

    def specs(units: int) -> list[IntentSpec]:
        made = exit_specs(plan, leg, 1, slice_quantities(leg, today, quantity=units))
        if seen is not None:
            seen.update((spec.key, spec) for spec in made)
        return made

    return specs


class FirstWave:
    """The fast first attempts of one exit command (see the module docstring). ``claim_first`` runs
    the claim's transaction (in a worker thread); ``today`` is the trading day of the freeze limits."""

    def __init__(
        self,
        database: Database,
        driver: OrderDriver,
        claim_first: ClaimFirst,
        *,
        reason: str,
        detail: str,
        today: date,
    ) -> None:
        self.database = database
        self.driver = driver
        self._claim_first = claim_first
        self.reason = reason
        self.detail = detail
        self.today = today
        self._advances: GroupCommit[list[Advance], list[IntentView]] = GroupCommit(self._advance_groups)

    def _advance_groups(self, groups: Sequence[list[Advance]]) -> list[list[IntentView]]:
        views = self.driver.journal.advance_many([change for group in groups for change in group])
        return split_groups(views, groups)

    async def claim(self, legs: Sequence[tuple[RunPlan, EntryLeg]]) -> dict[int, list[IntentRow]]:
        """Claim the first exit attempt of every leg of ``legs`` that can take the fast path, with its
        intents written and their sends claimed, in one transaction; returns the claimed legs'
        intents by execution id (state ``sent``: this caller, and only it, sends them). A leg left
        out is for the one-by-one path. Raises FencedOutError once fenced out."""
        if not legs:
            return {}
        terms: dict[str, IntentSpec] = {}
        plans = {leg.execution_id: first_specs(plan, leg, self.today, terms) for plan, leg in legs}
        try:
            claimed = await asyncio.to_thread(
                self._claim_first, self.driver.journal, plans, self.reason, self.detail
            )
        except IntegrityError as exc:  # a concurrent writer took one of the keys: every leg one by one
            log.info("exit: the batched first attempt was refused (%s); legs go one by one", exc.orig)
            return {}
        return {
            execution_id: [IntentRow.of_claimed(terms[c.view.key], c) for c in intents]
            for execution_id, intents in claimed.items()
        }

    async def send(self, client: OpenAlgoClient, rows: Sequence[IntentRow]) -> list[IntentRow]:
        """Place the orders of one account's claimed intents at once, then follow them together until
        each is terminal or the driver's ``fill_timeout`` has passed; returns them as stored after.
        An order not accepted (rejected, not sent, unknown) goes on from its written state as
        :meth:`OrderDriver.drive` takes it (unknown: resolved from the orderbook, never re-sent)."""
        won = [r for r in rows if r.state == order_state.SENT]
        others = [r for r in rows if r.state != order_state.SENT]  # not expected: the claim wrote them all
        return await self.driver.send_claimed(
            client, won, others, priority=Priority.EXIT, write=self._advances.submit
        )


__all__ = ["ClaimFirst", "FirstWave", "exit_specs", "first_specs"]
