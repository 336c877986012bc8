"""Seeded crash points for the chaos harness's killable engine (issue 13, part B).

The engine process of :mod:`algomirror.chaos.engine_proc` kills itself with SIGKILL at chosen moments of
the order path, the windows in which an engine that dies must neither lose nor repeat an order:

* ``after_intent`` — intents were committed ``sent`` (their sends claimed) and their orders have not
  left: :meth:`Journal.record_and_claim <algomirror.engine.journal.Journal.record_and_claim>` (the entry's
  batch) and :meth:`Journal.claim_send <algomirror.engine.journal.Journal.claim_send>` (one intent at a
  time: entries and exits alike) returning a won claim, and the exit's fast first attempt (its claim
  commits the intents ``sent`` too);
* ``after_send`` — the broker answered with an order id and the journal has not written it yet:
  :meth:`OrderDriver.place <algomirror.engine.order_driver.OrderDriver.place>` returning an order id
  (every order of entries, exits and unwinds is placed there);
* ``after_exit_claim`` — an execution's exit was claimed (committed ``exiting``) and its exit order has
  not left: the fast first attempt's claim (``ExitExecutor.claim_first_exits``), the one-by-one claim
  (``exit_records.claim_exit`` as :mod:`algomirror.engine.exit_work` calls it) and an entry unwind's claim
  (``entry_run.claim_unwind``).

The exit's fast first attempt commits the executions' claim and their intents ``sent`` in one
transaction, so its return reaches ``after_exit_claim`` and then ``after_intent`` (two draws when both
are named; the second only if the first did not kill).

The contract (environment variables, parsed strictly by :func:`crash_from_environment`):

``AM_CHAOS_CRASH``
    JSON ``{"seed": int, "start": int, "rate": float, "points": [names]}``: ``seed`` is the run's seed,
    ``start`` the index of this engine start (0 for the first start of a run, then 1, 2, …), ``rate``
    the probability in [0, 1] of a kill at each named point reached, ``points`` a non-empty subset of
    :data:`CRASH_POINTS` (no duplicates). Unset or empty: nothing is wrapped, the engine is the plain one.
``AM_CHAOS_CRASH_LOG``
    Required with ``AM_CHAOS_CRASH``: a file to which the name of the point of a kill is appended (one
    line, ``name + "\\n"``, flushed and fsynced) right before the SIGKILL, so the driver knows where the
    engine died.

The draw: one ``random.Random(f"{seed}:{start}")`` per process, one ``random()`` per named point
reached (points not named draw nothing), a kill when the draw is below ``rate``. The same seed, start
index and sequence of points reached give the same kill (the order of points reached by concurrent
work may differ with timing).
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

AFTER_INTENT = "after_intent"
AFTER_SEND = "after_send"
AFTER_EXIT_CLAIM = "after_exit_claim"
CRASH_POINTS: tuple[str, ...] = (AFTER_INTENT, AFTER_SEND, AFTER_EXIT_CLAIM)

CRASH_VARIABLE = "AM_CHAOS_CRASH"
CRASH_LOG_VARIABLE = "AM_CHAOS_CRASH_LOG"

_CRASH_KEYS = frozenset({"seed", "start", "rate", "points"})


class ChaosSettingsError(ValueError):
    """A chaos environment variable is missing, malformed or out of range; the message names it and
    says what is expected (the engine process prints it and exits 2)."""


@dataclass(frozen=True, slots=True)
class CrashPlan:
    """Where and how often this engine start kills itself (see the module docstring). ``rate`` is a
    probability in [0, 1]; ``log`` the file the point of a kill is appended to."""

    seed: int
    start: int
    rate: float
    points: frozenset[str]
    log: Path


def _strict_int(value: Any, name: str) -> int:
    # bool is an int subclass in Python; a JSON true is not a seed.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ChaosSettingsError(f"{CRASH_VARIABLE}: {name!r} must be an integer, not {value!r}")
    return value


def parse_crash(text: str, log: str | None) -> CrashPlan:
    """The :class:`CrashPlan` of an ``AM_CHAOS_CRASH`` value and an ``AM_CHAOS_CRASH_LOG`` value.

    Raises :class:`ChaosSettingsError` for invalid JSON, a value that is not an object, a missing or
    unknown key, a non-integer seed, a negative or non-integer start, a rate outside [0, 1] (or not a
    number), an empty, duplicated or unknown point, or a missing log path."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ChaosSettingsError(f"{CRASH_VARIABLE} is not valid JSON ({exc.msg})") from exc
    if not isinstance(data, dict):
        raise ChaosSettingsError(f"{CRASH_VARIABLE} must be a JSON object with keys {sorted(_CRASH_KEYS)}")
    missing = _CRASH_KEYS - data.keys()
    unknown = data.keys() - _CRASH_KEYS
    if missing or unknown:
        parts = [
            f"missing {sorted(missing)}" if missing else "",
            f"unknown {sorted(unknown)}" if unknown else "",
        ]
        raise ChaosSettingsError(f"{CRASH_VARIABLE}: {', '.join(p for p in parts if p)} key(s)")
    seed = _strict_int(data["seed"], "seed")
    start = _strict_int(data["start"], "start")
    if start < 0:
        raise ChaosSettingsError(f"{CRASH_VARIABLE}: 'start' must be 0 or more, not {start}")
    rate = data["rate"]
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= float(rate) <= 1.0:
        raise ChaosSettingsError(f"{CRASH_VARIABLE}: 'rate' must be a number from 0 to 1, not {rate!r}")
    points = data["points"]
    if not isinstance(points, list) or not points or not all(isinstance(p, str) for p in points):
        raise ChaosSettingsError(
            f"{CRASH_VARIABLE}: 'points' must be a non-empty list of names from {list(CRASH_POINTS)}"
        )
    wrong = [p for p in points if p not in CRASH_POINTS]
    if wrong:
        raise ChaosSettingsError(
            f"{CRASH_VARIABLE}: unknown crash point(s) {wrong}; known: {list(CRASH_POINTS)}"
        )
    if len(set(points)) != len(points):
        raise ChaosSettingsError(f"{CRASH_VARIABLE}: 'points' lists a name twice: {points}")
    if not log:
        raise ChaosSettingsError(f"{CRASH_LOG_VARIABLE} must name a file when {CRASH_VARIABLE} is set")
    return CrashPlan(seed=seed, start=start, rate=float(rate), points=frozenset(points), log=Path(log))


