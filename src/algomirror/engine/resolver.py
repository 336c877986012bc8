"""The resolver: a saved strategy resolved for one user on the engine's client registry (steps 1–5 of
:mod:`~algomirror.engine.resolution`): pre-checks, market data from the feed account, each leg's
expiry, strike and symbol, each account's funds and size, warnings. No state between calls; a broker
error is a reason on the :class:`~algomirror.engine.resolution_results.Resolution`, never a crash."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import date, datetime, time
from decimal import Decimal
from typing import TypeVar

from algomirror.broker.client import OpenAlgoClient
from algomirror.broker.errors import BrokerError
from algomirror.broker.wire.instruments import OptionChain
from algomirror.db.session import Database
from algomirror.domain.calendar import TradingCalendar, default_calendar
from algomirror.domain.contract_specs import freeze_slices
from algomirror.domain.errors import DomainError, ExecuteRefused, FundsUnavailable
from algomirror.domain.expiry_choice import resolve_expiry
from algomirror.domain.instruments import exchanges_for, future_symbol, option_symbol, underlying_spec
from algomirror.domain.money import format_inr
from algomirror.domain.reservations import funds_left
from algomirror.domain.resolution import (
    LegShape,
    SizedLeg,
    atm_for,
    contract_size,
    estimate_margins,
    naked_shorts,
    pick_strike,
)
from algomirror.domain.sizing import (
    AccountFunds,
    AccountShare,
    LegSize,
    SizingLeg,
    resolve_grade,
    seller_base,
    size_account,
    size_fixed,
)
from algomirror.domain.strikes import atm_strike, premium_scan_strikes, select_premium_near
from algomirror.domain.timeutil import Clock, to_ist
from algomirror.engine.entry_records import AccountInfo
from algomirror.engine.resolution_results import AccountResult, Cell, LegResult, Resolution
from algomirror.engine.resolution_snapshot import Snapshot, SnapshotAccount, load_snapshot, reason_of

T = TypeVar("T")

# Options are not sent before the regular open even in a session that starts earlier (PRODUCT §5.1).
OPTIONS_OPEN = time(9, 15)


def _plain(value: Decimal) -> Decimal:
    """26200.0 → 26200 (a chain's float strikes arrive with a decimal place)."""
    return value.quantize(Decimal(1)) if value == value.to_integral_value() else value


async def _read(step: Awaitable[T]) -> tuple[T | None, str | None]:
    """A broker read: its value, or None and the reason (a broker error is a reason, not a crash)."""
    try:
        return await step, None
    except BrokerError as exc:
        return None, reason_of(exc)


class Resolver:
    """Resolves one strategy for one user (see the module docstring); no state between calls."""

    def __init__(
        self,
        database: Database,
        client_for: Callable[[AccountInfo], tuple[OpenAlgoClient | None, str | None]],
        clock: Clock,
        calendar: TradingCalendar | None = None,
    ) -> None:
        self.database = database
        self.client_for = client_for
        self.clock = clock
        self.calendar = calendar or default_calendar()

    async def resolve(self, user_id: int, strategy_id: int) -> Resolution:
        """Resolve ``strategy_id`` of ``user_id`` now. Never raises for a market or account condition:
        every failure is a reason on the result (database errors propagate, the command is retried)."""
        now = self.clock.now()
        snap = await asyncio.to_thread(load_snapshot, self.database, user_id, strategy_id, to_ist(now).date())
        res = Resolution(strategy_id, snap.name, now, snap.product, open_run=snap.open_run)
        res.errors += snap.errors
        res.warnings += snap.warnings
        if snap.open_run is not None:
            res.warnings.append(
                f"run #{snap.open_run} of this strategy is open: Execute is refused until it closes"
            )
        ist = to_ist(now)
        if snap.square_off is not None and ist.time() >= snap.square_off:
            res.errors.append(f"past the strategy's square-off time ({snap.square_off:%H:%M} IST)")
        if not snap.legs or not snap.selected or "strategy not found" in snap.errors:
            return res
        res.legs = [LegResult(leg) for leg in snap.legs]
        clients = self._accounts(snap, res)
        feed = await self._feed(snap, clients)
        if feed is None:
            res.errors.append("no healthy account to read market data from (the feed account)")
            return res
        res.feed, feed_client = feed
        await self._resolve_legs(snap, res, feed_client, now)
        await self._size(snap, res, clients, now)
        return res

    # ----------------------------------------------------------------------------------- accounts

    def _accounts(self, snap: Snapshot, res: Resolution) -> dict[int, OpenAlgoClient]:
        """Every selected account's result row; the clients of those that may trade."""
        clients: dict[int, OpenAlgoClient] = {}
        for account_id, account, _ in snap.selected:
            if account is None:
                res.accounts.append(
                    AccountResult(
                        account_id, f"#{account_id}", "the account is not yours or no longer exists"
                    )
                )
                continue
            row = AccountResult(account.id, account.name)
            res.accounts.append(row)
            if account.archived:
                row.reason = "the account is archived"
            elif not account.is_active:
                row.reason = "the account is inactive"
            elif account.status == "auth_failed":
                row.reason = "the account's API key was refused by the broker; fix the key first"
            elif account.halted:
                row.reason = f"entries on this account are halted: {account.halted}"
            else:
                client, why = self.client_for(account.info)
                if client is None:
                    row.reason = why
                else:
                    clients[account.id] = client
        return clients

    async def _feed(
        self, snap: Snapshot, clients: dict[int, OpenAlgoClient]
    ) -> tuple[SnapshotAccount, OpenAlgoClient] | None:
        """The feed account: the primary when healthy, else the first healthy selected account."""
        candidates = [snap.primary] if snap.primary is not None else []
        candidates += [a for _, a, _ in snap.selected if a is not None]
        for account in candidates:
            if account is None or account.archived or not account.is_active or account.halted is not None:
                continue
            if account.status != "connected":
                continue
            client = clients.get(account.id)
            if client is None:
                client, _ = self.client_for(account.info)
            if client is not None:
                return account, client
        return None

    # --------------------------------------------------------------------------------------- legs

    async def _resolve_legs(
        self, snap: Snapshot, res: Resolution, client: OpenAlgoClient, now: datetime
    ) -> None:
        today = to_ist(now).date()
        for r in res.legs:
            leg = r.leg
            if leg.product_type == "equity":
                r.error = "equity legs are not supported by Execute"
            elif leg.action not in ("BUY", "SELL"):
                r.error = "the leg has no action (BUY or SELL)"
            elif leg.product_type == "options" and leg.option_type not in ("CE", "PE"):
                r.error = "the leg has no option type (CE or PE)"
            else:
                try:
                    r.exchange = exchanges_for(leg.instrument).fo
                except DomainError as exc:
                    r.error = reason_of(exc)
        live = [r for r in res.legs if r.error is None]
        instruments = sorted({r.leg.instrument for r in live})
        # Spot: the index LTP, read once per instrument for this run.
        for name in instruments:
            quote, why = await _read(client.quotes(name, exchanges_for(name).spot))
            if quote is None or quote.ltp is None or quote.ltp <= 0:
                res.instrument_errors[name] = f"could not read the {name} spot: {why or 'no LTP'}"
            else:
                res.spot[name] = quote.ltp
                res.atm[name] = atm_strike(quote.ltp, underlying_spec(name).strike_step)
        # Expiry lists, once per (instrument, options|futures).
        lists: dict[tuple[str, str], tuple[tuple[date, ...] | None, str | None]] = {}
        for r in live:
            kind = "futures" if r.leg.product_type == "futures" else "options"
            key = (r.leg.instrument, kind)
            if key not in lists:
                lists[key] = await _read(
                    client.expiry(r.leg.instrument, exchanges_for(r.leg.instrument).fo, kind)
                )
            listed, why = lists[key]
            if listed is None:
                r.error = f"could not resolve expiry: {why}"
                continue
            try:
                r.expiry = resolve_expiry(r.leg.expiry, kind, listed, now)
            except (DomainError, ValueError) as exc:
                r.error = (
                    reason_of(exc) if "expiry" in str(exc) else f"could not resolve expiry: {reason_of(exc)}"
                )
        chains: dict[tuple[str, date], tuple[OptionChain | None, str | None]] = {}
        for r in res.legs:
            if r.error is not None or r.expiry is None:
                continue
            await self._strike_and_symbol(r, res, client, chains)
            if r.error is None and r.symbol is not None:
                self._size_of(r, snap, chains, today)
        await self._ltps(res, client)
        self._leg_checks(snap, res, now)

    async def _strike_and_symbol(
        self,
        r: LegResult,
        res: Resolution,
        client: OpenAlgoClient,
        chains: dict[tuple[str, date], tuple[OptionChain | None, str | None]],
    ) -> None:
        leg, expiry = r.leg, r.expiry
        assert expiry is not None
        if leg.product_type == "futures":
            r.symbol = future_symbol(leg.instrument, expiry)
            return
        spot = res.spot.get(leg.instrument)
        if spot is None:
            r.error = res.instrument_errors.get(leg.instrument, "no spot")
            return
        key = (leg.instrument, expiry)
        if key not in chains:
            chains[key] = await _read(
                client.option_chain(
                    underlying=leg.instrument, exchange=exchanges_for(leg.instrument).spot, expiry_date=expiry
                )
            )
        chain, why = chains[key]
        if chain is None:
            r.error = f"could not read the option chain of {expiry:%d %b %Y}: {why}"
            return
        listed = sorted({_plain(row.strike) for row in chain.chain})
        step = underlying_spec(leg.instrument).strike_step
        option_type = leg.option_type or ""
        try:
            atm = atm_for(spot, step, listed)
            if leg.selection == "premium_near":
                await self._premium_near(r, client, listed, atm, step)
            else:
                r.strike = pick_strike(
                    leg.selection,
                    option_type=option_type,
                    offset=leg.offset,
                    strike_price=leg.strike_price,
                    listed=listed,
                    atm=atm,
                )
        except (DomainError, ValueError) as exc:
            r.error = reason_of(exc)
            return
        if r.strike is not None:
            r.symbol = option_symbol(leg.instrument, expiry, r.strike, option_type)

    async def _premium_near(
        self, r: LegResult, client: OpenAlgoClient, listed: list[Decimal], atm: Decimal, step: Decimal
    ) -> None:
        leg, expiry = r.leg, r.expiry
        assert expiry is not None
        if leg.premium is None or leg.premium <= 0:
            r.error = "premium_near needs a premium value"
            return
        option_type = leg.option_type or ""
        exchange = r.exchange or ""
        scan = premium_scan_strikes(listed, atm, step)
        symbols = {option_symbol(leg.instrument, expiry, s, option_type): s for s in scan}
        items, why = await _read(client.multiquotes([(s, exchange) for s in symbols]))
        if items is None:
            r.error = f"could not price the premium scan: {why}"
            return
        quotes: dict[Decimal, Decimal | None] = {
            symbols[i.symbol]: (i.quote.ltp if i.quote is not None else None)
            for i in items
            if i.symbol in symbols
        }
        pick = select_premium_near(leg.premium, quotes, atm)
        r.strike, r.ltp = pick.strike, pick.ltp
        if pick.warning:
            r.warnings.append(
                f"premium {format_inr(pick.ltp)} is {pick.deviation * 100:.1f}% from the target "
                f"{format_inr(leg.premium)}"
            )

    def _size_of(
        self,
        r: LegResult,
        snap: Snapshot,
        chains: dict[tuple[str, date], tuple[OptionChain | None, str | None]],
        today: date,
    ) -> None:
        leg, expiry = r.leg, r.expiry
        assert expiry is not None
        chain_lot = None
        chain, _ = chains.get((leg.instrument, expiry), (None, None))
        if chain is not None:
            for row in chain.chain:
                side = row.ce if leg.option_type == "CE" else row.pe
                if _plain(row.strike) == r.strike and side is not None:
                    chain_lot = side.lotsize
        setting = snap.settings.get(leg.instrument)
        try:
            size = contract_size(
                leg.instrument,
                expiry,
                today,
                next_month=leg.expiry == "next_month",
                chain_lot=chain_lot,
                settings_lot=setting.lot if setting else None,
                settings_next_lot=setting.next_lot if setting else None,
                settings_freeze=setting.freeze if setting else None,
            )
        except ValueError as exc:
            r.error = reason_of(exc)
            return
        r.lot_size, r.freeze = size.lot_size, size.freeze
        if size.warning:
            r.warnings.append(size.warning)

    async def _ltps(self, res: Resolution, client: OpenAlgoClient) -> None:
        """One batch quote for the LTP of every resolved symbol still without one."""
        wanted = sorted({(r.symbol, r.exchange) for r in res.legs if r.ok and r.ltp is None and r.exchange})
        pairs = [(s, e) for s, e in wanted if s and e]
        if not pairs:
            return
        items, why = await _read(client.multiquotes(pairs))
        got = {} if items is None else {(i.symbol, i.exchange): i.quote for i in items}
        for r in res.legs:
            if r.ok and r.ltp is None:
                quote = got.get((r.symbol or "", r.exchange or ""))
                if quote is not None and quote.ltp is not None and quote.ltp > 0:
                    r.ltp = quote.ltp
                else:
                    r.warnings.append(f"no LTP for {r.symbol}" + (f": {why}" if why else ""))

    def _leg_checks(self, snap: Snapshot, res: Resolution, now: datetime) -> None:
        """Session per leg's exchange, naked shorts, the market-condition day."""
        ist = to_ist(now)
        for r in res.legs:
            if r.error is not None or r.exchange is None:
                continue
            if not self.calendar.is_open(r.exchange, now):
                r.blocked = f"{r.exchange} is not in session now ({ist:%H:%M} IST)"
            elif r.leg.product_type == "options" and ist.time() < OPTIONS_OPEN:
                r.blocked = f"options are not sent before {OPTIONS_OPEN:%H:%M} IST"
        shapes = [LegShape(r.leg.number, r.leg.instrument, r.leg.action, r.leg.kind) for r in res.legs]
        for r in res.legs:
            if r.leg.number in naked_shorts(shapes):
                r.warnings.append(f"naked short: no BUY {r.leg.kind} hedges this SELL leg")
        expiries = {r.expiry for r in res.legs if r.expiry is not None}
        today = ist.date()
        if snap.market_condition == "expiry" and expiries and today not in expiries:
            res.warnings.append("this strategy is meant for expiry days; today is not its contract's expiry")
        if snap.market_condition == "non_expiry" and today in expiries:
            res.warnings.append("this strategy is meant for non-expiry days; today is its contract's expiry")

    # ------------------------------------------------------------------------------------- sizing

    async def _size(
        self, snap: Snapshot, res: Resolution, clients: dict[int, OpenAlgoClient], now: datetime
    ) -> None:
        today = to_ist(now).date()
        usable = [a for a in res.accounts if a.reason is None and a.account_id in clients]
        reads = await asyncio.gather(*(_read(clients[a.account_id].funds()) for a in usable))
        accounts = {a.id: a for _, a, _ in snap.selected if a is not None}
        for row, (funds, why) in zip(usable, reads, strict=True):
            if funds is None:
                row.reason = f"funds unavailable: {why}"
                continue
            row.funds = AccountFunds(
                funds.availablecash, funds.collateral, accounts[row.account_id].collateral_included
            )
            held = snap.reserved.get(row.account_id, Decimal(0))
            if held > 0:
                # Another run's entry is going into this account: its margin is not in these funds yet.
                row.funds = funds_left(row.funds, held)
                row.warnings.append(f"{format_inr(held)} reserved by runs still entering on this account")
            try:
                row.available = seller_base(row.funds)
            except FundsUnavailable as exc:
                row.reason = f"funds unavailable: {reason_of(exc)}"
        resolved = [r for r in res.legs if r.ok]
        sizing_legs = [
            SizingLeg(
                index=r.leg.number,
                instrument=r.leg.instrument,
                action="BUY" if r.leg.action == "BUY" else "SELL",
                kind="FUT" if r.leg.kind == "FUT" else ("CE" if r.leg.kind == "CE" else "PE"),
                lot_size=r.lot_size or 1,
                lots=r.leg.lots,
                expiry_day=r.expiry == today,
                premium_per_lot=r.ltp * (r.lot_size or 1) if r.ltp else None,
            )
            for r in resolved
        ]
        funded = [a for a in res.accounts if a.reason is None]
        sizes: dict[int, tuple[LegSize, ...]] = {}
        if sizing_legs and funded:
            try:
                sizes = self._sizes(snap, sizing_legs, funded, accounts)
            except ExecuteRefused as exc:
                res.errors.append(reason_of(exc))
            except DomainError as exc:
                res.errors.append(f"sizing failed: {reason_of(exc)}")
        self._cells(snap, res, sizes, today)

    def _sizes(
        self,
        snap: Snapshot,
        legs: list[SizingLeg],
        funded: list[AccountResult],
        accounts: dict[int, SnapshotAccount],
    ) -> dict[int, tuple[LegSize, ...]]:
        grade = resolve_grade(snap.risk_profile, snap.grades)
        if grade is None:
            multipliers = {a_id: m for a_id, _, m in snap.selected}
            shares = [
                AccountShare(
                    a.account_id,
                    multipliers.get(a.account_id) or accounts[a.account_id].multiplier,
                    a.available,
                    accounts[a.account_id].max_lots,
                )
                for a in funded
            ]
            return size_fixed(legs, snap.allocation, shares)  # type: ignore[arg-type]
        out: dict[int, tuple[LegSize, ...]] = {}
        for a in funded:
            assert a.funds is not None
            try:
                out[a.account_id] = size_account(
                    legs, grade, a.funds, snap.margins, max_lots_per_leg=accounts[a.account_id].max_lots
                ).legs
            except FundsUnavailable as exc:
                a.reason = f"funds unavailable: {reason_of(exc)}"
        return out

    def _cells(
        self, snap: Snapshot, res: Resolution, sizes: dict[int, tuple[LegSize, ...]], today: date
    ) -> None:
        """Every leg × account cell, then the account rules: a short is never planned without the BUY
        legs that hedge it; under ``unwind`` a leg that cannot be placed skips the whole account (the
        entry would unwind it anyway); the estimated margin must fit the seller base."""
        numbers = {r.leg.id: r.leg.number for r in res.legs}
        for account in res.accounts:
            own = {s.index: s for s in sizes.get(account.account_id, ())}
            cells: list[Cell] = []
            sized: dict[int, SizedLeg] = {}
            for r in res.legs:
                cell = Cell(r.leg.id, account.account_id)
                cells.append(cell)
                size = own.get(r.leg.number)
                if r.error is not None:
                    cell.status, cell.reason = "failed", r.error
                    continue
                if size is not None and r.lot_size is not None:
                    cell.lots, cell.quantity = size.lots, size.quantity
                    if size.lots > 0:
                        cell.slices = (
                            freeze_slices(size.quantity, r.freeze, r.lot_size)
                            if r.freeze
                            else [size.quantity]
                        )
                    shape = LegShape(r.leg.number, r.leg.instrument, r.leg.action, r.leg.kind)
                    sized[r.leg.id] = SizedLeg(shape, size.lots, r.lot_size, r.ltp, r.expiry == today)
                if r.blocked is not None:
                    cell.status, cell.reason = "failed", r.blocked
                elif size is None or size.lots == 0:
                    cell.status = "skipped"
                    cell.reason = (size.reason if size is not None else None) or "no lots for this account"
                elif size.reason:
                    account.warnings.append(f"leg {r.leg.number}: {size.reason}")
            if account.reason is None:
                self._unhedged(res, cells, numbers)
                failed = [c for c in cells if c.status == "failed"]
                if failed and snap.on_leg_failure == "unwind":
                    first = failed[0]
                    account.reason = (
                        f"leg {numbers[first.leg_id]} cannot be placed ({first.reason}); "
                        "the strategy unwinds an account on a failed leg"
                    )
            placed = [sized[c.leg_id] for c in cells if c.status == "ok" and c.leg_id in sized]
            margins = estimate_margins(
                placed if account.reason is None else list(sized.values()), snap.margins
            )
            for cell in cells:
                cell.margin = margins.get(numbers[cell.leg_id])
            known = [m for m in margins.values() if m is not None]
            account.margin = sum(known, Decimal(0)) if known else None
            if len(known) < len(margins):
                account.warnings.append("no margin row for an instrument: its margin is not estimated")
            if (
                account.reason is None
                and account.margin is not None
                and account.available is not None
                and account.margin > account.available
            ):
                account.reason = (
                    f"insufficient margin: needs {format_inr(account.margin)}, "
                    f"{format_inr(account.available)} available"
                )
            if account.reason is None:
                bad = [c for c in cells if c.status != "ok"]
                if bad and len(bad) == len(cells):
                    account.reason = f"nothing to place: leg {numbers[bad[0].leg_id]}: {bad[0].reason}"
                for c in bad:
                    account.warnings.append(f"leg {numbers[c.leg_id]} not placed: {c.reason}")
            if account.reason is not None:
                for cell in cells:
                    if cell.status == "ok":
                        cell.status, cell.reason = "skipped", account.reason
            res.cells += cells

    @staticmethod
    def _unhedged(res: Resolution, cells: list[Cell], numbers: dict[int, int]) -> None:
        """Skip the SELL option cells whose same-type BUY legs are not all placed on this account."""
        by_leg = {c.leg_id: c for c in cells}
        legs = {r.leg.id: r.leg for r in res.legs}
        for cell in cells:
            leg = legs[cell.leg_id]
            if cell.status != "ok" or leg.action != "SELL" or leg.kind == "FUT":
                continue
            hedges = [
                other
                for other in legs.values()
                if other.action == "BUY" and other.kind == leg.kind and other.instrument == leg.instrument
            ]
            missing = [h for h in hedges if by_leg[h.id].status != "ok"]
            if missing:
                cell.status = "skipped"
                cell.reason = f"its hedge (leg {numbers[missing[0].id]}) is not placed on this account"


__all__ = ["OPTIONS_OPEN", "Resolver"]
