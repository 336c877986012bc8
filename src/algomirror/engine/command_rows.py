"""What every engine component that runs web commands (``engine_commands``) writes back on a row:
the exactly-once claim, the attempt count kept in ``result``, and the values a finished attempt leaves
(retry later, failed after the last attempt, or the final outcome); plus the in-flight task table and
the poll pause their loops share. Used by the command processor, the entry and exit executors and the
kill switch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from algomirror.db.models import EngineCommand

# engine_commands.error is TEXT; a broker's message is cut here so one reply cannot bloat the row.
MAX_ERROR = 2000


def attempts_of(result: Any) -> int:
    """The attempts already made, as recorded in a command's ``result`` (0 when none or unreadable)."""
    value = result.get("attempts") if isinstance(result, dict) else None
    return value if isinstance(value, int) and value >= 0 else 0


def rowcount(result: Any) -> int:
    """Rows an UPDATE matched (0 when the driver does not say)."""
    count = getattr(result, "rowcount", 0)
    return count if isinstance(count, int) else 0


def claim_command(session: Session, command_id: int, now: datetime, *, kind: str | None = None) -> bool:
    """Move command ``command_id`` ``pending → running`` (started at ``now``) in ``session``; True only
    for the one caller whose conditional UPDATE matched (exactly-once claim). ``kind`` also requires the
    command's kind. The caller commits."""
    conditions = [EngineCommand.id == command_id, EngineCommand.status == "pending"]
    if kind is not None:
        conditions.append(EngineCommand.kind == kind)
    won = session.execute(
        update(EngineCommand)
        .where(*conditions)
        .values(status="running", started_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return rowcount(won) == 1


def retry_delay(base: float, attempts: int, cap: float = 30.0) -> float:
    """Seconds before attempt ``attempts + 1`` of a command: ``base`` doubled per attempt, at most
    ``cap`` (an unresolved command's attempts are unbounded, so the doubling is bounded first)."""
    return min(base * float(2 ** min(max(attempts - 1, 0), 32)), cap)


def end_values(
    status: str,
    *,
    result: dict[str, Any] | None,
    error: str | None,
    attempts: int,
    max_attempts: int | None,
    now: datetime,
    retry_result: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The column values for a command whose attempt number ``attempts`` ended with ``status``
    ("retry", "done", "failed"…): a retry below ``max_attempts`` (always, for None) goes back to
    ``pending`` (its ``result`` = ``retry_result`` plus the attempt count), a retry at the limit ends
    ``failed`` ("gave up after N attempts"), anything else is final."""
    if status == "retry" and (max_attempts is None or attempts < max_attempts):
        return {
            "status": "pending",
            "result": {**(retry_result or {}), "attempts": attempts},
            "error": (error or "")[:MAX_ERROR],
            "started_at": None,
        }
    if status == "retry":
        return {
            "status": "failed",
            "result": result or None,
            "error": f"gave up after {attempts} attempts: {error}"[:MAX_ERROR],
            "finished_at": now,
        }
    return {
        "status": status,
        "result": result or None,
        "error": None if status == "done" else (error or "failed")[:MAX_ERROR],
        "finished_at": now,
    }


class InFlight:
    """The commands a runner is executing now, one task per command id, each forgotten when it ends.
    ``drain`` awaits them all (a stopping runner must not cancel a broker call half way)."""

    def __init__(self) -> None:
        self._tasks: dict[int, asyncio.Task[bool]] = {}

    def __contains__(self, command_id: object) -> bool:
        return command_id in self._tasks

    def start(self, command_id: int, work: Coroutine[Any, Any, bool], *, name: str | None = None) -> None:
        """Run ``work`` for ``command_id`` unless a task for it is already running (then ``work`` is
        closed unstarted)."""
        if command_id in self._tasks:
            work.close()
            return
        task = asyncio.create_task(work, name=name)
        self._tasks[command_id] = task
        task.add_done_callback(lambda done: self._forget(command_id, done))

    def _forget(self, command_id: int, task: asyncio.Task[bool]) -> None:
        if self._tasks.get(command_id) is task:
            del self._tasks[command_id]

    async def drain(self) -> None:
        """Wait for every running command (their errors are theirs to log, not raised here)."""
        tasks = list(self._tasks.values())
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


async def pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less when ``stop`` is set meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass
