"""ClientRegistry over real loopback HTTP: one pool per host, one scheduler per account, priorities
across callers of the same account, and engine-wide order suspension that sends nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import pytest

from algomirror.broker.client import RetryPolicy, Timeouts
from algomirror.broker.errors import AuthError, HaltError, OrdersSuspendedError
from algomirror.broker.ratelimit import Budget, RateLimits
from algomirror.broker.registry import ClientRegistry, Priority
from algomirror.broker.transport import HostPool, Reply, origin_of
from algomirror.broker.wire import Action, OrderRequest
from tests.broker_support import RawHttpServer
from tests.helpers import eventually_async

KEY_A = "registry-key-a-0123456789"
KEY_B = "registry-key-b-0123456789"


@pytest.fixture
async def raw() -> AsyncIterator[RawHttpServer]:
    server = await RawHttpServer().start()
    yield server
    await server.stop()


@pytest.fixture
async def registry() -> AsyncIterator[ClientRegistry]:
    async with ClientRegistry(
        timeouts=Timeouts(connect=1.0, read=2.0, order=2.0),
        retry=RetryPolicy(attempts=2, base=0.001, cap=0.002),
        limits=RateLimits.unlimited(),
    ) as shared:
        yield shared


def buy(symbol: str = "SBIN") -> OrderRequest:
    return OrderRequest(symbol=symbol, exchange="NSE", action=Action.BUY, quantity=1)


class GatedTime:
    """A fake monotonic clock for the rate schedulers whose sleeps return only once the test opens
    the gate (then they advance the clock): queued calls stay queued until then."""

    def __init__(self) -> None:
        self.now = 0.0
        self.open = asyncio.Event()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        await self.open.wait()
        self.now += max(seconds, 0.0)


# ---------------------------------------------------------------------------------- identity


async def test_client_when_same_account_host_and_key_returns_the_same_object(
    registry: ClientRegistry, raw: RawHttpServer
) -> None:
    first = registry.client(1, raw.url, KEY_A, name="acct-1")
    assert registry.client(1, raw.url + "/", KEY_A) is first
    assert registry.accounts == (1,)


async def test_client_when_key_or_host_changes_returns_new_client_on_the_same_scheduler(
    registry: ClientRegistry, raw: RawHttpServer
) -> None:
    first = registry.client(1, raw.url, KEY_A)
    rekeyed = registry.client(1, raw.url, KEY_B)
    moved = registry.client(1, f"http://localhost:{raw.port}", KEY_B)
    assert rekeyed is not first and moved is not rekeyed
    assert first.scheduler is rekeyed.scheduler is moved.scheduler is registry.scheduler(1)
    await moved.ping()
    assert raw.seen[-1][1]["apikey"] == KEY_B


async def test_client_when_key_rejected_then_replaced_new_client_is_not_halted(
    registry: ClientRegistry, raw: RawHttpServer
) -> None:
    raw.then("funds", "forbidden")
    with pytest.raises(AuthError):
        await registry.client(1, raw.url, KEY_A).funds()
    with pytest.raises(AuthError):  # same key: the same, stopped client; nothing is sent
        await registry.client(1, raw.url, KEY_A).ping()
    assert raw.endpoints() == ["funds"]
    replaced = registry.client(1, raw.url, KEY_B)
    assert replaced.halted is None
    assert (await replaced.ping()).broker == "raw"


async def test_clients_when_accounts_share_a_host_share_one_pool_but_not_a_scheduler(
    registry: ClientRegistry, raw: RawHttpServer
) -> None:
    one = registry.client(1, raw.url, KEY_A)
    two = registry.client(2, raw.url, KEY_B)
    await asyncio.gather(one.funds(), two.funds())
    assert registry.pool.hosts == (origin_of(raw.url),)
    assert one.scheduler is not two.scheduler


async def test_forget_when_account_removed_drops_its_client_and_scheduler(
    registry: ClientRegistry, raw: RawHttpServer
) -> None:
    first = registry.client(1, raw.url, KEY_A)
    scheduler = registry.scheduler(1)
    registry.forget(1)
    assert registry.accounts == ()
    again = registry.client(1, raw.url, KEY_A)
    assert again is not first
    assert again.scheduler is not scheduler


async def test_client_when_registry_closed_raises(raw: RawHttpServer) -> None:
    registry = ClientRegistry()
    await registry.aclose()
    with pytest.raises(RuntimeError):
        registry.client(1, raw.url, KEY_A)


def test_client_when_host_url_or_key_invalid_raises_value_error() -> None:
    registry = ClientRegistry()
    with pytest.raises(ValueError):
        registry.client(1, "not a url", KEY_A)
    with pytest.raises(ValueError):
        registry.client(1, "http://127.0.0.1:5000", "")


# ---------------------------------------------------------------------------------- suspension


async def test_suspend_orders_when_set_refuses_every_order_call_before_sending_and_reads_go_on(
    registry: ClientRegistry, raw: RawHttpServer
) -> None:
    one = registry.client(1, raw.url, KEY_A)
    two = registry.client(2, raw.url, KEY_B)
    registry.suspend_orders("engine lock lost")
    assert registry.orders_suspended == "engine lock lost"
    with pytest.raises(OrdersSuspendedError) as info:
        await one.place_order(buy(), strategy="S1")
    assert isinstance(info.value, HaltError)
    assert "engine lock lost" in info.value.message
    for refused in (
        two.cancel_order("25112200000009", strategy="S1"),
        two.place_smart_order(buy(), position_size=0, strategy="S1"),
        one.close_all_positions(strategy="S1"),
        one.call("placeorder", {"strategy": "S1", **buy().to_wire()}),
    ):
        with pytest.raises(OrdersSuspendedError):
            await refused
    assert (await one.funds()).availablecash is not None
    assert (await two.ping()).broker == "raw"
    assert raw.endpoints() == ["funds", "ping"]  # not one order call reached the server

    registry.resume_orders()
    assert registry.orders_suspended is None
    assert (await one.place_order(buy(), strategy="S1")).orderid == "25112200000001"
    assert raw.count("placeorder") == 1


async def test_suspend_orders_when_an_order_is_queued_for_its_rate_slot_refuses_it_unsent(
    raw: RawHttpServer,
) -> None:
    gate = GatedTime()
    async with ClientRegistry(
        limits=RateLimits(order=1, margin=0.0), clock=gate.clock, sleep=gate.sleep
    ) as registry:
        client = registry.client(1, raw.url, KEY_A)
        await client.place_order(buy(), strategy="S1")  # the order budget is now used for a window
        queued = asyncio.create_task(client.place_order(buy("INFY"), strategy="S1"))
        window = registry.scheduler(1).window(Budget.ORDER)
        assert window is not None

        async def is_queued() -> bool:
            return window.waiting == 1

        await eventually_async(is_queued, timeout=5, what="second order waits for its slot")
        registry.suspend_orders("engine lock lost")
        gate.open.set()
        with pytest.raises(OrdersSuspendedError):
            await queued
    assert raw.count("placeorder") == 1


# ---------------------------------------------------------------------------------- priorities


async def test_calls_when_queued_for_one_account_budget_go_out_exits_first(raw: RawHttpServer) -> None:
    """Engine exit, engine entry and a web cancel all wait for the same account's order budget."""
    gate = GatedTime()
    async with ClientRegistry(
        limits=RateLimits(order=1, margin=0.0), clock=gate.clock, sleep=gate.sleep
    ) as registry:
        # Two callers (say execution and the command processor) ask for the same account.
        execution = registry.client(7, raw.url, KEY_A)
        commands = registry.client(7, raw.url, KEY_A)
        assert execution is commands
        await execution.place_order(buy("FIRST"), strategy="S1")
        window = registry.scheduler(7).window(Budget.ORDER)
        assert window is not None
        tasks = []
        for count, make in enumerate(
            (
                lambda: execution.place_order(buy("ENTRY"), strategy="S1"),
                lambda: commands.cancel_order("25112200000005", strategy="S1"),
                lambda: execution.place_order(buy("EXIT"), strategy="S1", priority=Priority.EXIT),
            ),
            start=1,
        ):
            tasks.append(asyncio.create_task(make()))

            async def queued(expected: int = count) -> bool:
                return window.waiting == expected

            await eventually_async(queued, timeout=5, what=f"{count} calls queued")
        gate.open.set()
        await asyncio.gather(*tasks)
    sent = [(name, body.get("symbol") or body.get("orderid")) for name, body in raw.seen]
    assert sent == [
        ("placeorder", "FIRST"),
        ("placeorder", "EXIT"),
        ("placeorder", "ENTRY"),
        ("cancelorder", "25112200000005"),
    ]


