"""The chaos run's seeded plan (issue 13, Deliver 4): the same seed gives the same endings, faults and kill
moments; another seed gives another plan; every draw stays within what the driver can carry out."""

from __future__ import annotations

import pytest

from algomirror.chaos.run import ChaosConfig
from algomirror.chaos.schedule import (
    ENDINGS,
    FAULT_KINDS,
    KILL_WINDOW,
    MAX_STRATEGIES,
    build_plan,
    legs_of,
    short_legs,
)


def plan(seed: int, **shape: float) -> object:
    values = {"rounds": 12, "accounts": 4, "strategies": 2, "kill_rate": 0.3, **shape}
    return build_plan(seed, **values)  # type: ignore[arg-type]


def test_same_seed_same_plan() -> None:
    assert plan(7) == plan(7)
    assert plan(123456789, rounds=40, accounts=10, strategies=4) == plan(
        123456789, rounds=40, accounts=10, strategies=4
    )


def test_another_seed_another_plan() -> None:
    assert plan(7) != plan(8)


def test_kill_moments_do_not_move_the_other_choices() -> None:
    """The kill rate decides only whether a phase's drawn moment is used: endings and faults are the
    same at every rate, so a replay at another rate still meets the same faults."""
    quiet, loud = (
        build_plan(5, rounds=10, accounts=3, strategies=2, kill_rate=0.0),
        build_plan(5, rounds=10, accounts=3, strategies=2, kill_rate=1.0),
    )
    assert [r.runs for r in quiet.rounds] == [r.runs for r in loud.rounds]
    assert [(r.entry.faults, r.exit.faults) for r in quiet.rounds] == [
        (r.entry.faults, r.exit.faults) for r in loud.rounds
    ]
    assert quiet.kills() == 0
    assert loud.kills() == 20


def test_draws_stay_in_range() -> None:
    built = build_plan(11, rounds=200, accounts=5, strategies=MAX_STRATEGIES, kill_rate=0.5)
    kinds = set()
    for r in built.rounds:
        assert [run.strategy for run in r.runs] == list(range(MAX_STRATEGIES))
        for run in r.runs:
            assert run.ending in ENDINGS
            assert run.breach_leg in short_legs(run.strategy)
            assert 0 <= run.kill_account < 5
        for phase in (r.entry, r.exit):
            assert phase.kill_after is None or 0 <= phase.kill_after <= KILL_WINDOW
            for fault in phase.faults:
                kinds.add(fault.kind)
                assert fault.account is None or 0 <= fault.account < 5
    # Over 400 phases every kind and every ending comes up.
    assert kinds == set(FAULT_KINDS)
    assert all(count > 0 for count in built.endings().values())


def test_strategies_never_share_a_strike() -> None:
    strikes = [strike for s in range(MAX_STRATEGIES) for _, strike in legs_of(s)]
    assert len(strikes) == len(set(strikes))
    # Condors list their BUY hedges first (the entry sends BUY legs first anyway).
    assert [a for a, _ in legs_of(1)] == ["BUY", "BUY", "SELL", "SELL"]


@pytest.mark.parametrize(
    "shape",
    [
        {"rounds": 0},
        {"accounts": 0},
        {"strategies": 0},
        {"strategies": MAX_STRATEGIES + 1},
        {"kill_rate": 1.5},
    ],
)
def test_shapes_out_of_range_are_refused(shape: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        plan(1, **shape)


def test_replay_command_names_the_whole_shape() -> None:
    config = ChaosConfig(seed=42, cycles=100, accounts=3, strategies=2, kill_rate=0.25, database="postgresql")
    assert config.rounds == 17  # 100 cycles in rounds of 3 × 2, rounded up
    assert config.command_line() == (
        "algomirror chaos --seed 42 --cycles 100 --accounts 3 --strategies 2 --kill-rate 0.25 "
        "--crash-rate 0.005 --database postgresql"
    )
