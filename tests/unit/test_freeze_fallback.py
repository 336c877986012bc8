"""Review regression (issue 11): with no contract-data freeze in force, the orders slice by the user's
instrument-settings freeze exactly as the preview does (one shared ``freeze_limit``), instead of one
order above the freeze that the exchange rejects."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest

from algomirror.domain import resolution
from algomirror.domain.contract_specs import freeze_slices
from algomirror.domain.errors import NoRuleInForce
from algomirror.domain.resolution import contract_size, freeze_limit
from algomirror.engine.entry_records import slice_quantities
from tests.unit.test_engine_entry_rules import LEG, TODAY


@pytest.fixture
def no_contract_freeze(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(base: str, on: date) -> int:
        raise NoRuleInForce(f"no freeze quantity for {base} on {on}")

    monkeypatch.setattr(resolution, "freeze_qty", missing)


@pytest.mark.usefixtures("no_contract_freeze")
def test_orders_slice_by_the_settings_freeze_as_the_preview_does() -> None:
    leg = replace(LEG, planned_quantity=1950, settings_freeze=1800)
    size = contract_size("NIFTY", date(2026, 12, 1), TODAY, next_month=False, settings_freeze=1800)
    assert size.freeze == 1800
    preview = freeze_slices(1950, size.freeze, size.lot_size)  # what the preview shows
    assert preview == [1755, 195]
    assert slice_quantities(leg, TODAY) == preview
    assert slice_quantities(leg, TODAY, quantity=1950) == preview  # an exit of the same leg
    # No freeze anywhere: one order, in both.
    assert slice_quantities(replace(leg, settings_freeze=None), TODAY) == [1950]
    assert contract_size("NIFTY", date(2026, 12, 1), TODAY, next_month=False).freeze is None


def test_the_contract_freeze_wins_and_one_lot_or_less_means_unknown() -> None:
    assert freeze_limit("NIFTY", TODAY, 65, 900) == 1800  # contract data in force
    assert slice_quantities(replace(LEG, planned_quantity=1950, settings_freeze=900), TODAY) == [1755, 195]


@pytest.mark.usefixtures("no_contract_freeze")
def test_a_settings_freeze_of_one_lot_is_unknown() -> None:
    assert freeze_limit("NIFTY", TODAY, 65, 65) is None
    assert slice_quantities(replace(LEG, planned_quantity=1950, settings_freeze=65), TODAY) == [1950]
