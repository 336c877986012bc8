"""Simulated time: real time, accelerated (×N) or manual (moved only by the control API).

The driver calls ``advance(target)`` every ``tick_seconds`` of real time; the market model then produces
its ticks up to ``target``. Manual mode never advances on its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Literal

from algomirror.domain.timeutil import utcnow

ClockMode = Literal["realtime", "accelerated", "manual"]
log = logging.getLogger(__name__)


class ClockDriver:
    def __init__(
        self,
        mode: ClockMode,
        *,
        speed: float,
        tick_seconds: float,
        now: Callable[[], datetime],
        advance: Callable[[datetime], None],
    ) -> None:
        if mode not in ("realtime", "accelerated", "manual"):
            raise ValueError(f"unknown clock mode {mode!r}")
        if speed <= 0 or tick_seconds <= 0:
            raise ValueError("speed and tick_seconds must be positive")
        self.mode: ClockMode = mode
        self.speed = speed
        self.tick_seconds = tick_seconds
        self._now = now
        self._advance = advance
        self._anchor_sim = now()
        self._anchor_mono = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    def target(self) -> datetime:
        if self.mode == "realtime":
            return utcnow()
        if self.mode == "accelerated":
            elapsed = (time.monotonic() - self._anchor_mono) * self.speed
            return self._anchor_sim + timedelta(seconds=elapsed)
        return self._now()

    def rebase(self) -> None:
        """Restart the accelerated timeline from the market's current instant (after a reset or jump)."""
        self._anchor_sim = self._now()
        self._anchor_mono = time.monotonic()

    def start(self) -> None:
        if self.mode != "manual" and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="sim-clock")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.tick_seconds)
            target = self.target()
            if target > self._now():
                try:
                    self._advance(target)
                except Exception:  # a model bug must not stop the clock for good; it is logged loudly
                    log.exception("market advance to %s failed", target)
