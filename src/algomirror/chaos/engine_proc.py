"""The chaos harness's killable engine (issue 13, part B): ``python -m algomirror.chaos.engine_proc``.

It is the real ``algomirror engine`` command (:func:`algomirror.cli.engine_command`: settings from the
environment as always — ``ALGOMIRROR_DATABASE_URL``, ``ALGOMIRROR_FERNET_KEY``,
``ALGOMIRROR_INSTANCE_DIR``, … —, the single-instance lock, signal handling, every component of
:func:`algomirror.engine.factory.build_engine`) with three changes, each read from one environment
variable, parsed strictly (a bad value prints ``algomirror: <why>`` and exits 2 before the engine
starts):

``AM_CHAOS_CLOCK`` (optional)
    JSON ``{"sim_at": "<ISO 8601 with a UTC offset>", "wall_at": <unix seconds>, "speed": <> 0>}``: the
    engine's market clock is ``sim_at + (time.time() - wall_at) * speed`` — the paper exchange's
    accelerated clock, read at ``wall_at`` — so market hours, square-off times and tick ages are judged
    on the exchange's time. The clock carries ``speed`` (the engine stretches staleness limits by it).
    Unset: the engine's own (system) clock.
``AM_CHAOS_EXITS`` (optional)
    JSON ``{"retry": {ExitRetry fields}, "driver": {DriverConfig fields}}`` (either part optional):
    the exit executor's retry policy and order driver with those values (the same policy with its waits
    scaled down), and the driver's ``unplaced_after`` for the entry executor too; every field
    must be one of the dataclass's, an integer field an integer, a float field a non-negative number.
``AM_CHAOS_CRASH`` + ``AM_CHAOS_CRASH_LOG`` (optional)
    The seeded crash points of :mod:`algomirror.chaos.crash` (see there): at each named point reached,
    one draw; below the rate, the point's name is appended to the log (fsynced) and the process
    SIGKILLs itself. Unset: nothing is wrapped.

This module imports nothing from the tests; the chaos driver (:mod:`algomirror.chaos.run`) starts it as
a subprocess and restarts it after each kill.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from algomirror.chaos.crash import (
    CRASH_LOG_VARIABLE,
    ChaosSettingsError,
    Crasher,
    CrashPlan,
    crash_from_environment,
    install,
)

CLOCK_VARIABLE = "AM_CHAOS_CLOCK"
EXITS_VARIABLE = "AM_CHAOS_EXITS"

_CLOCK_KEYS = frozenset({"sim_at", "wall_at", "speed"})


@dataclass(frozen=True, slots=True)
class ExchangeClock:
    """The paper exchange's accelerated clock as seen from this process: ``sim_at`` (aware) was the
    exchange's time at the wall-clock instant ``wall_at`` (unix seconds), and it runs ``speed`` times
    faster than the wall clock."""

    sim_at: datetime
    wall_at: float
    speed: float

    def now(self) -> datetime:
        """The exchange's current instant (aware, in ``sim_at``'s offset)."""
        return self.sim_at + timedelta(seconds=(time.time() - self.wall_at) * self.speed)


def _finite(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def parse_clock(text: str) -> ExchangeClock:
    """The :class:`ExchangeClock` of an ``AM_CHAOS_CLOCK`` value. Raises :class:`ChaosSettingsError`
    for invalid JSON, missing or unknown keys, a ``sim_at`` that is not an ISO 8601 instant with a UTC
    offset, a non-finite ``wall_at`` or a ``speed`` that is not a finite number above 0."""
    data = _json_object(text, CLOCK_VARIABLE)
    missing, unknown = _CLOCK_KEYS - data.keys(), data.keys() - _CLOCK_KEYS
    if missing or unknown:
        raise ChaosSettingsError(
            f"{CLOCK_VARIABLE}: keys must be exactly {sorted(_CLOCK_KEYS)} "
            f"(missing {sorted(missing)}, unknown {sorted(unknown)})"
        )
    sim_at = data["sim_at"]
    if not isinstance(sim_at, str):
        raise ChaosSettingsError(f"{CLOCK_VARIABLE}: 'sim_at' must be an ISO 8601 string, not {sim_at!r}")
    try:
        instant = datetime.fromisoformat(sim_at)
    except ValueError as exc:
        raise ChaosSettingsError(f"{CLOCK_VARIABLE}: 'sim_at' {sim_at!r} is not an ISO 8601 instant") from exc
    if instant.utcoffset() is None:
        raise ChaosSettingsError(f"{CLOCK_VARIABLE}: 'sim_at' {sim_at!r} needs a UTC offset, e.g. +05:30")
    wall_at, speed = data["wall_at"], data["speed"]
    if not _finite(wall_at):
        raise ChaosSettingsError(
            f"{CLOCK_VARIABLE}: 'wall_at' must be unix seconds (a number), not {wall_at!r}"
        )
    if not _finite(speed) or speed <= 0:
        raise ChaosSettingsError(f"{CLOCK_VARIABLE}: 'speed' must be a number above 0, not {speed!r}")
    return ExchangeClock(sim_at=instant, wall_at=float(wall_at), speed=float(speed))


@dataclass(frozen=True, slots=True)
class ExitPolicy:
    """The scaled exit policy of ``AM_CHAOS_EXITS``: keyword arguments of
    :class:`~algomirror.engine.exits.ExitRetry` and :class:`~algomirror.engine.order_driver.DriverConfig`."""

    retry: Mapping[str, Any]
    driver: Mapping[str, Any]


def _dataclass_values(raw: Any, cls: type[Any], where: str) -> dict[str, int | float]:
    """``raw`` checked against ``cls``'s fields (names, and ``int`` / ``float`` annotations)."""
    if not isinstance(raw, dict):
        raise ChaosSettingsError(
            f"{EXITS_VARIABLE}: {where!r} must be a JSON object of {cls.__name__} fields"
        )
    kinds = {f.name: str(f.type) for f in fields(cls)}
    unknown = sorted(set(raw) - kinds.keys())
    if unknown:
        raise ChaosSettingsError(
            f"{EXITS_VARIABLE}: {where!r} has unknown field(s) {unknown}; {cls.__name__} has {sorted(kinds)}"
        )
    values: dict[str, int | float] = {}
    for name, value in raw.items():
        if kinds[name] == "int":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ChaosSettingsError(
                    f"{EXITS_VARIABLE}: {where}.{name} must be a whole number ≥ 0, not {value!r}"
                )
            values[name] = value
        else:
            if not _finite(value) or value < 0:
                raise ChaosSettingsError(
                    f"{EXITS_VARIABLE}: {where}.{name} must be a number ≥ 0, not {value!r}"
                )
            values[name] = float(value)
    return values


