"""One attempt at entering one run (steps 1, 2, 4 and 5 of :mod:`~algomirror.engine.execution`): the
BUY phase of every account, then the SELL phase of each account whose BUY legs all filled, every order
recorded and claimed in the journal before it is sent; then the strategy's leg-failure policy per
account (``unwind``: that account's filled legs exited, shorts before hedges, and an unwind that does
not close handed to the exit function) and the records of each leg. :class:`~algomirror.engine.
execution.EntryExecutor` claims the command, loads the run and finishes it."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Literal

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from algomirror.broker.client import OpenAlgoClient
from algomirror.broker.registry import Priority
from algomirror.db.models import EngineCommand, OrderIntent, StrategyExecution
from algomirror.db.session import Database
from algomirror.domain.timeutil import to_ist
from algomirror.engine.command_rows import MAX_ERROR
from algomirror.engine.concurrency import settled
from algomirror.engine.entry_records import (
    EntryLeg,
    RunPlan,
    finish_entries,
    finish_entry,
    finish_exit,
    load_plan,
    mark_failed,
    slice_quantities,
)
from algomirror.engine.exit_first import exit_specs
from algomirror.engine.exit_planning import request_exit
from algomirror.engine.group_commit import GroupCommit, split_groups
from algomirror.engine.journal import Advance, ClaimedIntent, IntentExistsError, IntentSpec, IntentView
from algomirror.engine.order_driver import IntentRow, OrderDriver

log = logging.getLogger(__name__)


if TYPE_CHECKING:
    from algomirror.engine.execution import EntryExecutor

LegState = Literal["filled", "failed", "open"]


class RunEntry:
    """One attempt at entering one run: the two phases, the policy, the records."""

    def __init__(self, executor: EntryExecutor, plan: RunPlan, driver: OrderDriver) -> None:
        self.x = executor
        self.plan = plan
        self.driver = driver
        self.today = to_ist(executor.market_clock.now()).date()
        # The accounts of a phase finish their rounds within moments of each other: their journal
        # writes and execution writes go in shared transactions (group commit), not one per account.
        self._advances: GroupCommit[list[Advance], list[IntentView]] = GroupCommit(self._advance_groups)
        self._finishes: GroupCommit[list[tuple[EntryLeg, list[IntentRow]]], list[LegState]] = GroupCommit(
            self._finish_groups
        )

    def _advance_groups(self, groups: Sequence[list[Advance]]) -> list[list[IntentView]]:
        views = self.driver.journal.advance_many([change for group in groups for change in group])
        return split_groups(views, groups)

    def _finish_groups(
        self, groups: Sequence[list[tuple[EntryLeg, list[IntentRow]]]]
    ) -> list[list[LegState]]:
        items = [item for group in groups for item in group]
        return split_groups(finish_entries(self.x.database, items, self.x.market_clock.now()), groups)

    async def enter(self) -> None:
        accounts = sorted({leg.account_id for leg in self.plan.legs})
        buys = await self._phase(accounts, "BUY")
        # Accounts whose hedges all filled send their SELL legs together (one journal transaction
        # records them all); each account's policy runs as soon as its own SELL legs have ended.
        ready = [a for a, states in zip(accounts, buys, strict=True) if not {"open", "failed"} & set(states)]
        others = [(a, states) for a, states in zip(accounts, buys, strict=True) if a not in set(ready)]
        await settled(
            self._phase(ready, "SELL", then=self._after_sells),
            *(self._after_buys(a, states) for a, states in others),
        )

    def _legs(self, account_id: int, side: str) -> list[EntryLeg]:
        return [leg for leg in self.plan.legs if leg.account_id == account_id and leg.side == side]

    async def _phase(
        self,
        account_ids: list[int],
        side: str,
        *,
        then: Callable[[int, list[LegState]], Awaitable[None]] | None = None,
    ) -> list[list[LegState]]:
        """Enter the ``side`` legs of every account in ``account_ids`` (accounts in parallel); the
        legs' states per account, in order; ``then(account, states)`` runs for each account as soon as
        its own legs have ended.

        The hot path: the intents of every sendable leg of every account are written and their sends
        claimed in ONE journal transaction before any order leaves (:meth:`Journal.record_and_claim`);
        each account then places its orders, follows them with one orderbook read per round and writes
        their outcomes in one transaction per round, and its executions in one more. Legs that cannot
        take that path (not pending, blocked, unsliceable) go one by one as before
        (:meth:`_enter_leg`)."""
        work: list[tuple[int, list[EntryLeg], OpenAlgoClient | None, str | None]] = []
        for account_id in account_ids:
            account = self.plan.accounts.get(account_id)
            client, reason = (None, "account not found") if account is None else self.x.client_for(account)
            work.append((account_id, self._legs(account_id, side), client, reason))
        readable = [a for a, legs, client, _ in work if legs and client is not None]
        blocks = await asyncio.to_thread(self.x.entry_blocks, readable) if readable else {}
        fast: dict[int, list[tuple[EntryLeg, list[IntentSpec]]]] = defaultdict(list)
        for account_id, legs, client, _ in work:
            if client is None or blocks.get(account_id) is not None:
                continue
            for leg in legs:
                if leg.status != "pending":
                    continue
                try:
                    slices = slice_quantities(leg, self.today)
                except ValueError:
                    continue  # _enter_leg says why (or drives what an earlier attempt recorded)
                fast[account_id].append((leg, self._specs(leg, slices)))
        specs = [spec for items in fast.values() for _, leg_specs in items for spec in leg_specs]
        claimed: dict[str, ClaimedIntent] = {}
        if specs:
            try:
                found = await asyncio.to_thread(self.driver.journal.record_and_claim, specs)
            except IntegrityError:
                fast.clear()  # another writer raced us to a key: every leg one by one, as before
            else:
                claimed = {c.view.key: c for c in found}

        async def account_phase(
            account_id: int, legs: list[EntryLeg], client: OpenAlgoClient | None, reason: str | None
        ) -> list[LegState]:
            if not legs:
                return []
            block = reason if client is None else blocks.get(account_id)
            mine = fast.get(account_id, [])
            fast_ids = {leg.execution_id for leg, _ in mine}
            slow = [leg for leg in legs if leg.execution_id not in fast_ids]
            states: dict[int, LegState] = {}
            slow_states, fast_states = await settled(
                self._enter_slow(client, slow, block),
                self._enter_claimed(client, mine, claimed) if mine and client is not None else _none(),
            )
            states.update({leg.execution_id: st for leg, st in zip(slow, slow_states, strict=True)})
            states.update({leg.execution_id: st for (leg, _), st in zip(mine, fast_states, strict=True)})
            result = [states[leg.execution_id] for leg in legs]
            if then is not None:
                await then(account_id, result)
            return result

        return list(await settled(*(account_phase(*item) for item in work)))

    async def _enter_slow(
        self, client: OpenAlgoClient | None, legs: list[EntryLeg], block: str | None
    ) -> list[LegState]:
        return list(await settled(*(self._enter_leg(client, leg, block) for leg in legs)))

    async def _enter_claimed(
        self,
        client: OpenAlgoClient,
        items: list[tuple[EntryLeg, list[IntentSpec]]],
        claimed: dict[str, ClaimedIntent],
    ) -> list[LegState]:
        """One account's legs whose intents :meth:`_phase` recorded and claimed: the won sends are
        placed at once and followed together (:meth:`OrderDriver.follow_many`); an intent an earlier
        attempt left (not won) is driven on from its stored state, never sent again."""
        rows: dict[str, IntentRow] = {}
        won: list[IntentRow] = []
        others: list[IntentRow] = []
        for _, specs in items:
            for spec in specs:
                c = claimed[spec.key]
                row = IntentRow.of_claimed(spec, c)
                rows[spec.key] = row
                (won if c.won else others).append(row)

        driven = await self.driver.send_claimed(
            client, won, others, priority=Priority.ENTRY, write=self._advances.submit
        )
        for row in driven:
            rows[row.key] = row
        return await self._finishes.submit(
            [(leg, [rows[spec.key] for spec in specs]) for leg, specs in items]
        )

    async def _after_sells(self, account_id: int, sells: list[LegState]) -> None:
        if "failed" in sells:
            await self._apply_policy(account_id)

    async def _after_buys(self, account_id: int, buys: list[LegState]) -> None:
        if "open" in buys:
            return  # hedges of unknown outcome: no SELL and no unwind until they are resolved
        sells: list[LegState]
        if "failed" in buys:
            note = "not placed: a BUY leg of this account failed, so its SELL legs were not sent"
            await asyncio.to_thread(self._fail_unsent, self._legs(account_id, "SELL"), note)
            sells = ["failed"]
        else:
            sells = (await self._phase([account_id], "SELL"))[0]
        if "failed" in sells or "failed" in buys:
            await self._apply_policy(account_id)

    def _fail_unsent(self, legs: list[EntryLeg], note: str) -> None:
        for leg in legs:
            if leg.status == "pending" and not intents_of(self.x.database, leg.execution_id, "entry"):
                mark_failed(self.x.database, leg.execution_id, note)

    async def _enter_leg(self, client: OpenAlgoClient | None, leg: EntryLeg, block: str | None) -> LegState:
        if leg.status != "pending":
            return "filled" if leg.status == "active" and leg.filled_all else "failed"
        intents = await asyncio.to_thread(intents_of, self.x.database, leg.execution_id, "entry")
        if client is not None and block is None:
            # Every slice's intent, also after an attempt that died between two of them: recording is
            # idempotent (an existing key is kept as stored).
            try:
                slices = slice_quantities(leg, self.today)
            except ValueError as exc:
                if not intents:
                    await asyncio.to_thread(mark_failed, self.x.database, leg.execution_id, str(exc))
                    return "failed"
            else:
                intents = await asyncio.to_thread(self._record, leg, self._specs(leg, slices), "entry")
        elif not intents:
            note = f"not placed: {block}"
            await asyncio.to_thread(mark_failed, self.x.database, leg.execution_id, note)
            return "failed"
        if client is None:
            # Orders may exist but the account cannot be read: leave them for the next attempt.
            return "open"
        send = block is None
        rows = await settled(
            *(self.driver.drive(client, i, allow_send=send, priority=Priority.ENTRY) for i in intents)
        )
        state = await asyncio.to_thread(finish_entry, self.x.database, leg, rows, self.x.market_clock.now())
        return state

    def _specs(self, leg: EntryLeg, slices: list[int]) -> list[IntentSpec]:
        """The entry intents of every slice of ``leg`` (``exec:{id}:entry:{n}``, the leg's order terms)."""
        return [
            IntentSpec(
                key=f"exec:{leg.execution_id}:entry:{n}",
                account_id=leg.account_id,
                symbol=leg.symbol,
                exchange=leg.exchange,
                product=leg.product,
                side=leg.side,
                quantity=quantity,
                order_type=leg.order_type,
                price=leg.price,
                trigger_price=leg.trigger_price,
                strategy_tag=self.plan.tag,
                execution_id=leg.execution_id,
                purpose="entry",
            )
            for n, quantity in enumerate(slices, start=1)
        ]

    def _record(self, leg: EntryLeg, specs: list[IntentSpec], purpose: str) -> list[IntentRow]:
        """Write ``specs`` (an existing key is kept as it is); return ``leg``'s ``purpose`` intents as
        stored."""
        journal = self.driver.journal
        for spec in specs:
            try:
                journal.record(spec)
            except IntentExistsError:
                pass  # written by an earlier attempt: driven from its stored state
        return intents_of(self.x.database, leg.execution_id, purpose)

    # ----------------------------------------------------------------------------------- policy

    async def _apply_policy(self, account_id: int) -> None:
        legs = await asyncio.to_thread(self._current_legs, account_id)
        failed = [
            leg for leg in legs if leg.status == "failed" or (leg.status == "active" and not leg.filled_all)
        ]
        # While the run enters, a leg can only be exiting, in error or exited through this policy (an
        # exit command waits for the entry): an unwind an earlier attempt began goes on even when the
        # leg that failed was the part-filled one, now being unwound itself.
        unwinding = [leg for leg in legs if leg.status in ("exiting", "error", "exited")]
        held = [leg for leg in legs if leg.status in ("active", "exiting")]
        if not failed and not unwinding:
            return
        # A begun unwind is finished whatever the policy reads now: a person switching the strategy to
        # ``keep`` while it entered would otherwise stop it half-way (a buy-back no longer followed, the
        # run entering for ever).
        unwind = self.plan.policy == "unwind" or bool(unwinding)
        if not held:
            if unwind:
                # Nothing left to send here; a leg an earlier attempt's unwind left in error (the engine
                # stopped before handing it over) is still handed over.
                await asyncio.to_thread(self._hand_over_unwind, account_id)
            return
        why = (
            "; ".join(
                f"leg {leg.leg_number} ({leg.symbol}) failed: {leg.error or 'not filled'}" for leg in failed
            )
            or "the unwind of this account, begun by an earlier attempt of the entry"
        )
        if not unwind:
            await asyncio.to_thread(self._note_kept, held, why)
            return
        account = self.plan.accounts.get(account_id)
        client, reason = (None, "account not found") if account is None else self.x.client_for(account)
        if client is None:
            await asyncio.to_thread(self._note_kept, held, f"{why}; unwind not possible: {reason}")
            await asyncio.to_thread(self._hand_over_unwind, account_id)
            return
        # Shorts are bought back before their hedges are sold: a short is never left uncovered. That
        # includes a short of this account that is not in hand: one whose entry's outcome is not known
        # yet (``pending``: it may have filled) and one whose buy-back gave up (``error``, an earlier
        # attempt's): the hedges wait for both.
        shorts = [leg for leg in held if leg.side == "SELL"]
        longs = [leg for leg in held if leg.side == "BUY"]
        unsettled = [leg for leg in legs if leg.side == "SELL" and leg.status in ("pending", "error")]
        closed = await settled(*(self._unwind(client, leg, why) for leg in shorts))
        if all(closed) and not unsettled:
            await settled(*(self._unwind(client, leg, why) for leg in longs))
        elif kept := [leg for leg in longs if leg.status == "active"]:
            note = f"{why}; hedge kept open: a short leg of this account is not bought back"
            await asyncio.to_thread(self._note_kept, kept, note)
        await asyncio.to_thread(self._hand_over_unwind, account_id)

    def _hand_over_unwind(self, account_id: int) -> None:
        """An unwind that left a leg of ``account_id`` in ``error`` (its one attempt refused or part
        filled) goes on through the exit function, like every other exit (PRODUCT §6.7): one ``exit``
        command of the account's part of the run, reason ``entry_unwind``, retrying the legs in error —
        verified at the broker before anything is re-sent, retried with capped backoff, shorts before
        hedges — under the token ``unwind:{run}:{account}``, so once however often the entry retries.
        An unwind whose outcome is only unknown (still ``exiting``) is left to the entry's next attempt."""
        run_id = self.plan.run_id
        token = f"unwind:{run_id}:{account_id}"
        try:
            with self.x.database.session() as session:
                stuck = session.scalar(
                    select(StrategyExecution.id).where(
                        StrategyExecution.run_id == run_id,
                        StrategyExecution.account_id == account_id,
                        StrategyExecution.status == "error",
                    )
                )
                if stuck is None:
                    return
                if session.scalar(select(EngineCommand.id).where(EngineCommand.token == token)) is not None:
                    return
                request_exit(
                    session,
                    user_id=self.plan.user_id,
                    scope="account",
                    run_id=run_id,
                    account_id=account_id,
                    reason="entry_unwind",
                    retry_errors=True,
                    token=token,
                )
        except IntegrityError:
            return  # queued meanwhile by another attempt of this entry: once is all it needs
        log.warning(
            "run %s: the unwind of account %s did not close; handed to the exit function (%s)",
            run_id,
            account_id,
            token,
        )

    def _current_legs(self, account_id: int) -> list[EntryLeg]:
        with self.x.database.session_factory() as session:
            fresh = load_plan(session, self.plan.run_id, self.plan.user_id)
        assert fresh is not None
        return [leg for leg in fresh.legs if leg.account_id == account_id]

    def _note_kept(self, legs: list[EntryLeg], why: str) -> None:
        with self.x.database.session() as session:
            for leg in legs:
                row = session.get(StrategyExecution, leg.execution_id)
                if row is not None:
                    row.error_message = f"kept open: {why}"[:MAX_ERROR]

    async def _unwind(self, client: OpenAlgoClient, leg: EntryLeg, why: str) -> bool:
        """Exit one filled leg (claimed ``active → exiting``); True once it is flat."""
        claimed = leg.status != "active" or await asyncio.to_thread(
            claim_unwind, self.x.database, leg.execution_id
        )
        if not claimed:
            return False
        intents = await asyncio.to_thread(intents_of, self.x.database, leg.execution_id, "exit")
        if not intents:
            slices = slice_quantities(leg, self.today, quantity=leg.filled_quantity)
            # Attempt 1 of the exit function's keys and terms: a hand-over continues these intents.
            specs = exit_specs(self.plan, leg, 1, slices)
            intents = await asyncio.to_thread(self._record, leg, specs, "exit")
        rows = await settled(
            *(self.driver.drive(client, i, allow_send=True, priority=Priority.EXIT) for i in intents)
        )
        return await asyncio.to_thread(
            finish_exit, self.x.database, leg, rows, why, self.x.market_clock.now()
        )


async def _none() -> list[LegState]:
    return []


def intents_of(database: Database, execution_id: int, purpose: str) -> list[IntentRow]:
    """The journal's intents of one execution for ``purpose`` ("entry" or "exit"), oldest first."""
    with database.session_factory() as session:
        rows = session.scalars(
            select(OrderIntent)
            .where(OrderIntent.execution_id == execution_id, OrderIntent.purpose == purpose)
            .order_by(OrderIntent.id)
        ).all()
        return [IntentRow.of(r) for r in rows]


def claim_unwind(database: Database, execution_id: int) -> bool:
    """Claim execution ``execution_id`` for the entry's unwind (``active → exiting``, one winner: an
    exit that claimed it first owns it); True when this caller won."""
    with database.session() as session:
        won = session.execute(
            update(StrategyExecution)
            .where(StrategyExecution.id == execution_id, StrategyExecution.status == "active")
            .values(status="exiting")
            .execution_options(synchronize_session=False)
        )
        return getattr(won, "rowcount", 0) == 1


__all__ = ["LegState", "RunEntry", "claim_unwind", "intents_of"]
