"""The paper exchange's behaviour profiles (DESIGN §5).

``live-like`` (the default) answers like an OpenAlgo server backed by a real broker. ``openalgo-paper``
reproduces the quirks of OpenAlgo's own paper (sandbox / analyzer) mode, each one found by sending the
same requests to a real OpenAlgo server and to this exchange (OPENALGO-PROTOCOL.md §8). A client that
reads both profiles correctly reads both kinds of server.

Each quirk is one flag of :class:`Quirks`, so a profile is a named set of flags and a test may switch a
single quirk on to isolate it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, get_args

Profile = Literal["live-like", "openalgo-paper"]
PROFILES: Final[tuple[Profile, ...]] = get_args(Profile)
DEFAULT_PROFILE: Final[Profile] = "live-like"

# placesmartorder's "nothing to do" texts (no order placed, no order id in the reply).
SMART_NOOP_MATCHED: Final = "Positions Already Matched. No Action needed."
SMART_NOOP_NO_OPEN_POSITION: Final = "No OpenPosition Found. Not placing Exit order."


@dataclass(frozen=True, slots=True)
class Quirks:
    """What a profile changes. Every flag off is ``live-like``.

    ``smart_noop_no_open_position``: a ``placesmartorder`` already at its ``position_size`` with
    ``quantity`` 0 answers 200 ``"No OpenPosition Found. Not placing Exit order."`` (whatever the
    position, even a matched non-zero one) instead of ``"Positions Already Matched. No Action needed."``;
    OpenAlgo's sandbox picks the text by the request's quantity, not by the position.

    ``closed_row_realized_in_unrealized``: a positionbook row closed to quantity 0 reports the day's
    realised P&L in ``unrealized_pnl`` as well as in ``today_realized_pnl`` and ``pnl`` (the sandbox
    keeps one stored P&L per row, overwritten with the realised figure when the row closes). The
    totals still count only open rows as unrealised.

    ``cancel_all_leaves_trigger_pending``: ``cancelallorder`` cancels ``open`` orders only; ``trigger
    pending`` (SL / SL-M) orders stay alive and are not listed in the reply (neither cancelled nor
    failed). A client that must cancel everything cancels each order itself.

    ``modify_pricetype_change_ignored``: a ``modifyorder`` whose ``pricetype`` differs from the order's
    (SL → LIMIT, say) answers 200 "Order modified successfully" and leaves the order exactly as it was.
    A client verifies a modify with ``orderstatus``.

    ``smart_limit_at_market``: ``placesmartorder`` with ``pricetype`` LIMIT (or any other) places a
    MARKET order, filled at the touch whatever the limit price.

    ``short_option_premium_margin``: a short option (position or order) blocks only its premium,
    quantity × price, like a long one; no SPAN + exposure per lot, no hedge benefit. ``/margin`` still
    answers from the margin settings.

    ``ws_openalgo_frames``: the market-data WebSocket of a real OpenAlgo server. No snapshot after a
    ``subscribe`` (nothing until the next tick); each tick is sent at the highest mode anyone subscribes
    the symbol at, to every subscriber at or below it (an LTP subscriber receives QUOTE frames, not a
    relabelled copy); tick ``data`` repeats ``symbol``, ``exchange`` and ``mode``; (un)subscribe acks read
    "Subscription processing complete" (unsubscribes too) and carry ``broker``;
    ``unsubscribe_all`` lists every symbol it removed; ``order_update`` reports ``pending_quantity`` 0
    for an order still open (a hint to re-read the orderbook, never a fill).
    """

    smart_noop_no_open_position: bool = False
    closed_row_realized_in_unrealized: bool = False
    cancel_all_leaves_trigger_pending: bool = False
    modify_pricetype_change_ignored: bool = False
    smart_limit_at_market: bool = False
    short_option_premium_margin: bool = False
    ws_openalgo_frames: bool = False


_QUIRKS: Final[dict[Profile, Quirks]] = {
    "live-like": Quirks(),
    "openalgo-paper": Quirks(
        smart_noop_no_open_position=True,
        closed_row_realized_in_unrealized=True,
        cancel_all_leaves_trigger_pending=True,
        modify_pricetype_change_ignored=True,
        smart_limit_at_market=True,
        short_option_premium_margin=True,
        ws_openalgo_frames=True,
    ),
}


def parse_profile(name: str) -> Profile:
    """The profile called ``name`` (exact spelling). Raises ValueError for any other text."""
    for profile in PROFILES:
        if name == profile:
            return profile
    raise ValueError(f"unknown simulator profile {name!r}; expected one of {', '.join(PROFILES)}")


def quirks_for(profile: str) -> Quirks:
    """The quirks of ``profile``. Raises ValueError for an unknown profile name."""
    return _QUIRKS[parse_profile(profile)]


__all__ = [
    "DEFAULT_PROFILE",
    "PROFILES",
    "SMART_NOOP_MATCHED",
    "SMART_NOOP_NO_OPEN_POSITION",
    "Profile",
    "Quirks",
    "parse_profile",
    "quirks_for",
]
