"""Quantity per account: fixed lots (PRODUCT §4.1, §5.6) and grade (margin) profiles (§5.7, §9.1–9.3).

Pure and exact: money is :class:`~decimal.Decimal` under a context that traps any inexact operation, lots
and quantities are ``int``, and nothing is read from the outside — the caller passes the resolved legs,
the user's margin table and grade, and the account's funds.

Grade sizing, per account and once per Execute:

* base = seller base S (source ``available``) or buyer base C (source ``cash``), see :func:`margin_base`;
* budget D = base × p, computed **once** and reduced by each allocation (the original applied p again to
  the shrinking remainder);
* step 1, per instrument in order of its first option leg: a **pair** (≥ 1 SELL CE and ≥ 1 SELL PE)
  sizes every option leg of the instrument at L = ⌊D / M_pair⌋ (the BUY wings follow their sold type) and
  charges L × M_pair once; otherwise, when one type is sold and the instrument has BUY options, a
  **vertical** (BUY and SELL of the sold type) and any BUY of the other type (**risk reversal**, "as
  single_sell") are sized together at L = ⌊D / M_single⌋, charged once — sized alone from what the SELL
  left, that BUY would always get 0 lots;
* step 2, the remaining legs in leg order: SELL option → M_single; futures (either side) → M_futures;
  BUY hedging a same-type SELL already open in the account → that many lots, not charged (the SELL's
  margin was budgeted when it was sized); BUY under a cash grade → ⌊D / P⌋; BUY under a seller grade (no
  SELL option on its instrument) → its own lots, as many as L × P fits in D.
* the account's max lots per leg, when given, caps every leg and its charge; an instrument's legs on
  different expiries (a calendar) are charged at the dearer of the two columns.

Zero lots = the account is skipped for that leg, with ``insufficient margin: ₹M per lot, ₹D left``.

Total lots are **not** monotonic in the base: the allocation is greedy in leg order, so a larger base can
let an early, expensive group take one more lot and leave too little for several cheap lots later. What
is monotonic is the total charged (see :func:`size_by_grade`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from decimal import Context, Decimal, Inexact, localcontext
from itertools import pairwise
from typing import Literal

from algomirror.domain.errors import (
    FundsUnavailable,
    GradeLegConflict,
    InvalidSizingInput,
    MissingMarginRow,
    UnknownGrade,
)
from algomirror.domain.money import format_inr

Action = Literal["BUY", "SELL"]
LegKind = Literal["CE", "PE", "FUT"]
GradeSource = Literal["available", "cash"]
TradeType = Literal["single_sell", "pair_sell", "futures"]
AllocationType = Literal["equal", "custom", "proportional"]
# How a leg's lots were found: a margin rate, the buying premium, an open SELL it hedges, or fixed lots.
Basis = Literal["pair_sell", "single_sell", "futures", "premium", "open_hedge", "fixed"]

ALLOCATION_TYPES: tuple[AllocationType, ...] = ("equal", "custom", "proportional")
GRADE_SOURCES: tuple[GradeSource, ...] = ("available", "cash")
LEGACY_PROFILE_GRADES: Mapping[str, str] = {"aggressive": "A", "balanced": "B", "conservative": "C"}
FIXED_LOTS = "fixed_lots"
GRADE_PREFIX = "grade_"

_ZERO = Decimal(0)
_HUNDRED = Decimal(100)


def _exact() -> Context:
    # Rupee amounts need ~15 significant digits; 60 leaves room for products of them. Any rounding at all
    # raises Inexact instead of silently moving a paisa.
    ctx = Context(prec=60)
    ctx.traps[Inexact] = True
    return ctx


def _finite(value: Decimal, what: str) -> Decimal:
    if not isinstance(value, Decimal) or not value.is_finite():
        raise InvalidSizingInput(f"{what} must be a finite Decimal, got {value!r}")
    return value


def _whole_lots(amount: Decimal, per_lot: Decimal) -> int:
    """⌊amount / per_lot⌋ for per_lot > 0, and 0 for amount ≤ 0 (Decimal ``//`` truncates toward zero)."""
    if amount <= 0:
        return 0
    return int(amount // per_lot)


def _inr(value: Decimal) -> str:
    # Messages round to the paisa: outside the exact context, whose Inexact trap would refuse that.
    with localcontext(Context(prec=60)):
        return format_inr(value, places=0 if value == value.to_integral_value() else 2)


# --- inputs -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SizingLeg:
    """One leg to size, resolved for this Execute (the same for every account).

    ``lot_size`` and ``expiry_day`` belong to the leg's contract (during a lot-size transition two legs of
    one instrument can differ). ``lots`` is the leg's own lots (fixed allocation, standalone BUY under a
    seller grade). ``hedges_open_lots``: lots of a same-type SELL already open in this account from earlier
    in the run that this BUY hedges (a late hedge), else None. ``premium_per_lot`` overrides the table's
    buying premium (LTP × lot size of the chosen strike) when known.
    """

    index: int
    instrument: str
    action: Action
    kind: LegKind
    lot_size: int
    lots: int = 1
    expiry_day: bool = False
    hedges_open_lots: int | None = None
    premium_per_lot: Decimal | None = None

    def __post_init__(self) -> None:
        if self.action not in ("BUY", "SELL"):
            raise InvalidSizingInput(f"leg {self.index}: action must be BUY or SELL, got {self.action!r}")
        if self.kind not in ("CE", "PE", "FUT"):
            raise InvalidSizingInput(f"leg {self.index}: kind must be CE, PE or FUT, got {self.kind!r}")
        if not self.instrument:
            raise InvalidSizingInput(f"leg {self.index}: instrument is required")
        if self.lot_size < 1:
            raise InvalidSizingInput(f"leg {self.index}: lot size must be ≥ 1, got {self.lot_size}")
        if self.lots < 1:
            raise InvalidSizingInput(f"leg {self.index}: lots must be ≥ 1, got {self.lots}")
        if self.hedges_open_lots is not None and self.hedges_open_lots < 1:
            raise InvalidSizingInput(f"leg {self.index}: hedged open lots must be ≥ 1")
        if self.hedges_open_lots is not None and (self.action != "BUY" or self.kind == "FUT"):
            raise InvalidSizingInput(f"leg {self.index}: only a BUY option can hedge an open SELL")
        if self.premium_per_lot is not None and _finite(self.premium_per_lot, "premium per lot") <= 0:
            raise InvalidSizingInput(f"leg {self.index}: premium per lot must be > 0")

    @property
    def is_option(self) -> bool:
        """CE or PE (not a future)."""
        return self.kind != "FUT"


@dataclass(frozen=True, slots=True)
class MarginRates:
    """Rupees per lot for one instrument (PRODUCT §9.1): sizing knobs, not exchange figures.

    Field names match :class:`algomirror.db.defaults.MarginDefaults`, so ``MarginRates(**asdict(d))``
    converts a default row.
    """

    single_sell_expiry: Decimal
    single_sell_non_expiry: Decimal
    pair_sell_expiry: Decimal
    pair_sell_non_expiry: Decimal
    futures_expiry: Decimal
    futures_non_expiry: Decimal
    buying_premium_per_lot: Decimal

    def __post_init__(self) -> None:
        for item in fields(self):
            name = item.name
            value = getattr(self, name)
            if _finite(value, name) <= 0:
                raise InvalidSizingInput(f"margin {name} must be > 0, got {value}")

    def rate(self, trade: TradeType, expiry_day: bool) -> Decimal:
        """M for a trade type, from the expiry-day or the other-day column."""
        match trade:
            case "single_sell":
                return self.single_sell_expiry if expiry_day else self.single_sell_non_expiry
            case "pair_sell":
                return self.pair_sell_expiry if expiry_day else self.pair_sell_non_expiry
            case "futures":
                return self.futures_expiry if expiry_day else self.futures_non_expiry


@dataclass(frozen=True, slots=True)
class Grade:
    """A trade-quality grade (PRODUCT §9.2): share of the margin base to deploy and which base."""

    name: str
    percentage: Decimal
    source: GradeSource = "available"

    def __post_init__(self) -> None:
        if not _ZERO <= _finite(self.percentage, "grade percentage") <= _HUNDRED:
            raise InvalidSizingInput(f"grade {self.name}: percentage must be 0–100, got {self.percentage}")
        if self.source not in GRADE_SOURCES:
            raise InvalidSizingInput(f"grade {self.name}: source must be available or cash")

    @property
    def is_cash(self) -> bool:
        """A buyer grade: sized from the cash base, BUY options only."""
        return self.source == "cash"


@dataclass(frozen=True, slots=True)
class AccountFunds:
    """The account's funds as coerced from the gateway (None = unknown, never 0).

    ``available_cash`` is ``availablecash``, already net of used margin; ``collateral_included`` is the
    per-account setting "the broker includes collateral in availablecash" (default on).
    """

    available_cash: Decimal | None
    collateral: Decimal | None
    collateral_included: bool = True


def _funds_part(value: Decimal | None, what: str) -> Decimal:
    if value is None:
        raise FundsUnavailable(f"{what} unknown: cannot size from funds")
    if not isinstance(value, Decimal) or not value.is_finite():
        raise FundsUnavailable(f"{what} is not a number: {value!r}")
    return value


def _collateral(funds: AccountFunds) -> Decimal:
    value = _funds_part(funds.collateral, "collateral")
    if value < 0:
        raise FundsUnavailable(f"collateral is negative ({_inr(value)})")
    return value


def seller_base(funds: AccountFunds) -> Decimal:
    """S = availablecash if collateral is included in it, else availablecash + collateral; never below 0.

    Used margin is never subtracted again. Raises :class:`FundsUnavailable` when a needed figure is
    unknown (collateral is not needed when it is included).
    """
    cash = _funds_part(funds.available_cash, "available cash")
    with localcontext(_exact()):
        base = cash if funds.collateral_included else cash + _collateral(funds)
    return max(base, _ZERO)


def buyer_base(funds: AccountFunds) -> Decimal:
    """C = availablecash − collateral if collateral is included, else availablecash; never below 0.

    Never above :func:`seller_base`. Raises :class:`FundsUnavailable` when a needed figure is unknown.
    """
    cash = _funds_part(funds.available_cash, "available cash")
    with localcontext(_exact()):
        base = cash - _collateral(funds) if funds.collateral_included else cash
    return max(base, _ZERO)


def margin_base(funds: AccountFunds, source: GradeSource) -> Decimal:
    """The grade's base: :func:`seller_base` for ``available``, :func:`buyer_base` for ``cash``."""
    if source == "available":
        return seller_base(funds)
    if source == "cash":
        return buyer_base(funds)
    raise InvalidSizingInput(f"grade source must be available or cash, got {source!r}")


# --- risk profile → grade -----------------------------------------------------------------------------------


def profile_grade_name(risk_profile: str) -> str | None:
    """The grade a risk profile names: None for ``fixed_lots``; ``grade_X`` → X; legacy
    aggressive/balanced/conservative → A/B/C. Anything else raises :class:`UnknownGrade`."""
    if risk_profile == FIXED_LOTS:
        return None
    if risk_profile in LEGACY_PROFILE_GRADES:
        return LEGACY_PROFILE_GRADES[risk_profile]
    if risk_profile.startswith(GRADE_PREFIX) and len(risk_profile) > len(GRADE_PREFIX):
        return risk_profile[len(GRADE_PREFIX) :]
    raise UnknownGrade(f"unknown risk profile {risk_profile!r}")


def resolve_grade(risk_profile: str, grades: Mapping[str, Grade]) -> Grade | None:
    """The user's grade for a risk profile (None = fixed lots). An unknown grade refuses the Execute."""
    name = profile_grade_name(risk_profile)
    if name is None:
        return None
    try:
        return grades[name]
    except KeyError:
        raise UnknownGrade(f"grade {name!r} does not exist: the Execute is refused") from None


# --- results ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LegSize:
    """One leg's size on one account.

    ``margin_per_lot`` is the M or P its lots were found with (None for fixed lots and open hedges).
    ``charged`` is what this leg took from the budget: a group (pair, vertical) is charged once, on its
    first leg in leg order. ``budget_left`` is the budget after this leg's allocation, ``allocation`` the
    position of that allocation in sizing order (legs of a group share it); both None for fixed lots.
    ``reason`` says why the leg got 0 lots or fewer than its rule asked for.
    """

    index: int
    lots: int
    quantity: int
    basis: Basis
    margin_per_lot: Decimal | None = None
    charged: Decimal = _ZERO
    budget_left: Decimal | None = None
    allocation: int | None = None
    capped: bool = False
    reason: str | None = None

    @property
    def skipped(self) -> bool:
        """0 lots: the account is skipped for this leg."""
        return self.lots == 0


@dataclass(frozen=True, slots=True)
class GradeSizing:
    """Grade sizing of one account: the budget D = base × p, each leg's size in leg order, what is left."""

    base: Decimal
    budget: Decimal
    legs: tuple[LegSize, ...]
    budget_left: Decimal

    @property
    def charged(self) -> Decimal:
        """Σ of the charges: always ``budget − budget_left``."""
        return sum((leg.charged for leg in self.legs), _ZERO)

    def leg(self, index: int) -> LegSize:
        """The size of the leg with this index. Raises KeyError."""
        for size in self.legs:
            if size.index == index:
                return size
        raise KeyError(index)


# --- grade sizing -------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Budget:
    left: Decimal
    cap: int | None
    sizes: dict[int, LegSize] = field(default_factory=dict)
    count: int = 0

    def _limit(self, lots: int) -> tuple[int, bool]:
        if self.cap is not None and lots > self.cap:
            return self.cap, True
        return lots, False

    def charge(
        self, legs: Sequence[SizingLeg], basis: Basis, per_lot: Decimal, *, at_most: int | None = None
    ) -> None:
        """Give ``legs`` ⌊left / per_lot⌋ lots each (no more than ``at_most``), charged once."""
        before = self.left
        fit = _whole_lots(before, per_lot)
        lots, capped = self._limit(fit if at_most is None else min(at_most, fit))
        cost = per_lot * lots
        self.left = before - cost
        reason: str | None = None
        if lots == 0:
            reason = f"insufficient margin: {_inr(per_lot)} per lot, {_inr(before)} left"
        elif at_most is not None and fit < at_most and not capped:
            reason = f"insufficient margin for {at_most} lots: {_inr(per_lot)} per lot, {_inr(before)} left"
        elif capped:
            reason = f"capped at {lots} lots (max lots per leg)"
        for position, leg in enumerate(legs):
            self.sizes[leg.index] = LegSize(
                index=leg.index,
                lots=lots,
                quantity=lots * leg.lot_size,
                basis=basis,
                margin_per_lot=per_lot,
                charged=cost if position == 0 else _ZERO,
                budget_left=self.left,
                allocation=self.count,
                capped=capped,
                reason=reason,
            )
        self.count += 1

    def grant(self, leg: SizingLeg, lots: int) -> None:
        """Give ``leg`` ``lots`` without a charge (a hedge of a SELL sized earlier in the run)."""
        lots, capped = self._limit(lots)
        self.sizes[leg.index] = LegSize(
            index=leg.index,
            lots=lots,
            quantity=lots * leg.lot_size,
            basis="open_hedge",
            budget_left=self.left,
            allocation=self.count,
            capped=capped,
            reason=f"capped at {lots} lots (max lots per leg)" if capped else None,
        )
        self.count += 1


def _ordered(legs: Sequence[SizingLeg]) -> list[SizingLeg]:
    ordered = sorted(legs, key=lambda leg: leg.index)
    for first, second in pairwise(ordered):
        if first.index == second.index:
            raise InvalidSizingInput(f"two legs share index {first.index}")
    return ordered


def _check_cap(cap: int | None) -> None:
    if cap is not None and cap < 1:
        raise InvalidSizingInput(f"max lots per leg must be ≥ 1, got {cap}")


def _group_rate(rates: MarginRates, trade: TradeType, legs: Sequence[SizingLeg]) -> Decimal:
    # Legs of one group normally share an expiry; if they do not (a calendar), the dearer column applies.
    return max(rates.rate(trade, leg.expiry_day) for leg in legs)


def _premium(leg: SizingLeg, rates: MarginRates) -> Decimal:
    return rates.buying_premium_per_lot if leg.premium_per_lot is None else leg.premium_per_lot


def size_by_grade(
    legs: Sequence[SizingLeg],
    grade: Grade,
    base: Decimal,
    margins: Mapping[str, MarginRates],
    *,
    max_lots_per_leg: int | None = None,
) -> GradeSizing:
    """Size ``legs`` on one account by ``grade`` from its margin ``base`` (PRODUCT §5.7).

    ``base`` is :func:`margin_base` for the grade's source; ``margins`` is the user's table by instrument;
    ``max_lots_per_leg`` (the account's cap, optional) limits every leg and its charge.

    Guarantees: the budget never goes negative and ends at D − Σ charges; lots ≥ 0; quantity = lots × lot
    size; the result depends only on the arguments; a larger base never charges less in total (a greedy
    floor either keeps a group's lots, leaving more for the rest, or adds a lot worth more than all that
    the rest could take). Total *lots* can fall with a larger base (see the module docstring).

    Raises :class:`GradeLegConflict` for SELL or futures legs under a cash grade, :class:`MissingMarginRow`
    when an instrument has no margin row (both refuse the Execute), :class:`InvalidSizingInput` for a
    negative base, duplicate leg indexes or a cap < 1.
    """
    ordered = _ordered(legs)
    _check_cap(max_lots_per_leg)
    if _finite(base, "margin base") < 0:
        raise InvalidSizingInput(f"margin base must be ≥ 0, got {base}")
    if grade.is_cash:
        wrong = [leg.index for leg in ordered if leg.action == "SELL" or not leg.is_option]
        if wrong:
            raise GradeLegConflict(
                f"grade {grade.name} is a cash (buyer) grade and cannot size SELL or futures legs"
                f" (legs {', '.join(map(str, wrong))})"
            )
    missing = sorted({leg.instrument for leg in ordered if leg.instrument not in margins})
    if missing:
        raise MissingMarginRow(f"no margin per lot for {', '.join(missing)}: set it in the margin table")

    with localcontext(_exact()):
        budget = base * grade.percentage / _HUNDRED
        state = _Budget(left=budget, cap=max_lots_per_leg)

        options: dict[str, list[SizingLeg]] = {}
        for leg in ordered:
            if leg.is_option:
                options.setdefault(leg.instrument, []).append(leg)
        sold_kinds = {
            name: {leg.kind for leg in group if leg.action == "SELL"} for name, group in options.items()
        }

        # Step 1: pairs and verticals, per instrument in order of its first option leg.
        for name, group in options.items():
            rates = margins[name]
            if {"CE", "PE"} <= sold_kinds[name]:
                state.charge(group, "pair_sell", _group_rate(rates, "pair_sell", group))
                continue
            # One type sold. With a BUY of that type it is a vertical; a BUY of the other type (risk
            # reversal) is sized with it too: alone it would be floored from what the SELL left, which is
            # always under one lot. Lone SELLs are left to step 2, in leg order.
            if sold_kinds[name] and any(leg.action == "BUY" for leg in group):
                state.charge(group, "single_sell", _group_rate(rates, "single_sell", group))

        # Step 2: the remaining legs in leg order.
        for leg in ordered:
            if leg.index in state.sizes:
                continue
            rates = margins[leg.instrument]
            if not leg.is_option:
                state.charge([leg], "futures", rates.rate("futures", leg.expiry_day))
            elif leg.action == "SELL":
                # A SELL of the other type would have made a pair in step 1, so this is one side sold.
                state.charge([leg], "single_sell", rates.rate("single_sell", leg.expiry_day))
            elif leg.hedges_open_lots is not None:
                state.grant(leg, leg.hedges_open_lots)
            elif grade.is_cash:
                state.charge([leg], "premium", _premium(leg, rates))
            else:
                # Seller grade, no SELL option on the instrument (step 1 took every other BUY option).
                state.charge([leg], "premium", _premium(leg, rates), at_most=leg.lots)

        sizes = tuple(state.sizes[leg.index] for leg in ordered)
        return GradeSizing(base=base, budget=budget, legs=sizes, budget_left=state.left)


def size_account(
    legs: Sequence[SizingLeg],
    grade: Grade,
    funds: AccountFunds,
    margins: Mapping[str, MarginRates],
    *,
    max_lots_per_leg: int | None = None,
) -> GradeSizing:
    """:func:`size_by_grade` from the account's funds, on the base the grade's source names."""
    return size_by_grade(
        legs, grade, margin_base(funds, grade.source), margins, max_lots_per_leg=max_lots_per_leg
    )


# --- fixed lots ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccountShare:
    """What fixed-lot allocation needs to know of an account: its multiplier (``custom``), its seller base
    (``proportional``; None = funds unknown) and its cap of lots per leg (None = no cap)."""

    account_id: int
    multiplier: Decimal = Decimal(1)
    seller_base: Decimal | None = None
    max_lots_per_leg: int | None = None

    def __post_init__(self) -> None:
        if _finite(self.multiplier, "multiplier") <= 0:
            raise InvalidSizingInput(f"account {self.account_id}: multiplier must be > 0")
        if self.seller_base is not None and _finite(self.seller_base, "seller base") < 0:
            raise InvalidSizingInput(f"account {self.account_id}: seller base must be ≥ 0")
        _check_cap(self.max_lots_per_leg)


@dataclass(frozen=True, slots=True)
class AccountLots:
    """Lots of one leg for one account under fixed-lot allocation, before or after its cap."""

    account_id: int
    lots: int
    capped: bool = False
    reason: str | None = None


def _proportional(lots: int, accounts: Sequence[AccountShare]) -> dict[int, tuple[int, str | None]]:
    known = [a for a in accounts if a.seller_base is not None]
    result: dict[int, tuple[int, str | None]] = {
        a.account_id: (0, "funds unknown: the proportional split needs the seller base")
        for a in accounts
        if a.seller_base is None
    }
    total = sum((a.seller_base or _ZERO for a in known), _ZERO)
    if total == 0:
        result.update({a.account_id: (0, "no seller base to split by") for a in known})
        return result
    shares: list[tuple[Decimal, Decimal, int, AccountShare]] = []
    floors: dict[int, int] = {}
    for position, account in enumerate(known):
        weight = account.seller_base or _ZERO
        whole, remainder = divmod(lots * weight, total)  # both operands ≥ 0: divmod is floor here
        floors[account.account_id] = int(whole)
        shares.append((remainder, weight, position, account))
    leftover = lots - sum(floors.values())
    # Largest remainder first; tie: larger base; then the order the accounts were given.
    for _, _, _, account in sorted(shares, key=lambda s: (-s[0], -s[1], s[2]))[:leftover]:
        floors[account.account_id] += 1
    for account in known:
        got = floors[account.account_id]
        result[account.account_id] = (got, None if got else "proportional share is below one lot")
    return result


def allocate_lots(
    lots: int, allocation: AllocationType, accounts: Sequence[AccountShare]
) -> list[AccountLots]:
    """Split a leg of ``lots`` over ``accounts`` (PRODUCT §4.1, §5.6), in the order given.

    ``equal``: every account ``lots``. ``custom``: ⌊lots × m_a⌋. ``proportional``: ``lots`` is the total,
    split ⌊lots × S_a / ΣS⌋ with the leftover one at a time to the largest remainders (tie: larger S_a,
    then the given order); an account with unknown funds gets 0 and the rest share the total. Each result
    is then capped at the account's max lots per leg (capped lots are not handed to others).
    """
    if lots < 1:
        raise InvalidSizingInput(f"lots must be ≥ 1, got {lots}")
    if allocation not in ALLOCATION_TYPES:
        raise InvalidSizingInput(f"allocation type must be equal, custom or proportional, got {allocation!r}")
    ids = [a.account_id for a in accounts]
    if len(set(ids)) != len(ids):
        raise InvalidSizingInput("an account is listed twice")

    raw: dict[int, tuple[int, str | None]]
    with localcontext(_exact()):
        if allocation == "equal":
            raw = {a.account_id: (lots, None) for a in accounts}
        elif allocation == "custom":
            raw = {}
            for a in accounts:
                got = int((lots * a.multiplier) // 1)
                raw[a.account_id] = (got, None if got else f"{lots} lots × {a.multiplier} is below one lot")
        else:
            raw = _proportional(lots, accounts)

    result: list[AccountLots] = []
    for a in accounts:
        got, reason = raw[a.account_id]
        if a.max_lots_per_leg is not None and got > a.max_lots_per_leg:
            limit = a.max_lots_per_leg
            result.append(
                AccountLots(a.account_id, limit, True, f"capped at {limit} lots (max lots per leg)")
            )
        else:
            result.append(AccountLots(a.account_id, got, False, reason))
    return result


def size_fixed(
    legs: Sequence[SizingLeg], allocation: AllocationType, accounts: Sequence[AccountShare]
) -> dict[int, tuple[LegSize, ...]]:
    """Fixed-lot sizing of every leg on every account: ``{account_id: leg sizes in leg order}``.

    Each leg's own ``lots`` is split by :func:`allocate_lots`; quantity = lots × the leg's lot size. Legs
    with equal lots get equal splits, so a spread stays balanced on every account.
    """
    ordered = _ordered(legs)
    per_account: dict[int, list[LegSize]] = {a.account_id: [] for a in accounts}
    for leg in ordered:
        for share in allocate_lots(leg.lots, allocation, accounts):
            per_account[share.account_id].append(
                LegSize(
                    index=leg.index,
                    lots=share.lots,
                    quantity=share.lots * leg.lot_size,
                    basis="fixed",
                    capped=share.capped,
                    reason=share.reason,
                )
            )
    return {account_id: tuple(sizes) for account_id, sizes in per_account.items()}


# --- the margin calculator (PRODUCT §9.4) -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MarginCalculation:
    """One calculator answer: deployable = base × p; lots = ⌊deployable / per_lot⌋; used = lots × per_lot;
    remaining = base − used (₹; ``percentage`` in 0–100)."""

    base: Decimal
    percentage: Decimal
    deployable: Decimal
    per_lot: Decimal
    lots: int
    used: Decimal
    remaining: Decimal


def calculate_lots(base: Decimal, percentage: Decimal, per_lot: Decimal) -> MarginCalculation:
    """Whole lots a ``base`` (₹) buys at ``percentage`` (0–100) of it and ``per_lot`` (₹ of margin, or of
    premium for a buyer, per lot).

    Exact Decimal arithmetic; lots never negative and used never above the base. Raises
    :class:`InvalidSizingInput` for a negative or non-finite base, a percentage outside 0–100 or a
    per-lot amount ≤ 0.
    """
    if _finite(base, "base") < 0:
        raise InvalidSizingInput(f"base must be ≥ 0, got {base}")
    if not _ZERO <= _finite(percentage, "percentage") <= _HUNDRED:
        raise InvalidSizingInput(f"percentage must be 0–100, got {percentage}")
    if _finite(per_lot, "amount per lot") <= 0:
        raise InvalidSizingInput(f"amount per lot must be > 0, got {per_lot}")
    with localcontext(_exact()):
        deployable = base * percentage / _HUNDRED
        lots = _whole_lots(deployable, per_lot)
        used = per_lot * lots
        remaining = base - used
    return MarginCalculation(base, percentage, deployable, per_lot, lots, used, remaining)