def parse_exits(text: str) -> ExitPolicy:
    """The :class:`ExitPolicy` of an ``AM_CHAOS_EXITS`` value. Raises :class:`ChaosSettingsError` for
    invalid JSON, keys other than ``retry`` / ``driver``, unknown fields, and values of the wrong kind
    (an integer field given a fraction, a negative or non-finite number)."""
    from algomirror.engine.exits import ExitRetry
    from algomirror.engine.order_driver import DriverConfig

    data = _json_object(text, EXITS_VARIABLE)
    unknown = sorted(set(data) - {"retry", "driver"})
    if unknown:
        raise ChaosSettingsError(
            f"{EXITS_VARIABLE}: unknown key(s) {unknown}; expected 'retry' and/or 'driver'"
        )
    return ExitPolicy(
        retry=_dataclass_values(data.get("retry", {}), ExitRetry, "retry"),
        driver=_dataclass_values(data.get("driver", {}), DriverConfig, "driver"),
    )


def _json_object(text: str, variable: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ChaosSettingsError(f"{variable} is not valid JSON ({exc.msg})") from exc
    if not isinstance(data, dict):
        raise ChaosSettingsError(f"{variable} must be a JSON object")
    return data


@dataclass(frozen=True, slots=True)
class ChaosSettings:
    """Everything this process reads from its ``AM_CHAOS_*`` variables (None: not set)."""

    clock: ExchangeClock | None
    exits: ExitPolicy | None
    crash: CrashPlan | None


def settings_from_environment(environ: Mapping[str, str]) -> ChaosSettings:
    """Parse every ``AM_CHAOS_*`` variable of ``environ`` (an empty value counts as unset). Raises
    :class:`ChaosSettingsError` with the first problem found."""
    clock_text = environ.get(CLOCK_VARIABLE, "").strip()
    exits_text = environ.get(EXITS_VARIABLE, "").strip()
    return ChaosSettings(
        clock=parse_clock(clock_text) if clock_text else None,
        exits=parse_exits(exits_text) if exits_text else None,
        crash=crash_from_environment(environ),
    )


def _check_log(plan: CrashPlan) -> None:
    """The crash log must be writable now: a log that fails at the moment of a kill would turn the kill
    into an exception inside the engine's order path."""
    try:
        with plan.log.open("a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise ChaosSettingsError(f"{CRASH_LOG_VARIABLE}: cannot append to {str(plan.log)!r} ({exc})") from exc


def prepare(chaos: ChaosSettings) -> None:
    """Apply ``chaos`` to the engine about to be built: the market clock and scaled exits through
    :func:`algomirror.engine.factory.build_engine` (replaced in its module, where the command looks it
    up), the crash points through :func:`algomirror.chaos.crash.install`. Raises
    :class:`ChaosSettingsError` when the crash log cannot be written."""
    from algomirror.config import Settings
    from algomirror.db.session import Database
    from algomirror.engine import factory
    from algomirror.engine.execution import EntryExecutor, ExecutionConfig
    from algomirror.engine.exits import ExitExecutor, ExitRetry
    from algomirror.engine.order_driver import DriverConfig
    from algomirror.engine.service import EngineService

    if chaos.crash is not None:
        _check_log(chaos.crash)
        install(Crasher(chaos.crash))
    if chaos.clock is not None:
        clock = chaos.clock
        build = factory.build_engine

        def build_on_exchange_time(settings: Settings, database: Database, **options: Any) -> EngineService:
            options.setdefault("market_clock", clock)
            return build(settings, database, **options)

        factory.build_engine = build_on_exchange_time  # the command imports it from the module when run
    if chaos.exits is not None:
        policy = ExitRetry(**chaos.exits.retry)
        config = ExecutionConfig(driver=DriverConfig(**chaos.exits.driver))

        class ScaledExits(ExitExecutor):
            """The exit executor with the scaled policy (unless a caller passes its own)."""

            def __init__(self, *args: Any, **options: Any) -> None:
                options.setdefault("retry", policy)
                options.setdefault("config", config)
                super().__init__(*args, **options)

        vars(factory)["ExitExecutor"] = ScaledExits  # build_engine reads this name when called
        unplaced = chaos.exits.driver.get("unplaced_after")
        if unplaced is not None:
            # The entry executor concludes a lost entry order never placed after the same scaled wait
            # (its other waits stay the production ones): with the 60 s default a lost entry outlived
            # the driver's 75 s wait for an entry on a loaded machine, and the round's exits with it.
            entry_config = ExecutionConfig(driver=DriverConfig(unplaced_after=float(unplaced)))

            class ScaledEntries(EntryExecutor):
                """The entry executor with the scaled unplaced wait (unless a caller passes a config)."""

                def __init__(self, *args: Any, **options: Any) -> None:
                    options.setdefault("config", entry_config)
                    super().__init__(*args, **options)

            vars(factory)["EntryExecutor"] = ScaledEntries


def main(environ: Mapping[str, str] | None = None) -> None:
    """Run ``algomirror engine`` with the chaos settings of ``environ`` (default ``os.environ``); exits
    as the command does, or with status 2 and one line on stderr for a bad ``AM_CHAOS_*`` value."""
    import os

    from algomirror import cli

    try:
        prepare(settings_from_environment(os.environ if environ is None else environ))
    except ChaosSettingsError as exc:
        cli.fail(str(exc))
    cli.main(["engine"], prog_name="algomirror")


if __name__ == "__main__":
    main()


__all__ = [
    "CLOCK_VARIABLE",
    "EXITS_VARIABLE",
    "ChaosSettings",
    "ExchangeClock",
    "ExitPolicy",
    "main",
    "parse_clock",
    "parse_exits",
    "prepare",
    "settings_from_environment",
]