def crash_from_environment(environ: Mapping[str, str] | None = None) -> CrashPlan | None:
    """The crash plan of ``environ`` (default ``os.environ``), None when ``AM_CHAOS_CRASH`` is unset or
    empty. Raises :class:`ChaosSettingsError` as :func:`parse_crash` does."""
    env = os.environ if environ is None else environ
    text = env.get(CRASH_VARIABLE, "")
    if not text.strip():
        return None
    return parse_crash(text, env.get(CRASH_LOG_VARIABLE))


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class Crasher:
    """The seeded draw of one engine start. :meth:`reach` is called at every crash point the engine
    reaches (from the event loop or from worker threads: the draw is serialised by a lock, so the
    stream is consumed one point at a time). ``kill`` is what ends the process (SIGKILL of itself;
    a test passes a recorder)."""

    def __init__(self, plan: CrashPlan, *, kill: Callable[[], None] = _die) -> None:
        self.plan = plan
        self._random = random.Random(f"{plan.seed}:{plan.start}")
        self._lock = threading.Lock()
        self._kill = kill

    def reach(self, point: str) -> bool:
        """Draw for ``point`` (only when the plan names it); on a kill, append the point to the log,
        flush and fsync it, then kill. Returns True when a kill was asked for (only seen when ``kill``
        does not end the process). Raises ValueError for a name not in :data:`CRASH_POINTS` and
        OSError when the log cannot be written (then nothing is killed)."""
        if point not in CRASH_POINTS:
            raise ValueError(f"unknown crash point {point!r}")
        if point not in self.plan.points:
            return False
        with self._lock:
            if self._random.random() >= self.plan.rate:
                return False
            with self.plan.log.open("a", encoding="utf-8") as out:
                out.write(point + "\n")
                out.flush()
                os.fsync(out.fileno())
            self._kill()
            return True


