"""What the broker says about one leg before an exit is tried again (PRODUCT §6.7 step 6).

A rejected or unfilled exit attempt is never simply re-sent. Its owner first reads, at EXIT priority
through the account's client, the account's positionbook (net quantity of the symbol + product), its
orderbook (working orders with our strategy tag; our tagged exit orders no intent owns, e.g. a reply
that was lost) and its tradebook (fills of such orders), and sends only what is still open:

* a working order of ours on the symbol → wait, send nothing;
* otherwise ``min(our open quantity − fills of our tag no intent owns, the broker's open quantity in
  the leg's direction)``: never more than either says, so an exit never reverses a position, and an
  order that filled unseen is never sent twice.

A failed read (any :class:`~algomirror.broker.errors.BrokerError`) means the leg cannot be verified:
the caller waits and reads again; nothing is sent on a guess.
"""

from __future__ import annotations

from dataclasses import dataclass

from algomirror.broker.client import OpenAlgoClient
from algomirror.broker.errors import MalformedResponseError
from algomirror.broker.registry import Priority
from algomirror.broker.wire import BrokerOrder
from algomirror.broker.wire.books import BrokerTrade, Orderbook, Positionbook


@dataclass(frozen=True, slots=True)
class BrokerView:
    """The broker's word on one leg: ``net`` the signed net quantity of symbol + product (units);
    ``working`` ids of working orders with our tag on the symbol; ``untracked_fills`` units filled on
    the exit side by orders with our tag that no intent owns."""

    net: int
    working: tuple[str, ...]
    untracked_fills: int

    def open_quantity(self, leg_side: str) -> int:
        """Units still open at the broker in the leg's direction (a short is open while net < 0)."""
        return max(-self.net, 0) if leg_side == "SELL" else max(self.net, 0)

    def describe(self) -> str:
        return (
            f"broker net {self.net}, {len(self.working)} working order(s) of ours, "
            f"{self.untracked_fills} unrecorded exit fill(s) of ours"
        )


def still_open(view: BrokerView, *, leg_side: str, ours_open: int) -> int:
    """Units the next attempt may send: what both our fills and the broker say is open (≥ 0)."""
    return max(min(ours_open - view.untracked_fills, view.open_quantity(leg_side)), 0)


async def read_broker(
    client: OpenAlgoClient,
    *,
    tag: str,
    symbol: str,
    exchange: str,
    product: str,
    exit_side: str,
    owned: set[str],
) -> BrokerView:
    """Read the three books at EXIT priority (see the module docstring). ``owned`` are the account's
    broker order ids some intent already holds. Raises BrokerError when a book cannot be read."""
    positions = Positionbook.parse(await client.call("positionbook", priority=Priority.EXIT))
    book = Orderbook.parse(await client.call("orderbook", priority=Priority.EXIT))
    trades = BrokerTrade.parse_book(await client.call("tradebook", priority=Priority.EXIT))
    net = 0
    for p in positions.positions:
        if p.symbol == symbol and p.exchange == exchange and p.product.upper() == product.upper():
            if p.quantity is None:
                raise MalformedResponseError(
                    f"positionbook quantity of {symbol} unreadable", endpoint="positionbook"
                )
            net += p.quantity
    ours = [o for o in book.orders if o.symbol == symbol and o.strategy == tag]
    working = tuple(o.orderid for o in ours if o.status.is_working)
    untracked: dict[str, int] = {
        o.orderid: _filled(o) for o in ours if o.action == exit_side and o.orderid not in owned
    }
    for t in trades:
        if t.symbol != symbol or t.action != exit_side or t.orderid in owned:
            continue
        if t.strategy == tag or t.orderid in untracked:
            untracked.setdefault(t.orderid, 0)
    by_order: dict[str, int] = {}
    for t in trades:
        if t.orderid in untracked:
            by_order[t.orderid] = by_order.get(t.orderid, 0) + (t.quantity or 0)
    fills = sum(max(untracked[i], by_order.get(i, 0)) for i in untracked)
    return BrokerView(net=net, working=working, untracked_fills=fills)


def _filled(order: BrokerOrder) -> int:
    return order.filled_quantity or 0


__all__ = ["BrokerView", "read_broker", "still_open"]
