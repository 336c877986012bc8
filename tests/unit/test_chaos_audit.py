"""The chaos auditor on constructed ledgers and rows (a migrated SQLite file): each kind of finding, and
the clean case it differs from.

The clean scene: one account, one run of a hedged short (BUY 50 X, SELL 50 Y), entered hedge first, both
legs exited, realised P&L recorded as the exchange's (−500 on the hedge, +500 on the short)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from algomirror.chaos.audit import (
    AuditReport,
    Ledger,
    LedgerOrder,
    LedgerTrade,
    RunStats,
    audit,
    ledger_from_json,
    render,
)
from algomirror.db.models import (
    EngineAlert,
    EngineCommand,
    OrderIntent,
    Strategy,
    StrategyExecution,
    StrategyLeg,
    StrategyRun,
)
from algomirror.db.session import Database
from tests.factories import make_account, make_user

T0 = datetime(2026, 11, 25, 5, 0, tzinfo=UTC)
KEY = "k" * 64
X = "NIFTY01DEC2625500PE"
Y = "NIFTY01DEC2625800PE"


@pytest.fixture
def database(sqlite_template: Path, tmp_path: Path) -> Iterator[Database]:
    path = tmp_path / "audit.db"
    shutil.copyfile(sqlite_template, path)
    db = Database(f"sqlite:///{path}")
    try:
        yield db
    finally:
        db.dispose()


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


@dataclass
class Scene:
    """Rows in the database and the exchange's ledger, built together."""

    database: Database
    account_id: int = 0
    user_id: int = 0
    strategy_id: int = 0
    run_id: int = 0
    leg_ids: list[int] = field(default_factory=list)
    orders: list[LedgerOrder] = field(default_factory=list)
    trades: list[LedgerTrade] = field(default_factory=list)

    @property
    def tag(self) -> str:
        return f"AM-S{self.strategy_id}"

    def ledger(self) -> Ledger:
        return Ledger(tuple(self.orders), tuple(self.trades))

    def audit(self, *, final: bool = True) -> AuditReport:
        return audit(self.database, self.ledger(), account_keys={self.account_id: KEY}, final=final)

    def execution(self, leg: int, symbol: str, *, status: str = "exited", pnl: str | None = None) -> int:
        with self.database.session() as session:
            row = StrategyExecution(
                strategy_id=self.strategy_id,
                account_id=self.account_id,
                leg_id=self.leg_ids[leg],
                run_id=self.run_id,
                symbol=symbol,
                exchange="NFO",
                product="NRML",
                planned_quantity=50,
                total_quantity=50,
                status=status,
                realized_pnl=None if pnl is None else Decimal(pnl),
            )
            session.add(row)
            session.flush()
            return row.id

    def intent(
        self,
        key: str,
        execution_id: int | None,
        symbol: str,
        side: str,
        quantity: int,
        *,
        purpose: str = "entry",
        order_id: str | None = None,
        states: tuple[str, ...] = ("sent", "complete"),
    ) -> None:
        with self.database.session() as session:
            row = OrderIntent(
                key=key,
                execution_id=execution_id,
                account_id=self.account_id,
                purpose=purpose,
                symbol=symbol,
                exchange="NFO",
                product="NRML",
                side=side,
                quantity=quantity,
                strategy_tag=self.tag,
                state="created",
            )
            session.add(row)
            session.flush()
            for state in states:  # forward only, one write each, as the journal moves it
                row.state = state
                session.flush()
            row.order_id = order_id

    def order(
        self,
        orderid: str,
        symbol: str,
        action: str,
        quantity: int,
        created: int,
        *,
        fills: tuple[tuple[int, int, str], ...] = (),
        status: str | None = None,
        tag: str | None = None,
    ) -> None:
        """An exchange order created at ``T0 + created`` s; ``fills``: (seconds, quantity, price)."""
        filled = sum(q for _, q, _ in fills)
        value = sum((Decimal(p) * q for _, q, p in fills), Decimal(0))
        self.orders.append(
            LedgerOrder(
                account_key=KEY,
                orderid=orderid,
                strategy=self.tag if tag is None else tag,
                symbol=symbol,
                exchange="NFO",
                product="NRML",
                action=action,
                quantity=quantity,
                filled_quantity=filled,
                average_price=(value / filled).quantize(Decimal("0.01")) if filled else None,
                status=status or ("complete" if filled == quantity else "open"),
                created=at(created),
            )
        )
        for n, (when, qty, price) in enumerate(fills):
            self.trades.append(
                LedgerTrade(
                    KEY,
                    f"T-{orderid}-{n}",
                    orderid,
                    symbol,
                    "NFO",
                    "NRML",
                    action,
                    qty,
                    Decimal(price),
                    at(when),
                )
            )

    def alert(self, **names: int) -> None:
        with self.database.session() as session:
            session.add(EngineAlert(user_id=self.user_id, kind="exit_failed", title="look", **names))

    def set_run(self, **values: object) -> None:
        with self.database.session() as session:
            run = session.get(StrategyRun, self.run_id)
            assert run is not None
            for name, value in values.items():
                setattr(run, name, value)