def install(crasher: Crasher) -> Callable[[], None]:
    """Wrap the engine's functions at whose return the crash points lie (see the module docstring), so
    that each one calls ``crasher.reach`` with its point once it has returned what opens the window,
    and otherwise returns exactly what the original returned (raising what it raised). Call once, at
    start-up, before the engine is built. Patches classes and the module globals the engine looks up
    when it calls them; nothing else changes. Returns the function that puts the originals back (for
    a test running the engine in its own process)."""
    # Imported here: the plain engine process (no AM_CHAOS_CRASH) never loads this wiring.
    from algomirror.engine import entry_run, exit_work, exits
    from algomirror.engine.journal import ClaimedIntent, IntentSpec, Journal
    from algomirror.engine.order_driver import IntentRow, OrderDriver

    record_and_claim = Journal.record_and_claim
    claim_send = Journal.claim_send
    place = OrderDriver.place
    claim_first_exits = exits.ExitExecutor.claim_first_exits
    claim_exit: Callable[..., int | None] = vars(exit_work)["claim_exit"]
    unwind_claim: Callable[[Any, int], bool] = vars(entry_run)["claim_unwind"]

    def record_and_claim_then_reach(self: Journal, specs: Sequence[IntentSpec]) -> list[ClaimedIntent]:
        claimed = record_and_claim(self, specs)  # committed when it returns
        if any(c.won for c in claimed):
            crasher.reach(AFTER_INTENT)
        return claimed

    def claim_send_then_reach(self: Journal, intent_id: int) -> bool:
        won = claim_send(self, intent_id)
        if won:
            crasher.reach(AFTER_INTENT)
        return won

    async def place_then_reach(
        self: OrderDriver, client: Any, row: IntentRow, priority: Any
    ) -> tuple[IntentRow, str | None]:
        placed, order_id = await place(self, client, row, priority)
        if order_id is not None:  # accepted; the acknowledgement is the caller's to write
            crasher.reach(AFTER_SEND)
        return placed, order_id

    def claim_first_exits_then_reach(
        self: exits.ExitExecutor,
        journal: Journal,
        plans: dict[int, Callable[[int], list[IntentSpec]]],
        reason: str,
        detail: str,
    ) -> dict[int, list[ClaimedIntent]]:
        claimed = claim_first_exits(self, journal, plans, reason, detail)
        if claimed:
            # One transaction claimed the executions and committed their intents ``sent``: both windows.
            crasher.reach(AFTER_EXIT_CLAIM)
            crasher.reach(AFTER_INTENT)
        return claimed

    def claim_exit_then_reach(*args: Any, **options: Any) -> int | None:
        attempt = claim_exit(*args, **options)
        if attempt is not None:
            crasher.reach(AFTER_EXIT_CLAIM)
        return attempt

    def unwind_claim_then_reach(database: Any, execution_id: int) -> bool:
        won = unwind_claim(database, execution_id)
        if won:
            crasher.reach(AFTER_EXIT_CLAIM)
        return won

    Journal.record_and_claim = record_and_claim_then_reach  # type: ignore[method-assign]
    Journal.claim_send = claim_send_then_reach  # type: ignore[method-assign]
    OrderDriver.place = place_then_reach  # type: ignore[method-assign]
    exits.ExitExecutor.claim_first_exits = claim_first_exits_then_reach  # type: ignore[method-assign]
    # The callers look these names up in their own modules' globals when they call them.
    vars(exit_work)["claim_exit"] = claim_exit_then_reach
    vars(entry_run)["claim_unwind"] = unwind_claim_then_reach

    def restore() -> None:
        Journal.record_and_claim = record_and_claim  # type: ignore[method-assign]
        Journal.claim_send = claim_send  # type: ignore[method-assign]
        OrderDriver.place = place  # type: ignore[method-assign]
        exits.ExitExecutor.claim_first_exits = claim_first_exits  # type: ignore[method-assign]
        vars(exit_work)["claim_exit"] = claim_exit
        vars(entry_run)["claim_unwind"] = unwind_claim

    return restore


__all__ = [
    "AFTER_EXIT_CLAIM",
    "AFTER_INTENT",
    "AFTER_SEND",
    "CRASH_LOG_VARIABLE",
    "CRASH_POINTS",
    "CRASH_VARIABLE",
    "ChaosSettingsError",
    "CrashPlan",
    "Crasher",
    "crash_from_environment",
    "install",
    "parse_crash",
]
