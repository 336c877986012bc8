"""The seeded plan of a chaos run (issue 13, Deliver 4): every random choice the driver makes, drawn up
front from ``random.Random`` streams derived from the run's seed, one stream per purpose, never from
timing. The same seed and shape give the same plan: the same endings, breached legs, kill-switch
accounts, faults (kinds and parameters, in order) and external kill moments. What the engine does with
them takes the time it takes; only the choices are fixed.

A run is ``rounds`` rounds. In each round every strategy enters one run on every account (phase
``entry``), then every run gets the ending its plan names (phase ``exit``) and is waited on until flat.
Before each phase the driver arms that phase's faults; during it, an external ``kill -9`` of the engine
may be due ``kill_after`` wall seconds after the phase began.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

# How a run ends (PRODUCT §6): a risk rule breached by a price move, a person's exit, the scheduler's
# square-off, or a kill-switch trip of one of its accounts.
ENDINGS: tuple[str, ...] = ("risk", "manual", "square_off", "kill_switch")

# The fault kinds the driver arms through the exchange's control API (docs/reliability.md).
FAULT_KINDS: tuple[str, ...] = (
    "http_429",
    "http_5xx",
    "timeout_before_accept",
    "timeout_after_accept",
    "reject",
    "partial_fill",
    "cancel_fill",
    "latency",
    "ws_drop",
    "ws_silent",
    "ws_zero",
    "ws_stale",
    "rest_fail",
)

PHASES: tuple[str, ...] = ("entry", "exit")
# Endpoints an HTTP fault may be limited to (the ones the engine's order path and sync call).
_ORDER_ENDPOINTS = ("placeorder", "orderstatus", "orderbook", "positionbook", "*")
# The longest a phase's external kill may wait (wall seconds after the phase began).
KILL_WINDOW = 4.0


@dataclass(frozen=True)
class Fault:
    """One fault to arm: ``kind`` from :data:`FAULT_KINDS`; ``account`` the index of the account whose
    API key it is limited to (None: every key); ``params`` the control call's values."""

    kind: str
    account: int | None = None
    params: tuple[tuple[str, Any], ...] = ()

    def param(self, name: str, default: Any = None) -> Any:
        """The value of one parameter (``default`` when absent)."""
        return dict(self.params).get(name, default)


@dataclass(frozen=True)
class Phase:
    """What is armed before a phase and when (wall seconds after it began) the engine is killed, if at
    all."""

    faults: tuple[Fault, ...] = ()
    kill_after: float | None = None


@dataclass(frozen=True)
class RunPlan:
    """One strategy's run in one round: its ending, the SELL leg a risk ending moves (index into the
    strategy's legs), the account a kill-switch ending trips (index)."""

    strategy: int
    ending: str
    breach_leg: int
    kill_account: int


@dataclass(frozen=True)
class Round:
    runs: tuple[RunPlan, ...]
    entry: Phase
    exit: Phase


@dataclass(frozen=True)
class Plan:
    seed: int
    accounts: int
    strategies: int
    rounds: tuple[Round, ...] = field(default=())

    def kills(self) -> int:
        """External kills planned (crash points come on top, drawn by the engine itself)."""
        return sum(p.kill_after is not None for r in self.rounds for p in (r.entry, r.exit))

    def endings(self) -> dict[str, int]:
        """How many runs end each way."""
        counts = dict.fromkeys(ENDINGS, 0)
        for r in self.rounds:
            for run in r.runs:
                counts[run.ending] += 1
        return counts


def short_legs(strategy: int) -> tuple[int, ...]:
    """Indexes of the SELL legs of strategy ``strategy`` (see :func:`legs_of`)."""
    return tuple(i for i, (action, _) in enumerate(legs_of(strategy)) if action == "SELL")


def legs_of(strategy: int) -> tuple[tuple[str, str], ...]:
    """The legs (action, strike + option type) of strategy number ``strategy`` (0-based): even numbers
    are short straddles at 26,000, 26,100, …; odd numbers iron condors (BUY hedges listed first) further
    out. No two strategies share a strike, so a price moved for one never touches another."""
    j = strategy // 2
    if strategy % 2 == 0:
        strike = 26000 + 100 * j
        return (("SELL", f"{strike}CE"), ("SELL", f"{strike}PE"))
    return (
        ("BUY", f"{25300 - 100 * j}PE"),
        ("BUY", f"{26700 + 100 * j}CE"),
        ("SELL", f"{25700 - 100 * j}PE"),
        ("SELL", f"{26300 + 100 * j}CE"),
    )


