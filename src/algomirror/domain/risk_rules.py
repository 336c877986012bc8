"""One risk evaluation of one strategy run (PRODUCT §6.1-§6.4, §6.6): pure, no I/O.

The risk engine gathers the run's state (settings, open executions, usable marks, latches) and persists
what :func:`evaluate_run` returns: the updated trailing state and leg trailing levels, and the breaches it
must act on (claim + exit, §6.7) or only alert about. Money is Decimal rupees quantized half-up to the
paisa (0.01); prices are Decimal rupees per unit.

Order (§6.2): max loss, max profit, trailing stop, then leg rules. A rule that exits claims the executions
it exits; later rules skip claimed executions and ``exiting`` ones, so each execution appears in at most
one exiting breach (an ``alert_only`` breach claims nothing). An unknown P&L (an open execution without a
usable mark) fires no run rule, and by default no leg rule either; the risk engine evaluates leg rules on
their own usable mark anyway (``leg_rules_when_unknown``). Auto-exit off turns max loss / max profit into
``alert_only`` (PRODUCT §6.3); the trailing stop and leg rules always exit.

:func:`evaluate_run` computes the P&L from open executions, marks and realised amounts;
:func:`evaluate_rules` takes a P&L computed by the caller (the risk engine's exact
:func:`algomirror.domain.pnl.run_pnl`), so both use one implementation of the rules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

from algomirror.domain.money import PAISA
from algomirror.domain.pnl import RiskScope, Side
from algomirror.domain.risk import (
    LegLevels,
    TrailingState,
    advance_leg_trailing,
    advance_trailing,
    leg_hit,
    leg_levels,
    max_loss_fires,
    max_profit_fires,
    trailing_fires,
)

RunRule = Literal["max_loss", "max_profit", "trailing_stop"]
LegRule = Literal["stop_loss", "take_profit", "leg_trailing_stop"]
Rule = Literal["max_loss", "max_profit", "trailing_stop", "stop_loss", "take_profit", "leg_trailing_stop"]
Scope = Literal["run", "account", "execution"]
Latch = tuple[str, int | None]
"""A fired run rule: (rule, account_id) — account_id None for ``aggregate`` scope."""

_ZERO = Decimal(0)


def _q(value: Decimal) -> Decimal:
    return value.quantize(PAISA, rounding=ROUND_HALF_UP) + _ZERO


@dataclass(frozen=True)
class LegRiskSettings:
    """Leg SL/target/trailing settings (PRODUCT §6.6); a rule is off when its type or value is None."""

    sl_type: str | None = None
    sl_value: Decimal | None = None
    tp_type: str | None = None
    tp_value: Decimal | None = None
    trailing_kind: str | None = None  # "percentage" | "points"
    trailing_value: Decimal | None = None


@dataclass(frozen=True)
class OpenExecution:
    """One open execution: entry average (rupees/unit), open units, status, current leg levels.

    ``status``: ``pending`` and ``active`` may be claimed by a run rule (a pending one's working entry is
    cancelled by its exit), ``exiting`` is owned by an exit already; leg rules run on ``active`` only.
    ``stop_loss``/``target`` are the persisted leg levels (None = not set); ``trailing_best`` the best LTP
    since entry (None before the first tick). ``leg`` None = the leg has no rules.
    """

    id: int
    account_id: int
    action: Side
    entry_average: Decimal
    open_quantity: int
    status: Literal["pending", "active", "exiting"]
    stop_loss: Decimal | None = None
    target: Decimal | None = None
    trailing_best: Decimal | None = None
    leg: LegRiskSettings | None = None


@dataclass(frozen=True)
class RunRiskSettings:
    """Run-level rules: max loss/profit (positive rupees, None = off), auto-exit, scope, trailing armed.

    ``auto_exit`` applies to max loss and max profit; ``auto_exit_loss`` / ``auto_exit_profit`` override it
    per rule (None = ``auto_exit``)."""

    max_loss: Decimal | None = None
    max_profit: Decimal | None = None
    auto_exit: bool = True
    scope: RiskScope = "aggregate"
    trailing: TrailingState | None = None  # None = not armed (before entry completion) or off
    auto_exit_loss: bool | None = None
    auto_exit_profit: bool | None = None


@dataclass(frozen=True)
class Breach:
    """A rule that fired: the executions it claims, the value compared (rupees P&L or LTP) and threshold."""

    rule: Rule
    scope: Scope
    account_id: int | None
    execution_ids: tuple[int, ...]
    value: Decimal
    threshold: Decimal
    alert_only: bool = False


@dataclass(frozen=True)
class LegUpdate:
    """Leg trailing state to persist for one execution: best LTP and the stop-loss level."""

    trailing_best: Decimal
    stop_loss: Decimal


@dataclass(frozen=True)
class RunDecision:
    """Result of one evaluation. ``pnl`` None = unknown (then no run rule fired). ``leg_errors``: the
    executions whose leg settings cannot be evaluated (ValueError text); their leg rules were skipped."""

    pnl: Decimal | None
    account_pnl: dict[int, Decimal | None]
    trailing: TrailingState | None
    leg_updates: dict[int, LegUpdate] = field(default_factory=dict)
    breaches: tuple[Breach, ...] = ()
    latches: frozenset[Latch] = frozenset()
    leg_errors: dict[int, str] = field(default_factory=dict)


def execution_pnl(execution: OpenExecution, mark: Decimal) -> Decimal:
    """Unrealised rupees of the open units: sign × (mark − entry average) × open qty, sign +1 BUY."""
    sign = 1 if execution.action == "BUY" else -1
    return _q(sign * (mark - execution.entry_average) * execution.open_quantity)


def evaluate_run(
    settings: RunRiskSettings,
    executions: Sequence[OpenExecution],
    marks: Mapping[int, Decimal | None],
    *,
    realised: Mapping[int, Decimal] | None = None,
    latched: frozenset[Latch] = frozenset(),
    leg_rules_when_unknown: bool = False,
) -> RunDecision:
    """Evaluate one run's rules once (PRODUCT §6.2 order) and return what to persist and act on.

    ``marks`` maps execution id → usable LTP (rupees) or None; a missing or ≤ 0 mark is unusable.
    ``realised`` is the current run's realised rupees per account (exited units). ``latched`` are run rules
    that already fired ((rule, account_id|None)); they do not fire again. With auto-exit off max loss /
    max profit breaches are ``alert_only``. The trailing stop evaluates the run's aggregate P&L in either
    scope. Raises nothing for bad leg settings (see :attr:`RunDecision.leg_errors`).
    """
    realised = realised or {}
    account_ids = sorted({e.account_id for e in executions} | set(realised))
    acc: dict[int, Decimal | None] = {a: _q(realised.get(a, _ZERO)) for a in account_ids}
    for e in executions:
        mark = marks.get(e.id)
        if mark is None or mark <= 0:
            acc[e.account_id] = None
            continue
        current = acc[e.account_id]
        if current is not None:
            acc[e.account_id] = current + execution_pnl(e, mark)
    pnl = (
        None
        if any(v is None for v in acc.values())
        else _q(sum((v for v in acc.values() if v is not None), _ZERO))
    )
    return evaluate_rules(
        settings,
        executions,
        marks,
        pnl=pnl,
        account_pnl=acc,
        latched=latched,
        leg_rules_when_unknown=leg_rules_when_unknown,
    )


def evaluate_rules(
    settings: RunRiskSettings,
    executions: Sequence[OpenExecution],
    marks: Mapping[int, Decimal | None],
    *,
    pnl: Decimal | None,
    account_pnl: Mapping[int, Decimal | None],
    latched: frozenset[Latch] = frozenset(),
    leg_rules_when_unknown: bool = False,
) -> RunDecision:
    """The rules of :func:`evaluate_run` on a P&L the caller computed: ``pnl`` the run's rupees (None =
    unknown: no run rule fires, leg rules only with ``leg_rules_when_unknown``), ``account_pnl`` per
    account (the ``per_account`` views; accounts with nothing filled may be absent)."""
    accounts = dict(account_pnl)
    if pnl is None and not leg_rules_when_unknown:
        return RunDecision(pnl=None, account_pnl=accounts, trailing=settings.trailing, latches=latched)

    claimed: set[int] = {e.id for e in executions if e.status == "exiting"}
    breaches: list[Breach] = []
    latches = set(latched)

    def claim(
        rule: Rule, scope: Scope, account: int | None, value: Decimal, threshold: Decimal, alert_only: bool
    ) -> None:
        ids = tuple(
            e.id for e in executions if e.id not in claimed and (account is None or e.account_id == account)
        )
        if scope != "execution":
            latches.add((rule, account))
        if not ids:
            return
        if not alert_only:  # an alert exits nothing: a later rule may still exit these executions
            claimed.update(ids)
        breaches.append(Breach(rule, scope, account, ids, value, threshold, alert_only))

    trailing = settings.trailing
    if pnl is not None:
        loss_alert = not (settings.auto_exit if settings.auto_exit_loss is None else settings.auto_exit_loss)
        profit_alert = not (
            settings.auto_exit if settings.auto_exit_profit is None else settings.auto_exit_profit
        )
        groups: list[tuple[int | None, Decimal]] = (
            [(None, pnl)]
            if settings.scope == "aggregate"
            else sorted((a, v) for a, v in accounts.items() if v is not None)
        )
        for account, value in groups:
            scope: Scope = "run" if account is None else "account"
            if (
                settings.max_loss is not None
                and ("max_loss", account) not in latches
                and max_loss_fires(value, settings.max_loss)
            ):
                claim("max_loss", scope, account, value, -abs(settings.max_loss), loss_alert)
            if (
                settings.max_profit is not None
                and ("max_profit", account) not in latches
                and max_profit_fires(value, settings.max_profit)
            ):
                claim("max_profit", scope, account, value, abs(settings.max_profit), profit_alert)

        if trailing is not None and ("trailing_stop", None) not in latches:
            trailing = advance_trailing(trailing, pnl)
            if trailing_fires(trailing, pnl):
                claim("trailing_stop", "run", None, pnl, trailing.level, False)

    leg_updates: dict[int, LegUpdate] = {}
    leg_errors: dict[int, str] = {}
    for e in executions:
        mark = marks.get(e.id)
        if e.leg is None or mark is None or mark <= 0:
            continue
        try:
            breach, update = _leg_rules(e, e.leg, mark, claimed=e.id in claimed)
        except ValueError as exc:  # this leg's settings only: the other rules still run
            leg_errors[e.id] = str(exc)
            continue
        if update is not None:
            leg_updates[e.id] = update
        if breach is not None:
            claimed.add(e.id)
            breaches.append(breach)

    return RunDecision(
        pnl=pnl,
        account_pnl=accounts,
        trailing=trailing,
        leg_updates=leg_updates,
        breaches=tuple(breaches),
        latches=frozenset(latches),
        leg_errors=leg_errors,
    )


def _leg_rules(
    e: OpenExecution, leg: LegRiskSettings, mark: Decimal, *, claimed: bool
) -> tuple[Breach | None, LegUpdate | None]:
    """One execution's leg rules at ``mark``: its breach (None unless it hits and is not ``claimed``) and
    its trailing update (None when nothing moved). Raises ValueError for settings that cannot apply."""
    # the configured levels, used when none is persisted yet and to tell a trailed stop from the set one
    static = leg_levels(
        e.action,
        e.entry_average,
        sl_type=leg.sl_type,
        sl_value=leg.sl_value,
        tp_type=leg.tp_type,
        tp_value=leg.tp_value,
    )
    stop = e.stop_loss if e.stop_loss is not None else static.stop_loss
    target = e.target if e.target is not None else static.target
    update: LegUpdate | None = None
    if leg.trailing_kind is not None and leg.trailing_value is not None and e.status == "active":
        best, new_stop = advance_leg_trailing(
            e.action,
            best=e.trailing_best,
            ltp=mark,
            stop_loss=stop,
            entry=e.entry_average,
            kind=leg.trailing_kind,
            value=leg.trailing_value,
        )
        if best != e.trailing_best or new_stop != e.stop_loss:
            update = LegUpdate(trailing_best=best, stop_loss=new_stop)
        stop = new_stop
    if claimed or e.status != "active":
        return None, update
    hit = leg_hit(e.action, mark, LegLevels(stop_loss=stop, target=target))
    if hit is None:
        return None, update
    rule: Rule = hit
    if hit == "stop_loss" and stop != static.stop_loss:
        rule = "leg_trailing_stop"
    threshold = stop if hit == "stop_loss" else target
    assert threshold is not None  # leg_hit only reports a level that is set
    return Breach(rule, "execution", e.account_id, (e.id,), mark, threshold), update
