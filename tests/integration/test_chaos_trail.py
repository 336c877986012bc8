"""The chaos harness's report of a run that did not get flat in time (``Chaos.escalate``) carries the
run's exit trail: its exit commands with their status, its exit intents by state, the engine's starts
and kills and what its log said about exits. A CI failure keeps only the printed report (the work
directory is gone), so that is what the next unexplained finding is diagnosed from.

Made to happen with no time at all for an ending: every run of one short round is escalated at once,
and then made flat by the person's exit the harness sends (the run as a whole still audits clean).
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from algomirror.chaos import run as chaos
from algomirror.chaos.run import ChaosConfig, run
from tests.schema import PG_ADMIN_URL

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_a_run_not_flat_in_time_is_reported_with_its_exit_trail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chaos, "ENDING_BOUND", 0.0)
    config = ChaosConfig(
        seed=2,  # its one run ends by square-off: the finding quotes the schedule's facts too
        database="sqlite",
        postgres_url=PG_ADMIN_URL,
        workdir=tmp_path / "chaos",
        cycles=2,
        accounts=2,
        strategies=1,
        kill_rate=0.0,
        crash_rate=0.0,
    )
    out = io.StringIO()
    result = run(config, out)
    found = [line for line in result.report.unexplained if "not flat 0 s after its ending" in line]
    assert found, result.text
    for line in found:
        assert "exit commands [" in line and "exit intents {" in line, line
        assert "engine starts 1, kills 0" in line, line
        assert "its log on exits and the schedule: " in line, line
        assert "ending square_off" in line and "square-off time " in line
        assert "MIS executions by status" in line
    # The person's exit the harness sent made every escalated run flat: nothing else was found.
    assert not [u for u in result.report.unexplained if "still not flat" in u], result.text
    assert result.report.duplicates == [] and result.report.missed_exits == []