async def test_read_when_priority_not_given_waits_behind_entries_of_its_budget(raw: RawHttpServer) -> None:
    gate = GatedTime()
    async with ClientRegistry(
        limits=RateLimits(other=1, margin=0.0), clock=gate.clock, sleep=gate.sleep
    ) as registry:
        client = registry.client(3, raw.url, KEY_A)
        await client.funds()
        window = registry.scheduler(3).window(Budget.OTHER)
        assert window is not None
        read = asyncio.create_task(client.funds())

        async def one_queued() -> bool:
            return window.waiting == 1

        await eventually_async(one_queued, timeout=5, what="read queued")
        # splitorder draws on the "other" budget; as an order call it defaults to ENTRY.
        split = asyncio.create_task(client.split_order(buy(), splitsize=1, strategy="S1"))

        async def two_queued() -> bool:
            return window.waiting == 2

        await eventually_async(two_queued, timeout=5, what="split queued")
        gate.open.set()
        await asyncio.gather(read, split, return_exceptions=True)
    assert raw.endpoints() == ["funds", "splitorder", "funds"]


class ObservedPool(HostPool):
    """The real aiohttp pool, recording which order calls got past every check in the client and
    were handed to the transport (so a test knows a call is now waiting inside the connector)."""

    def __init__(self, **kwargs: int) -> None:
        super().__init__(**kwargs)
        self.handed: list[str] = []

    async def post(
        self,
        url: str,
        body: bytes,
        *,
        connect: float,
        read: float,
        endpoint: str,
        order: bool,
        before_send: Callable[[], None] | None = None,
        order_lane: bool = False,
    ) -> Reply:
        self.handed.append(json.loads(body).get("symbol", endpoint))
        return await super().post(
            url,
            body,
            connect=connect,
            read=read,
            endpoint=endpoint,
            order=order,
            before_send=before_send,
            order_lane=order_lane,
        )