def build(database: Database, *, exits: bool = True) -> tuple[Scene, int, int]:
    """The clean scene (see the module docstring); returns it with the hedge's and the short's ids."""
    scene = Scene(database)
    with database.session() as session:
        user = make_user(session, "auditor")
        scene.user_id = user.id
        scene.account_id = make_account(session, user.id, "Paper 1").id
        strategy = Strategy(user_id=user.id, name="Hedged")
        session.add(strategy)
        session.flush()
        scene.strategy_id = strategy.id
        for n, action in enumerate(("BUY", "SELL"), start=1):
            leg = StrategyLeg(strategy_id=strategy.id, leg_number=n, action=action, order_type="MARKET")
            session.add(leg)
            session.flush()
            scene.leg_ids.append(leg.id)
        run = StrategyRun(strategy_id=strategy.id, status="closed" if exits else "active", started_at=T0)
        if exits:
            run.ended_at = at(60)
            run.final_pnl = Decimal("0.00")
        session.add(run)
        session.flush()
        scene.run_id = run.id
    status = "exited" if exits else "active"
    hedge = scene.execution(0, X, status=status, pnl="-500.00" if exits else None)
    short = scene.execution(1, Y, status=status, pnl="500.00" if exits else None)
    scene.intent(f"exec:{hedge}:entry:1", hedge, X, "BUY", 50, order_id="E1")
    scene.order("E1", X, "BUY", 50, 1, fills=((2, 50, "100.00"),))
    scene.intent(f"exec:{short}:entry:1", short, Y, "SELL", 50, order_id="E2")
    scene.order("E2", Y, "SELL", 50, 3, fills=((3, 50, "80.00"),))
    if exits:
        scene.intent(f"exec:{short}:exit:1:1", short, Y, "BUY", 50, purpose="exit", order_id="X1")
        scene.order("X1", Y, "BUY", 50, 10, fills=((10, 50, "70.00"),))
        scene.intent(f"exec:{hedge}:exit:1:1", hedge, X, "SELL", 50, purpose="exit", order_id="X2")
        scene.order("X2", X, "SELL", 50, 11, fills=((11, 50, "90.00"),))
    return scene, hedge, short


def test_a_clean_run_has_no_findings_at_any_instant(database: Database) -> None:
    scene, _, _ = build(database)
    for final in (False, True):
        report = scene.audit(final=final)
        assert report.defects == 0, report
        assert report.ok and report.orders == 4


def test_an_order_of_another_key_or_without_our_tag_is_not_ours_to_account_for(database: Database) -> None:
    scene, _, _ = build(database)
    scene.order("AUTO1", X, "SELL", 50, 20, fills=((20, 50, "90.00"),), tag="AUTO_SQUARE_OFF")
    scene.orders.append(replace(scene.orders[0], account_key="other", orderid="E9"))
    report = scene.audit()
    assert report.ok and report.orders == 4


def test_a_tagged_order_no_intent_owns_is_a_duplicate(database: Database) -> None:
    scene, _, _ = build(database)
    scene.order("D1", Y, "BUY", 50, 12, status="rejected")
    report = scene.audit(final=False)
    assert (
        len(report.duplicates) == 1
        and "D1" in report.duplicates[0]
        and "owned by no intent" in report.duplicates[0]
    )
    assert report.orders == 5 and not report.ok


def test_an_intent_sent_without_an_order_id_may_own_one_order_while_the_engine_works(
    database: Database,
) -> None:
    scene, hedge, _ = build(database, exits=False)
    scene.intent(f"exec:{hedge}:exit:1:1", hedge, X, "SELL", 50, purpose="exit", states=("sent",))
    scene.order("X2", X, "SELL", 50, 11, fills=((11, 50, "90.00"),))
    assert scene.audit(final=False).duplicates == []
    # At the end nothing may be pending: the order is no intent's (and the intent is left sent).
    final = scene.audit(final=True)
    assert len(final.duplicates) == 1 and "X2" in final.duplicates[0]
    assert any("left sent" in line for line in final.unexplained)
    # Two orders competing for the one intent: one of them is a second send.
    scene.order("X3", X, "SELL", 50, 12, status="rejected")
    report = scene.audit(final=False)
    assert len(report.duplicates) == 1 and "X2 and X3" in report.duplicates[0]


