"""Tests for algomirror.domain.risk_rules.evaluate_run (PRODUCT §6.1-§6.4, §6.6)."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from algomirror.domain.risk import TrailingState
from algomirror.domain.risk_rules import (
    LegRiskSettings,
    OpenExecution,
    RunRiskSettings,
    evaluate_rules,
    evaluate_run,
)

D = Decimal


def ex(
    id: int,
    account: int = 1,
    action: str = "BUY",
    entry: str = "100",
    qty: int = 100,
    status: str = "active",
    leg: LegRiskSettings | None = None,
    stop_loss: str | None = None,
) -> OpenExecution:
    return OpenExecution(
        id=id,
        account_id=account,
        action=action,  # type: ignore[arg-type]
        entry_average=D(entry),
        open_quantity=qty,
        status=status,  # type: ignore[arg-type]
        stop_loss=None if stop_loss is None else D(stop_loss),
        leg=leg,
    )


@pytest.mark.parametrize(
    ("mark", "fires"),
    [("50.01", False), ("50", True), ("49", True)],  # P&L -4,999 / -5,000 / -5,100
)
def test_max_loss_boundary(mark: str, fires: bool) -> None:
    decision = evaluate_run(RunRiskSettings(max_loss=D(5000)), [ex(1)], {1: D(mark)})
    assert decision.pnl == (D(mark) - 100) * 100
    assert [b.rule for b in decision.breaches] == (["max_loss"] if fires else [])
    if fires:
        b = decision.breaches[0]
        assert (b.scope, b.account_id, b.execution_ids, b.threshold) == ("run", None, (1,), D(-5000))
        assert not b.alert_only
        assert ("max_loss", None) in decision.latches


def test_two_rules_one_breach_second_skipped() -> None:
    # max loss and the trailing stop both breached: max loss claims everything, trailing has nothing left
    s = RunRiskSettings(max_loss=D(1000), trailing=TrailingState.armed(D(-500)))
    decision = evaluate_run(s, [ex(1), ex(2, account=2)], {1: D(80), 2: D(90)})
    assert decision.pnl == D(-3000)
    assert len(decision.breaches) == 1
    assert decision.breaches[0].rule == "max_loss"
    assert decision.breaches[0].execution_ids == (1, 2)


def test_per_account_breaches_only_losing_account() -> None:
    s = RunRiskSettings(max_loss=D(1000), scope="per_account")
    decision = evaluate_run(s, [ex(1, account=1), ex(2, account=2)], {1: D(80), 2: D(130)})
    assert decision.account_pnl == {1: D(-2000), 2: D(3000)}
    assert decision.pnl == D(1000)
    (b,) = decision.breaches
    assert (b.rule, b.scope, b.account_id, b.execution_ids) == ("max_loss", "account", 1, (1,))
    assert decision.latches == frozenset({("max_loss", 1)})


@pytest.mark.parametrize("bad", [None, D(0)])
def test_unknown_mark_no_breach(bad: Decimal | None) -> None:
    leg = LegRiskSettings(sl_type="points", sl_value=D(5))
    s = RunRiskSettings(max_loss=D(100), trailing=TrailingState.armed(D(-10)))
    state = s.trailing
    decision = evaluate_run(s, [ex(1, leg=leg), ex(2)], {1: D(1), 2: bad})
    assert decision.pnl is None
    assert decision.account_pnl[1] is None
    assert decision.breaches == ()
    assert decision.trailing is state


def test_exiting_executions_excluded() -> None:
    s = RunRiskSettings(max_loss=D(1000))
    decision = evaluate_run(s, [ex(1, status="exiting"), ex(2)], {1: D(80), 2: D(80)})
    assert decision.pnl == D(-4000)  # exiting rows still count at their mark
    (b,) = decision.breaches
    assert b.execution_ids == (2,)


def test_leg_sl_on_sell_breaches_only_that_execution() -> None:
    leg = LegRiskSettings(sl_type="percentage", sl_value=D(20))  # SELL @100 → SL 120
    execs = [ex(1, action="SELL", leg=leg), ex(2, action="BUY", leg=leg)]
    below = evaluate_run(RunRiskSettings(), execs, {1: D("119.99"), 2: D(100)})
    assert below.breaches == ()
    decision = evaluate_run(RunRiskSettings(), execs, {1: D(120), 2: D(100)})
    (b,) = decision.breaches
    assert (b.rule, b.scope, b.account_id, b.execution_ids) == ("stop_loss", "execution", 1, (1,))
    assert (b.value, b.threshold) == (D(120), D(120))


def test_leg_trailing_raises_stop_and_fires_with_own_reason() -> None:
    leg = LegRiskSettings(trailing_kind="points", trailing_value=D(10))
    e = ex(1, leg=leg)
    up = evaluate_run(RunRiskSettings(), [e], {1: D(130)})
    assert up.breaches == ()
    assert up.leg_updates[1].trailing_best == D(130)
    assert up.leg_updates[1].stop_loss == D(120)
    moved = replace(e, stop_loss=D(120), trailing_best=D(130))
    down = evaluate_run(RunRiskSettings(), [moved], {1: D(120)})
    (b,) = down.breaches
    assert (b.rule, b.threshold) == ("leg_trailing_stop", D(120))
    assert 1 not in down.leg_updates  # nothing moved


def test_latched_rule_does_not_fire_again() -> None:
    s = RunRiskSettings(max_loss=D(1000))
    decision = evaluate_run(s, [ex(1)], {1: D(50)}, latched=frozenset({("max_loss", None)}))
    assert decision.breaches == ()


def test_alert_only_when_auto_exit_off() -> None:
    s = RunRiskSettings(max_profit=D(8000), auto_exit=False)
    (b,) = evaluate_run(s, [ex(1)], {1: D(180)}).breaches
    assert (b.rule, b.alert_only, b.threshold) == ("max_profit", True, D(8000))


def test_trailing_stop_example() -> None:
    # PRODUCT §6.4 example as P&L via one execution's mark: I = -1,820; best +2,300 → stop +480
    s = RunRiskSettings(trailing=TrailingState.armed(D(-1820)))
    state = s.trailing
    for pnl, fires in [(-350, False), (900, False), (2300, False), (1500, False), (450, True)]:
        decision = evaluate_run(
            RunRiskSettings(trailing=state),
            [ex(1, entry="0", qty=1)],
            {1: D(pnl) + 10000},
            realised={1: D(-10000)},
        )
        assert decision.pnl == D(pnl)
        assert bool(decision.breaches) is fires
        state = decision.trailing
    assert state is not None and state.level == D(480)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[RunRiskSettings, list[OpenExecution], dict[int, Decimal | None]]:
    n = draw(st.integers(1, 6))
    leg = LegRiskSettings(
        sl_type="points",
        sl_value=D(draw(st.integers(0, 30))),
        tp_type="points",
        tp_value=D(draw(st.integers(0, 30))),
    )
    execs = [
        ex(
            i,
            account=draw(st.integers(1, 3)),
            action=draw(st.sampled_from(["BUY", "SELL"])),
            status=draw(st.sampled_from(["active", "active", "exiting"])),
            leg=draw(st.sampled_from([None, leg])),
        )
        for i in range(n)
    ]
    marks: dict[int, Decimal | None] = {i: D(draw(st.integers(60, 140))) for i in range(n)}
    s = RunRiskSettings(
        max_loss=D(draw(st.integers(0, 5000))),
        max_profit=D(draw(st.integers(0, 5000))),
        scope=draw(st.sampled_from(["aggregate", "per_account"])),
        trailing=draw(st.sampled_from([None, TrailingState.armed(D(-1000))])),
    )
    return s, execs, marks


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_breach_execution_ids_disjoint(
    case: tuple[RunRiskSettings, list[OpenExecution], dict[int, Decimal | None]],
) -> None:
    s, execs, marks = case
    decision = evaluate_run(s, execs, marks)
    ids = [i for b in decision.breaches for i in b.execution_ids]
    assert len(ids) == len(set(ids))
    exiting = {e.id for e in execs if e.status == "exiting"}
    assert not exiting & set(ids)


# --- evaluate_rules: the risk engine's entry point (P&L computed by the caller) ----------------------------


def test_evaluate_rules_uses_the_callers_pnl_and_claims_pending_executions() -> None:
    s = RunRiskSettings(max_loss=D(1000))
    execs = [ex(1), ex(2, status="pending", qty=0), ex(3, status="exiting")]
    decision = evaluate_rules(s, execs, {1: D(100)}, pnl=D("-1000.00"), account_pnl={1: D("-1000.00")})
    (b,) = decision.breaches
    assert (b.rule, b.execution_ids, b.value) == ("max_loss", (1, 2), D("-1000.00"))
    quiet = evaluate_rules(s, execs, {1: D(100)}, pnl=D("-999.99"), account_pnl={1: D("-999.99")})
    assert quiet.breaches == ()


def test_alert_only_claims_nothing_so_the_trailing_stop_still_exits() -> None:
    s = RunRiskSettings(max_loss=D(1000), auto_exit_loss=False, trailing=TrailingState.armed(D(-500)))
    decision = evaluate_run(s, [ex(1), ex(2)], {1: D(90), 2: D(90)})  # −2,000
    assert [(b.rule, b.alert_only, b.execution_ids) for b in decision.breaches] == [
        ("max_loss", True, (1, 2)),
        ("trailing_stop", False, (1, 2)),
    ]


def test_per_rule_auto_exit_overrides() -> None:
    s = RunRiskSettings(max_loss=D(10), max_profit=D(10), auto_exit=False, auto_exit_profit=True)
    (loss,) = evaluate_run(s, [ex(1)], {1: D(99)}).breaches
    (profit,) = evaluate_run(s, [ex(1)], {1: D(101)}).breaches
    assert (loss.rule, loss.alert_only, profit.rule, profit.alert_only) == (
        "max_loss",
        True,
        "max_profit",
        False,
    )


def test_leg_rules_on_their_own_mark_while_the_run_pnl_is_unknown_when_asked() -> None:
    leg = LegRiskSettings(sl_type="points", sl_value=D(5))
    execs = [ex(1, leg=leg), ex(2)]
    assert evaluate_run(RunRiskSettings(max_loss=D(1)), execs, {1: D(95), 2: None}).breaches == ()
    decision = evaluate_run(
        RunRiskSettings(max_loss=D(1)), execs, {1: D(95), 2: None}, leg_rules_when_unknown=True
    )
    assert decision.pnl is None
    assert [(b.rule, b.execution_ids) for b in decision.breaches] == [("stop_loss", (1,))]


def test_a_leg_whose_settings_cannot_apply_is_skipped_and_reported() -> None:
    bad = LegRiskSettings(trailing_kind="points", trailing_value=D(-5))
    decision = evaluate_run(RunRiskSettings(max_loss=D(1000)), [ex(1, leg=bad), ex(2)], {1: D(80), 2: D(80)})
    assert [b.rule for b in decision.breaches] == ["max_loss"]
    assert set(decision.leg_errors) == {1} and "-5" in decision.leg_errors[1]