async def test_suspend_orders_when_an_order_waits_for_a_pooled_connection_refuses_it_unsent(
    raw: RawHttpServer,
) -> None:
    """The order passed every gate check in the client and waits in the connector behind another
    account's in-flight order; suspension while it waits must still stop it before a byte leaves."""
    raw.then("placeorder", "hold")
    pool = ObservedPool(max_order_connections=1)
    async with pool:
        registry = ClientRegistry(
            timeouts=Timeouts(connect=1.0, read=5.0, order=5.0), limits=RateLimits.unlimited(), pool=pool
        )
        busy = asyncio.create_task(registry.client(1, raw.url, KEY_A).place_order(buy("HELD"), strategy="S1"))

        async def held() -> bool:
            return raw.count("placeorder") == 1

        await eventually_async(held, timeout=5, what="the first order occupies the only order connection")
        waiting = asyncio.create_task(
            registry.client(2, raw.url, KEY_B).place_order(buy("LATE"), strategy="S1", priority=Priority.EXIT)
        )

        async def handed() -> bool:
            return pool.handed == ["HELD", "LATE"]

        await eventually_async(handed, timeout=5, what="the second order is inside the transport")
        registry.suspend_orders("engine lock lost")
        raw.release()
        assert (await busy).orderid == "25112200000001"  # it was sent before the suspension
        with pytest.raises(OrdersSuspendedError) as info:
            await waiting
        assert "engine lock lost" in info.value.message
        assert [body.get("symbol") for _, body in raw.seen] == ["HELD"]

        # The refused call gave its connection back: with one order connection, the next order flows.
        registry.resume_orders()
        again = registry.client(2, raw.url, KEY_B)
        assert (await asyncio.wait_for(again.place_order(buy("AFTER"), strategy="S1"), 5)).orderid
        assert [body.get("symbol") for _, body in raw.seen] == ["HELD", "AFTER"]
        await registry.aclose()


async def test_order_when_the_read_pool_is_full_of_held_reads_is_sent_without_waiting(
    raw: RawHttpServer,
) -> None:
    raw.then("funds", "hold", "hold")
    async with HostPool(max_connections=2, max_order_connections=1) as pool:
        registry = ClientRegistry(
            timeouts=Timeouts(connect=1.0, read=10.0, order=2.0), limits=RateLimits.unlimited(), pool=pool
        )
        reads = [asyncio.create_task(registry.client(n, raw.url, KEY_A).funds()) for n in (1, 2)]

        async def reads_held() -> bool:
            return raw.count("funds") == 2

        await eventually_async(reads_held, timeout=5, what="both read connections busy")
        exit_order = registry.client(3, raw.url, KEY_B).place_order(
            buy("EXIT"), strategy="S1", priority=Priority.EXIT
        )
        assert (await exit_order).orderid == "25112200000001"
        assert raw.count("funds") == 2  # the reads are still held: the exit did not queue behind them
        raw.release()
        for read in reads:
            assert (await read).availablecash is not None
        await registry.aclose()
