"""The risk engine's outputs for pages and other components, on SQLite and
PostgreSQL with a run entered on the paper exchange over loopback: live ``snapshot`` events on an
in-process bus (payload and throttle, driven by an injected monotonic timer — no sleeps),
``run_pnl_samples`` rows written by the persist path at most every ``sample_seconds`` of the market clock
(and not again after a restart), ``RiskEngine.account_open_pnl``.

The engine's loop is not started: the tests call ``load``, ``marks.update`` (the tick path) and
``sweep``/``publish_snapshots`` themselves, so every step is deterministic.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from algomirror.db.models import RunPnlSample
from algomirror.engine.marks import Mark, MarkBook
from algomirror.engine.risk import RiskConfig, RiskEngine
from algomirror.live import InProcessBus, Subscription
from tests.helpers import eventually_async
from tests.integration.execution_support import World, executor_of, make_world
from tests.sim_fixtures import SimHandle

STRANGLE = (("SELL", "26200CE"), ("SELL", "25800PE"))
QTY = 65
PAISA = Decimal("0.01")


class FakeTimer:
    """Monotonic seconds that move only when told to (steps are binary fractions: exact sums)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


async def entered(world: World) -> int:
    run_id, _ = world.plan(quantity=QTY)
    async with executor_of(world) as executor:
        assert await executor.process_once() == 1
    assert {e.status for e in world.executions(run_id)} == {"active"}
    return run_id


def tick(book: MarkBook, world: World, symbol: str, price: Decimal) -> None:
    assert book.update(symbol, "NFO", Mark(ltp=price, at=world.clock.now(), source="rest", account_id=None))


def drain(sub: Subscription) -> list[tuple[str, dict[str, Any]]]:
    out = []
    while (message := sub.get(0)) is not None:
        out.append((message.event, message.data))
    return out


def snapshots(sub: Subscription) -> list[dict[str, Any]]:
    return [data for event, data in drain(sub) if event == "snapshot"]


def entry_prices(world: World, run_id: int) -> dict[tuple[int, int], Decimal]:
    result = {}
    for e in world.executions(run_id):
        assert e.entry_price is not None
        result[(world.leg_ids.index(e.leg_id), world.account_ids.index(e.account_id))] = e.entry_price
    return result


async def test_snapshot_payload_throttle_and_heartbeat(db_url: str, simulator_session: SimHandle) -> None:
    world = make_world(db_url, simulator_session, accounts=2, legs=STRANGLE)
    run_id = await entered(world)
    ce, pe = world.leg_symbols
    price = entry_prices(world, run_id)
    bus = InProcessBus()
    sub = bus.subscribe([f"run:{run_id}:risk"])
    timer = FakeTimer()
    book = MarkBook()
    risk = RiskEngine(world.database, book, bus=bus, clock=world.clock, timer=timer)
    book.add_listener(risk.on_mark)  # what ``run`` does; the loop itself is not started
    await risk.load()

    assert risk.publish_snapshots() == 1  # a run never shown is due at once
    [first] = snapshots(sub)
    assert first["run_id"] == run_id and first["pnl"] is None
    assert first["unknown_reason"] == f"no usable price for {pe}, {ce}"
    assert first["scope"] == "aggregate" and first["trailing_armed"] is False
    assert [x["ltp"] for x in first["executions"]] == [None] * 4
    assert risk.publish_snapshots() == 0

    tick(book, world, ce, price[(0, 0)])  # marks changed, but within 0.25 s of the last one
    timer.now += 0.125
    tick(book, world, pe, price[(1, 0)])
    assert snapshots(sub) == [] and risk.publish_snapshots() == 0
    timer.now += 0.125  # 0.25 s since the last snapshot: the next tick publishes at once
    tick(book, world, ce, price[(0, 0)] + 1)  # −₹65 on each account's short call
    [live] = snapshots(sub)
    rows = {e.id: e for e in world.executions(run_id)}
    ltp = {ce: price[(0, 0)] + 1, pe: price[(1, 0)]}
    by_execution = {
        i: (-(ltp[str(r.symbol)] - (r.entry_price or 0)) * QTY).quantize(PAISA) for i, r in rows.items()
    }
    by_account = {
        a: sum(v for i, v in by_execution.items() if rows[i].account_id == a) for a in world.account_ids
    }
    assert live["pnl"] == str(sum(by_execution.values()))
    assert live["unknown_reason"] is None and live["at"] == world.clock.now().isoformat()
    assert live["accounts"] == [
        {"account_id": a, "pnl": str(by_account[a])} for a in sorted(world.account_ids)
    ]
    assert [x["id"] for x in live["executions"]] == sorted(rows)
    for x in live["executions"]:
        row = rows[x["id"]]
        assert x["account_id"] == row.account_id and x["leg_id"] == row.leg_id
        assert (x["symbol"], x["exchange"], x["side"], x["open_qty"]) == (row.symbol, "NFO", "SELL", QTY)
        assert x["entry_price"] == str(row.entry_price) and x["ltp"] == str(ltp[str(row.symbol)])
        assert (x["source"], x["age_ms"], x["status"]) == ("rest", 0, "active")
        assert x["mark_at"] == world.clock.now().isoformat()
        assert x["pnl"] == str(by_execution[row.id])
        assert x["stop_loss"] is None and x["target"] is None

    timer.now += 0.125
    tick(book, world, ce, price[(0, 0)] + 2)  # throttled ...
    assert snapshots(sub) == []
    timer.now += 0.125
    assert risk.publish_snapshots() == 1  # ... and published by the next sweep once 0.25 s passed
    assert Decimal(snapshots(sub)[0]["pnl"]) < Decimal(live["pnl"])
    timer.now += 1.75
    assert risk.publish_snapshots() == 0  # nothing changed: no snapshot before the 2 s heartbeat
    timer.now += 0.25
    assert risk.publish_snapshots() == 1
    [beat] = snapshots(sub)
    assert beat["run_id"] == run_id and beat["pnl"] is not None
    world.clock.advance(timedelta(seconds=6))  # the REST marks are now too old to act on
    timer.now += 2
    assert risk.publish_snapshots() == 1
    [stale] = snapshots(sub)
    assert stale["pnl"] is None and stale["unknown_reason"] == f"no usable price for {pe}, {ce}"
    assert {x["age_ms"] for x in stale["executions"]} == {6000}
    assert all(x["pnl"] is None and x["ltp"] is not None for x in stale["executions"])
    bus.close()