def test_entry_fills_above_the_intended_quantity_are_a_duplicate(database: Database) -> None:
    scene, hedge, _ = build(database, exits=False)
    scene.intent(f"exec:{hedge}:entry:2", hedge, X, "BUY", 50, order_id="E3")
    scene.order("E3", X, "BUY", 50, 4, fills=((4, 50, "100.00"),))
    report = scene.audit(final=False)
    assert len(report.duplicates) == 1 and "entry filled 100" in report.duplicates[0]


def test_an_exit_that_oversells_is_a_duplicate_and_a_reversed_position(database: Database) -> None:
    scene, hedge, _ = build(database, exits=False)
    scene.intent(f"exec:{hedge}:exit:1:1", hedge, X, "SELL", 50, purpose="exit", order_id="X2")
    scene.order("X2", X, "SELL", 50, 11, fills=((11, 50, "90.00"),))
    scene.intent(f"exec:{hedge}:exit:2:1", hedge, X, "SELL", 30, purpose="exit", order_id="X4")
    scene.order("X4", X, "SELL", 30, 12, fills=((12, 30, "90.00"),))
    report = scene.audit(final=False)
    assert len(report.duplicates) == 1 and "exit filled 80" in report.duplicates[0]
    assert len(report.reversed_positions) == 1
    assert "went to -30" in report.reversed_positions[0] and "X4" in report.reversed_positions[0]


def test_a_stray_order_that_oversells_reverses_the_run_it_came_after(database: Database) -> None:
    scene, _, _ = build(database)
    scene.order("D2", Y, "BUY", 20, 30, fills=((30, 20, "70.00"),))
    report = scene.audit(final=False)
    assert len(report.duplicates) == 1
    assert len(report.reversed_positions) == 1
    assert (
        f"run {scene.run_id}" in report.reversed_positions[0] and "went to 20" in report.reversed_positions[0]
    )


def test_an_entry_sell_sent_before_the_buy_filled_breaks_buy_first(database: Database) -> None:
    scene, _, _ = build(database, exits=False)
    # The BUY filled at +2 s; a SELL created at +1 s came first.
    scene.orders = [o for o in scene.orders if o.orderid != "E2"]
    scene.trades = [t for t in scene.trades if t.orderid != "E2"]
    scene.order("E2", Y, "SELL", 50, 1, fills=((1, 50, "80.00"),))
    report = scene.audit(final=False)
    assert len(report.buy_first_violations) == 1
    assert "E2" in report.buy_first_violations[0] and "E1" in report.buy_first_violations[0]
    assert report.duplicates == [] and report.reversed_positions == []


def test_an_entry_sell_while_the_buy_still_works_breaks_buy_first(database: Database) -> None:
    scene, _, _ = build(database, exits=False)
    scene.orders = [
        replace(o, status="open", filled_quantity=0) if o.orderid == "E1" else o for o in scene.orders
    ]
    scene.trades = [t for t in scene.trades if t.orderid != "E1"]
    report = scene.audit(final=False)
    assert len(report.buy_first_violations) == 1 and "still working" in report.buy_first_violations[0]


def test_an_open_position_at_the_end_is_a_missed_exit_unless_in_error_with_an_alert(
    database: Database,
) -> None:
    scene, hedge, short = build(database, exits=False)
    scene.set_run(status="closed", ended_at=at(60))
    report = scene.audit(final=True)
    assert len(report.missed_exits) == 2
    assert all("still open at the exchange" in line for line in report.missed_exits)
    # Not checked while the engine may still be working.
    assert scene.audit(final=False).missed_exits == []

    with database.session() as session:
        for execution_id in (hedge, short):
            row = session.get(StrategyExecution, execution_id)
            assert row is not None
            row.status = "error"
    report = scene.audit(final=True)
    assert len(report.missed_exits) == 2
    assert len([u for u in report.unexplained if "in error with no alert" in u]) == 2

    scene.alert(execution_id=hedge)
    scene.alert(account_id=scene.account_id)
    report = scene.audit(final=True)
    assert report.missed_exits == [] and not any("in error" in u for u in report.unexplained)


def test_realised_pnl_off_by_a_paisa_is_a_mismatch(database: Database) -> None:
    scene, hedge, _ = build(database)
    with database.session() as session:
        row = session.get(StrategyExecution, hedge)
        assert row is not None
        row.realized_pnl = Decimal("-500.01")
    report = scene.audit(final=True)
    assert report.pnl_mismatches == [
        f"account {scene.account_id} run {scene.run_id} execution {hedge}: exchange realised -500.00, "
        "AlgoMirror -500.01"
    ]
    assert scene.audit(final=False).pnl_mismatches == []


def test_a_run_total_unlike_the_exchanges_is_a_mismatch(database: Database) -> None:
    scene, _, _ = build(database)
    scene.set_run(final_pnl=Decimal("10.00"))
    report = scene.audit(final=True)
    assert report.pnl_mismatches == [
        f"run {scene.run_id}: exchange realised 0.00, AlgoMirror final P&L 10.00"
    ]


