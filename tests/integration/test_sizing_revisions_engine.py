"""Review regressions (issue 14, finding 8): an exchange revision reaches the engine on its IST date:
the preview sizes by a revision dated today, and a run's freeze slices go by the IST date of its
``started_at`` (a run started at 00:30 IST is on that IST day, though its UTC date is the day before)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy import select

from algomirror.db.models import StrategyRun, TradingSetting
from algomirror.db.models.sizing import TradingSettingRevision
from algomirror.domain import resolution as domain_resolution
from algomirror.domain.errors import NoRuleInForce
from algomirror.domain.timeutil import to_ist
from algomirror.engine.entry_records import load_plan
from tests.integration.execution_support import make_world
from tests.integration.resolution_support import STRADDLE, preview, resolution_world
from tests.sim_fixtures import SimHandle


@pytest.fixture
def no_contract_freeze(monkeypatch: pytest.MonkeyPatch) -> None:
    """No contract-data freeze in force: the preview falls back to the instrument settings' freeze."""

    def missing(base: str, on: date) -> int:
        raise NoRuleInForce(f"no freeze quantity for {base} on {on}")

    monkeypatch.setattr(domain_resolution, "freeze_qty", missing)


@pytest.mark.usefixtures("no_contract_freeze")
async def test_a_revision_dated_today_is_used_by_the_next_preview(
    db_url: str, simulator_session: SimHandle
) -> None:
    world = resolution_world(db_url, simulator_session, STRADDLE, accounts=1)
    today = to_ist(world.clock.now()).date()
    first = await preview(world, token="pv-before")
    assert [leg["freeze"] for leg in first["legs"]] == [1800, 1800]  # the seeded NIFTY row
    assert not any("instrument settings say" in w for leg in first["legs"] for w in leg["warnings"])
    with world.database.session() as s:
        nifty = s.scalar(
            select(TradingSetting).where(
                TradingSetting.user_id == world.user_id, TradingSetting.symbol == "NIFTY"
            )
        )
        assert nifty is not None
        s.add_all(
            [
                TradingSettingRevision(
                    setting_id=nifty.id,
                    effective_from=today,
                    lot_size=75,
                    freeze_quantity=1500,
                    max_lots_per_order=20,
                ),
                # Tomorrow's is not in force yet.
                TradingSettingRevision(
                    setting_id=nifty.id,
                    effective_from=date.fromordinal(today.toordinal() + 1),
                    lot_size=90,
                    freeze_quantity=900,
                    max_lots_per_order=10,
                ),
            ]
        )
    second = await preview(world, token="pv-after")
    assert [leg["freeze"] for leg in second["legs"]] == [1500, 1500]
    # The contract data's lot size wins at order time; the revision's differing lot is named.
    for leg in second["legs"]:
        assert (
            f"your instrument settings say lot size 75; the contract's is {leg['lot_size']}"
            in (leg["warnings"])
        )


@pytest.mark.parametrize(
    ("started_at", "freeze"),
    [
        (datetime(2026, 11, 24, 19, 0, tzinfo=UTC), 1300),  # 00:30 IST on 25 Nov: the revision's day
        (datetime(2026, 11, 24, 18, 0, tzinfo=UTC), 1800),  # 23:30 IST on 24 Nov: the day before it
    ],
)
def test_the_runs_ist_start_day_picks_the_revision_for_its_freeze(
    db_url: str, simulator_session: SimHandle, started_at: datetime, freeze: int
) -> None:
    world = make_world(db_url, simulator_session, accounts=1, legs=(("SELL", "25800PE"),))
    run_id, _ = world.plan()
    with world.database.session() as s:
        run = s.get(StrategyRun, run_id)
        assert run is not None
        run.started_at = started_at
        setting = TradingSetting(user_id=world.user_id, symbol="NIFTY", lot_size=65, freeze_quantity=1800)
        s.add(setting)
        s.flush()
        s.add(
            TradingSettingRevision(
                setting_id=setting.id,
                effective_from=date(2026, 11, 25),
                lot_size=65,
                freeze_quantity=1300,
                max_lots_per_order=20,
            )
        )
    with world.database.session_factory() as s:
        plan = load_plan(s, run_id, world.user_id)
    assert plan is not None
    assert [leg.settings_freeze for leg in plan.legs] == [freeze]
