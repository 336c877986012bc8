"""One exit command's work (steps 2–6 of :mod:`~algomirror.engine.exits`): its scope
(:func:`parse_scope`), the retry of a failed attempt (:class:`ExitRetry`), and :class:`ExitWork`, which
exits a run's target executions per account — the first wave together
(:mod:`~algomirror.engine.exit_first`), then each leg's owner: record, send, follow, verify at the
broker before any new attempt, give up with an alert — shorts bought back before hedges are sold.
:class:`~algomirror.engine.exits.ExitExecutor` finds the targets, holds the accounts' locks and closes
the runs."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from algomirror.broker.client import OpenAlgoClient
from algomirror.broker.errors import BrokerError
from algomirror.broker.registry import Priority
from algomirror.db.models.enums import EXIT_REASONS
from algomirror.domain import order_state
from algomirror.domain.timeutil import to_ist
from algomirror.engine.concurrency import all_of as _all
from algomirror.engine.concurrency import staggered
from algomirror.engine.entry_records import EntryLeg, RunPlan, finish_entry, slice_quantities
from algomirror.engine.execution import ExecutionError, intents_of, settled
from algomirror.engine.exit_first import FirstWave, exit_specs
from algomirror.engine.exit_planning import PERSON_REASONS, SCOPES
from algomirror.engine.exit_records import (
    KEPT_HEDGE,
    ExitResult,
    ExitState,
    attempt_failure,
    attempt_prefix,
    claim_exit,
    exit_intents,
    finish_attempt,
    kept_hedges,
    mark_error,
    next_attempt,
    note,
    owned_order_ids,
    read_state,
    round_end,
)
from algomirror.engine.exit_verify import read_broker, still_open
from algomirror.engine.journal import IntentExistsError
from algomirror.engine.order_driver import IntentRow, OrderDriver

log = logging.getLogger(__name__)


if TYPE_CHECKING:
    from algomirror.engine.exits import ExitExecutor

_DETAIL = {"execution": "exit of one leg", "account": "exit of an account", "run": "exit of the run"}


@dataclass(frozen=True, slots=True)
class ExitRetry:
    """The retry of a failed exit attempt (PRODUCT §6.7 step 6), seconds unless noted.

    ``attempts``: attempts per round before ``error`` (count); ``first_wait``: wait after a failed
    attempt before verifying at the broker, doubled per attempt of the round up to ``max_wait``;
    ``verify_interval``: between verification reads while an order of ours works or a read failed;
    ``verify_timeout``: how long verification may wait before the outcome counts as not establishable
    (``error`` + alert)."""

    attempts: int = 5
    first_wait: float = 10.0
    max_wait: float = 60.0
    verify_interval: float = 5.0
    verify_timeout: float = 300.0

    def wait_after(self, attempt: int) -> float:
        """Seconds to wait after attempt ``attempt`` failed (capped backoff)."""
        step = (max(attempt, 1) - 1) % max(self.attempts, 1)
        return float(min(self.first_wait * 2**step, self.max_wait))


@dataclass(frozen=True, slots=True)
class ExitScope:
    kind: str
    reason: str
    run_id: int | None = None
    account_id: int | None = None
    execution_id: int | None = None
    retry_errors: bool = False

    @property
    def detail(self) -> str:
        return _DETAIL.get(self.kind, "exit all")

    @property
    def by_person(self) -> bool:
        """A person's retry (the page's exit buttons), not an automatic one that also retries legs in
        ``error`` (the square-off, an entry unwind's hand-over)."""
        return self.retry_errors and self.reason in PERSON_REASONS


def _optional_id(payload: dict[str, Any], name: str) -> int | None:
    value = payload.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ExecutionError(f"malformed exit payload ({name})")
    return value


def parse_scope(payload: dict[str, Any]) -> ExitScope:
    """The command's scope; raises ExecutionError for a payload the web could not have written."""
    kind = payload.get("scope")
    if kind not in SCOPES:
        raise ExecutionError(f"malformed exit payload (scope {kind!r})")
    reason = payload.get("reason")
    if not isinstance(reason, str) or reason not in EXIT_REASONS:
        reason = "exit_all" if kind == "all" else "manual"
    elif kind == "all" and reason == "manual":
        reason = "exit_all"  # commands queued before exit_all was a reason of its own
    scope = ExitScope(
        kind=str(kind),
        reason=reason,
        run_id=_optional_id(payload, "run_id"),
        account_id=_optional_id(payload, "account_id"),
        execution_id=_optional_id(payload, "execution_id"),
        retry_errors=payload.get("retry_errors") is True,
    )
    needs = {"execution": ("execution_id",), "account": ("run_id", "account_id"), "run": ("run_id",)}
    for name in needs.get(scope.kind, ()):
        if getattr(scope, name) is None:
            raise ExecutionError(f"malformed exit payload ({name} missing)")
    return scope


class ExitWork:
    """One attempt at one exit command: cancel working entries, then exit per account."""

    def __init__(
        self, executor: ExitExecutor, driver: OrderDriver, scope: ExitScope, plans: dict[int, RunPlan]
    ) -> None:
        self.x = executor
        self.driver = driver
        self.scope = scope
        self.plans = plans
        self.today = to_ist(executor.market_clock.now()).date()
        self.results: dict[int, ExitResult | str] = {}
        self.entering = 0
        self.seen = False  # some run of the scope had an execution to exit
        self.first = FirstWave(
            executor.database,
            driver,
            executor.claim_first_exits,
            reason=scope.reason,
            detail=scope.detail,
            today=self.today,
        )

    def summary(self, closed: list[int]) -> dict[str, Any]:
        values = list(self.results.values())
        return {
            "scope": self.scope.kind,
            "exited": values.count("exited"),
            "failed": values.count("error"),
            "open": values.count("open"),
            "unreachable": values.count("unreachable"),
            "kept": values.count("kept"),
            "entering": self.entering,
            "closed_runs": closed,
        }

    async def run(self, states: list[ExitState], stuck: set[tuple[int, int]]) -> None:
        """Exit ``states`` (executions of one run) per account; ``stuck``: the (run, account) pairs whose
        short gave up earlier (``error``, not this command's target): they keep their hedges — only a
        person's explicit exit of that one leg may sell them (PRODUCT §6.7 step 4)."""
        legs = {leg.execution_id: (plan, leg) for plan in self.plans.values() for leg in plan.legs}
        by_account: dict[tuple[int, int], list[tuple[ExitState, EntryLeg]]] = {}
        for state in states:
            if state.execution_id not in legs:
                continue
            plan, leg = legs[state.execution_id]
            by_account.setdefault((plan.run_id, leg.account_id), []).append((state, leg))
        accounts = sorted(by_account.items())
        clients = [self._client(run_id, items) for (run_id, _), items in accounts]
        # The first wave of every account (its shorts; its hedges when it has no short here) in one
        # transaction, before any account sends.
        wave: list[tuple[RunPlan, EntryLeg]] = []
        for ((run_id, _), items), (client, _) in zip(accounts, clients, strict=True):
            plan = self.plans[run_id]
            if client is None or plan.status == "entering" or any(s.status == "pending" for s, _ in items):
                continue
            shorts = [(s, leg) for s, leg in items if leg.side == "SELL"]
            if not shorts and (run_id, items[0][1].account_id) in stuck:
                continue  # hedges only, and the account's short is stuck: they stay (see _account)
            wave.extend((plan, leg) for s, leg in (shorts or items) if s.status == "active")
        first = await self.first.claim(wave)
        await staggered(
            *(
                self._account(run_id, items, client, reason, first, (run_id, items[0][1].account_id) in stuck)
                for ((run_id, _), items), (client, reason) in zip(accounts, clients, strict=True)
            )
        )

    def _client(
        self, run_id: int, items: list[tuple[ExitState, EntryLeg]]
    ) -> tuple[OpenAlgoClient | None, str | None]:
        account = self.plans[run_id].accounts.get(items[0][1].account_id)
        return (None, "account not found") if account is None else self.x.client_for(account)

    async def _account(
        self,
        run_id: int,
        items: list[tuple[ExitState, EntryLeg]],
        client: OpenAlgoClient | None,
        reason: str | None,
        first: dict[int, list[IntentRow]],
        stuck: bool,
    ) -> None:
        plan = self.plans[run_id]
        if client is None:
            ids = [leg.execution_id for _, leg in items]
            await asyncio.to_thread(note, self.x.database, ids, f"exit not possible: {reason}")
            self.results.update(dict.fromkeys(ids, "unreachable"))
            return
        if plan.status == "entering" or any(s.status == "pending" for s, _ in items):
            # The entry still runs: stop its working orders, exit once it has finished (shorts first).
            await settled(
                *(self._cancel_entry(client, plan, leg) for s, leg in items if s.status == "pending")
            )
            self.entering += len(items)
            return
        shorts = [(s, leg) for s, leg in items if leg.side == "SELL"]
        longs = [(s, leg) for s, leg in items if leg.side == "BUY"]
        done = await self._exit_all(client, plan, shorts, first)
        if stuck:
            why = f"{KEPT_HEDGE}: a short leg of this account could not be bought back (in error)"
            kept = [leg.execution_id for s, leg in longs if s.status == "active"]
            await asyncio.to_thread(note, self.x.database, kept, why, "active")
            self.results.update(dict.fromkeys(kept, "kept"))
            return
        if all(r == "exited" for r in done):
            if shorts:  # the hedges' own first wave, now that every short of the account is flat
                # Hedges an earlier exit kept open for these shorts go too: that exit meant to close
                # them (a person's retry of a short that had given up, say).
                longs += await self._kept_hedges(plan, items[0][1].account_id, longs)
                first = {
                    **first,
                    **await self.first.claim([(plan, leg) for s, leg in longs if s.status == "active"]),
                }
            await self._exit_all(client, plan, longs, first)
            return
        why = f"{KEPT_HEDGE}: a short leg of this account is not yet bought back"
        kept = [leg.execution_id for s, leg in longs if s.status == "active"]
        await asyncio.to_thread(note, self.x.database, kept, why, "active")
        self.results.update(dict.fromkeys(kept, "kept"))

    async def _kept_hedges(
        self, plan: RunPlan, account_id: int, longs: list[tuple[ExitState, EntryLeg]]
    ) -> list[tuple[ExitState, EntryLeg]]:
        """The account's kept hedges (:func:`~algomirror.engine.exit_records.kept_hedges`) not already
        among ``longs``, with their legs from the run's plan."""

        def read() -> list[ExitState]:
            with self.x.database.session_factory() as session:
                return kept_hedges(session, plan.run_id, account_id)

        have = {leg.execution_id for _, leg in longs}
        legs = {leg.execution_id: leg for leg in plan.legs}
        found = await asyncio.to_thread(read)
        return [
            (s, legs[s.execution_id]) for s in found if s.execution_id in legs and s.execution_id not in have
        ]

    async def _exit_all(
        self,
        client: OpenAlgoClient,
        plan: RunPlan,
        items: list[tuple[ExitState, EntryLeg]],
        first: dict[int, list[IntentRow]],
    ) -> list[ExitResult | str]:
        """Exit ``items`` of one account together: the legs whose first attempt ``first`` holds are
        sent at once and followed together, every other leg one by one; their results in order."""
        fast = [leg for _, leg in items if leg.execution_id in first]
        slow = [(s, leg) for s, leg in items if leg.execution_id not in first]
        fast_results, slow_results = await settled(
            self._exit_claimed(client, plan, fast, first),
            _all(self._exit(client, plan, s, leg) for s, leg in slow),
        )
        results = {leg.execution_id: r for leg, r in zip(fast, fast_results, strict=True)}
        results.update({leg.execution_id: r for (_, leg), r in zip(slow, slow_results, strict=True)})
        return [results[leg.execution_id] for _, leg in items]

    async def _exit_claimed(
        self, client: OpenAlgoClient, plan: RunPlan, legs: list[EntryLeg], first: dict[int, list[IntentRow]]
    ) -> list[ExitResult | str]:
        """The fast first attempt of one account's ``legs`` (claimed by :meth:`FirstWave.claim`): sent
        at once and followed together; each leg then goes on as :meth:`_exit_leg` would after it."""
        if not legs:
            return []
        await self.first.send(client, [row for leg in legs for row in first[leg.execution_id]])
        return list(await settled(*(self._after_first(client, plan, leg) for leg in legs)))

    async def _after_first(self, client: OpenAlgoClient, plan: RunPlan, leg: EntryLeg) -> ExitResult | str:
        result = await self._own(client, plan, leg, 1, verify_first=False, done=await self._conclude(leg, 1))
        self.results[leg.execution_id] = result
        return result

    async def _exit(
        self, client: OpenAlgoClient, plan: RunPlan, state: ExitState, leg: EntryLeg
    ) -> ExitResult | str:
        result = await self._exit_leg(client, plan, state, leg)
        self.results[leg.execution_id] = result
        return result

    async def _exit_leg(
        self, client: OpenAlgoClient, plan: RunPlan, state: ExitState, leg: EntryLeg
    ) -> ExitResult | str:
        """Own the exit of one leg from its claim to ``exited`` or ``error``: attempt, wait, verify at
        the broker, next attempt (see the module docstring). The execution stays ``exiting`` between
        attempts, so no second cause can claim it meanwhile."""
        x = self.x
        rounds = max(x.retry.attempts, 1)
        attempt: int | None
        verify_first = False
        if state.status in ("active", "error"):
            if state.status == "error" and not self.scope.retry_errors:
                # Only a retry takes a leg out of error: a person's, the square-off's, an unwind's
                # hand-over; a rule's or a time exit leaves it to them.
                return "other"
            attempt = await asyncio.to_thread(
                claim_exit,
                x.database,
                leg.execution_id,
                self.scope.reason,
                self.scope.detail,
                from_error=state.status == "error",
                round_size=rounds,
            )
            if attempt is None:
                return await self._await_owner(leg.execution_id)
            # Every attempt after the first (a person's retry from ``error`` in particular) is verified
            # at the broker before anything is sent: an earlier attempt's order may still be working,
            # or our fills may already cover the leg (PRODUCT §6.7 step 6). So is a first attempt while
            # an exit order of ours (an entry unwind's) is unfinished.
            verify_first = attempt > 1 or bool(await asyncio.to_thread(self._unfinished, leg.execution_id))
        elif state.status == "exiting" and state.attempt >= 1:
            attempt = state.attempt  # this command's earlier attempt (or a concurrent one): same keys
            # An attempt whose intents were never written (the engine died right after numbering it)
            # is verified at the broker again before anything is recorded.
            verify_first = not await asyncio.to_thread(
                self._intents_of_attempt, leg.execution_id, attempt
            ) and (attempt > 1 or bool(await asyncio.to_thread(self._unfinished, leg.execution_id)))
        else:
            return "other"  # an entry unwind owns it (attempt 0)
        return await self._own(client, plan, leg, attempt, verify_first=verify_first)

    async def _own(
        self,
        client: OpenAlgoClient,
        plan: RunPlan,
        leg: EntryLeg,
        attempt: int,
        *,
        verify_first: bool,
        done: ExitResult | str | None = None,
    ) -> ExitResult | str:
        """The owner's loop from attempt ``attempt`` on: attempt, wait, verify, next attempt.
        ``done``: the outcome of attempt ``attempt``, already driven (the fast first attempt)."""
        x = self.x
        verified: int | None = None
        while True:
            if done is not None:
                result, done = done, None
            else:
                if verify_first:
                    decision = await self._verify(client, plan, leg, attempt)
                    if decision == "other":
                        return await self._await_owner(leg.execution_id)
                    if isinstance(decision, str):
                        return decision
                    verified = decision
                result = await self._attempt(client, plan, leg, attempt, verified)
            if result == "other":
                return await self._await_owner(leg.execution_id)
            if result in ("exited", "error"):
                return result
            # Rejected, part filled or unresolved: the owner waits, then verifies before anything else.
            await asyncio.sleep(x.retry.wait_after(attempt))
            decision = await self._verify(client, plan, leg, attempt)
            if decision == "other":
                return await self._await_owner(leg.execution_id)
            if isinstance(decision, str):
                return decision
            following = await asyncio.to_thread(next_attempt, x.database, leg.execution_id, attempt)
            if following is None:
                return await self._await_owner(leg.execution_id)
            log.info(
                "exit of execution %s: attempt %s failed; attempt %s for %s unit(s)",
                leg.execution_id,
                attempt,
                following,
                decision,
            )
            attempt, verified, verify_first = following, decision, False

    def _unfinished(self, execution_id: int) -> list[IntentRow]:
        """The execution's exit intents of every attempt that reached the broker and are not finished
        (an order that may still be working or fill); a ``created`` one never left."""
        return [
            r
            for r in exit_intents(self.x.database, execution_id)
            if not r.terminal and r.state != order_state.CREATED
        ]

    def _close_unplaced(self, execution_id: int, broker: str) -> int:
        """Cancel the execution's ``unknown`` exit intents that have no order id (see the caller); how
        many. Only on a person's retry, after the orderbook lookup and a clean broker read."""
        closed = 0
        for row in self._unfinished(execution_id):
            if row.state != order_state.UNKNOWN or row.order_id is not None:
                continue
            reason = f"not placed: no order of ours at the broker when the exit was retried ({broker})"
            self.driver.journal.advance(row.id, order_state.CANCELLED, rejection_reason=reason)
            log.warning("exit intent %s of execution %s: %s", row.key, execution_id, reason)
            closed += 1
        return closed

    def _open_units(self, execution_id: int, fresh: ExitState) -> int:
        """Units still open by our own records: filled − exited (terminal exit fills) − the fills of
        exit orders not finished yet (they count too: those units are bought back already)."""
        pending = sum(r.filled_quantity for r in self._unfinished(execution_id))
        return max(fresh.open_quantity - pending, 0)

    def _intents_of_attempt(self, execution_id: int, attempt: int) -> list[IntentRow]:
        prefix = attempt_prefix(execution_id, attempt)
        return [r for r in exit_intents(self.x.database, execution_id) if r.key.startswith(prefix)]

    async def _attempt(
        self, client: OpenAlgoClient, plan: RunPlan, leg: EntryLeg, attempt: int, verified: int | None
    ) -> ExitResult | str:
        """Drive attempt ``attempt``: its intents (written now when there are none yet, for the open
        quantity, capped by ``verified``), sent once each; then its outcome (``failed`` at the end of a
        round is ``error``)."""
        x = self.x
        fresh = await asyncio.to_thread(read_state, x.database, leg.execution_id)
        if fresh is None or fresh.status != "exiting" or fresh.attempt != attempt:
            return "exited" if fresh is not None and fresh.status == "exited" else "other"
        intents = await asyncio.to_thread(self._intents_of_attempt, leg.execution_id, attempt)
        if not intents:
            ours = await asyncio.to_thread(self._open_units, leg.execution_id, fresh)
            quantity = ours if verified is None else min(verified, ours)
            try:
                slices = slice_quantities(leg, self.today, quantity=quantity)
            except ValueError as exc:  # nothing sendable: retrying cannot help
                return await self._give_up(leg, attempt, f"exit not possible: {exc}")
            intents = await asyncio.to_thread(self._record, plan, leg, attempt, slices)
        await settled(
            *(self.driver.drive(client, i, allow_send=True, priority=Priority.EXIT) for i in intents)
        )
        return await self._conclude(leg, attempt)

    async def _conclude(self, leg: EntryLeg, attempt: int) -> ExitResult | str:
        """Attempt ``attempt``'s outcome once its orders were driven (``failed`` at the end of a
        round is ``error``)."""
        x = self.x
        result = await asyncio.to_thread(
            finish_attempt, x.database, leg.execution_id, leg.side, attempt, x.market_clock.now()
        )
        if result == "failed" and attempt >= round_end(attempt, max(x.retry.attempts, 1)):
            mine = await asyncio.to_thread(self._intents_of_attempt, leg.execution_id, attempt)
            return await self._give_up(leg, attempt, self._last_words(mine, attempt))
        return result

    def _last_words(self, mine: list[IntentRow], attempt: int) -> str:
        rounds = max(self.x.retry.attempts, 1)
        return f"exit failed after {rounds} attempt(s); last: {attempt_failure(mine, attempt)}"

    async def _verify(self, client: OpenAlgoClient, plan: RunPlan, leg: EntryLeg, attempt: int) -> int | str:
        """Before attempt ``attempt + 1``: follow our own orders again (never sending), then read the
        broker until it can say what is still open. Returns the units the next attempt may send, or
        how the leg ended (``exited``, ``error``, ``other``: moved on by another caller)."""
        x = self.x
        retry = x.retry
        deadline = time.monotonic() + retry.verify_timeout
        extended = False
        exit_side = "BUY" if leg.side == "SELL" else "SELL"
        while True:
            rows = await asyncio.to_thread(exit_intents, x.database, leg.execution_id)
            unsettled = [r for r in rows if not r.terminal and r.state != order_state.CREATED]
            if unsettled:  # resolve unknown outcomes from the orderbook, follow working orders
                await settled(
                    *(
                        self.driver.drive(client, r, allow_send=False, priority=Priority.EXIT)
                        for r in unsettled
                    )
                )
            mine = [r for r in rows if r.key.startswith(attempt_prefix(leg.execution_id, attempt))]
            # Also with no intent of this attempt yet (a retry verified first): every attempt's fills
            # are totalled, so an earlier attempt's order that has since filled ends the exit here.
            result = await asyncio.to_thread(
                finish_attempt, x.database, leg.execution_id, leg.side, attempt, x.market_clock.now()
            )
            if result in ("exited", "other"):
                return result
            if result == "failed" and mine and attempt >= round_end(attempt, max(retry.attempts, 1)):
                latest = await asyncio.to_thread(self._intents_of_attempt, leg.execution_id, attempt)
                return await self._give_up(leg, attempt, self._last_words(latest, attempt))
            # Any attempt's order still working or unresolved (not only this attempt's): wait.
            ours_unsettled = bool(await asyncio.to_thread(self._unfinished, leg.execution_id))
            owned = await asyncio.to_thread(owned_order_ids, x.database, leg.account_id)
            try:
                view = await read_broker(
                    client,
                    tag=plan.tag,
                    symbol=leg.symbol,
                    exchange=leg.exchange,
                    product=leg.product,
                    exit_side=exit_side,
                    owned=owned,
                )
            except BrokerError as exc:
                waiting = f"cannot verify at the broker ({exc.message}); nothing is sent until it can"
            else:
                # A person's retry of a leg in error: an exit of ours left ``unknown`` without an order id
                # (the engine died mid-send) that no orderbook read ever showed, while the broker has
                # nothing of ours working or filled on the symbol, never reached the broker. Closed as not
                # placed, or it would block this retry (and "closed outside") for ever.
                clean = not view.working and not view.untracked_fills
                if (
                    ours_unsettled
                    and self.scope.by_person
                    and clean
                    and await asyncio.to_thread(self._close_unplaced, leg.execution_id, view.describe()) > 0
                ):
                    ours_unsettled = bool(await asyncio.to_thread(self._unfinished, leg.execution_id))
                if view.working or ours_unsettled:
                    waiting = (
                        f"an exit order of ours is still working or unresolved ({view.describe()}); "
                        "nothing is sent until it ends"
                    )
                else:
                    fresh = await asyncio.to_thread(read_state, x.database, leg.execution_id)
                    if fresh is None or fresh.status != "exiting" or fresh.attempt != attempt:
                        return "exited" if fresh is not None and fresh.status == "exited" else "other"
                    ours_open = await asyncio.to_thread(self._open_units, leg.execution_id, fresh)
                    quantity = still_open(view, leg_side=leg.side, ours_open=ours_open)
                    if quantity > 0:
                        return quantity
                    return await self._give_up(
                        leg,
                        attempt,
                        f"exit not retried: the broker shows nothing of ours left to close "
                        f"({view.describe()}) while our exit fills cover {fresh.exited_quantity} of "
                        f"{fresh.filled_quantity}; check the position, then retry the exit or confirm it "
                        "closed outside",
                    )
            if time.monotonic() >= deadline and not extended:
                extended = True
                # An exit of ours lost mid-send (unknown, no order id) that the driver's lost-order rule
                # will soon conclude never placed: wait for that verdict (once) rather than call the
                # outcome unknowable.
                lost = await asyncio.to_thread(self._unfinished, leg.execution_id)
                due = await asyncio.to_thread(self.driver.seconds_until_unplaced, lost)
                if due is not None:
                    slack = self.driver.config.resolve_seconds + 2 * retry.verify_interval
                    deadline = time.monotonic() + due + slack
            if time.monotonic() >= deadline:
                last = f"; last: {attempt_failure(mine, attempt)}" if mine else ""
                why = f"exit outcome cannot be established: {waiting}{last}"
                return await self._give_up(leg, attempt, why)
            log.info("exit of execution %s: %s", leg.execution_id, waiting)
            await asyncio.to_thread(note, x.database, [leg.execution_id], waiting, "exiting")
            await asyncio.sleep(retry.verify_interval)

    async def _give_up(self, leg: EntryLeg, attempt: int, why: str) -> str:
        """``error`` + alert, unless another caller finished the leg meanwhile."""
        x = self.x
        if await asyncio.to_thread(
            mark_error, x.database, leg.execution_id, attempt, why, x.market_clock.now()
        ):
            log.warning("exit of execution %s: error: %s", leg.execution_id, why)
            return "error"
        current = await asyncio.to_thread(read_state, x.database, leg.execution_id)
        return "exited" if current is not None and current.status == "exited" else "other"

    async def _await_owner(self, execution_id: int) -> ExitResult | str:
        """Another caller owns this exit: wait (bounded) for its outcome, so that the hedges of this
        account are sold once the short is flat whoever bought it back."""
        config = self.x.config.driver
        deadline = time.monotonic() + config.fill_timeout + config.resolve_seconds
        while True:
            current = await asyncio.to_thread(read_state, self.x.database, execution_id)
            if current is None or current.status != "exiting":
                log.info("exit of execution %s: done by another owner (%s)", execution_id, current)
                return "exited" if current is not None and current.status == "exited" else "other"
            if time.monotonic() >= deadline:
                return "open"
            await asyncio.sleep(config.status_interval)

    def _record(self, plan: RunPlan, leg: EntryLeg, attempt: int, slices: list[int]) -> list[IntentRow]:
        """Write every slice's intent of this attempt (existing keys kept as stored), return them."""
        prefix = attempt_prefix(leg.execution_id, attempt)
        for spec in exit_specs(plan, leg, attempt, slices):
            try:
                self.driver.journal.record(spec)
            except IntentExistsError:
                pass  # written by an earlier try of this attempt: driven from its stored state
        return [r for r in exit_intents(self.x.database, leg.execution_id) if r.key.startswith(prefix)]

    async def _cancel_entry(self, client: OpenAlgoClient, plan: RunPlan, leg: EntryLeg) -> None:
        """Cancel the execution's working entry orders one by one (tagged, by id) and follow each with
        ``orderstatus`` to the broker's final word; then write the entry's outcome."""
        intents = await asyncio.to_thread(intents_of, self.x.database, leg.execution_id, "entry")
        working = [i for i in intents if i.state == order_state.ACKNOWLEDGED and i.order_id]
        for intent in working:
            assert intent.order_id is not None
            try:
                await client.cancel_order(intent.order_id, strategy=plan.tag, priority=Priority.EXIT)
            except BrokerError as exc:  # already terminal, or unreadable: orderstatus decides
                log.info("cancel of %s: %s", intent.order_id, exc.message)
        await settled(
            *(self.driver.drive(client, i, allow_send=False, priority=Priority.EXIT) for i in working)
        )
        rows = await asyncio.to_thread(intents_of, self.x.database, leg.execution_id, "entry")
        if rows and all(r.terminal for r in rows):
            await asyncio.to_thread(finish_entry, self.x.database, leg, rows, self.x.market_clock.now())


__all__ = ["ExitRetry", "ExitScope", "ExitWork", "parse_scope"]
