"""``algomirror engine`` on the paper exchange's simulated time, for the risk engine's kill test
(``test_risk_faults_kill.py``); run as ``python risk_engine_proc.py``.

It is the real command (``algomirror.cli``'s ``engine``: settings from the environment, the lock, signal
handling, every component of ``factory.build_engine``) with one change: ``build_engine`` is given a
market clock running ``AM_TEST_MARKET_OFFSET`` seconds (float) ahead of the system clock — the offset of
the test exchange's ×1 accelerated clock, which starts inside a trading session. So the feed's ticks are
not stale and the risk engine's marks are fresh whatever the real time of day, as in the demo, whose
engine also runs on the exchange's clock. With ``AM_TEST_EXITS`` set (JSON: ``{"retry": {ExitRetry
fields}, "driver": {DriverConfig fields}}``) the exit executor's retry policy and order driver use those
values: the same policy with its waits scaled down, as the in-process tests use.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta
from typing import Any

from algomirror import cli
from algomirror.config import Settings
from algomirror.db.session import Database
from algomirror.domain.timeutil import utcnow
from algomirror.engine import factory
from algomirror.engine.execution import ExecutionConfig
from algomirror.engine.exits import ExitExecutor, ExitRetry
from algomirror.engine.order_driver import DriverConfig
from algomirror.engine.service import EngineService

OFFSET_VARIABLE = "AM_TEST_MARKET_OFFSET"
EXITS_VARIABLE = "AM_TEST_EXITS"


class ShiftedClock:
    """The system clock moved by a fixed offset (aware UTC)."""

    def __init__(self, offset: timedelta) -> None:
        self.offset = offset

    def now(self) -> datetime:
        return utcnow() + self.offset


def main() -> None:
    """Run ``algomirror engine`` with the shifted market clock (exits like the command)."""
    clock = ShiftedClock(timedelta(seconds=float(os.environ[OFFSET_VARIABLE])))
    build = factory.build_engine

    def build_on_exchange_time(settings: Settings, database: Database, **options: Any) -> EngineService:
        options.setdefault("market_clock", clock)
        return build(settings, database, **options)

    factory.build_engine = build_on_exchange_time  # the command imports it from the module when run
    scaled = os.environ.get(EXITS_VARIABLE)
    if scaled:
        values = json.loads(scaled)
        policy = ExitRetry(**values.get("retry", {}))
        config = ExecutionConfig(driver=DriverConfig(**values.get("driver", {})))

        class ScaledRetryExits(ExitExecutor):
            def __init__(self, *args: Any, **options: Any) -> None:
                options.setdefault("retry", policy)
                options.setdefault("config", config)
                super().__init__(*args, **options)

        vars(factory)["ExitExecutor"] = ScaledRetryExits  # build_engine reads this name when called
    cli.main(["engine"], prog_name="algomirror")


if __name__ == "__main__":
    main()