async def test_snapshot_shows_the_trailing_state_and_limits(
    db_url: str, simulator_session: SimHandle
) -> None:
    world = make_world(db_url, simulator_session, accounts=1, legs=STRANGLE)
    run_id = await entered(world)
    from tests.integration.test_risk_engine import configure

    configure(
        world,
        max_loss=Decimal("5000"),
        max_profit=Decimal("8000"),
        trailing_sl=Decimal("3000"),
        trailing_sl_type="amount",
        risk_scope="per_account",
    )
    bus = InProcessBus()
    sub = bus.subscribe([f"run:{run_id}:risk"])
    risk = RiskEngine(world.database, MarkBook(), bus=bus, clock=world.clock, timer=FakeTimer())
    await risk.load()
    assert risk.publish_snapshots() == 1
    [snap] = snapshots(sub)
    assert (snap["max_loss"], snap["max_profit"], snap["scope"]) == ("5000.00", "8000.00", "per_account")
    assert snap["trailing_armed"] is True
    assert (snap["trailing_initial"], snap["peak"], snap["trailing_stop"]) == ("-3000.00", "0.00", "-3000.00")
    bus.close()


async def test_pnl_samples_every_sample_seconds_and_none_while_unknown(
    db_url: str, simulator_session: SimHandle
) -> None:
    world = make_world(db_url, simulator_session, accounts=1, legs=STRANGLE)
    run_id = await entered(world)
    ce, pe = world.leg_symbols
    price = entry_prices(world, run_id)
    timer = FakeTimer()
    book = MarkBook(rest_max_age=60)
    config = RiskConfig(persist_seconds=5, sample_seconds=10, reload_seconds=3600)
    risk = RiskEngine(world.database, book, clock=world.clock, timer=timer, config=config)
    await risk.load()

    await risk.sweep()  # P&L unknown (no marks): no sample
    assert samples(world, run_id) == []
    tick(book, world, ce, price[(0, 0)] + 1)
    tick(book, world, pe, price[(1, 0)])
    t0 = world.clock.now()
    timer.now += 5
    await risk.sweep()
    assert samples(world, run_id) == [(t0, Decimal(-QTY))]
    for _ in range(3):  # persist runs every 5 s (timer); a sample needs 10 s of the market clock
        world.clock.advance(timedelta(seconds=3))
        timer.now += 5
        await risk.sweep()
    assert len(samples(world, run_id)) == 1
    world.clock.advance(timedelta(seconds=3))
    timer.now += 5
    await risk.sweep()
    assert samples(world, run_id) == [(t0, Decimal(-QTY)), (t0 + timedelta(seconds=12), Decimal(-QTY))]

    # A restart at the same instant writes no second row for it (nor fails on the unique key) ...
    again = RiskEngine(world.database, book, clock=world.clock, timer=timer, config=config)
    await again.load()
    timer.now += 5
    await again.sweep()
    assert len(samples(world, run_id)) == 2
    world.clock.advance(timedelta(seconds=10))
    tick(book, world, ce, price[(0, 0)] + 2)
    timer.now += 5
    await again.sweep()
    assert samples(world, run_id)[-1] == (t0 + timedelta(seconds=22), Decimal(-2 * QTY))
    # ... and an unknown P&L (the marks grew too old) is never sampled, not even as 0.
    world.clock.advance(timedelta(seconds=61))
    timer.now += 5
    await again.sweep()
    assert len(samples(world, run_id)) == 3


