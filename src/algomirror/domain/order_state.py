"""The order journal's state machine (DESIGN §3): an intent only ever moves forward.

::

    created ──▶ sent ──▶ acknowledged ──▶ complete
       │          │            │     └──▶ cancelled
       │          │            └────────▶ rejected
       │          ├──▶ unknown ──▶ acknowledged | complete | cancelled | rejected
       │          └──▶ complete | cancelled | rejected
       └──▶ rejected | cancelled            (refused or abandoned before it was sent)

``unknown`` is an order whose send outcome could not be established (a timeout after the request was
written); it is resolved from the broker's orderbook, never by sending again. ``complete``, ``rejected``
and ``cancelled`` are terminal. Staying in a state (a fill update while ``acknowledged``) is allowed.
"""

from __future__ import annotations

CREATED = "created"
SENT = "sent"
ACKNOWLEDGED = "acknowledged"
COMPLETE = "complete"
REJECTED = "rejected"
CANCELLED = "cancelled"
UNKNOWN = "unknown"

TERMINAL_STATES = frozenset({COMPLETE, REJECTED, CANCELLED})
# Every state an intent can be in before it is terminal: the order may still exist at the broker.
UNRESOLVED_STATES = frozenset({CREATED, SENT, ACKNOWLEDGED, UNKNOWN})

# In the order of the database's CHECK constraint (enums.INTENT_STATES is this tuple).
_FORWARD: dict[str, frozenset[str]] = {
    CREATED: frozenset({SENT, REJECTED, CANCELLED}),
    SENT: frozenset({ACKNOWLEDGED, UNKNOWN, COMPLETE, CANCELLED, REJECTED}),
    ACKNOWLEDGED: frozenset({COMPLETE, CANCELLED, REJECTED}),
    COMPLETE: frozenset(),
    REJECTED: frozenset(),
    CANCELLED: frozenset(),
    UNKNOWN: frozenset({ACKNOWLEDGED, COMPLETE, CANCELLED, REJECTED}),
}

INTENT_STATES: tuple[str, ...] = tuple(_FORWARD)


class IllegalTransitionError(ValueError):
    """A journal write tried to move an intent backwards, out of a terminal state, or into a state that
    does not exist. A bug in the caller: stop and alert, never retry."""


def check_transition(current: str | None, new: str) -> None:
    """Raise :class:`IllegalTransitionError` unless ``current → new`` is allowed.

    ``current`` None is a new intent, which must start ``created``. Staying in a non-terminal state is
    allowed (fill updates); staying in a terminal one too (an idempotent re-write of the same outcome).
    """
    if new not in _FORWARD:
        raise IllegalTransitionError(f"unknown intent state {new!r}")
    if current is None:
        if new != CREATED:
            raise IllegalTransitionError(f"a new intent starts 'created', not {new!r}")
        return
    if current not in _FORWARD:
        raise IllegalTransitionError(f"unknown intent state {current!r}")
    if new == current or new in _FORWARD[current]:
        return
    raise IllegalTransitionError(f"intent state cannot move {current!r} → {new!r}")


def can_transition(current: str | None, new: str) -> bool:
    """True when :func:`check_transition` would accept ``current → new``."""
    try:
        check_transition(current, new)
    except IllegalTransitionError:
        return False
    return True


__all__ = [
    "ACKNOWLEDGED",
    "CANCELLED",
    "COMPLETE",
    "CREATED",
    "INTENT_STATES",
    "REJECTED",
    "SENT",
    "TERMINAL_STATES",
    "UNKNOWN",
    "UNRESOLVED_STATES",
    "IllegalTransitionError",
    "can_transition",
    "check_transition",
]