def test_an_exited_leg_with_no_recorded_pnl_is_a_mismatch(database: Database) -> None:
    scene, _, short = build(database)
    with database.session() as session:
        row = session.get(StrategyExecution, short)
        assert row is not None
        row.realized_pnl = None
    report = scene.audit(final=True)
    assert any("exchange realised 500.00, AlgoMirror recorded none" in line for line in report.pnl_mismatches)


def test_in_between_states_at_the_end_are_unexplained_unless_an_alert_says_why(database: Database) -> None:
    scene, hedge, short = build(database)
    scene.intent(
        f"exec:{hedge}:exit:2:1", hedge, X, "SELL", 50, purpose="exit", states=("sent", "acknowledged")
    )
    with database.session() as session:
        row = session.get(StrategyExecution, short)
        assert row is not None
        row.status = "exiting"
        session.add(EngineCommand(user_id=scene.user_id, kind="exit_run", token="t-1", status="running"))
        session.add(EngineCommand(user_id=scene.user_id, kind="exit_run", token="t-2", status="done"))
    scene.set_run(status="exiting", ended_at=None, final_pnl=None)
    report = scene.audit(final=True)
    joined = "\n".join(report.unexplained)
    assert len(report.unexplained) == 4, joined
    assert f"exec:{hedge}:exit:2:1: left acknowledged" in joined
    assert f"execution {short}: left exiting" in joined
    assert f"run {scene.run_id} (strategy {scene.strategy_id}): left exiting" in joined
    assert "(exit_run): left running" in joined
    assert scene.audit(final=False).unexplained == []

    scene.alert(run_id=scene.run_id)
    report = scene.audit(final=True)
    # The run's alert explains the run, its executions and their intents; a command is never explained.
    assert len(report.unexplained) == 1 and "engine command" in report.unexplained[0]


def test_an_active_leg_flat_at_the_exchange_is_unexplained(database: Database) -> None:
    scene, hedge, _ = build(database)
    with database.session() as session:
        row = session.get(StrategyExecution, hedge)
        assert row is not None
        row.status = "active"
    report = scene.audit(final=True)
    assert report.unexplained == [
        f"account {scene.account_id} run {scene.run_id} execution {hedge}: "
        "active in AlgoMirror, flat at the exchange"
    ]


def test_render_lists_findings_and_ends_with_the_summary_line(database: Database) -> None:
    scene, _, _ = build(database)
    scene.order("D1", Y, "BUY", 50, 12, status="rejected")
    report = scene.audit(final=True)
    stats = RunStats(
        seed=7,
        database="sqlite",
        cycles=100,
        strategy_account_cycles=300,
        kills=5,
        kills_by_point={"after_send": 3, "after_intent": 2},
        faults={"http_429": 4, "timeout_after": 2},
        orders=report.orders,
        seconds=12.5,
    )
    text = render(report, stats)
    lines = text.splitlines()
    assert lines[-1] == (
        "chaos: 100 cycles, 5 kills, duplicates 1, missed exits 0, reversed 0, pnl mismatches 0, "
        "unexplained 0"
    )
    assert "seed 7" in lines[0]
    assert any(line.split() == ["after_send", "3"] for line in lines)
    assert any(line.split() == ["faults", "6"] for line in lines)
    assert any(line.strip().startswith("- ") and "D1" in line for line in lines)


def test_a_ledger_reads_back_from_its_json() -> None:
    payload = {
        "orders": [
            {
                "account_key": KEY,
                "orderid": "1",
                "strategy": "AM-S1",
                "symbol": X,
                "exchange": "NFO",
                "product": "NRML",
                "action": "BUY",
                "quantity": 50,
                "filled_quantity": 50,
                "average_price": "100.05",
                "status": "complete",
                "created": "2026-11-25T05:00:01+00:00",
            }
        ],
        "trades": [
            {
                "account_key": KEY,
                "tradeid": "T1",
                "orderid": "1",
                "symbol": X,
                "exchange": "NFO",
                "product": "NRML",
                "action": "BUY",
                "quantity": 50,
                "price": "100.05",
                "timestamp": "2026-11-25T10:30:01+05:30",
            }
        ],
    }
    ledger = ledger_from_json(payload)
    assert ledger.orders[0].average_price == Decimal("100.05") and ledger.orders[0].created == at(1)
    assert ledger.trades[0].timestamp == at(1) and ledger.trades[0].timestamp.tzinfo == UTC
    payload["trades"][0]["timestamp"] = "2026-11-25T10:30:01"
    with pytest.raises(ValueError, match="naive"):
        ledger_from_json(payload)
    with pytest.raises(ValueError, match="not a ledger"):
        ledger_from_json({"orders": []})
