"""The short seeded chaos runs of CI (issue 13, Deliver 3): the whole harness of ``algomirror chaos`` — the
paper exchange with faults, the real engine as a subprocess killed and restarted, the auditor — once on
SQLite and once on PostgreSQL, through :func:`algomirror.chaos.run.run` (the code path of the command).

Each run is asserted twice. What the harness itself must deliver (kills happened, the audit saw the
exchange's orders, the last line is the summary, a failed run prints its replay command) must hold
always. What the engine must deliver — the summary's five figures 0 and every cycle asked for done — is
asserted as well, except for one known engine defect (found by this harness, see
docs/reliability.md "Findings"): an entry order that never reached the exchange (its send answered 5xx
or timed out before the exchange acted, or the engine died between intent and send) stays ``unknown``
for good, the run stays ``entering`` with no alert and its hedges stay open. A run whose only findings
are that defect's is reported as xfail with the findings; any other finding fails the test.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from algomirror.chaos.run import ChaosConfig, ChaosResult, run
from tests.schema import PG_ADMIN_URL

# About 100 strategy-account cycles (8 accounts × 2 strategies × 6 rounds), a handful of kills: about 70 s.
SHAPE = {"cycles": 96, "accounts": 8, "strategies": 2, "kill_rate": 0.3, "crash_rate": 0.005}
SEEDS = {"sqlite": 6, "postgresql": 11}
SUMMARY = re.compile(
    r"^chaos: (\d+) cycles, (\d+) kills, duplicates (\d+), missed exits (\d+), reversed (\d+), "
    r"pnl mismatches (\d+), unexplained (\d+)$"
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def chaos_run(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ChaosResult]:
    kind = str(request.param)
    config = ChaosConfig(
        seed=SEEDS[kind],
        database=kind,
        postgres_url=PG_ADMIN_URL,
        workdir=tmp_path_factory.mktemp(f"chaos-{kind}"),
        **SHAPE,  # type: ignore[arg-type]
    )
    out = io.StringIO()
    result = run(config, out)
    assert result.text in out.getvalue()
    print(out.getvalue())  # the rounds and the table, for -s and for a failure's report
    yield result


def summary(result: ChaosResult) -> tuple[int, ...]:
    last = result.text.splitlines()[-1]
    match = SUMMARY.match(last)
    assert match, last
    return tuple(int(n) for n in match.groups())


def test_the_harness_killed_faulted_and_audited(chaos_run: ChaosResult) -> None:
    cycles, kills, *_ = summary(chaos_run)
    stats = chaos_run.stats
    assert kills == stats.kills > 0
    assert sum(stats.kills_by_point.values()) == kills
    assert sum(stats.faults.values()) > 0
    # Every cycle entered orders (2 or 4 legs per account) and the auditor saw them at the exchange.
    assert chaos_run.report.orders >= cycles
    replay = [line for line in chaos_run.text.splitlines() if line.startswith("replay: ")]
    if chaos_run.ok:
        assert replay == []
    else:
        seed, kind = chaos_run.stats.seed, chaos_run.stats.database
        assert len(replay) == 1, replay
        assert replay[0].startswith(f"replay: algomirror chaos --seed {seed} --cycles 96 "), replay
        assert f"--database {kind}" in replay[0], replay


# The known defect's findings: the stuck run, its pending legs and unknown intents, its open hedges.
_STUCK = re.compile(r"run (\d+) \(strategy \d+, ending \w+\): still entering")
_DEFECT = (
    re.compile(r"cannot enter, its run \d+ is still entering; cycle skipped"),
    re.compile(r"intent exec:\d+:entry:\d+: left unknown \(order none\) with no alert"),
    re.compile(r"run \d+ execution \d+: left pending with no alert"),
    re.compile(r"run \d+ \(strategy \d+\): left entering with no alert"),
)


def known_defect_only(result: ChaosResult) -> list[str]:
    """The findings, when every one of them is the known entry defect's (else an empty list)."""
    report = result.report
    lines = [*report.duplicates, *report.missed_exits, *report.reversed_positions, *report.pnl_mismatches,
             *report.unexplained, *report.buy_first_violations]  # fmt: skip
    stuck = {m.group(1) for line in report.unexplained if (m := _STUCK.search(line))}
    if not stuck:
        return []
    for line in lines:
        if _STUCK.search(line) or any(p.search(line) for p in _DEFECT):
            continue
        # A hedge left open at the exchange by a run that is stuck entering.
        if line in report.missed_exits and any(f" run {run_id} " in line for run_id in stuck):
            continue
        return []
    return lines


def test_exactly_once_under_fire(chaos_run: ChaosResult) -> None:
    cycles, _kills, *figures = summary(chaos_run)
    if not chaos_run.ok and (found := known_defect_only(chaos_run)):
        pytest.xfail(
            "known engine defect: an entry order that never reached the exchange stays unknown: "
            + " | ".join(found[:6])
        )
    assert figures == [0, 0, 0, 0, 0], chaos_run.text
    assert chaos_run.report.ok, chaos_run.text
    assert cycles == SHAPE["cycles"]


def test_work_directory_keeps_the_engine_logs(
    chaos_run: ChaosResult, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The engine's logs of every start stay in the run's work directory (what a failure is read from)."""
    root = Path(tmp_path_factory.getbasetemp())
    logs = sorted(root.glob(f"chaos-{chaos_run.stats.database}*/engine-*.log"))
    # One log per start: the first start and one per kill at least.
    assert len(logs) >= 1 + chaos_run.stats.kills
