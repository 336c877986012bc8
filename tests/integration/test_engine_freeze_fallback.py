"""Review regression (issue 11): a run's legs carry the user's instrument-settings freeze, the fallback
the orders slice by when no contract-data freeze is in force (as the preview), on both databases."""

from __future__ import annotations

from algomirror.db.models import TradingSetting
from algomirror.engine.entry_records import load_plan
from tests.integration.execution_support import make_world
from tests.sim_fixtures import SimHandle


def test_load_plan_carries_the_settings_freeze(db_url: str, simulator_session: SimHandle) -> None:
    world = make_world(db_url, simulator_session, accounts=1, legs=(("SELL", "25800PE"),))
    run_id, _ = world.plan()
    with world.database.session() as session:
        session.add(TradingSetting(user_id=world.user_id, symbol="NIFTY", lot_size=65, freeze_quantity=1300))
    with world.database.session_factory() as session:
        plan = load_plan(session, run_id, world.user_id)
    assert plan is not None
    assert [leg.settings_freeze for leg in plan.legs] == [1300]