MAX_STRATEGIES = 6  # beyond six, the strikes of legs_of would collide


def _fault(rng: random.Random, accounts: int) -> Fault:
    kind = rng.choice(FAULT_KINDS)
    account = rng.randrange(accounts) if rng.random() < 0.5 else None
    params: dict[str, Any]
    if kind == "http_429":
        params = {"count": rng.randint(1, 3), "endpoint": rng.choice(_ORDER_ENDPOINTS)}
    elif kind == "http_5xx":
        params = {
            "status": rng.choice((500, 502, 503, 504)),
            "count": rng.randint(1, 3),
            "endpoint": rng.choice(_ORDER_ENDPOINTS),
        }
    elif kind in ("timeout_before_accept", "timeout_after_accept"):
        # Longer than the engine's order timeout (run.py gives it 3 s): the client gives up first.
        params = {"seconds": round(rng.uniform(3.5, 5.0), 2), "endpoint": "placeorder"}
    elif kind == "reject":
        params = {"count": 1, "mode": rng.choice(("sync", "async"))}
    elif kind == "partial_fill":
        params = {"count": 1, "fraction": rng.choice((0.25, 0.5, 0.75))}
    elif kind == "cancel_fill":
        params = {"count": 1}
    elif kind == "latency":
        params = {"ms": rng.choice((100, 250, 500, 800)), "endpoint": rng.choice(_ORDER_ENDPOINTS)}
    elif kind in ("ws_zero", "ws_stale"):
        account = None
        params = {"count": rng.randint(1, 5)}
    elif kind == "rest_fail":
        params = {
            "status": 500,
            "count": rng.randint(2, 8),
            "endpoint": rng.choice(("multiquotes", "quotes")),
        }
    else:  # ws_drop, ws_silent: the whole WebSocket server
        account = None
        params = {}
    return Fault(kind, account, tuple(sorted(params.items())))


def _phase(faults: random.Random, kills: random.Random, accounts: int, kill_rate: float) -> Phase:
    armed = tuple(_fault(faults, accounts) for _ in range(faults.randint(0, 3)))
    # Both draws are always made, so the kill stream stays aligned whatever the rate.
    draw, delay = kills.random(), round(kills.uniform(0.0, KILL_WINDOW), 2)
    return Phase(armed, delay if draw < kill_rate else None)


def build_plan(seed: int, *, rounds: int, accounts: int, strategies: int, kill_rate: float) -> Plan:
    """The plan of a run of ``rounds`` rounds of ``strategies`` strategies on ``accounts`` accounts, with
    an external kill in each phase with probability ``kill_rate``. Raises ValueError for a shape out of
    range (rounds ≥ 1, accounts ≥ 1, 1 ≤ strategies ≤ :data:`MAX_STRATEGIES`, 0 ≤ kill_rate ≤ 1)."""
    if rounds < 1 or accounts < 1:
        raise ValueError("rounds and accounts must be at least 1")
    if not 1 <= strategies <= MAX_STRATEGIES:
        raise ValueError(f"strategies must be from 1 to {MAX_STRATEGIES}")
    if not 0.0 <= kill_rate <= 1.0:
        raise ValueError("kill_rate must be from 0 to 1")
    endings = random.Random(f"{seed}:endings")
    faults = random.Random(f"{seed}:faults")
    kills = random.Random(f"{seed}:kills")
    built = []
    for _ in range(rounds):
        runs = tuple(
            RunPlan(
                strategy=s,
                ending=endings.choice(ENDINGS),
                breach_leg=endings.choice(short_legs(s)),
                kill_account=endings.randrange(accounts),
            )
            for s in range(strategies)
        )
        entry = _phase(faults, kills, accounts, kill_rate)
        exit_ = _phase(faults, kills, accounts, kill_rate)
        built.append(Round(runs, entry, exit_))
    return Plan(seed, accounts, strategies, tuple(built))


__all__ = [
    "ENDINGS",
    "FAULT_KINDS",
    "KILL_WINDOW",
    "MAX_STRATEGIES",
    "PHASES",
    "Fault",
    "Phase",
    "Plan",
    "Round",
    "RunPlan",
    "build_plan",
    "legs_of",
    "short_legs",
]