async def test_account_open_pnl(db_url: str, simulator_session: SimHandle) -> None:
    world = make_world(db_url, simulator_session, accounts=2, legs=STRANGLE)
    run_id = await entered(world)
    ce, pe = world.leg_symbols
    price = entry_prices(world, run_id)
    book = MarkBook()
    risk = RiskEngine(world.database, book, clock=world.clock, timer=FakeTimer())
    first, second = world.account_ids
    assert risk.account_open_pnl(first) is None  # not loaded yet: unknown, never 0
    await risk.load()
    assert risk.account_open_pnl(first) is None  # no marks
    assert risk.account_open_pnl(10_000) == Decimal("0.00")  # holds nothing in an open run
    tick(book, world, ce, price[(0, 0)] + 1)
    assert risk.account_open_pnl(first) is None  # the put still has no price
    tick(book, world, pe, price[(1, 0)] - 2)
    rows = world.executions(run_id)
    ltp = {ce: price[(0, 0)] + 1, pe: price[(1, 0)] - 2}
    for account in (first, second):
        expected = sum(
            (-(ltp[str(r.symbol)] - (r.entry_price or 0)) * QTY).quantize(PAISA)
            for r in rows
            if r.account_id == account
        ) + Decimal(0)
        assert risk.account_open_pnl(account) == expected
    world.clock.advance(timedelta(seconds=6))  # REST marks older than 5 s are not usable
    assert risk.account_open_pnl(second) is None


def samples(world: World, run_id: int) -> list[tuple[Any, Decimal]]:
    with world.database.session_factory() as session:
        return [
            (r.at, r.pnl)
            for r in session.scalars(
                select(RunPnlSample).where(RunPnlSample.run_id == run_id).order_by(RunPnlSample.at)
            )
        ]


async def test_a_throttled_change_is_published_once_its_throttle_passed_without_a_sweep(
    db_url: str, simulator_session: SimHandle
) -> None:
    world = make_world(db_url, simulator_session, accounts=1, legs=STRANGLE)
    run_id = await entered(world)
    ce, pe = world.leg_symbols
    price = entry_prices(world, run_id)
    bus = InProcessBus()
    sub = bus.subscribe([f"run:{run_id}:risk"])
    book = MarkBook()
    risk = RiskEngine(world.database, book, bus=bus, clock=world.clock)  # the real monotonic timer
    book.add_listener(risk.on_mark)
    await risk.load()
    assert risk.publish_snapshots() == 1
    first_at = risk.runs[run_id].snapshot_at
    assert first_at is not None and snapshots(sub)[0]["pnl"] is None
    tick(book, world, pe, price[(1, 0)])
    tick(book, world, ce, price[(0, 0)] + 1)  # within 0.25 s of the first: held back, then flushed

    seen: list[dict[str, Any]] = []

    async def flushed() -> bool:
        seen.extend(snapshots(sub))
        return any(x["pnl"] == "-65.00" for x in seen)

    await eventually_async(flushed, timeout=5, what="the held-back snapshot")
    # No sweep ran: the timer flushed it. (On a slow machine the first tick may have published at once.)
    assert len(seen) <= 2 and seen[-1]["pnl"] == "-65.00"
    at = risk.runs[run_id].snapshot_at
    assert at is not None and at - first_at >= 0.25
    bus.close()
