"""``risk_engine_proc.py`` (``algomirror engine`` on the exchange's simulated time) with one change: the
engine kills itself with SIGKILL right after the exit's fast first attempt committed its transaction
(executions claimed, intents ``sent``) and before any of its orders is sent — the window the kill test
of ``test_engine_exit_batch_kill.py`` needs. Run as ``python exit_kill_proc.py``."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

from risk_engine_proc import main  # a sibling: this file runs as a script from its own directory

from algomirror.engine.exits import ExitExecutor
from algomirror.engine.journal import ClaimedIntent, IntentSpec, Journal

_claim = ExitExecutor.claim_first_exits


def claim_then_die(
    self: ExitExecutor,
    journal: Journal,
    plans: dict[int, Callable[[int], list[IntentSpec]]],
    reason: str,
    detail: str,
) -> dict[int, list[ClaimedIntent]]:
    """The claim, committed; then the process dies at once if it claimed anything."""
    claimed = _claim(self, journal, plans, reason, detail)
    if claimed:
        os.kill(os.getpid(), signal.SIGKILL)
    return claimed


if __name__ == "__main__":
    ExitExecutor.claim_first_exits = claim_then_die  # type: ignore[method-assign]
    main()
